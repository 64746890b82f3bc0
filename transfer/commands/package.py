"""``handover package inspect|verify|open``: check a package file, and open it on request.

Our keys come from ``-i FILE`` (an age identity file; then ``--org`` and
``--fingerprint`` say who we are) or from the node's key files (``--data-dir``,
``HANDOVER_KEK``). The sender's key comes from ``--sender-key FILE`` (a
minisign public key file, compared with the sender out of band) or, when not
given, from the organisations whose keys this node holds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from keys import minisign
from keys.fingerprint import normalise
from keys.keyset import KeySet
from transfer.age import X25519Identity, read_identities_file
from transfer.commands._common import Subparsers, add_data_dir, data_dir_of
from transfer.errors import ConfigError, InputError
from transfer.wording import plural

if TYPE_CHECKING:  # imported when a command runs: the manifest's models need pydantic
    from keys.keyfiles import KeyFiles
    from transfer.package.layout import Addressee, Limits, SenderKeys, VerifiedPackage
    from transfer.package.open import Progress

__all__ = ["register"]


@dataclass(frozen=True)
class _Keys:
    identities: list[X25519Identity]
    addressee: Addressee | None
    sender_keys: SenderKeys


def _read_text(path: Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError):
        raise InputError(f"{path} is not a readable {what}") from None


class _Node:
    """The node's key files, opened on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._store: KeyFiles | None = None

    def store(self) -> KeyFiles:
        if self._store is None:
            # Only with the node's keys: a package checked with -i and --sender-key (an
            # outsider's way) starts without the configuration and the key files.
            from keys.keyfiles import KeyFiles
            from keys.sealing import KekProtection
            from transfer.config import load_config, load_kek

            data_dir = data_dir_of(self._args)
            config = load_config(data_dir)
            self._store = KeyFiles.for_data_dir(data_dir, KekProtection(load_kek(config)))
        return self._store

    def our_keyset(self, org: str | None) -> KeySet:
        store = self.store()
        if org is None:
            orgs = store.list_orgs()
            if len(orgs) != 1:
                raise InputError(
                    "say which organisation opens the package with --org "
                    f"(this node holds keys for {len(orgs)} organisations)"
                )
            org = orgs[0]
        return store.load(org)

    def all_keysets(self) -> dict[str, KeySet]:
        store = self.store()
        return {org: store.load(org) for org in store.list_orgs()}


def _keys(args: argparse.Namespace, *, need_addressee: bool) -> _Keys:
    from transfer.package.layout import Addressee, KeySetSenderKeys, PinnedSenderKey

    node = _Node(args)
    addressee: Addressee | None
    if args.identity is not None:
        identities = read_identities_file(_read_text(args.identity, "age identity file"))
        if args.org and args.fingerprint:
            addressee = Addressee(args.org, frozenset({normalise(args.fingerprint)}))
        elif need_addressee or args.org or args.fingerprint:
            raise InputError(
                "with -i, say who you are with both --org and --fingerprint (as `handover keys "
                "show` prints them), so the package can be checked as addressed to you"
            )
        else:
            addressee = None
    else:
        keyset = node.our_keyset(args.org)
        identities = [X25519Identity.from_private_bytes(k.secret) for k in keyset.decryption_keys()]
        addressee = Addressee.for_keyset(keyset)
        if args.fingerprint and normalise(args.fingerprint) not in addressee.fingerprints:
            raise InputError(f"--fingerprint {args.fingerprint} is not one of {keyset.org_id}'s")
    sender_keys: SenderKeys
    if args.sender_key is not None:
        public = minisign.PublicKey.from_text(
            _read_text(args.sender_key, "minisign public key file")
        )
        sender_keys = PinnedSenderKey(public, args.sender_org)
    else:
        try:
            sender_keys = KeySetSenderKeys(node.all_keysets())
        except ConfigError:
            if args.identity is None:
                raise
            raise InputError(
                "give the sender's minisign public key with --sender-key FILE "
                "(this machine has no node key files to look the sender up in)"
            ) from None
    return _Keys(identities=identities, addressee=addressee, sender_keys=sender_keys)


def _limits(args: argparse.Namespace) -> Limits:
    from transfer.package.layout import Limits

    if args.max_size is None:
        return Limits()
    return Limits(max_total_bytes=args.max_size)


def _progress(label: str) -> tuple[Progress | None, Callable[[], None]]:
    """A progress line on standard error when it is a terminal (nothing when piped)."""
    if not sys.stderr.isatty():
        return None, lambda: None
    last = [0.0]

    def show(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and (total is None or done < total):
            return
        last[0] = now
        mib = done / 1024**2
        if total:
            sys.stderr.write(f"\r{label}: {min(100, done * 100 // total):3d}%  {mib:,.1f} MiB")
        else:
            sys.stderr.write(f"\r{label}: {mib:,.1f} MiB")
        sys.stderr.flush()

    def done() -> None:
        if last[0]:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()

    return show, done


def _open_package_file(path: Path) -> BinaryIO:
    try:
        return Path(path).open("rb")
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def _size(n: int) -> str:
    if n < 1024:
        return plural(n, "byte")
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:,.1f} {unit}"


def _describe(result: VerifiedPackage, checked_to: bool) -> str:
    from schemas.manifest import format_rfc3339

    m = result.manifest
    s = m.subject
    who = f"{s.surname}, {s.forename}"
    if s.upn:
        who += f"  UPN {s.upn}"
    if s.dob:
        who += f"  born {s.dob.isoformat()}"
    schemas = ", ".join(f"{k} v{v}" for k, v in sorted(m.records_schema.items())) or "none"
    lines = [
        f"package:   {m.package_id} ({m.kind}), made {format_rfc3339(m.created_at)}",
        f"from:      {m.sender.org_id}  fingerprint {m.sender.key_fingerprint}  "
        f"signing key {m.sender.signing_key_id}  (signature checked)",
        f"to:        {m.recipient.org_id}  fingerprint {m.recipient.key_fingerprint}  "
        + ("(addressed to us)" if checked_to else "(NOT checked: give --org and --fingerprint)"),
        f"subject:   {who}",
        f"records:   {schemas}",
        f"entries:   {len(m.entries)} ({_size(m.total_size)}), not read: "
        "`handover package verify` checks them",
    ]
    lines += [f"  {e.sha256}  {e.size:>12}  {e.path}" for e in m.entries]
    return "\n".join(lines) + "\n"


def _inspect(args: argparse.Namespace) -> int:
    from transfer.package.open import inspect_package

    keys = _keys(args, need_addressee=False)
    with _open_package_file(args.package) as f:
        result = inspect_package(
            f,
            identities=keys.identities,
            sender_keys=keys.sender_keys,
            addressee=keys.addressee,
            limits=_limits(args),
        )
    if args.json:
        sys.stdout.write(json.dumps(json.loads(result.manifest_bytes), indent=2) + "\n")
    else:
        sys.stdout.write(_describe(result, keys.addressee is not None))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from transfer.package.open import verify_package

    keys = _keys(args, need_addressee=True)
    assert keys.addressee is not None
    progress, finish = _progress("verifying")
    try:
        with _open_package_file(args.package) as f:
            result = verify_package(
                f,
                identities=keys.identities,
                sender_keys=keys.sender_keys,
                addressee=keys.addressee,
                limits=_limits(args),
                progress=progress,
                # Printed below, to match the package to its offer and receipts.
                hash_ciphertext=True,
            )
    finally:
        finish()
    print(
        f"OK: {result.summary()}; signature by {result.manifest.sender.signing_key_id} and "
        f"every SHA-256 checked; ciphertext sha256 {result.ciphertext_sha256}"
    )
    return 0


def _open(args: argparse.Namespace) -> int:
    from transfer.package.open import extract_package

    keys = _keys(args, need_addressee=True)
    assert keys.addressee is not None
    progress, finish = _progress("opening")
    try:
        result = extract_package(
            args.package,
            args.output,
            identities=keys.identities,
            sender_keys=keys.sender_keys,
            addressee=keys.addressee,
            limits=_limits(args),
            progress=progress,
        )
    finally:
        finish()
    print(
        f"OK: {result.summary()}; opened into {args.output}. These files are NOT encrypted: "
        "keep them safe and delete them when you are done."
    )
    return 0


_OPEN_HELP = (
    "verify the package completely and only then write its files, DECRYPTED, into a new "
    "directory. This is the one command that writes a package's plaintext to disk, because "
    "you asked for it: nothing is written if any check fails, and the files are yours to "
    "protect and delete."
)


def register(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "package",
        help="inspect, verify or open a package file",
        description="Check a package file (age-encrypted, minisign-signed), or open it.",
    )
    package_sub = parser.add_subparsers(dest="package_command", metavar="ACTION", required=True)

    def add(
        name: str,
        help_text: str,
        handler: Callable[[argparse.Namespace], int],
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        p = package_sub.add_parser(name, help=help_text, description=description or help_text)
        p.add_argument("package", type=Path, metavar="PACKAGE", help="the package file (.age)")
        add_data_dir(p)
        p.add_argument(
            "-i",
            "--identity",
            type=Path,
            metavar="FILE",
            help="an age identity file (AGE-SECRET-KEY-1...) to decrypt with, instead of the "
            "node's key files",
        )
        p.add_argument(
            "--org",
            metavar="ORG",
            help="the organisation opening the package (with -i: required; with the node's "
            "key files: needed when the node holds several)",
        )
        p.add_argument(
            "--fingerprint",
            metavar="FP",
            help="our key fingerprint (with -i: required), as `handover keys show` prints it",
        )
        p.add_argument(
            "--sender-key",
            type=Path,
            metavar="FILE",
            help="the sender's minisign public key file (default: the keys this node holds)",
        )
        p.add_argument(
            "--sender-org",
            metavar="ORG",
            help="with --sender-key: the organisation that key belongs to",
        )
        p.add_argument(
            "--max-size",
            type=int,
            metavar="BYTES",
            default=None,
            help="refuse packages larger than this (default: 16 GiB)",
        )
        p.set_defaults(handler=handler)
        return p

    p = add(
        "inspect",
        "check the manifest's signature and show the manifest, without reading the entries",
        _inspect,
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    add(
        "verify",
        "check everything (decryption, signature, recipient, every entry) and print one line",
        _verify,
    )
    p = add(
        "open",
        "verify everything, then write the DECRYPTED files into a new directory",
        _open,
        _OPEN_HELP,
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="DIR",
        help="the new directory to write the decrypted files into (must not exist)",
    )
