"""Subject access requests from a pupil's page (those who hold ``sar.export``: the DSL
and deputies): the export downloaded in the browser as a readable PDF, as JSON (the
records), or as the full archive with the documents.

A download needs a fresh authenticator code (step-up). The store reads, opens and audits
the export (``store.sar.export``, with how it was delivered) and hands it over as a
stream; the PDF and JSON are built in memory from the same records. Nothing is written
on the server, so there is nothing to seal or delete afterwards, and an erased pupil's
export holds only what erasure leaves (the pupil row and the record of the erasure).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from schemas.records import SubjectAccessExport
from transfer.errors import HandoverError
from transfer.printing import PrintDocument, PrintedBy
from transfer.store.people import role_label
from transfer.store.permissions import Permission, PermissionDenied
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.pupils import find_pupil, pupil_name, pupil_ref
from transfer.web.rendering import date_and_time, long_date
from transfer.web.stepup import check_code
from transfer.web.tokens import KeptForm
from transfer.web.words import DECISIONS, SIDES, category_label

log = logging.getLogger("transfer.web")

#: What can be downloaded: form value -> (words, hint).
FORMATS: Final = {
    "pdf": ("A readable PDF", "To read, print or give to the family after review."),
    "json": ("The records as JSON", "Every record as data, for your own tools."),
    "tar": (
        "Everything, with the documents (tar archive)",
        "The records as JSON and each document as it was uploaded.",
    ),
}


when = date_and_time
day = long_date


def subject_access_pdf(
    export: SubjectAccessExport, printed_by: PrintedBy, categories: Mapping[str, str]
) -> bytes:
    """The export as a PDF; ``categories`` are the concern categories' labels by key."""
    people = {
        p.id: (f"{p.name} ({role_label(p.role)})" if p.role else p.name) for p in export.people
    }

    def who(staff_id: str | None) -> str:
        if not staff_id:
            return "Handover (automatic)"
        return people.get(staff_id, "someone no longer known here")

    pupil = export.pupil
    name = f"{pupil.forename} {pupil.surname}".strip() or "an erased pupil"
    doc = PrintDocument(
        f"Subject access export: {name}",
        printed_by,
        subtitle=f"Everything {printed_by.organisation} holds about this pupil, as exported "
        f"on {when(export.exported_at)} by {who(export.exported_by)}. Review it before "
        "disclosure: other people's information may need to be withheld.",
    )
    doc.heading("The pupil")
    doc.rows(
        [
            ("Name", name),
            ("UPN", pupil.upn or "None recorded"),
            ("Date of birth", day(pupil.dob) if pupil.dob else "Not recorded"),
            ("Year group", f"Year {pupil.year_group}" if pupil.year_group else "Not recorded"),
            ("Leaving date", day(pupil.leaving_date) if pupil.leaving_date else "Not leaving"),
            ("Records erased", when(pupil.erased_at) if pupil.erased_at else "No"),
        ]
    )
    concern_names = {}
    doc.heading(f"Concerns ({len(export.concerns)})")
    if not export.concerns:
        doc.paragraph("None held.")
    for number, c in enumerate(export.concerns, start=1):
        label = category_label(c.category, dict(categories))
        concern_names[c.id] = f"concern {number} ({label})"
        doc.paragraph(f"Concern {number}: {label}", bold=True)
        rows = [
            ("When it happened", when(c.happened_at)),
            ("Logged", f"{when(c.recorded_at)} by {who(c.recorded_by)}"),
            ("Where", c.location or "Not recorded"),
            ("What happened", c.account),
            ("People involved", c.people_involved or "None recorded"),
            ("State", c.status.replace("_", " ").capitalize()),
        ]
        if c.provenance is not None:
            rows.append(("Received from", c.provenance.source_org_name))
        for mark in c.body_map:
            rows.append(("Body map", f"{SIDES.get(mark.side, mark.side)}: {mark.description}"))
        doc.rows(rows)

    def about(concern_id: str) -> str:
        return concern_names.get(concern_id, "a concern")

    doc.heading(f"Triage decisions ({len(export.triage)})")
    doc.table(
        ("When", "About", "Decision", "Why", "By"),
        [
            (
                when(t.decided_at),
                about(t.concern_id),
                DECISIONS.get(t.decision, t.decision),
                t.reason,
                who(t.decided_by),
            )
            for t in export.triage
        ],
    )
    if not export.triage:
        doc.paragraph("None held.")
    doc.heading(f"Actions ({len(export.actions)})")
    doc.table(
        ("Added", "About", "Action", "Owner", "Due", "Done"),
        [
            (
                when(a.created_at),
                about(a.concern_id),
                a.text,
                who(a.assignee_id) if a.assignee_id else "Nobody named",
                day(a.due_on) if a.due_on else "-",
                when(a.done_at) if a.done_at else "Not yet",
            )
            for a in export.actions
        ],
    )
    if not export.actions:
        doc.paragraph("None held.")
    doc.heading(f"Contacts with agencies ({len(export.contacts)})")
    doc.table(
        ("When", "About", "Agency", "Outcome", "Recorded by"),
        [
            (when(k.contacted_at), about(k.concern_id), k.agency, k.outcome, who(k.recorded_by))
            for k in export.contacts
        ],
    )
    if not export.contacts:
        doc.paragraph("None held.")
    doc.heading(f"Documents ({len(export.documents)})")
    doc.table(
        ("Added", "File", "Size", "Added by"),
        [
            (when(d.uploaded_at), d.filename, f"{d.size:,} bytes", who(d.uploaded_by))
            for d in export.documents
        ],
    )
    if export.documents:
        doc.paragraph(
            "The documents themselves are in the export archive (with documents).", small=True
        )
    else:
        doc.paragraph("None held.")
    doc.heading(f"Transfers and referrals ({len(export.events)})")
    doc.table(("When", "What"), [(when(e.occurred_at), e.summary) for e in export.events])
    if not export.events:
        doc.paragraph("None held.")
    if export.tombstones:
        doc.heading("Erasure")
        doc.table(
            ("Erased", "Policy", "By", "What was erased"),
            [
                (
                    when(t.erased_at),
                    t.policy,
                    who(t.erased_by),
                    ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(t.erased.items())),
                )
                for t in export.tombstones
            ],
        )
    if export.review:
        doc.heading("To review before disclosure")
        doc.paragraph(
            f"{len(export.review)} items may name other people (accounts of what happened, "
            "people involved, contacts' outcomes, documents, concerns about several pupils). "
            "Check each before this is given to anyone."
        )
    return doc.finish()


def _may(visit: Visit) -> None:
    if not visit.actor.has(Permission.EXPORT_SUBJECT_ACCESS):
        raise PermissionDenied("your role does not allow subject access exports; ask your DSL")


async def _form(
    request: web.Request, visit: Visit, *, chosen: str = "pdf", errors: FormErrors | None = None
) -> web.StreamResponse:
    app = webapp(request)
    _may(visit)
    pupil = await find_pupil(request, visit, request.match_info["ref"])
    errors = errors or FormErrors()
    return app.page(
        request,
        "subject_access.html",
        visit,
        title=f"Subject access export for {pupil_name(pupil)}",
        errors=errors,
        status=400 if errors else 200,
        pupil=pupil,
        ref=pupil_ref(pupil),
        formats=FORMATS,
        chosen=chosen,
        erased=pupil.erased_at is not None,
    )


async def show(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _form(request, visit)


async def kept(request: web.Request, visit: Visit, form: KeptForm) -> web.StreamResponse:
    return await _form(request, visit, chosen=form.value("format") or "pdf")


async def download(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    _may(visit)
    data = request[FORM_KEY]
    chosen = data.get("format", "")
    errors = FormErrors()
    if chosen not in FORMATS:
        errors.add("format", "Choose how to download the export")
        return await _form(request, visit, chosen="pdf", errors=errors)
    if not await check_code(app, visit, data.get("code", ""), errors):
        return await _form(request, visit, chosen=chosen, errors=errors)
    archive = await app.store.export_subject_access(
        visit.actor, request.match_info["ref"], delivered_as=chosen
    )
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if chosen == "json":
        body = archive.export.model_dump_json(indent=2).encode("utf-8")
        return web.Response(
            body=body,
            content_type="application/json",
            headers={
                **headers,
                "Content-Disposition": f'attachment; filename="{archive.name}.json"',
            },
        )
    if chosen == "pdf":
        labels = {c.key: c.label for c in await app.store.list_categories(visit.actor)}
        printed = PrintedBy(visit.org_name, _printer(visit), app.accounts.now())
        body = subject_access_pdf(archive.export, printed, labels)
        return web.Response(
            body=body,
            content_type="application/pdf",
            headers={
                **headers,
                "Content-Disposition": f'attachment; filename="{archive.name}.pdf"',
            },
        )
    response = web.StreamResponse(
        headers={
            **headers,
            "Content-Type": "application/x-tar",
            "Content-Disposition": f'attachment; filename="{archive.name}.tar"',
        }
    )
    await response.prepare(request)
    try:
        async for piece in archive.chunks:
            await response.write(piece)
    except HandoverError as err:
        # The headers are gone: cut the connection so the browser never keeps a whole file.
        log.error("a subject access export stopped while streaming: %s", err.diagnostics())
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


def _printer(visit: Visit) -> str:
    name = visit.actor.display_name or "a member of staff"
    roles = visit.role_names
    return f"{name} ({roles[0]})" if roles else name


ROUTES: Final = (
    WebRoute("GET", "/pupils/{ref}/subject-access", show, "Store.get_pupil", name="subject_access"),
    WebRoute(
        "POST",
        "/pupils/{ref}/subject-access",
        download,
        "Accounts.step_up, Store.export_subject_access",
        form=kept,
        name="subject_access_download",
    ),
)
