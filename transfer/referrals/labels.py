"""The referral forms' fields and values in words, as an agency reads them.

One table of labels per part of a form (:mod:`schemas.referrals`), and the words for
every value a field can take ("greater_risk" → the sentence the form means). The
tables per agency form (:data:`FORM_LABELS`) are made from the parts the form is built
of; ``tests/unit/referrals/test_labels.py`` walks every field of every form and fails on
one without a label, or a value without words, so a new field cannot reach an agency as
a raw key.

Pure: no I/O.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from schemas.records import BodySide, ConcernStatus, TriageDecision
from schemas.referrals import (
    Adult,
    Allegation,
    AllegedOffender,
    ChildDetails,
    ChildInvolved,
    Consent,
    Disclosure,
    Employer,
    EvidenceItem,
    HouseholdPerson,
    LadoReferral,
    MashReferral,
    PoliceReferral,
    ReferralKind,
    Referrer,
)

__all__ = [
    "FORMS",
    "FORM_LABELS",
    "FORM_WORDS",
    "HIDDEN",
    "KIND_TITLES",
    "LABELS",
    "RECORD_WORDS",
    "WORDS",
    "field_paths",
    "is_hidden",
    "label",
    "labels_of",
    "value_words",
    "words_of",
]

#: The form of each kind of referral.
FORMS: Final[Mapping[ReferralKind, type[BaseModel]]] = {
    "social_care": MashReferral,
    "lado": LadoReferral,
    "police": PoliceReferral,
}

#: What each form is called on the agency's page.
KIND_TITLES: Final[Mapping[ReferralKind, str]] = {
    "social_care": "Referral to children's social care (MASH)",
    "lado": "Referral to the Local Authority Designated Officer (LADO)",
    "police": "Referral to the police",
}

#: A form's own fields that say which form it is: never shown as a row.
HIDDEN: Final = frozenset({"kind", "form_version"})


def is_hidden(part: type[BaseModel], name: str) -> bool:
    """Whether ``name`` of ``part`` says which form this is (a form's ``kind``, not the
    ``kind`` of an item of evidence)."""
    return name in HIDDEN and any(issubclass(part, form) for form in FORMS.values())


_SEX: Final = {"female": "Female", "male": "Male", "other": "Other", "unknown": "Not known"}

#: The label of every field, part by part.
LABELS: Final[Mapping[type[BaseModel], Mapping[str, str]]] = {
    MashReferral: {
        "request": "What is asked for",
        "child": "The child",
        "carers": "Parent or carer",
        "household": "Household member",
        "significant_adults": "Significant adult",
        "referrer": "The school's contact",
        "consent": "Consent",
        "reason": "Reason for referral",
        "harm_types": "Kinds of harm",
        "disclosures": "Disclosure",
        "impact_on_child": "Impact on the child",
        "risk_rating": "The school's view of the risk",
        "risk_reasons": "Why the school rates the risk so",
        "previous_involvement": "Earlier involvement of social care",
        "other_professionals": "Other professionals involved",
    },
    LadoReferral: {
        "employer": "The employer",
        "adult": "The adult the allegation is about",
        "allegation": "The allegation",
        "children": "Child involved",
        "criteria": "Why this is referred to the LADO",
        "others_told": "Who else has been told",
        "actions_so_far": "What the school has done",
        "referrer": "The school's contact",
        "consent": "Consent",
    },
    PoliceReferral: {
        "child": "The child",
        "alleged_offender": "The alleged offender",
        "what_happened": "What happened",
        "happened_at": "When it happened",
        "place": "Where it happened",
        "evidence": "Evidence held",
        "immediate_risk": "Is the child at immediate risk?",
        "other_agencies_informed": "Other agencies told",
        "existing_reference": "Existing police reference",
        "referrer": "The school's contact",
        "consent": "Consent",
    },
    ChildDetails: {
        "forename": "First name",
        "surname": "Last name",
        "dob": "Date of birth",
        "expected_delivery": "Expected date of birth",
        "address": "Address",
        "sex": "Sex",
        "ethnicity": "Ethnicity",
        "first_language": "First language",
        "interpreter_needed": "Needs an interpreter",
        "disability": "Disability or special needs",
        "religion": "Religion",
        "school": "School",
        "upn": "Unique pupil number (UPN)",
        "nhs_number": "NHS number",
        "gp": "GP",
    },
    HouseholdPerson: {
        "name": "Name",
        "relationship": "Relationship to the child",
        "dob": "Date of birth",
        "address": "Address",
        "phone": "Telephone",
        "parental_responsibility": "Has parental responsibility",
        "alleged_perpetrator": "Is the alleged perpetrator",
    },
    Disclosure: {
        "by": "Disclosed by",
        "to": "Disclosed to",
        "at": "When",
        "summary": "What was said",
    },
    Referrer: {
        "name": "Name",
        "role": "Role",
        "agency": "School",
        "phone": "Telephone",
        "email": "E-mail",
    },
    Consent: {
        "parents_aware": "Parents or carers know of this referral",
        "consent_given": "Consent",
        "no_consent_reason": "Why consent was not given",
        "explanation": "Explanation",
    },
    Employer: {
        "organisation": "Employer",
        "head_teacher": "Head teacher",
        "chair_of_governors": "Chair of governors",
        "hr_lead": "Human resources lead",
    },
    Adult: {
        "forename": "First name",
        "surname": "Last name",
        "sex": "Sex",
        "dob": "Date of birth",
        "ethnicity": "Ethnicity",
        "address": "Address",
        "role": "Role",
        "workplace": "Workplace",
        "length_of_service": "Length of service",
        "employment_basis": "Employed as",
        "previous_allegations": "Earlier allegations or concerns",
        "other_contact_with_children": "Other contact with children",
    },
    Allegation: {
        "category": "Kind of allegation",
        "happened_on": "When it happened",
        "place": "Where it happened",
        "description": "What is alleged",
        "after_restraint": "Followed the use of restraint",
        "incidents": "Number of incidents",
        "injury": "Injury",
        "known_at": "When the school first knew",
        "made_by": "Allegation made by",
        "made_by_relationship": "Relationship to the adult",
    },
    ChildInvolved: {
        "forename": "First name",
        "surname": "Last name",
        "dob": "Date of birth",
        "upn": "Unique pupil number (UPN)",
    },
    AllegedOffender: {
        "name": "Name",
        "dob": "Date of birth",
        "address": "Address",
        "relationship": "Relationship to the child",
    },
    EvidenceItem: {
        "description": "What it is",
        "kind": "Kind of evidence",
        "held_by": "Held by",
    },
}

#: The words for every value of a field that takes one of a few values, part by part.
WORDS: Final[Mapping[type[BaseModel], Mapping[str, Mapping[str, str]]]] = {
    MashReferral: {
        "request": {
            "safeguarding": "A safeguarding referral (child protection or child in need)",
            "early_help": "A request for early help",
        },
        "harm_types": {
            "physical": "Physical abuse",
            "emotional": "Emotional abuse",
            "sexual": "Sexual abuse",
            "neglect": "Neglect",
            "domestic_abuse": "Domestic abuse",
            "exploitation": "Exploitation (criminal or sexual)",
            "online": "Online harm",
            "self_harm": "Self-harm",
            "radicalisation": "Radicalisation",
            "other": "Other harm",
        },
        "risk_rating": {"low": "Low", "medium": "Medium", "high": "High"},
    },
    LadoReferral: {
        "criteria": {
            "harmed_child": "The adult has behaved in a way that has harmed a child, or may "
            "have harmed a child",
            "criminal_offence": "The adult has possibly committed a criminal offence against "
            "or related to a child",
            "risk_of_harm": "The adult has behaved towards a child or children in a way that "
            "indicates they may pose a risk of harm to children",
            "unsuitable": "The adult has behaved, or may have behaved, in a way that indicates "
            "they may not be suitable to work with children",
        },
    },
    PoliceReferral: {},
    ChildDetails: {"sex": _SEX},
    Adult: {
        "sex": _SEX,
        "employment_basis": {
            "permanent": "Permanent staff",
            "temporary": "Temporary staff",
            "agency": "Agency staff",
            "volunteer": "Volunteer",
            "contractor": "Contractor",
        },
    },
    Consent: {
        "no_consent_reason": {
            "greater_risk": "Not sought: seeking consent would put the child at greater risk "
            "of harm",
            "refused": "Refused: the parents or carers were asked and said no; the school "
            "refers because of the risk to the child",
            "not_contactable": "Not sought: the parents or carers could not be reached in the "
            "time this referral allows",
            "other": "Not given, for another reason (see the explanation)",
        },
    },
    Allegation: {
        "category": {
            "physical": "Physical",
            "emotional": "Emotional",
            "sexual": "Sexual",
            "neglect": "Neglect",
            "conduct": "Conduct (behaviour that may make them unsuitable to work with children)",
        },
    },
    EvidenceItem: {
        "kind": {
            "document": "A document",
            "image": "An image",
            "video": "A video",
            "device": "A device",
            "other": "Something else",
        },
    },
}

#: The words for the values of the chronology's records (what is known).
RECORD_WORDS: Final[Mapping[str, Mapping[str, str]]] = {
    "kind": {
        "concern": "Concern",
        "triage": "Decision on a concern",
        "action": "Action",
        "contact": "Contact with an agency",
        "document": "Document",
        "event": "Transfer or referral",
    },
    "status": {
        "open": "Open",
        "under_review": "Under review",
        "monitoring": "Monitoring",
        "closed": "Closed",
    },
    "decision": {
        "refer_social_care": "Refer to children's social care (MASH)",
        "refer_early_help": "Refer for early help",
        "refer_lado": "Refer to the LADO",
        "refer_police": "Refer to the police",
        "monitor": "Monitor",
        "no_referral": "Decided not to refer",
        "no_further_action": "No further action",
    },
    "side": {"front": "Front of the body", "back": "Back of the body"},
    "role": {
        "dsl": "Designated safeguarding lead",
        "deputy_dsl": "Deputy designated safeguarding lead",
        "head_teacher": "Head teacher",
        "administrator": "Administrator",
        "auditor": "Auditor",
        "staff": "Member of staff",
    },
}

#: The chronology's own value sets, for the test that every one has words.
RECORD_VALUES: Final[Mapping[str, Any]] = {
    "status": ConcernStatus,
    "decision": TriageDecision,
    "side": BodySide,
}


def _humanise(name: str) -> str:
    words = " ".join(name.replace("_", " ").split())
    return words[:1].upper() + words[1:]


def labels_of(part: type[BaseModel]) -> Mapping[str, str]:
    """The labels of a part's fields (a part made from another adds to that one's)."""
    found: dict[str, str] = {}
    for cls in reversed(part.__mro__):
        found.update(LABELS.get(cls, {}))
    return found


def words_of(part: type[BaseModel]) -> Mapping[str, Mapping[str, str]]:
    """The words for the values of a part's fields (as :func:`labels_of`)."""
    found: dict[str, Mapping[str, str]] = {}
    for cls in reversed(part.__mro__):
        found.update(WORDS.get(cls, {}))
    return found


def label(model: type[BaseModel], name: str) -> str:
    """The field's label; a field without one (a test fails on it) reads as its name in
    words, never as a raw key with underscores."""
    return labels_of(model).get(name) or _humanise(name)


def value_words(model: type[BaseModel], name: str, value: str) -> str:
    """The words for ``value`` of the field (the value in words if it has none)."""
    return words_of(model).get(name, {}).get(value) or _humanise(value)


# ------------------------------------------------------------ the forms' fields


def _unwrap(annotation: Any) -> Iterator[Any]:
    """The types inside an annotation: through Annotated, unions, Optional and tuples."""
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _unwrap(get_args(annotation)[0])
    elif origin in (Union, types.UnionType, tuple, list):
        for arg in get_args(annotation):
            if arg is not Ellipsis and arg is not type(None):
                yield from _unwrap(arg)
    else:
        yield annotation


def field_paths(
    model: type[BaseModel], prefix: str = ""
) -> Iterator[tuple[str, type[BaseModel], str, Any]]:
    """Every field of a form, depth first: ``(dotted path, part, name, innermost type)``."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        inner = list(_unwrap(info.annotation))
        yield path, model, name, inner[0] if len(inner) == 1 else inner
        for item in inner:
            if isinstance(item, type) and issubclass(item, BaseModel):
                yield from field_paths(item, path + ".")


def literal_values(annotation: Any) -> tuple[str, ...]:
    """The values a ``Literal`` field takes (empty for any other field)."""
    found: list[str] = []
    literal: Any = Literal
    for item in annotation if isinstance(annotation, list) else [annotation]:
        if get_origin(item) is literal:
            found.extend(str(v) for v in get_args(item))
    return tuple(found)


def _form_labels(form: type[BaseModel]) -> dict[str, str]:
    return {
        path: labels_of(part)[name]
        for path, part, name, _ in field_paths(form)
        if not is_hidden(part, name) and name in labels_of(part)
    }


def _form_words(form: type[BaseModel]) -> dict[str, dict[str, str]]:
    return {
        path: dict(words_of(part)[name])
        for path, part, name, _ in field_paths(form)
        if name in words_of(part)
    }


#: The label table of each agency's form: dotted path → label.
FORM_LABELS: Final[Mapping[ReferralKind, Mapping[str, str]]] = {
    kind: _form_labels(form) for kind, form in FORMS.items()
}
#: The words for each value of each agency form's fields: dotted path → value → words.
FORM_WORDS: Final[Mapping[ReferralKind, Mapping[str, Mapping[str, str]]]] = {
    kind: _form_words(form) for kind, form in FORMS.items()
}
