"""``handover account``: staff accounts from the node's own terminal.

- ``create``: add a staff member with a first password (an operator action, like
  ``handover init --admin``), for a DSL or administrator setting people up.
- ``list``: the organisation's accounts, their roles and whether two-factor
  sign-in is set up.
- ``approvals``, ``approve``, ``decline``: account changes held back by the
  two-person rule (``transfer.auth.approvals``). ``approve`` needs the DSL
  signed in (``--as USERNAME --sign-in``: password and code typed in the
  terminal); ``create`` of an account with a DSL-team or head-teacher role
  waits for such an approval once the organisation has a DSL.
- ``enrol-totp``: the person signs in with their password, scans the QR code
  drawn in the terminal (or types the key), confirms with a current code and
  receives their one-time recovery codes. ``--code`` confirms an enrolment left
  waiting by an earlier run (no terminal input needed).

Passwords come from ``$HANDOVER_PASSWORD`` or are asked for in a terminal; they
never appear on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from typing import TYPE_CHECKING

from transfer.commands._common import (
    Subparsers,
    add_acting,
    add_data_dir,
    data_dir_of,
    run_as_staff,
)
from transfer.errors import ConflictError, InputError
from transfer.wording import plural

if TYPE_CHECKING:
    from transfer.auth.records import ApprovalRecord, Principal, RecoveryCodes
    from transfer.node import Node
    from transfer.store.permissions import Actor

PASSWORD_ENV = "HANDOVER_PASSWORD"  # noqa: S105 (a variable name)
#: Wrong codes allowed at the prompt before the command gives up (the enrolment stays waiting).
CODE_ATTEMPTS = 3


def register(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "account",
        help="staff accounts: create, list, enrol two-factor sign-in (TOTP)",
        description="Staff accounts on this node. Passwords are read from "
        f"${PASSWORD_ENV} or asked for in a terminal.",
    )
    inner = parser.add_subparsers(dest="account_command", metavar="ACTION", required=True)

    p = inner.add_parser(
        "enrol-totp",
        help="set up two-factor sign-in: QR code in the terminal, confirm a code, recovery codes",
        description="Sign in with the account's password, show the authenticator app's QR code "
        "and key, ask for a current code to confirm and print the recovery codes once. "
        "With --code, confirm an enrolment an earlier run left waiting.",
    )
    add_data_dir(p)
    p.add_argument("--org", required=True, metavar="ID", help="the organisation (a school's URN)")
    p.add_argument("--user", required=True, metavar="NAME", help="the username")
    p.add_argument(
        "--code",
        metavar="DIGITS",
        help="confirm a waiting enrolment with this current code (no prompt)",
    )
    p.set_defaults(handler=run_enrol)

    p = inner.add_parser(
        "create",
        help="add a staff member with a first password",
        description="Add a staff member (an operator action, audited). The first password is "
        f"read from ${PASSWORD_ENV} or asked for twice.",
    )
    add_data_dir(p)
    p.add_argument("--org", required=True, metavar="ID", help="the organisation (a school's URN)")
    p.add_argument("--user", required=True, metavar="NAME", help="the username")
    p.add_argument("--name", required=True, metavar="TEXT", help="the person's display name")
    p.add_argument(
        "--role",
        action="append",
        required=True,
        metavar="ROLE",
        help="dsl, deputy_dsl, head_teacher, staff, administrator or auditor (repeatable)",
    )
    p.add_argument("--email", metavar="ADDRESS", help="their work e-mail address")
    p.set_defaults(handler=run_create)

    p = inner.add_parser("list", help="the organisation's accounts and their sign-in set-up")
    add_data_dir(p)
    p.add_argument("--org", required=True, metavar="ID", help="the organisation (a school's URN)")
    p.set_defaults(handler=run_list)

    p = inner.add_parser(
        "approvals",
        help="account changes waiting for a DSL's approval (the two-person rule)",
        description="Account changes held back until a DSL approves them: a DSL-team or "
        "head-teacher role granted or removed, an account added with one, a DSL-team member's "
        "password or authenticator reset.",
    )
    _acting(p)
    p.add_argument(
        "--state",
        choices=["pending", "approved", "declined", "withdrawn", "expired", "all"],
        default="pending",
        help="which requests (default: those still waiting)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=run_approvals)

    p = inner.add_parser(
        "approve",
        help="approve an account change (a DSL other than whoever asked; needs --sign-in)",
        description="A DSL approves an account change, which applies at once. The DSL signs "
        "in (--sign-in: password and code typed in the terminal); the operator acting for a "
        "DSL cannot approve, nor can whoever asked or the person it is about.",
    )
    _acting(p)
    p.add_argument("approval_id", metavar="ID", help="the request's id (from 'approvals')")
    p.set_defaults(handler=run_approve)

    p = inner.add_parser(
        "decline",
        help="decline an account change (or withdraw one's own request)",
    )
    _acting(p)
    p.add_argument("approval_id", metavar="ID", help="the request's id (from 'approvals')")
    p.set_defaults(handler=run_decline)


def _acting(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--org", required=True, metavar="ID", help="the organisation (a school's URN)")
    add_acting(p)


# ------------------------------------------------------------------ passwords


def _password(*, twice: bool) -> str:
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    if not sys.stdin.isatty():
        raise InputError(f"no password: set {PASSWORD_ENV} or run the command in a terminal")
    first = getpass.getpass("Password: ")
    if twice and first != getpass.getpass("Again: "):
        raise InputError("the two passwords differ; nothing was changed")
    return first


def _grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def _ask_code() -> str | None:
    """A code typed at the prompt; None when input has ended (nobody to ask)."""
    try:
        line = input("Code shown by the app: ")
    except EOFError:
        return None
    return "".join(line.split())


def _print_recovery(codes: RecoveryCodes) -> None:
    print()
    print("Two-factor sign-in is set up.")
    print(
        "Recovery codes: each works once instead of a code if the phone is lost. "
        "Keep them somewhere safe; they are not shown again."
    )
    for code in codes.codes:
        print(f"  {code}")


# ---------------------------------------------------------------- enrol-totp


async def _credential_state(node: Node, org: str, user: str) -> tuple[str, bool, bool]:
    """The staff id, and whether TOTP is set up / waiting for its first code."""
    state = await node.accounts.overview.active_credential_state(org, user)
    if not state.has_password:
        raise ConflictError(
            f"{user!r} has no password yet; an administrator sets one first "
            "(handover account create, or the API)"
        )
    return state.staff_id, state.two_factor == "set up", state.two_factor == "waiting"


async def _confirm_at_prompt(node: Node, principal: Principal) -> RecoveryCodes | None:
    from transfer.auth.service import WrongCode

    for attempt in range(1, CODE_ATTEMPTS + 1):
        code = _ask_code()
        if code is None:
            return None
        try:
            return await node.accounts.confirm_totp_enrolment(principal, code)
        except WrongCode as exc:
            left = CODE_ATTEMPTS - attempt
            print(f"{exc}" + (f" ({left} more tries)" if left else ""), file=sys.stderr)
    raise InputError(
        f"{CODE_ATTEMPTS} wrong codes; check the phone's clock, then confirm the waiting "
        "enrolment with --code, or run the command again for a new key"
    )


async def _enrol(args: argparse.Namespace) -> int:
    from transfer.node import Node
    from transfer.transport.http import http_transport

    code: str | None = args.code
    if code is not None:
        code = "".join(code.split())
        if not code.isdigit():
            raise InputError("--code takes the digits the authenticator app shows")
    async with await Node.open(data_dir_of(args), transport=http_transport) as node:
        _, enrolled, waiting = await _credential_state(node, args.org, args.user)
        if enrolled:
            raise ConflictError(
                f"two-factor sign-in is already set up for {args.user!r}; to move it to a new "
                "phone an administrator resets it first, then enrol again"
            )
        if code is not None and not waiting:
            raise ConflictError(
                "no enrolment is waiting for a code; run enrol-totp without --code first"
            )
        signed_in = await node.accounts.sign_in(args.org, args.user, _password(twice=False))
        principal = await node.accounts.authenticate(signed_in.token, allow_enrolment=True)
        try:
            if code is not None:
                _print_recovery(await node.accounts.confirm_totp_enrolment(principal, code))
                return 0
            enrolment = await node.accounts.begin_totp_enrolment(principal)
            print("Scan this with an authenticator app (for example on the school's phone):")
            print()
            print(enrolment.qr)
            print("Or type this key into the app (time-based, 6 digits, 30 seconds):")
            print(f"  {_grouped(enrolment.secret)}")
            print()
            sys.stdout.flush()
            codes = await _confirm_at_prompt(node, principal)
            if codes is None:
                print(
                    "No code was typed: the enrolment is waiting. Confirm it with "
                    f"'handover account enrol-totp --org {args.org} --user {args.user} "
                    "--code DIGITS'.",
                    file=sys.stderr,
                )
                return 1
            _print_recovery(codes)
            return 0
        finally:
            await node.accounts.sign_out(principal)


def run_enrol(args: argparse.Namespace) -> int:
    return asyncio.run(_enrol(args))


# -------------------------------------------------------------------- create


async def _create(args: argparse.Namespace, password: str) -> int:
    from transfer.auth.records import ApprovalRecord
    from transfer.node import Node
    from transfer.transport.http import http_transport

    async with await Node.open(data_dir_of(args), transport=http_transport) as node:
        await node.store.get_organisation(args.org)
        record = await node.accounts.create_account_as_operator(
            args.org,
            username=args.user,
            display_name=args.name,
            roles=args.role,
            password=password,
            email=args.email,
        )
    if isinstance(record, ApprovalRecord):
        print(
            f"not created yet: {record.summary}. A DSL approves it ('handover account approve "
            f"{record.id} --org {record.org_id} --as THEIR_USERNAME --sign-in', or in the app); "
            "the DSL team has been alerted."
        )
        return 0
    from transfer.store.permissions import NEEDS_TOTP, Role

    print(f"account {record.username!r} created in {record.org_id}: {', '.join(record.roles)}")
    if any(Role(r) in NEEDS_TOTP for r in record.roles):
        print(
            "two-factor sign-in is required for this role: at first sign-in, or now with "
            f"'handover account enrol-totp --org {record.org_id} --user {record.username}'"
        )
    return 0


def run_create(args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not name or len(name) > 200:
        raise InputError("a display name must be 1 to 200 characters")
    return asyncio.run(_create(args, _password(twice=True)))


# ---------------------------------------------------------------------- list


async def _list(args: argparse.Namespace) -> int:
    from transfer.node import Node
    from transfer.transport.http import http_transport

    async with await Node.open(data_dir_of(args), transport=http_transport) as node:
        org = await node.store.get_organisation(args.org)
        lines = await node.accounts.overview.list(org.id, node.accounts.now())
    print(f"{org.id} {org.name}: {plural(len(lines), 'account')}")
    print(f"{'username':<20} {'name':<24} {'roles':<28} {'two-factor':<11} state")
    for line in lines:
        print(
            f"{line.username:<20} {line.display_name[:24]:<24} "
            f"{','.join(line.roles)[:28]:<28} {line.two_factor or '-':<11} {line.state}"
        )
    return 0


def run_list(args: argparse.Namespace) -> int:
    return asyncio.run(_list(args))


# ------------------------------------------------------------------ approvals


def _approval_line(r: ApprovalRecord) -> str:
    when = f"{r.requested_at:%Y-%m-%d %H:%M}"
    decided = f"; {r.state} by {r.decided_by_name}" if r.decided_by_name else ""
    waits = f" (until {r.expires_at:%Y-%m-%d %H:%M})" if r.state == "pending" else ""
    return f"{r.id}  {r.state}{waits}  asked {when}: {r.summary}{decided}"


def run_approvals(args: argparse.Namespace) -> int:
    async def work(node: Node, actor: Actor) -> list[ApprovalRecord]:
        state = None if args.state == "all" else args.state
        return await node.accounts.list_approvals(actor, state=state)

    records = run_as_staff(args, work)
    for r in records:
        print(
            json.dumps(r.model_dump(mode="json"), sort_keys=True)
            if args.json
            else _approval_line(r)
        )
    if not records and not args.json:
        print("no account changes waiting" if args.state == "pending" else "none")
    return 0


def run_approve(args: argparse.Namespace) -> int:
    async def work(node: Node, actor: Actor) -> ApprovalRecord:
        return await node.accounts.approve(actor, args.approval_id)

    r = run_as_staff(args, work)
    print(f"approved and done: {r.summary}")
    return 0


def run_decline(args: argparse.Namespace) -> int:
    async def work(node: Node, actor: Actor) -> ApprovalRecord:
        return await node.accounts.decline(actor, args.approval_id)

    r = run_as_staff(args, work)
    print(f"{r.state}, nothing changed: {r.summary}")
    return 0
