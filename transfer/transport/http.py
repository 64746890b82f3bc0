"""The signed aiohttp client every part of a node uses to call another node (``/peer/v1``):
the :class:`~transfer.transport.base.PeerTransport` a node runs with.

Each request is signed with RFC 9421 HTTP Message Signatures (Ed25519) by
the sending organisation's current signing key, over the method, the target
URI (the peer's endpoint from the directory plus the path) and the
``Content-Digest`` of the body (an empty body has a digest too). TLS checks
the peer's certificate against the system's CAs plus ``transfer.ca_file``;
plain ``http://`` is only allowed to a loopback address (tests, a node
talking to itself behind a proxy). Errors are those of :mod:`transfer.transport.base`,
split by blame.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from schemas import jsontext
from transfer.httpsig import content_digest, sign_request
from transfer.transport.base import (
    MAX_RESPONSE_BYTES,
    NoEndpointError,
    PeerDirectory,
    PeerRefused,
    PeerResponse,
    PeerUnavailable,
)

if TYPE_CHECKING:
    from keys.keyfiles import KeyFiles
    from transfer.config import Config

__all__ = ["PeerClient", "http_transport", "target_uri"]

log = logging.getLogger("handover.peer")

#: Statuses that mean "not now": retried later like a network failure.
_TRANSIENT: Final = frozenset({408, 425, 429})
_EMPTY_DIGEST: Final = content_digest(b"")


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


#: How long a peer's endpoint, once looked up in the directory, is used without looking again.
_ENDPOINT_SECONDS: Final = 5.0
_clock = time.monotonic


class PeerClient:
    """Signed HTTPS requests from one of this node's organisations to another node
    (a :class:`~transfer.transport.base.PeerTransport`)."""

    def __init__(
        self,
        *,
        keys: KeyFiles,
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
        #: Endpoints looked up in the last ``_ENDPOINT_SECONDS``: org id -> (when, URL).
        self._endpoints: dict[str, tuple[float, str]] = {}

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
        """The peer's base URL from the directory, checked as usable.

        Kept for a few seconds (``_ENDPOINT_SECONDS``): a delivery makes three requests to
        one peer, and each would otherwise look the directory over again. Only where to
        connect is kept: who may sign and be trusted is checked on every request and
        receipt, at once after a revocation.
        """
        now = _clock()
        held = self._endpoints.get(org_id)
        if held is not None and now - held[0] < _ENDPOINT_SECONDS:
            return held[1]
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
        if len(self._endpoints) > 10_000:
            self._endpoints.clear()
        self._endpoints[org_id] = (now, entry.endpoint)
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


def http_transport(keys: KeyFiles, directory: PeerDirectory, config: Config) -> PeerClient:
    """A node's transport over HTTPS (the :data:`~transfer.transport.base.TransportFactory`
    the faces give ``Node.open``)."""
    return PeerClient(keys=keys, directory=directory, config=config)
