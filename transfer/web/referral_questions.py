"""The building blocks of the referral forms' pages (:mod:`transfer.web.referral_forms`):
a question (:class:`FieldSpec`), a list asked as rows of the same questions
(:class:`Repeat`), a part of a form (:class:`Section`), and the parts and rows the
agencies' forms share (consent, the referrer, the child, carers, disclosures...).

Pure: no I/O. Each agency's form is in :mod:`transfer.web.referral_agency_forms`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

Widget = Literal["text", "textarea", "date", "moment", "radios", "checkboxes", "yesno", "number"]


@dataclass(frozen=True)
class FieldSpec:
    path: str
    label: str
    widget: Widget = "text"
    choices: tuple[tuple[str, str], ...] = ()
    hint: str = ""
    #: What to say when it is left empty but needed ("Enter ..." / "Select ...").
    missing: str = ""
    #: What to say when the schema refuses its value (a pattern, a range).
    invalid: str = ""
    width: str = ""

    @property
    def id(self) -> str:
        return self.path.replace(".", "-")

    def empty_message(self) -> str:
        if self.missing:
            return self.missing
        what = self.label[:1].lower() + self.label[1:]
        if self.widget in ("radios", "yesno", "checkboxes"):
            return f"Select {what}"
        return f"Enter {what}"


@dataclass(frozen=True)
class Repeat:
    """A list in the form asked as rows of the same questions (carers, household members,
    disclosures): ``blank`` rows at first, one more each time "Add another" is pressed, up
    to the schema's ``most``. A row left empty is left out, except the first ``required``."""

    path: str
    #: One row in words, for its heading and the button ("household member").
    noun: str
    row: Callable[[int], tuple[FieldSpec, ...]]
    blank: int = 1
    most: int = 30
    required: int = 0

    def title(self, n: int) -> str:
        return f"{self.noun[:1].upper()}{self.noun[1:]} {n + 1}"


@dataclass(frozen=True)
class Section:
    title: str
    fields: tuple[FieldSpec, ...] = ()
    repeat: Repeat | None = None
    hint: str = ""

    def rows(self, count: int) -> list[tuple[str, str, tuple[FieldSpec, ...]]]:
        """The repeated rows shown: (id, heading, fields) for each."""
        if self.repeat is None:
            return []
        r = self.repeat
        return [(f"{r.path}-{n}", r.title(n), r.row(n)) for n in range(count)]


SEXES: Final = (
    ("female", "Female"),
    ("male", "Male"),
    ("other", "Other"),
    ("unknown", "Not known"),
)
NO_CONSENT: Final = (
    ("greater_risk", "Seeking consent would put the child at greater risk of harm"),
    ("refused", "The parents or carers were asked and refused"),
    ("not_contactable", "The parents or carers could not be contacted in time"),
    ("other", "Another reason (explain below)"),
)
HARM_TYPES: Final = (
    ("physical", "Physical abuse"),
    ("emotional", "Emotional abuse"),
    ("sexual", "Sexual abuse"),
    ("neglect", "Neglect"),
    ("domestic_abuse", "Domestic abuse"),
    ("exploitation", "Exploitation"),
    ("online", "Online harm"),
    ("self_harm", "Self-harm"),
    ("radicalisation", "Radicalisation"),
    ("other", "Other"),
)
UPN_INVALID: Final = "A UPN is a capital letter, 11 digits and a digit or capital letter"

CONSENT: Final = Section(
    "Consent",
    (
        FieldSpec(
            "consent.parents_aware",
            "Do the parents or carers know about this referral?",
            "yesno",
            missing="Select yes if the parents or carers know about this referral",
        ),
        FieldSpec(
            "consent.consent_given",
            "Have they agreed to it?",
            "yesno",
            missing="Select yes if the parents or carers have agreed to the referral",
        ),
        FieldSpec(
            "consent.no_consent_reason",
            "If not, why not?",
            "radios",
            NO_CONSENT,
            hint="Only the designated safeguarding lead can send a referral without consent.",
            missing="Select why the referral goes without consent",
        ),
        FieldSpec(
            "consent.explanation",
            "Explain",
            "textarea",
            hint="Needed when the reason is 'another reason'.",
            missing="Explain why the referral goes without consent",
        ),
    ),
)

REFERRER: Final = Section(
    "Your contact details",
    (
        FieldSpec("referrer.name", "Your name", missing="Enter your name"),
        FieldSpec("referrer.role", "Your role", missing="Enter your role"),
        FieldSpec("referrer.agency", "Your school", missing="Enter your school's name"),
        FieldSpec(
            "referrer.phone",
            "Telephone number",
            width="govuk-input--width-20",
            missing="Enter a telephone number the agency can reach you on",
            invalid="Enter a telephone number of at least 3 characters",
        ),
        FieldSpec(
            "referrer.email",
            "Email address (optional)",
            invalid="Enter an email address like name@school.example",
        ),
    ),
)


def _child(prefix: str, who: str) -> tuple[FieldSpec, ...]:
    return (
        FieldSpec(f"{prefix}.forename", "First name", missing=f"Enter {who}'s first name"),
        FieldSpec(f"{prefix}.surname", "Last name", missing=f"Enter {who}'s last name"),
        FieldSpec(
            f"{prefix}.dob",
            "Date of birth",
            "date",
            hint="For example, 14/3/2015",
            missing=f"Enter {who}'s date of birth",
        ),
    )


CHILD: Final = Section(
    "The child",
    (
        *_child("child", "the child"),
        FieldSpec(
            "child.expected_delivery",
            "Expected date of delivery, for an unborn child (optional)",
            "date",
            hint="Instead of the date of birth. For example, 20/1/2027",
        ),
        FieldSpec("child.sex", "Sex", "radios", SEXES, missing="Select the child's sex"),
        FieldSpec(
            "child.address",
            "Home address",
            "textarea",
            hint="The pupil record holds no address: type the child's home address.",
            missing="Enter the child's home address",
        ),
        FieldSpec(
            "child.upn",
            "Unique pupil number (UPN)",
            width="govuk-input--width-20",
            invalid=UPN_INVALID,
        ),
        FieldSpec("child.school", "School"),
        FieldSpec(
            "child.nhs_number",
            "NHS number (optional)",
            width="govuk-input--width-10",
            invalid="An NHS number is 10 digits",
        ),
        FieldSpec("child.first_language", "First language (optional)"),
        FieldSpec(
            "child.interpreter_needed",
            "Is an interpreter needed?",
            "yesno",
            hint="For the child or the family.",
        ),
        FieldSpec("child.ethnicity", "Ethnicity (optional)"),
        FieldSpec("child.religion", "Religion (optional)"),
        FieldSpec(
            "child.disability", "Disability or special educational needs (optional)", "textarea"
        ),
        FieldSpec(
            "child.gp",
            "GP (optional)",
            "textarea",
            hint="The practice's name and address, if known.",
        ),
    ),
)


def _person(path: str, noun: str, *, first: str = "") -> Callable[[int], tuple[FieldSpec, ...]]:
    """The questions for one carer, household member or significant adult (row ``n``);
    ``first``: what to say when the first row's name is missing (it is required)."""

    def row(n: int) -> tuple[FieldSpec, ...]:
        p, who = f"{path}.{n}", f"{noun} {n + 1}"
        return (
            FieldSpec(
                f"{p}.name",
                "Full name",
                missing=first if first and n == 0 else f"Enter the name of {who}",
            ),
            FieldSpec(
                f"{p}.relationship",
                "Relationship to the child",
                hint="For example, mother, stepfather, foster carer, lodger",
                missing=f"Enter how {who} is related to the child",
            ),
            FieldSpec(
                f"{p}.dob", "Date of birth (optional)", "date", hint="For example, 14/3/1988"
            ),
            FieldSpec(f"{p}.address", "Address, if not the child's (optional)", "textarea"),
            FieldSpec(f"{p}.phone", "Telephone number (optional)", width="govuk-input--width-20"),
            FieldSpec(
                f"{p}.parental_responsibility", "Do they have parental responsibility?", "yesno"
            ),
            FieldSpec(f"{p}.alleged_perpetrator", "Are they the alleged perpetrator?", "yesno"),
        )

    return row


def _disclosure(n: int) -> tuple[FieldSpec, ...]:
    p, which = f"disclosures.{n}", f"disclosure {n + 1}"
    return (
        FieldSpec(
            f"{p}.by",
            "Who disclosed?",
            hint="For example, the child, a sibling",
            missing=f"Enter who made {which}",
        ),
        FieldSpec(
            f"{p}.to",
            "Who did they tell?",
            hint="Their name and role",
            missing=f"Enter who was told of {which}",
        ),
        FieldSpec(
            f"{p}.at",
            "When?",
            "moment",
            hint="For example, 4/12/2026 and 10:15.",
            missing=f"Enter when {which} was made",
        ),
        FieldSpec(
            f"{p}.summary",
            "What was said",
            "textarea",
            hint="In the words used, as far as you can.",
            missing=f"Say what was said in {which}",
        ),
    )


def _child_involved(n: int) -> tuple[FieldSpec, ...]:
    p = f"children.{n}"
    return (
        *_child(p, "the child" if n == 0 else f"child {n + 1}"),
        FieldSpec(
            f"{p}.upn",
            "Unique pupil number (UPN) (optional)",
            width="govuk-input--width-20",
            invalid=UPN_INVALID,
        ),
    )


def _evidence(n: int) -> tuple[FieldSpec, ...]:
    p, which = f"evidence.{n}", f"evidence {n + 1}"
    return (
        FieldSpec(f"{p}.description", "What is it?", missing=f"Describe {which}"),
        FieldSpec(
            f"{p}.kind",
            "Kind",
            "radios",
            (
                ("document", "Document"),
                ("image", "Image"),
                ("video", "Video"),
                ("device", "Device"),
                ("other", "Other"),
            ),
            missing=f"Select what kind of thing {which} is",
        ),
        FieldSpec(f"{p}.held_by", "Who holds it?", missing=f"Enter who holds {which}"),
    )


CHILDREN: Final = Repeat("children", "child", _child_involved, most=50, required=1)
EVIDENCE: Final = Repeat("evidence", "piece of evidence", _evidence, most=100)
CARERS: Final = Repeat(
    "carers",
    "parent or carer",
    _person("carers", "parent or carer", first="Enter the name of at least one parent or carer"),
    blank=2,
    most=20,
    required=1,
)
HOUSEHOLD: Final = Repeat("household", "household member", _person("household", "household member"))
SIGNIFICANT: Final = Repeat(
    "significant_adults", "significant adult", _person("significant_adults", "significant adult")
)
DISCLOSURES: Final = Repeat("disclosures", "disclosure", _disclosure, most=50)
