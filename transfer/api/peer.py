"""The peer server: ``/peer/v1``, where other nodes deliver packages, receipts and requests.

Every request must carry an RFC 9421 signature (:mod:`transfer.httpsig`) by
the current signing key of an organisation in the directory. The middleware
checks, in this order, before any handler runs or any body byte is read:

1. the request is signed, and its headers are well formed;
2. the key id is in the directory and not revoked at this moment
   (``Directory.signer``);
3. the signature verifies over the method, the target URI (this node's
   ``node.base_url`` plus the path and query, as the sender signed it) and
   ``Content-Digest``, and was made within ``transfer.clock_skew_seconds``;
4. its nonce has not been seen (:class:`transfer.exchange.nonces.NonceTable`).

A refusal is a 401 (403 for a revoked key) problem document and an audit
event ``peer.refused`` with the reason, key id, method and path (never the
body). Bodies are then checked against the signed ``Content-Digest``: JSON
bodies whole (they are small), upload chunks as they stream.

The routes and their answers are specified in ``docs/protocol.md``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol
from uuid import UUID

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from keys import minisign
from keys.keyset import parse_key_id
from schemas import jsontext
from schemas.directory import DirectoryEntry
from schemas.peer import OfferBody
from transfer.api.problems import (
    MalformedBody,
    ProblemEdge,
    UnsupportedMediaType,
    problem_middleware,
)
from transfer.audit.checkpoint import parse_checkpoint
from transfer.audit.checkpoints import PeerCheckpoint
from transfer.audit.log import AuditLog
from transfer.config import Config
from transfer.errors import (
    HandoverError,
    InputError,
    NotFoundError,
    OutOfSpaceError,
    PolicyError,
    TooLargeError,
    TransportError,
)
from transfer.exchange.inbox import Inbox, PeerCaller
from transfer.exchange.nonces import NonceTable
from transfer.exchange.witness import Witness
from transfer.httpsig import check_digest, signature_key_id, verify_request
from transfer.receipts import SignedReceipt, verify_receipt
from transfer.store.permissions import PermissionDenied

if TYPE_CHECKING:
    from transfer.node import Node

__all__ = [
    "PREFIX",
    "PeerDirectory",
    "PeerServices",
    "ReceiptSink",
    "TransferRequestSink",
    "create_peer_app",
    "mount",
    "services_for",
]

log = logging.getLogger("handover.peer_server")

PREFIX: Final = "/peer/v1"
#: Largest JSON body a peer may send (offers, receipts, requests are small).
MAX_JSON_BYTES: Final = 1024 * 1024
OFFSET_HEADER: Final = "Upload-Offset"
OCTETS: Final = "application/offset+octet-stream"


class ReceiptSink(Protocol):
    """Where receipts pushed to us go (``transfer.exchange.outbox.Outbox``)."""

    async def record_receipt(self, signed: SignedReceipt) -> None: ...


class TransferRequestSink(Protocol):
    """Where transfer requests go (``transfer.exchange.requests.TransferRequests``)."""

    async def receive(self, sender_org_id: str, body: Mapping[str, Any]) -> None: ...

    async def receive_decision(
        self, sender_org_id: str, request_id: UUID, body: Mapping[str, Any]
    ) -> None: ...


class PeerDirectory(Protocol):
    """What the peer server needs of ``transfer.directory.service.Directory``."""

    async def entry(self, org_id: str) -> DirectoryEntry: ...

    async def entry_for_key(self, key_id: str) -> DirectoryEntry: ...

    async def signing_public_key(self, key_id: str, at: datetime) -> bytes: ...

    async def signer(self, key_id: str, at: datetime) -> tuple[DirectoryEntry, bytes]: ...


class ServiceUnavailable(TransportError):
    """This node does not offer the operation (a part is not configured)."""

    slug = "not-available"
    title = "Not available on this node"


@dataclass
class PeerServices:
    """Everything the peer routes use."""

    inbox: Inbox
    directory: PeerDirectory
    nonces: NonceTable
    config: Config
    audit_log: AuditLog | None = None
    receipts: ReceiptSink | None = None
    requests: TransferRequestSink | None = None
    #: The audit-log verifier key (C2SP vkey) of an organisation's node, to keep the
    #: checkpoints it sends (witnessing); None when not known.
    audit_vkey_for: Callable[[str], Awaitable[str | None]] | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def base_url(self) -> str:
        return self.config.node.base_url.rstrip("/")


SERVICES: Final = web.AppKey("peer_services", PeerServices)
#: Typed request keys on aiohttp >= 3.14 (plain strings before).
_CALLER: Any = (
    web.RequestKey("handover_peer_caller", PeerCaller)
    if hasattr(web, "RequestKey")
    else "handover_peer_caller"
)


def _services(request: web.Request) -> PeerServices:
    return request.app[SERVICES]


def caller_of(request: web.Request) -> PeerCaller:
    caller = request.get(_CALLER)
    if not isinstance(caller, PeerCaller):
        raise PolicyError("the request is not authenticated")
    return caller


# ------------------------------------------------------------------ middleware


def _data_dir(request: web.Request) -> str:
    return str(_services(request).inbox.store.data_dir)


def _out_of_space(request: web.Request, err: OutOfSpaceError, rid: str) -> None:
    _services(request).inbox.store.space.noticed(err, f"{request.method} {request.path}", rid)


async def _audit_crash(request: web.Request, rid: str) -> None:
    try:
        await _services(request).inbox.store.record_event(
            "api.error",
            None,
            None,
            {},
            outcome="failed",
            method=request.method,
            path=request.path[:200],
        )
    except Exception:
        log.exception("could not audit a peer server error [request %s]", rid)


def _peer_headers(err: HandoverError, response: web.StreamResponse) -> None:
    """A refused signature asks for one; a chunk at the wrong offset says the right one."""
    if err.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Signature realm="handover-peer"'
    offset = err.detail.get("offset")
    if isinstance(offset, int):
        response.headers[OFFSET_HEADER] = str(offset)


#: Every error as an RFC 9457 problem document (also when the app runs on its own).
_problems = problem_middleware(
    ProblemEdge(
        data_dir=_data_dir,
        out_of_space=_out_of_space,
        crashed=_audit_crash,
        decorate=_peer_headers,
        headers=(("Cache-Control", "no-store"),),
        logger=log,
    )
)


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Verify the request's signature, key and nonce before the handler sees it."""
    services = _services(request)
    now = services.clock().astimezone(UTC)
    key_id: str | None = None
    try:
        key_id = signature_key_id(request.headers)
        entry, public = await services.directory.signer(key_id, now)
        verified = verify_request(
            request.method,
            services.base_url + request.raw_path,
            request.headers,
            public_key_for=lambda _kid: public,
            now=int(now.timestamp()),
            max_skew=services.config.transfer.clock_skew_seconds,
        )
        await services.nonces.remember(verified.key_id, verified.nonce, verified.created)
    except HandoverError as err:
        await services.inbox.store.record_event(
            "peer.refused",
            None,
            None,
            {},
            outcome="refused",
            reason=err.slug,
            key_id=key_id,
            method=request.method,
            path=request.path[:200],
        )
        raise
    request[_CALLER] = PeerCaller(org_id=entry.org_id, name=entry.name, key_id=verified.key_id)
    return await handler(request)


# ------------------------------------------------------------------ bodies


async def _read_json(request: web.Request) -> dict[str, Any]:
    """The whole (small) JSON body, checked against its signed Content-Digest."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise TooLargeError(f"a peer request body may be at most {MAX_JSON_BYTES} bytes")
    data = bytearray()
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) > MAX_JSON_BYTES:
                raise TooLargeError(f"a peer request body may be at most {MAX_JSON_BYTES} bytes")
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise TransportError(f"the request body was cut short ({type(exc).__name__})") from None
    check_digest(request.headers.get("Content-Digest", ""), hashlib.sha256(data).digest())
    if not data:
        return {}
    try:
        value = jsontext.loads(data)
    except jsontext.JSONRefused as exc:
        raise MalformedBody(f"the request body is not acceptable JSON: {exc}") from None
    except ValueError:
        raise MalformedBody("the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise MalformedBody("the request body must be a JSON object")
    return value


async def _no_body(request: web.Request) -> None:
    """A request without a body must still match its signed digest (that of nothing)."""
    await _read_json(request)


def _json(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.json_response(dict(body), status=status)


# ------------------------------------------------------------------ routes


async def offer_package(request: web.Request) -> web.StreamResponse:
    body = await _read_json(request)
    offer = OfferBody.model_validate(body)
    status, answer = await _services(request).inbox.offer(caller_of(request), offer)
    return _json(status, answer)


async def package_offset(request: web.Request) -> web.StreamResponse:
    await _no_body(request)
    offset = await _services(request).inbox.upload_offset(
        caller_of(request), request.match_info["package_id"]
    )
    return web.Response(status=204, headers={OFFSET_HEADER: str(offset)})


def _offset_header(request: web.Request) -> int:
    text = request.headers.get(OFFSET_HEADER, "")
    if not text.isdigit() or len(text) > 19:
        raise InputError(f"a chunk needs an {OFFSET_HEADER} header: the offset it starts at")
    return int(text)


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body's pieces as they arrived (``iter_chunks`` hands them over uncopied; the
    receiver hashes and writes each one)."""
    try:
        async for chunk, _ in request.content.iter_chunks():
            yield chunk
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise TransportError(
            f"the chunk was cut short ({type(exc).__name__}); ask for the offset and resume"
        ) from None


async def upload_chunk(request: web.Request) -> web.StreamResponse:
    services = _services(request)
    if request.content_type != OCTETS:
        raise UnsupportedMediaType(f"a chunk is sent as {OCTETS}")
    offset = _offset_header(request)
    digest = request.headers.get("Content-Digest", "")
    new = await services.inbox.receive_chunk(
        caller_of(request), request.match_info["package_id"], offset, digest, _chunks(request)
    )
    return web.Response(status=204, headers={OFFSET_HEADER: str(new)})


async def complete_upload(request: web.Request) -> web.StreamResponse:
    await _read_json(request)
    receipt = await _services(request).inbox.complete(
        caller_of(request), request.match_info["package_id"]
    )
    return _json(200, {"state": "delivered", "receipt": receipt.to_dict()})


async def package_receipts(request: web.Request) -> web.StreamResponse:
    await _no_body(request)
    receipts = await _services(request).inbox.receipts_for_sender(
        caller_of(request), request.match_info["package_id"]
    )
    return _json(200, {"receipts": [r.to_dict() for r in receipts]})


async def receive_receipt(request: web.Request) -> web.StreamResponse:
    services = _services(request)
    caller = caller_of(request)
    body = await _read_json(request)
    if services.receipts is None:
        raise ServiceUnavailable("this node does not take receipts (it has no outbox)")
    signed = SignedReceipt.from_dict(body.get("receipt"))
    issuer = signed.body.receiver_org_id
    if issuer != caller.org_id:
        await services.inbox.store.record_event(
            "peer.refused",
            None,
            None,
            {"package": str(signed.body.package_id)},
            outcome="refused",
            reason="not-issuer",
            key_id=caller.key_id,
            method=request.method,
            path=request.path[:200],
        )
        raise PermissionDenied(
            f"the receipt was issued by {issuer}; only the issuer may deliver it "
            f"(this request is signed by {caller.org_id})"
        )
    key_id = signed.body.receiver_key_id
    try:
        raw = await services.directory.signing_public_key(key_id, signed.body.issued_at)
        public = minisign.PublicKey(key_id=parse_key_id(key_id), key=raw)
        verified = verify_receipt(signed, public_key=public, receiver_org_id=caller.org_id)
    except HandoverError as err:
        # Refused before the outbox sees it: audited here, as the outbox audits its own refusals.
        await services.inbox.store.record_event(
            "receipt.refused",
            None,
            None,
            {"package": str(signed.body.package_id), "receipt": str(signed.body.receipt_id)},
            outcome="refused",
            reason=err.slug,
            issuer=caller.org_id,
            key_id=key_id,
            receipt_kind=signed.body.kind,
        )
        raise
    try:
        # A malformed checkpoint refuses the whole receipt before anything is recorded.
        carried = _carried(body.get("checkpoint"))
    except HandoverError as err:
        await services.inbox.store.record_event(
            "receipt.refused",
            None,
            None,
            {"package": str(signed.body.package_id), "receipt": str(signed.body.receipt_id)},
            outcome="refused",
            reason="bad-checkpoint",
            issuer=caller.org_id,
            problem=err.message[:200],
            receipt_kind=signed.body.kind,
        )
        raise
    await services.receipts.record_receipt(verified)
    witnessed = await _witness(services, caller, carried, verified)
    return _json(200, {"recorded": True, "checkpoint": witnessed})


def _carried(value: Any) -> PeerCheckpoint | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError("checkpoint must be a peer checkpoint object or null")
    carried = PeerCheckpoint.from_json(value)
    parse_checkpoint(carried.note)  # NoteError (422): its signature could not even be checked
    return carried


async def _witness(
    services: PeerServices,
    caller: PeerCaller,
    carried: PeerCheckpoint | None,
    receipt: SignedReceipt,
) -> str:
    """Keep the checkpoint of the caller's audit log the request carries, when we can check it.

    The receipt is already recorded: a checkpoint that does not verify, or contradicts
    one we hold, is audited (``audit.witness``) and answered in ``checkpoint``, not refused.
    """
    if carried is None:
        return "none"
    if services.audit_log is None or services.audit_vkey_for is None:
        return "not-kept"
    witness = Witness(
        audit_log=services.audit_log,
        vkey_for=services.audit_vkey_for,
        store=services.inbox.store,
    )
    outcome = await witness.checkpoint(
        caller.org_id,
        carried.note,
        since=carried.since,
        proof=carried.proof,
        our_org=receipt.body.sender_org_id,
        targets={"package": str(receipt.body.package_id), "receipt": str(receipt.body.receipt_id)},
    )
    return outcome.status


async def transfer_request(request: web.Request) -> web.StreamResponse:
    services = _services(request)
    caller = caller_of(request)
    body = await _read_json(request)
    if services.requests is None:
        raise ServiceUnavailable("this node does not take transfer requests")
    requester = body.get("requester_org_id")
    if requester != caller.org_id:
        raise PermissionDenied(
            f"the request is signed by {caller.org_id}, so it can only ask on its own behalf "
            f"(requester_org_id is {str(requester)[:64]!r})"
        )
    await services.requests.receive(caller.org_id, body)
    return _json(202, {"state": "received"})


async def transfer_decision(request: web.Request) -> web.StreamResponse:
    services = _services(request)
    body = await _read_json(request)
    if services.requests is None:
        raise ServiceUnavailable("this node does not take transfer requests")
    try:
        request_id = UUID(request.match_info["request_id"])
    except ValueError:
        raise NotFoundError("there is no such transfer request (an id is a UUID)") from None
    await services.requests.receive_decision(caller_of(request).org_id, request_id, body)
    return _json(200, {"state": "recorded"})


def create_peer_app(services: PeerServices) -> web.Application:
    """The ``/peer/v1`` application; mount it with ``app.add_subapp(PREFIX, peer_app)``."""
    app = web.Application(middlewares=[_problems, _authenticate])
    app[SERVICES] = services
    app.router.add_route("POST", "/packages", offer_package)
    app.router.add_route("HEAD", "/packages/{package_id}", package_offset)
    app.router.add_route("PATCH", "/packages/{package_id}", upload_chunk)
    app.router.add_route("POST", "/packages/{package_id}/complete", complete_upload)
    app.router.add_get("/packages/{package_id}/receipts", package_receipts, allow_head=False)
    app.router.add_route("POST", "/receipts", receive_receipt)
    app.router.add_route("POST", "/transfer-requests", transfer_request)
    app.router.add_route("POST", "/transfer-requests/{request_id}/decision", transfer_decision)
    return app


def services_for(
    node: Node,
    *,
    receipts: ReceiptSink | None = None,
    requests: TransferRequestSink | None = None,
) -> PeerServices:
    """The peer services of an opened node (``handover serve``)."""
    return PeerServices(
        inbox=node.inbox,
        directory=node.directory,
        nonces=NonceTable(node.store.engine, skew_seconds=node.config.transfer.clock_skew_seconds),
        config=node.config,
        audit_log=node.audit_log,
        receipts=receipts,
        requests=requests,
        audit_vkey_for=node.directory.audit_vkey_for,
    )


def mount(app: web.Application, services: PeerServices) -> web.Application:
    """Mount the peer application at :data:`PREFIX` on ``app``; the sub-application."""
    peer = create_peer_app(services)
    app.add_subapp(PREFIX, peer)
    return peer
