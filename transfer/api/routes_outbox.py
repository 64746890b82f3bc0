"""The outbox in the JSON API: the DSL sends a leaver's file and follows what became of it.

The routes follow :mod:`transfer.api.routes` (the same :class:`Route` table,
authentication and problem documents); the outbox checks the permission
(``transfer.send`` for leavers' files, ``referral.send`` for referrals) and
the organisation itself. See ``docs/delivery.md``.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from schemas.api import SendLeaverFile
from transfer.api.routing import API, SIGNED_IN, Call, QueryParam, Route, _json
from transfer.exchange.outbox import STATES, Outbox, OutgoingRecord

__all__ = ["OUTBOX_KEY", "OUTBOX_ROUTES", "SendLeaverFile"]

OUTBOX_KEY: Final = web.AppKey("outbox", Outbox)


def _outbox(call: Call) -> Outbox:
    return call.request.app[OUTBOX_KEY]


async def list_outgoing(call: Call) -> web.StreamResponse:
    records = await _outbox(call).list(
        call.who.actor, state=call.query.get("state"), pupil_id=call.query.get("pupil_id")
    )
    return _json(records)


async def send_leaver_file(call: Call) -> web.StreamResponse:
    data = call.body_as(SendLeaverFile)
    record = await _outbox(call).queue_leaver_file(
        call.who.actor, data.pupil_id, data.to_org_id, via="api", reason=data.reason
    )
    return _json(record, 201)


async def show_outgoing(call: Call) -> web.StreamResponse:
    return _json(await _outbox(call).get(call.who.actor, call.path("package_id")))


async def cancel_outgoing(call: Call) -> web.StreamResponse:
    return _json(await _outbox(call).cancel(call.who.actor, call.path("package_id"), via="api"))


async def resend_outgoing(call: Call) -> web.StreamResponse:
    return _json(await _outbox(call).resend(call.who.actor, call.path("package_id"), via="api"))


_STATE = QueryParam("state", "only packages in this state", choices=STATES)
_PUPIL = QueryParam("pupil_id", "only packages about this pupil (its UPN, or its id)", kind="pupil")

OUTBOX_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        f"{API}/outbox",
        list_outgoing,
        "Packages the organisation sends, newest first, with states, events and receipts",
        "outbox",
        SIGNED_IN,
        response=OutgoingRecord,
        many=True,
        query=(_STATE, _PUPIL),
    ),
    Route(
        "POST",
        f"{API}/outbox/leaver-files",
        send_leaver_file,
        "Seal a pupil's leaver's file for another organisation and queue it for delivery",
        "outbox",
        SIGNED_IN,
        body=SendLeaverFile,
        response=OutgoingRecord,
        status=201,
    ),
    Route(
        "GET",
        f"{API}/outbox/{{package_id}}",
        show_outgoing,
        "One outgoing package: its state, every change and the verified receipts",
        "outbox",
        SIGNED_IN,
        response=OutgoingRecord,
    ),
    Route(
        "POST",
        f"{API}/outbox/{{package_id}}/cancel",
        cancel_outgoing,
        "Cancel a package not yet delivered (its file is deleted)",
        "outbox",
        SIGNED_IN,
        response=OutgoingRecord,
    ),
    Route(
        "POST",
        f"{API}/outbox/{{package_id}}/resend",
        resend_outgoing,
        "Queue a failed package again (same package, same bytes)",
        "outbox",
        SIGNED_IN,
        response=OutgoingRecord,
    ),
)
