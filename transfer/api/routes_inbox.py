"""The inbox in the JSON API: the DSL team's list, preview, accept and reject.

The routes follow :mod:`transfer.api.routes` (the same :class:`Route` table,
authentication and problem documents); the inbox checks the permission
(``transfer.receive``, the DSL team) and the organisation itself. A referral
(received by an agency) is accepted with the agency's ``reference`` (required:
422 ``reference-required`` without it) and kept, not imported.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from schemas.api import AcceptBody, RejectBody
from transfer.api.routing import API, SIGNED_IN, Call, QueryParam, Route, _json
from transfer.exchange.inbox import Inbox, InboxAcceptance, InboxPreview, IncomingSummary

__all__ = ["INBOX_KEY", "INBOX_ROUTES", "AcceptBody", "RejectBody"]

INBOX_KEY: Final = web.AppKey("inbox", Inbox)


def _inbox(call: Call) -> Inbox:
    return call.request.app[INBOX_KEY]


async def list_inbox(call: Call) -> web.StreamResponse:
    return _json(await _inbox(call).list(call.who.actor, state=call.query.get("state")))


async def show_incoming(call: Call) -> web.StreamResponse:
    return _json(await _inbox(call).show(call.who.actor, call.path("package_id")))


async def accept_incoming(call: Call) -> web.StreamResponse:
    data = call.body_as(AcceptBody)
    outcome = await _inbox(call).accept_package(
        call.who.actor,
        call.path("package_id"),
        pupil_id=data.pupil_id,
        create_new=data.create_new,
        reference=data.reference,
    )
    return _json(outcome)


async def reject_incoming(call: Call) -> web.StreamResponse:
    data = call.body_as(RejectBody)
    return _json(await _inbox(call).reject(call.who.actor, call.path("package_id"), data.reason))


_STATE = QueryParam(
    "state", "only packages in this state", choices=("delivered", "viewed", "accepted", "rejected")
)

INBOX_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        f"{API}/inbox",
        list_inbox,
        "Packages delivered to the organisation",
        "inbox",
        SIGNED_IN,
        response=IncomingSummary,
        many=True,
        query=(_STATE,),
    ),
    Route(
        "GET",
        f"{API}/inbox/{{package_id}}",
        show_incoming,
        "Verify a package in full and preview it (the first view sends a viewed receipt)",
        "inbox",
        SIGNED_IN,
        response=InboxPreview,
    ),
    Route(
        "POST",
        f"{API}/inbox/{{package_id}}/accept",
        accept_incoming,
        "Verify again and import into the store, or keep a referral with the agency's "
        "reference (sends an accepted receipt)",
        "inbox",
        SIGNED_IN,
        body=AcceptBody,
        response=InboxAcceptance,
    ),
    Route(
        "POST",
        f"{API}/inbox/{{package_id}}/reject",
        reject_incoming,
        "Refuse the package with a reason (sends a rejected receipt)",
        "inbox",
        SIGNED_IN,
        body=RejectBody,
        response=IncomingSummary,
    ),
)
