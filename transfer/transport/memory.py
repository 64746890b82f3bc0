"""Two (or more) nodes in one process, joined without a socket, with injectable faults.

:class:`MemoryNetwork` holds the receiving side of each organisation's node (its
:class:`~transfer.exchange.inbox.Inbox`, and where pushed receipts go);
:meth:`MemoryNetwork.transport` is a :data:`~transfer.transport.base.TransportFactory`
whose :class:`MemoryTransport` answers the ``/peer/v1`` package routes by calling the
receiver's inbox directly, as the peer server would after checking the signature, and
maps its errors to :class:`~transfer.transport.base.PeerRefused` or
:class:`~transfer.transport.base.PeerUnavailable` as the HTTP client does. Bodies and
answers go through JSON, as on the wire.

Faults are queued with :meth:`MemoryNetwork.inject`; each request takes the first queued
fault that matches it:

- ``drop_request``: the request is lost; the receiver never sees it.
- ``drop_response``: the receiver handles the request, then the answer is lost.
- ``delay``: the request waits ``seconds`` before it reaches the receiver.
- ``duplicate``: the request reaches the receiver twice (the sender gets the second answer).
- ``cut_body``: the body stops half-way (the connection was cut): the receiver sees the
  cut as the peer server does, and the sender sees the connection fail.

Used by the tests of the delivery logic (``tests/integration/exchange/test_delivery_simulated.py``);
the real-socket tests use :mod:`transfer.transport.http`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError

from schemas.directory import DirectoryEntry
from schemas.peer import OfferBody
from transfer.errors import HandoverError, TransportError
from transfer.exchange.inbox import PeerCaller
from transfer.receipts import SignedReceipt
from transfer.transport.base import (
    NoEndpointError,
    PeerDirectory,
    PeerRefused,
    PeerResponse,
    PeerUnavailable,
)

if TYPE_CHECKING:
    from keys.keyfiles import KeyFiles
    from transfer.config import Config

__all__ = ["Fault", "FaultKind", "MemoryNetwork", "MemoryTransport", "Receiver", "Sent"]

FaultKind = Literal["drop_request", "drop_response", "delay", "duplicate", "cut_body"]
_TRANSIENT: Final = frozenset({408, 425, 429})
_OFFSET: Final = "Upload-Offset"
_PACKAGE = re.compile(r"/peer/v1/packages/([^/]+)")


class Receiver(Protocol):
    """What a node answers with (``transfer.exchange.inbox.Inbox``, as far as it is reached)."""

    async def offer(self, caller: PeerCaller, offer: OfferBody) -> tuple[int, dict[str, Any]]: ...

    async def upload_offset(self, caller: PeerCaller, package_id: str) -> int: ...

    async def receive_chunk(
        self,
        caller: PeerCaller,
        package_id: str,
        offset: int,
        digest_header: str,
        chunks: AsyncIterator[bytes],
    ) -> int: ...

    async def complete(self, caller: PeerCaller, package_id: str) -> SignedReceipt: ...

    async def receipts_for_sender(
        self, caller: PeerCaller, package_id: str
    ) -> list[SignedReceipt]: ...


@dataclass(frozen=True)
class Fault:
    """One fault for the next request that matches (``method`` and the end of ``path``)."""

    kind: FaultKind
    method: str | None = None
    path_end: str | None = None
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_end is None or path.endswith(self.path_end)
        )


@dataclass(frozen=True)
class Sent:
    """One request as the network saw it, and what became of it."""

    from_org: str
    to_org: str
    method: str
    path: str
    fault: FaultKind | None
    #: The answer's status, or the error the sender saw.
    outcome: str


@dataclass
class _Node:
    receiver: Receiver
    directory: PeerDirectory


@dataclass
class MemoryNetwork:
    """The nodes reachable in this process, and the faults still to happen."""

    _nodes: dict[str, _Node] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    #: Every request, in order.
    sent: list[Sent] = field(default_factory=list)

    def join(self, org_id: str, receiver: Receiver, directory: PeerDirectory) -> None:
        """``org_id``'s node answers with ``receiver``; ``directory`` names its callers."""
        self._nodes[org_id] = _Node(receiver, directory)

    def inject(self, *faults: Fault) -> None:
        """Queue faults: each is used up by the first later request it matches."""
        self.faults.extend(faults)

    def transport(
        self, keys: KeyFiles, directory: PeerDirectory, config: Config
    ) -> MemoryTransport:
        """The transport of the node holding ``keys`` (a ``TransportFactory``)."""
        del directory, config
        return MemoryTransport(self, keys)

    def _take(self, method: str, path: str) -> Fault | None:
        for i, fault in enumerate(self.faults):
            if fault.matches(method, path):
                return self.faults.pop(i)
        return None


class MemoryTransport:
    """A :class:`~transfer.transport.base.PeerTransport` over a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, keys: KeyFiles) -> None:
        self._network = network
        self._keys = keys

    async def close(self) -> None:
        return None

    async def request_json(
        self,
        from_org: str,
        to_org: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        data = b"" if body is None else json.dumps(dict(body), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        resp = await self.request(from_org, to_org, method, path, data=data, headers=headers)
        return resp.body

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
        method = method.upper()
        node = self._network._nodes.get(to_org)
        if node is None:
            raise NoEndpointError(f"{to_org} has no node in this process's network")
        body = data if isinstance(data, bytes) else b"".join([piece async for piece in data])
        hdrs = dict(headers or {})
        fault = self._network._take(method, path)
        outcome = "error"
        try:
            if fault is not None and fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            if fault is not None and fault.kind == "drop_request":
                raise PeerUnavailable(f"cannot reach {to_org}: the request was lost")
            caller = await self._caller(from_org, node)
            if fault is not None and fault.kind == "cut_body":
                await self._cut(node, caller, method, path, body, digest, hdrs)
                raise PeerUnavailable(f"cannot reach {to_org}: the connection was cut")
            resp = await self._answer(node, caller, method, path, body, digest, hdrs, to_org)
            if fault is not None and fault.kind == "duplicate":
                resp = await self._answer(node, caller, method, path, body, digest, hdrs, to_org)
            if fault is not None and fault.kind == "drop_response":
                raise PeerUnavailable(f"cannot reach {to_org}: the answer was lost")
            outcome = str(resp.status)
            return resp
        except HandoverError as exc:
            outcome = f"{type(exc).__name__}: {exc.message}"
            raise
        finally:
            self._network.sent.append(
                Sent(from_org, to_org, method, path, fault.kind if fault else None, outcome)
            )

    async def _caller(self, from_org: str, node: _Node) -> PeerCaller:
        keyset = await asyncio.to_thread(self._keys.load, from_org)
        entry: DirectoryEntry = await node.directory.entry(from_org)
        return PeerCaller(org_id=from_org, name=entry.name, key_id=keyset.key_id_hex)

    async def _cut(
        self,
        node: _Node,
        caller: PeerCaller,
        method: str,
        path: str,
        body: bytes,
        digest: str | None,
        headers: dict[str, str],
    ) -> None:
        """Half of the body reaches the receiver, then the connection is cut."""
        match = _PACKAGE.fullmatch(path)
        if method != "PATCH" or match is None:
            return  # a small JSON body cut short never makes a request the receiver handles
        half = body[: len(body) // 2]

        async def pieces() -> AsyncIterator[bytes]:
            if half:
                yield half
            raise TransportError(
                "the chunk was cut short (ClientPayloadError); ask for the offset and resume"
            )

        offset = int(headers.get(_OFFSET, "0"))
        try:
            await node.receiver.receive_chunk(
                caller, match.group(1), offset, digest or "", pieces()
            )
        except HandoverError:
            pass  # the peer server would answer, but the sender is no longer listening

    async def _answer(
        self,
        node: _Node,
        caller: PeerCaller,
        method: str,
        path: str,
        body: bytes,
        digest: str | None,
        headers: dict[str, str],
        to_org: str,
    ) -> PeerResponse:
        try:
            status, answer, out = await self._route(
                node, caller, method, path, body, digest, headers
            )
        except HandoverError as err:
            raise _as_peer_error(err, to_org) from None
        except ValidationError as err:
            raise PeerRefused(
                f"{to_org} refused the request (422 the request body is not valid)",
                status=422,
                title="Unprocessable Content",
                detail_text=str(err)[:300],
                problem={"status": 422},
            ) from None
        # Through JSON, as on the wire.
        wire = json.loads(json.dumps(answer)) if answer else {}
        return PeerResponse(status, CIMultiDictProxy(CIMultiDict(out)), wire)

    async def _route(
        self,
        node: _Node,
        caller: PeerCaller,
        method: str,
        path: str,
        body: bytes,
        digest: str | None,
        headers: dict[str, str],
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        receiver = node.receiver
        if method == "POST" and path == "/peer/v1/packages":
            offer = OfferBody.model_validate(json.loads(body))
            status, answer = await receiver.offer(caller, offer)
            return status, answer, {}
        if path.endswith("/complete") and method == "POST":
            match = _PACKAGE.fullmatch(path.removesuffix("/complete"))
            if match is not None:
                receipt = await receiver.complete(caller, match.group(1))
                return 200, {"state": "delivered", "receipt": receipt.to_dict()}, {}
        if path.endswith("/receipts") and method == "GET":
            match = _PACKAGE.fullmatch(path.removesuffix("/receipts"))
            if match is not None:
                held = await receiver.receipts_for_sender(caller, match.group(1))
                return 200, {"receipts": [r.to_dict() for r in held]}, {}
        match = _PACKAGE.fullmatch(path)
        if match is not None and method == "HEAD":
            offset = await receiver.upload_offset(caller, match.group(1))
            return 204, {}, {_OFFSET: str(offset)}
        if match is not None and method == "PATCH":
            offset = int(headers.get(_OFFSET, "-1"))

            async def pieces() -> AsyncIterator[bytes]:
                yield body

            new = await receiver.receive_chunk(
                caller, match.group(1), offset, digest or "", pieces()
            )
            return 204, {}, {_OFFSET: str(new)}
        raise _NotRouted(f"no route {method} {path} in the in-memory network")


class _NotRouted(HandoverError):
    http_status = 404
    slug = "not-found"
    title = "Not Found"


def _as_peer_error(err: HandoverError, to_org: str) -> HandoverError:
    """The error the HTTP client raises for the problem document the peer server answers."""
    status = err.http_status
    problem: dict[str, Any] = {"status": status, "title": err.title, **dict(err.detail)}
    said = f"{err.title}: {err.message}"
    where = f"{to_org} (in memory)"
    if status >= 500 or status in _TRANSIENT:
        return PeerUnavailable(
            f"{where} is not accepting requests just now ({status} {said})", status=status
        )
    return PeerRefused(
        f"{where} refused the request ({status} {said})",
        status=status,
        title=err.title,
        detail_text=err.message,
        problem=problem,
    )
