"""The signed client every part of a node uses to call another node (``/peer/v1``).

Each request is signed with RFC 9421 HTTP Message Signatures (Ed25519) by
the sending organisation's current signing key, over the method, the target
URI (the peer's endpoint from the directory plus the path) and the
``Content-Digest`` of the body (an empty body has a digest too). TLS checks
the peer's certificate against the system's CAs plus ``transfer.ca_file``;
plain ``http://`` is only allowed to a loopback address (tests, a node
talking to itself behind a proxy).

Errors are split by blame, so callers know whether to try again:

- :class:`PeerRefused` (a :class:`~transfer.errors.PeerError`): the peer
  answered 4xx with a problem document; trying again will not help.
- :class:`PeerUnavailable` (a :class:`~transfer.errors.TransportError`): the
  peer could not be reached, timed out, or answered 5xx, 408 or 429; try
  again later.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import aiohttp
from multidict import CIMultiDictProxy

from schemas import jsontext
from schemas.directory import DirectoryEntry
from transfer.errors import PeerError, PolicyError, TransportError
from transfer.httpsig import content_digest, sign_request

if TYPE_CHECKING:
    from keys.store import KeyStore
    from transfer.config import Config

__all__ = [
    "MAX_RESPONSE_BYTES",
    "NoEndpointError",
    "PeerClient",
    "PeerDirectory",
    "PeerRefused",
    "PeerResponse",
    "PeerUnavailable",
]

log = logging.getLogger("handover.peer")

#: The largest JSON answer read from a peer (receipt lists are small).
MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024
#: Statuses that mean "not now": retried later like a network failure.
_TRANSIENT: Final = frozenset({408, 425, 429})
_EMPTY_DIGEST: Final = content_digest(b"")


class PeerDirectory(Protocol):
    """What the client needs from the directory (``transfer.directory.service.Directory``)."""

    async def entry(self, org_id: str) -> DirectoryEntry: ...


class PeerRefused(PeerError):
    """The other node refused the request (4xx); its problem document says why."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        title: str,
        detail_text: str,
        problem: Mapping[str, Any],
    ) -> None:
        super().__init__(message, detail={"peer_status": status})
        self.status = status
        self.title = title
        self.detail_text = detail_text
        #: The peer's whole problem document (its extra members, e.g. ``offset``).
        self.problem: dict[str, Any] = dict(problem)


class PeerUnavailable(TransportError):
    """The other node could not be reached or is not answering properly just now."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, detail={} if status is None else {"peer_status": status})
        self.status = status


class NoEndpointError(PolicyError):
    """The organisation has no node to deliver to, or its endpoint may not be used."""


@dataclass(frozen=True)
class PeerResponse:
    """A successful (2xx) answer: status, headers and the JSON body (``{}`` when empty)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: dict[str, Any]


def _clean(text: object, limit: int = 300) -> str:
    """Peer-supplied text made safe to show on one line."""
    s = str(text) if text is not None else ""
    s = "".join(c if c.isprintable() else " " for c in s)
    return s[:limit].strip()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def target_uri(endpoint: str, path: str) -> str:
    """The URI signed and requested: the endpoint (without a trailing ``/``) plus the path."""
    if not path.startswith("/"):
        raise ValueError("a peer path starts with '/'")
    return endpoint.rstrip("/") + path


class PeerClient:
    """Signed HTTPS requests from one of this node's organisations to another node."""

    def __init__(
        self,
        *,
        keys: KeyStore,
        directory: PeerDirectory,
        config: Config,
        connect_timeout: float = 15.0,
        read_timeout: float = 120.0,
    ) -> None:
        self._keys = keys
        self._directory = directory
        self._ca_file = config.transfer.ca_file
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None

    # ---------------------------------------------------------------- plumbing

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context()
            if self._ca_file is not None:
                try:
                    ctx.load_verify_locations(cafile=str(self._ca_file))
                except (OSError, ssl.SSLError) as exc:
                    raise NoEndpointError(
                        f"cannot use transfer.ca_file {self._ca_file}: {exc}"
                    ) from None
            self._ssl = ctx
        return self._ssl

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._ssl_context(), limit=32),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def endpoint_of(self, org_id: str) -> str:
        """The peer's base URL from the directory, checked as usable."""
        entry = await self._directory.entry(org_id)
        if entry.endpoint is None:
            raise NoEndpointError(
                f"{entry.name} ({org_id}) has no Handover node in the directory to deliver to"
            )
        url = urllib.parse.urlsplit(entry.endpoint)
        if url.scheme != "https" and not (
            url.scheme == "http" and _is_loopback(url.hostname or "")
        ):
            raise NoEndpointError(
                f"the directory gives {entry.name} ({org_id}) the endpoint {entry.endpoint}, "
                "which is not https; only a loopback address may use plain http"
            )
        return entry.endpoint

    async def _signed_headers(
        self, from_org: str, method: str, uri: str, headers: dict[str, str]
    ) -> dict[str, str]:
        keyset = await asyncio.to_thread(self._keys.load, from_org)
        seed = keyset.signing.seed
        assert seed is not None  # a loaded KeySet always holds its current secret key
        headers.update(
            sign_request(method, uri, headers, key_id=keyset.key_id_hex, private_key=seed)
        )
        return headers

    # ---------------------------------------------------------------- requests

    async def request(
        self,
        from_org: str,
        to_org: str,
        method: str,
        path: str,
        *,
        data: bytes | AsyncIterable[bytes] = b"",
        digest: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> PeerResponse:
        """One signed request; a 2xx answer, or :class:`PeerRefused` / :class:`PeerUnavailable`.

        ``data`` may be an async iterable of chunks (streamed, never joined);
        then ``digest`` (its ``Content-Digest``) and a ``Content-Length`` in
        ``headers`` must be given, since the signature covers the digest.
        """
        method = method.upper()
        endpoint = await self.endpoint_of(to_org)
        uri = target_uri(endpoint, path)
        hdrs: dict[str, str] = dict(headers or {})
        if isinstance(data, bytes):
            hdrs["Content-Digest"] = digest or (content_digest(data) if data else _EMPTY_DIGEST)
        else:
            if digest is None or "Content-Length" not in hdrs:
                raise ValueError("a streamed body needs its Content-Digest and Content-Length")
            hdrs["Content-Digest"] = digest
        hdrs = await self._signed_headers(from_org, method, uri, hdrs)
        where = f"{to_org} at {endpoint}"
        try:
            payload = None if isinstance(data, bytes) and not data else data
            async with self._client().request(
                method, uri, data=payload, headers=hdrs, allow_redirects=False
            ) as resp:
                raw = await resp.content.read(MAX_RESPONSE_BYTES + 1)
                status, resp_headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = _clean(exc) or type(exc).__name__
            raise PeerUnavailable(
                f"cannot reach {where}: {reason}; it will be tried again"
            ) from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise PeerUnavailable(f"{where} sent an answer larger than {MAX_RESPONSE_BYTES} bytes")
        body = _json_body(raw)
        if 200 <= status < 300:
            if body is None:
                raise PeerUnavailable(f"{where} answered {status} with a body that is not JSON")
            return PeerResponse(status, resp_headers, body)
        problem = body or {}
        title = _clean(problem.get("title")) or f"HTTP {status}"
        detail = _clean(problem.get("detail"))
        said = f"{title}: {detail}" if detail else title
        if status >= 500 or status in _TRANSIENT:
            raise PeerUnavailable(
                f"{where} is not accepting requests just now ({status} {said})", status=status
            )
        if 300 <= status < 400:
            raise PeerUnavailable(f"{where} answered with a redirect ({status})", status=status)
        raise PeerRefused(
            f"{where} refused the request ({status} {said})",
            status=status,
            title=title,
            detail_text=detail,
            problem=problem,
        )

    async def request_json(
        self,
        from_org: str,
        to_org: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A signed JSON request; the JSON answer (``{}`` for an empty one)."""
        data = b"" if body is None else json.dumps(dict(body), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        resp = await self.request(from_org, to_org, method, path, data=data, headers=headers)
        return resp.body

    async def __aenter__(self) -> PeerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _json_body(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return {}
    try:
        value = jsontext.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
