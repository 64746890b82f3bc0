"""``handover request-file``, ``handover requests ...`` and ``handover alerts ...``.

The CLI acts for a named staff member of one organisation (``--org``,
``--as USERNAME``), with that person's permissions: audited as the operator
acting for them, or as them with ``--sign-in`` (their password and code typed
in the terminal); ``via="cli"``. A request or a decision is sent to the other node at once;
if it cannot be reached, the node's ``serve`` sweep keeps trying.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from transfer.commands._common import (
    Subparsers,
    acting,
    add_acting,
    add_data_dir,
    data_dir_of,
)

if TYPE_CHECKING:  # imported lazily: the CLI starts fast for commands that need no database
    from transfer.alerts import AlertRecord
    from transfer.exchange.requests import TransferRequestRecord, TransferRequests
    from transfer.node import Node
    from transfer.store.permissions import Actor

T = TypeVar("T")


@dataclass
class _Session:
    node: Node
    actor: Actor
    requests: TransferRequests


@asynccontextmanager
async def _open(args: argparse.Namespace) -> AsyncIterator[_Session]:
    from transfer.node import Node
    from transfer.transport.http import http_transport

    async with (
        await Node.open(data_dir_of(args), transport=http_transport) as node,
        acting(node, args, user="as_user") as actor,
    ):
        yield _Session(node, actor, node.transfer_requests(outbox=node.outbox, client=node.peer))


def _run(args: argparse.Namespace, work: Callable[[_Session], Awaitable[T]]) -> T:
    async def go() -> T:
        async with _open(args) as session:
            return await work(session)

    return asyncio.run(go())


async def _sent(session: _Session, record: TransferRequestRecord) -> TransferRequestRecord:
    if record.outbound is None:
        return record
    await session.requests.send_one(record.request_id, record.org_id)
    return await session.requests.get(session.actor, record.request_id)


def _delivery(record: TransferRequestRecord) -> str:
    if record.outbound is None:
        return ""
    if record.last_error is None:
        return "; the node is sending it now"
    return f"; not delivered yet ({record.last_error}), the node will keep trying"


def _line(r: TransferRequestRecord) -> str:
    if r.side == "sent":
        peer = f"asked {r.holder_org_id}"
        match = ""
    else:
        peer = f"from {r.requester_org_id}"
        match = f" pupil={r.pupil_id}" if r.pupil_id else " (UPN matches none of our pupils)"
    extra = f" package={r.package_id}" if r.package_id else ""
    reason = f" reason={r.reason!r}" if r.reason else ""
    return (
        f"{r.request_id} {r.created_at:%Y-%m-%d %H:%M} {r.side} {r.state} {peer} "
        f"UPN {r.upn} {r.forename} {r.surname}{match}{extra}{reason}"
    )


def _request_file(args: argparse.Namespace) -> int:
    async def work(s: _Session) -> TransferRequestRecord:
        record = await s.requests.create(
            s.actor, upn=args.upn, from_org_id=args.from_org, note=args.note, via="cli"
        )
        return await _sent(s, record)

    r = _run(args, work)
    print(f"transfer request {r.request_id} to {r.holder_org_id}: {r.state}{_delivery(r)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    async def work(s: _Session) -> list[TransferRequestRecord]:
        return await s.requests.list(s.actor, side=args.side, open_only=args.open)

    records = _run(args, work)
    for r in records:
        print(json.dumps(r.model_dump(mode="json"), sort_keys=True) if args.json else _line(r))
    if not records and not args.json:
        print("no transfer requests")
    return 0


def _authorise(args: argparse.Namespace) -> int:
    async def work(s: _Session) -> TransferRequestRecord:
        record = await s.requests.authorise(
            s.actor, args.request_id, pupil_id=args.pupil, via="cli"
        )
        return await _sent(s, record)

    r = _run(args, work)
    print(
        f"request {r.request_id} authorised: leaver's file {r.package_id} queued for "
        f"{r.requester_org_id}{_delivery(r)}"
    )
    return 0


def _decline(args: argparse.Namespace) -> int:
    async def work(s: _Session) -> TransferRequestRecord:
        record = await s.requests.decline(s.actor, args.request_id, args.reason, via="cli")
        return await _sent(s, record)

    r = _run(args, work)
    print(f"request {r.request_id} declined{_delivery(r)}")
    return 0


def _alert_line(a: AlertRecord) -> str:
    who = f" pupil={a.pupil_id} ({a.pupil_name})" if a.pupil_id else ""
    closed = f" [{a.closed_reason}]" if a.closed_reason else ""
    return f"{a.id} {a.day} {a.level}{closed}: {a.subject}{who}\n    {a.message}"


def _alerts_list(args: argparse.Namespace) -> int:
    async def work(s: _Session) -> list[AlertRecord]:
        return await s.node.alerts.list(s.actor, open_only=not args.all)

    alerts = _run(args, work)
    for a in alerts:
        print(
            json.dumps(a.model_dump(mode="json"), sort_keys=True) if args.json else _alert_line(a)
        )
    if not alerts and not args.json:
        print("no open alerts" if not args.all else "no alerts")
    return 0


def _alerts_dismiss(args: argparse.Namespace) -> int:
    async def work(s: _Session) -> AlertRecord:
        return await s.node.alerts.dismiss(s.actor, args.alert_id)

    a = _run(args, work)
    print(f"alert {a.id} closed ({a.closed_reason})")
    return 0


def _person(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--org", required=True, help="your organisation's id (a school's URN)")
    add_acting(p, dest="as_user")


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "request-file", help="ask a new pupil's previous school for their child-protection file"
    )
    _person(p)
    p.add_argument("--upn", required=True, help="the pupil's UPN (the pupil must be on your roll)")
    p.add_argument(
        "--from",
        dest="from_org",
        required=True,
        metavar="ORG",
        help="the previous school's id in the directory",
    )
    p.add_argument("--note", help="a short note for the other DSL (no safeguarding detail)")
    p.set_defaults(handler=_request_file)

    parser = sub.add_parser("requests", help="transfer requests sent and received")
    cmds = parser.add_subparsers(dest="requests_command", metavar="ACTION", required=True)
    p = cmds.add_parser("list", help="list transfer requests, newest first")
    _person(p)
    p.add_argument("--side", choices=("sent", "received"))
    p.add_argument("--open", action="store_true", help="only those still waiting for an answer")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=_list)
    p = cmds.add_parser("authorise", help="send the pupil's leaver's file to the requester")
    _person(p)
    p.add_argument("request_id")
    p.add_argument(
        "--pupil",
        metavar="UPN",
        help="the pupil it is about (UPN, or pupil id), when the request's UPN matched none",
    )
    p.set_defaults(handler=_authorise)
    p = cmds.add_parser("decline", help="refuse a request, with a reason the requester reads")
    _person(p)
    p.add_argument("request_id")
    p.add_argument("--reason", required=True)
    p.set_defaults(handler=_decline)

    parser = sub.add_parser("alerts", help="the DSL team's alerts (deadlines, requests)")
    cmds = parser.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    p = cmds.add_parser("list", help="open alerts, newest first")
    _person(p)
    p.add_argument("--all", action="store_true", help="closed ones too")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=_alerts_list)
    p = cmds.add_parser("dismiss", help="close an alert by hand (its reminder stops for good)")
    _person(p)
    p.add_argument("alert_id")
    p.set_defaults(handler=_alerts_dismiss)
