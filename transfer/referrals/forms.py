"""Reading referral forms and outcomes, with errors that name the field.

Pure: no I/O. A form arrives as JSON (a file given to the CLI, an HTTP body);
:func:`parse_form` validates it against :mod:`schemas.referrals` and refuses it
with one :class:`FormError` that names the first field at fault (and says how
many more there are), e.g. ``the referral form is not valid: child.dob is
required``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from schemas import jsontext
from schemas.referrals import (
    LadoReferral,
    MashReferral,
    NewRedaction,
    PoliceReferral,
    ReferralForm,
    ReferralOutcome,
    SelectedItem,
)
from transfer.errors import InputError

__all__ = [
    "FormError",
    "describe_validation",
    "every_problem",
    "parse_form",
    "parse_outcome",
    "parse_redactions",
    "parse_selection",
]

AnyForm = MashReferral | LadoReferral | PoliceReferral
_FORM: TypeAdapter[AnyForm] = TypeAdapter(ReferralForm)
_OUTCOME: TypeAdapter[Any] = TypeAdapter(ReferralOutcome)
_SELECTION = TypeAdapter(tuple[SelectedItem, ...])
_REDACTIONS = TypeAdapter(tuple[NewRedaction, ...])
_TAGS = frozenset({"social_care", "lado", "police"})


class FormError(InputError):
    """A referral form (or outcome) is missing a field or has a malformed one."""

    slug = "invalid-referral-form"
    title = "The referral form is not valid"


def _where(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for i, part in enumerate(loc):
        if i == 0 and part in _TAGS:
            continue  # the discriminator's branch, not a field
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part.startswith("function-") or part in {"tagged-union"}:
            continue
        else:
            parts.append(("." if parts else "") + part)
    return "".join(parts) or "the form"


def describe_validation(err: ValidationError) -> tuple[str, list[dict[str, str]]]:
    """One line for a person, and every error as ``{"field", "message"}``."""
    items: list[dict[str, str]] = []
    for e in err.errors(include_url=False, include_input=False):
        where = _where(tuple(e["loc"]))
        if e["type"] == "missing":
            message = "is required"
        elif e["type"] == "extra_forbidden":
            message = "is not a field of this form"
        elif e["type"] == "union_tag_invalid" or e["type"] == "union_tag_not_found":
            message = "must be social_care, lado or police"
            where = "kind"
        else:
            message = str(e["msg"]).removeprefix("Value error, ")
        items.append({"field": where, "message": message})
    first = items[0] if items else {"field": "the form", "message": "is not valid"}
    sep = " " if first["message"].startswith(("is ", "must ")) else ": "
    line = f"{first['field']}{sep}{first['message']}"
    if len(items) > 1:
        line += f" (and {len(items) - 1} more problem{'s' if len(items) > 2 else ''})"
    return line, items


def every_problem(err: FormError) -> FormError:
    """``err`` saying each problem on a line of its own, by field (for the CLI: a person
    fixing a form file wants them all at once, not "and 9 more problems")."""
    found = err.detail.get("errors")
    items = [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []
    if len(items) < 2:
        return err
    head = err.message.partition(": ")[0]
    lines = [f"{head} ({len(items)} problems):"]
    for item in items:
        message, where = str(item["message"]), str(item["field"])
        sep = " " if message.startswith(("is ", "must ")) else ": "
        lines.append(f"  {where}{sep}{message}")
    return FormError("\n".join(lines), detail=dict(err.detail))


def _load(data: bytes | str | Mapping[str, Any], what: str) -> Any:
    if isinstance(data, bytes | str):
        try:
            return jsontext.loads(data)
        except ValueError as exc:
            raise FormError(f"the {what} is not valid JSON ({exc})") from None
    return data


def parse_form(data: bytes | str | Mapping[str, Any]) -> AnyForm:
    """A validated referral form; :class:`FormError` naming the field otherwise."""
    raw = _load(data, "referral form")
    if not isinstance(raw, Mapping):
        raise FormError("the referral form must be a JSON object with a 'kind'")
    try:
        return _FORM.validate_python(raw)
    except ValidationError as err:
        line, items = describe_validation(err)
        raise FormError(
            f"the referral form is not valid: {line}", detail={"errors": items}
        ) from None


def parse_outcome(data: bytes | str | Mapping[str, Any]) -> Any:
    """A validated outcome (MASH, LADO or police); :class:`FormError` otherwise."""
    raw = _load(data, "outcome")
    if not isinstance(raw, Mapping):
        raise FormError("the outcome must be a JSON object with a 'kind'")
    try:
        return _OUTCOME.validate_python(raw)
    except ValidationError as err:
        line, items = describe_validation(err)
        raise FormError(f"the outcome is not valid: {line}", detail={"errors": items}) from None


def parse_selection(data: Any) -> tuple[SelectedItem, ...]:
    try:
        return _SELECTION.validate_python(data)
    except ValidationError as err:
        line, items = describe_validation(err)
        raise FormError(f"the selection is not valid: {line}", detail={"errors": items}) from None


def parse_redactions(data: Any) -> tuple[NewRedaction, ...]:
    try:
        return _REDACTIONS.validate_python(data)
    except ValidationError as err:
        line, items = describe_validation(err)
        raise FormError(f"a redaction is not valid: {line}", detail={"errors": items}) from None
