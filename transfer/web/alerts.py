"""The alerts page: what the header's bell counts.

The DSL team sees every open alert of the school (new concerns, overdue actions, KCSIE
deadlines, transfer requests, referrals...) and may dismiss one; anyone else sees the
alerts that concern them (an overdue action they own). :class:`transfer.alerts.Alerts`
decides who sees what; the alerts are raised as soon as the data changes
(:mod:`transfer.alerts.rules`) and by the hourly sweeps.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from transfer.alerts import AlertRecord
from transfer.errors import NotFoundError
from transfer.web.core import Visit, WebRoute, webapp
from transfer.web.dashboard import ALERT_TAGS, readable
from transfer.web.rendering import redirect

_DONE: Final = {"dismissed": "The alert has been dismissed. It will not be raised again."}


def link_for(alert: AlertRecord) -> tuple[str, str] | None:
    """Where to go about the alert, in words: a request for a file, its page; otherwise
    the pupil's page when it names a pupil."""
    if alert.key.startswith("transfer-request:") and alert.ref:
        return f"/requests/{alert.ref}", "Open the request"
    if alert.pupil_id:
        return f"/pupils/{alert.pupil_id}", f"Open {alert.pupil_name or 'the pupil'}\u2019s record"
    if alert.key.startswith("inbox:"):
        return "/inbox", "Open the inbox"
    if alert.key.startswith("transfer-request:"):
        return "/requests", "See the requests for files"
    return None


async def alerts_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    if app.services.alerts is None:
        raise NotFoundError("alerts are not kept on this node")
    alerts = await app.services.alerts.list(visit.actor)
    rows = [
        {
            "alert": a,
            "message": readable(a.message),
            "link": link_for(a),
            "tag": ALERT_TAGS.get(a.level, ALERT_TAGS["info"]),
        }
        for a in alerts
    ]
    return app.page(
        request,
        "alerts.html",
        visit,
        title="Alerts",
        rows=rows,
        may_dismiss=visit.in_dsl_team,
        done=_DONE.get(request.query.get("done", "")),
    )


async def dismiss_alert(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    if app.services.alerts is None:
        raise NotFoundError("alerts are not kept on this node")
    await app.services.alerts.dismiss(visit.actor, request.match_info["alert_id"])
    return redirect("/alerts?done=dismissed")


ROUTES: Final = (
    WebRoute("GET", "/alerts", alerts_page, "Alerts.list", name="alerts"),
    WebRoute("POST", "/alerts/{alert_id}/dismiss", dismiss_alert, "Alerts.dismiss"),
)
