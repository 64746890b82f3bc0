"""HTTP Message Signatures (RFC 9421) with Ed25519, over RFC 9530 ``Content-Digest``.

Every request one node makes to another under ``/peer/v1`` carries three headers::

    Content-Digest:  sha-256=:<base64 of SHA-256 of the body>:
    Signature-Input: sig1=("@method" "@target-uri" "content-digest");created=<unix time>;\
keyid="<16 hex>";nonce="<random>";alg="ed25519";tag="handover-peer-v1"
    Signature:       sig1=:<base64 of the 64-byte Ed25519 signature>:

The signature is Ed25519 over the *signature base* of RFC 9421 section 2.5: one
line per covered component (``"@method": POST``), then the
``"@signature-params"`` line, joined by ``\\n`` with no final newline. The
body is covered through its digest, so the signature can be checked before the
body is read and the body checked as it streams (:class:`DigestHasher`,
:func:`check_digest`). Replay is stopped by the caller: :func:`verify_request`
returns the nonce and the receiver refuses one it has seen inside the skew
window. See ``docs/http-signatures.md``.

Pure: no files, no network; PyNaCl for Ed25519. The Structured Field (RFC 8941)
parser and serializer needed for the three headers are :mod:`transfer.structured_fields`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from transfer.errors import AuthenticationError, InputError, IntegrityError
from transfer.structured_fields import (
    InnerList,
    Item,
    Member,
    Params,
    StructuredFieldError,
    parse_dictionary,
    serialize_bare,
    serialize_inner_list,
    serialize_string,
)
from transfer.wording import plural

__all__ = [
    "ALG",
    "COVERED",
    "DEFAULT_MAX_SKEW",
    "LABEL",
    "TAG",
    "BadSignatureError",
    "DigestHasher",
    "DigestMismatchError",
    "ExpiredSignatureError",
    "MalformedSignatureError",
    "UnsignedRequestError",
    "VerifiedRequest",
    "check_digest",
    "content_digest",
    "digest_header",
    "parse_content_digest",
    "sign_request",
    "signature_base_for",
    "signature_key_id",
    "verify_request",
]

#: The components every peer request signs, in this order.
COVERED: Final = ("@method", "@target-uri", "content-digest")
#: The application tag (RFC 9421 section 2.3): a signature made for another protocol is refused.
TAG: Final = "handover-peer-v1"
#: The one signature label we write and accept.
LABEL: Final = "sig1"
#: The one algorithm (RFC 9421 section 3.3.6).
ALG: Final = "ed25519"
#: How far ``created`` may be from the verifier's clock, in seconds, by default.
DEFAULT_MAX_SKEW: Final = 300

_DIGEST_ALG: Final = "sha-256"
_SEED_SIZE = 32
_PUBLIC_KEY_SIZE = 32
_SIGNATURE_SIZE = 64
_KEY_ID_RE = re.compile(r"[0-9A-Fa-f]{16}")
#: Nonces are URL-safe base64 text: long enough to be unique, short enough to store.
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_REQUIRED_PARAMS = ("created", "keyid", "nonce", "tag")
_KNOWN_PARAMS = frozenset({"created", "keyid", "nonce", "alg", "tag"})
_METHOD_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_NAME_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
#: Longest signature header we parse (ours are under 300 bytes).
_MAX_HEADER = 4096


# ----------------------------------------------------------------------- errors


class UnsignedRequestError(AuthenticationError):
    """The request carries no HTTP message signature; every peer request must be signed."""

    slug = "unsigned-request"
    title = "The request is not signed"


class BadSignatureError(AuthenticationError):
    """The request's signature does not verify, or was made for another purpose."""

    slug = "bad-signature"
    title = "The request signature is not valid"


class ExpiredSignatureError(AuthenticationError):
    """The signature's creation time is too far from this node's clock."""

    slug = "signature-out-of-time"
    title = "The request signature is too old or too new"


class MalformedSignatureError(InputError):
    """A ``Signature``, ``Signature-Input`` or ``Content-Digest`` header is malformed."""

    slug = "malformed-signature"
    title = "A signature header is malformed"


class DigestMismatchError(IntegrityError):
    """The body read does not match the ``Content-Digest`` the sender signed."""

    slug = "content-digest-mismatch"
    title = "The body does not match its Content-Digest"


# ------------------------------------------- structured fields (transfer.structured_fields)


def _parse_dictionary(text: str, header: str) -> dict[str, Member]:
    if len(text) > _MAX_HEADER:
        raise MalformedSignatureError(f"the {header} header is longer than {_MAX_HEADER} bytes")
    try:
        return parse_dictionary(text)
    except StructuredFieldError as exc:
        raise MalformedSignatureError(
            f"the {header} header is not a valid structured field dictionary: {exc}"
        ) from None


# ----------------------------------------------------------- content digest (RFC 9530)


def _digest_header(raw: bytes) -> str:
    return f"{_DIGEST_ALG}=:{base64.b64encode(raw).decode('ascii')}:"


def digest_header(sha256: bytes) -> str:
    """The ``Content-Digest`` header value for content whose SHA-256 is already known."""
    if len(sha256) != 32:
        raise ValueError("a SHA-256 digest is 32 bytes")
    return _digest_header(sha256)


def content_digest(data: bytes) -> str:
    """The ``Content-Digest`` header value of ``data``: ``sha-256=:<base64>:``."""
    return _digest_header(hashlib.sha256(data).digest())


class DigestHasher:
    """SHA-256 of a body read in chunks, for a ``Content-Digest`` (sending or checking)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        #: Bytes hashed so far.
        self.size = 0

    def update(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)

    def digest(self) -> bytes:
        """The 32-byte SHA-256 of everything given so far."""
        return self._hash.digest()

    def header(self) -> str:
        """The ``Content-Digest`` header value of everything given so far."""
        return _digest_header(self._hash.digest())


def parse_content_digest(header: str) -> bytes:
    """The SHA-256 value of a ``Content-Digest`` header.

    Other algorithms may be listed too (``sha-512=:...:, sha-256=:...:``); they
    are ignored, but ``sha-256`` must be there, as a 32-byte Byte Sequence.
    Raises :class:`MalformedSignatureError` (an :class:`InputError`) otherwise.
    """
    values: dict[str, bytes] = {}
    for name, member in _parse_dictionary(header, "Content-Digest").items():
        if not isinstance(member, Item) or not isinstance(member.value, bytes):
            raise MalformedSignatureError(
                f"the Content-Digest member {name!r} is not a byte sequence (:base64:)"
            )
        values[name] = member.value
    found = values.get(_DIGEST_ALG)
    if found is None:
        listed = ", ".join(values)[:200] or "nothing"
        raise MalformedSignatureError(
            f"the Content-Digest header must include sha-256 (it lists {listed})"
        )
    if len(found) != hashlib.sha256().digest_size:
        raise MalformedSignatureError("the Content-Digest sha-256 value is not 32 bytes long")
    return found


def check_digest(header: str, computed: bytes | str) -> None:
    """Check a body's SHA-256 (raw bytes, or a ``Content-Digest`` value) against ``header``.

    Constant-time comparison. Raises :class:`DigestMismatchError` when they differ.
    """
    expected = parse_content_digest(header)
    actual = parse_content_digest(computed) if isinstance(computed, str) else computed
    if len(actual) != len(expected):
        raise InputError("a computed SHA-256 digest must be 32 bytes")
    if not hmac.compare_digest(expected, actual):
        raise DigestMismatchError(
            "the body received does not match the Content-Digest it was signed with: it was "
            "altered or cut short on the way; send it again"
        )


# ------------------------------------------------------------- the signature base


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The one value of header ``name`` (case-insensitive); refuse one sent twice."""
    values = [v for k, v in headers.items() if k.lower() == name]
    if len(values) > 1:
        raise MalformedSignatureError(f"the {name} header appears more than once")
    return values[0] if values else None


def _check_target_uri(uri: str) -> None:
    if not uri.isascii() or any(c <= " " or c == "\x7f" for c in uri):
        raise InputError("a target URI must be ASCII with no spaces or control characters")
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise InputError(f"the target URI {uri[:200]!r} is not a valid URI") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"the target URI {uri[:200]!r} is not an absolute http(s) URI")
    if parts.fragment or "#" in uri or "@" in parts.netloc:
        raise InputError(f"the target URI {uri[:200]!r} must not have a fragment or a user name")


def _authority(uri: str) -> str:
    parts = urlsplit(uri)
    netloc = parts.netloc.lower()
    default = ":443" if parts.scheme == "https" else ":80"
    return netloc[: -len(default)] if netloc.endswith(default) else netloc


def _component_value(name: str, method: str, target_uri: str, headers: Mapping[str, str]) -> str:
    if name.startswith("@"):
        parts = urlsplit(target_uri)
        if name == "@method":
            return method
        if name == "@target-uri":
            return target_uri
        if name == "@authority":
            return _authority(target_uri)
        if name == "@scheme":
            return parts.scheme.lower()
        if name == "@path":
            return parts.path or "/"
        if name == "@query":
            return "?" + parts.query
        if name == "@request-target":
            return (parts.path or "/") + ("?" + parts.query if parts.query else "")
        raise MalformedSignatureError(f"the signature covers {name}, which is not supported")
    if not _HEADER_NAME_RE.fullmatch(name):
        raise MalformedSignatureError(
            f"the covered component {name[:60]!r} is not a lower-case header name"
        )
    value = _header(headers, name)
    if value is None:
        raise MalformedSignatureError(f"the signature covers the {name} header, which is missing")
    value = value.strip(" \t")
    if not value.isascii() or any((c < " " and c != "\t") or c == "\x7f" for c in value):
        raise MalformedSignatureError(f"the {name} header holds characters that cannot be signed")
    return value


def _base(method: str, target_uri: str, headers: Mapping[str, str], inner: InnerList) -> bytes:
    if not _METHOD_RE.fullmatch(method):
        raise InputError("an HTTP method is a token such as POST")
    _check_target_uri(target_uri)
    lines: list[str] = []
    seen: set[str] = set()
    for item in inner.items:
        name = item.value
        if not isinstance(name, str):
            raise MalformedSignatureError("every covered component must be a quoted string")
        if item.params:
            raise MalformedSignatureError(
                f"the covered component {name!r} has parameters, which are not supported"
            )
        if name == "@signature-params":
            raise MalformedSignatureError("@signature-params may not be a covered component")
        if name in seen:
            raise MalformedSignatureError(f"the component {name!r} is covered twice")
        seen.add(name)
        lines.append(
            f"{serialize_string(name)}: {_component_value(name, method, target_uri, headers)}"
        )
    lines.append(f'"@signature-params": {serialize_inner_list(inner)}')
    return "\n".join(lines).encode("ascii")


def signature_base_for(
    method: str,
    target_uri: str,
    headers: Mapping[str, str],
    signature_input: str,
    label: str,
) -> bytes:
    """The RFC 9421 signature base for the signature ``label`` of a ``Signature-Input`` value.

    General (any covered components this module can derive, any parameters):
    for checking against the RFC's own examples. :func:`verify_request` adds
    the profile's checks on top.
    """
    member = _parse_dictionary(signature_input, "Signature-Input").get(label)
    if not isinstance(member, InnerList):
        raise MalformedSignatureError(f"the Signature-Input header has no inner list {label!r}")
    return _base(method, target_uri, headers, member)


# ------------------------------------------------------------------ sign / verify


def _key_id(key_id: str) -> str:
    if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
        raise InputError("a signing key id is 16 hexadecimal digits, as minisign shows it")
    return key_id.upper()


def sign_request(
    method: str,
    target_uri: str,
    headers: Mapping[str, str],
    *,
    key_id: str,
    private_key: bytes,
    created: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The ``Signature-Input`` and ``Signature`` headers to add to a request.

    ``headers`` must already hold the request's ``Content-Digest`` (that of
    an empty body for a request without one). ``target_uri`` is the peer's
    base URL plus path and query, exactly as the peer will rebuild it.
    ``private_key`` is the 32-byte Ed25519 seed of the organisation's current
    signing key and ``key_id`` its minisign key id (written in upper case).
    """
    if len(private_key) != _SEED_SIZE:
        raise InputError("an Ed25519 signing key seed must be 32 bytes")
    digest = _header(headers, "content-digest")
    if digest is None:
        raise InputError("a request must carry its Content-Digest header before it is signed")
    parse_content_digest(digest)
    when = int(time.time()) if created is None else created
    if isinstance(when, bool) or not isinstance(when, int) or not 0 <= when < 10**15:
        raise InputError("a signature's created time is a non-negative whole number of seconds")
    once = secrets.token_urlsafe(16) if nonce is None else nonce
    if not _NONCE_RE.fullmatch(once):
        raise InputError("a nonce is 16 to 128 characters of A-Z a-z 0-9 _ -")
    params: Params = (
        ("created", when),
        ("keyid", _key_id(key_id)),
        ("nonce", once),
        ("alg", ALG),
        ("tag", TAG),
    )
    inner = InnerList(tuple(Item(c) for c in COVERED), params)
    base = _base(method, target_uri, headers, inner)
    signature = SigningKey(bytes(private_key)).sign(base).signature
    return {
        "Signature-Input": f"{LABEL}={serialize_inner_list(inner)}",
        "Signature": f"{LABEL}={serialize_bare(signature)}",
    }


@dataclass(frozen=True)
class VerifiedRequest:
    """What a verified request signature established."""

    #: The signing key id (16 upper-case hex digits, as minisign shows it).
    key_id: str
    #: When the sender signed it (Unix time, within the skew window).
    created: int
    #: The sender's nonce: refuse it if already seen (replay).
    nonce: str
    #: The SHA-256 of the body the sender signed (from ``Content-Digest``).
    content_sha256: bytes = b""


@dataclass(frozen=True)
class _Parsed:
    inner: InnerList
    signature: bytes
    created: int
    key_id: str
    nonce: str


def _one_member(members: dict[str, Member], header: str) -> Member:
    if len(members) != 1:
        labels = ", ".join(members) or "none"
        raise MalformedSignatureError(
            f"the {header} header must hold exactly one signature, labelled {LABEL} "
            f"(it holds: {labels[:200]})"
        )
    label, member = next(iter(members.items()))
    if label != LABEL:
        raise MalformedSignatureError(
            f"the {header} header's signature is labelled {label[:40]!r}, not {LABEL!r}"
        )
    return member


def _parse(headers: Mapping[str, str]) -> _Parsed:
    sig_input = _header(headers, "signature-input")
    sig = _header(headers, "signature")
    if sig_input is None and sig is None:
        raise UnsignedRequestError(
            "the request is not signed: every request between nodes must carry an HTTP "
            "message signature (Signature-Input and Signature headers)"
        )
    if sig_input is None or sig is None:
        missing = "Signature-Input" if sig_input is None else "Signature"
        raise MalformedSignatureError(f"the request is signed but has no {missing} header")
    inner = _one_member(_parse_dictionary(sig_input, "Signature-Input"), "Signature-Input")
    sig_member = _one_member(_parse_dictionary(sig, "Signature"), "Signature")
    if not isinstance(inner, InnerList):
        raise MalformedSignatureError(
            "the Signature-Input value must be a list of covered components in parentheses"
        )
    if not isinstance(sig_member, Item) or not isinstance(sig_member.value, bytes):
        raise MalformedSignatureError("the Signature value must be a byte sequence (:base64:)")
    if sig_member.params:
        raise MalformedSignatureError("the Signature value must not have parameters")
    if len(sig_member.value) != _SIGNATURE_SIZE:
        raise MalformedSignatureError("the signature is not a 64-byte Ed25519 signature")

    params = dict(inner.params)
    unknown = sorted(set(params) - _KNOWN_PARAMS)
    if unknown:
        raise MalformedSignatureError(
            f"the signature has parameters this node does not accept: {', '.join(unknown)[:200]}"
        )
    missing_params = [p for p in _REQUIRED_PARAMS if p not in params]
    if missing_params:
        raise MalformedSignatureError(
            f"the signature lacks the required parameters: {', '.join(missing_params)}"
        )
    created, key_id, nonce, tag = (params[p] for p in _REQUIRED_PARAMS)
    if isinstance(created, bool) or not isinstance(created, int) or created < 0:
        raise MalformedSignatureError("the signature's created parameter must be a Unix time")
    if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
        raise MalformedSignatureError(
            "the signature's keyid must be a quoted signing key id of 16 hexadecimal digits"
        )
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise MalformedSignatureError(
            "the signature's nonce must be a quoted string of 16 to 128 characters A-Z a-z 0-9 _ -"
        )
    if not isinstance(tag, str):
        raise MalformedSignatureError("the signature's tag must be a quoted string")
    if tag != TAG:
        raise BadSignatureError(
            f"the signature was made for another purpose (tag {tag[:60]!r}, not {TAG!r})"
        )
    if "alg" in params and params["alg"] != ALG:
        raise BadSignatureError(
            f"the signature's algorithm must be {ALG} (it says {str(params['alg'])[:40]!r})"
        )
    covered = [i.value for i in inner.items]
    lacking = [c for c in COVERED if c not in covered]
    if lacking:
        raise BadSignatureError(
            f"the signature must cover {', '.join(COVERED)}; it does not cover {', '.join(lacking)}"
        )
    return _Parsed(inner, sig_member.value, created, key_id.upper(), nonce)


def signature_key_id(headers: Mapping[str, str]) -> str:
    """The key id a request claims to be signed with (upper case), before verifying it.

    For a caller that must look the key up asynchronously first; the same
    checks of the headers' form as :func:`verify_request` apply.
    """
    return _parse(headers).key_id


def _format_time(when: int) -> str:
    try:
        return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"Unix time {when}"


def verify_request(
    method: str,
    target_uri: str,
    headers: Mapping[str, str],
    *,
    public_key_for: Callable[[str], bytes],
    now: int,
    max_skew: int = DEFAULT_MAX_SKEW,
) -> VerifiedRequest:
    """Verify a request's signature; return who signed it, when, and its nonce.

    ``target_uri`` is rebuilt by the receiver from its configured base URL.
    ``public_key_for`` turns the key id (16 upper-case hex digits) into the
    32-byte Ed25519 public key, or raises to refuse the key. The request's
    ``Content-Digest`` is covered by the signature; the caller still checks
    the body against it (:func:`check_digest` with ``content_sha256``) and
    refuses a nonce it has already seen.

    Raises :class:`UnsignedRequestError`, :class:`BadSignatureError`,
    :class:`ExpiredSignatureError` (authentication, 401) or
    :class:`MalformedSignatureError` (400).
    """
    if max_skew < 0:
        raise InputError("the allowed clock skew cannot be negative")
    parsed = _parse(headers)
    public = public_key_for(parsed.key_id)
    if len(public) != _PUBLIC_KEY_SIZE:
        raise BadSignatureError(f"the key {parsed.key_id} is not a 32-byte Ed25519 public key")
    base = _base(method, target_uri, headers, parsed.inner)
    try:
        VerifyKey(bytes(public)).verify(base, parsed.signature)
    except (CryptoError, ValueError):
        raise BadSignatureError(
            f"the request's signature does not verify with key {parsed.key_id}: the method, "
            "address, body digest or signature parameters were changed, or another key signed it"
        ) from None
    if abs(now - parsed.created) > max_skew:
        raise ExpiredSignatureError(
            f"the request was signed at {_format_time(parsed.created)}, more than "
            f"{plural(max_skew, 'second')} from this node's clock ({_format_time(now)}); "
            "check both clocks"
        )
    digest_header = _header(headers, "content-digest")
    if digest_header is None:
        raise MalformedSignatureError("the request has no Content-Digest header")
    return VerifiedRequest(
        key_id=parsed.key_id,
        created=parsed.created,
        nonce=parsed.nonce,
        content_sha256=parse_content_digest(digest_header),
    )
