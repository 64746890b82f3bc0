"""Referrals in the JSON API: drafts, selection, redaction, preview, sealing and sending by
each route, taking back, and the lifecycle steps a DSL records (hand-over,
acknowledgement, outcome).

The routes follow :mod:`transfer.api.routes` (the same :class:`Route` table,
authentication and problem documents); :class:`transfer.referrals.service.Referrals`
checks the permissions (the DSL team) and the organisation itself. Sending
uses the parts the app was given: the outbox (``OUTBOX_KEY``) for an agency's
node, the pickup portal (``PORTAL_KEY``) for the portal, the exports folder
(``EXPORTS_KEY``) for offline bundles; a route whose part is absent answers 503.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from receivers.portal.records import PickupInfo
from receivers.sending import (
    RouteUnavailable,
    send_by_node,
    send_offline,
    send_via_portal,
    withdraw,
)
from schemas.api import (
    AcknowledgementBody,
    FormBody,
    HandoverBody,
    NewReferral,
    OutcomeBody,
    SelectionBody,
    SendReferral,
    WithdrawBody,
)
from schemas.records import ChronologyEntry
from schemas.referrals import (
    NewRedaction,
    ReferralRecord,
    ReferralState,
    ReferralSummary,
)
from transfer.api.routes_outbox import OUTBOX_KEY
from transfer.api.routes_portal import PORTAL_KEY
from transfer.api.routing import API, EXPORTS_KEY, SIGNED_IN, Call, QueryParam, Route, _json
from transfer.referrals.service import Referrals

__all__ = [
    "REFERRALS_KEY",
    "REFERRAL_ROUTES",
    "AcknowledgementBody",
    "FormBody",
    "HandoverBody",
    "NewReferral",
    "OutcomeBody",
    "SelectionBody",
    "SendReferral",
    "SentReferral",
    "WithdrawBody",
]

REFERRALS_KEY: Final = web.AppKey("referrals", Referrals)


class SentReferral(BaseModel):
    """What sending gave: the referral, now sent, and what the DSL is shown once."""

    model_config = ConfigDict(frozen=True)

    referral: ReferralRecord
    route: Literal["node", "portal", "offline"]
    package_id: str
    #: portal: the pickup, the passcode to read out by telephone (shown once, stored
    #: nowhere), and the link when it was not e-mailed to the agency.
    pickup: PickupInfo | None = None
    passcode: str | None = None
    link: str | None = None
    emailed: bool | None = None
    mail_problem: str | None = None
    #: offline: where the bundle was written on the node, its files, the school's key id,
    #: and the passphrase when one was asked for (shown once, stored nowhere).
    bundle_path: str | None = None
    bundle_files: tuple[str, ...] = ()
    sender_key_id: str | None = None
    passphrase: str | None = None


def _referrals(call: Call) -> Referrals:
    return call.request.app[REFERRALS_KEY]


async def list_referrals(call: Call) -> web.StreamResponse:
    return _json(
        await _referrals(call).list(
            call.who.actor, state=call.query.get("state"), pupil_id=call.query.get("pupil_id")
        )
    )


async def draft_referral(call: Call) -> web.StreamResponse:
    data = call.body_as(NewReferral)
    record = await _referrals(call).draft(
        call.who.actor,
        pupil_id=data.pupil_id,
        agency_org_id=data.agency_org_id,
        form=data.form,
        selection=data.selection,
        redactions=data.redactions,
    )
    return _json(record, 201)


async def discard_referral(call: Call) -> web.StreamResponse:
    return _json(await _referrals(call).discard(call.who.actor, call.path("referral_id")))


async def get_referral(call: Call) -> web.StreamResponse:
    return _json(await _referrals(call).get(call.who.actor, call.path("referral_id")))


async def change_referral_form(call: Call) -> web.StreamResponse:
    form = call.body_as(FormBody).form
    return _json(await _referrals(call).update_form(call.who.actor, call.path("referral_id"), form))


async def select_for_referral(call: Call) -> web.StreamResponse:
    items = call.body_as(SelectionBody).items
    return _json(await _referrals(call).select(call.who.actor, call.path("referral_id"), items))


async def mark_redaction(call: Call) -> web.StreamResponse:
    mark = call.body_as(NewRedaction)
    record = await _referrals(call).add_redaction(call.who.actor, call.path("referral_id"), mark)
    return _json(record, 201)


async def remove_redaction(call: Call) -> web.StreamResponse:
    return _json(
        await _referrals(call).remove_redaction(
            call.who.actor, call.path("referral_id"), call.path("mark_id")
        )
    )


async def preview_referral(call: Call) -> web.StreamResponse:
    return _json(await _referrals(call).preview(call.who.actor, call.path("referral_id")))


async def record_referral_handover(call: Call) -> web.StreamResponse:
    data = call.body_as(HandoverBody)
    return _json(
        await _referrals(call).record_handover(
            call.who.actor,
            call.path("referral_id"),
            to_whom=data.to_whom,
            how=data.how,
            at=data.at,
        )
    )


async def acknowledge_referral(call: Call) -> web.StreamResponse:
    data = call.body_as(AcknowledgementBody)
    return _json(
        await _referrals(call).acknowledge(
            call.who.actor,
            call.path("referral_id"),
            name=data.name,
            agency_reference=data.agency_reference,
            via="api",
        )
    )


async def send_referral(call: Call) -> web.StreamResponse:
    data = call.body_as(SendReferral)
    referrals, actor, rid = _referrals(call), call.who.actor, call.path("referral_id")
    app = call.request.app
    if data.route == "node":
        outbox = app.get(OUTBOX_KEY)
        if outbox is None:
            raise RouteUnavailable(
                "this node has no outbox configured: send the referral through the pickup "
                "portal or as an offline bundle"
            )
        record = await send_by_node(referrals, outbox, actor, rid, form_only=data.form_only)
        assert record.package_id is not None
        sent = SentReferral(referral=record, route="node", package_id=record.package_id)
    elif data.route == "portal":
        portal = app.get(PORTAL_KEY)
        if portal is None:
            raise RouteUnavailable(
                "this node has no pickup portal configured: send the referral to the agency's "
                "node or as an offline bundle"
            )
        done = await send_via_portal(
            referrals,
            portal,
            actor,
            rid,
            expires_in_days=data.expires_in_days,
            form_only=data.form_only,
        )
        issued = done.issued
        sent = SentReferral(
            referral=done.referral,
            route="portal",
            package_id=issued.pickup.package_id,
            pickup=issued.pickup,
            passcode=issued.passcode,
            link=issued.link,
            emailed=issued.emailed,
            mail_problem=issued.mail_problem,
        )
    else:
        bundle = await send_offline(
            referrals,
            actor,
            rid,
            app[EXPORTS_KEY] / "referrals",
            passphrase=data.passphrase,
            as_zip=data.zip,
            form_only=data.form_only,
        )
        sent = SentReferral(
            referral=await referrals.get(actor, rid),
            route="offline",
            package_id=bundle.package_id,
            bundle_path=str(bundle.path),
            bundle_files=bundle.files,
            sender_key_id=bundle.sender_key_id,
            passphrase=bundle.passphrase,
        )
    return _json(sent, 201)


async def withdraw_referral(call: Call) -> web.StreamResponse:
    reason = call.body_as(WithdrawBody).reason
    app = call.request.app
    record = await withdraw(
        _referrals(call),
        call.who.actor,
        call.path("referral_id"),
        reason=reason,
        portal=app.get(PORTAL_KEY),
        outbox=app.get(OUTBOX_KEY),
    )
    return _json(record)


async def record_referral_outcome(call: Call) -> web.StreamResponse:
    outcome = call.body_as(OutcomeBody).outcome
    return _json(
        await _referrals(call).record_outcome(call.who.actor, call.path("referral_id"), outcome)
    )


_ONE = f"{API}/referrals/{{referral_id}}"
_FILTERS = (
    QueryParam(
        "state", "only referrals in this state", max_length=20, choices=get_args(ReferralState)
    ),
    QueryParam("pupil_id", "only referrals about this pupil (its UPN, or its id)", kind="pupil"),
)

REFERRAL_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        f"{API}/referrals",
        list_referrals,
        "The organisation's referrals (no content)",
        "referrals",
        SIGNED_IN,
        response=ReferralSummary,
        many=True,
        query=_FILTERS,
    ),
    Route(
        "POST",
        f"{API}/referrals",
        draft_referral,
        "Draft a referral: form, and optionally the selection and redactions",
        "referrals",
        SIGNED_IN,
        body=NewReferral,
        response=ReferralRecord,
        status=201,
    ),
    Route(
        "GET",
        _ONE,
        get_referral,
        "One referral with its form and lifecycle",
        "referrals",
        SIGNED_IN,
        response=ReferralRecord,
    ),
    Route(
        "DELETE",
        _ONE,
        discard_referral,
        "Discard a draft (its form, selection and marks are deleted; the audit and the "
        "chronology keep that it was drafted and discarded)",
        "referrals",
        SIGNED_IN,
        response=ReferralSummary,
    ),
    Route(
        "PUT",
        f"{_ONE}/form",
        change_referral_form,
        "Replace a draft's form",
        "referrals",
        SIGNED_IN,
        body=FormBody,
        response=ReferralRecord,
    ),
    Route(
        "PUT",
        f"{_ONE}/selection",
        select_for_referral,
        "Choose exactly which chronology entries go",
        "referrals",
        SIGNED_IN,
        body=SelectionBody,
        response=ReferralRecord,
    ),
    Route(
        "POST",
        f"{_ONE}/redactions",
        mark_redaction,
        "Mark a third-party name (text or span) to hide in what is sealed",
        "referrals",
        SIGNED_IN,
        body=NewRedaction,
        response=ReferralRecord,
        status=201,
    ),
    Route(
        "DELETE",
        f"{_ONE}/redactions/{{mark_id}}",
        remove_redaction,
        "Remove a redaction mark",
        "referrals",
        SIGNED_IN,
        response=ReferralRecord,
    ),
    Route(
        "GET",
        f"{_ONE}/preview",
        preview_referral,
        "The selected entries exactly as they will be sealed (redacted)",
        "referrals",
        SIGNED_IN,
        response=ChronologyEntry,
        many=True,
    ),
    Route(
        "POST",
        f"{_ONE}/send",
        send_referral,
        "Seal the draft and send it: to the agency's node, through the pickup portal "
        "(passcode returned once) or as an offline bundle (passphrase returned once)",
        "referrals",
        SIGNED_IN,
        body=SendReferral,
        response=SentReferral,
        status=201,
    ),
    Route(
        "POST",
        f"{_ONE}/unsend",
        withdraw_referral,
        "Take back a sent referral that has not reached the agency (back to draft)",
        "referrals",
        SIGNED_IN,
        body=WithdrawBody,
        response=ReferralRecord,
    ),
    Route(
        "POST",
        f"{_ONE}/handover",
        record_referral_handover,
        "Record an offline bundle's hand-over (to whom, how, when)",
        "referrals",
        SIGNED_IN,
        body=HandoverBody,
        response=ReferralRecord,
    ),
    Route(
        "POST",
        f"{_ONE}/acknowledgement",
        acknowledge_referral,
        "Record the agency's acknowledgement and reference",
        "referrals",
        SIGNED_IN,
        body=AcknowledgementBody,
        response=ReferralRecord,
    ),
    Route(
        "POST",
        f"{_ONE}/outcome",
        record_referral_outcome,
        "Record the agency's outcome (MASH RAG and decision, LADO outcome, crime reference)",
        "referrals",
        SIGNED_IN,
        body=OutcomeBody,
        response=ReferralRecord,
    ),
)
