"""``handover directory``, the node's side (``--data-dir``): ``pin`` the authority's key,
``import`` its signed directory, ``export-entry``, ``add-local``, ``list``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from transfer.commands._common import data_dir_of
from transfer.commands.directory.files import (
    FETCH_TIMEOUT,
    MAX_ENTRY_BYTES,
    SIG_SUFFIX,
    AddAction,
    actor,
    fmt,
    now,
    public_key,
    read_limited,
    signature_path,
    write_new,
)
from transfer.errors import InputError, TransportError
from transfer.wording import plural

if TYPE_CHECKING:
    from schemas.directory import DirectoryEntry
    from transfer.node import Node

T = TypeVar("T")


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

    public = public_key(args.authority_key)
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
            public, fingerprint=given, actor=actor(), replace=args.replace
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

    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
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
            sig_path = args.signature or signature_path(args.file)
            data = read_limited(args.file, "a directory file", MAX_DOCUMENT_BYTES)
            sig = read_limited(sig_path, "the directory's signature file", MAX_SIGNATURE_BYTES)
            source = str(args.file.resolve())
        return await node.directory.import_document(data, sig, source=source, actor=actor())

    result = _with_node(args, work)
    if result.unchanged:
        print(f"Directory serial {result.serial} is already held; nothing changed.")
    else:
        print(
            f"Directory serial {result.serial} imported: "
            f"{plural(result.organisations, 'organisation')}, "
            f"{plural(result.revocations, 'revocation')}; next update due "
            f"{fmt(result.next_update)}."
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
    write_new(args.out, text.encode("utf-8"), 0o644)
    print(
        f"Entry of {entry.org_id} written to {args.out}.\n"
        f"fingerprint:  {entry.fingerprint}\n"
        "Send the file to the directory authority (or the other organisation), and read "
        "them the fingerprint by another channel."
    )
    return 0


def _add_local(args: argparse.Namespace) -> int:
    from transfer.directory.document import parse_entry

    entry = parse_entry(read_limited(args.entry, "a directory entry file", MAX_ENTRY_BYTES))

    async def work(node: Node) -> DirectoryEntry:
        return await node.directory.add_local(entry, fingerprint=args.fingerprint, actor=actor())

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
        late = " - OVERDUE: import a current directory" if held.next_update < now() else ""
        out.append(
            f"directory:    serial {held.serial}, issued {fmt(held.issued_at)}, "
            f"next update {fmt(held.next_update)}{late}"
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
            out.append(f"  {r.org_id:<24} {r.key_id} from {fmt(r.revoked_at)}  {r.reason}")
    print("\n".join(out))
    return 0


def add_node_actions(add: AddAction) -> None:
    """The node's actions, after the authority's in ``--help``."""
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
