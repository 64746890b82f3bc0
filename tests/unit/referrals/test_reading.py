"""The referral as an agency reads it: sections in the form's order, labels and values in
words, dates as dates, empty optional fields left out (the page model of the pickup page
and its PDF)."""

from __future__ import annotations

from typing import Any

from tests.support.portal import CHRONOLOGY, FORM, PEOPLE
from tests.support.referrals import CONSENT_RISK, lado_form, mash_form, police_form
from transfer.referrals.reading import (
    ReadableReferral,
    Row,
    Section,
    date_and_time,
    long_date,
    readable_referral,
)


def _section(model: ReadableReferral, key: str) -> Section:
    return next(s for s in model.sections if s.key == key)


def _rows(rows: tuple[Row, ...]) -> list[tuple[str, str]]:
    return [(r.label, r.value) for r in rows]


def _every_row(model: ReadableReferral) -> list[Row]:
    return [r for s in model.sections for r in (*s.rows, *(r for g in s.groups for r in g.rows))]


def test_a_mash_referral_reads_in_the_forms_order() -> None:
    model = readable_referral(FORM, chronology=CHRONOLOGY, people=PEOPLE)
    assert model.title == "Referral to children's social care (MASH)" and not model.problem
    assert [s.title for s in model.sections] == [
        "Reason for referral and risk",
        "The child",
        "Family and household",
        "What is known",
        "Consent",
        "The school's contact",
    ]
    reason = _section(model, "reason")
    assert _rows(reason.rows) == [
        ("What is asked for", "A safeguarding referral (child protection or child in need)"),
        (
            "Reason for referral",
            "Bruising seen on the upper arm; the child said\nher uncle did it.",
        ),
        ("Kinds of harm", "Physical abuse\nEmotional abuse"),
        ("Impact on the child", "Withdrawn in class, flinches when approached."),
        ("The school's view of the risk", "High"),
        ("Why the school rates the risk so", "A disclosure and visible bruising."),
    ]
    [disclosure] = reason.groups
    assert disclosure.title == "Disclosure"
    assert _rows(disclosure.rows) == [
        ("Disclosed by", "Ellie"),
        ("Disclosed to", "Ms Reed (class teacher)"),
        ("When", "7 September 2026 at 10:15am"),
        ("What was said", "[redacted] grabbed my arm."),
    ]
    # The child: dates as dates, the empty GP and the unasked fields left out.
    assert _rows(_section(model, "child").rows) == [
        ("First name", "Ellie"),
        ("Last name", "Marsh"),
        ("Date of birth", "1 May 2016"),
        ("Address", "4 Dock Road, Bristol"),
        ("Sex", "Female"),
        ("School", "Harbourside Primary"),
        ("Unique pupil number (UPN)", "H801200001001"),
    ]
    family = _section(model, "family")
    assert [g.title for g in family.groups] == ["Parent or carer", "Household member"]
    assert _rows(family.groups[0].rows) == [
        ("Name", "Kim Marsh"),
        ("Relationship to the child", "Mother"),
        ("Has parental responsibility", "Yes"),
    ]
    # Consent in words: the reason is the sentence the form means.
    assert _rows(_section(model, "consent").rows) == [
        ("Parents or carers know of this referral", "No"),
        ("Consent", "Not sought: seeking consent would put the child at greater risk of harm"),
        ("Explanation", "The uncle lives with the family."),
    ]
    assert _rows(_section(model, "contact").rows) == [
        ("Name", "Dana Lead"),
        ("Role", "Designated Safeguarding Lead"),
        ("School", "Harbourside Primary"),
        ("Telephone", "0117 496 0000"),
    ]
    # No raw key or value anywhere.
    for row in _every_row(model):
        assert "_" not in row.label and row.value not in {"greater_risk", "social_care"}, row


def test_what_is_known_is_the_chosen_chronology_in_time_order_with_names() -> None:
    later = {
        **CHRONOLOGY[0],
        "id": "c0",
        "occurred_at": "2026-09-01T08:00:00+01:00",
        "record": {
            **CHRONOLOGY[0]["record"],
            "id": "c0",
            "account": "Late again.",
            "happened_at": "2026-09-01T08:00:00+01:00",
        },
    }
    model = readable_referral(FORM, chronology=[*CHRONOLOGY, later], people=PEOPLE)
    known = _section(model, "known")
    assert not known.note and known.rows == ()
    assert [g.title for g in known.groups] == [
        "Concern, 1 September 2026",
        "Concern, 7 September 2026",
        "Document, 7 September 2026",
    ]
    concern = known.groups[1]
    assert _rows(concern.rows) == [
        ("Category", "Physical abuse"),
        ("When it happened", "7 September 2026 at 9:30am"),
        ("Where", "Classroom 3"),
        ("What happened", "Ellie was quiet in class and flinched"),
        ("Who was involved", "[redacted]"),
        ("Status", "Open"),
        ("Recorded by", "Jo Reed (member of staff)"),
        ("Recorded on", "7 September 2026 at 11am"),
    ]
    assert ("File", "body-map.pdf") in _rows(known.groups[2].rows)


def test_nothing_chosen_is_said_so() -> None:
    model = readable_referral(mash_form(previous_involvement="Known to social care in 2024."))
    known = _section(model, "known")
    assert known.note == "The school chose no records from its chronology to send."
    assert _rows(known.rows) == [
        ("Earlier involvement of social care", "Known to social care in 2024.")
    ]


def test_a_lado_referral_puts_the_allegation_first() -> None:
    model = readable_referral(lado_form(consent=CONSENT_RISK))
    assert [s.title for s in model.sections] == [
        "The allegation and why it is referred",
        "The adult the allegation is about",
        "Children involved",
        "What is known",
        "Consent",
        "The school's contact",
    ]
    reason = dict(_rows(_section(model, "reason").rows))
    assert reason["When it happened"] == "7 September 2026"
    assert reason["When the school first knew"] == "7 September 2026 at 10am"
    assert reason["Why this is referred to the LADO"] == (
        "The adult has behaved in a way that has harmed a child, or may have harmed a child"
    )
    assert "Followed the use of restraint" not in reason  # an optional "no", left out
    assert dict(_rows(_section(model, "adult").rows))["Employed as"] == "Permanent staff"
    contact = _section(model, "contact")
    assert [g.title for g in contact.groups] == ["The employer"]


def test_a_police_referral_and_its_evidence() -> None:
    form: dict[str, Any] = police_form(
        immediate_risk=True,
        evidence=[{"description": "Screenshots", "kind": "image", "held_by": "Dana Lead"}],
    )
    model = readable_referral(form)
    assert [s.key for s in model.sections] == [
        "reason",
        "child",
        "offender",
        "known",
        "consent",
        "contact",
    ]
    reason = _rows(_section(model, "reason").rows)
    assert reason[0] == ("Is the child at immediate risk?", "Yes")
    assert ("When it happened", "6 September 2026 at 8pm") in reason
    assert _section(model, "offender").note.startswith("The school does not know")
    [evidence] = _section(model, "known").groups
    assert _rows(evidence.rows) == [
        ("What it is", "Screenshots"),
        ("Kind of evidence", "An image"),
        ("Held by", "Dana Lead"),
    ]


def test_a_form_not_known_here_is_still_shown_in_words() -> None:
    model = readable_referral(
        {
            "kind": "social_care",
            "form_version": 9,
            "child_name": "Ellie Marsh",
            "disclosures": [{"who": "Ellie"}],
        },
        records=[("Concerns — c1", {"account": "Quiet in class", "schema_version": 1})],
    )
    assert model.problem.startswith("This form is not one this page knows")
    form = _section(model, "form")
    assert ("Child name", "Ellie Marsh") in _rows(form.rows)
    assert [g.title for g in form.groups] == ["Disclosures 1"]
    known = _section(model, "known")
    assert [g.title for g in known.groups] == ["Concerns — c1"]
    assert _rows(known.groups[0].rows) == [("Account", "Quiet in class")]


def test_dates_and_times_read_as_in_england() -> None:
    from datetime import UTC, date, datetime

    assert long_date(date(2014, 3, 4)) == "4 March 2014"
    assert date_and_time(datetime(2026, 7, 1, 11, 0, tzinfo=UTC)) == "1 July 2026 at midday"
    assert date_and_time(datetime(2026, 12, 1, 15, 5, tzinfo=UTC)) == "1 December 2026 at 3:05pm"
    assert long_date(datetime(2026, 6, 30, 23, 30, tzinfo=UTC)) == "1 July 2026"
