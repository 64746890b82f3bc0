"""``handover directory``: who is who. The authority's tools and the node's.

For a directory authority (files only, no node): ``authority-keygen``, ``new``,
``add-org``, ``set-town``, ``revoke``, ``sign``, ``serve``, ``show``.

For a node (``--data-dir``): ``pin`` the authority's key, ``import`` its signed
directory, ``export-entry`` of one of the node's organisations for the
authority, ``add-local`` an entry by hand after confirming its fingerprint,
``list`` what the node knows. See ``docs/directory.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from transfer.commands._common import Subparsers, add_data_dir, data_dir_of
from transfer.errors import ConflictError, InputError, TransportError
from transfer.wording import plural

if TYPE_CHECKING:
    from keys.minisign import PublicKey
    from schemas.directory import DirectoryDocument, DirectoryEntry
    from transfer.node import Node

T = TypeVar("T")

SIG_SUFFIX = ".minisig"
_MAX_ENTRY_BYTES = 1024 * 1024
_FETCH_TIMEOUT = 60


# ------------------------------------------------------------------- helpers


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return f"cli:uid-{os.getuid()}"


def _now() -> datetime:
    return datetime.now(UTC)


def _time(text: str, option: str) -> datetime:
    if text.strip().lower() == "now":
        return _now()
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"{option} {text[:40]!r} is not a time; write it as ISO 8601 with a zone, "
            "for example 2026-11-23T09:00:00Z, or 'now'"
        ) from None
    if when.tzinfo is None:
        raise InputError(f"{option} {text[:40]!r} has no time zone; add one (…Z or +00:00)")
    return when.astimezone(UTC)


def _read(path: Path, what: str, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist ({what})") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not {what}") from None
    except OSError as exc:
        raise TransportError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{path} is too large to be {what}")
    return data


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` whole or not at all (temporary file, fsync, rename)."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + path.name, suffix=".tmp")
    except OSError as exc:
        raise TransportError(f"cannot write {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise TransportError(f"cannot write {path}: {exc.strerror}") from None


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConflictError(f"{path} already exists; it is not overwritten") from None
    except OSError as exc:
        raise TransportError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise TransportError(f"cannot write {path}: {exc.strerror}") from None


def _sig_path(path: Path) -> Path:
    return path.with_name(path.name + SIG_SUFFIX)


def _fmt(when: datetime) -> str:
    from keys.keyset import format_time

    return format_time(when)


def _load_working(path: Path) -> DirectoryDocument:
    from transfer.directory.document import MAX_DOCUMENT_BYTES, parse_document

    return parse_document(_read(path, "a directory file", MAX_DOCUMENT_BYTES), canonical=False)


def _save_working(path: Path, doc: DirectoryDocument) -> None:
    from transfer.directory.document import document_bytes

    _write_atomic(path, document_bytes(doc))
    # An edited directory no longer matches its old signature: remove it, so that
    # nothing serves the pair until it is signed again.
    with contextlib.suppress(FileNotFoundError):
        _sig_path(path).unlink()


def _public_key(path: Path) -> PublicKey:
    from keys import minisign

    return minisign.PublicKey.from_text(_read(path, "a minisign public key file", 4096))


# --------------------------------------------------------- authority side


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
    _write_new(key_path, authority_secret_key_text(secret).encode("ascii"), 0o600)
    _write_new(
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

    doc = new_document(args.authority_name, now=_now(), valid_for=timedelta(days=args.valid_days))
    _write_new(args.out, document_bytes(doc), 0o644)
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

    doc = _load_working(args.file)
    entry = parse_entry(_read(args.entry, "a directory entry file", _MAX_ENTRY_BYTES))
    if args.town is not None:
        entry = _with_town(entry, args.town)
    updated = add_organisation(doc, entry, replace=args.replace)
    _save_working(args.file, updated)
    verb = "updated" if doc.entry(entry.org_id) is not None else "added"
    print(
        f"{entry.org_id} ({entry.name}) {verb}: fingerprint {entry.fingerprint}, signing key "
        f"{entry.key_id}. Check the fingerprint with the organisation by another channel, "
        "then sign the directory."
    )
    return 0


def _set_town(args: argparse.Namespace) -> int:
    from transfer.directory.document import add_organisation

    doc = _load_working(args.file)
    entry = doc.entry(args.org)
    if entry is None:
        raise InputError(f"organisation {args.org[:64]} is not in the directory")
    entry = _with_town(entry, args.town)
    _save_working(args.file, add_organisation(doc, entry, replace=True))
    print(f"{entry.org_id} ({entry.name}) is in {entry.town}. Sign the directory to publish it.")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from schemas.directory import Revocation
    from transfer.directory.document import add_revocation

    doc = _load_working(args.file)
    try:
        revocation = Revocation(
            org_id=args.org,
            key_id=args.key_id.strip().upper(),
            revoked_at=_time(args.at, "--at"),
            reason=args.reason,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"the revocation is not valid: {where}: {first['msg']}") from None
    _save_working(args.file, add_revocation(doc, revocation))
    print(
        f"Signing key {revocation.key_id} of {revocation.org_id} revoked from "
        f"{_fmt(revocation.revoked_at)}: signatures dated from then on will be refused. "
        "Sign the directory to publish it."
    )
    return 0


def _sign(args: argparse.Namespace) -> int:
    from transfer.directory.document import (
        authority_fingerprint,
        parse_authority_secret_key,
        sign_document,
    )

    doc = _load_working(args.file)
    secret = parse_authority_secret_key(_read(args.key, "an authority secret key file", 4096))
    signed, data, signature = sign_document(
        doc, secret, now=_now(), valid_for=timedelta(days=args.valid_days)
    )
    sig_path = _sig_path(args.file)
    with contextlib.suppress(FileNotFoundError):
        sig_path.unlink()
    _write_atomic(args.file, data)
    _write_atomic(sig_path, signature.encode("utf-8"))
    print(
        f"Directory serial {signed.serial} signed by {signed.authority.name} "
        f"(key {signed.authority.key_id}, fingerprint {authority_fingerprint(secret.public_key)}): "
        f"{plural(len(signed.organisations), 'organisation')}, "
        f"{plural(len(signed.revocations), 'revocation')}, "
        f"next update due {_fmt(signed.next_update)}.\n"
        f"Publish {args.file} and {sig_path}."
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from transfer.directory.document import MAX_DOCUMENT_BYTES, verify_document

    data = _read(args.file, "a directory file", MAX_DOCUMENT_BYTES)
    doc = _load_working(args.file)
    lines = [
        f"authority:    {doc.authority.name} (key {doc.authority.key_id})",
        f"serial:       {doc.serial}",
        f"issued:       {_fmt(doc.issued_at)}",
        f"next update:  {_fmt(doc.next_update)}",
    ]
    sig_path = _sig_path(args.file)
    if not sig_path.exists():
        lines.append("signature:    none (run 'handover directory sign')")
    elif args.authority_key is None:
        lines.append(f"signature:    {sig_path} (not checked: pass --authority-key)")
    else:
        sig = _read(sig_path, "a signature file", 4096)
        verify_document(data, sig, authority=_public_key(args.authority_key), now=doc.issued_at)
        lines.append(f"signature:    valid, by key {doc.authority.key_id}")
    lines.append(f"organisations ({len(doc.organisations)}):")
    for e in doc.organisations:
        lines.append(
            f"  {e.org_id:<24} {e.kind:<12} {e.fingerprint}  {e.key_id}  "
            f"{e.endpoint or '(no node)'}  {e.name}{', ' + e.town if e.town else ''}"
        )
    lines.append(f"revocations ({len(doc.revocations)}):")
    for r in doc.revocations:
        lines.append(f"  {r.org_id:<24} {r.key_id} from {_fmt(r.revoked_at)}  {r.reason}")
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
    sig_path = _sig_path(doc_path)
    if not sig_path.exists():
        raise InputError(f"{sig_path} does not exist: sign the directory before serving it")
    doc = _load_working(doc_path)

    def handler(
        path: Path, limit: int, content_type: str
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(_request: web.Request) -> web.StreamResponse:
            try:
                body = await asyncio.to_thread(_read, path, "a served file", limit)
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


# --------------------------------------------------------------- node side


def _with_node(args: argparse.Namespace, work: Callable[[Node], Awaitable[T]]) -> T:
    from transfer.node import Node
    from transfer.transport.http import http_transport

    async def go() -> T:
        async with await Node.open(data_dir_of(args), transport=http_transport) as node:
            return await work(node)

    return asyncio.run(go())


def _pin(args: argparse.Namespace) -> int:
    from transfer.directory.document import authority_fingerprint
    from transfer.directory.service import PinnedAuthority

    public = _public_key(args.authority_key)
    actual = authority_fingerprint(public)
    given: str | None = args.fingerprint
    if given is None:
        if not sys.stdin.isatty():
            raise InputError(
                f"the authority key's fingerprint is {actual}: compare it with the one the "
                "authority gave you by another channel, then run again with --fingerprint"
            )
        print(f"The authority key {public.key_id_hex} has the fingerprint {actual}.")
        given = input("Type the fingerprint the authority gave you: ")

    async def work(node: Node) -> PinnedAuthority:
        return await node.directory.pin_authority(
            public, fingerprint=given, actor=_actor(), replace=args.replace
        )

    _with_node(args, work)
    print(
        f"Directory authority key {public.key_id_hex} (fingerprint {actual}) pinned: "
        "this node now imports only directories signed by it."
    )
    return 0


async def _fetch(node: Node, url: str) -> tuple[bytes, bytes]:
    import ssl
    from urllib.parse import urlsplit, urlunsplit

    import aiohttp

    from transfer.directory.document import MAX_DOCUMENT_BYTES, MAX_SIGNATURE_BYTES

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError("--url must be an http:// or https:// address of directory.json")
    path = parts.path or "/"
    if path.endswith("/"):
        path += "directory.json"
    doc_url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    sig_url = urlunsplit((parts.scheme, parts.netloc, path + SIG_SUFFIX, parts.query, ""))
    ctx = ssl.create_default_context()
    ca_file = node.config.transfer.ca_file
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    shown = urlunsplit((parts.scheme, parts.hostname or "", path, "", ""))

    async def get(session: aiohttp.ClientSession, target: str, limit: int) -> bytes:
        async with session.get(target, ssl=ctx) as resp:
            if resp.status != 200:
                cls = InputError if 400 <= resp.status < 500 else TransportError
                raise cls(f"the directory server answered {resp.status} for {shown}")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > limit:
                    raise InputError(f"the file at {shown} is too large to be a directory")
            return bytes(body)

    timeout = aiohttp.ClientTimeout(total=_FETCH_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            data = await get(session, doc_url, MAX_DOCUMENT_BYTES)
            sig = await get(session, sig_url, MAX_SIGNATURE_BYTES)
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
        raise TransportError(
            f"cannot fetch the directory from {shown}: {type(exc).__name__}"
        ) from None
    return data, sig


def _import(args: argparse.Namespace) -> int:
    from transfer.directory.document import MAX_DOCUMENT_BYTES, MAX_SIGNATURE_BYTES
    from transfer.directory.service import DirectoryImported

    async def work(node: Node) -> DirectoryImported:
        if args.url is not None:
            data, sig = await _fetch(node, args.url)
            source = args.url
        else:
            sig_path = args.signature or _sig_path(args.file)
            data = _read(args.file, "a directory file", MAX_DOCUMENT_BYTES)
            sig = _read(sig_path, "the directory's signature file", MAX_SIGNATURE_BYTES)
            source = str(args.file.resolve())
        return await node.directory.import_document(data, sig, source=source, actor=_actor())

    result = _with_node(args, work)
    if result.unchanged:
        print(f"Directory serial {result.serial} is already held; nothing changed.")
    else:
        print(
            f"Directory serial {result.serial} imported: "
            f"{plural(result.organisations, 'organisation')}, "
            f"{plural(result.revocations, 'revocation')}; next update due "
            f"{_fmt(result.next_update)}."
        )
    return 0


def _export_entry(args: argparse.Namespace) -> int:
    from schemas.directory import AuditKey

    async def work(node: Node) -> DirectoryEntry:
        # The node's audit-log key, so counterparts can keep our receipts' checkpoints.
        audit_key = AuditKey.from_vkey((await node.audit_log.verifier()).vkey)
        return await node.directory.own_entry(
            args.org, endpoint=args.endpoint, email=args.email, audit_key=audit_key
        )

    entry = _with_node(args, work)
    text = json.dumps(entry.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    _write_new(args.out, text.encode("utf-8"), 0o644)
    print(
        f"Entry of {entry.org_id} written to {args.out}.\n"
        f"fingerprint:  {entry.fingerprint}\n"
        "Send the file to the directory authority (or the other organisation), and read "
        "them the fingerprint by another channel."
    )
    return 0


def _add_local(args: argparse.Namespace) -> int:
    from transfer.directory.document import parse_entry

    entry = parse_entry(_read(args.entry, "a directory entry file", _MAX_ENTRY_BYTES))

    async def work(node: Node) -> DirectoryEntry:
        return await node.directory.add_local(entry, fingerprint=args.fingerprint, actor=_actor())

    _with_node(args, work)
    print(
        f"{entry.org_id} ({entry.name}) added to this node's directory by hand "
        f"(fingerprint {entry.fingerprint} confirmed)."
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from schemas.directory import Revocation
    from transfer.directory.service import HeldDocument, ListedEntry, PinnedAuthority

    async def work(
        node: Node,
    ) -> tuple[PinnedAuthority | None, HeldDocument | None, list[ListedEntry], list[Revocation]]:
        d = node.directory
        return await d.authority(), await d.held(), await d.listing(), await d.revocations()

    authority, held, listing, revocations = _with_node(args, work)
    out: list[str] = []
    if authority is None:
        out.append("authority:    none pinned ('handover directory pin')")
    else:
        out.append(
            f"authority:    {authority.name or '(no directory imported yet)'} "
            f"(key {authority.public_key.key_id_hex}, fingerprint {authority.fingerprint})"
        )
    if held is not None:
        late = " - OVERDUE: import a current directory" if held.next_update < _now() else ""
        out.append(
            f"directory:    serial {held.serial}, issued {_fmt(held.issued_at)}, "
            f"next update {_fmt(held.next_update)}{late}"
        )
    out.append(f"organisations ({len(listing)}):")
    for le in listing:
        e = le.entry
        note = " (hidden by an entry above)" if le.shadowed else ""
        out.append(
            f"  {e.org_id:<24} {le.source:<9} {e.kind:<12} {e.fingerprint}  "
            f"{e.endpoint or '(no node)'}  {e.name}{note}"
        )
    if revocations:
        out.append(f"revocations ({len(revocations)}):")
        for r in revocations:
            out.append(f"  {r.org_id:<24} {r.key_id} from {_fmt(r.revoked_at)}  {r.reason}")
    print("\n".join(out))
    return 0


# ------------------------------------------------------------ registration


def register(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "directory",
        help="who is who: the signed directory of organisations and their keys",
        description=(
            "Make, sign and serve a directory (as a directory authority), or pin its key, "
            "import it and add local entries (on a node)."
        ),
    )
    dsub = parser.add_subparsers(dest="directory_command", metavar="ACTION", required=True)

    def add(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int], *, node: bool
    ) -> argparse.ArgumentParser:
        p = dsub.add_parser(name, help=help_text, description=help_text)
        if node:
            add_data_dir(p)
        p.set_defaults(handler=handler)
        return p

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

    p = add("pin", "trust a directory authority's key (confirm its fingerprint)", _pin, node=True)
    p.add_argument("--authority-key", type=Path, required=True, metavar="FILE")
    p.add_argument(
        "--fingerprint",
        default=None,
        metavar="FP",
        help="the fingerprint the authority gave you by another channel",
    )
    p.add_argument("--replace", action="store_true", help="replace a pinned authority key")

    p = add("import", "import the authority's signed directory", _import, node=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, metavar="FILE", help="directory.json (and .minisig)")
    src.add_argument("--url", metavar="URL", help="where the authority serves directory.json")
    p.add_argument(
        "--signature",
        type=Path,
        default=None,
        metavar="FILE",
        help="the signature file (default: FILE.minisig)",
    )

    p = add(
        "export-entry",
        "write one of this node's organisations as an entry",
        _export_entry,
        node=True,
    )
    p.add_argument("--org", required=True, metavar="ID")
    p.add_argument(
        "--endpoint",
        default=None,
        metavar="URL",
        help="the node's public base URL (default: node.base_url)",
    )
    p.add_argument("--email", default=None, metavar="ADDR")
    p.add_argument("--out", type=Path, default=None, metavar="FILE")

    p = add(
        "add-local", "add an entry by hand after confirming its fingerprint", _add_local, node=True
    )
    p.add_argument("--entry", type=Path, required=True, metavar="FILE")
    p.add_argument(
        "--fingerprint",
        required=True,
        metavar="FP",
        help="the fingerprint the organisation read out to you",
    )

    add("list", "list the organisations this node knows", _list, node=True)
