"""Each agency's referral form as the page asks it (MASH / social care, LADO, police),
in the order the agency reads it, and the rows of its repeated parts.

Pure: no I/O. The questions' building blocks are :mod:`transfer.web.referral_questions`;
reading what was typed is :mod:`transfer.web.referral_forms`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from transfer.web.referral_questions import (
    CARERS,
    CHILD,
    CHILDREN,
    CONSENT,
    DISCLOSURES,
    EVIDENCE,
    HARM_TYPES,
    HOUSEHOLD,
    REFERRER,
    SEXES,
    SIGNIFICANT,
    FieldSpec,
    Repeat,
    Section,
)

Kind = Literal["social_care", "lado", "police"]

KIND_NAMES: Final[dict[str, str]] = {
    "social_care": "Children's social care (MASH)",
    "lado": "Local authority designated officer (LADO)",
    "police": "Police",
}


MASH: Final = (
    Section(
        "Why you are referring",
        (
            FieldSpec(
                "request",
                "What are you asking for?",
                "radios",
                (
                    ("safeguarding", "A safeguarding referral (child protection or child in need)"),
                    ("early_help", "Early help"),
                ),
                missing="Select what you are asking for",
            ),
            FieldSpec(
                "reason",
                "What has happened, and why are you worried?",
                "textarea",
                missing="Say what has happened and why you are worried",
            ),
            FieldSpec(
                "harm_types",
                "What kind of harm?",
                "checkboxes",
                HARM_TYPES,
                hint="Select all that apply.",
                missing="Select at least one kind of harm",
            ),
            FieldSpec(
                "impact_on_child",
                "How is it affecting the child?",
                "textarea",
                missing="Say how it is affecting the child",
            ),
            FieldSpec(
                "risk_rating",
                "How serious is the risk?",
                "radios",
                (("low", "Low"), ("medium", "Medium"), ("high", "High")),
                missing="Select how serious the risk is",
            ),
            FieldSpec(
                "risk_reasons",
                "Why do you rate the risk that way?",
                "textarea",
                missing="Say why you rate the risk that way",
            ),
        ),
    ),
    Section(
        "Disclosures",
        repeat=DISCLOSURES,
        hint="What the child or anyone else told a member of staff (optional).",
    ),
    CHILD,
    Section(
        "Parents and carers", repeat=CARERS, hint="At least one. Leave a row empty to leave it out."
    ),
    Section(
        "Household members",
        repeat=HOUSEHOLD,
        hint="Everyone else who lives with the child (optional).",
    ),
    Section(
        "Significant adults",
        repeat=SIGNIFICANT,
        hint="Adults important in the child's life who do not live with them (optional).",
    ),
    Section(
        "What else is known",
        (
            FieldSpec(
                "previous_involvement",
                "Earlier involvement of children's services (optional)",
                "textarea",
            ),
            FieldSpec("other_professionals", "Other professionals involved (optional)", "textarea"),
        ),
    ),
    CONSENT,
    REFERRER,
)

LADO: Final = (
    Section(
        "The allegation",
        (
            FieldSpec(
                "allegation.category",
                "What kind of allegation is it?",
                "radios",
                (
                    ("physical", "Physical"),
                    ("emotional", "Emotional"),
                    ("sexual", "Sexual"),
                    ("neglect", "Neglect"),
                    ("conduct", "Conduct"),
                ),
                missing="Select what kind of allegation it is",
            ),
            FieldSpec(
                "allegation.description",
                "What is alleged?",
                "textarea",
                missing="Say what is alleged",
            ),
            FieldSpec(
                "allegation.happened_on",
                "When did it happen?",
                "date",
                hint="For example, 4/12/2026",
                missing="Enter the date it happened",
            ),
            FieldSpec(
                "allegation.place", "Where did it happen?", missing="Enter where it happened"
            ),
            FieldSpec(
                "allegation.known_at",
                "When did the school learn of it?",
                "moment",
                hint="The referral is due within one working day of this. For example, "
                "4/12/2026 and 14:30.",
                missing="Enter when the school learnt of the allegation",
            ),
            FieldSpec(
                "allegation.made_by",
                "Who made the allegation?",
                missing="Enter who made the allegation",
            ),
            FieldSpec(
                "allegation.made_by_relationship",
                "Who are they?",
                hint="For example, the pupil, a parent, a member of staff",
                missing="Say who the person who made the allegation is",
            ),
            FieldSpec("allegation.injury", "Any injury (optional)", "textarea"),
            FieldSpec(
                "allegation.incidents",
                "How many incidents are alleged?",
                "number",
                hint="1 if it happened once.",
                width="govuk-input--width-3",
                invalid="Enter the number of incidents, a whole number from 1 to 1000",
            ),
            FieldSpec("allegation.after_restraint", "Did it follow a physical restraint?", "yesno"),
            FieldSpec(
                "criteria",
                "Which of the harm tests does it meet?",
                "checkboxes",
                (
                    (
                        "harmed_child",
                        "Behaved in a way that has harmed, or may have harmed, a child",
                    ),
                    (
                        "criminal_offence",
                        "Possibly committed a criminal offence against or related to a child",
                    ),
                    (
                        "risk_of_harm",
                        "Behaved in a way that indicates they may pose a risk of harm to children",
                    ),
                    (
                        "unsuitable",
                        "Behaved in a way that indicates they may not be suitable to work "
                        "with children",
                    ),
                ),
                hint="Select all that apply.",
                missing="Select at least one of the harm tests",
            ),
        ),
    ),
    Section(
        "The adult",
        (
            FieldSpec("adult.forename", "First name", missing="Enter the adult's first name"),
            FieldSpec("adult.surname", "Last name", missing="Enter the adult's last name"),
            FieldSpec("adult.sex", "Sex", "radios", SEXES, missing="Select the adult's sex"),
            FieldSpec(
                "adult.role",
                "Their role",
                hint="For example, class teacher",
                missing="Enter the adult's role",
            ),
            FieldSpec("adult.workplace", "Where they work", missing="Enter where the adult works"),
            FieldSpec(
                "adult.employment_basis",
                "How are they employed?",
                "radios",
                (
                    ("permanent", "Permanent"),
                    ("temporary", "Temporary"),
                    ("agency", "Through an agency"),
                    ("volunteer", "Volunteer"),
                    ("contractor", "Contractor"),
                ),
                missing="Select how the adult is employed",
            ),
            FieldSpec(
                "adult.dob", "Date of birth (optional)", "date", hint="For example, 14/3/1988"
            ),
            FieldSpec("adult.ethnicity", "Ethnicity (optional)"),
            FieldSpec("adult.address", "Home address (optional)", "textarea"),
            FieldSpec(
                "adult.length_of_service",
                "How long they have worked there (optional)",
                hint="For example, 3 years",
            ),
            FieldSpec(
                "adult.previous_allegations",
                "Earlier allegations or concerns about them (optional)",
                "textarea",
            ),
            FieldSpec(
                "adult.other_contact_with_children",
                "Other work or contact with children (optional)",
                "textarea",
                hint="For example, a sports club they coach",
            ),
        ),
    ),
    Section(
        "Children involved",
        repeat=CHILDREN,
        hint="The child first; leave a row empty to leave it out.",
    ),
    Section(
        "The employer",
        (
            FieldSpec("employer.organisation", "School", missing="Enter the school's name"),
            FieldSpec(
                "employer.head_teacher", "Head teacher", missing="Enter the head teacher's name"
            ),
            FieldSpec("employer.chair_of_governors", "Chair of governors (optional)"),
            FieldSpec("employer.hr_lead", "Human resources lead (optional)"),
        ),
    ),
    Section(
        "What has been done",
        (
            FieldSpec(
                "actions_so_far",
                "What has the school done so far?",
                "textarea",
                missing="Say what the school has done so far",
            ),
            FieldSpec("others_told", "Who else has been told (optional)", "textarea"),
        ),
    ),
    CONSENT,
    REFERRER,
)

POLICE: Final = (
    Section(
        "What happened",
        (
            FieldSpec(
                "immediate_risk",
                "Is the child at immediate risk?",
                "yesno",
                hint="If yes, phone 999 first: this referral is the written follow-up.",
                missing="Select yes if the child is at immediate risk",
            ),
            FieldSpec("what_happened", "What happened?", "textarea", missing="Say what happened"),
            FieldSpec(
                "happened_at",
                "When did it happen?",
                "moment",
                hint="For example, 4/12/2026 and 19:30.",
                missing="Enter when it happened",
            ),
            FieldSpec("place", "Where did it happen?", missing="Enter where it happened"),
            FieldSpec("existing_reference", "Police reference, if there is one (optional)"),
        ),
    ),
    CHILD,
    Section(
        "The alleged offender, if known",
        (
            FieldSpec("alleged_offender.name", "Name (optional)"),
            FieldSpec("alleged_offender.relationship", "Relationship to the child (optional)"),
            FieldSpec(
                "alleged_offender.dob",
                "Date of birth (optional)",
                "date",
                hint="For example, 14/3/1988",
            ),
            FieldSpec("alleged_offender.address", "Address (optional)", "textarea"),
        ),
    ),
    Section(
        "Evidence held",
        repeat=EVIDENCE,
        hint="Described here; documents and images go only if you choose them next (optional).",
    ),
    Section(
        "Other agencies",
        (FieldSpec("other_agencies_informed", "Other agencies told (optional)", "textarea"),),
    ),
    CONSENT,
    REFERRER,
)

FORMS: Final[dict[str, tuple[Section, ...]]] = {"social_care": MASH, "lado": LADO, "police": POLICE}
#: Parts that go only when something in them is typed (an offender).
OPTIONAL_GROUPS: Final = ("alleged_offender",)
#: An error the schema gives a whole part, and the field that says it.
PART_ERRORS: Final = {
    "child": ("child.dob", "Enter the child's date of birth"),
}


Counts = Mapping[str, int]


def repeats(kind: str) -> list[Repeat]:
    return [s.repeat for s in FORMS[kind] if s.repeat is not None]


def fields_of(kind: str, counts: Counts | None = None) -> list[FieldSpec]:
    """Every question of the form in page order, ``counts[path]`` rows of each repeated
    part (its ``blank`` rows when not given)."""
    counts = counts or {}
    out: list[FieldSpec] = []
    for s in FORMS[kind]:
        out += s.fields
        if s.repeat is not None:
            for n in range(counts.get(s.repeat.path, s.repeat.blank)):
                out += s.repeat.row(n)
    return out


def row_counts(kind: str, data: Any) -> tuple[dict[str, int], str]:
    """How many rows of each repeated part the page had (its hidden ``rows.PATH`` fields),
    one more where "Add another" (``add``) was pressed; and that part's path, or ""."""
    counts: dict[str, int] = {}
    added = ""
    for r in repeats(kind):
        text = str(data.get(f"rows.{r.path}", ""))
        n = int(text) if text.isdigit() and len(text) < 4 else r.blank
        if str(data.get("add", "")) == r.path:  # at the most, given back as it is
            n, added = n + 1, r.path
        counts[r.path] = min(max(n, r.blank), r.most)
    return counts, added
