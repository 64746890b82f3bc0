"""The outbox in the browser (``/outbox``): each package's state in words, its times and
history, the retry schedule, cancel and resend, and its signed receipts with the receiving
school's public key to download, and the ``minisign`` line that checks them.

Split from :mod:`transfer.web.sending` (marking a pupil as leaving and sending the file),
which shows the latest file's state on the pupil page with :data:`STATE_TAGS`. The services
decide who may: :meth:`Outbox.list`, :meth:`Outbox.get`, :meth:`Outbox.cancel` and
:meth:`Outbox.resend`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

from aiohttp import web

from keys import minisign
from transfer.errors import HandoverError, InputError, NotFoundError
from transfer.receipts import SignedReceipt
from transfer.web.core import Visit, WebApp, WebRoute, webapp
from transfer.web.pupils import UUID
from transfer.web.rendering import date_and_time, plural, redirect

if TYPE_CHECKING:
    from transfer.exchange.outbox import Outbox, OutgoingRecord

#: Files on one page of the outbox (newest first).
OUTBOX_PAGE: Final = 25
NEEDED_WORDS: Final = {
    "repeat": "sent to this school before",
    "not_destination": "not the pupil's recorded next school",
}
STATE_TAGS: Final = {
    "draft": ("Being prepared", "govuk-tag--grey"),
    "queued": ("Queued", "govuk-tag--blue"),
    "sending": ("Sending", "govuk-tag--light-blue"),
    "delivered": ("Delivered", "govuk-tag--turquoise"),
    "viewed": ("Opened", "govuk-tag--purple"),
    "accepted": ("Accepted", "govuk-tag--green"),
    "rejected": ("Rejected", "govuk-tag--red"),
    "failed": ("Failed", "govuk-tag--red"),
    "cancelled": ("Cancelled", "govuk-tag--grey"),
}
EVENT_WORDS: Final = {
    "draft": "Being prepared",
    "queued": "Sealed and queued",
    "retry": "A try failed; it will try again",
    "sent": "Sent",
    "receipt.delivered": "Delivered (signed receipt checked)",
    "receipt.viewed": "Opened by the receiving school",
    "receipt.accepted": "Accepted by the receiving school",
    "receipt.rejected": "Rejected by the receiving school",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "resent": "Queued again",
}
DONE: Final = {
    "sent": "The file has been sealed and queued. It goes to the school within a minute "
    "or so; this page shows when it is delivered.",
    "cancelled": "The file has been cancelled. Nothing was delivered; its copy here is deleted.",
    "resent": "The file has been queued again. It is the same file, sent again.",
}


def outbox_of(app: WebApp) -> Outbox:
    """The node's outbox, or the not-found page where sending files is not set up."""
    if app.services.outbox is None:
        raise NotFoundError("sending files is not set up on this node")
    return app.services.outbox


def _when(value: datetime | None) -> str:
    return date_and_time(value) if value else ""


def state_words(r: OutgoingRecord, sending: bool, give_up_hours: int) -> tuple[str, list[str]]:
    """The package's state as a tag, and what it means, in sentences."""
    to = r.to_name
    last = r.receipts[-1] if r.receipts else None
    who = ""
    if last is not None and last.acted_by:
        name, role = last.acted_by.get("name", ""), last.acted_by.get("role", "")
        who = f" by {name} ({role.replace('_', ' ').replace('dsl', 'DSL')})" if name else ""
    lines: list[str] = []
    if r.state == "queued":
        state = "sending" if sending else "queued"
        if sending:
            lines.append(f"Being sent to {to} now.")
        else:
            lines.append(f"Waiting to be delivered to {to}.")
        if r.attempts:
            tried = plural(r.attempts, "time")
            why = r.last_error or "no answer"
            lines.append(f"Tried {tried} so far; the last try failed: {why}.")
        if r.next_attempt_at and not sending:
            lines.append(f"Next try: {_when(r.next_attempt_at)}.")
        if r.queued_at:
            ends = r.queued_at + timedelta(hours=give_up_hours)
            lines.append(
                f"It keeps trying, less often each time, until {_when(ends)}; then it "
                "is marked as failed and you can send it again."
            )
        return state, lines
    if r.state == "delivered":
        lines.append(
            f"Delivered to {to} on {_when(r.state_changed_at)}: the school's signed "
            "receipt was checked. Their DSL has not opened it yet."
        )
    elif r.state == "viewed":
        lines.append(f"Opened at {to}{who} on {_when(r.state_changed_at)}; not accepted yet.")
    elif r.state == "accepted":
        lines.append(f"Accepted by {to}{who} on {_when(r.state_changed_at)}. Nothing more to do.")
    elif r.state == "rejected":
        reason = last.reason if last is not None and last.reason else "no reason given"
        lines.append(
            f"Rejected by {to}{who} on {_when(r.state_changed_at)}. Their reason: {reason}"
        )
    elif r.state == "failed":
        lines.append(f"Not delivered to {to}: {r.failure_reason or r.last_error or 'unknown'}")
        lines.append("Send it again, or cancel it.")
    elif r.state == "cancelled":
        lines.append(f"Cancelled on {_when(r.state_changed_at)}; nothing was delivered.")
    else:
        lines.append("Being prepared.")
    return r.state, lines


async def outbox_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    outbox = outbox_of(app)
    pupil_ref_q = request.query.get("pupil", "")[:64] or None
    try:
        records = await outbox.list(visit.actor, pupil_id=pupil_ref_q)
    except InputError:
        records = []
    try:
        page = max(1, int(request.query.get("page", "1")))
    except ValueError:
        page = 1
    pages = max(1, -(-len(records) // OUTBOX_PAGE))
    page = min(page, pages)
    total = len(records)
    records = records[(page - 1) * OUTBOX_PAGE : page * OUTBOX_PAGE]
    query = f"pupil={quote(pupil_ref_q)}&" if pupil_ref_q else ""
    sending = await outbox.sending_now([r.id for r in records if r.state == "queued"])
    pupil_ids = {p for r in records for p in r.pupil_ids}
    names = await app.store.pupil_names(visit.actor, pupil_ids)
    people = {
        p.id: f"{p.name} ({_role(p.role)})" if p.role else p.name
        for p in await app.store.people_named(visit.actor, (r.created_by for r in records))
    }
    give_up = app.services.config.transfer.give_up_hours
    items = []
    for r in records:
        state, lines = state_words(r, r.id in sending, give_up)
        items.append(
            {
                "record": r,
                "label": _label(r.kind),
                "tag": STATE_TAGS.get(state, (state, "")),
                "lines": lines,
                "pupils": [names.get(p, "a pupil no longer here") for p in r.pupil_ids],
                "sent_by": people.get(r.created_by or "", "someone no longer known here"),
                "needed": ", ".join(NEEDED_WORDS.get(c, c) for c in r.reasons_needed),
                "events": [(e.at, EVENT_WORDS.get(e.event, e.event), e.detail) for e in r.events],
                "receipts": [
                    {
                        "kind": k.kind,
                        "issued_at": k.issued_at,
                        "file": _receipt_file(r, k.kind),
                        "href": f"/outbox/{r.id}/receipts/{k.receipt_id}",
                    }
                    for k in r.receipts
                ],
                "may_cancel": r.state in ("queued", "failed") and r.id not in sending,
                "may_resend": r.state == "failed",
            }
        )
    return app.page(
        request,
        "outbox.html",
        visit,
        title="Outbox",
        items=items,
        total=total,
        page=page,
        pages=pages,
        done=DONE.get(request.query.get("done", "")),
        key_file=_key_file,
        previous_href=f"/outbox?{query}page={page - 1}" if page > 1 else "",
        next_href=f"/outbox?{query}page={page + 1}" if page < pages else "",
        only_pupil=names.get(pupil_ids.pop(), "") if pupil_ref_q and len(pupil_ids) == 1 else "",
    )


def _role(role: str | None) -> str | None:
    from transfer.store.people import role_label

    return role_label(role)


def _label(kind: str) -> str:
    from transfer.exchange.outbox.records import _LABELS

    return _LABELS.get(kind, "Package")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")[:60] or "receiver"


def _receipt_file(r: OutgoingRecord, kind: str) -> str:
    return f"receipt-{kind}-{r.id[:8]}.json"


def _key_file(r: OutgoingRecord) -> str:
    return f"{_slug(r.to_name)}.pub"


async def cancel(request: web.Request, visit: Visit) -> web.StreamResponse:
    record = await outbox_of(webapp(request)).cancel(
        visit.actor, request.match_info["package_id"], via="web"
    )
    return redirect(f"/outbox?done=cancelled#package-{record.id}")


async def resend(request: web.Request, visit: Visit) -> web.StreamResponse:
    record = await outbox_of(webapp(request)).resend(
        visit.actor, request.match_info["package_id"], via="web"
    )
    return redirect(f"/outbox?done=resent#package-{record.id}")


def _download(body: bytes, filename: str, media_type: str) -> web.Response:
    return web.Response(
        body=body,
        headers={
            "Content-Type": media_type,
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


async def receipt_file(request: web.Request, visit: Visit) -> web.StreamResponse:
    """A held receipt's signed bytes (``.json``) or its minisign signature (``.minisig``),
    exactly as the receiving school signed them (``docs/receipts.md`` §6)."""
    record = await outbox_of(webapp(request)).get(visit.actor, request.match_info["package_id"])
    wanted, part = request.match_info["receipt_id"].lower(), request.match_info["part"]
    held = next((k for k in record.receipts if k.receipt_id.lower() == wanted), None)
    if held is None:
        raise NotFoundError("no such receipt for this package")
    signed = SignedReceipt.from_dict({"receipt": held.body, "signature": held.signature})
    name = _receipt_file(record, held.kind)
    if part == "json.minisig":
        return _download(signed.signature_text.encode(), name + ".minisig", "text/plain")
    return _download(signed.body_bytes, name, "application/json")


async def receiver_key(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The receiving school's minisign public key(s) from the signed directory, to check
    its receipts with ``minisign -Vm receipt.json -p school.pub``."""
    app = webapp(request)
    record = await outbox_of(app).get(visit.actor, request.match_info["package_id"])
    if app.services.directory is None:
        raise NotFoundError("this node has no directory")
    try:
        entry = await app.services.directory.entry(record.to_org_id)
    except HandoverError:
        raise NotFoundError("the receiving organisation is no longer in the directory") from None
    # The key that signed the latest receipt: the current one, or one it replaced.
    used = record.receipts[-1].body.get("receiver_key_id") if record.receipts else None
    key = next((k.signing_key for k in entry.previous_keys if k.key_id == used), entry.signing_key)
    pub = minisign.PublicKey.from_base64(key).to_text(f"{_slug(entry.name)} signing key")
    return _download(pub.encode(), _key_file(record), "text/plain")


ROUTES: Final = (
    WebRoute("GET", "/outbox", outbox_page, "Outbox.list", name="outbox"),
    WebRoute("POST", f"/outbox/{{package_id:{UUID}}}/cancel", cancel, "Outbox.cancel"),
    WebRoute("POST", f"/outbox/{{package_id:{UUID}}}/resend", resend, "Outbox.resend"),
    WebRoute(
        "GET",
        f"/outbox/{{package_id:{UUID}}}/receipts/{{receipt_id:{UUID}}}.{{part:json|json.minisig}}",
        receipt_file,
        "Outbox.get",
        name="receipt",
    ),
    WebRoute(
        "GET",
        f"/outbox/{{package_id:{UUID}}}/receiver.pub",
        receiver_key,
        "Outbox.get",
        name="receiver-key",
    ),
)
