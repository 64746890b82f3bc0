"""``handover directory``, the authority's side (files only, no node): ``authority-keygen``,
``new``, ``add-org``, ``set-town``, ``revoke``, ``sign``, ``serve``, ``show``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from transfer.commands.directory.files import (
    MAX_ENTRY_BYTES,
    AddAction,
    fmt,
    load_working,
    now,
    parse_time,
    public_key,
    read_limited,
    save_working,
    signature_path,
    write_atomic,
    write_new,
)
from transfer.errors import ConflictError, InputError, TransportError
from transfer.wording import plural

if TYPE_CHECKING:
    from schemas.directory import DirectoryEntry


def _authority_keygen(args: argparse.Namespace) -> int:
    from keys import minisign
    from transfer.directory.document import authority_fingerprint, authority_secret_key_text

    out: Path = args.out
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise TransportError(f"cannot create {out}: {exc.strerror}") from None
    key_path, pub_path = out / "authority.key", out / "authority.pub"
    for p in (key_path, pub_path):
        if p.exists():
            raise ConflictError(f"{p} already exists; it is not overwritten")
    secret = minisign.SecretKey.generate()
    public = secret.public_key
    write_new(key_path, authority_secret_key_text(secret).encode("ascii"), 0o600)
    write_new(
        pub_path,
        public.to_text(f"handover directory authority public key {public.key_id_hex}").encode(
            "ascii"
        ),
        0o644,
    )
    print(
        f"Authority key made.\n"
        f"secret key:   {key_path} (mode 0600, no passphrase: keep it offline)\n"
        f"public key:   {pub_path}\n"
        f"key id:       {public.key_id_hex}\n"
        f"fingerprint:  {authority_fingerprint(public)}\n"
        "Give the public key to every node, and read the fingerprint to each node's "
        "operator by another channel (telephone, in person)."
    )
    return 0


def _new(args: argparse.Namespace) -> int:
    from transfer.directory.document import document_bytes, new_document

    doc = new_document(args.authority_name, now=now(), valid_for=timedelta(days=args.valid_days))
    write_new(args.out, document_bytes(doc), 0o644)
    print(f"New, empty directory of {doc.authority.name} written to {args.out} (not yet signed).")
    return 0


def _with_town(entry: DirectoryEntry, town: str) -> DirectoryEntry:
    """``entry`` with its town set (checked like every field of an entry)."""
    from pydantic import ValidationError

    from schemas.directory import DirectoryEntry
    from schemas.text import where

    try:
        return DirectoryEntry.model_validate({**entry.model_dump(), "town": town.strip()})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(f"the town is not valid: {where(first['loc'])}: {first['msg']}") from None


def _add_org(args: argparse.Namespace) -> int:
    from transfer.directory.document import add_organisation, parse_entry

    doc = load_working(args.file)
    entry = parse_entry(read_limited(args.entry, "a directory entry file", MAX_ENTRY_BYTES))
    if args.town is not None:
        entry = _with_town(entry, args.town)
    updated = add_organisation(doc, entry, replace=args.replace)
    save_working(args.file, updated)
    verb = "updated" if doc.entry(entry.org_id) is not None else "added"
    print(
        f"{entry.org_id} ({entry.name}) {verb}: fingerprint {entry.fingerprint}, signing key "
        f"{entry.key_id}. Check the fingerprint with the organisation by another channel, "
        "then sign the directory."
    )
    return 0


def _set_town(args: argparse.Namespace) -> int:
    from transfer.directory.document import add_organisation

    doc = load_working(args.file)
    entry = doc.entry(args.org)
    if entry is None:
        raise InputError(f"organisation {args.org[:64]} is not in the directory")
    entry = _with_town(entry, args.town)
    save_working(args.file, add_organisation(doc, entry, replace=True))
    print(f"{entry.org_id} ({entry.name}) is in {entry.town}. Sign the directory to publish it.")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from schemas.directory import Revocation
    from transfer.directory.document import add_revocation

    doc = load_working(args.file)
    try:
        revocation = Revocation(
            org_id=args.org,
            key_id=args.key_id.strip().upper(),
            revoked_at=parse_time(args.at, "--at"),
            reason=args.reason,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"the revocation is not valid: {where}: {first['msg']}") from None
    save_working(args.file, add_revocation(doc, revocation))
    print(
        f"Signing key {revocation.key_id} of {revocation.org_id} revoked from "
        f"{fmt(revocation.revoked_at)}: signatures dated from then on will be refused. "
        "Sign the directory to publish it."
    )
    return 0


def _sign(args: argparse.Namespace) -> int:
    from transfer.directory.document import (
        authority_fingerprint,
        parse_authority_secret_key,
        sign_document,
    )

    doc = load_working(args.file)
    secret = parse_authority_secret_key(
        read_limited(args.key, "an authority secret key file", 4096)
    )
    signed, data, signature = sign_document(
        doc, secret, now=now(), valid_for=timedelta(days=args.valid_days)
    )
    sig_path = signature_path(args.file)
    with contextlib.suppress(FileNotFoundError):
        sig_path.unlink()
    write_atomic(args.file, data)
    write_atomic(sig_path, signature.encode("utf-8"))
    print(
        f"Directory serial {signed.serial} signed by {signed.authority.name} "
        f"(key {signed.authority.key_id}, fingerprint {authority_fingerprint(secret.public_key)}): "
        f"{plural(len(signed.organisations), 'organisation')}, "
        f"{plural(len(signed.revocations), 'revocation')}, "
        f"next update due {fmt(signed.next_update)}.\n"
        f"Publish {args.file} and {sig_path}."
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from transfer.directory.document import MAX_DOCUMENT_BYTES, verify_document

    data = read_limited(args.file, "a directory file", MAX_DOCUMENT_BYTES)
    doc = load_working(args.file)
    lines = [
        f"authority:    {doc.authority.name} (key {doc.authority.key_id})",
        f"serial:       {doc.serial}",
        f"issued:       {fmt(doc.issued_at)}",
        f"next update:  {fmt(doc.next_update)}",
    ]
    sig_path = signature_path(args.file)
    if not sig_path.exists():
        lines.append("signature:    none (run 'handover directory sign')")
    elif args.authority_key is None:
        lines.append(f"signature:    {sig_path} (not checked: pass --authority-key)")
    else:
        sig = read_limited(sig_path, "a signature file", 4096)
        verify_document(data, sig, authority=public_key(args.authority_key), now=doc.issued_at)
        lines.append(f"signature:    valid, by key {doc.authority.key_id}")
    lines.append(f"organisations ({len(doc.organisations)}):")
    for e in doc.organisations:
        lines.append(
            f"  {e.org_id:<24} {e.kind:<12} {e.fingerprint}  {e.key_id}  "
            f"{e.endpoint or '(no node)'}  {e.name}{', ' + e.town if e.town else ''}"
        )
    lines.append(f"revocations ({len(doc.revocations)}):")
    for r in doc.revocations:
        lines.append(f"  {r.org_id:<24} {r.key_id} from {fmt(r.revoked_at)}  {r.reason}")
    print("\n".join(lines))
    return 0


def _serve(args: argparse.Namespace) -> int:
    return asyncio.run(_serve_files(args))


async def _serve_files(args: argparse.Namespace) -> int:
    import signal

    from aiohttp import web

    from transfer.api.headers import SERVER
    from transfer.api.listener import GuardedSite, ListenerLimits
    from transfer.directory.document import MAX_DOCUMENT_BYTES, MAX_SIGNATURE_BYTES

    async def _no_server_version(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = SERVER

    doc_path: Path = args.file.resolve()
    sig_path = signature_path(doc_path)
    if not sig_path.exists():
        raise InputError(f"{sig_path} does not exist: sign the directory before serving it")
    doc = load_working(doc_path)

    def handler(
        path: Path, limit: int, content_type: str
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(_request: web.Request) -> web.StreamResponse:
            try:
                body = await asyncio.to_thread(read_limited, path, "a served file", limit)
            except (InputError, TransportError):
                raise web.HTTPNotFound() from None
            return web.Response(
                body=body, content_type=content_type, headers={"Cache-Control": "no-cache"}
            )

        return serve

    app = web.Application()
    app.router.add_get(
        f"/{doc_path.name}", handler(doc_path, MAX_DOCUMENT_BYTES, "application/json")
    )
    app.router.add_get(f"/{sig_path.name}", handler(sig_path, MAX_SIGNATURE_BYTES, "text/plain"))
    app.on_response_prepare.append(_no_server_version)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # The node's own listener: a header timeout and a per-address cap (default limits).
    site = GuardedSite(runner, args.host, args.port, limits=ListenerLimits())
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise TransportError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    port = args.port
    if runner.addresses:
        port = runner.addresses[0][1]
    print(
        f"Serving directory serial {doc.serial} at http://{args.host}:{port}/{doc_path.name} "
        f"(and {sig_path.name}); Ctrl-C stops.",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0


def add_authority_actions(add: AddAction) -> None:
    """The authority's actions, in the order ``--help`` lists them."""
    p = add(
        "authority-keygen", "make a directory authority's key pair", _authority_keygen, node=False
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="directory for authority.key (mode 0600) and authority.pub",
    )

    p = add("new", "start an empty directory (unsigned)", _new, node=False)
    p.add_argument("--authority-name", required=True, metavar="NAME")
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument("--valid-days", type=int, default=30, metavar="N")

    p = add("add-org", "add an organisation's entry (from export-entry)", _add_org, node=False)
    p.add_argument("--file", type=Path, required=True, metavar="FILE", help="directory.json")
    p.add_argument("--entry", type=Path, required=True, metavar="FILE", help="entry.json")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace the organisation's entry (after a key rotation)",
    )
    p.add_argument(
        "--town",
        default=None,
        metavar="TOWN",
        help="the town the organisation is in (shown beside its name)",
    )

    p = add("set-town", "set the town of an organisation in the directory", _set_town, node=False)
    p.add_argument("--file", type=Path, required=True, metavar="FILE", help="directory.json")
    p.add_argument("--org", required=True, metavar="ID")
    p.add_argument("--town", required=True, metavar="TOWN")

    p = add("revoke", "revoke an organisation's signing key from a time on", _revoke, node=False)
    p.add_argument("--file", type=Path, required=True, metavar="FILE")
    p.add_argument("--org", required=True, metavar="ID")
    p.add_argument("--key-id", required=True, metavar="HEX")
    p.add_argument(
        "--at",
        required=True,
        metavar="TIME",
        help="ISO 8601 time with a zone (2026-11-23T09:00:00Z) or 'now'",
    )
    p.add_argument("--reason", required=True, metavar="TEXT")

    p = add("sign", "issue the next serial and sign it (writes FILE.minisig)", _sign, node=False)
    p.add_argument("--file", type=Path, required=True, metavar="FILE")
    p.add_argument("--key", type=Path, required=True, metavar="FILE", help="authority.key")
    p.add_argument(
        "--valid-days",
        type=int,
        default=30,
        metavar="N",
        help="days until the next update is due (default 30)",
    )

    p = add("serve", "serve directory.json and its signature over HTTP", _serve, node=False)
    p.add_argument("--file", type=Path, required=True, metavar="FILE")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)

    p = add("show", "print a directory file", _show, node=False)
    p.add_argument("--file", type=Path, required=True, metavar="FILE")
    p.add_argument(
        "--authority-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="check the signature with this authority public key",
    )
