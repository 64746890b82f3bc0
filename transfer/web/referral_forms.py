"""The referral forms as web pages: each agency's questions in the order an agency reads
them, typed values turned into the form the referral service takes, and every problem
the form's schema finds put back at its own field.

Pure: no I/O. A field's name in the page is its path in the form (``child.forename``,
``carers.0.name``); its id the same with dashes (the error summary links to it). A
date is typed as ``6/12/2026`` (as on the other casework pages), a moment as a date and
a time. Empty answers are left out, so a missing required one is "is required" from
the schema and an optional one keeps its default. A list (carers, household members,
disclosures...) is a :class:`Repeat`: rows of the same questions, as many as the page's
hidden ``rows.PATH`` says, one more when its "Add another" button (``add``) is pressed;
a row left empty is left out, and a problem in what is sent is put back at its row on
the page. The schema
(:data:`schemas.referrals.ReferralForm`) decides what is valid; this module only says
it at the right place, in words.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from schemas.records import PupilRecord
from schemas.referrals import LadoReferral, MashReferral, PoliceReferral, ReferralForm
from transfer.referrals.forms import describe_validation
from transfer.web.referral_agency_forms import (
    FORMS,
    KIND_NAMES,
    OPTIONAL_GROUPS,
    PART_ERRORS,
    Counts,
    fields_of,
    repeats,
    row_counts,
)
from transfer.web.referral_questions import FieldSpec, Repeat, Section
from transfer.web.rendering import ENGLAND
from transfer.web.words import BadDate, moment, read_date, read_time

__all__ = [
    "FORMS",
    "KIND_NAMES",
    "FieldSpec",
    "Repeat",
    "Section",
    "draft_values",
    "fields_of",
    "form_values",
    "prefill",
    "read_form",
    "repeats",
    "row_counts",
]

AnyForm = MashReferral | LadoReferral | PoliceReferral
_FORM: TypeAdapter[AnyForm] = TypeAdapter(ReferralForm)


# ------------------------------------------------------------------ prefill


def prefill(
    kind: str, pupil: PupilRecord, *, school: str, name: str, role: str
) -> dict[str, str | list[str]]:
    """A new form's values: the child from the pupil record, the school, the referrer."""
    sex = {"F": "female", "M": "male"}.get(pupil.sex.upper(), "unknown") if pupil.sex else ""
    dob = f"{pupil.dob.day}/{pupil.dob.month}/{pupil.dob.year}" if pupil.dob else ""
    values: dict[str, str | list[str]] = {
        "referrer.name": name,
        "referrer.role": role,
        "referrer.agency": school,
    }
    child = "children.0" if kind == "lado" else "child"
    values.update(
        {
            f"{child}.forename": pupil.forename,
            f"{child}.surname": pupil.surname,
            f"{child}.dob": dob,
            f"{child}.upn": pupil.upn or "",
        }
    )
    if kind == "lado":
        values.update({"employer.organisation": school, "adult.workplace": school})
    else:
        values.update({"child.sex": sex, "child.school": school})
    return values


def form_values(kind: str, data: Any, counts: Counts | None = None) -> dict[str, str | list[str]]:
    """What was typed, by field path (several values for checkboxes), from a POST or a
    kept form (anything with ``get`` and ``getall``)."""
    out: dict[str, str | list[str]] = {}
    for f in fields_of(kind, counts):
        if f.widget == "checkboxes":
            out[f.path] = [str(v) for v in data.getall(f.path, [])]
        elif f.widget == "moment":
            out[f.path + ".date"] = str(data.get(f.path + ".date", ""))
            out[f.path + ".time"] = str(data.get(f.path + ".time", ""))
        else:
            out[f.path] = str(data.get(f.path, ""))
    return out


def draft_values(kind: str, form: AnyForm) -> tuple[dict[str, Any], dict[str, int]]:
    """A saved form as the page's values (to change it), with its rows of each repeated
    part (as many as it holds, at least the blank ones)."""
    data = form.model_dump(mode="python")
    counts = {r.path: min(max(len(data.get(r.path) or ()), r.blank), r.most) for r in repeats(kind)}
    out: dict[str, Any] = {}
    for f in fields_of(kind, counts):
        value = _get(data, f.path)
        if f.widget == "moment":
            local = value.astimezone(ENGLAND) if isinstance(value, datetime) else None
            out[f.path + ".date"] = f"{local.day}/{local.month}/{local.year}" if local else ""
            out[f.path + ".time"] = f"{local:%H:%M}" if local else ""
        elif f.widget == "checkboxes":
            out[f.path] = list(value or [])
        elif isinstance(value, bool):
            out[f.path] = "yes" if value else "no"
        elif isinstance(value, date):
            out[f.path] = f"{value.day}/{value.month}/{value.year}"
        else:
            out[f.path] = "" if value is None else str(value)
    return out, counts


# ------------------------------------------------------------------ reading


def _put(tree: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _lists(node: Any) -> Any:
    """``{"0": {...}, "1": {...}}`` becomes a list (carers, children)."""
    if not isinstance(node, dict):
        return node
    fixed = {k: _lists(v) for k, v in node.items()}
    if fixed and all(k.isdigit() for k in fixed):
        return [fixed[k] for k in sorted(fixed, key=int)]
    return fixed


def _typed(f: FieldSpec, values: Mapping[str, str | list[str]], problems: dict[str, str]) -> Any:
    """The field's value for the schema; None when left empty (or wrong: then a problem)."""
    if f.widget == "checkboxes":
        chosen = [v for v in values.get(f.path, []) if v in dict(f.choices)]
        return chosen or None
    if f.widget == "moment":
        day_text = str(values.get(f.path + ".date", ""))
        time_text = str(values.get(f.path + ".time", ""))
        if not day_text.strip() and not time_text.strip():
            return None
        try:
            day = read_date(day_text, "The date")
            at = read_time(time_text, "The time")
        except BadDate as err:
            problems[f.id] = str(err)
            return None
        if day is None:
            problems[f.id] = "Enter the date as well as the time"
            return None
        return moment(day, at).isoformat()
    text = str(values.get(f.path, "")).strip()
    if not text:
        return None
    if f.widget == "date":
        try:
            found = read_date(text, "The date")
        except BadDate as err:
            problems[f.id] = str(err)
            return None
        return found.isoformat() if found else None
    if f.widget == "yesno":
        return {"yes": True, "no": False}.get(text)
    if f.widget == "radios":
        return text if text in dict(f.choices) else None
    if f.widget == "number":
        return int(text) if text.isdigit() else text
    return text


def read_form(
    kind: str, values: Mapping[str, str | list[str]], counts: Counts | None = None
) -> tuple[AnyForm | None, dict[str, str]]:
    """The form, or every problem by field id (in the order of the page)."""
    problems: dict[str, str] = {}
    tree: dict[str, Any] = {"kind": kind}
    specs = fields_of(kind, counts)
    given: dict[str, Any] = {}
    for f in specs:
        value = _typed(f, values, problems)
        if value is not None:
            given[f.path] = value
    for group in OPTIONAL_GROUPS:
        if not _typed_in(given, group):
            given = {p: v for p, v in given.items() if not p.startswith(group + ".")}
    given, rows = _kept_rows(kind, given, counts or {})
    _consent_problems(given, problems)
    for path, value in given.items():
        _put(tree, path, value)
    repeated = tuple(r.path + "." for r in repeats(kind))
    for f in specs:  # each part there, so that the schema names each missing field in it
        parent = f.path.rpartition(".")[0]
        if parent and not parent.startswith((*OPTIONAL_GROUPS, *repeated)):
            node = tree
            for part in parent.split("."):
                node = node.setdefault(part, {})
    for path, kept in rows.items():  # a required row left empty: the schema names its fields
        for n in range(len(kept)):
            tree.setdefault(path, {}).setdefault(str(n), {})
    form: AnyForm | None = None
    try:
        form = _FORM.validate_python(_lists(tree))
    except ValidationError as err:
        _, items = describe_validation(err)
        for item in items:
            _place(_row_of(item["field"], rows), item["message"], specs, problems)
    ordered = {f.id: problems[f.id] for f in specs if f.id in problems}
    return (form if not ordered else None), ordered


def _typed_in(given: Mapping[str, Any], prefix: str) -> bool:
    """Is anything but a yes/no answer given under ``prefix`` (a "no" alone is no answer)?"""
    return any(p.startswith(prefix + ".") and not isinstance(v, bool) for p, v in given.items())


def _kept_rows(
    kind: str, given: dict[str, Any], counts: Counts
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Each repeated part's rows with something typed (and its required ones), numbered
    again from 0; and, by part, the row on the page of each row kept (to say a problem
    the schema finds in row 1 of what is sent at row 3 of the page)."""
    rows: dict[str, list[int]] = {}
    for r in repeats(kind):
        shown = counts.get(r.path, r.blank)
        kept = [n for n in range(shown) if n < r.required or _typed_in(given, f"{r.path}.{n}")]
        rows[r.path] = kept
        renumbered: dict[str, Any] = {}
        for p, v in given.items():
            head, _, rest = p.partition(".")
            if head != r.path:
                renumbered[p] = v
                continue
            index, _, name = rest.partition(".")
            if int(index) in kept:
                renumbered[f"{r.path}.{kept.index(int(index))}.{name}"] = v
        given = renumbered
    return given, rows


def _row_of(where: str, rows: Mapping[str, list[int]]) -> str:
    """A schema error's place (``household[1].name``) as the field on the page."""
    path = where.replace("[", ".").replace("]", "")
    head, _, rest = path.partition(".")
    index, _, name = rest.partition(".")
    if head in rows and index.isdigit() and int(index) < len(rows[head]):
        return ".".join(x for x in (head, str(rows[head][int(index)]), name) if x)
    return path


def _consent_problems(given: dict[str, Any], problems: dict[str, str]) -> None:
    """The consent rules, said at their own fields (the schema says them for the part)."""
    aware, agreed = given.get("consent.parents_aware"), given.get("consent.consent_given")
    reason = given.get("consent.no_consent_reason")
    if agreed is True and aware is False:
        problems["consent-consent_given"] = (
            "The parents or carers cannot have agreed if they do not know about the referral"
        )
    if agreed is True and reason is not None:
        problems["consent-no_consent_reason"] = (
            "Leave this empty: the parents or carers agreed to the referral"
        )
    if agreed is False and reason is None:
        problems["consent-no_consent_reason"] = "Select why the referral goes without consent"
    if agreed is False and reason == "other" and not given.get("consent.explanation"):
        problems["consent-explanation"] = "Explain why the referral goes without consent"


def _place(where: str, message: str, specs: list[FieldSpec], problems: dict[str, str]) -> None:
    """Put one of the schema's problems at its field, in words."""
    path = where
    if path == "consent":
        return  # said at the consent fields by _consent_problems
    if path in PART_ERRORS:
        fid, text = PART_ERRORS[path]
        problems.setdefault(fid.replace(".", "-"), text)
        return
    spec = next((f for f in specs if f.path == path), None)
    if spec is None:  # a part (a list of carers...): its first field says it
        spec = next((f for f in specs if f.path.startswith(path + ".")), specs[0])
        message = "is required" if message.startswith(("is required", "List should")) else message
    if spec.id in problems:
        return
    if message == "is required" or message.startswith("List should have at least"):
        problems[spec.id] = spec.empty_message()
    elif spec.invalid:
        problems[spec.id] = spec.invalid
    else:
        text = message.strip().rstrip(".")
        problems[spec.id] = f"{spec.label}: {text[:1].lower() + text[1:]}"


def _get(data: Any, path: str) -> Any:
    node = data
    for part in path.split("."):
        if isinstance(node, list | tuple):
            index = int(part)
            node = node[index] if index < len(node) else None
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node
