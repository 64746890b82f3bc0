"""``handover referral new|show|list|select|redact|discard|send|bundle|handed-over|acknowledge|
outcome``.

The command acts as a named member of the organisation's staff (``--org`` and
``--as USERNAME``), with that person's permissions: the DSL team drafts and
sends; only the DSL sends without consent. It is audited as the operator acting
for them (``--as`` alone) or, with ``--sign-in`` (their password and code typed
in the terminal), as them. The form (and an outcome) is given
as a JSON file; see ``docs/referrals.md`` and ``schemas/json/referral-*.schema.json``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from transfer.commands._common import Subparsers, add_acting, add_data_dir, run_as_staff
from transfer.errors import ConfigError, InputError
from transfer.wording import plural

if TYPE_CHECKING:
    from schemas.referrals import ReferralRecord
    from transfer.node import Node
    from transfer.store.permissions import Actor

T = TypeVar("T")
_KINDS = ("concern", "triage", "action", "contact", "document")


def _common(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--org", required=True, help="the school's organisation id")
    add_acting(p)
    p.add_argument("--json", action="store_true", help="print JSON")


def _one(inner: Any, name: str, help_text: str, handler: Callable[..., int]) -> Any:
    p = inner.add_parser(name, help=help_text)
    _common(p)
    if name not in ("new", "list"):
        p.add_argument("referral_id")
    p.set_defaults(handler=handler)
    return p


def register(sub: Subparsers) -> None:
    p = sub.add_parser("referral", help="referrals to social care / MASH, the LADO, the police")
    inner = p.add_subparsers(dest="referral_command", metavar="ACTION", required=True)
    new = _one(inner, "new", "draft a referral from a form (JSON file)", _new)
    new.add_argument("--pupil", required=True, metavar="UPN", help="the child's UPN (or pupil id)")
    new.add_argument("--agency", required=True, metavar="ORG_ID", help="the agency (directory)")
    new.add_argument("--form", required=True, type=Path, metavar="FILE", help="the form (JSON)")
    new.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="KIND:ID",
        help=f"a chronology entry to send ({', '.join(_KINDS)}); repeat for each",
    )
    new.add_argument(
        "--redact",
        action="append",
        default=[],
        metavar="TEXT",
        help="a third-party name to hide wherever it appears in what is sent; repeat",
    )
    _one(inner, "show", "a referral: form, selection, redactions, lifecycle", _show)
    ls = _one(inner, "list", "the organisation's referrals", _list)
    ls.add_argument(
        "--state", choices=["draft", "sent", "delivered", "accepted", "rejected", "closed"]
    )
    sel = _one(inner, "select", "choose exactly which chronology entries go", _select)
    sel.add_argument("items", nargs="*", metavar="KIND:ID")
    red = _one(inner, "redact", "hide a third-party name in what is sent", _redact)
    red.add_argument("text", metavar="TEXT")
    _one(
        inner, "discard", "throw a draft away (the audit and chronology keep that it was)", _discard
    )
    form_only = (
        "send the form alone: confirm that no chronology entry goes (refused otherwise when "
        "nothing is selected)"
    )
    send = _one(
        inner, "send", "seal and send: to the agency's node, or via the pickup portal", _send
    )
    send.add_argument("--route", choices=["node", "portal"], default="node")
    send.add_argument("--days", type=int, default=None, help="portal: days the link lasts")
    send.add_argument("--form-only", action="store_true", help=form_only)
    bundle = _one(inner, "bundle", "seal into an offline bundle (folder or zip)", _bundle)
    bundle.add_argument("--form-only", action="store_true", help=form_only)
    bundle.add_argument("--out", required=True, type=Path, metavar="DIR")
    bundle.add_argument(
        "--passphrase",
        action="store_true",
        help="encrypt to a new passphrase (shown once) instead of the agency's key",
    )
    bundle.add_argument("--zip", action="store_true", help="write one .zip file")
    hand = _one(inner, "handed-over", "record an offline bundle's hand-over", _handed_over)
    hand.add_argument("--to", required=True, dest="to_whom", help="who received it")
    hand.add_argument("--how", required=True, help="how (in person, courier, upload...)")
    ack = _one(inner, "acknowledge", "record the agency's acknowledgement and reference", _ack)
    ack.add_argument("--name", required=True, help="who acknowledged it at the agency")
    ack.add_argument("--reference", required=True, help="the agency's reference number")
    out = _one(inner, "outcome", "record the agency's outcome (JSON file)", _outcome)
    out.add_argument("--file", required=True, type=Path, metavar="FILE")


def _run(args: argparse.Namespace, work: Callable[[Node, Actor], Awaitable[T]]) -> T:
    return run_as_staff(args, work)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read the {what} {path}: {exc.strerror}") from None


def _items(values: list[str]) -> list[Any]:
    from schemas.referrals import SelectedItem

    out = []
    for value in values:
        kind, sep, ident = value.partition(":")
        if not sep or kind not in _KINDS or not ident:
            raise InputError(f"{value[:80]!r} is not KIND:ID (KIND one of {', '.join(_KINDS)})")
        out.append(SelectedItem.model_validate({"kind": kind, "id": ident}))
    return out


def _print(args: argparse.Namespace, record: ReferralRecord, line: str) -> int:
    if args.json:
        print(json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True))
    else:
        print(line)
    return 0


def _state_line(r: ReferralRecord) -> str:
    due = f", due by {r.due_on.isoformat()}" if r.due_on else ""
    ref = f", agency reference {r.agency_reference}" if r.agency_reference else ""
    to = f"{r.agency_name} ({r.agency_org_id})" if r.agency_name else r.agency_org_id
    return f"referral {r.id}: {r.kind} to {to}, {r.state}{due}{ref}"


def _new(args: argparse.Namespace) -> int:
    from schemas.referrals import NewRedaction
    from transfer.referrals.forms import FormError, every_problem, parse_form

    try:
        form = parse_form(_read(args.form, "form"))
    except FormError as err:
        raise every_problem(err) from None
    items = _items(args.select)

    marks = [NewRedaction(text=text) for text in args.redact]

    async def work(node: Node, actor: Actor) -> ReferralRecord:
        # One call: a selection or a mark that does not fit leaves no draft behind.
        return await node.referrals.draft(
            actor,
            pupil_id=args.pupil,
            agency_org_id=args.agency,
            form=form,
            selection=items,
            redactions=marks,
        )

    record = _run(args, work)
    chosen = plural(len(record.selection), "entry")
    return _print(args, record, _state_line(record) + f" ({chosen} chosen)")


def _show(args: argparse.Namespace) -> int:
    record = _run(args, lambda node, actor: node.referrals.get(actor, args.referral_id))
    if args.json:
        return _print(args, record, "")
    from transfer.referrals.package import subject_of

    print(_state_line(record))
    about = subject_of(record.form)
    born = f", born {about.dob.isoformat()}" if about.dob else ""
    print(f"  about: {about.forename} {about.surname}{born}")
    consent = record.form.consent
    print(
        f"  consent: {'given' if consent.consent_given else 'NOT given'}"
        + (f" ({consent.no_consent_reason})" if consent.no_consent_reason else "")
    )
    for item in record.selection:
        print(f"  sends {item.kind} {item.id}")
    for mark in record.redactions:
        print(f"  redacts {'text' if mark.text else f'{mark.field} {mark.start}-{mark.end}'}")
    for e in record.events:
        name = e.actor_name or e.actor
        who = f" by {name}" + (f" ({e.actor_role})" if e.actor_role else "") if name else ""
        print(f"  {e.at:%Y-%m-%d %H:%M} {e.action}{who} {e.note}".rstrip())
    return 0


def _list(args: argparse.Namespace) -> int:
    items = _run(args, lambda node, actor: node.referrals.list(actor, state=args.state))
    if args.json:
        print(json.dumps([i.model_dump(mode="json") for i in items], indent=2, sort_keys=True))
    elif not items:
        print("no referrals")
    for i in items if not args.json else []:
        due = f" due {i.due_on.isoformat()}" if i.due_on else ""
        print(f"{i.id}  {i.state:<9}  {i.kind:<11}  to {i.agency_org_id}  pupil {i.pupil_id}{due}")
    return 0


def _select(args: argparse.Namespace) -> int:
    items = _items(args.items)
    record = _run(args, lambda node, actor: node.referrals.select(actor, args.referral_id, items))
    return _print(args, record, f"{plural(len(record.selection), 'entry')} chosen")


def _redact(args: argparse.Namespace) -> int:
    from schemas.referrals import NewRedaction

    mark = NewRedaction(text=args.text)
    record = _run(
        args, lambda node, actor: node.referrals.add_redaction(actor, args.referral_id, mark)
    )
    return _print(args, record, f"{plural(len(record.redactions), 'redaction')} marked")


def _discard(args: argparse.Namespace) -> int:
    summary = _run(args, lambda node, actor: node.referrals.discard(actor, args.referral_id))
    if args.json:
        print(json.dumps(summary.model_dump(mode="json"), indent=2, sort_keys=True))
    else:
        print(f"referral {summary.id} ({summary.kind} to {summary.agency_org_id}) discarded")
    return 0


async def _send_portal(node: Node, actor: Actor, args: argparse.Namespace) -> str:
    from receivers.sending import send_via_portal

    done = await send_via_portal(
        node.referrals,
        node.portal,
        actor,
        args.referral_id,
        expires_in_days=args.days,
        form_only=args.form_only,
    )
    issued = done.issued
    lines = [f"referral {args.referral_id} is at the pickup portal for {issued.pickup.email}"]
    if issued.link:
        lines.append(f"give the agency this link: {issued.link}")
    else:
        lines.append("the link was e-mailed to the agency's registered address")
    lines.append(f"read out this passcode by telephone (shown once): {issued.passcode}")
    return "\n".join(lines)


def _send(args: argparse.Namespace) -> int:
    async def work(node: Node, actor: Actor) -> str:
        if args.route == "portal":
            return await _send_portal(node, actor, args)
        from receivers.sending import send_by_node

        outbox = getattr(node, "outbox", None)
        if outbox is None:
            raise ConfigError("this node has no outbox: it cannot send to an agency's node")
        record = await send_by_node(
            node.referrals, outbox, actor, args.referral_id, form_only=args.form_only
        )
        return (
            f"referral {record.id} queued for {record.agency_org_id} (package {record.package_id})"
        )

    print(_run(args, _confirm_form_only(work)))
    return 0


def _confirm_form_only(
    work: Callable[[Node, Actor], Awaitable[T]],
) -> Callable[[Node, Actor], Awaitable[T]]:
    """Name the CLI's flag when a referral with nothing chosen is refused."""
    from transfer.referrals.service import NothingSelectedError

    async def run(node: Node, actor: Actor) -> T:
        try:
            return await work(node, actor)
        except NothingSelectedError as exc:
            raise NothingSelectedError(
                f"{exc.message} (--form-only), or choose entries with 'handover referral select'",
                detail=exc.detail,
            ) from None

    return run


def _bundle(args: argparse.Namespace) -> int:
    from receivers.offline import OfflineBundle, write_offline_bundle

    def work(node: Node, actor: Actor) -> Awaitable[OfflineBundle]:
        return write_offline_bundle(
            node.referrals,
            actor,
            args.referral_id,
            args.out,
            passphrase=args.passphrase,
            as_zip=args.zip,
            form_only=args.form_only,
        )

    bundle = _run(args, _confirm_form_only(work))
    print(f"offline bundle written: {bundle.path}")
    print(f"package {bundle.package_id}, sender key id {bundle.sender_key_id}")
    if bundle.passphrase is not None:
        print(
            f"passphrase (shown once, not stored; give it by another channel): {bundle.passphrase}"
        )
    print(
        "after handing it over, record it: handover referral handed-over "
        f"{args.referral_id} --to NAME --how HOW"
    )
    return 0


def _handed_over(args: argparse.Namespace) -> int:
    record = _run(
        args,
        lambda node, actor: node.referrals.record_handover(
            actor, args.referral_id, to_whom=args.to_whom, how=args.how
        ),
    )
    return _print(args, record, _state_line(record))


def _ack(args: argparse.Namespace) -> int:
    record = _run(
        args,
        lambda node, actor: node.referrals.acknowledge(
            actor, args.referral_id, name=args.name, agency_reference=args.reference
        ),
    )
    return _print(args, record, _state_line(record))


def _outcome(args: argparse.Namespace) -> int:
    from transfer.referrals.forms import FormError, every_problem, parse_outcome

    try:
        outcome = parse_outcome(_read(args.file, "outcome"))
    except FormError as err:
        raise every_problem(err) from None
    record = _run(
        args, lambda node, actor: node.referrals.record_outcome(actor, args.referral_id, outcome)
    )
    return _print(args, record, _state_line(record))
