"""The governors' report and a pupil's chronology as PDF, on the shared layout
(:mod:`transfer.printing`: the school's name, who printed it and when, "Page n of N").

Both are built in memory. The report is always the governors' version (small counts
suppressed): a PDF leaves the DSL team. The chronology is printed whole, every entry
with its full text, for a child-protection conference or a court.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from schemas.records import ChronologyLine, PupilRecord
from transfer.printing import PrintDocument, PrintedBy
from transfer.reports.figures import ENGLAND, PresentedReport
from transfer.reports.service import OUTCOMES

_SIDES = {"front": "front of the body", "back": "back of the body"}


def _day(value: date) -> str:
    return f"{value.day} {value:%B %Y}"


def _moment(value: datetime) -> str:
    local = value.astimezone(ENGLAND)
    return f"{_day(local.date())}, {local:%H:%M}"


def report_pdf(report: PresentedReport, printed_by: PrintedBy) -> bytes:
    """The governors' version of the report (refused for the exact figures)."""
    if report.exact:
        raise ValueError("exact figures never leave the DSL team: present them suppressed")
    p = report.period
    doc = PrintDocument(
        report.title,
        printed_by,
        subtitle=f"{report.organisation}: {p.label}, {_day(p.start)} to {_day(p.end)}",
    )
    for note in report.notes:
        doc.paragraph(note, small=True)
    for section in report.sections:
        doc.heading(section.title)
        if section.note:
            doc.paragraph(section.note, small=True)
        rows = [(c.label, c.shown) for c in section.cells]
        if section.total is not None and section.key != "summary":
            rows.append((section.total.label, section.total.shown))
        doc.table(("", section.column), rows, widths=(3, 1))
    return doc.finish()


def _entry(
    line: ChronologyLine, labels: Mapping[str, str], owners: Mapping[str, str]
) -> tuple[str, list[tuple[str, str]], str]:
    """An entry's title, its facts and its full text."""
    r: Any = line.record
    facts: list[tuple[str, str]] = []
    text = ""
    if line.kind == "concern":
        title = f"Concern: {labels.get(r.category, r.category)}"
        if r.location:
            facts.append(("Where", r.location))
        if r.people_involved:
            facts.append(("Who was involved", r.people_involved))
        facts.append(("State", r.status.replace("_", " ")))
        for mark in r.body_map:
            if mark.pupil_id == line.pupil_id:
                facts.append(
                    (
                        f"Body map, {_SIDES.get(mark.side, mark.side)}",
                        f"{mark.description} (at {round(100 * mark.x)}% across, "
                        f"{round(100 * mark.y)}% down)",
                    )
                )
        text = r.account
    elif line.kind == "triage":
        title = f"Triage decision: {OUTCOMES.get(r.decision, r.decision)}"
        text = r.reason
    elif line.kind == "action":
        title = "Action"
        facts.append(("Owner", owners.get(r.assignee_id or "", "Nobody named")))
        if r.due_on:
            facts.append(("Due", _day(r.due_on)))
        facts.append(("Done", _moment(r.done_at) if r.done_at else "Not yet"))
        text = r.text
    elif line.kind == "contact":
        title = f"Contact with {r.agency}"
        text = r.outcome
    elif line.kind == "document":
        title = f"Document: {r.filename}"
        facts.append(("Kept as", f"{r.media_type}, {r.size:,} bytes"))
    else:
        title = "Transfer or referral"
        text = r.summary
    if line.provenance is not None:
        facts.append(
            (
                "Received from",
                f"{line.provenance.source_org_name} on "
                f"{_day(line.provenance.received_at.astimezone(ENGLAND).date())}",
            )
        )
    return title, facts, text


def chronology_pdf(
    pupil: PupilRecord,
    lines: Sequence[ChronologyLine],
    printed_by: PrintedBy,
    *,
    labels: Mapping[str, str],
    owners: Mapping[str, str],
) -> bytes:
    """A pupil's whole chronology, oldest first, every entry in full."""
    name = f"{pupil.forename} {pupil.surname}"
    doc = PrintDocument(
        f"Chronology: {name}",
        printed_by,
        subtitle="Confidential: child protection. For a child-protection "
        "conference or a court; do not copy.",
    )
    details = [("Name", name)]
    if pupil.upn:
        details.append(("UPN", pupil.upn))
    if pupil.dob:
        details.append(("Date of birth", _day(pupil.dob)))
    if pupil.year_group:
        details.append(("Year group", pupil.year_group))
    details.append(("Entries", f"{len(lines):,}, oldest first"))
    doc.rows(details)
    for number, line in enumerate(lines, start=1):
        title, facts, text = _entry(line, labels, owners)
        who = line.recorded_by_name or "someone no longer known here"
        if line.recorded_by_role:
            who = f"{who} ({line.recorded_by_role})"
        doc.heading(f"{number}. {_moment(line.occurred_at)}: {title}")
        # Plain lines, not a table per entry: a 1,000-entry chronology stays quick to draw.
        doc.paragraph(
            "\n".join(f"{label}: {value}" for label, value in (("Recorded by", who), *facts)),
            small=True,
        )
        if text:
            doc.paragraph(text)
    return doc.finish()


__all__ = ["chronology_pdf", "report_pdf"]
