"""The inbox preview shows a received file as a DSL reads it: the chronology in time order,
dates in words, categories, who recorded each line, triage decisions, actions, documents by
name and size; and, once imported, the receiver's chronology says who sent each line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.exchange.inbox_support import DOCUMENT, Rig, receiving_node
from transfer.store.readable import date_in_words, size_in_words


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path) as r:
        yield r


async def test_the_preview_reads_as_a_dsl_reads_it(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    pid, _, _ = await rig.deliver(pupil)
    preview = await rig.inbox.show(rig.receiver_dsl, pid)
    readable = preview.readable
    assert readable is not None
    assert readable.about.startswith("Amara Okafor, born 3 November 2014, UPN ")

    # The sender's staff, named in the package (records/people.json), by name and role.
    school = rig.school
    assert {p.id: (p.name, p.role) for p in preview.people} == {
        school.staff.staff_id: ("Staff", "staff"),
        school.dsl.staff_id: ("Dsl", "dsl"),
    }
    lines = readable.lines
    assert [line.at for line in lines] == sorted(line.at for line in lines)
    concern, contact = lines[0], lines[1]
    # 1 June 2026 09:00 UTC is 10:00 in England (summer time).
    assert (concern.date, concern.time) == ("1 June 2026", "10:00")
    assert concern.heading == "Concern: Child protection"
    assert concern.text == "Said she is scared to go home."
    assert "Where: Playground" in concern.details
    assert "Body map, front: bruise" in concern.details
    assert concern.recorded_by == "Staff (Staff)"
    assert (contact.date, contact.time, contact.heading) == (
        "1 June 2026",
        "11:00",
        "Contact with Bristol MASH",
    )
    assert contact.recorded_by == "Dsl (DSL)"
    later = {line.kind: line for line in lines[2:]}
    assert set(later) == {"triage", "action", "document"}
    assert later["triage"].heading == "Triage decision: Refer to children's social care"
    assert later["triage"].text == "Disclosure" and later["triage"].recorded_by == "Dsl (DSL)"
    assert later["triage"].date == date_in_words(later["triage"].at)  # recorded today
    assert later["action"].text == "Call MASH" and "Not done yet" in later["action"].details
    assert later["document"].heading == "Document: Body map.pdf"
    assert later["document"].details == ("300 KiB, application/pdf",)
    (doc,) = readable.documents
    assert (doc.name, doc.size, doc.size_bytes) == ("Body map.pdf", "300 KiB", len(DOCUMENT))
    # The ids are still there for programs: the records themselves are unchanged.
    assert preview.chronology[0].record.model_dump()["recorded_by"] == school.staff.staff_id


async def test_a_package_without_people_says_who_in_general(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a node that does not send records/people.json: staff of the sending school."""
    import transfer.package.from_store as from_store
    from transfer.package.layout import EntrySource

    async def no_people(*_: object) -> EntrySource:
        return EntrySource.from_bytes("records/people.json", b"[]")

    pupil = await rig.make_pupil_file()
    monkeypatch.setattr(from_store, "people_entry", no_people)
    pid, _, _ = await rig.deliver(pupil)
    preview = await rig.inbox.show(rig.receiver_dsl, pid)
    assert preview.readable is not None
    assert {line.recorded_by for line in preview.readable.lines} == {
        "a member of staff at Harbourside Primary"
    }


async def test_imported_lines_say_where_they_came_from(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    pid, _, _ = await rig.deliver(pupil)
    outcome = await rig.inbox.accept(rig.receiver_dsl, pid)
    lines = await rig.store.chronology_lines(rig.receiver_dsl, outcome.pupil_id)
    said = {(line.kind, line.recorded_by_name, line.recorded_by_role) for line in lines}
    assert ("concern", "a member of staff at Harbourside Primary", None) in said
    # The note the receiving DSL's acceptance wrote is theirs, by name.
    assert ("event", "Rita Dee", "DSL") in said


def test_dates_and_sizes_in_words() -> None:
    from datetime import UTC, date, datetime

    assert date_in_words(date(2026, 12, 6)) == "6 December 2026"
    # Just after midnight in England on New Year's Day is still 31 December in UTC.
    assert date_in_words(datetime(2026, 12, 31, 23, 30, tzinfo=UTC)) == "31 December 2026"
    assert date_in_words(datetime(2026, 6, 30, 23, 30, tzinfo=UTC)) == "1 July 2026"
    assert [size_in_words(n) for n in (1, 512, 307200, 5 * 1024**2 + 1, 3 * 1024**3)] == [
        "1 byte",
        "512 bytes",
        "300 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]
