"""Reports: the governors' report for a term or a school year (charts beside their
tables, the DSL team's exact view and the governors' version), its PDF and CSV, and a
pupil's chronology as PDF for a conference or a court.

The reports service (:mod:`transfer.reports.service`) decides who may see what: the
DSL team and the head teacher read reports; only the DSL team sees exact figures; a PDF
or CSV is always the governors' version, with counts under 5 suppressed. Charts are SVG
drawn on the server from a plain template: ``role="img"`` with a title and a
description, every bar labelled with its figure (nothing told by colour alone), and the
same figures in the table beside it.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from schemas.records import ChronologyLine
from transfer.errors import InputError
from transfer.printing import PrintedBy
from transfer.reports.figures import (
    PresentedReport,
    Section,
    current_period,
    present,
    report_csv,
)
from transfer.reports.printing import chronology_pdf, report_pdf
from transfer.reports.service import Reports
from transfer.web.core import ROLE_NAMES, FormErrors, Visit, WebRoute, webapp
from transfer.web.words import not_found_for_bad_ids

#: A period's key in a web address (``autumn-2026``, ``year-2026``).
PERIOD: Final = "[a-z0-9-]{1,40}"

# The charts' geometry, in the SVG's own units (it scales to the column's width).
_WIDTH: Final = 460
_LABEL_ROW: Final = 20
_BAR: Final = 18
_ROW: Final = 50
_BAR_MAX: Final = 340


@dataclass(frozen=True)
class Bar:
    label: str
    shown: str
    y_label: int
    y_bar: int
    length: int
    #: Where the figure is written: after the bar (or at the start when there is none).
    x_value: int
    suppressed: bool


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    description: str
    height: int
    bars: tuple[Bar, ...]


def chart(section: Section) -> Chart:
    """A horizontal bar chart of a section's counts: each bar with its label above it and
    its figure at its end; a suppressed count has no bar, only its words."""
    drawn = [c for c in section.cells if not c.suppressed and c.value is not None]
    top = max((c.value or 0 for c in drawn), default=0) or 1
    bars = []
    for i, c in enumerate(section.cells):
        y = i * _ROW
        length = 0 if c.suppressed or not c.value else max(2, round(_BAR_MAX * c.value / top))
        bars.append(
            Bar(
                c.label,
                c.shown,
                y + 15,
                y + _LABEL_ROW + 4,
                length,
                length + 8 if length else 0,
                c.suppressed,
            )
        )
    parts = "; ".join(f"{c.label}: {c.shown}" for c in section.cells)
    return Chart(
        id=f"chart-{section.key}",
        title=section.title,
        description=f"Bar chart. {parts}." if parts else "Bar chart with no figures.",
        height=max(_ROW, len(bars) * _ROW),
        bars=tuple(bars),
    )


def _reports(request: web.Request) -> Reports:
    app = webapp(request)
    return Reports(app.store, app.services.config.transfer)


def _version(request: web.Request, visit: Visit) -> bool:
    """Whether to show exact figures: the DSL team's own view unless they ask for the
    governors' version; everyone else sees the governors' version."""
    if not visit.in_dsl_team:
        return False
    return request.query.get("version", "dsl") != "governors"


async def reports_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    reports = _reports(request)
    choices = await reports.periods(visit.actor)
    key = request.query.get("period", "")[:40]
    # The form starts on the current term (or the last one), the report on asking.
    now_term = current_period(reports.calendar(visit.actor.org_id), app.store.now().date())
    context: dict[str, Any] = {
        "periods": choices,
        "chosen": key or (now_term.key if now_term else ""),
    }
    errors = FormErrors()
    if "period" in request.query and key not in {p.key for p in choices}:
        errors.add("period", "Choose a term or school year from the list")
        key = ""
    if key:
        exact = _version(request, visit)
        figures = await reports.governors_report(visit.actor, key, exact=exact)
        report = present(figures, exact=exact)
        context.update(
            report=report,
            exact=exact,
            may_exact=visit.in_dsl_team,
            charts={s.key: chart(s) for s in report.sections if s.chart},
            pdf_href=f"/reports/{key}/governors.pdf",
            csv_href=f"/reports/{key}/governors.csv",
        )
        title = f"Safeguarding report: {figures.period.label}"
    else:
        title = "Safeguarding reports"
    return app.page(
        request,
        "reports.html",
        visit,
        title=title,
        width=_WIDTH,
        errors=errors,
        status=400 if errors else 200,
        **context,
    )


def printed_by(visit: Visit, at: Any) -> PrintedBy:
    actor = visit.actor
    role = next((ROLE_NAMES[r] for r in ROLE_NAMES if r in visit.roles), "")
    name = actor.display_name or "a member of staff"
    return PrintedBy(visit.org_name, f"{name} ({role})" if role else name, at)


def _download(body: bytes, media_type: str, filename: str) -> web.Response:
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


async def _governors(request: web.Request, visit: Visit, copy: str) -> tuple[str, PresentedReport]:
    key = request.match_info["period"]
    figures = await _reports(request).governors_report(visit.actor, key, copy=copy)
    return key, present(figures, exact=False)


async def report_pdf_download(request: web.Request, visit: Visit) -> web.StreamResponse:
    key, report = await _governors(request, visit, "pdf")
    # Drawn in a worker thread: laying out text is CPU work, and the pages of everyone else
    # keep being answered meanwhile.
    body = await asyncio.to_thread(
        report_pdf, report, printed_by(visit, webapp(request).store.now())
    )
    return _download(body, "application/pdf", f"governors-report-{key}.pdf")


async def report_csv_download(request: web.Request, visit: Visit) -> web.StreamResponse:
    key, report = await _governors(request, visit, "csv")
    return _download(report_csv(report), "text/csv; charset=utf-8", f"governors-report-{key}.csv")


async def chronology_pdf_download(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    reports = _reports(request)
    try:
        pupil, lines = await reports.chronology_for_print(visit.actor, request.match_info["ref"])
    except InputError as err:
        raise not_found_for_bad_ids(err) from None
    labels = {c.key: c.label for c in await app.store.list_categories(visit.actor)}
    owners = await reports.names(visit.actor, [_owner(e) for e in lines])
    # A 1,000-entry chronology takes seconds to lay out (docs/benchmarks.md): in a thread.
    body = await asyncio.to_thread(
        functools.partial(
            chronology_pdf,
            pupil,
            lines,
            printed_by(visit, app.store.now()),
            labels=labels,
            owners=owners,
        )
    )
    ref = pupil.upn or "pupil"
    return _download(body, "application/pdf", f"chronology-{ref}.pdf")


def _owner(line: ChronologyLine) -> str | None:
    return getattr(line.record, "assignee_id", None) if line.kind == "action" else None


ROUTES: Final = (
    WebRoute(
        "GET", "/reports", reports_page, "Reports.periods, Reports.governors_report", name="reports"
    ),
    WebRoute(
        "GET",
        f"/reports/{{period:{PERIOD}}}/governors.pdf",
        report_pdf_download,
        "Reports.governors_report",
        name="report-pdf",
    ),
    WebRoute(
        "GET",
        f"/reports/{{period:{PERIOD}}}/governors.csv",
        report_csv_download,
        "Reports.governors_report",
        name="report-csv",
    ),
    WebRoute(
        "GET",
        "/pupils/{ref}/chronology.pdf",
        chronology_pdf_download,
        "Reports.chronology_for_print",
        name="chronology-pdf",
    ),
)
