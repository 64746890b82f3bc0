"""What the outbox asks before a leaver's file goes (issue 11, item 17), both engines.

A leaver's file goes to a school only (never to an agency); sending it again to a
school it already reached, or to a school that is not the pupil's recorded
destination, needs a reason, which is kept sealed with the package and in the
child's chronology (never as plain text in the outbox's tables or the audit log).
The pupil is named by UPN as readily as by id (item 16).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from keys.keyset import KeySet
from schemas.records import Destination, PupilChanges
from tests.integration.exchange.outbox_support import RECEIVER, Sending, sending, upn
from transfer.directory.document import entry_from_keyset
from transfer.exchange.outbox import (
    REASON_FIELD,
    REASON_TABLE,
    LeaverFileToAgencyError,
    ReasonRequiredError,
)
from transfer.exchange.tables import outgoing_events, outgoing_packages
from transfer.store.tables import SealedField

MASH = "mash-bristol"
REASON = "Cliff Road asked again: their copy was lost in a RECORDS-SYSTEM-CRASH"


def _add_agency(s: Sending) -> None:
    ks = KeySet.generate(MASH)
    s.directory.by_id[MASH] = entry_from_keyset(
        ks, name="Bristol MASH", kind="social_care", endpoint="http://127.0.0.1:1"
    )


async def _packages(s: Sending) -> int:
    async with s.store.sessions() as sess:
        return int(
            await sess.scalar(sa.select(sa.func.count()).select_from(outgoing_packages)) or 0
        )


async def _event_summaries(s: Sending, pupil_id: str) -> list[str]:
    entries = await s.store.chronology(s.school.dsl, pupil_id)
    return [getattr(e.record, "summary", "") for e in entries if e.kind == "event"]


async def test_a_leaver_file_never_goes_to_an_agency(db_url: str, tmp_path: Path) -> None:
    async with sending(db_url, tmp_path) as s:
        _add_agency(s)
        with pytest.raises(LeaverFileToAgencyError, match="Bristol MASH is not a school") as err:
            await s.outbox.queue_leaver_file(s.school.dsl, s.pupil_id, MASH, reason="because")
        assert err.value.http_status == 403 and "referral" in err.value.message
        assert await _packages(s) == 0
        assert not list(s.outbox.outgoing_dir.glob("*"))
        (refused,) = [e for e in s.school.audit.events if e.outcome == "refused"]
        assert refused.action == "transfer.queued"
        assert refused.detail["reason"] == "not_a_school"


async def test_not_the_recorded_destination_needs_a_reason_kept_sealed(
    db_url: str, tmp_path: Path
) -> None:
    async with sending(db_url, tmp_path) as s:
        dsl = s.school.dsl
        await s.store.update_pupil(
            s.school.admin,
            s.pupil_id,
            PupilChanges(destination=Destination(kind="school", urn="199777", name="Elm Park")),
        )
        with pytest.raises(ReasonRequiredError) as err:
            await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        assert err.value.http_status == 422 and err.value.slug == "reason-required"
        assert err.value.detail == {"reasons_needed": ["not_destination"]}
        assert "Cliff Road Academy is not Amara Okafor's recorded next school" in str(err.value)
        assert "the recorded destination is Elm Park" in str(err.value)
        assert await _packages(s) == 0  # nothing was made
        refused = s.school.audit.events[-1]
        assert (refused.action, refused.outcome) == ("transfer.queued", "refused")
        assert refused.detail["reasons_needed"] == "not_destination"

        # With a reason it goes; the pupil named by UPN this time.
        rec = await s.outbox.queue_leaver_file(dsl, upn(1), RECEIVER, reason=REASON)
        assert rec.state == "queued" and rec.pupil_ids == (s.pupil_id,)
        assert rec.reasons_needed == ("not_destination",) and rec.send_reason == REASON
        assert (await s.outbox.get(dsl, rec.id)).send_reason == REASON
        listed = await s.outbox.list(dsl, pupil_id=upn(1))
        assert [r.id for r in listed] == [rec.id]
        assert listed[0].reasons_needed == ("not_destination",)
        queued = [e for e in s.school.audit.events if e.action == "transfer.queued"][-1]
        assert queued.outcome == "ok" and queued.detail["reasons_needed"] == "not_destination"
        assert queued.targets["pupil"] == s.pupil_id
        assert not any("RECORDS-SYSTEM-CRASH" in str(e) for e in s.school.audit.events)
        summaries = await _event_summaries(s, s.pupil_id)
        assert any(REASON in x and "not the recorded destination" in x for x in summaries)
        # The reason is sealed: no plain copy in the outbox's tables.
        async with s.store.sessions() as sess:
            rows = [
                *(await sess.execute(sa.select(outgoing_packages))).all(),
                *(await sess.execute(sa.select(outgoing_events))).all(),
            ]
            sealed = (
                await sess.execute(
                    sa.select(SealedField).where(
                        SealedField.record_table == REASON_TABLE,
                        SealedField.record_id == rec.id,
                        SealedField.field == REASON_FIELD,
                    )
                )
            ).all()
        assert not any("RECORDS-SYSTEM-CRASH" in str(tuple(r)) for r in rows)
        assert len(sealed) == 1 and b"RECORDS-SYSTEM-CRASH" not in sealed[0][0].sealed

        # Erasing the pupil erases the reason with everything else.
        await s.outbox.cancel(dsl, rec.id)
        await s.store.erase_pupil(dsl, s.pupil_id)
        assert (await s.outbox.get(dsl, rec.id)).send_reason is None


async def test_a_second_send_to_the_same_school_needs_a_reason(db_url: str, tmp_path: Path) -> None:
    async with sending(db_url, tmp_path) as s:
        dsl = s.school.dsl
        # A cancelled package never reached them: sending anew needs no reason.
        first = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        await s.outbox.cancel(dsl, first.id)
        second = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        assert second.reasons_needed == () and second.send_reason is None
        assert await s.outbox.deliver_due() == 1
        assert (await s.outbox.get(dsl, second.id)).state == "delivered"

        # Delivered once: a second send of the same pupil to the same school is asked why.
        with pytest.raises(ReasonRequiredError) as err:
            await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        assert err.value.detail == {"reasons_needed": ["repeat"]}
        assert "already sent to Cliff Road Academy" in str(err.value)
        assert second.id in str(err.value) and "delivered" in str(err.value)
        # An empty reason is no reason.
        with pytest.raises(ReasonRequiredError):
            await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER, reason="   ")
        third = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER, reason=REASON)
        assert third.reasons_needed == ("repeat",) and third.send_reason == REASON
        assert [e.detail for e in third.events if e.event == "queued"] == ["reason given"]
