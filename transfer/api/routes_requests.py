"""Alerts and transfer requests in the JSON API (the DSL team's side).

Follows :mod:`transfer.api.routes` (one :class:`Route` table, bearer
authentication, problem documents); the services check permissions and the
organisation themselves. Creating, authorising or declining a request tries
to send it to the other node at once; if that node cannot be reached the
node's sweep keeps trying (the answer shows ``outbound`` and ``last_error``).
"""

from __future__ import annotations

from typing import Final, get_args

from aiohttp import web

from schemas.api import NoBody
from transfer.alerts import AlertRecord, Alerts
from transfer.api.problems import RequestValidationFailed
from transfer.api.routing import API, SIGNED_IN, Call, QueryParam, Route, _json
from transfer.exchange.requests import (
    AuthoriseRequest,
    DeclineRequest,
    NewTransferRequest,
    Side,
    TransferRequestRecord,
    TransferRequests,
)

__all__ = ["ALERTS_KEY", "ALERT_ROUTES", "REQUESTS_KEY", "REQUEST_ROUTES"]

ALERTS_KEY: Final = web.AppKey("alerts", Alerts)
REQUESTS_KEY: Final = web.AppKey("transfer_requests", TransferRequests)


def _bad_query(name: str, allowed: tuple[str, ...]) -> RequestValidationFailed:
    message = f"must be one of: {', '.join(allowed)}"
    return RequestValidationFailed(
        f"query.{name} {message}",
        [{"location": f"query.{name}", "message": message, "type": "enum"}],
    )


# ----------------------------------------------------------------- alerts


async def list_alerts(call: Call) -> web.StreamResponse:
    which = call.query.get("state", "open")
    if which not in ("open", "all"):
        raise _bad_query("state", ("open", "all"))
    alerts = call.request.app[ALERTS_KEY]
    return _json(await alerts.list(call.who.actor, open_only=which == "open"))


async def dismiss_alert(call: Call) -> web.StreamResponse:
    alerts = call.request.app[ALERTS_KEY]
    return _json(await alerts.dismiss(call.who.actor, call.path("alert_id")))


# ------------------------------------------------------- transfer requests


def _requests(call: Call) -> TransferRequests:
    return call.request.app[REQUESTS_KEY]


async def _sent(call: Call, record: TransferRequestRecord) -> TransferRequestRecord:
    """Try to send what the record owes the other node now; the record as it is after."""
    if record.outbound is None:
        return record
    service = _requests(call)
    await service.send_one(record.request_id, record.org_id)
    return await service.get(call.who.actor, record.request_id)


async def list_requests(call: Call) -> web.StreamResponse:
    side = call.query.get("side")
    sides: tuple[str, ...] = get_args(Side)
    if side is not None and side not in sides:
        raise _bad_query("side", sides)
    return _json(
        await _requests(call).list(
            call.who.actor,
            side=side,  # type: ignore[arg-type]
            open_only=call.query.get("state") == "open",
        )
    )


async def create_request(call: Call) -> web.StreamResponse:
    data = call.body_as(NewTransferRequest)
    record = await _requests(call).create(
        call.who.actor, upn=data.upn, from_org_id=data.from_org_id, note=data.note, via="api"
    )
    return _json(await _sent(call, record), 201)


async def get_request(call: Call) -> web.StreamResponse:
    return _json(await _requests(call).get(call.who.actor, call.path("request_id")))


async def authorise_request(call: Call) -> web.StreamResponse:
    data = call.body_as(AuthoriseRequest)
    record = await _requests(call).authorise(
        call.who.actor, call.path("request_id"), pupil_id=data.pupil_id, via="api"
    )
    return _json(await _sent(call, record))


async def decline_request(call: Call) -> web.StreamResponse:
    data = call.body_as(DeclineRequest)
    record = await _requests(call).decline(
        call.who.actor, call.path("request_id"), data.reason, via="api"
    )
    return _json(await _sent(call, record))


ALERT_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        f"{API}/alerts",
        list_alerts,
        "The DSL team's alerts (open ones by default)",
        "alerts",
        SIGNED_IN,
        response=AlertRecord,
        many=True,
        query=(QueryParam("state", "open (default) or all", choices=("open", "all")),),
    ),
    Route(
        "POST",
        f"{API}/alerts/{{alert_id}}/dismiss",
        dismiss_alert,
        "Close an alert by hand (its reminder stops for good)",
        "alerts",
        SIGNED_IN,
        body=NoBody,
        response=AlertRecord,
    ),
)

REQUEST_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        f"{API}/transfer-requests",
        list_requests,
        "Transfer requests sent and received, newest first",
        "transfer-requests",
        SIGNED_IN,
        response=TransferRequestRecord,
        many=True,
        query=(
            QueryParam("side", "sent or received", choices=get_args(Side)),
            QueryParam(
                "state",
                "open: only those still waiting for an answer; all: every one (the default)",
                choices=("open", "all"),
            ),
        ),
    ),
    Route(
        "POST",
        f"{API}/transfer-requests",
        create_request,
        "Ask a pupil's previous school for their child-protection file",
        "transfer-requests",
        SIGNED_IN,
        body=NewTransferRequest,
        response=TransferRequestRecord,
        status=201,
    ),
    Route(
        "GET",
        f"{API}/transfer-requests/{{request_id}}",
        get_request,
        "One transfer request",
        "transfer-requests",
        SIGNED_IN,
        response=TransferRequestRecord,
    ),
    Route(
        "POST",
        f"{API}/transfer-requests/{{request_id}}/authorise",
        authorise_request,
        "Authorise a received request: queue the leaver's file and tell the requester",
        "transfer-requests",
        SIGNED_IN,
        body=AuthoriseRequest,
        response=TransferRequestRecord,
    ),
    Route(
        "POST",
        f"{API}/transfer-requests/{{request_id}}/decline",
        decline_request,
        "Decline a received request with a reason the requester reads",
        "transfer-requests",
        SIGNED_IN,
        body=DeclineRequest,
        response=TransferRequestRecord,
    ),
)
