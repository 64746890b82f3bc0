"""``handover audit``: verify, search, export and checkpoint the tamper-evident audit log."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from transfer.commands._common import Subparsers, add_data_dir, data_dir_of

if TYPE_CHECKING:  # imported lazily: the CLI starts fast for commands that need no database
    from transfer.audit.entry import Entry
    from transfer.audit.log import AuditLog
    from transfer.store.people import Person
from transfer.errors import InputError, TransportError
from transfer.wording import plural

T = TypeVar("T")


def _run(
    args: argparse.Namespace,
    work: Callable[[AuditLog], Awaitable[T]],
    filters: dict[str, Any] | None = None,
) -> T:
    """Run ``work`` on the node's audit log; a pupil named by UPN in ``filters`` becomes
    the pupil's id first (the log names pupils by id)."""
    data_dir = data_dir_of(args)
    import asyncio  # here, not at the top: `handover audit verify --help` starts without it

    from sqlalchemy.exc import DBAPIError

    from transfer.audit.log import AuditLog
    from transfer.config import kek_source, load_config, load_kek
    from transfer.identity import prepare_database

    config = load_config(data_dir)
    kek = load_kek(config)
    url = config.database_url(data_dir)

    async def go() -> T:
        if filters is not None and "pupil" in filters:
            from transfer.store.lookups import pupil_id_by_reference  # the store's tables

            filters["pupil"] = await pupil_id_by_reference(
                url, filters["pupil"], filters.get("org")
            )
        log = AuditLog.for_node(data_dir, config, kek)
        try:
            # Read-only: the database must be this node's and the KEK its own, but nothing
            # is migrated or written here.
            await prepare_database(
                log.engine,
                kek,
                data_dir=data_dir,
                url=url,
                kek_source=kek_source(config),
                migrate_schema=False,
                adopt=False,
            )
            return await work(log)
        finally:
            await log.close()

    try:
        return asyncio.run(go())
    except (DBAPIError, OSError) as exc:
        raise TransportError(
            f"cannot use the database at {url.split('://', 1)[0]}: "
            f"{str(exc).splitlines()[0]} (has 'handover' set the node up?)"
        ) from None


def _time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{text!r} is not an ISO 8601 time, e.g. 2026-11-23T09:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("pupil", "person", "org", "action"):
        value = getattr(args, name)
        if value:
            out[name] = value
    if args.since:
        out["since"] = _time(args.since)
    if args.until:
        out["until"] = _time(args.until)
    return out


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pupil", metavar="UPN", help="entries about this pupil (UPN, or pupil id)")
    p.add_argument("--person", help="entries by or about this staff id")
    p.add_argument("--org", help="entries of this organisation")
    p.add_argument("--action", help="this action (a trailing * matches a prefix)")
    p.add_argument("--since", help="at or after this time (ISO 8601)")
    p.add_argument("--until", help="before this time (ISO 8601)")


def _verify(args: argparse.Namespace) -> int:
    extra = [
        (f"the checkpoint file {p}", Path(p).read_text(encoding="utf-8")) for p in args.checkpoint
    ]

    async def work(log: AuditLog) -> tuple[int, int, list[dict[str, Any]], str, int]:
        size = await log.verify(extra)
        waiting = await log.intents_waiting()
        return size, len(await log.checkpoints()), await log.witnessed(), log.origin, waiting

    size, count, witnessed, origin, waiting = _run(args, work)
    print(
        f"audit log intact: {plural(size, 'entry')}, consistent with "
        f"{plural(count, 'stored checkpoint')}"
    )
    if waiting:
        print(
            f"  {plural(waiting, 'entry')} promised by changes committed just before a crash "
            "not written yet: 'handover serve' writes them when it starts"
        )
    if extra:
        print(f"  and with {plural(len(extra), 'checkpoint')} given with --checkpoint")
    ours = [w for w in witnessed if w["origin"] == origin]
    if ours:
        orgs = ", ".join(sorted({str(w["from_org"]) for w in ours}))
        print(f"  and with {plural(len(ours), 'copy')} of our checkpoints held by {orgs}")
    theirs = [w for w in witnessed if w["origin"] != origin]
    if theirs:
        logs = sorted({str(w["origin"]) for w in theirs})
        print(
            f"witnessed: {plural(len(theirs), 'checkpoint')} of "
            f"{plural(len(logs), 'other log')} re-checked "
            f"(signatures, equal sizes, consistency proofs): {', '.join(logs)}"
        )
    for w in theirs:
        if w["status"] == "conflict":
            print(
                f"warning: the checkpoint from {w['from_org']} (log {w['origin']}, size "
                f"{w['size']}) contradicts one held before: their log forked or was rolled "
                "back; it is kept as evidence ('handover audit witnessed')"
            )
    return 0


def _witnessed(args: argparse.Namespace) -> int:
    async def work(log: AuditLog) -> list[dict[str, Any]]:
        rows = await log.witnessed(args.origin)
        return [w for w in rows if args.org is None or w["from_org"] == args.org]

    rows = _run(args, work)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for w in rows:
        received = w["received_at"]
        when = received.isoformat() if isinstance(received, datetime) else str(received)
        line = f"{w['from_org']} {w['origin']} size={w['size']} {w['status']} {when}"
        if out is not None:
            name = f"{w['from_org']}-{w['size']}-{w['id']}.note".replace("/", "_")
            (out / name).write_text(str(w["note"]), encoding="utf-8")
            line += f" -> {out / name}"
        print(line)
    if not rows:
        print("no witnessed checkpoints held")
    return 0


#: Targets that name a member of staff (shown by name and role, like the actor).
_PERSON_TARGETS = ("staff", "person")


def _actor(entry: Entry, who: Mapping[str | None, Person]) -> str:
    """Who acted, in words: the operator acting for someone says for whom."""
    actor = who[entry.actor].describe(with_organisation=True)
    behalf = entry.detail.get("on_behalf_of")
    if entry.detail.get("actor_kind") == "operator" and isinstance(behalf, str):
        actor += f", acting for {who[behalf].describe(with_organisation=True)}"
    return actor


def _show(args: argparse.Namespace) -> int:
    from transfer.config import load_config
    from transfer.store.db import make_engine
    from transfer.store.people import describe_actors, organisation_names

    filters = _filters(args)
    url = load_config(data_dir_of(args)).database_url(data_dir_of(args))

    async def work(log: AuditLog) -> int:
        shown = await log.show(limit=args.limit, **filters)
        engine = make_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                who = await describe_actors(
                    conn,
                    [s.entry.actor for s in shown]
                    + [
                        s.entry.targets[k]
                        for s in shown
                        for k in _PERSON_TARGETS
                        if k in s.entry.targets
                    ]
                    + [
                        str(s.entry.detail["on_behalf_of"])
                        for s in shown
                        if s.entry.detail.get("actor_kind") == "operator"
                        and s.entry.detail.get("on_behalf_of")
                    ],
                )
                orgs = await organisation_names(conn, [s.entry.org for s in shown])
        finally:
            await engine.dispose()
        for s in shown:
            e = s.entry
            if args.json:
                # The entry as it is (ids), and who its actor is in words.
                extra = {"actor_name": _actor(e, who)}
                print(json.dumps({"seq": s.seq, **e.to_json(), **extra}, sort_keys=True))
                continue
            targets = " ".join(
                f"{k}={who[v].describe() if k in _PERSON_TARGETS else v}"
                for k, v in sorted(e.targets.items())
            )
            org = orgs.get(e.org or "", e.org or "-")
            print(
                f"#{s.seq} {e.to_json()['time']} {e.action} {e.outcome} "
                f"by {_actor(e, who)}; org {org} {targets}".rstrip()
            )
        return len(shown)

    _run(args, work, filters)
    return 0


def _export(args: argparse.Namespace) -> int:
    from transfer.audit.export import write_export

    filters = _filters(args)
    summary = _run(
        args, lambda log: write_export(log, Path(args.directory), filters=filters), filters
    )
    kind = "complete" if summary.complete else "filtered, with inclusion proofs"
    print(
        f"exported {summary.entries} entries ({kind}) of a log of {summary.size}, "
        f"{plural(summary.checkpoints, 'checkpoint')}, to {args.directory}"
    )
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    async def work(log: AuditLog) -> tuple[str, str]:
        cp = await log.checkpoint()
        return cp.note, (await log.verifier()).vkey

    note, vkey = _run(args, work)
    print(vkey if args.vkey else note, end="" if not args.vkey else "\n")
    return 0


def _verify_export(args: argparse.Namespace) -> int:
    from transfer.audit.export import verify_export

    summary = verify_export(Path(args.directory), args.vkey)
    print(
        f"export verified: {summary.entries} entries against a signed checkpoint of size "
        f"{summary.size} ({plural(summary.checkpoints, 'checkpoint')} checked)"
    )
    return 0


def register(sub: Subparsers) -> None:
    parser = sub.add_parser("audit", help="check, search and export the tamper-evident audit log")
    cmds = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    p = cmds.add_parser("verify", help="recompute the log and check it against every checkpoint")
    add_data_dir(p)
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="FILE",
        help="also check against this signed checkpoint of ours (e.g. one a counterpart holds)",
    )
    p.set_defaults(handler=_verify)

    p = cmds.add_parser(
        "witnessed",
        help="list the checkpoints of other nodes' logs this node holds (from their receipts)",
    )
    add_data_dir(p)
    p.add_argument("--org", help="only those sent by this organisation")
    p.add_argument("--origin", help="only those of this log (its origin line)")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="also write each as a signed note file (the other node checks its log against "
        "one with 'handover audit verify --checkpoint FILE')",
    )
    p.set_defaults(handler=_witnessed)

    p = cmds.add_parser("show", help="list entries (who looked at this child's file?)")
    add_data_dir(p)
    _add_filters(p)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=_show)

    p = cmds.add_parser("export", help="write entries, checkpoints and proofs for an auditor")
    add_data_dir(p)
    p.add_argument("directory", metavar="DIR")
    _add_filters(p)
    p.set_defaults(handler=_export)

    p = cmds.add_parser("checkpoint", help="sign a checkpoint of the log now and print it")
    add_data_dir(p)
    p.add_argument("--vkey", action="store_true", help="print the log's public key instead")
    p.set_defaults(handler=_checkpoint)

    p = cmds.add_parser("verify-export", help="check an export with only its files (no database)")
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--vkey", default=None, help="the log's public key, obtained independently")
    p.set_defaults(handler=_verify_export)
