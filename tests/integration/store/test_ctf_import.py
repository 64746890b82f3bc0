"""CTF import: whole or nothing, upsert by UPN, leaving date and destination recorded."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tests.integration.store.conftest import School
from transfer.ctf import CTFError
from transfer.errors import ConflictError, InputError
from transfer.store.permissions import PermissionDenied

SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "ctf" / "leavers_801_2000.xml"


async def _upns(school: School) -> dict[str, str]:
    return {p.upn or "": p.id for p in await school.store.list_pupils(school.admin)}


async def test_import_records_pupils_destination_and_leaving_date(school: School) -> None:
    result = await school.store.import_ctf(school.admin, SAMPLE.read_bytes(), force=True)
    assert result.created == 4 and result.updated == 0
    assert result.source_laestab == "8012000"
    pupils = {p.upn: p for p in await school.store.list_pupils(school.admin)}
    assert set(pupils) == {"A801200014001", "P801200014002", "J801200015017", "K80120001501A"}
    amara = pupils["A801200014001"]
    assert (amara.surname, amara.forename, amara.dob) == ("Okafor", "Amara", date(2014, 11, 3))
    assert amara.leaving_date == date(2026, 7, 22)
    assert amara.destination is not None and amara.destination.urn == "199002"
    assert amara.destination.kind == "school"

    # A second import updates rather than duplicates.
    again = await school.store.import_ctf(school.admin, SAMPLE.read_bytes(), force=True)
    assert (again.created, again.updated) == (0, 4)
    assert school.audit.events[-1].action == "store.ctf.import"
    assert school.audit.events[-1].detail == {"created": 0, "updated": 4}
    assert len(await school.store.list_pupils(school.admin)) == 4


async def test_malformed_ctf_imports_nothing(school: School) -> None:
    broken = SAMPLE.read_bytes().replace(b"<UPN>J801200015017</UPN>", b"<UPN>J801200015018</UPN>")
    with pytest.raises(CTFError) as err:
        await school.store.import_ctf(school.admin, broken)
    assert err.value.line > 1
    assert school.audit.events[-1].outcome == "failed"
    assert await _upns(school) == {}


async def test_failure_late_in_the_database_phase_rolls_everything_back(school: School) -> None:
    # The third pupil of the file is already on roll with another date of birth:
    # the import must fail there and leave the first two uncreated.
    await school.pupil("J801200015017", "Hughes", dob=date(2014, 9, 30))
    with pytest.raises(ConflictError, match="line"):
        await school.store.import_ctf(school.admin, SAMPLE.read_bytes(), force=True)
    assert school.audit.events[-1].outcome == "failed"
    assert set(await _upns(school)) == {"J801200015017"}


async def test_ctf_for_another_school_and_roles_refused(school: School) -> None:
    other = SAMPLE.read_bytes().replace(b"<URN>199001</URN>", b"<URN>199009</URN>")
    other = other.replace(b"<Estab>2000</Estab>", b"<Estab>2009</Estab>", 1)
    other = other.replace(b"<URN>199002</URN>", b"<URN>199008</URN>")
    other = other.replace(b"<Estab>4001</Estab>", b"<Estab>4009</Estab>")
    with pytest.raises(InputError, match="neither from nor addressed"):
        await school.store.import_ctf(school.admin, other)
    with pytest.raises(PermissionDenied):
        await school.store.import_ctf(school.staff, SAMPLE.read_bytes())
    assert await _upns(school) == {}


async def test_a_roll_file_addressed_to_ourselves_names_no_next_school(school: School) -> None:
    """A CTF the school sends itself (source and destination both this school) gives every
    pupil's destination as this school: that is never the next school, so none is recorded,
    and a next school already recorded (by a DSL marking a leaver) is kept."""
    to_self = SAMPLE.read_bytes().replace(
        b"<Estab>4001</Estab>\n      <URN>199002</URN>",
        b"<Estab>2000</Estab>\n      <URN>199001</URN>",
    )
    assert to_self != SAMPLE.read_bytes()
    await school.store.import_ctf(school.admin, to_self, force=True)
    pupils = {p.upn: p for p in await school.store.list_pupils(school.admin)}
    assert all(p.destination is None for p in pupils.values())
    # A leavers' file names the next school; the roll file imported again keeps it.
    await school.store.import_ctf(school.admin, SAMPLE.read_bytes(), force=True)
    await school.store.import_ctf(school.admin, to_self, force=True)
    amara = {p.upn: p for p in await school.store.list_pupils(school.admin)}["A801200014001"]
    assert amara.destination is not None and amara.destination.urn == "199002"
