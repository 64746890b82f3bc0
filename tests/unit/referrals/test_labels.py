"""Every field of every agency's form has a label in words, and every value its words."""

from __future__ import annotations

from typing import Literal, get_args

import pytest
from pydantic import BaseModel

from schemas.records import BodySide, ChronologyKind, ConcernStatus, TriageDecision
from schemas.referrals import ChildDetails, MashReferral
from transfer.referrals.labels import (
    FORM_LABELS,
    FORM_WORDS,
    FORMS,
    LABELS,
    RECORD_VALUES,
    RECORD_WORDS,
    WORDS,
    field_paths,
    is_hidden,
    labels_of,
    literal_values,
    words_of,
)

KINDS = sorted(FORMS)


def _unlabelled(form: type[BaseModel]) -> list[str]:
    return [
        path
        for path, part, name, _ in field_paths(form)
        if not is_hidden(part, name) and name not in labels_of(part)
    ]


def _without_words(form: type[BaseModel]) -> list[str]:
    return [
        f"{path}={value}"
        for path, part, name, annotation in field_paths(form)
        if not is_hidden(part, name)
        for value in literal_values(annotation)
        if value not in words_of(part).get(name, {})
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_of_every_agency_form_has_a_label(kind: str) -> None:
    form = FORMS[kind]  # type: ignore[index]
    assert _unlabelled(form) == []
    paths = [p for p, part, name, _ in field_paths(form) if not is_hidden(part, name)]
    assert list(FORM_LABELS[kind]) == paths  # type: ignore[index]
    # Labels are words: no raw key, nothing empty, never the key itself.
    for path, text in FORM_LABELS[kind].items():  # type: ignore[index]
        assert text and "_" not in text and text[0].isupper(), path


@pytest.mark.parametrize("kind", KINDS)
def test_every_value_of_every_agency_form_has_words(kind: str) -> None:
    form = FORMS[kind]  # type: ignore[index]
    assert _without_words(form) == []
    words = FORM_WORDS[kind]  # type: ignore[index]
    for path, values in words.items():
        for value, text in values.items():
            assert text != value and "_" not in text, (path, value)


def test_a_new_field_without_a_label_or_words_is_found() -> None:
    """The checks above can fail: a form with a field nobody labelled is caught."""

    class Newer(MashReferral):
        siblings_at_school: bool = False
        urgency: Literal["today", "this_week"] = "today"

    assert _unlabelled(Newer) == ["siblings_at_school", "urgency"]
    assert _without_words(Newer) == ["urgency=today", "urgency=this_week"]

    class NewerChild(ChildDetails):
        pronouns: str = ""

    class WithChild(MashReferral):
        child: NewerChild

    assert _unlabelled(WithChild) == ["child.pronouns"]


def test_no_label_names_a_field_that_is_not_there() -> None:
    for part, labels in LABELS.items():
        fields = {n for n in part.model_fields if not is_hidden(part, n)}
        assert set(labels) <= fields, part.__name__
    for part, words in WORDS.items():
        assert set(words) <= set(part.model_fields), part.__name__


def test_the_chronologys_values_have_words() -> None:
    for name, annotation in RECORD_VALUES.items():
        assert set(get_args(annotation)) <= set(RECORD_WORDS[name]), name
    assert set(get_args(ChronologyKind)) <= set(RECORD_WORDS["kind"])
    assert RECORD_VALUES == {"status": ConcernStatus, "decision": TriageDecision, "side": BodySide}
