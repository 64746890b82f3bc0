"""The pickup portal: a referral package offered to an agency without a node.

A DSL makes a *pickup* (:meth:`PickupPortal.create_pickup`) from a referral
package encrypted to their own organisation's key. The node re-encrypts it,
streaming, to a fresh X25519 identity made for this pickup alone, and keeps
only that ciphertext (``<data dir>/portal/<pickup id>.age``). The identity's
secret is sealed under a key derived from the node's KEK *and* the link
token; only the token's hash is stored. The agency's registered address gets
the one-time link by e-mail (when SMTP is configured; otherwise the DSL is
shown it to pass on); the passcode is shown to the DSL once, to read out.

The agency user signs in with the link and the passcode (or, once enrolled,
a TOTP code), sees the referral, downloads the documents (decrypted chunk by
chunk, never to disk) and acknowledges receipt with their name and the
agency's reference. Every step is recorded (``portal_events``: who, when,
what, from which address) and audited (``portal.*``), and the acknowledgement
is passed on to the referrals lifecycle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import (
    Any,
    BinaryIO,
    Final,
    Literal,
    Protocol,
    TypeVar,
    cast,
    runtime_checkable,
)
from urllib.parse import urlencode

import pyotp
import segno
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keys import aead
from keys.keyset import KeySet
from keys.store import KeySetNotFoundError, KeyStore
from receivers.portal import tokens
from receivers.portal.records import (
    DocumentView,
    IssuedPickup,
    LinkInfo,
    PickupEvent,
    PickupInfo,
    PickupState,
    PortalVisit,
    RecordView,
    ReferralView,
    TotpSetup,
)
from receivers.portal.tables import PortalAgencyUser, PortalEvent, PortalPickup, PortalSession
from schemas import jsontext
from schemas.manifest import Manifest, ManifestEntry
from transfer.age import AgeReader, AgeWriter, X25519Identity
from transfer.age.errors import AgeError, AgeNoMatchError
from transfer.auth import codes
from transfer.auth.passwords import INTERACTIVE, HashingCost
from transfer.errors import (
    AuthenticationError,
    ConflictError,
    HandoverError,
    InputError,
    NotFoundError,
    PolicyError,
    TransportError,
)
from transfer.package.errors import PackageDecryptError
from transfer.package.layout import KeySetSenderKeys, read_package_tar
from transfer.package.open import inspect_package, verify_package
from transfer.store.permissions import Actor, Permission, PermissionDenied, require
from transfer.store.service import Store
from transfer.wording import plural

log = logging.getLogger("receivers.portal")

Clock = Callable[[], datetime]
_T = TypeVar("_T")

PORTAL_DIR: Final = "portal"
#: The page path of a link; the token travels in the query (never logged: the access log
#: is off and the request log keeps the path only).
OPEN_PATH: Final = "/portal/open"
MAX_RECORD_BYTES: Final = 4 * 1024 * 1024
#: The longest a link may stay open after the acknowledgement ("a short, stated grace").
MAX_ACK_GRACE_MINUTES: Final = 60
_CHUNK: Final = 64 * 1024
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_TOTP_AAD: Final = b"handover:portal:totp:v1:"


# ------------------------------------------------------------------ errors


class LinkNotValid(NotFoundError):
    """An unknown or altered link: the same answer for both, so nothing can be learnt."""

    slug = "portal-link-not-valid"
    title = "This link is not valid"


class LinkExpired(PolicyError):
    http_status = 410
    slug = "portal-link-expired"
    title = "This link has expired"


class LinkRevoked(PolicyError):
    http_status = 410
    slug = "portal-link-revoked"
    title = "This link has been withdrawn"


class LinkLocked(PolicyError):
    slug = "portal-link-locked"
    title = "This link is locked"


class LinkClosed(PolicyError):
    """The agency acknowledged the referral and the grace after it has passed."""

    http_status = 410
    slug = "portal-link-closed"
    title = "This link is closed"


class WrongPortalCode(AuthenticationError):
    """A wrong passcode or authenticator code."""

    slug = "portal-wrong-code"
    title = "The code is not right"


class WrongCurrentCode(WrongPortalCode):
    """A wrong code from the authenticator app an address uses now (to replace it)."""

    slug = "portal-wrong-current-code"


class AuthenticatorLocked(PolicyError):
    """Too many wrong codes from the current app: only the sending school's DSL can reset it."""

    slug = "portal-authenticator-locked"
    title = "The authenticator app cannot be replaced here"


class PortalSessionEnded(AuthenticationError):
    slug = "portal-session-ended"
    title = "Please open your link again"


# ---------------------------------------------------------------- contracts


class PickupMailer(Protocol):
    """What the portal needs from ``transfer.mail.Mailer`` (docs/dev/contracts.md §6)."""

    @property
    def enabled(self) -> bool: ...

    async def send(self, to: Sequence[str], subject: str, body: str) -> None: ...


class AcknowledgementSink(Protocol):
    """``transfer.referrals.Referrals``: the portal's acknowledgement moves the referral on."""

    async def record_acknowledgement(
        self,
        referral_id: str,
        *,
        name: str,
        agency_reference: str,
        at: datetime,
        via: str = "portal",
    ) -> Any: ...


class TeamAlerts(Protocol):
    """``transfer.alerts.Alerts``: how the sending school's DSL team is told."""

    async def notify(
        self,
        org_id: str,
        *,
        key: str,
        level: Literal["info"],
        subject: str,
        message: str,
        pupil_id: str | None = None,
        ref: str | None = None,
    ) -> bool: ...


@runtime_checkable
class DeliverySink(Protocol):
    """``transfer.referrals.Referrals``: the agency's first view or download is the delivery.

    ``package_id`` is the pickup's package: the sink refuses (``NotFoundError``) a
    referral that was not sealed into it, so a pickup cannot move another referral on.
    """

    async def record_delivery(
        self,
        referral_id: str,
        *,
        at: datetime | None = None,
        via: str = "node",
        package_id: str | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class PortalSettings:
    #: How long a link stays valid unless the DSL says otherwise.
    link_days: int = 7
    #: The longest a DSL may ask for.
    max_link_days: int = 30
    #: Wrong passcodes (or authenticator codes) before the link locks.
    max_attempts: int = 5
    session_idle_minutes: int = 30
    session_max_hours: int = 8
    totp_drift_steps: int = 1
    passcode_cost: HashingCost = INTERACTIVE
    #: How long a link keeps working after the agency acknowledged receipt (to finish
    #: downloading); 0 closes it at the acknowledgement.
    ack_grace_minutes: int = 15

    def __post_init__(self) -> None:
        if not 1 <= self.link_days <= self.max_link_days:
            raise InputError("portal link_days must be between 1 and max_link_days")
        if not 1 <= self.max_attempts <= 100:
            raise InputError("portal max_attempts must be between 1 and 100")
        if not 0 <= self.ack_grace_minutes <= MAX_ACK_GRACE_MINUTES:
            raise InputError(
                f"portal ack_grace_minutes must be between 0 and {MAX_ACK_GRACE_MINUTES}"
            )

    @property
    def ack_grace(self) -> timedelta:
        return timedelta(minutes=self.ack_grace_minutes)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _clean_text(value: str, what: str, limit: int) -> str:
    text = " ".join(value.split())
    if not text:
        raise InputError(f"{what} is required")
    if len(text) > limit:
        raise InputError(f"{what} must be at most {limit} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InputError(f"{what} must not contain control characters")
    return text


def normalise_email(value: str) -> str:
    """A registered address, checked, with its domain in lower case."""
    text = value.strip()
    if len(text) > 254 or not _EMAIL.match(text):
        raise InputError(f"{text[:60]!r} is not an e-mail address")
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}"


def _state(p: PortalPickup, now: datetime) -> PickupState:
    if p.revoked_at is not None:
        return "revoked"
    if p.locked_at is not None:
        return "locked"
    if p.acknowledged_at is not None:
        return "acknowledged"
    if p.expires_at <= now or p.identity_sealed is None:
        return "expired"
    if p.first_opened_at is not None:
        return "opened"
    return "waiting"


def _label(name: str) -> str:
    words = re.sub(r"[_\-]+", " ", name).strip()
    return words[:1].upper() + words[1:] if words else name


def _record_title(path: str) -> str:
    parts = path.removeprefix("records/").removesuffix(".json").split("/")
    return " — ".join([_label(parts[0]), *parts[1:]])


class _Found(Exception):
    """Stops reading a package once what was wanted has been read and checked."""


class _Stopped(Exception):
    """The reader of a download went away."""


@dataclass(frozen=True)
class _Last:
    """A document's last chunk: handed over only if the link may still release it."""

    data: bytes


# ----------------------------------------------------------- package reading


def _identities(keyset: KeySet) -> list[X25519Identity]:
    return [X25519Identity.from_private_bytes(k.secret) for k in keyset.decryption_keys()]


class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes | memoryview, /) -> int:
        self._out.write(data)
        self.size += len(data)
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()


class _Tee:
    """The age plaintext, copied into the new encryption as it is read and checked."""

    def __init__(self, reader: AgeReader, writer: AgeWriter) -> None:
        self._reader = reader
        self._writer = writer

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self._reader.read(size)
        except AgeError as exc:
            raise PackageDecryptError(
                f"the package could not be decrypted: it is damaged, truncated or was altered "
                f"({exc.message})"
            ) from None
        if data:
            self._writer.write(data)
        return data


def _reencrypt(
    source: Path, target: Path, keyset: KeySet, identity: X25519Identity
) -> tuple[Manifest, int, str]:
    """Verify the package at ``source`` (encrypted to ``keyset``'s keys, signed by its
    organisation) while re-encrypting it to ``identity`` into ``target`` (new file)."""
    try:
        src = source.open("rb")
    except FileNotFoundError:
        raise InputError(f"{source} does not exist") from None
    except OSError as exc:
        raise TransportError(f"cannot read {source}: {exc.strerror}") from None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with src, os.fdopen(fd, "wb") as out:
        hashing = _HashingWriter(out)
        try:
            reader = AgeReader(src, _identities(keyset))
        except AgeNoMatchError:
            raise InputError(
                "this package is not encrypted to your organisation's key: build the portal "
                f"package to {keyset.org_id}'s own recipient ({keyset.recipient})"
            ) from None
        except AgeError as exc:
            raise PackageDecryptError(
                f"the package could not be decrypted: it is damaged or truncated ({exc.message})"
            ) from None
        writer = AgeWriter(cast(BinaryIO, hashing), [identity.recipient])
        try:
            tee = _Tee(reader, writer)
            verified = read_package_tar(
                tee, sender_keys=KeySetSenderKeys({keyset.org_id: keyset}), addressee=None
            )
            while tee.read(_CHUNK):
                pass
            if src.read(1):
                raise PackageDecryptError("the package has data after the end of its encryption")
        except BaseException:
            writer.abort()
            raise
        writer.close()
        out.flush()
        os.fsync(out.fileno())
    return verified.manifest, hashing.size, hashing.digest.hexdigest()


def _open_stored(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise LinkExpired("the referral is no longer held here") from None
    except OSError as exc:
        raise TransportError(f"cannot read the stored referral: {exc.strerror}") from None


def _read_records(
    path: Path, identity: X25519Identity, keyset: KeySet
) -> tuple[Manifest, dict[str, bytes | None]]:
    """The verified manifest and every ``records/…`` entry (checked against the manifest);
    the documents after them are not decrypted. ``None`` for a record too large to show."""
    sender_keys = KeySetSenderKeys({keyset.org_id: keyset})
    with _open_stored(path) as f:
        manifest = inspect_package(
            f, identities=[identity], sender_keys=sender_keys, addressee=None
        ).manifest
    wanted = {e.path for e in manifest.entries if e.path.startswith("records/")}
    found: dict[str, bytes | None] = {}

    def on_entry(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
        if entry.path in wanted:
            if entry.size > MAX_RECORD_BYTES:
                for _ in chunks:
                    pass
                found[entry.path] = None
            else:
                found[entry.path] = b"".join(chunks)
        if wanted <= found.keys():
            raise _Found

    if wanted:
        with _open_stored(path) as f, contextlib.suppress(_Found):
            verify_package(
                f,
                identities=[identity],
                sender_keys=sender_keys,
                addressee=None,
                on_entry=on_entry,
            )
    return manifest, found


def _documents(manifest: Manifest, records: dict[str, Any]) -> tuple[DocumentView, ...]:
    """Every entry that is not a record, named from a record that describes it, if any."""
    described: dict[str, dict[str, Any]] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            sha = value.get("sha256")
            if isinstance(sha, str) and isinstance(value.get("filename"), str):
                described.setdefault(sha, value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(list(records.values()))
    out = []
    docs = [e for e in manifest.entries if not e.path.startswith("records/")]
    for i, entry in enumerate(docs):
        info = described.get(entry.sha256, {})
        filename = str(info.get("filename") or entry.path.rsplit("/", 1)[-1])
        media = str(info.get("media_type") or "application/octet-stream")
        out.append(DocumentView(i, entry.path, filename, entry.size, entry.sha256, media))
    return tuple(out)


# ------------------------------------------------------------------ service


class PickupPortal:
    """The pickup portal of one node. See the module docstring and ``docs/portal.md``."""

    def __init__(
        self,
        store: Store,
        keys: KeyStore,
        kek: bytes,
        *,
        base_url: str,
        mailer: PickupMailer | None = None,
        acknowledgements: AcknowledgementSink | None = None,
        settings: PortalSettings | None = None,
        clock: Clock | None = None,
        deliveries: DeliverySink | None = None,
        alerts: TeamAlerts | None = None,
    ) -> None:
        if len(kek) != aead.KEY_SIZE:
            raise ValueError("the key-encryption key must be 32 bytes")
        self.store = store
        self.keys = keys
        self._kek = kek
        self.base_url = base_url.rstrip("/")
        self.mailer = mailer
        self.acknowledgements = acknowledgements
        #: Told of the first view and of each download; by default the acknowledgement
        #: sink itself when it can take deliveries (the real ``Referrals`` can).
        self.deliveries = deliveries
        if deliveries is None and isinstance(acknowledgements, DeliverySink):
            self.deliveries = acknowledgements
        #: The sending school's DSL team is alerted when an agency's authenticator changes.
        self.alerts = alerts
        self.settings = settings or PortalSettings()
        self._clock = clock or utc_now
        self.directory = store.data_dir / PORTAL_DIR

    # --------------------------------------------------------------- plumbing

    def now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def csrf_token(self, binding: str, form: str) -> str:
        return tokens.csrf_token(self._kek, binding, form)

    def csrf_valid(self, binding: str, form: str, token: str) -> bool:
        return tokens.csrf_valid(self._kek, binding, form, token)

    def _file(self, pickup_id: str) -> Path:
        return self.directory / f"{pickup_id}.age"

    async def _audit(
        self,
        action: str,
        actor: Actor | str | None,
        pickup: PortalPickup,
        outcome: str = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        await self.store.record_event(
            action,
            actor,
            pickup.org_id,
            {"pickup": pickup.id, "referral": pickup.referral_id},
            cast(Any, outcome),
            **detail,
        )

    def _event(
        self,
        s: AsyncSession,
        pickup_id: str,
        kind: str,
        *,
        ip: str | None = None,
        who: str | None = None,
        what: str | None = None,
    ) -> None:
        s.add(
            PortalEvent(
                pickup_id=pickup_id,
                kind=kind,
                at=self.now(),
                ip=(ip or None) and ip[:64],
                who=who and who[:254],
                what=what and what[:300],
            )
        )

    def _keyset(self, org_id: str) -> KeySet:
        try:
            return self.keys.load(org_id)
        except KeySetNotFoundError:
            raise PolicyError(
                f"organisation {org_id} has no keys on this node; make them first "
                "('handover keys generate')"
            ) from None

    async def _info(self, s: AsyncSession, p: PortalPickup, *, events: bool) -> PickupInfo:
        trail: tuple[PickupEvent, ...] = ()
        if events:
            rows = await s.scalars(
                select(PortalEvent).where(PortalEvent.pickup_id == p.id).order_by(PortalEvent.seq)
            )
            trail = tuple(
                PickupEvent(kind=e.kind, at=e.at, ip=e.ip, who=e.who, what=e.what) for e in rows
            )
        return PickupInfo(
            id=p.id,
            org_id=p.org_id,
            referral_id=p.referral_id,
            email=p.email,
            agency_name=p.agency_name,
            package_id=p.package_id,
            package_kind=p.package_kind,
            state=_state(p, self.now()),
            emailed=p.emailed,
            created_by=p.created_by,
            created_at=p.created_at,
            expires_at=p.expires_at,
            failed_attempts=p.failed_count,
            locked_at=p.locked_at,
            revoked_at=p.revoked_at,
            first_opened_at=p.first_opened_at,
            acknowledged_at=p.acknowledged_at,
            acknowledged_by=p.ack_name,
            agency_reference=p.ack_reference,
            events=trail,
        )

    async def _require(self, actor: Actor, action: str, targets: dict[str, str]) -> None:
        try:
            require(actor, Permission.SEND_REFERRAL)
        except PermissionDenied:
            await self.store.record_event(action, actor, actor.org_id, targets, "refused")
            raise

    # ------------------------------------------------------------ DSL's side

    async def authorise(self, actor: Actor, referral_id: str = "") -> None:
        """Refuse (and audit) an actor who may not send referrals, before any upload."""
        await self._require(actor, "portal.created", {"referral": referral_id[:64]})

    async def create_pickup(
        self,
        actor: Actor,
        *,
        package: Path,
        referral_id: str,
        email: str,
        agency_name: str | None = None,
        expires_in_days: int | None = None,
    ) -> IssuedPickup:
        """Offer the referral package at ``package`` (encrypted to the actor's organisation's
        own key, signed by it) to ``email`` through a one-time link.

        The caller keeps ``package``; the portal keeps its own copy, re-encrypted to a fresh
        identity for this pickup. The passcode (and the link, if not e-mailed) is returned
        once and never stored.
        """
        await self.authorise(actor, referral_id)
        referral_id = _clean_text(referral_id, "the referral id", 64)
        address = normalise_email(email)
        name = _clean_text(agency_name, "the agency's name", 200) if agency_name else None
        days = self.settings.link_days if expires_in_days is None else expires_in_days
        if not 1 <= days <= self.settings.max_link_days:
            raise InputError(
                f"a link may last from 1 to {plural(self.settings.max_link_days, 'day')}, "
                f"not {days}"
            )
        keyset = self._keyset(actor.org_id)
        pickup_id = str(uuid.uuid4())
        identity = X25519Identity.generate()
        target = self._file(pickup_id)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"cannot write in {self.directory}: {exc.strerror}") from None
        try:
            manifest, size, sha = await asyncio.to_thread(
                _reencrypt, package, target, keyset, identity
            )
            if manifest.sender.org_id != actor.org_id:
                raise InputError(
                    f"this package was made by {manifest.sender.org_id}, not by your organisation"
                )
            if not manifest.kind.startswith("referral_"):
                raise InputError(
                    f"only a referral package can go through the portal (this one is a "
                    f"{manifest.kind})"
                )
            token = tokens.new_link_token()
            passcode = tokens.new_passcode()
            passcode_hash = await asyncio.to_thread(
                tokens.hash_passcode, passcode, self.settings.passcode_cost
            )
            sealed = tokens.seal_identity(
                self._kek,
                token,
                purpose="pickup",
                record_id=pickup_id,
                data=identity.private_bytes(),
            )
            now = self.now()
            row = PortalPickup(
                id=pickup_id,
                org_id=actor.org_id,
                referral_id=referral_id,
                email=address,
                agency_name=name,
                package_id=str(manifest.package_id),
                package_kind=manifest.kind,
                stored_sha256=sha,
                stored_size=size,
                token_hash=tokens.link_token_hash(token),
                identity_sealed=sealed,
                passcode_hash=passcode_hash,
                emailed=False,
                created_by=actor.staff_id,
                created_at=now,
                expires_at=now + timedelta(days=days),
                failed_count=0,
            )
            async with self.store.sessions() as s, s.begin():
                s.add(row)
                await s.flush()
                self._event(
                    s,
                    pickup_id,
                    "created",
                    who=actor.staff_id,
                    what=f"package {manifest.package_id}",
                )
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            raise
        link = f"{self.base_url}{OPEN_PATH}?{urlencode({'t': token})}"
        emailed, problem = await self._send_link(row, link, days)
        await self._audit(
            "portal.created",
            actor,
            row,
            emailed=emailed,
            package=str(manifest.package_id),
            days=days,
        )
        async with self.store.sessions() as s:
            fresh = await s.get(PortalPickup, pickup_id)
            assert fresh is not None
            info = await self._info(s, fresh, events=True)
        return IssuedPickup(
            pickup=info,
            passcode=passcode,
            link=None if emailed else link,
            emailed=emailed,
            mail_problem=problem,
        )

    async def _send_link(self, row: PortalPickup, link: str, days: int) -> tuple[bool, str | None]:
        if self.mailer is None or not self.mailer.enabled:
            return False, None
        org = await self.store.get_organisation(row.org_id)
        body = (
            f"{org.name} has sent {row.agency_name or 'your agency'} a referral through "
            "Handover.\n\n"
            f"Open it here (the link works for {plural(days, 'day')}):\n\n{link}\n\n"
            "You will also need a passcode. The school will give it to you by telephone; "
            "it is never sent by e-mail.\n\n"
            "If you were not expecting this, do not open the link: tell the school.\n"
        )
        try:
            await self.mailer.send([row.email], f"Referral from {org.name}", body)
        except HandoverError as err:
            log.warning("could not e-mail the pickup link for %s: %s", row.id, err.diagnostics())
            return False, err.diagnostics()
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                update(PortalPickup).where(PortalPickup.id == row.id).values(emailed=True)
            )
            self._event(s, row.id, "emailed", who=row.email)
        return True, None

    async def list_pickups(self, actor: Actor) -> list[PickupInfo]:
        await self._require(actor, "portal.list", {})
        async with self.store.sessions() as s:
            rows = await s.scalars(
                select(PortalPickup)
                .where(PortalPickup.org_id == actor.org_id)
                .order_by(PortalPickup.created_at.desc(), PortalPickup.id)
            )
            return [await self._info(s, p, events=False) for p in rows]

    async def _own(self, s: AsyncSession, actor: Actor, pickup_id: str) -> PortalPickup:
        row = await s.get(PortalPickup, pickup_id[:36])
        if row is None or row.org_id != actor.org_id:
            raise NotFoundError("no such pickup in your organisation")
        return row

    async def get_pickup(self, actor: Actor, pickup_id: str) -> PickupInfo:
        await self._require(actor, "portal.read", {"pickup": pickup_id[:36]})
        async with self.store.sessions() as s:
            return await self._info(s, await self._own(s, actor, pickup_id), events=True)

    async def revoke(self, actor: Actor, pickup_id: str) -> PickupInfo:
        """Withdraw a link: it stops working at once and the stored package is deleted."""
        await self._require(actor, "portal.revoked", {"pickup": pickup_id[:36]})
        now = self.now()
        async with self.store.sessions() as s, s.begin():
            row = await self._own(s, actor, pickup_id)
            if row.revoked_at is not None:
                raise ConflictError("this link was already withdrawn")
            row.revoked_at, row.revoked_by, row.identity_sealed = now, actor.staff_id, None
            await self._end_sessions(s, row.id, now)
            self._event(s, row.id, "revoked", who=actor.staff_id)
        self._delete_file(row.id)
        await self._audit("portal.revoked", actor, row)
        return await self.get_pickup(actor, pickup_id)

    async def sweep_expired(self) -> int:
        """Delete the stored packages of expired links, and of links closed by an
        acknowledgement once its grace has passed (idempotent; for the scheduler)."""
        now = self.now()
        acknowledged_before = now - self.settings.ack_grace
        async with self.store.sessions() as s, s.begin():
            rows = list(
                await s.scalars(
                    select(PortalPickup).where(
                        PortalPickup.swept_at.is_(None),
                        (PortalPickup.expires_at <= now)
                        | (PortalPickup.acknowledged_at <= acknowledged_before),
                    )
                )
            )
            for row in rows:
                row.identity_sealed, row.swept_at = None, now
                await self._end_sessions(s, row.id, now)
                self._event(s, row.id, "closed" if row.acknowledged_at else "expired")
        for row in rows:
            self._delete_file(row.id)
            await self._audit(
                "portal.closed" if row.acknowledged_at else "portal.expired", None, row
            )
        return len(rows)

    def _delete_file(self, pickup_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file(pickup_id).unlink()

    async def _end_sessions(self, s: AsyncSession, pickup_id: str, now: datetime) -> None:
        await s.execute(
            update(PortalSession)
            .where(PortalSession.pickup_id == pickup_id, PortalSession.ended_at.is_(None))
            .values(ended_at=now, identity_sealed=None)
        )

    # -------------------------------------------------------- agency's side

    async def _by_token(self, s: AsyncSession, token: str, *, lock: bool = False) -> PortalPickup:
        if not 20 <= len(token) <= 100 or not token.isascii():
            raise LinkNotValid("this link is not valid")
        wanted = tokens.link_token_hash(token)
        query = select(PortalPickup).where(PortalPickup.token_hash == wanted)
        if lock:
            query = query.with_for_update()
        row = (await s.scalars(query)).first()
        if row is None or not codes.same(row.token_hash, wanted):
            raise LinkNotValid("this link is not valid")
        return row

    def _closes_at(self, row: PortalPickup) -> datetime | None:
        """When the link closes because receipt was acknowledged (``None``: not acknowledged)."""
        if row.acknowledged_at is None:
            return None
        return row.acknowledged_at + self.settings.ack_grace

    def _check_usable(self, row: PortalPickup) -> None:
        now = self.now()
        if row.revoked_at is not None:
            raise LinkRevoked(
                "the school has withdrawn this link; contact them if you still need the referral"
            )
        if row.locked_at is not None:
            raise LinkLocked(
                "this link is locked after too many wrong codes; ask the school for a new link"
            )
        closes = self._closes_at(row)
        if closes is not None and (closes <= now or row.identity_sealed is None):
            acknowledged = f"{row.acknowledged_at:%-d %B %Y at %H:%M} UTC"
            raise LinkClosed(
                f"receipt of this referral was acknowledged on {acknowledged} and the link is "
                "now closed; ask the school if you need the referral again"
            )
        if row.expires_at <= now or row.identity_sealed is None:
            raise LinkExpired("this link has expired; ask the school to send the referral again")

    def _usable_clause(self, now: datetime) -> Any:
        """The SQL form of :meth:`_check_usable` (for conditional updates)."""
        return (
            PortalPickup.revoked_at.is_(None)
            & PortalPickup.locked_at.is_(None)
            & PortalPickup.identity_sealed.is_not(None)
            & (PortalPickup.expires_at > now)
            & (
                PortalPickup.acknowledged_at.is_(None)
                | (PortalPickup.acknowledged_at > now - self.settings.ack_grace)
            )
        )

    async def link_info(self, token: str) -> LinkInfo:
        """What the sign-in page shows for ``token``; raises for an unusable link."""
        async with self.store.sessions() as s:
            row = await self._by_token(s, token)
            self._check_usable(row)
            user = await s.get(PortalAgencyUser, row.email)
        org = await self.store.get_organisation(row.org_id)
        return LinkInfo(
            pickup_id=row.id,
            sender_name=org.name,
            agency_name=row.agency_name,
            expires_at=row.expires_at,
            totp_available=user is not None and user.totp_sealed is not None,
        )

    async def sign_in(
        self,
        token: str,
        *,
        passcode: str | None = None,
        totp: str | None = None,
        ip: str | None = None,
    ) -> str:
        """Check the link and a passcode (or an authenticator code); the session secret.

        An attempt is counted *before* the code is checked, so parallel guesses
        cannot exceed the limit; a right code clears the count.
        """
        if (passcode is None) == (totp is None):
            raise InputError("enter the passcode or a code from your authenticator app")
        async with self.store.sessions() as s, s.begin():
            row = await self._by_token(s, token, lock=True)
            self._check_usable(row)
            # An atomic increment: on SQLite the SELECT above takes no lock, so a
            # read-modify-write would lose parallel attempts and let them pass the limit.
            await s.execute(
                update(PortalPickup)
                .where(PortalPickup.id == row.id)
                .values(failed_count=PortalPickup.failed_count + 1)
                .execution_options(synchronize_session=False)
            )
            attempt = int(
                await s.scalar(select(PortalPickup.failed_count).where(PortalPickup.id == row.id))
                or 0
            )
            user = await s.get(PortalAgencyUser, row.email)
        if attempt > self.settings.max_attempts:
            await self._lock(row, ip)
        if passcode is not None:
            ok = await asyncio.to_thread(tokens.verify_passcode, row.passcode_hash, passcode)
            via = "passcode"
        else:
            ok = await self._check_totp(user, totp or "")
            via = "totp"
        if not ok:
            left = self.settings.max_attempts - attempt
            async with self.store.sessions() as s, s.begin():
                self._event(s, row.id, "passcode_failed", ip=ip, who=row.email, what=via)
            await self._audit("portal.passcode_failed", None, row, "refused", ip=ip, via=via)
            if left <= 0:
                await self._lock(row, ip)
            what = "passcode" if via == "passcode" else "code from your authenticator app"
            raise WrongPortalCode(
                f"that {what} is not right; {left} more {'try' if left == 1 else 'tries'} "
                "before the link locks"
            )
        identity = tokens.unseal_identity(
            self._kek,
            token,
            purpose="pickup",
            record_id=row.id,
            sealed=row.identity_sealed or b"",
        )
        secret = tokens.new_session_secret()
        session_id = str(uuid.uuid4())
        now = self.now()
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                update(PortalPickup).where(PortalPickup.id == row.id).values(failed_count=0)
            )
            s.add(
                PortalSession(
                    id=session_id,
                    secret_hash=tokens.session_secret_hash(secret),
                    pickup_id=row.id,
                    via=via,
                    ip=ip and ip[:64],
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + timedelta(hours=self.settings.session_max_hours),
                    opened=False,
                    identity_sealed=tokens.seal_identity(
                        self._kek,
                        secret,
                        purpose="session",
                        record_id=session_id,
                        data=identity,
                    ),
                )
            )
        return secret

    async def _lock(self, row: PortalPickup, ip: str | None) -> None:
        now = self.now()
        async with self.store.sessions() as s, s.begin():
            result = await s.execute(
                update(PortalPickup)
                .where(PortalPickup.id == row.id, PortalPickup.locked_at.is_(None))
                .values(locked_at=now)
            )
            newly = bool(getattr(result, "rowcount", 0))
            if newly:
                await self._end_sessions(s, row.id, now)
                self._event(s, row.id, "locked", ip=ip, who=row.email)
        if newly:
            await self._audit("portal.locked", None, row, "refused", ip=ip)
        raise LinkLocked(
            "this link is locked after too many wrong codes; ask the school for a new link"
        )

    async def _check_totp(self, user: PortalAgencyUser | None, code: str) -> bool:
        if user is None or user.totp_sealed is None:
            # The same work as a real check, so timing does not tell who has enrolled.
            codes.matching_step(pyotp.random_base32(32), code, self.now(), 1)
            return False
        secret = self._unseal_totp(user.email, user.totp_sealed)
        step = codes.matching_step(secret, code, self.now(), self.settings.totp_drift_steps)
        if step is None:
            return False
        async with self.store.sessions() as s, s.begin():
            result = await s.execute(
                update(PortalAgencyUser)
                .where(
                    PortalAgencyUser.email == user.email,
                    (PortalAgencyUser.totp_last_step.is_(None))
                    | (PortalAgencyUser.totp_last_step < step),
                )
                .values(totp_last_step=step)
            )
        return bool(getattr(result, "rowcount", 0))  # a code is good once

    def _seal_totp(self, email: str, secret: str) -> bytes:
        return aead.seal(self._kek, secret.encode("ascii"), _TOTP_AAD + email.encode())

    def _unseal_totp(self, email: str, sealed: bytes) -> str:
        return aead.unseal(self._kek, sealed, _TOTP_AAD + email.encode()).decode("ascii")

    async def visit(self, secret: str) -> PortalVisit:
        """The signed-in session whose cookie is ``secret``, checked and kept alive."""
        if not 20 <= len(secret) <= 100 or not secret.isascii():
            raise PortalSessionEnded("your session has ended; open the link from your e-mail")
        wanted = tokens.session_secret_hash(secret)
        now = self.now()
        idle = timedelta(minutes=self.settings.session_idle_minutes)
        async with self.store.sessions() as s, s.begin():
            row = (
                await s.scalars(select(PortalSession).where(PortalSession.secret_hash == wanted))
            ).first()
            if (
                row is None
                or not codes.same(row.secret_hash, wanted)
                or row.ended_at is not None
                or row.identity_sealed is None
                or row.expires_at <= now
                or row.last_seen_at + idle <= now
            ):
                raise PortalSessionEnded(
                    "your session has ended; open the link from your e-mail again"
                )
            pickup = await s.get(PortalPickup, row.pickup_id)
            assert pickup is not None
            self._check_usable(pickup)
            row.last_seen_at = now
            identity = tokens.unseal_identity(
                self._kek,
                secret,
                purpose="session",
                record_id=row.id,
                sealed=row.identity_sealed,
            )
            return PortalVisit(
                session_id=row.id,
                pickup_id=pickup.id,
                org_id=pickup.org_id,
                email=pickup.email,
                referral_id=pickup.referral_id,
                opened=row.opened,
                identity=identity,
            )

    async def sign_out(self, visit: PortalVisit) -> None:
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                update(PortalSession)
                .where(PortalSession.id == visit.session_id)
                .values(ended_at=self.now(), identity_sealed=None)
            )

    async def _read(
        self,
        row: PortalPickup,
        read: Callable[[Path, X25519Identity, KeySet], _T],
        identity: X25519Identity,
        keyset: KeySet,
    ) -> _T:
        """``read`` the stored package off the event loop; a package deleted meanwhile (the
        link closed, was withdrawn or swept) is reported as what happened to the link."""
        try:
            return await asyncio.to_thread(read, self._file(row.id), identity, keyset)
        except LinkExpired:
            await self._gone(row)
            raise

    async def _gone(self, row: PortalPickup) -> None:
        """Raise why the link stopped working, if it did (the stored package is missing)."""
        self._check_usable(await self._pickup(row.id))

    async def _pickup(self, pickup_id: str) -> PortalPickup:
        async with self.store.sessions() as s:
            row = await s.get(PortalPickup, pickup_id)
            assert row is not None
            return row

    async def referral(self, visit: PortalVisit, *, ip: str | None = None) -> ReferralView:
        """The verified referral: its form, records and list of documents."""
        row = await self._pickup(visit.pickup_id)
        keyset = self._keyset(row.org_id)
        identity = X25519Identity.from_private_bytes(visit.identity)
        manifest, raw = await self._read(row, _read_records, identity, keyset)
        parsed: dict[str, Any] = {}
        views: list[RecordView] = []
        for entry in manifest.entries:
            if entry.path not in raw:
                continue
            data = raw[entry.path]
            title = _record_title(entry.path)
            if data is None:
                views.append(RecordView(entry.path, title, None, "too large to show here"))
                continue
            try:
                value = jsontext.loads(data)
            except ValueError:
                views.append(RecordView(entry.path, title, None, "not a readable record"))
                continue
            parsed[entry.path] = value
            views.append(RecordView(entry.path, title, value))
        form = next((v for v in views if v.path == "records/referral.json"), None)
        others = tuple(v for v in views if v is not form)
        if not visit.opened:
            await self._opened(visit, row, ip)
        org = await self.store.get_organisation(row.org_id)
        async with self.store.sessions() as s:
            user = await s.get(PortalAgencyUser, row.email)
        subject = manifest.subject
        return ReferralView(
            pickup_id=row.id,
            package_id=str(manifest.package_id),
            kind=manifest.kind,
            sender_org_id=manifest.sender.org_id,
            sender_name=org.name,
            subject=f"{subject.forename} {subject.surname}",
            created_at=manifest.created_at,
            form=form,
            records=others,
            documents=_documents(manifest, parsed),
            acknowledged_at=row.acknowledged_at,
            acknowledged_by=row.ack_name,
            agency_reference=row.ack_reference,
            expires_at=row.expires_at,
            totp_enrolled=user is not None and user.totp_sealed is not None,
            email=row.email,
            closes_at=self._closes_at(row),
            agency_name=row.agency_name,
        )

    async def printed(self, visit: PortalVisit, *, ip: str | None = None) -> None:
        """Record that the referral was taken away as a PDF (a view, like the page's): in the
        receipt trail and the audit log, never its content."""
        row = await self._pickup(visit.pickup_id)
        async with self.store.sessions() as s, s.begin():
            self._event(s, row.id, "printed", ip=ip, who=row.email, what="referral as PDF")
        await self._audit("portal.printed", None, row, ip=ip)

    async def _opened(self, visit: PortalVisit, row: PortalPickup, ip: str | None) -> None:
        now = self.now()
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                update(PortalSession)
                .where(PortalSession.id == visit.session_id)
                .values(opened=True)
            )
            first = await s.execute(
                update(PortalPickup)
                .where(PortalPickup.id == row.id, PortalPickup.first_opened_at.is_(None))
                .values(first_opened_at=now)
            )
            self._event(s, row.id, "opened", ip=ip, who=row.email)
        visit.opened = True
        await self._audit("portal.opened", None, row, ip=ip)
        if getattr(first, "rowcount", 0):
            await self._forward_delivery(row, now)

    async def _forward_delivery(self, row: PortalPickup, at: datetime) -> bool:
        """Tell the referral it reached the agency; False (logged, audited) if that failed."""
        if self.deliveries is None:
            return True
        try:
            await self.deliveries.record_delivery(
                row.referral_id, at=at, via="portal", package_id=row.package_id
            )
        except HandoverError as err:
            log.error(
                "pickup %s was opened, but the referral %s could not be marked delivered: %s",
                row.id,
                row.referral_id,
                err.diagnostics(),
            )
            await self._audit("portal.delivery_forwarded", None, row, "failed")
            return False
        return True

    async def documents(self, visit: PortalVisit) -> tuple[DocumentView, ...]:
        row = await self._pickup(visit.pickup_id)
        keyset = self._keyset(row.org_id)
        identity = X25519Identity.from_private_bytes(visit.identity)
        manifest, raw = await self._read(row, _read_records, identity, keyset)
        parsed: dict[str, Any] = {}
        for path, data in raw.items():
            with contextlib.suppress(ValueError, TypeError):
                parsed[path] = jsontext.loads(data or b"")
        return _documents(manifest, parsed)

    async def download(
        self, visit: PortalVisit, index: int, *, ip: str | None = None
    ) -> tuple[DocumentView, AsyncIterator[bytes]]:
        """One document and its bytes, decrypted and checked chunk by chunk.

        The last chunk is handed over only after the document's SHA-256 has
        matched the signed manifest, so an altered document never arrives whole,
        and only if the link is still open at that moment: the release is one
        conditional update (counted, with its receipt event), so no document is
        released after the link closes (acknowledged and the grace passed,
        withdrawn, locked or expired), however many downloads run at once.
        """
        docs = await self.documents(visit)
        if not 0 <= index < len(docs):
            raise NotFoundError("there is no such document in this referral")
        doc = docs[index]
        row = await self._pickup(visit.pickup_id)
        keyset = self._keyset(row.org_id)
        identity = X25519Identity.from_private_bytes(visit.identity)
        return doc, self._stream(row, doc, identity, keyset, ip)

    async def _stream(
        self,
        row: PortalPickup,
        doc: DocumentView,
        identity: X25519Identity,
        keyset: KeySet,
        ip: str | None,
    ) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | _Last | BaseException | None] = asyncio.Queue(maxsize=4)
        stop = threading.Event()
        path = self._file(row.id)

        def put(item: bytes | _Last | BaseException | None) -> None:
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while True:
                try:
                    future.result(timeout=0.5)
                    return
                except concurrent.futures.TimeoutError:
                    if stop.is_set():
                        future.cancel()
                        raise _Stopped from None

        def on_entry(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
            if entry.path != doc.path or stop.is_set():
                return
            held = b""
            for chunk in chunks:  # the SHA-256 is checked when this loop ends
                if held:
                    put(held)
                held = chunk
            put(_Last(held))
            raise _Found

        def work() -> None:
            try:
                with _open_stored(path) as f:
                    verify_package(
                        f,
                        identities=[identity],
                        sender_keys=KeySetSenderKeys({keyset.org_id: keyset}),
                        addressee=None,
                        on_entry=on_entry,
                    )
                put(NotFoundError("the document is not in the package"))
            except _Found:
                put(None)
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the reader, which raises it
                with contextlib.suppress(_Stopped):
                    put(exc)

        task = loop.run_in_executor(None, work)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, LinkExpired):
                    await self._gone(row)
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Last):
                    await self._release(row, doc, ip)
                    await self._audit(
                        "portal.download", None, row, ip=ip, document=doc.sha256, size=doc.size
                    )
                    if item.data:
                        yield item.data
                    continue
                yield item
            await self._forward_delivery(row, self.now())
        finally:
            stop.set()
            while not queue.empty():
                queue.get_nowait()
            await task

    async def _release(self, row: PortalPickup, doc: DocumentView, ip: str | None) -> None:
        """Count a document's release and record it, if the link is still open (else raise)."""
        now = self.now()
        async with self.store.sessions() as s, s.begin():
            result = await s.execute(
                update(PortalPickup)
                .where(PortalPickup.id == row.id, self._usable_clause(now))
                .values(downloads=PortalPickup.downloads + 1)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0):
                self._event(
                    s,
                    row.id,
                    "download",
                    ip=ip,
                    who=row.email,
                    what=f"{doc.path} sha256={doc.sha256}",
                )
                return
            fresh = await s.get(PortalPickup, row.id, populate_existing=True)
        assert fresh is not None
        self._check_usable(fresh)
        raise LinkExpired("this link can no longer be used")

    async def acknowledge(
        self, visit: PortalVisit, *, name: str, agency_reference: str, ip: str | None = None
    ) -> None:
        """Record the agency's receipt (name and reference) and pass it to the referral.

        The link closes once ``settings.ack_grace_minutes`` have passed (at once when it
        is 0: the package is deleted and the sessions end here). The acknowledgement is
        one conditional update, so it cannot interleave with a document's release.
        """
        who = _clean_text(name, "your name", 200)
        reference = _clean_text(agency_reference, "the agency's reference", 100)
        now = self.now()
        close_now = self.settings.ack_grace_minutes == 0
        async with self.store.sessions() as s, s.begin():
            values: dict[str, Any] = {
                "acknowledged_at": now,
                "ack_name": who,
                "ack_reference": reference,
                "ack_ip": ip and ip[:64],
            }
            if close_now:
                values.update(identity_sealed=None, swept_at=now)
            result = await s.execute(
                update(PortalPickup)
                .where(
                    PortalPickup.id == visit.pickup_id,
                    PortalPickup.acknowledged_at.is_(None),
                    self._usable_clause(now),
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            row = await s.get(PortalPickup, visit.pickup_id, populate_existing=True)
            assert row is not None
            if not getattr(result, "rowcount", 0):
                if row.acknowledged_at is not None:
                    raise ConflictError(
                        f"receipt was already acknowledged by {row.ack_name} on "
                        f"{row.acknowledged_at:%d %B %Y at %H:%M} UTC"
                    )
                self._check_usable(row)
                raise ConflictError("this link can no longer be used")
            self._event(s, row.id, "acknowledged", ip=ip, who=who, what=reference)
            if close_now:
                await self._end_sessions(s, row.id, now)
                self._event(s, row.id, "closed")
        if close_now:
            self._delete_file(row.id)
        await self._audit("portal.acknowledged", None, row, ip=ip)
        if close_now:
            await self._audit("portal.closed", None, row)
        if self.acknowledgements is not None and await self._forward_delivery(row, now):
            try:
                await self.acknowledgements.record_acknowledgement(
                    row.referral_id, name=who, agency_reference=reference, at=now, via="portal"
                )
            except HandoverError as err:
                log.error(
                    "the acknowledgement of pickup %s was kept, but the referral %s could "
                    "not be updated: %s",
                    row.id,
                    row.referral_id,
                    err.diagnostics(),
                )
                await self._audit("portal.acknowledgement_forwarded", None, row, "failed")

    # ------------------------------------------------------------------ TOTP

    async def totp_setup(self, visit: PortalVisit, sealed: str | None = None) -> TotpSetup:
        """What the set-up page shows: a new secret (or the one sealed in ``sealed``, when the
        form is shown again), sealed to this session for the form. Changes nothing stored."""
        secret = codes.new_totp_secret()
        if sealed is not None:
            secret = self._open_setup(visit, sealed)
        async with self.store.sessions() as s:
            user = await s.get(PortalAgencyUser, visit.email)
        uri = codes.provisioning_uri(secret, account=visit.email, issuer="Handover referrals")
        svg = segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff")
        return TotpSetup(
            secret=secret,
            uri=uri,
            svg=svg,
            sealed=tokens.seal_totp_setup(
                self._kek, session_id=visit.session_id, email=visit.email, secret=secret
            ),
            replacing=user is not None and user.totp_sealed is not None,
        )

    def _open_setup(self, visit: PortalVisit, sealed: str) -> str:
        secret = tokens.open_totp_setup(
            self._kek, session_id=visit.session_id, email=visit.email, sealed=sealed
        )
        if secret is None:
            raise InputError("this set-up form has expired; open the set-up page again")
        return secret

    async def enrol_totp(
        self,
        visit: PortalVisit,
        *,
        setup: str,
        code: str,
        current_code: str | None = None,
        ip: str | None = None,
    ) -> bool:
        """Set up (or replace) the agency address's authenticator app; True if replaced.

        ``setup`` is the sealed secret of the set-up form and ``code`` a code from the new
        app. Replacing an app that is set up needs ``current_code``, a code from it: a
        session alone (a passcode read out once) is not enough to take over every later
        referral to the address. Wrong current codes are counted per address before they
        are checked; past ``max_attempts`` only the sending school's DSL can reset the app
        (:meth:`reset_totp`). The agency address and the school's DSL team are told.
        """
        secret = self._open_setup(visit, setup)
        now = self.now()
        step = codes.matching_step(secret, code, now, self.settings.totp_drift_steps)
        if step is None:
            raise WrongPortalCode(
                "that code from the new app is not right; check the time on your phone and "
                "try the next code"
            )
        async with self.store.sessions() as s:
            user = await s.get(PortalAgencyUser, visit.email)
        replacing = user is not None and user.totp_sealed is not None
        row = await self._pickup(visit.pickup_id)
        if replacing:
            assert user is not None
            if not (current_code or "").strip():
                raise WrongCurrentCode(
                    "enter a code from the authenticator app this address uses now"
                )
            await self._check_current_code(user, current_code or "", row, ip)
        sealed = self._seal_totp(visit.email, secret)
        try:
            async with self.store.sessions() as s, s.begin():
                if user is None:
                    s.add(
                        PortalAgencyUser(
                            email=visit.email,
                            created_at=now,
                            totp_sealed=sealed,
                            totp_last_step=step,
                            enrolled_at=now,
                            totp_failed_count=0,
                        )
                    )
                    await s.flush()
                else:
                    # Only the app that was checked is replaced (or none, if none was set up).
                    held = (
                        PortalAgencyUser.totp_sealed == user.totp_sealed
                        if replacing
                        else PortalAgencyUser.totp_sealed.is_(None)
                    )
                    result = await s.execute(
                        update(PortalAgencyUser)
                        .where(PortalAgencyUser.email == visit.email, held)
                        .values(
                            totp_sealed=sealed,
                            totp_pending_sealed=None,
                            totp_last_step=step,
                            enrolled_at=now,
                            totp_failed_count=0,
                        )
                    )
                    if not getattr(result, "rowcount", 0):
                        raise ConflictError(
                            "the authenticator app for this address was changed a moment ago; "
                            "open the set-up page again"
                        )
                kind = "totp_replaced" if replacing else "totp_enrolled"
                self._event(s, visit.pickup_id, kind, ip=ip, who=visit.email)
        except sa_exc.IntegrityError:
            raise ConflictError(
                "the authenticator app for this address was set up a moment ago; "
                "open the set-up page again"
            ) from None
        await self._audit(
            "portal.totp_replaced" if replacing else "portal.totp_enrolled", None, row, ip=ip
        )
        await self._tell_both(row, "replaced" if replacing else "enrolled")
        return replacing

    async def _check_current_code(
        self, user: PortalAgencyUser, code: str, row: PortalPickup, ip: str | None
    ) -> None:
        """Check a code from the address's current app; counted first, so parallel guesses
        cannot pass ``max_attempts``. Raises :class:`WrongCurrentCode` or
        :class:`AuthenticatorLocked`."""
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                update(PortalAgencyUser)
                .where(PortalAgencyUser.email == user.email)
                .values(totp_failed_count=PortalAgencyUser.totp_failed_count + 1)
                .execution_options(synchronize_session=False)
            )
            attempt = int(
                await s.scalar(
                    select(PortalAgencyUser.totp_failed_count).where(
                        PortalAgencyUser.email == user.email
                    )
                )
                or 0
            )
        limit = self.settings.max_attempts
        locked_text = (
            "too many wrong codes from the authenticator app this address uses; the school "
            "that sent you this referral can reset it (ask their safeguarding lead)"
        )
        if attempt > limit:
            await self._audit("portal.totp_replace_refused", None, row, "refused", ip=ip)
            raise AuthenticatorLocked(locked_text)
        if await self._check_totp(user, code):
            return
        async with self.store.sessions() as s, s.begin():
            self._event(s, row.id, "totp_replace_failed", ip=ip, who=user.email)
        await self._audit("portal.totp_replace_failed", None, row, "refused", ip=ip)
        left = limit - attempt
        if left <= 0:
            raise AuthenticatorLocked(locked_text)
        raise WrongCurrentCode(
            f"that code from the app you use now is not right; {left} more "
            f"{'try' if left == 1 else 'tries'}"
        )

    async def reset_totp(self, actor: Actor, pickup_id: str) -> PickupInfo:
        """The sending school's DSL removes the authenticator app of a pickup's agency address.

        For an agency that lost its phone, or an app set up by someone who should not
        have: the address signs in with a passcode again and may set up a new app. The
        agency address and the DSL team are told.
        """
        await self._require(actor, "portal.totp_reset", {"pickup": pickup_id[:36]})
        async with self.store.sessions() as s, s.begin():
            row = await self._own(s, actor, pickup_id)
            result = await s.execute(
                update(PortalAgencyUser)
                .where(
                    PortalAgencyUser.email == row.email,
                    PortalAgencyUser.totp_sealed.is_not(None)
                    | (PortalAgencyUser.totp_failed_count > 0),
                )
                .values(
                    totp_sealed=None,
                    totp_pending_sealed=None,
                    totp_last_step=None,
                    enrolled_at=None,
                    totp_failed_count=0,
                )
            )
            if not getattr(result, "rowcount", 0):
                raise ConflictError(f"{row.email} has no authenticator app set up here")
            self._event(s, row.id, "totp_reset", who=actor.staff_id)
        await self._audit("portal.totp_reset", actor.staff_id, row)
        await self._tell_both(row, "reset")
        return await self.get_pickup(actor, pickup_id)

    async def _tell_both(
        self, row: PortalPickup, what: Literal["enrolled", "replaced", "reset"]
    ) -> None:
        """Tell the agency address (e-mail) and the sending school's DSL team (an alert)."""
        org = await self.store.get_organisation(row.org_id)
        when = f"{self.now():%-d %B %Y at %H:%M} UTC"
        done = {
            "enrolled": "was set up",
            "replaced": "was replaced by a new one",
            "reset": f"was removed by {org.name}",
        }[what]
        if self.mailer is not None and self.mailer.enabled:
            body = (
                f"The authenticator app used to sign in to referrals sent to {row.email} "
                f"through Handover {done} on {when}.\n\n"
            )
            if what == "reset":
                body += (
                    "Next time a referral comes, sign in with the passcode the school gives "
                    "you by telephone; you can then set up an app again.\n"
                )
            else:
                body += (
                    "Whoever holds that app can sign in to later referrals sent to this "
                    f"address. If this was not you, contact {org.name} at once and ask their "
                    "safeguarding lead to reset it.\n"
                )
            try:
                await self.mailer.send(
                    [row.email], f"Your Handover authenticator app {done.split(' by ')[0]}", body
                )
            except HandoverError as err:
                log.warning(
                    "could not tell %s that its authenticator app %s: %s",
                    row.email,
                    done,
                    err.diagnostics(),
                )
        if self.alerts is not None:
            message = (
                f"The authenticator app that {row.email} uses to sign in to your referrals "
                f"{done} on {when}, on the pickup of referral {row.referral_id}."
            )
            if what != "reset":
                message += (
                    " If the agency did not expect this, reset its app (the pickup's "
                    "reset-authenticator action) and withdraw the links still open to it."
                )
            subject = {
                "enrolled": "An agency set up an authenticator app",
                "replaced": "An agency's authenticator app was replaced",
                "reset": "An agency's authenticator app was reset",
            }[what]
            try:
                await self.alerts.notify(
                    row.org_id,
                    key=f"portal-authenticator:{uuid.uuid4()}",
                    level="info",
                    subject=subject,
                    message=message,
                    ref=row.id,
                )
            except HandoverError as err:
                log.error("could not alert the DSL team of %s: %s", row.org_id, err.diagnostics())
