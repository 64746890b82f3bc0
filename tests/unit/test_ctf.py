from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path

import pytest

from transfer.ctf import (
    CTFError,
    DestinationKind,
    parse_ctf,
)
from transfer.errors import InputError, TooLargeError
from transfer.identifiers import upn_check_letter

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "ctf"
SAMPLE = ASSETS / "leavers_801_2000.xml"


def _line_of(text: str, needle: str, occurrence: int = 1) -> int:
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            count += 1
            if count == occurrence:
                return number
    raise AssertionError(f"{needle!r} not found")


HEADER = """<?xml version="1.0" encoding="UTF-8"?>
<CTfile>
  <Header>
    <CTFversion>24.0</CTFversion>
    <DateTime>2026-03-02T09:00:00</DateTime>
    <SourceSchool><LEA>801</LEA><Estab>2000</Estab><URN>199001</URN>
      <SchoolName>Harbourside Primary School</SchoolName></SourceSchool>
    {dest}
  </Header>
  <CTFpupilData>
{pupils}
  </CTFpupilData>
</CTfile>
"""


def _pupil(upn: str, dob: str = "2015-01-01", extra: str = "") -> str:
    return (
        "    <Pupil>\n"
        f"      <UPN>{upn}</UPN>\n"
        "      <Surname>Test</Surname>\n"
        "      <Forename>Pupil</Forename>\n"
        f"      <DOB>{dob}</DOB>\n"
        "      <Sex>F</Sex>\n"
        f"{extra}"
        "    </Pupil>"
    )


def _doc(pupils: list[str], dest: str = "") -> bytes:
    return HEADER.format(dest=dest, pupils="\n".join(pupils)).encode()


def _upn(n: int) -> str:
    body = f"80120002{n:04d}"[:12]
    return upn_check_letter(body) + body


# --------------------------------------------------------------------- happy path


def test_sample_file() -> None:
    raw = SAMPLE.read_bytes()
    text = raw.decode()
    doc = parse_ctf(raw)
    h = doc.header
    assert (h.source.la_code, h.source.estab, h.source.urn) == ("801", "2000", "199001")
    assert h.source.name == "Harbourside Primary School"
    assert h.source.laestab == "8012000"
    assert h.ctf_version == "24.0"
    assert h.created == datetime(2026, 7, 20, 14, 32, 5)
    assert h.academic_year == "2025"
    assert h.destination is not None
    assert h.destination.kind is DestinationKind.SCHOOL
    assert h.destination.school is not None
    assert h.destination.school.laestab == "8014001"
    assert h.destination.school.urn == "199002"

    assert [p.upn for p in doc.pupils] == [
        "A801200014001",
        "P801200014002",
        "J801200015017",
        "K80120001501A",
    ]
    first, second, third, fourth = doc.pupils
    assert (first.surname, first.forename, first.dob, first.sex) == (
        "Okafor",
        "Amara",
        date(2014, 11, 3),
        "F",
    )
    assert first.year_group == "6"
    assert first.leaving_date == date(2026, 7, 22)
    assert first.destination == h.destination
    assert first.line == _line_of(text, "<Pupil>", 1)
    # Two schools in the history: the leaving date is the source school's.
    assert len(second.history) == 2
    assert second.history[0].leaving_date == date(2022, 7, 20)
    assert second.leaving_date == date(2026, 7, 22)
    assert second.line == _line_of(text, "<Pupil>", 2)
    # <Gender> (pre-CTF 22) is read as sex; no school history means no leaving date.
    assert third.sex == "F" and third.leaving_date is None
    assert fourth.is_temporary_upn and not first.is_temporary_upn


def test_basic_details_layout_and_legal_names() -> None:
    pupil = (
        "    <Pupil>\n"
        f"      <UPN>{_upn(1)}</UPN>\n"
        "      <BasicDetails><LegalSurname>Smith</LegalSurname>"
        "<LegalForename>Jo</LegalForename><DOB>2015-05-05</DOB><Gender>m</Gender>"
        "<NCyearActual>5</NCyearActual></BasicDetails>\n"
        "    </Pupil>"
    )
    doc = parse_ctf(_doc([pupil]))
    (p,) = doc.pupils
    assert (p.surname, p.forename, p.dob, p.sex, p.year_group) == (
        "Smith",
        "Jo",
        date(2015, 5, 5),
        "M",
        "5",
    )


def test_namespaced_and_unknown_elements_are_tolerated() -> None:
    raw = _doc([_pupil(_upn(2), extra="      <Whatever><Deep>1</Deep></Whatever>\n")])
    raw = raw.replace(b"<CTfile>", b'<CTfile xmlns="urn:example:ctf" version="3">')
    doc = parse_ctf(raw)
    assert [p.upn for p in doc.pupils] == [_upn(2)]


@pytest.mark.parametrize(
    ("dest", "kind", "la"),
    [
        (
            "<DestSchool><LEA>MMM</LEA><Estab>MMMM</Estab></DestSchool>",
            DestinationKind.UNKNOWN,
            None,
        ),
        (
            "<DestSchool><LEA>XXX</LEA><Estab>XXXX</Estab></DestSchool>",
            DestinationKind.OUTSIDE_MAINTAINED,
            None,
        ),
        (
            "<DestSchool><LEA>801</LEA><Estab>LLLL</Estab></DestSchool>",
            DestinationKind.LOCAL_AUTHORITY,
            "801",
        ),
        (
            "<DestSchool><LEA>801</LEA><Estab>4001</Estab></DestSchool>",
            DestinationKind.SCHOOL,
            "801",
        ),
    ],
)
def test_destinations(dest: str, kind: DestinationKind, la: str | None) -> None:
    doc = parse_ctf(_doc([_pupil(_upn(3))], dest=dest))
    assert doc.header.destination is not None
    assert doc.header.destination.kind is kind
    assert doc.header.destination.la_code == la


def test_no_destination() -> None:
    doc = parse_ctf(_doc([_pupil(_upn(3))]))
    assert doc.header.destination is None
    assert doc.pupils[0].destination is None


def test_thousand_pupils() -> None:
    pupils = [_pupil(_upn(i)) for i in range(1000)]
    raw = _doc(pupils)
    started = time.perf_counter()
    doc = parse_ctf(raw)
    elapsed = time.perf_counter() - started
    assert len(doc.pupils) == 1000
    assert len({p.upn for p in doc.pupils}) == 1000
    text = raw.decode()
    assert doc.pupils[999].line == _line_of(text, "<Pupil>", 1000)
    assert elapsed < 5


# ------------------------------------------------------------------------ refusals


def test_invalid_upn_refuses_whole_file_with_its_line() -> None:
    good = _upn(5)
    wrong = ("A" if good[0] != "A" else "B") + good[1:]
    raw = _doc([_pupil(_upn(4)), _pupil(wrong), _pupil(_upn(6))])
    with pytest.raises(CTFError) as info:
        parse_ctf(raw)
    err = info.value
    line = _line_of(raw.decode(), f"<UPN>{wrong}</UPN>")
    assert err.line == line
    assert str(err).startswith(f"CTF line {line}: pupil UPN '{wrong}' has the wrong check letter")
    assert err.detail["upn_category"] == "check-letter"
    assert isinstance(err, InputError)


def test_missing_dob_refused_at_pupil_line() -> None:
    pupil = (
        "    <Pupil>\n"
        f"      <UPN>{_upn(7)}</UPN><Surname>A</Surname><Forename>B</Forename><Sex>M</Sex>\n"
        "    </Pupil>"
    )
    raw = _doc([_pupil(_upn(8)), pupil])
    with pytest.raises(CTFError, match="no date of birth") as info:
        parse_ctf(raw)
    assert info.value.line == _line_of(raw.decode(), "<Pupil>", 2)


@pytest.mark.parametrize("dob", ["2015-02-30", "03/02/2015", "20150203", "2015-2-3"])
def test_bad_dob_refused(dob: str) -> None:
    raw = _doc([_pupil(_upn(9), dob=dob)])
    with pytest.raises(CTFError, match="DOB") as info:
        parse_ctf(raw)
    assert info.value.line == _line_of(raw.decode(), "<DOB>")


def test_dob_after_file_date_refused() -> None:
    raw = _doc([_pupil(_upn(16), dob="2026-03-03")])
    with pytest.raises(CTFError, match="after the file was made") as info:
        parse_ctf(raw)
    assert info.value.line == _line_of(raw.decode(), "<DOB>")
    assert parse_ctf(_doc([_pupil(_upn(16), dob="2026-03-02")])).pupils[0].dob == date(2026, 3, 2)


def test_duplicate_upn_refused() -> None:
    raw = _doc([_pupil(_upn(10)), _pupil(_upn(10))])
    with pytest.raises(CTFError, match="appears twice") as info:
        parse_ctf(raw)
    assert info.value.line == _line_of(raw.decode(), "<Pupil>", 2)


def test_bad_source_school_refused() -> None:
    raw = _doc([_pupil(_upn(11))]).replace(b"<LEA>801</LEA>", b"<LEA>999</LEA>", 1)
    with pytest.raises(CTFError, match="source school LEA"):
        parse_ctf(raw)


def test_bad_sex_refused() -> None:
    raw = _doc([_pupil(_upn(12))]).replace(b"<Sex>F</Sex>", b"<Sex>Q</Sex>")
    with pytest.raises(CTFError, match="sex"):
        parse_ctf(raw)


def test_malformed_xml_reports_parser_line() -> None:
    raw = _doc([_pupil(_upn(13)), _pupil(_upn(14))]).replace(b"</Surname>", b"</Surnam>", 2)
    text = raw.decode()
    with pytest.raises(CTFError, match="not well formed") as info:
        parse_ctf(raw)
    assert info.value.line == _line_of(text, "</Surnam>", 1)


def test_truncated_and_empty_files() -> None:
    raw = _doc([_pupil(_upn(15))])
    with pytest.raises(CTFError, match="not well formed"):
        parse_ctf(raw[: len(raw) // 2])
    with pytest.raises(CTFError):
        parse_ctf(b"")


@pytest.mark.parametrize(
    ("encoding", "reason"),
    [
        ("UTF-7", "multi-byte encodings are not supported"),
        ("UTF-32", "multi-byte encodings are not supported"),
        ("x", "unknown encoding: x"),
        ("no-such-codec-at-all", "unknown encoding"),
    ],
)
def test_a_declared_encoding_expat_cannot_read_is_a_ctf_error(encoding: str, reason: str) -> None:
    # Found by fuzzing (issue 17, item 11): expat's ValueError / LookupError went past
    # the importer, and the API answered 500.
    raw = _doc([_pupil(_upn(20))]).replace(b'encoding="UTF-8"', f'encoding="{encoding}"'.encode())
    with pytest.raises(CTFError, match="character encoding that cannot be read") as info:
        parse_ctf(raw)
    assert info.value.line == 1
    assert reason in str(info.value) and "CTF files are UTF-8" in str(info.value)
    assert isinstance(info.value, InputError)


def test_not_a_ctf() -> None:
    with pytest.raises(CTFError, match="not a Common Transfer File") as info:
        parse_ctf(b'<?xml version="1.0"?>\n<html><body/></html>')
    assert info.value.line == 2


def test_missing_header() -> None:
    with pytest.raises(CTFError, match="no <Header>"):
        parse_ctf(b"<CTfile><CTFpupilData/></CTfile>")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<CTfile><Header><DocumentName>&lol9;</DocumentName></Header></CTfile>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE CTfile [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<CTfile><Header><DocumentName>&xxe;</DocumentName></Header></CTfile>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE CTfile SYSTEM "http://127.0.0.1:9/ctf.dtd">
<CTfile/>
"""


@pytest.mark.parametrize(
    ("payload", "line"), [(BILLION_LAUGHS, 2), (EXTERNAL_ENTITY, 2), (EXTERNAL_DTD, 2)]
)
def test_hostile_xml_refused(payload: bytes, line: int) -> None:
    with pytest.raises(CTFError, match="not allowed") as info:
        parse_ctf(payload)
    assert info.value.line == line
    assert "root:" not in str(info.value)


def test_undeclared_entity_is_a_syntax_error() -> None:
    with pytest.raises(CTFError, match="not well formed"):
        parse_ctf(b"<CTfile><Header><DocumentName>&xxe;</DocumentName></Header></CTfile>")


def test_oversized_refused_before_parsing() -> None:
    raw = SAMPLE.read_bytes()
    with pytest.raises(TooLargeError) as info:
        parse_ctf(raw, max_bytes=len(raw) - 1)
    assert info.value.http_status == 413
    assert parse_ctf(raw, max_bytes=len(raw)).pupils


def test_oversized_default_limit() -> None:
    with pytest.raises(TooLargeError):
        parse_ctf(b" " * (50 * 1024 * 1024 + 1))


def test_deep_nesting_refused() -> None:
    raw = b"<CTfile>" + b"<a>" * 100 + b"</a>" * 100 + b"</CTfile>"
    with pytest.raises(CTFError, match="nested"):
        parse_ctf(raw)


def test_every_bad_pupil_is_reported_by_its_line_not_only_the_first() -> None:
    raw = _doc(
        [
            _pupil(_upn(1)),
            _pupil(_upn(2), dob="2015-02-30"),
            _pupil(_upn(3)),
            _pupil("A801200000010"),
            _pupil(_upn(1)),
        ]
    )
    text = raw.decode()
    with pytest.raises(CTFError) as caught:
        parse_ctf(raw)
    err = caught.value
    lines = [p.line for p in err.problems]
    assert lines == [
        _line_of(text, "<DOB>2015-02-30"),
        _line_of(text, "<UPN>A801200000010"),
        _line_of(text, "<Pupil>", 5),
    ]
    # The error itself is still the first problem, as before; the detail lists them all.
    assert err.line == lines[0] and str(err).startswith(f"CTF line {lines[0]}: ")
    assert "not a real date" in err.problems[0].reason
    assert "appears twice (first on line" in err.problems[2].reason
    assert isinstance(err.detail, dict)
    listed = err.detail["problems"]
    assert isinstance(listed, list) and [p["line"] for p in listed] == lines


def test_a_file_with_one_bad_pupil_has_one_problem_and_no_list() -> None:
    with pytest.raises(CTFError) as caught:
        parse_ctf(_doc([_pupil(_upn(1)), _pupil(_upn(2), dob="soon")]))
    assert len(caught.value.problems) == 1
    assert isinstance(caught.value.detail, dict) and "problems" not in caught.value.detail
