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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, Literal

from pydantic import TypeAdapter, ValidationError

from schemas.records import PupilRecord
from schemas.referrals import LadoReferral, MashReferral, PoliceReferral, ReferralForm
from transfer.referrals.forms import describe_validation
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

Kind = Literal["social_care", "lado", "police"]
Widget = Literal["text", "textarea", "date", "moment", "radios", "checkboxes", "yesno", "number"]
AnyForm = MashReferral | LadoReferral | PoliceReferral
_FORM: TypeAdapter[AnyForm] = TypeAdapter(ReferralForm)

KIND_NAMES: Final[dict[str, str]] = {
    "social_care": "Children's social care (MASH)",
    "lado": "Local authority designated officer (LADO)",
    "police": "Police",
}


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
