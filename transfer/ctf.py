"""Read a DfE Common Transfer File (CTF): the school and its pupils, nothing more.

A CTF is hostile input. It is parsed with :mod:`defusedxml` with DTDs,
entity declarations and external references all forbidden (so billion-laughs
and XXE files are refused before any expansion), after a size check
(``max_bytes``, default 50 MB) on the raw bytes. A CTF is accepted *whole* or
refused whole with :class:`CTFError`, whose message starts ``CTF line N:``. The
file is read to its end after a bad pupil, so the error carries every bad
pupil's problem by line (``CTFError.problems``; up to :data:`MAX_PROBLEMS`), for
the person fixing it to see them all at once.

Line numbers
------------
The parser is :class:`defusedxml.ElementTree.DefusedXMLParser` (the pure-Python
``XMLParser`` over expat) driven with a *target* object rather than building a
full tree. At each start tag the target reads expat's ``CurrentLineNumber``,
so every element knows the line its start tag is on. Only the header and one
pupil at a time are held as small trees; a pupil is checked, converted and
dropped as soon as its end tag is seen. XML syntax errors carry expat's own
line; a bad pupil is reported at the line of its ``<Pupil>`` start tag (or of
the offending child element where that is more precise).

Element names supported
-----------------------
Taken from the DfE CTF specifications (CTF 15 to CTF 24, section 4.3) and
CTF files written by school MIS software::

    <CTfile>
      <Header>
        <DocumentName/> <CTFversion/> <DateTime/> <DocumentQualifier/>
        <DataQualifier/> <DataDescriptor/> <SupplierID/>
        <SourceSchool> <LEA/> <Estab/> <URN/> <SchoolName/> <AcademicYear/> </SourceSchool>
        <DestSchool> <LEA/> <Estab/> <URN/> </DestSchool>
      </Header>
      <CTFpupilData>
        <Pupil>
          <UPN/> <Surname/> <Forename/> <DOB/> <Sex/> (or <Gender/> before CTF 22)
          <BasicDetails> ... <NCyearActual/> ... </BasicDetails>
          <SchoolHistory>
            <School> <LEA/> <Estab/> <URN/> <SchoolName/> <EntryDate/> <LeavingDate/>
                     <LeavingReason/> </School>
          </SchoolHistory>
        </Pupil>
      </CTFpupilData>
    </CTfile>

Also accepted: ``LegalSurname``/``LegalForename`` in place of ``Surname``/
``Forename``, and the name, DOB and sex/gender elements inside
``<BasicDetails>`` (some suppliers put them there). Namespaces are ignored.
Every other element (addresses, contacts, SEN, attendance, assessments...) is
skipped without being interpreted.

Destination
-----------
The CTF names one destination for the whole file in ``<DestSchool>``; the
DfE reserves ``MMM``/``MMMM`` for "destination not known" (the lost-pupils
database), ``XXX``/``XXXX`` for a destination outside the maintained sector
in England and Wales, and an LA code with estab ``LLLL`` for a file sent to
the local authority. :class:`CtfDestination` keeps that distinction. A pupil's
leaving date is the ``<LeavingDate>`` of the school-history entry for the
source school (matched by LA and estab), falling back on the latest leaving
date in the history.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Final

import defusedxml
import defusedxml.ElementTree as DET

from schemas.text import shown
from transfer.errors import InputError, TooLargeError
from transfer.identifiers import (
    InvalidIdentifier,
    InvalidUPN,
    UPNErrorCategory,
    validate_establishment_number,
    validate_la_code,
    validate_upn,
    validate_urn,
)

#: Default upper limit on a CTF's size in bytes.
DEFAULT_MAX_BYTES: Final = 50 * 1024 * 1024
#: Deepest element nesting accepted (real CTFs are under 10 deep).
MAX_DEPTH: Final = 64
_FEED_CHUNK = 1 << 16
#: A file with more bad pupils than this is refused at the next one (the list stays readable).
MAX_PROBLEMS: Final = 200

#: Sex/gender codes accepted (CBDS: M, F; some suppliers send U or O/X for unknown/other).
SEX_CODES: Final = frozenset({"M", "F", "U", "O", "X"})


class CTFError(InputError):
    """The CTF is malformed; ``line`` is where (1-based) and the message says why."""

    slug = "invalid-ctf"
    title = "The Common Transfer File is not valid"

    def __init__(self, line: int, reason: str, *, upn_category: str | None = None) -> None:
        detail: dict[str, object] = {"line": line}
        if upn_category is not None:
            detail["upn_category"] = upn_category
        super().__init__(f"CTF line {line}: {reason}", detail=detail)
        self.line = line
        self.reason = reason
        #: Every problem found in the file, this one first (see :func:`parse_ctf`).
        self.problems: tuple[CTFError, ...] = (self,)

    @classmethod
    def of(cls, problems: list[CTFError]) -> CTFError:
        """The first of ``problems``, carrying them all (and their lines in its detail)."""
        first = problems[0]
        first.problems = tuple(problems)
        if len(problems) > 1 and isinstance(first.detail, dict):
            first.detail["problems"] = [{"line": p.line, "reason": p.reason} for p in problems]
        return first


class DestinationKind(StrEnum):
    """What ``<DestSchool>`` names."""

    SCHOOL = "school"
    UNKNOWN = "unknown"  # MMM / MMMM: destination not known (lost pupils)
    OUTSIDE_MAINTAINED = "outside-maintained"  # XXX / XXXX
    LOCAL_AUTHORITY = "local-authority"  # LA code with estab LLLL


@dataclass(frozen=True, slots=True)
class CTFSchool:
    """A school named in a CTF."""

    la_code: str
    estab: str
    urn: str | None = None
    name: str | None = None

    @property
    def laestab(self) -> str:
        return self.la_code + self.estab


@dataclass(frozen=True, slots=True)
class CtfDestination:
    """Where the file is going. ``school`` is set for SCHOOL; ``la_code`` for SCHOOL and LA."""

    kind: DestinationKind
    la_code: str | None = None
    school: CTFSchool | None = None


@dataclass(frozen=True, slots=True)
class CTFHeader:
    source: CTFSchool
    destination: CtfDestination | None
    ctf_version: str | None
    created: datetime | None
    document_name: str | None = None
    academic_year: str | None = None
    supplier_id: str | None = None


@dataclass(frozen=True, slots=True)
class SchoolHistoryEntry:
    la_code: str | None
    estab: str | None
    urn: str | None
    name: str | None
    entry_date: date | None
    leaving_date: date | None
    leaving_reason: str | None


@dataclass(frozen=True, slots=True)
class CTFPupil:
    upn: str
    surname: str
    forename: str
    dob: date
    sex: str
    line: int
    year_group: str | None = None
    leaving_date: date | None = None
    destination: CtfDestination | None = None
    history: tuple[SchoolHistoryEntry, ...] = ()

    @property
    def is_temporary_upn(self) -> bool:
        return self.upn[12].isalpha()


@dataclass(frozen=True, slots=True)
class CTFDocument:
    header: CTFHeader
    pupils: list[CTFPupil] = field(default_factory=list)


# --------------------------------------------------------------------------- parsing


@dataclass(slots=True)
class _Node:
    tag: str
    line: int
    children: list[_Node] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts).strip()

    def child(self, *names: str) -> _Node | None:
        for name in names:
            for c in self.children:
                if c.tag == name:
                    return c
        return None

    def all(self, name: str) -> list[_Node]:
        return [c for c in self.children if c.tag == name]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if tag.startswith("{") else tag


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class _Target:
    """Receives parser events; keeps only the header and the current pupil as trees."""

    def __init__(
        self, on_header: Callable[[_Node], None], on_pupil: Callable[[_Node], None]
    ) -> None:
        self.expat: Any = None
        self.path: list[str] = []
        self.stack: list[_Node] = []  # nodes being built (inside Header or Pupil)
        self.on_header = on_header
        self.on_pupil = on_pupil
        #: An element was seen (so the XML declaration, and its encoding, were read).
        self.started = False

    def _line(self) -> int:
        return int(self.expat.CurrentLineNumber) if self.expat is not None else 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.started = True
        name = _local(tag)
        line = self._line()
        if not self.path:
            if name != "CTfile":
                raise CTFError(
                    line, f"this is not a Common Transfer File (root element <{name[:40]}>)."
                )
        if len(self.path) >= MAX_DEPTH:
            raise CTFError(line, f"elements are nested more than {MAX_DEPTH} deep.")
        self.path.append(name)
        if self.stack:
            node = _Node(name, line)
            self.stack[-1].children.append(node)
            self.stack.append(node)
        elif self.path == ["CTfile", "Header"] or self.path == ["CTfile", "CTFpupilData", "Pupil"]:
            self.stack.append(_Node(name, line))

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1].parts.append(text)

    def end(self, tag: str) -> None:
        self.path.pop()
        if not self.stack:
            return
        node = self.stack.pop()
        if self.stack:
            return
        if node.tag == "Header":
            self.on_header(node)
        else:
            self.on_pupil(node)

    def close(self) -> None:
        return None


def _text(node: _Node | None, *names: str) -> str | None:
    if node is None:
        return None
    found = node.child(*names)
    if found is None:
        return None
    return found.text or None


def _date(raw: str | None, line: int, what: str) -> date | None:
    if raw is None:
        return None
    if not _ISO_DATE.fullmatch(raw):
        raise CTFError(line, f"{what} '{shown(raw, 20)}' is not a date in the form YYYY-MM-DD.")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise CTFError(line, f"{what} '{shown(raw, 20)}' is not a real date.") from None


def _identifier(kind: str, raw: str | None, line: int, what: str) -> str | None:
    if raw is None:
        return None
    try:
        if kind == "la":
            return validate_la_code(raw)
        if kind == "estab":
            return validate_establishment_number(raw)
        return validate_urn(raw)
    except InvalidIdentifier as exc:
        raise CTFError(line, f"{what}: {exc.message}") from None


def _source_school(header: _Node) -> CTFSchool:
    node = header.child("SourceSchool")
    if node is None:
        raise CTFError(header.line, "the header has no <SourceSchool>.")
    lea_node, estab_node = node.child("LEA"), node.child("Estab")
    la = _identifier("la", _text(node, "LEA"), (lea_node or node).line, "source school LEA")
    estab = _identifier(
        "estab", _text(node, "Estab"), (estab_node or node).line, "source school Estab"
    )
    if la is None or estab is None:
        raise CTFError(node.line, "the source school needs both <LEA> and <Estab>.")
    urn_node = node.child("URN")
    urn = _identifier("urn", _text(node, "URN"), (urn_node or node).line, "source school URN")
    return CTFSchool(la, estab, urn, _text(node, "SchoolName"))


def _destination(header: _Node) -> CtfDestination | None:
    node = header.child("DestSchool")
    if node is None:
        return None
    lea = (_text(node, "LEA") or "").upper()
    estab = (_text(node, "Estab") or "").upper()
    if lea == "MMM" or estab == "MMMM":
        return CtfDestination(DestinationKind.UNKNOWN)
    if lea == "XXX" or estab == "XXXX":
        return CtfDestination(DestinationKind.OUTSIDE_MAINTAINED)
    lea_node = node.child("LEA") or node
    la = _identifier("la", lea or None, lea_node.line, "destination LEA")
    if la is None:
        raise CTFError(node.line, "<DestSchool> has no <LEA>.")
    if estab == "LLLL":
        return CtfDestination(DestinationKind.LOCAL_AUTHORITY, la_code=la)
    estab_node = node.child("Estab") or node
    checked_estab = _identifier("estab", estab or None, estab_node.line, "destination Estab")
    if checked_estab is None:
        raise CTFError(node.line, "<DestSchool> has no <Estab>.")
    urn_node = node.child("URN") or node
    urn = _identifier("urn", _text(node, "URN"), urn_node.line, "destination URN")
    school = CTFSchool(la, checked_estab, urn, _text(node, "SchoolName"))
    return CtfDestination(DestinationKind.SCHOOL, la_code=la, school=school)


def _created(header: _Node) -> datetime | None:
    raw = _text(header, "DateTime")
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        where = header.child("DateTime") or header
        raise CTFError(
            where.line, f"header DateTime '{shown(raw, 30)}' is not a date and time."
        ) from None


def _header(node: _Node) -> CTFHeader:
    return CTFHeader(
        source=_source_school(node),
        destination=_destination(node),
        ctf_version=_text(node, "CTFversion"),
        created=_created(node),
        document_name=_text(node, "DocumentName"),
        academic_year=_text(node.child("SourceSchool"), "AcademicYear"),
        supplier_id=_text(node, "SupplierID"),
    )


def _history(pupil: _Node) -> tuple[SchoolHistoryEntry, ...]:
    hist = pupil.child("SchoolHistory")
    if hist is None:
        return ()
    entries = []
    for school in hist.all("School"):
        entries.append(
            SchoolHistoryEntry(
                la_code=_text(school, "LEA"),
                estab=_text(school, "Estab"),
                urn=_text(school, "URN"),
                name=_text(school, "SchoolName"),
                entry_date=_date(
                    _text(school, "EntryDate"),
                    (school.child("EntryDate") or school).line,
                    "school history EntryDate",
                ),
                leaving_date=_date(
                    _text(school, "LeavingDate"),
                    (school.child("LeavingDate") or school).line,
                    "school history LeavingDate",
                ),
                leaving_reason=_text(school, "LeavingReason"),
            )
        )
    return tuple(entries)


def _leaving_date(history: tuple[SchoolHistoryEntry, ...], source: CTFSchool) -> date | None:
    for entry in history:
        if entry.la_code == source.la_code and entry.estab == source.estab:
            if entry.leaving_date is not None:
                return entry.leaving_date
    dates = [e.leaving_date for e in history if e.leaving_date is not None]
    return max(dates) if dates else None


def _field(pupil: _Node, *names: str) -> tuple[str | None, int]:
    """Text and line of the first of ``names`` under the pupil or its <BasicDetails>."""
    for holder in (pupil, pupil.child("BasicDetails")):
        if holder is None:
            continue
        node = holder.child(*names)
        if node is not None:
            return (node.text or None), node.line
    return None, pupil.line


def _pupil(node: _Node, header: CTFHeader) -> CTFPupil:
    raw_upn, upn_line = _field(node, "UPN")
    if raw_upn is None:
        raise CTFError(node.line, "a pupil has no UPN.")
    try:
        upn = validate_upn(raw_upn)
    except InvalidUPN as exc:
        raise CTFError(upn_line, f"pupil {exc.message}", upn_category=exc.category) from None
    surname, _ = _field(node, "Surname", "LegalSurname")
    forename, _ = _field(node, "Forename", "LegalForename")
    if surname is None:
        raise CTFError(node.line, f"pupil {upn} has no surname.")
    if forename is None:
        raise CTFError(node.line, f"pupil {upn} has no forename.")
    raw_dob, dob_line = _field(node, "DOB")
    if raw_dob is None:
        raise CTFError(node.line, f"pupil {upn} has no date of birth (<DOB>).")
    dob = _date(raw_dob, dob_line, f"pupil {upn} DOB")
    assert dob is not None
    if header.created is not None and dob > header.created.date():
        raise CTFError(dob_line, f"pupil {upn} DOB {dob.isoformat()} is after the file was made.")
    raw_sex, sex_line = _field(node, "Sex", "Gender")
    if raw_sex is None:
        raise CTFError(node.line, f"pupil {upn} has no <Sex> (or <Gender>).")
    sex = raw_sex.upper()
    if sex not in SEX_CODES:
        raise CTFError(
            sex_line, f"pupil {upn} sex '{shown(raw_sex, 10)}' is not one of M, F, U, O, X."
        )
    history = _history(node)
    leaving = _leaving_date(history, header.source)
    if leaving is not None and leaving < dob:
        raise CTFError(node.line, f"pupil {upn} leaves school before being born.")
    year_group, _ = _field(node, "NCyearActual")
    return CTFPupil(
        upn=upn,
        surname=surname,
        forename=forename,
        dob=dob,
        sex=sex,
        line=node.line,
        year_group=year_group,
        leaving_date=leaving,
        destination=header.destination,
        history=history,
    )


def _plain_reason(exc: Exception) -> str:
    """expat's reason, kept short and printable (it may echo the declared name)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:100]


def parse_ctf(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> CTFDocument:
    """Parse and check a whole CTF; refuse it whole with :class:`CTFError` if anything is wrong.

    Raises :class:`transfer.errors.TooLargeError` if ``data`` is over ``max_bytes``.
    """
    if len(data) > max_bytes:
        raise TooLargeError(
            f"The CTF is {len(data):,} bytes; the limit is {max_bytes:,} bytes.",
            detail={"size": len(data), "limit": max_bytes},
        )
    state: dict[str, CTFHeader] = {}
    pupils: list[CTFPupil] = []
    seen: dict[str, int] = {}
    #: Each bad pupil's problem: the file is read to its end, so that every one is reported.
    problems: list[CTFError] = []

    def on_header(node: _Node) -> None:
        if "header" in state:
            raise CTFError(node.line, "the file has more than one <Header>.")
        state["header"] = _header(node)

    def on_pupil(node: _Node) -> None:
        header = state.get("header")
        if header is None:
            raise CTFError(node.line, "pupil data comes before the <Header>.")
        try:
            pupil = _pupil(node, header)
            first = seen.get(pupil.upn)
            if first is not None:
                raise CTFError(
                    node.line, f"pupil {pupil.upn} appears twice (first on line {first})."
                )
        except CTFError as exc:
            if len(problems) >= MAX_PROBLEMS:
                raise CTFError.of(problems) from None
            problems.append(exc)
            return
        seen[pupil.upn] = node.line
        pupils.append(pupil)

    target = _Target(on_header, on_pupil)
    parser = DET.DefusedXMLParser(
        target=target, forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    target.expat = parser.parser
    try:
        for offset in range(0, len(data), _FEED_CHUNK):
            parser.feed(data[offset : offset + _FEED_CHUNK])
        parser.close()
    except DET.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else 0
        reason = str(exc).split(": line", 1)[0]
        problems.append(CTFError(line, f"the XML is not well formed ({reason})."))
        raise CTFError.of(problems) from None
    except defusedxml.DTDForbidden:
        raise CTFError(
            target._line(), "document type declarations (DTDs) are not allowed in a CTF."
        ) from None
    except defusedxml.EntitiesForbidden:
        raise CTFError(target._line(), "entity declarations are not allowed in a CTF.") from None
    except defusedxml.ExternalReferenceForbidden:
        raise CTFError(target._line(), "external references are not allowed in a CTF.") from None
    except (ValueError, LookupError) as exc:
        # expat refuses a declared encoding it cannot read ("UTF-7": ValueError, "x":
        # LookupError) before any element is seen; our own checks raise CTFError.
        if target.started:
            raise
        raise CTFError(
            target._line() or 1,
            "the file declares a character encoding that cannot be read "
            f"({_plain_reason(exc)}); CTF files are UTF-8.",
        ) from None
    header = state.get("header")
    if header is None:
        raise CTFError(1 if not data else target._line(), "the file has no <Header>.")
    if problems:
        raise CTFError.of(problems)
    return CTFDocument(header=header, pupils=pupils)


__all__ = [
    "DEFAULT_MAX_BYTES",
    "CTFDocument",
    "CTFError",
    "CTFHeader",
    "CTFPupil",
    "CTFSchool",
    "CtfDestination",
    "DestinationKind",
    "SchoolHistoryEntry",
    "UPNErrorCategory",
    "parse_ctf",
]
