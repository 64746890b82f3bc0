"""``handover keys``: an organisation's signing and encryption keys on this node.

The key files live in ``<data dir>/keys/``, sealed under the operator's
key-encryption key (``HANDOVER_KEK`` or ``security.kek_file``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet, format_time
from keys.sealing import KekProtection
from transfer.commands._common import Subparsers, add_data_dir, data_dir_of
from transfer.config import kek_source, load_config, load_kek
from transfer.errors import ConflictError, InputError, TransportError
from transfer.wording import plural


def _store(args: argparse.Namespace) -> KeyFiles:
    data_dir = data_dir_of(args)
    config = load_config(data_dir)
    return KeyFiles.for_data_dir(data_dir, KekProtection(load_kek(config)))


T = TypeVar("T")


def _audited(args: argparse.Namespace, work: Callable[[KeyFiles], Awaitable[T]]) -> T:
    """Run a key operation with the node's tamper-evident audit log as its sink."""
    from transfer.audit.log import AuditLog
    from transfer.identity import prepare_database
    from transfer.store.db import make_engine

    data_dir = data_dir_of(args)
    config = load_config(data_dir)
    kek = load_kek(config)

    async def go() -> T:
        url = config.database_url(data_dir)
        engine = make_engine(url)
        try:
            await prepare_database(
                engine, kek, data_dir=data_dir, url=url, kek_source=kek_source(config)
            )
        finally:
            await engine.dispose()
        log = AuditLog.for_node(data_dir, config, kek)
        try:
            return await work(KeyFiles.for_data_dir(data_dir, KekProtection(kek), audit=log))
        finally:
            await log.close()

    return asyncio.run(go())


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return f"cli:uid-{os.getuid()}"


def _summary(keyset: KeySet) -> str:
    return (
        f"organisation:     {keyset.org_id}\n"
        f"fingerprint:      {keyset.fingerprint}\n"
        f"age recipient:    {keyset.recipient}\n"
        f"minisign key id:  {keyset.key_id_hex}\n"
    )


def _parse_time(text: str) -> datetime:
    if text.strip().lower() == "now":
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"--at {text!r} is not a time; write it as ISO 8601 with a zone, "
            "for example 2026-11-23T09:00:00Z, or 'now'"
        ) from None
    if when.tzinfo is None:
        raise InputError(
            f"--at {text!r} has no time zone; add one, for example 2026-11-23T09:00:00Z"
        )
    return when


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConflictError(f"{path} already exists; choose another name") from None
    except OSError as exc:
        raise TransportError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise TransportError(f"cannot write {path}: {exc.strerror}") from None


def _generate(args: argparse.Namespace) -> int:
    keyset = _audited(args, lambda ks: ks.create(args.org, actor=_actor()))
    sys.stdout.write("New keys made.\n" + _summary(keyset))
    return 0


def _list(args: argparse.Namespace) -> int:
    for org in _store(args).list_orgs():
        print(org)
    return 0


def _show(args: argparse.Namespace) -> int:
    keyset = _store(args).load(args.org)
    out = [_summary(keyset)]
    out.append("signing keys:\n")
    for r in keyset.signing_keys():
        state = "current"
        if r.retired_at is not None:
            state = f"replaced {format_time(r.retired_at)}"
        if r.revoked_at is not None:
            state += f", REVOKED from {format_time(r.revoked_at)}"
        out.append(f"  {r.key_id_hex}  made {format_time(r.created_at)}  {state}\n")
    out.append("decryption keys:\n")
    for k in keyset.decryption_keys():
        state = "current" if k.retired_at is None else f"replaced {format_time(k.retired_at)}"
        out.append(f"  {k.recipient}  made {format_time(k.created_at)}  {state}\n")
    sys.stdout.write("".join(out))
    return 0


def _export_public(args: argparse.Namespace) -> int:
    exported = _store(args).export_public(args.org)
    if args.minisign is not None:
        _write_new_file(args.minisign, exported.minisign_public_key.encode("ascii"), 0o644)
    sys.stdout.write(
        f"fingerprint:      {exported.fingerprint}\n"
        f"age recipient:    {exported.recipient}\n"
        f"minisign key id:  {exported.minisign_key_id}\n"
        + ("" if args.minisign is None else f"minisign public key written to {args.minisign}\n")
    )
    return 0


def _export_identity(args: argparse.Namespace) -> int:
    if args.output.exists():
        raise ConflictError(f"{args.output} already exists; choose another name")
    text = _audited(
        args,
        lambda ks: ks.export_identity(
            args.org, confirm=bool(args.yes_i_understand), actor=_actor()
        ),
    )
    _write_new_file(args.output, text.encode("ascii"), 0o600)
    print(
        f"The secret decryption key(s) of {args.org} were written to {args.output} (mode 0600). "
        "Keep the file offline; whoever holds it can read every package sent to this "
        "organisation."
    )
    return 0


def _rotate(args: argparse.Namespace) -> int:
    keyset = _audited(args, lambda ks: ks.rotate(args.org, actor=_actor()))
    sys.stdout.write(
        "New keys made; the earlier decryption key is kept for packages still on their way.\n"
        + _summary(keyset)
        + "Publish the new age recipient and minisign key in the directory.\n"
    )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    at = _parse_time(args.at)
    store = _store(args)
    before = store.load(args.org)
    keyset = _audited(
        args, lambda ks: ks.revoke(args.org, at=at, key_id=args.key_id, actor=_actor())
    )
    which = keyset.find_signing_key(args.key_id) if args.key_id else keyset.previous_signing[0]
    rotated = keyset.key_id_hex != before.key_id_hex
    sys.stdout.write(
        f"Signing key {which.key_id_hex} is revoked from {format_time(at)}: signatures by it "
        "dated from then on are refused.\n"
        + ("New keys were made:\n" + _summary(keyset) if rotated else "")
        + "Publish the revocation in the directory.\n"
    )
    return 0


def _import_identity(args: argparse.Namespace) -> int:
    if str(args.file) == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(args.file).read_text(encoding="ascii")
        except FileNotFoundError:
            raise InputError(f"{args.file} does not exist") from None
        except (OSError, UnicodeDecodeError):
            raise InputError(f"{args.file} is not a readable age identity file") from None
    result = _audited(args, lambda ks: ks.import_identity(args.org, text, actor=_actor()))
    if result.created:
        sys.stdout.write(
            f"Keys made for {args.org} around the imported identity "
            f"({plural(result.added, 'key')} imported).\n" + _summary(result.keyset)
        )
    else:
        print(
            f"{plural(result.added, 'key')} added to {args.org} as earlier decryption keys "
            "(the current keys are unchanged)."
        )
    return 0


def register(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "keys",
        help="an organisation's signing and encryption keys",
        description="Make, show, rotate, revoke, export and import an organisation's keys.",
    )
    keys_sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    def add(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p = keys_sub.add_parser(name, help=help_text, description=help_text)
        add_data_dir(p)
        p.set_defaults(handler=handler)
        return p

    p = add("generate", "make keys for an organisation", _generate)
    p.add_argument("org", metavar="ORG", help="organisation id")

    add("list", "list the organisations that have keys on this node", _list)

    p = add("show", "show an organisation's fingerprint, age recipient and key ids", _show)
    p.add_argument("org", metavar="ORG")

    p = add(
        "export-public", "print the public keys; write a minisign public key file", _export_public
    )
    p.add_argument("org", metavar="ORG")
    p.add_argument("--minisign", type=Path, metavar="FILE", help="write the minisign public key")

    p = add(
        "export-identity",
        "write the secret age identity (disaster recovery; audited)",
        _export_identity,
    )
    p.add_argument("org", metavar="ORG")
    p.add_argument(
        "--yes-i-understand",
        action="store_true",
        help="confirm that a secret key is leaving the node",
    )
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")

    p = add("rotate", "make new keys, keeping the earlier decryption key", _rotate)
    p.add_argument("org", metavar="ORG")

    p = add("revoke", "revoke a signing key from a time on", _revoke)
    p.add_argument("org", metavar="ORG")
    p.add_argument(
        "--at",
        required=True,
        metavar="TIME",
        help="ISO 8601 time with a zone (2026-11-23T09:00:00Z) or 'now'",
    )
    p.add_argument(
        "--key-id",
        metavar="ID",
        default=None,
        help="the minisign key id to revoke (default: the current key, which also rotates)",
    )

    p = add(
        "import-identity", "import an AGE-SECRET-KEY file (disaster recovery)", _import_identity
    )
    p.add_argument("org", metavar="ORG")
    p.add_argument("file", metavar="FILE", help="age identity file, or - for standard input")
