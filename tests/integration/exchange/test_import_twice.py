"""Importing a file twice never duplicates (issue 14): records are matched by provenance
(the sender's organisation and its record id); one already held is not imported again, a
changed one is kept beside the earlier version, a new one is imported. Both engines."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schemas.records import ActionRecord, ChronologyEntry, NewConcern
from tests.integration.exchange.inbox_support import T0, Rig, receiving_node
from transfer.store import people
from transfer.store.readable import readable_file


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path) as r:
        yield r


def _details(entry: ChronologyEntry) -> str:
    """The lines under a chronology entry, as a DSL reads them."""
    read = readable_file(about="", chronology=[entry], who=lambda e: people.NODE, categories={})
    return " ".join(read.lines[0].details)


def _kinds(chronology: list[ChronologyEntry]) -> Counter[str]:
    return Counter(e.kind for e in chronology if e.kind != "event")


async def test_a_file_sent_again_after_acceptance_imports_nothing_twice(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    dsl = rig.receiver_dsl
    first_id, _, _ = await rig.deliver(pupil)
    first = await rig.inbox.accept(dsl, first_id)
    before = await rig.store.chronology(dsl, first.pupil_id)
    assert _kinds(before) == Counter(concern=1, triage=1, action=1, contact=1, document=1)
    assert (first.held, first.amended) == (0, 0)

    # The same file again (sent twice by mistake, or resent after a lost receipt).
    second_id, _, _ = await rig.deliver(pupil)
    second = await rig.inbox.accept(dsl, second_id)
    assert second.pupil_id == first.pupil_id and not second.new_pupil
    assert {k: n for k, n in second.counts.items() if k != "events"} == {
        "concerns": 0,
        "triage": 0,
        "actions": 0,
        "contacts": 0,
        "documents": 0,
    }
    assert second.held >= 5 and second.amended == 0
    after = await rig.store.chronology(dsl, first.pupil_id)
    assert _kinds(after) == _kinds(before)
    # The sender's chronology lines about the file are not repeated either.
    lines = Counter((e.kind, e.occurred_at) for e in after if e.kind == "event")
    assert all(n == 1 for n in lines.values()), lines


async def test_a_changed_record_is_kept_beside_the_earlier_version(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    dsl, school = rig.receiver_dsl, rig.school
    first_id, _, _ = await rig.deliver(pupil)
    first = await rig.inbox.accept(dsl, first_id)

    # At the sending school, the action is done and a new concern is logged.
    sent = await rig.store.chronology(school.dsl, pupil)
    action = next(e.record for e in sent if e.kind == "action")
    assert isinstance(action, ActionRecord) and action.done_at is None
    await rig.store.complete_action(school.dsl, action.id)
    await rig.store.record_concern(
        school.staff,
        NewConcern(
            pupil_ids=(pupil,),
            category="neglect",
            happened_at=T0,
            location="Classroom",
            account="No coat in the snow again.",
        ),
    )

    newer_id, _, _ = await rig.deliver(pupil)
    newer = await rig.inbox.accept(dsl, newer_id)
    assert newer.pupil_id == first.pupil_id
    assert newer.counts["concerns"] == 1 and newer.counts["actions"] == 1
    assert newer.counts["triage"] == newer.counts["contacts"] == newer.counts["documents"] == 0
    assert newer.amended == 1

    chronology = await rig.store.chronology(dsl, first.pupil_id)
    assert _kinds(chronology) == Counter(concern=2, triage=1, action=2, contact=1, document=1)
    actions = [e for e in chronology if e.kind == "action"]
    by_done = {
        isinstance(e.record, ActionRecord) and e.record.done_at is not None: e for e in actions
    }
    earlier, later = by_done[False], by_done[True]
    earlier_prov = earlier.record.provenance  # type: ignore[union-attr]
    later_prov = later.record.provenance  # type: ignore[union-attr]
    assert earlier_prov is not None and later_prov is not None
    assert earlier_prov.original_id == later_prov.original_id == action.id
    assert earlier_prov.superseded and earlier_prov.amends_received_at is None
    assert not later_prov.superseded
    assert later_prov.amends_received_at == earlier_prov.received_at
    # The DSL reads it in words on the chronology.
    assert "A changed version of the record received on" in _details(later)
    assert "A changed version of this record was received later" in _details(earlier)

    # The same newer file once more: nothing new at all.
    again_id, _, _ = await rig.deliver(pupil)
    again = await rig.inbox.accept(dsl, again_id)
    assert sum(n for k, n in again.counts.items() if k != "events") == 0
    assert again.amended == 0
    assert _kinds(await rig.store.chronology(dsl, first.pupil_id)) == _kinds(chronology)


async def test_a_node_with_received_records_upgrades_and_still_never_duplicates(
    rig: Rig,
) -> None:
    """store_0005 on a database that already holds received records (which point at their
    provenance rows): the upgrade goes through on both engines, records received before it
    have no digest and count as held."""
    from alembic import command

    from transfer.store.db import _alembic_config

    pupil = await rig.make_pupil_file()
    dsl = rig.receiver_dsl
    first_id, _, _ = await rig.deliver(pupil)
    first = await rig.inbox.accept(dsl, first_id)

    def down_and_up(conn: object) -> None:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "store_0004")
        command.upgrade(cfg, "heads")

    async with rig.store.engine.begin() as conn:
        await conn.run_sync(down_and_up)
    again_id, _, _ = await rig.deliver(pupil)
    again = await rig.inbox.accept(dsl, again_id)
    assert again.pupil_id == first.pupil_id
    assert sum(n for k, n in again.counts.items() if k != "events") == 0
    assert _kinds(await rig.store.chronology(dsl, first.pupil_id)) == Counter(
        concern=1, triage=1, action=1, contact=1, document=1
    )
