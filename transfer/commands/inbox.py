"""``handover inbox list|show|accept|reject``: the DSL's inbox from the command line.

The command acts as a named member of the organisation's staff (``--org`` and
``--as USERNAME``), with that person's permissions (the DSL team receives
transfers). It is audited as the operator acting for them (``--as`` alone) or,
with ``--sign-in`` (their password and code typed in the terminal), as them;
``via="cli"``. Whoever runs it needs
the node's data directory and its key-encryption key.

A referral (received by an agency) is accepted with ``--reference REF``, the
agency's own reference number, which goes back to the school in the signed
receipt; it is kept in the inbox, not imported.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from transfer.commands._common import Subparsers, add_acting, add_data_dir, run_as_staff
from transfer.wording import plural

if TYPE_CHECKING:
    from transfer.exchange.inbox import InboxPreview, IncomingSummary
    from transfer.node import Node
    from transfer.store.permissions import Actor

T = TypeVar("T")


def _common(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--org", required=True, help="the receiving organisation's id")
    add_acting(p)
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("inbox", help="packages delivered to an organisation: list, open, accept")
    inner = p.add_subparsers(dest="inbox_command", metavar="ACTION", required=True)
    ls = inner.add_parser("list", help="the organisation's delivered packages")
    _common(ls)
    ls.add_argument("--state", choices=["delivered", "viewed", "accepted", "rejected"])
    ls.set_defaults(handler=_list)
    show = inner.add_parser("show", help="verify a package in full and preview it")
    _common(show)
    show.add_argument("package_id")
    show.set_defaults(handler=_show)
    acc = inner.add_parser(
        "accept", help="verify again and import into the store (a referral: keep it)"
    )
    _common(acc)
    acc.add_argument("package_id")
    how = acc.add_mutually_exclusive_group()
    how.add_argument(
        "--pupil-id",
        metavar="UPN",
        help="import into this pupil (its UPN, or its id), after a mismatch was shown",
    )
    how.add_argument("--create-new", action="store_true", help="import as a new pupil")
    acc.add_argument(
        "--reference",
        help="your own reference number, sent back in the receipt (required for a referral)",
    )
    acc.set_defaults(handler=_accept)
    rej = inner.add_parser("reject", help="refuse a package, with a reason for the sender")
    _common(rej)
    rej.add_argument("package_id")
    rej.add_argument("--reason", required=True, help="why (sent to the sender)")
    rej.set_defaults(handler=_reject)


def _run(args: argparse.Namespace, work: Callable[[Node, Actor], Awaitable[T]]) -> T:
    return run_as_staff(args, work)


def _line(s: IncomingSummary) -> str:
    when = (s.delivered_at or s.offered_at).strftime("%Y-%m-%d %H:%M")
    return (
        f"{s.package_id}  {s.state:<9}  {when}  {s.package_kind}  from {s.sender_name} "
        f"({s.sender_org_id}), {plural(s.size, 'byte')}"
    )


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _list(args: argparse.Namespace) -> int:
    items = _run(args, lambda node, actor: node.inbox.list(actor, state=args.state, via="cli"))
    if args.json:
        _print_json([i.model_dump(mode="json") for i in items])
    elif not items:
        print("the inbox is empty")
    else:
        for item in items:
            print(_line(item))
    return 0


def _preview_text(p: InboxPreview) -> list[str]:
    s = p.subject
    born = s.dob.isoformat() if s.dob else "date of birth not given"
    lines = [
        _line(p.package),
        f"{'about' if p.referral else 'pupil'}: {s.forename} {s.surname}, {born}, "
        f"UPN {s.upn or 'none'}",
        "records: " + ", ".join(f"{n} {k}" for k, n in p.counts.items()),
    ]
    if p.referral is not None:
        lines.append(
            f"referral ({p.referral['kind'].replace('_', ' ')}): not imported; accept it with "
            "--reference YOUR-REF"
            + (f" (accepted as {p.package.reference})" if p.package.reference else "")
        )
    elif p.match is None:
        lines.append("no pupil here has this UPN: accepting creates a new pupil")
    elif p.match.matches:
        lines.append(f"matches our pupil {p.match.pupil_id} (UPN, date of birth and name agree)")
    else:
        lines.append(
            f"MISMATCH: our pupil {p.match.pupil_id} with this UPN is {p.match.forename} "
            f"{p.match.surname}, born {p.match.dob or 'unknown'}; accept with --pupil-id or "
            "--create-new after checking"
        )
    readable = p.readable
    if readable is None:  # not produced by this node's inbox: the bare list
        lines.append("chronology:")
        lines += [f"  {e.occurred_at:%Y-%m-%d %H:%M}  {e.kind}" for e in p.chronology]
        lines += [
            f"document: {d.filename or d.path} ({plural(d.size, 'byte')})" for d in p.documents
        ]
        return lines
    lines.append("")
    lines.append(f"Chronology of {readable.about}, oldest first:")
    if not readable.lines:
        lines.append("  (no entries)")
    for line in readable.lines:
        lines.append("")
        lines.append(f"  {line.date}, {line.time}  {line.heading}")
        for text_line in line.text.splitlines():
            lines.append(f"      {text_line}")
        lines += [f"      {detail}" for detail in line.details]
        lines.append(f"      Recorded by {line.recorded_by}")
    if readable.documents:
        lines.append("")
        lines.append("Documents:")
        for doc in readable.documents:
            kind = f", {doc.media_type}" if doc.media_type else ""
            lines.append(f"  {doc.name} ({doc.size}{kind})")
    return lines


def _show(args: argparse.Namespace) -> int:
    preview = _run(args, lambda node, actor: node.inbox.show(actor, args.package_id, via="cli"))
    if args.json:
        _print_json(preview.model_dump(mode="json"))
    else:
        print("\n".join(_preview_text(preview)))
    return 0


def _accept(args: argparse.Namespace) -> int:
    outcome = _run(
        args,
        lambda node, actor: node.inbox.accept_package(
            actor,
            args.package_id,
            pupil_id=args.pupil_id,
            create_new=args.create_new,
            reference=args.reference,
            via="cli",
        ),
    )
    if args.json:
        _print_json(outcome.model_dump(mode="json"))
    elif not outcome.imported:
        print(
            f"accepted referral {outcome.package.package_id} with reference {outcome.reference}; "
            "it is kept in the inbox and the sender will receive the signed receipt"
        )
    else:
        made = "a new pupil" if outcome.new_pupil else "pupil"
        print(
            f"accepted {outcome.package.package_id} into {made} {outcome.pupil_id}: "
            + ", ".join(f"{n} {k}" for k, n in outcome.counts.items())
            + _held_words(outcome.held, outcome.amended)
        )
    return 0


def _held_words(held: int, amended: int) -> str:
    """What was not imported again, or kept as a changed version, in words."""
    parts = []
    if held:
        parts.append(f"{plural(held, 'record')} already held, not imported again")
    if amended:
        parts.append(f"{plural(amended, 'changed record')} kept beside the earlier version")
    return f" ({'; '.join(parts)})" if parts else ""


def _reject(args: argparse.Namespace) -> int:
    summary = _run(
        args, lambda node, actor: node.inbox.reject(actor, args.package_id, args.reason, via="cli")
    )
    if args.json:
        _print_json(summary.model_dump(mode="json"))
    else:
        print(f"rejected {summary.package_id}; the sender will receive the signed receipt")
    return 0
