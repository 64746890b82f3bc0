"""What the referral pages share (:mod:`transfer.web.referrals` and the pages of each
step): the node's services as the request finds them, the referral of the path, its state
and deadline in words, and the offline bundles in the exports folder.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Final

from aiohttp import web

from receivers.portal.service import PickupPortal
from schemas.referrals import ReferralRecord, ReferralSummary
from transfer.errors import NotFoundError
from transfer.exchange.outbox import Outbox
from transfer.referrals.service import Referrals
from transfer.web.core import Visit, webapp
from transfer.web.pupils import UUID
from transfer.web.rendering import ENGLAND, long_date

#: The referral's state in words, and its tag's colour.
STATES: Final = {
    "draft": ("Draft", "govuk-tag--grey"),
    "sent": ("Sent", "govuk-tag--blue"),
    "delivered": ("Picked up", "govuk-tag--turquoise"),
    "accepted": ("Acknowledged", "govuk-tag--green"),
    "rejected": ("Declined", "govuk-tag--red"),
    "closed": ("Outcome recorded", "govuk-tag--purple"),
}
ROUTES_IN_WORDS: Final = {
    "node": "To the agency's Handover node",
    "portal": "Pickup link, with a passcode you read out by telephone",
    "offline": "Offline bundle to download and hand over",
}
#: A referral's path (its page; its steps' pages below it).
REFERRAL: Final = f"/referrals/{{referral_id:{UUID}}}"


def referrals_of(request: web.Request) -> Referrals:
    from transfer.api.routes_referrals import REFERRALS_KEY

    found = request.config_dict.get(REFERRALS_KEY)
    if found is None:
        raise NotFoundError("referrals are not set up on this node")
    return found


def portal_of(request: web.Request) -> PickupPortal | None:
    from transfer.api.routes_portal import PORTAL_KEY

    return request.config_dict.get(PORTAL_KEY)


def outbox_of(request: web.Request) -> Outbox | None:
    from transfer.api.routes_outbox import OUTBOX_KEY

    return request.config_dict.get(OUTBOX_KEY)


def exports_of(request: web.Request) -> Path:
    from transfer.api.routing import EXPORTS_KEY

    return Path(request.config_dict[EXPORTS_KEY]) / "referrals"


def today_of(request: web.Request) -> date:
    return webapp(request).accounts.now().astimezone(ENGLAND).date()


def deadline(summary_: ReferralSummary, today: date) -> dict[str, str] | None:
    """The LADO one-working-day deadline in words, with a tag when due or late."""
    if summary_.due_on is None:
        return None
    due = long_date(summary_.due_on)
    if summary_.state != "draft":
        return {
            "text": f"Was due by the end of {summary_.due_on:%A} {due}",
            "tag": "",
            "tag_class": "",
        }
    if summary_.due_on < today:
        return {
            "text": f"Overdue: it had to be sent by the end of {summary_.due_on:%A} {due}",
            "tag": "Overdue",
            "tag_class": "govuk-tag--red",
        }
    if summary_.due_on == today:
        return {
            "text": f"Send it today: due by the end of {summary_.due_on:%A} {due}",
            "tag": "Due today",
            "tag_class": "govuk-tag--orange",
        }
    return {
        "text": f"Due by the end of {summary_.due_on:%A} {due} (one working day from "
        "when the school learnt of the allegation)",
        "tag": "Due soon",
        "tag_class": "govuk-tag--yellow",
    }


async def find_referral(request: web.Request, visit: Visit) -> tuple[Referrals, ReferralRecord]:
    referrals = referrals_of(request)
    record = await referrals.get(visit.actor, request.match_info["referral_id"])
    return referrals, record


def bundles_of(folder: Path, referral_id: str) -> list[Path]:
    """The referral's zipped bundles in the exports folder, oldest first."""
    found = folder.glob(f"referral-*-{referral_id[:8]}*.zip")
    return sorted(found, key=lambda p: p.stat().st_mtime)
