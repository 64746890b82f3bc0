"""``handover send leaver-file`` and ``handover outbox list|show|cancel|resend|deliver``.

The commands act as a named member of the organisation's staff (``--org``
and ``--as USERNAME``) with that person's permissions (the DSL team sends
transfers). They are audited as the operator acting for them (``--as`` alone)
or, with ``--sign-in`` (their password and code typed in the terminal), as
them; ``via="cli"``. ``outbox deliver``
runs one delivery sweep now (what ``handover serve`` does every
``transfer.sweep_seconds``), as the node itself. Whoever runs them needs the
node's data directory and its key-encryption key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from transfer.commands._common import (
    Subparsers,
    add_acting,
    add_data_dir,
    data_dir_of,
    run_as_staff,
)
from transfer.wording import plural

if TYPE_CHECKING:
    from transfer.exchange.outbox import OutgoingRecord
    from transfer.node import Node
    from transfer.store.permissions import Actor

T = TypeVar("T")

_STATES = ["draft", "queued", "delivered", "viewed", "accepted", "rejected", "failed", "cancelled"]


def _as_staff(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--org", required=True, help="the sending organisation's id")
    add_acting(p)
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: Subparsers) -> None:
    send = sub.add_parser("send", help="send a pupil's leaver's file to another organisation")
    what = send.add_subparsers(dest="send_command", metavar="WHAT", required=True)
    leaver = what.add_parser(
        "leaver-file",
        help="seal a pupil's leaver's file for another organisation and queue it",
        description="Seal the pupil's whole file (signed by the organisation, encrypted to the "
        "receiver's key from the directory) and queue it; 'handover serve' delivers it, or "
        "--deliver tries at once.",
    )
    _as_staff(leaver)
    leaver.add_argument(
        "--pupil", required=True, metavar="UPN", help="the pupil's UPN (or the pupil's id)"
    )
    leaver.add_argument(
        "--to", required=True, metavar="ORG", help="the receiving school's id in the directory"
    )
    leaver.add_argument(
        "--reason",
        help="why, when it is needed: the file already reached that school, or that school is "
        "not the pupil's recorded destination (kept with the package and in the chronology)",
    )
    leaver.add_argument("--deliver", action="store_true", help="try to deliver it now")
    leaver.set_defaults(handler=_send_leaver_file)

    p = sub.add_parser("outbox", help="packages an organisation sends: list, show, cancel, resend")
    inner = p.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    ls = inner.add_parser("list", help="the organisation's outgoing packages, newest first")
    _as_staff(ls)
    ls.add_argument("--state", choices=_STATES)
    ls.add_argument(
        "--pupil", metavar="UPN", help="only packages about this pupil (UPN, or the pupil's id)"
    )
    ls.set_defaults(handler=_list)
    for name, text, handler in (
        ("show", "one package: its state, every change and its receipts", _show),
        ("cancel", "cancel a package not yet delivered", _cancel),
        ("resend", "queue a failed package again (same package, same bytes)", _resend),
    ):
        q = inner.add_parser(name, help=text)
        _as_staff(q)
        q.add_argument("package_id")
        q.set_defaults(handler=handler)
    deliver = inner.add_parser(
        "deliver", help="run one delivery sweep now, and pull receipts (as the node)"
    )
    add_data_dir(deliver)
    deliver.set_defaults(handler=_deliver)


def _run(args: argparse.Namespace, work: Callable[[Node, Actor], Awaitable[T]]) -> T:
    return run_as_staff(args, work)


def _line(r: OutgoingRecord) -> str:
    size = f"{r.ciphertext_size} bytes" if r.ciphertext_size is not None else "not built"
    text = (
        f"{r.id}  {r.state:<9}  {r.state_changed_at:%Y-%m-%d %H:%M}  {r.kind}  to {r.to_name} "
        f"({r.to_org_id}), {size}"
    )
    if r.state == "queued" and r.last_error:
        text += f"; not delivered yet: {r.last_error}"
    if r.state == "failed" and r.failure_reason:
        text += f"; failed: {r.failure_reason}"
    return text


def _details(r: OutgoingRecord) -> list[str]:
    lines = [_line(r), f"pupils: {', '.join(r.pupil_ids)}"]
    if r.reasons_needed:
        words = {"repeat": "sent again", "not_destination": "not the recorded destination"}
        needed = ", ".join(words.get(c, c) for c in r.reasons_needed)
        lines.append(f"sent with a reason ({needed}): {r.send_reason or '(erased)'}")
    if r.ciphertext_sha256:
        lines.append(f"ciphertext sha256: {r.ciphertext_sha256}")
    if r.state == "queued" and r.next_attempt_at:
        lines.append(f"attempts: {r.attempts}; next try at {r.next_attempt_at:%Y-%m-%d %H:%M:%S}")
    lines.append("events:")
    for e in r.events:
        extra = f"  ({e.detail})" if e.detail else ""
        lines.append(f"  {e.at:%Y-%m-%d %H:%M:%S}  {e.event:<18} -> {e.state}{extra}")
    if r.receipts:
        lines.append("receipts (each verified with the receiver's key before it was kept):")
    for rc in r.receipts:
        who = f" by {rc.acted_by['name']} ({rc.acted_by['role']})" if rc.acted_by else ""
        why = f": {rc.reason}" if rc.reason else ""
        lines.append(f"  {rc.issued_at:%Y-%m-%d %H:%M:%S}  {rc.kind}{who}{why}  [{rc.receipt_id}]")
    return lines


def _print(args: argparse.Namespace, record: OutgoingRecord, text: str | None = None) -> None:
    if args.json:
        _print_json(record.model_dump(mode="json"))
    else:
        print(text or "\n".join(_details(record)))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _send_leaver_file(args: argparse.Namespace) -> int:
    async def work(node: Node, actor: Actor) -> OutgoingRecord:
        record = await node.outbox.queue_leaver_file(
            actor, args.pupil, args.to, via="cli", reason=args.reason
        )
        if args.deliver:
            await node.outbox.deliver_due(limit=10)
            record = await node.outbox.get(actor, record.id)
        return record

    from transfer.exchange.outbox import ReasonRequiredError

    try:
        record = _run(args, work)
    except ReasonRequiredError as exc:
        raise ReasonRequiredError(
            f'{exc.message} Add --reason "..." to send it.', detail=exc.detail
        ) from None
    _print(args, record, f"{_line(record)}\n(ciphertext sha256 {record.ciphertext_sha256})")
    return 0


def _list(args: argparse.Namespace) -> int:
    items = _run(
        args, lambda node, actor: node.outbox.list(actor, state=args.state, pupil_id=args.pupil)
    )
    if args.json:
        _print_json([i.model_dump(mode="json") for i in items])
    elif not items:
        print("the outbox is empty")
    else:
        for item in items:
            print(_line(item))
    return 0


def _show(args: argparse.Namespace) -> int:
    _print(args, _run(args, lambda node, actor: node.outbox.get(actor, args.package_id)))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    record = _run(args, lambda node, actor: node.outbox.cancel(actor, args.package_id, via="cli"))
    _print(args, record, f"cancelled {record.id}; its file was deleted")
    return 0


def _resend(args: argparse.Namespace) -> int:
    record = _run(args, lambda node, actor: node.outbox.resend(actor, args.package_id, via="cli"))
    _print(args, record, f"queued {record.id} again (the same package and bytes)")
    return 0


def _deliver(args: argparse.Namespace) -> int:
    from transfer.exchange.sweeps import deliver_due, pull_receipts
    from transfer.node import Node
    from transfer.transport.http import http_transport

    async def go() -> tuple[int, int]:
        async with await Node.open(data_dir_of(args), transport=http_transport) as node:
            return await deliver_due(node.outbox), await pull_receipts(node.outbox)

    tried, receipts = asyncio.run(go())
    print(f"{plural(tried, 'package')} tried; {plural(receipts, 'new receipt')} pulled")
    return 0
