"""Smaller checks at the store's door (issue 11, item 21), on SQLite and PostgreSQL.

A concern or contact dated in the future is refused beyond a small allowance for
clocks that disagree; a CTF addressed to another school is imported only when the
importer confirms it, and the refusal names that school; an upload whose first bytes
are not a kind of document the store keeps is refused and nothing is left behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from schemas.records import NewConcern, NewContact
from tests.integration.store.conftest import School
from transfer.errors import InputError
from transfer.media import UnsupportedDocumentType
from transfer.store.base import FUTURE_ALLOWANCE
from transfer.store.pupils import CTFAddressedElsewhereError

SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "ctf" / "leavers_801_2000.xml"


async def test_a_concern_or_contact_in_the_future_is_refused(school: School) -> None:
    pupil = await school.pupil("H801200001001")
    now = school.clock.now

    def concern(at: object) -> NewConcern:
        return NewConcern.model_validate(
            {"pupil_ids": [pupil.id], "category": "bullying", "happened_at": at, "account": "x"}
        )

    with pytest.raises(InputError, match="dated in the future"):
        await school.store.record_concern(school.staff, concern(now + timedelta(days=365)))
    with pytest.raises(InputError, match="at most 5 minutes ahead"):
        await school.store.record_concern(
            school.staff, concern(now + FUTURE_ALLOWANCE + timedelta(seconds=1))
        )
    assert await school.store.list_concerns(school.dsl) == []
    # A device a little ahead of the node's clock is fine.
    made = await school.store.record_concern(
        school.staff, concern(now + FUTURE_ALLOWANCE - timedelta(seconds=1))
    )
    with pytest.raises(InputError, match="the contact is dated in the future"):
        await school.store.add_contact(
            school.dsl,
            made.id,
            NewContact(agency="MASH", contacted_at=now + timedelta(hours=2)),
        )
    await school.store.add_contact(
        school.dsl, made.id, NewContact(agency="MASH", contacted_at=now - timedelta(hours=2))
    )


async def test_a_ctf_addressed_to_another_school_needs_confirming(school: School) -> None:
    data = SAMPLE.read_bytes()  # the school's own leavers' CTF, addressed to their next school
    with pytest.raises(CTFAddressedElsewhereError) as err:
        await school.store.import_ctf(school.admin, data)
    assert err.value.http_status == 409 and "URN 199002" in err.value.message
    assert "LAESTAB 8014001" in err.value.message
    assert err.value.detail["destination_urn"] == "199002"
    assert school.audit.events[-1].detail["reason"] == "ctf-addressed-elsewhere"
    assert await school.store.list_pupils(school.admin) == []
    result = await school.store.import_ctf(school.admin, data, force=True)
    assert result.created == 4 and result.leavers

    # A CTF addressed to this school (a joiners' file) needs no confirmation.
    joiners = data.replace(b"<URN>199001</URN>", b"<URN>199008</URN>", 1)
    joiners = joiners.replace(b"<Estab>2000</Estab>", b"<Estab>2008</Estab>", 1)
    joiners = joiners.replace(b"<URN>199002</URN>", b"<URN>199001</URN>", 1)
    joiners = joiners.replace(b"<Estab>4001</Estab>", b"<Estab>2000</Estab>", 1)
    again = await school.store.import_ctf(school.admin, joiners)
    assert (again.updated, again.leavers) == (4, False)


async def test_an_upload_of_a_kind_not_kept_leaves_nothing(school: School) -> None:
    pupil = await school.pupil("H801200001001")

    async def program() -> AsyncIterator[bytes]:
        yield b"MZ\x90\x00" + b"\x00" * 70_000
        yield b"\x00" * 70_000

    with pytest.raises(UnsupportedDocumentType):
        await school.store.add_document(school.dsl, pupil.id, program(), filename="letter.pdf")
    refused = school.audit.events[-1]
    assert (refused.action, refused.outcome) == ("store.document.upload", "refused")
    pupil_dir = school.data_dir / "documents"
    assert not pupil_dir.exists() or not [p for p in pupil_dir.rglob("*") if p.is_file()]
    assert await school.store.chronology(school.dsl, pupil.id) == []
