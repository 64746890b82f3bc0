"""Route 3: an offline bundle, for removable media or an agency's own upload channel.

:func:`write_offline_bundle` seals the referral and writes a directory (or a
zip of it) that an agency opens with the standard tools alone (``age``,
``tar``, ``minisign``, ``sha256sum``):

- ``referral.age``: the package, encrypted to the agency's registered
  ``age1…`` recipient, or to a passphrase (age scrypt) shown to the DSL once
  and never stored, to be given to the agency by another channel;
- ``referral.age.minisig``: the school's minisign signature of that file;
- ``SHA256SUMS``: its SHA-256, for ``sha256sum -c``;
- ``sender-<org>.pub``: the school's minisign public key (to compare, by key
  id, with the one the agency knows from the directory or a phone call);
- ``README.txt``: the instruction sheet, with the exact commands.

The referral becomes ``sent`` (route ``offline``); the DSL then records the
hand-over (:meth:`transfer.referrals.service.Referrals.record_handover`):
to whom, how, when. No plaintext is ever written: the package is streamed
from the store straight into the age encryption.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import zipfile
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Final

from keys import minisign
from keys.keyset import KeySet
from transfer.age import SCRYPT_DEFAULT_LOG_N, ScryptRecipient
from transfer.errors import ConflictError, TransportError
from transfer.private_files import create_private, private_dir
from transfer.referrals.service import Referrals
from transfer.store.permissions import Actor

__all__ = [
    "BUNDLE_CONTEXT",
    "COMMANDS_END",
    "COMMANDS_START",
    "OfflineBundle",
    "new_passphrase",
    "readme_text",
    "write_offline_bundle",
]

PACKAGE_NAME: Final = "referral.age"
SUMS_NAME: Final = "SHA256SUMS"
README_NAME: Final = "README.txt"
#: The context of the bundle signature's trusted comment.
BUNDLE_CONTEXT: Final = "handover-bundle-v1"
COMMANDS_START: Final = "----- commands (bash) -----"
COMMANDS_END: Final = "----- end of commands -----"
_GROUP_CHARS: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
_MAX_SAME_NAME: Final = 20


@dataclass(frozen=True)
class OfflineBundle:
    """What was written. ``passphrase`` is shown to the DSL once; it is stored nowhere."""

    path: Path
    referral_id: str
    package_id: str
    ciphertext_sha256: str
    sender_key_id: str
    passphrase: str | None
    files: tuple[str, ...]


def new_passphrase() -> str:
    """Six groups of four Crockford base32 characters (120 bits), easy to read out."""
    chars = "".join(secrets.choice(_GROUP_CHARS) for _ in range(24))
    return "-".join(chars[i : i + 4] for i in range(0, 24, 4))


def readme_text(
    *,
    school: str,
    agency: str,
    kind_label: str,
    package_id: str,
    key_id: str,
    pub_name: str,
    passphrase: bool,
    zipped: bool,
) -> str:
    """The instruction sheet (plain text, ASCII)."""
    decrypt = (
        "age -d referral.age | tar -x -C opened --no-same-owner --no-same-permissions -f -"
        if passphrase
        else 'age -d -i "$KEY" referral.age | tar -x -C opened --no-same-owner '
        "--no-same-permissions -f -"
    )
    how_key = (
        "It is encrypted to a PASSPHRASE. The school will give you the passphrase\n"
        "separately (for example by telephone). age asks for it when you decrypt.\n"
        if passphrase
        else "It is encrypted to your organisation's age key (your age1... recipient in the\n"
        "directory). Before you start, set KEY to your age identity file:\n\n"
        "    export KEY=/path/to/your-age-identity.txt\n"
    )
    unzip = (
        "First unzip the bundle and go into its folder (unzip BUNDLE.zip; cd BUNDLE).\n"
        if zipped
        else ""
    )
    return f"""HANDOVER OFFLINE REFERRAL BUNDLE
================================

From:     {school}
To:       {agency}
What:     {kind_label}
Package:  {package_id}

This bundle holds a safeguarding referral about a child. It is encrypted:
only {agency} can open it. Once opened, the files are NOT encrypted:
keep them safe, and delete them when you have put the referral in your
own system.

{how_key}
You need only standard tools: age, tar, minisign and sha256sum (Debian or
Ubuntu: apt install age minisign). Nothing else needs installing.

What is here:

    referral.age          the referral package (encrypted)
    referral.age.minisig  the school's signature of referral.age
    SHA256SUMS            the SHA-256 of referral.age
    {pub_name:<22}the school's public signing key
    README.txt            this sheet

Before trusting the public key file, check its key id with the school or
the directory: it must be {key_id}. (minisign prints it as the key id.)

{unzip}Then, in this folder, run these commands (bash). Each stops with an error if
anything is wrong; if any step fails, do not use the files and call the
school.

{COMMANDS_START}
set -euo pipefail
# 1. The file is complete and unchanged.
sha256sum -c --strict SHA256SUMS
# 2. The school signed exactly this file (look for the trusted comment
#    "{BUNDLE_CONTEXT} package={package_id} ...").
minisign -V -p {pub_name} -m referral.age
# 3. Decrypt and unpack into the folder "opened".
mkdir opened
{decrypt}
cd opened
# 4. The school's signature on the list of files (manifest.json).
minisign -V -p ../{pub_name} -m manifest.json
# 5. Every file matches the signed list...
grep -o '"path":"[^"]*","sha256":"[0-9a-f]*"' manifest.json \\
  | sed 's/^"path":"\\([^"]*\\)","sha256":"\\([0-9a-f]*\\)"$/\\2  \\1/' \\
  | sha256sum -c --strict -
# 6. ...and there is no file the list does not name.
grep -o '"path":"[^"]*"' manifest.json | sed 's/^"path":"\\(.*\\)"$/.\\/\\1/' | sort > ../listed.txt
find . -type f ! -name manifest.json ! -name manifest.json.minisig | sort | diff ../listed.txt -
echo "referral checked: the school's signatures and every file"
{COMMANDS_END}

What you will find in "opened":

    records/referral.json    the referral form (JSON)
    records/chronology.json  the entries of the child's record the school chose to send
    records/people.json      who at the school recorded them (name and role)
    records/...              each of those entries on its own
    documents/<sha256>       the documents sent (see records/documents/*.json for
                             each one's file name and type)

Names of other people may appear as "[redacted]": the school removed them.

When you have the referral, tell the school: they record that it reached
you, and they need your reference number.
"""


def _write_text(path: Path, text: str) -> None:
    with os.fdopen(create_private(path), "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            h.update(block)
    return h.hexdigest()


def _finish(
    folder: Path, keyset: KeySet, package_id: str, pub_name: str, readme: str, as_zip: bool
) -> Path:
    package = folder / PACKAGE_NAME
    sha = _sha256_file(package)
    signature = minisign.sign_file(
        keyset.minisign_secret_key(),
        package,
        trusted_comment=f"{BUNDLE_CONTEXT} package={package_id} sha256={sha}",
        untrusted_comment=f"handover offline bundle, signed by {keyset.org_id}",
    )
    _write_text(folder / (PACKAGE_NAME + ".minisig"), signature)
    _write_text(folder / SUMS_NAME, f"{sha}  {PACKAGE_NAME}\n")
    _write_text(folder / pub_name, keyset.minisign_public_key_text())
    _write_text(folder / README_NAME, readme)
    if not as_zip:
        return folder
    target = folder.with_suffix(".zip")
    with (
        os.fdopen(create_private(target), "wb") as raw,
        zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as z,
    ):
        for item in sorted(folder.iterdir()):
            z.write(item, f"{folder.name}/{item.name}")
    shutil.rmtree(folder)
    return target


def _new_folder(out_dir: Path, name: str) -> Path:
    """A new folder ``name`` in ``out_dir``, or ``name-2``, ``name-3``... when the referral
    was sealed before (and taken back) the same day and its earlier bundle is still there."""
    try:
        private_dir(out_dir)
    except OSError as exc:
        raise TransportError(f"cannot write in {out_dir}: {exc.strerror}") from None
    for n in range(1, _MAX_SAME_NAME + 1):
        folder = out_dir / (name if n == 1 else f"{name}-{n}")
        if folder.with_name(folder.name + ".zip").exists():
            continue
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise TransportError(f"cannot write in {out_dir}: {exc.strerror}") from None
        return folder
    raise ConflictError(
        f"{out_dir} already holds {_MAX_SAME_NAME} bundles named {name}; choose another folder"
    )


async def write_offline_bundle(
    referrals: Referrals,
    actor: Actor,
    referral_id: str,
    out_dir: Path,
    *,
    passphrase: bool = False,
    as_zip: bool = False,
    scrypt_log_n: int = SCRYPT_DEFAULT_LOG_N,
    form_only: bool = False,
) -> OfflineBundle:
    """Seal the referral into a new bundle in ``out_dir`` (a folder, or a ``.zip``).

    ``form_only``: the DSL confirmed sending a referral with no chronology entry.
    """
    record = await referrals.get(actor, referral_id)
    if record.state != "draft":
        raise ConflictError(
            f"this referral is already {record.state}; an offline bundle is made from a draft"
        )
    out_dir = Path(out_dir)
    when = referrals.store.now().astimezone(UTC).strftime("%Y%m%d")
    name = f"referral-{record.kind.replace('_', '-')}-{when}-{record.id[:8]}"
    folder = await asyncio.to_thread(_new_folder, out_dir, name)
    phrase = new_passphrase() if passphrase else None
    sealed = None
    try:
        recipients = (
            [ScryptRecipient(phrase.encode(), log_n=scrypt_log_n)] if phrase is not None else None
        )
        fd = os.open(folder / PACKAGE_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            sealed = await referrals.seal(
                actor,
                referral_id,
                out,
                route="offline",
                recipients=recipients,
                form_only=form_only,
            )
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        if sealed is not None:  # sealed, but the file did not reach the disk
            await referrals.unsend(actor, referral_id, reason="bundle not written")
        raise
    keyset = await asyncio.to_thread(referrals.keys.load, actor.org_id)
    package_id = str(sealed.built.manifest.package_id)
    pub_name = f"sender-{keyset.org_id.replace(':', '-')}.pub"
    org = await referrals.store.get_organisation(actor.org_id)
    readme = readme_text(
        school=org.name,
        agency=sealed.agency_name,
        kind_label=sealed.built.manifest.kind.replace("_", " "),
        package_id=package_id,
        key_id=keyset.key_id_hex,
        pub_name=pub_name,
        passphrase=phrase is not None,
        zipped=as_zip,
    )
    try:
        path = await asyncio.to_thread(
            _finish, folder, keyset, package_id, pub_name, readme, as_zip
        )
    except OSError as exc:
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)
        await referrals.unsend(actor, referral_id, reason="bundle not written")
        raise TransportError(f"cannot write the bundle in {out_dir}: {exc.strerror}") from None
    await referrals.store.record_event(
        "referral.bundle_written",
        actor,
        actor.org_id,
        {"referral": referral_id, "package": package_id},
        encryption="passphrase" if phrase else "recipient",
        zipped=as_zip,
    )
    files = (PACKAGE_NAME, PACKAGE_NAME + ".minisig", SUMS_NAME, pub_name, README_NAME)
    return OfflineBundle(
        path=path,
        referral_id=referral_id,
        package_id=package_id,
        ciphertext_sha256=sealed.built.ciphertext_sha256,
        sender_key_id=keyset.key_id_hex,
        passphrase=phrase,
        files=files,
    )
