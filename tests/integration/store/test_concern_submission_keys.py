"""A concern sent twice from the same form is kept once (issue 13, item 3), on SQLite and
PostgreSQL: the form's one-time key makes a resubmit, a double click or two requests at
the same moment return the concern already saved."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pydantic import ValidationError

from schemas.records import NewConcern
from tests.integration.store.conftest import School

KEY = "k" * 20


def _concern(
    pupil_id: str, at: object, key: str | None = KEY, account: str = "Bruise"
) -> NewConcern:
    return NewConcern.model_validate(
        {
            "pupil_ids": [pupil_id],
            "category": "bullying",
            "happened_at": at,
            "account": account,
            "submission_key": key,
        }
    )


async def test_the_same_key_twice_keeps_one_concern(school: School) -> None:
    pupil = await school.pupil("H801200001001")
    at = school.clock.now - timedelta(hours=1)
    first = await school.store.record_concern(school.staff, _concern(pupil.id, at))
    again = await school.store.record_concern(school.staff, _concern(pupil.id, at, account="x"))
    assert again.id == first.id and again.account == "Bruise"
    assert [c.id for c in await school.store.list_concerns(school.dsl)] == [first.id]
    repeated = [e for e in school.audit.events if e.action == "store.concern.record"]
    assert [e.detail.get("repeated") for e in repeated] == [None, True]
    # Another person's key, or no key, is another concern.
    other = await school.store.record_concern(school.other_staff, _concern(pupil.id, at))
    none1 = await school.store.record_concern(school.staff, _concern(pupil.id, at, key=None))
    none2 = await school.store.record_concern(school.staff, _concern(pupil.id, at, key=None))
    assert len({first.id, other.id, none1.id, none2.id}) == 4


async def test_parallel_sends_of_one_form_keep_one_concern(school: School) -> None:
    pupil = await school.pupil("H801200001001")
    at = school.clock.now - timedelta(hours=1)
    made = await asyncio.gather(
        *(school.store.record_concern(school.staff, _concern(pupil.id, at)) for _ in range(6))
    )
    assert len({c.id for c in made}) == 1
    assert len(await school.store.list_concerns(school.dsl)) == 1


def test_a_key_must_look_like_one() -> None:
    for bad in ("short", "x" * 65, "has spaces in it here", "<script>alert(1)</script>"):
        with pytest.raises(ValidationError):
            _concern("p", "2026-01-01T00:00:00Z", key=bad)
