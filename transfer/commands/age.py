"""``handover age``: the age file format, for people who have no ``age`` installed.

The flags are age's own::

    handover age keygen [-o FILE]
    handover age encrypt (-r RECIPIENT | -R FILE)... [-a] [-o OUT] [IN]
    handover age encrypt -p [-a] [-o OUT] [IN]
    handover age decrypt [-i IDENTITY_FILE]... [-o OUT] [IN]

Standard input and output are used when no file is named. A passphrase (``-p``
to encrypt; ``decrypt`` without ``-i``) is read from the terminal, or from the
environment variable ``HANDOVER_AGE_PASSPHRASE`` for scripts and tests. A named
output file is written under a temporary name in the same directory, sent to the
disk while it is being made, ``fsync``-ed, and renamed only once everything
verified: a damaged file leaves no partial plaintext behind.
"""

from __future__ import annotations

import argparse
import getpass
import io
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from transfer.commands._common import Subparsers
from transfer.errors import ConflictError, InputError, TransportError

if TYPE_CHECKING:
    from transfer.age import Identity, Recipient, Stanza

PASSPHRASE_ENV = "HANDOVER_AGE_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
_WRITE_AHEAD = 16 * 1024 * 1024


def _passphrase(confirm: bool) -> bytes:
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        if not env:
            raise InputError(f"{PASSPHRASE_ENV} is set but empty")
        return env.encode("utf-8")
    try:
        with open("/dev/tty", "rb"):
            pass
    except OSError:
        raise InputError(
            f"no terminal to ask for the passphrase; set {PASSPHRASE_ENV} instead"
        ) from None
    first = getpass.getpass("Enter passphrase: ")
    if not first:
        raise InputError("the passphrase must not be empty")
    if confirm and getpass.getpass("Confirm passphrase: ") != first:
        raise InputError("the passphrases do not match")
    return first.encode("utf-8")


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from None


@contextmanager
def _input(path: str | None) -> Iterator[BinaryIO]:
    if path is None or path == "-":
        yield sys.stdin.buffer
        return
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"input file {path} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot open input file {path}: {exc.strerror}") from None
    with fh:
        yield fh


class _WrittenAhead(io.FileIO):
    """An output file sent to the disk while the rest of it is still being made.

    After every :data:`_WRITE_AHEAD` bytes, the part just written is advised
    ``POSIX_FADV_DONTNEED``: on Linux that starts writing it back without
    waiting (and drops from the cache only pages already written back), so the
    disk works while the CPU encrypts or decrypts the next part, and the single
    ``fsync`` of :meth:`finish` only waits for the tail. Where the advice is
    not supported, it is dropped and :meth:`finish` does all the work.
    """

    def __init__(self, fd: int) -> None:
        super().__init__(fd, "wb", closefd=True)
        self._written = 0
        self._advised = 0
        self._advise = hasattr(os, "posix_fadvise")

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        n = super().write(data)
        self._written += n
        if self._advise and self._written - self._advised >= _WRITE_AHEAD:
            try:
                os.posix_fadvise(
                    self.fileno(),
                    self._advised,
                    self._written - self._advised,
                    os.POSIX_FADV_DONTNEED,
                )
            except OSError:
                self._advise = False
            self._advised = self._written
        return n

    def finish(self) -> None:
        """Return once everything written is on the disk."""
        os.fsync(self.fileno())


@contextmanager
def _output(path: str | None) -> Iterator[BinaryIO]:
    """Standard output, or a temporary file renamed to ``path`` only on success."""
    if path is None or path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise TransportError(f"cannot write in {target.parent}: {exc.strerror}") from None
    try:
        with _WrittenAhead(fd) as fh:
            yield fh
            fh.finish()
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _keygen(args: argparse.Namespace) -> int:
    from transfer.age import X25519Identity

    identity = X25519Identity.generate()
    public = identity.recipient.to_string()
    created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    text = f"# created: {created}\n# public key: {public}\n{identity.to_string()}\n"
    if args.output:
        try:
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConflictError(f"{args.output} already exists; choose another name") from None
        except OSError as exc:
            raise TransportError(f"cannot write {args.output}: {exc.strerror}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    print(f"Public key: {public}", file=sys.stderr)
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    from transfer.age import (
        AgeKeyError,
        AgeWriter,
        ScryptRecipient,
        parse_recipient,
        read_recipients_file,
    )

    recipients: list[Recipient] = [parse_recipient(r) for r in args.recipient]
    for path in args.recipients_file:
        recipients += read_recipients_file(_read_text(path, "recipients file"))
    if args.passphrase:
        if recipients:
            raise AgeKeyError("-p cannot be combined with -r or -R: a passphrase must be alone")
        recipients = [ScryptRecipient(_passphrase(confirm=True))]
    if not recipients:
        raise InputError("name at least one recipient with -r or -R, or use -p for a passphrase")
    if args.output in (None, "-") and not args.armor and sys.stdout.isatty():
        raise InputError("refusing to write binary data to a terminal; use -a or -o FILE")
    with _input(args.input) as src, _output(args.output) as dst:
        with AgeWriter(dst, recipients, armor=args.armor) as writer:
            writer.write_from(src)
    return 0


class _AskedPassphrase:
    """A passphrase identity that asks for the passphrase only if the file has one."""

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        from transfer.age import AgeNoMatchError, ScryptIdentity

        if not any(s.type == "scrypt" for s in stanzas):
            raise AgeNoMatchError(
                "this file is not passphrase-encrypted; give its identity file with -i"
            )
        return ScryptIdentity(_passphrase(confirm=False)).unwrap(stanzas)


def _decrypt(args: argparse.Namespace) -> int:
    from transfer.age import AgeReader, read_identities_file
    from transfer.age.stream import copy_plaintext

    identities: list[Identity] = []
    for path in args.identity:
        identities += read_identities_file(_read_text(path, "identity file"))
    if not identities:
        identities = [_AskedPassphrase()]
    with _input(args.input) as src:
        reader = AgeReader(src, identities)
        with _output(args.output) as dst:
            copy_plaintext(reader, dst)
    return 0


def register(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "age",
        help="encrypt and decrypt age files (compatible with the age tool)",
        description=(
            "Encrypt and decrypt files in the age v1 format, compatible with age and rage. "
            f"A passphrase is read from the terminal or from ${PASSPHRASE_ENV}."
        ),
    )
    cmds = parser.add_subparsers(dest="age_command", metavar="COMMAND")

    def _usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(handler=_usage)

    keygen = cmds.add_parser("keygen", help="generate an X25519 identity (like age-keygen)")
    keygen.add_argument(
        "-o", "--output", metavar="FILE", help="write the identity to FILE (mode 0600)"
    )
    keygen.set_defaults(handler=_keygen)

    enc = cmds.add_parser("encrypt", help="encrypt to recipients or with a passphrase")
    enc.add_argument(
        "-r",
        "--recipient",
        action="append",
        default=[],
        metavar="RECIPIENT",
        help="an age1... recipient (repeatable)",
    )
    enc.add_argument(
        "-R",
        "--recipients-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a file of recipients, one per line, # comments (repeatable)",
    )
    enc.add_argument(
        "-p",
        "--passphrase",
        action="store_true",
        help=f"encrypt with a passphrase (from the terminal or ${PASSPHRASE_ENV})",
    )
    enc.add_argument("-a", "--armor", action="store_true", help="write PEM-style ASCII armor")
    enc.add_argument("-o", "--output", metavar="OUT", help="output file (default: stdout)")
    enc.add_argument("input", nargs="?", metavar="IN", help="input file (default: stdin)")
    enc.set_defaults(handler=_encrypt)

    dec = cmds.add_parser("decrypt", help="decrypt with identity files or a passphrase")
    dec.add_argument(
        "-i",
        "--identity",
        action="append",
        default=[],
        metavar="IDENTITY",
        help="an identity file (repeatable); without -i, a passphrase is asked for",
    )
    dec.add_argument("-o", "--output", metavar="OUT", help="output file (default: stdout)")
    dec.add_argument("input", nargs="?", metavar="IN", help="input file (default: stdin)")
    dec.set_defaults(handler=_decrypt)
