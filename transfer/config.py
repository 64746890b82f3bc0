"""Node configuration: ``handover.toml`` in the data directory, then the environment.

Every value is checked at start-up; a bad one is refused with a message that
names it (``database.url``, ``HANDOVER_SERVER__PORT``...). Environment
variables override the file: ``HANDOVER_<SECTION>__<KEY>`` (double underscore
between section and key).

The key-encryption key (KEK) never lives in the data directory: it comes from
``HANDOVER_KEK`` (64 hex characters or base64 of 32 bytes) or from the file
named by ``security.kek_file`` / ``HANDOVER_KEK_FILE``, which must be outside
the data directory.
"""

from __future__ import annotations

import base64
import binascii
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from transfer.errors import ConfigError

CONFIG_FILE = "handover.toml"
ENV_PREFIX = "HANDOVER_"
KEK_ENV = "HANDOVER_KEK"
KEK_FILE_ENV = "HANDOVER_KEK_FILE"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSection(_Section):
    name: str = Field(default="Handover node", min_length=1, max_length=200)
    #: The public base URL other nodes use to reach this one.
    base_url: str = "https://localhost:8443"


class DatabaseSection(_Section):
    #: SQLAlchemy URL; empty means the embedded SQLite database in the data directory.
    url: str = ""
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _known_driver(cls, v: str) -> str:
        if v and not (v.startswith("sqlite+aiosqlite://") or v.startswith("postgresql+asyncpg://")):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// (or be empty)"
            )
        return v


class SecuritySection(_Section):
    kek_file: Path | None = None
    session_idle_minutes: int = Field(default=15, ge=1, le=24 * 60)
    session_max_hours: int = Field(default=10, ge=1, le=72)
    failed_signins_before_delay: int = Field(default=3, ge=1, le=100)
    failed_signins_before_lock: int = Field(default=8, ge=2, le=1000)
    lock_minutes: int = Field(default=15, ge=1, le=24 * 60)
    totp_drift_steps: int = Field(default=1, ge=0, le=3)


class ServerSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Serve plain HTTP because a TLS-terminating proxy sits in front.
    behind_proxy: bool = False
    #: Development mode: make a self-signed certificate in the data directory.
    dev_tls: bool = False
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1024)
    #: A request's line and headers must arrive within this many seconds of the connection
    #: opening (TLS handshake done) or of the first byte of a later request on it. Only the
    #: head is timed: a body streams for as long as it takes.
    header_timeout_seconds: float = Field(default=20.0, ge=0.5, le=600)
    #: A kept-alive connection with no request for this long is closed.
    keepalive_timeout_seconds: float = Field(default=75.0, ge=1, le=3600)
    #: The most connections one address may hold at once (0: no cap). Not applied with
    #: ``behind_proxy`` (every connection is then the proxy's): the proxy caps them.
    max_connections_per_address: int = Field(default=100, ge=0, le=100_000)
    #: Serve this process's counters (Prometheus text format, ``GET /metrics``, plain HTTP,
    #: no sign-in) on this port; 0: not served. Keep it on a private address.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"


class TransferSection(_Section):
    deadline_unit: Literal["school_days", "calendar_days"] = "school_days"
    deadline_days: int = Field(default=5, ge=1, le=60)
    give_up_hours: int = Field(default=72, ge=1, le=24 * 60)
    max_package_bytes: int = Field(default=4 * 1024**3, ge=1024)
    #: Receiving: an offered upload is refused (507, the sender tries again later) unless the
    #: disk holding ``incoming/`` keeps at least this much free once it has arrived.
    disk_reserve_bytes: int = Field(default=256 * 1024**2, ge=0, le=1024**4)
    #: The most bytes one upload request to another node carries. By default a package goes
    #: in one streamed request; lower it only for a proxy that limits request bodies.
    chunk_bytes: int = Field(default=4 * 1024**3, ge=64 * 1024, le=64 * 1024**3)
    #: Receiving: while an upload streams in, make what is held durable (fsync, then the
    #: held offset committed) every this many bytes; a break resumes from there.
    checkpoint_bytes: int = Field(default=64 * 1024**2, ge=64 * 1024, le=4 * 1024**3)
    #: Opening a received package (preview, accept): the most bytes one record (a JSON entry
    #: under ``records/``) may hold, and all of one package's records together. The records
    #: are read into memory and parsed; a package past either limit is refused before the
    #: bytes over it are read. Documents are streamed and not limited by these.
    max_record_bytes: int = Field(default=16 * 1024**2, ge=64 * 1024, le=1024**3)
    max_records_bytes: int = Field(default=64 * 1024**2, ge=64 * 1024, le=4 * 1024**3)
    #: First retry delay after a failed delivery; doubles (with jitter) up to the maximum.
    retry_base_seconds: float = Field(default=30.0, ge=0.05, le=3600)
    retry_max_seconds: float = Field(default=3600.0, ge=1, le=24 * 3600)
    #: How far a signed request's creation time may be from this node's clock.
    clock_skew_seconds: int = Field(default=300, ge=5, le=3600)
    #: Extra CA certificates (PEM) trusted for other nodes' TLS, besides the system's.
    ca_file: Path | None = None
    #: How often the node looks for due work (deliveries, receipts, deadlines).
    sweep_seconds: float = Field(default=15.0, ge=0.05, le=3600)
    #: After the receiver accepts a leaver's file: keep the sender's copy until the normal
    #: retention date ("keep"), or crypto-shred it after ``erase_after_days`` ("erase").
    after_accepted: Literal["keep", "erase"] = "keep"
    erase_after_days: int = Field(default=30, ge=0, le=3650)


class SmtpSection(_Section):
    #: Empty host: no e-mail is sent (alerts stay in the app and the log).
    host: str = ""
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    username: str = ""
    #: File holding the SMTP password (never in the config file itself).
    password_file: Path | None = None
    from_address: str = "handover@localhost"
    timeout_seconds: float = Field(default=20.0, ge=1, le=300)


class RetentionSection(_Section):
    #: Years after date of birth a child-protection record is kept.
    cp_years_after_dob: int = Field(default=25, ge=1, le=120)
    sweep_hours: int = Field(default=24, ge=1, le=24 * 31)


class PortalSection(_Section):
    #: Minutes a pickup link keeps working after the agency acknowledged receipt (to finish
    #: downloading); 0 closes it at the acknowledgement.
    ack_grace_minutes: int = Field(default=15, ge=0, le=60)


class Config(_Section):
    node: NodeSection = NodeSection()
    database: DatabaseSection = DatabaseSection()
    security: SecuritySection = SecuritySection()
    server: ServerSection = ServerSection()
    transfer: TransferSection = TransferSection()
    retention: RetentionSection = RetentionSection()
    smtp: SmtpSection = SmtpSection()
    portal: PortalSection = PortalSection()

    def database_url(self, data_dir: Path) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{data_dir / 'handover.db'}"


def _env_overrides(environ: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        out.setdefault(section, {})[key] = value
    return out


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "is not a known setting"
    return f"configuration setting {where!r} ({source}) {msg}"


def load_config(data_dir: Path, environ: dict[str, str] | None = None) -> Config:
    """Read ``handover.toml`` (if present) and the environment; refuse any bad value."""
    env = dict(os.environ if environ is None else environ)
    raw: dict[str, Any] = {}
    path = data_dir / CONFIG_FILE
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    for section, values in _env_overrides(env).items():
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"configuration section {section!r} in {path} must be a table")
        raw[section].update(values)
    if KEK_FILE_ENV in env:
        raw.setdefault("security", {})["kek_file"] = env[KEK_FILE_ENV]
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, f"in {path} or {ENV_PREFIX}* environment")) from None
    kek_file = config.security.kek_file
    if kek_file is not None:
        resolved = kek_file.expanduser().resolve()
        if resolved.is_relative_to(data_dir.resolve()):
            raise ConfigError(
                "configuration setting 'security.kek_file' must be outside the data directory: "
                "the key-encryption key must never be stored beside the data it protects"
            )
    return config


def parse_kek(text: str, source: str) -> bytes:
    """Parse a 32-byte KEK given as 64 hex characters or base64."""
    text = text.strip()
    try:
        if len(text) == 64:
            key = bytes.fromhex(text)
        else:
            key = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise ConfigError(
            f"the key-encryption key from {source} must be 32 bytes, "
            "written as 64 hex characters or base64"
        )
    return key


def load_kek(config: Config, environ: dict[str, str] | None = None) -> bytes:
    """The operator's key-encryption key, from the environment or the KEK file."""
    env = os.environ if environ is None else environ
    if env.get(KEK_ENV):
        return parse_kek(env[KEK_ENV], KEK_ENV)
    path = config.security.kek_file
    if path is None:
        raise ConfigError(
            f"no key-encryption key: set {KEK_ENV} or point security.kek_file "
            f"({KEK_FILE_ENV}) at a file outside the data directory"
        )
    try:
        text = path.expanduser().read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not ASCII text"
        raise ConfigError(f"cannot read the key-encryption key file {path}: {reason}") from None
    return parse_kek(text, str(path))


def kek_source(config: Config, environ: dict[str, str] | None = None) -> str:
    """Where :func:`load_kek` takes the KEK from, for messages (never the key itself)."""
    env = os.environ if environ is None else environ
    if env.get(KEK_ENV):
        return KEK_ENV
    path = config.security.kek_file
    return f"the file {path}" if path is not None else KEK_ENV
