"""The forms (required fields, clear errors), the consent rule by role, redaction, deadlines."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from receivers.agencies import check_addressee, due_on, rule_for
from schemas.referrals import Consent, LadoReferral, MashReferral, NewRedaction, PoliceReferral
from tests.support.referrals import CONSENT_GIVEN, CONSENT_RISK, lado_form, mash_form, police_form
from transfer.deadlines import default_calendar
from transfer.errors import InputError
from transfer.referrals.consent import ConsentRequired, check_send, require_draft
from transfer.referrals.forms import FormError, parse_form, parse_outcome
from transfer.referrals.redaction import RedactionError, RedactionPlan, redact_text
from transfer.store.permissions import Actor, PermissionDenied, Role


def _without(form: dict[str, Any], path: str) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = form
    for p in parents:
        node = node[p]
    del node[last]
    return form


# ------------------------------------------------------------------ forms


def test_each_kind_parses_to_its_model() -> None:
    assert isinstance(parse_form(mash_form()), MashReferral)
    assert isinstance(parse_form(json.dumps(lado_form())), LadoReferral)
    assert isinstance(parse_form(json.dumps(police_form()).encode()), PoliceReferral)


@pytest.mark.parametrize(
    ("make", "path"),
    [
        (mash_form, "request"),
        (mash_form, "child"),
        (mash_form, "child.address"),
        (mash_form, "carers"),
        (mash_form, "referrer.phone"),
        (mash_form, "consent"),
        (mash_form, "consent.consent_given"),
        (mash_form, "reason"),
        (mash_form, "harm_types"),
        (mash_form, "impact_on_child"),
        (mash_form, "risk_rating"),
        (mash_form, "risk_reasons"),
        (lado_form, "employer.head_teacher"),
        (lado_form, "adult.role"),
        (lado_form, "adult.employment_basis"),
        (lado_form, "allegation.category"),
        (lado_form, "allegation.known_at"),
        (lado_form, "allegation.description"),
        (lado_form, "children"),
        (lado_form, "criteria"),
        (lado_form, "actions_so_far"),
        (police_form, "what_happened"),
        (police_form, "happened_at"),
        (police_form, "place"),
        (police_form, "immediate_risk"),
        (police_form, "child.surname"),
    ],
)
def test_a_missing_required_field_is_named(make: Any, path: str) -> None:
    with pytest.raises(FormError) as err:
        parse_form(_without(make(), path))
    assert f"{path} is required" in err.value.message
    assert err.value.detail["errors"][0] == {"field": path, "message": "is required"}  # type: ignore[index]
    assert err.value.http_status == 400


@pytest.mark.parametrize(
    ("form", "field", "words"),
    [
        (mash_form(risk_rating="severe"), "risk_rating", "'low', 'medium' or 'high'"),
        (mash_form(harm_types=[]), "harm_types", "at least 1"),
        (mash_form(child={**mash_form()["child"], "upn": "nope"}), "child.upn", "pattern"),
        (mash_form(child={**mash_form()["child"], "nhs_number": "12"}), "child.nhs_number", ""),
        (mash_form(reason="   "), "reason", "at least 1"),
        (lado_form(criteria=["bad_vibes"]), "criteria[0]", "harmed_child"),
        (lado_form(children=[]), "children", "at least 1"),
        (police_form(happened_at="2026-09-06T20:00:00"), "happened_at", "timezone"),
        (mash_form(colour="blue"), "colour", "is not a field of this form"),
    ],
)
def test_a_malformed_field_is_named(form: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(FormError) as err:
        parse_form(form)
    assert f"not valid: {field}" in err.value.message
    assert words in err.value.message


def test_child_needs_a_birth_date_or_an_expected_one() -> None:
    child = {k: v for k, v in mash_form()["child"].items() if k != "dob"}
    with pytest.raises(FormError, match=r"child: dob is required \(or expected_delivery"):
        parse_form(mash_form(child=child))
    unborn = parse_form(mash_form(child={**child, "expected_delivery": "2027-01-10"}))
    assert isinstance(unborn, MashReferral)
    assert unborn.child.expected_delivery == date(2027, 1, 10)


def test_unknown_kind_and_bad_json_are_refused() -> None:
    with pytest.raises(FormError, match="kind must be social_care, lado or police"):
        parse_form({"kind": "fire_brigade"})
    with pytest.raises(FormError, match="not valid JSON"):
        parse_form(b"{nope")
    with pytest.raises(FormError, match="JSON object"):
        parse_form(b"[1, 2]")


def test_consent_section_rules() -> None:
    no_reason = {"parents_aware": False, "consent_given": False}
    with pytest.raises(FormError, match="no_consent_reason is required"):
        parse_form(mash_form(consent=no_reason))
    with pytest.raises(FormError, match="explanation is required"):
        parse_form(mash_form(consent={**no_reason, "no_consent_reason": "other"}))
    with pytest.raises(FormError, match="unaware"):
        parse_form(mash_form(consent={"parents_aware": False, "consent_given": True}))
    form = parse_form(mash_form(consent=CONSENT_RISK))
    assert form.consent.no_consent_reason == "greater_risk"


def test_outcomes_per_kind() -> None:
    assert (
        parse_outcome({"kind": "social_care", "rag": "red", "decision": "section_47"}).rag == "red"
    )
    lado = parse_outcome({"kind": "lado", "outcome": "substantiated", "dbs_referral": True})
    assert lado.dbs_referral
    with pytest.raises(FormError, match="crime_reference is required"):
        parse_outcome({"kind": "police"})


# ---------------------------------------------------------------- consent


def _actor(*roles: Role) -> Actor:
    return Actor(staff_id="s1", org_id="199001", roles=frozenset(roles))


GIVEN = Consent.model_validate(CONSENT_GIVEN)
WITHOUT = Consent.model_validate(CONSENT_RISK)


@pytest.mark.parametrize(
    ("role", "with_consent", "without_consent"),
    [
        (Role.DSL, True, True),
        (Role.DEPUTY_DSL, True, False),
        (Role.STAFF, False, False),
        (Role.HEAD_TEACHER, False, False),
        (Role.ADMINISTRATOR, False, False),
        (Role.AUDITOR, False, False),
    ],
)
def test_consent_rule_by_role(role: Role, with_consent: bool, without_consent: bool) -> None:
    actor = _actor(role)
    if with_consent:
        decision = check_send(actor, GIVEN)
        assert decision.with_consent and decision.reason is None
    else:
        with pytest.raises(PermissionDenied, match="only the DSL team"):
            check_send(actor, GIVEN)
    if without_consent:
        decision = check_send(actor, WITHOUT)
        assert not decision.with_consent
        assert decision.reason == "greater_risk"
        assert decision.audit_value == "not_given"
    else:
        with pytest.raises(PermissionDenied) as err:
            check_send(actor, WITHOUT)
        if with_consent:  # the deputy: in the team, but not allowed without consent
            assert isinstance(err.value, ConsentRequired)
            assert "only the DSL may do that" in err.value.message


def test_drafting_is_for_the_dsl_team_only() -> None:
    require_draft(_actor(Role.DSL))
    require_draft(_actor(Role.DEPUTY_DSL))
    for role in (Role.STAFF, Role.HEAD_TEACHER, Role.ADMINISTRATOR, Role.AUDITOR):
        with pytest.raises(PermissionDenied):
            require_draft(_actor(role))


# -------------------------------------------------------------- redaction


def test_redact_text_by_string_and_span() -> None:
    text = "Jo Bloggs said Jo Bloggs's brother Kai was there."
    assert redact_text(text, strings=["Jo Bloggs"]) == (
        "[redacted] said [redacted]'s brother Kai was there."
    )
    assert redact_text(text, spans=[(35, 38)]) == (
        "Jo Bloggs said Jo Bloggs's brother [redacted] was there."
    )
    # Overlapping marks merge into one.
    assert redact_text(
        text, spans=[(0, 5)], strings=["Bloggs said"]
    ) == "[redacted] Jo Bloggs's" + (" brother Kai was there.")
    assert redact_text(text, strings=["jo bloggs"]) == text  # exact: capitals matter
    with pytest.raises(RedactionError, match="outside the text"):
        redact_text("short", spans=[(2, 40)])


def test_redaction_marks_must_be_one_kind_or_the_other() -> None:
    with pytest.raises(ValueError, match="either text"):
        NewRedaction.model_validate({"text": "Kai", "field": "account"})
    with pytest.raises(ValueError, match="either text"):
        NewRedaction.model_validate({"record": {"kind": "concern", "id": "c"}, "field": "x"})
    with pytest.raises(ValueError, match="end must be after start"):
        NewRedaction.model_validate(
            {"record": {"kind": "concern", "id": "c"}, "field": "account", "start": 5, "end": 5}
        )


def test_span_marks_only_on_selected_records_and_text_fields() -> None:
    mark = NewRedaction.model_validate(
        {"record": {"kind": "concern", "id": "c1"}, "field": "account", "start": 0, "end": 3}
    )
    RedactionPlan([mark]).check_marks({("concern", "c1")})
    with pytest.raises(RedactionError, match="not selected"):
        RedactionPlan([mark]).check_marks({("concern", "c2")})
    bad = mark.model_copy(update={"field": "category"})
    with pytest.raises(RedactionError, match="text fields of a concern are: account"):
        RedactionPlan([bad]).check_marks({("concern", "c1")})


# -------------------------------------------------------------- agencies


def test_agency_rules_and_lado_deadline() -> None:
    assert rule_for("lado").package_kind == "referral_lado"
    assert rule_for("social_care").package_kind == "referral_social_care"
    assert rule_for("police").package_kind == "referral_police"
    with pytest.raises(InputError, match="does not take referrals"):
        rule_for("school")
    mash = parse_form(mash_form())
    with pytest.raises(InputError, match="a social_care referral goes to children's social care"):
        check_addressee(mash, "lado", "Bristol LADO")
    cal = default_calendar()
    assert due_on(mash, cal) is None
    # Known on Friday 4 Sept 2026 at 18:00: due the next working day, Monday 7th.
    friday = parse_form(lado_form(known_at="2026-09-04T18:00:00+01:00"))
    assert due_on(friday, cal) == date(2026, 9, 7)
    # 23:30 UTC on Sunday 30 Aug 2026 is already Monday 31 Aug (a bank holiday) in England:
    # the next working day after it is Tuesday 1 Sept.
    late = parse_form(lado_form(known_at="2026-08-30T23:30:00+00:00"))
    assert due_on(late, cal) == date(2026, 9, 1)
