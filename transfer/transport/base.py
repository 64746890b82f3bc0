"""The seam between the services and the network: :class:`PeerTransport`.

The outbox, transfer requests and receipt pushes reach another node only through a
:class:`PeerTransport`: one signed request from one of this node's organisations to
another organisation's node, answered by a :class:`PeerResponse` or one of two errors,
split by blame so callers know whether to try again:

- :class:`PeerRefused` (a :class:`~transfer.errors.PeerError`): the peer
  answered 4xx with a problem document; trying again will not help.
- :class:`PeerUnavailable` (a :class:`~transfer.errors.TransportError`): the
  peer could not be reached, timed out, or answered 5xx, 408 or 429; try
  again later.

:class:`transfer.transport.http.PeerClient` is the implementation a node uses (aiohttp,
RFC 9421 signatures, TLS); :class:`transfer.transport.memory.MemoryTransport` joins two
nodes in one process for tests. This module does no I/O and imports no aiohttp.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from multidict import CIMultiDictProxy

from schemas.directory import DirectoryEntry
from transfer.errors import PeerError, PolicyError, TransportError

if TYPE_CHECKING:
    from keys.keyfiles import KeyFiles
    from transfer.config import Config

__all__ = [
    "MAX_RESPONSE_BYTES",
    "NoEndpointError",
    "PeerDirectory",
    "PeerRefused",
    "PeerResponse",
    "PeerTransport",
    "PeerUnavailable",
    "TransportFactory",
]

#: The largest JSON answer read from a peer (receipt lists are small).
MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024


class PeerDirectory(Protocol):
    """What a transport needs from the directory (``transfer.directory.service.Directory``)."""

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


class PeerTransport(Protocol):
    """Signed requests from one of this node's organisations to another organisation's node."""

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
        """One request; a 2xx answer, or :class:`PeerRefused` / :class:`PeerUnavailable`.

        ``data`` may be an async iterable of chunks (streamed, never joined); then
        ``digest`` (its ``Content-Digest``) and a ``Content-Length`` in ``headers`` must
        be given.
        """
        ...

    async def request_json(
        self,
        from_org: str,
        to_org: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A JSON request; the JSON answer (``{}`` for an empty one)."""
        ...

    async def close(self) -> None:
        """Let go of connections (the transport may be used again afterwards)."""
        ...


#: Makes a node's transport from its key files, directory and configuration
#: (:func:`transfer.transport.http.http_transport`; given to ``Node.open``).
TransportFactory = Callable[["KeyFiles", PeerDirectory, "Config"], PeerTransport]
