"""Referral forms: children's social care / MASH, the LADO, the police.

One pydantic model per kind of referral, with the fields a DSL gives (see
``docs/referrals.md``). The form is what the agency reads: it goes into the
referral package as ``records/referral.json``. Required fields are enforced
here; :func:`transfer.referrals.forms.parse_form` turns a validation failure
into one message naming the field.

Also here: the outcome an agency reports back (MASH RAG rating and decision,
LADO strategy meeting and outcome, police crime reference), the DSL's
selection of records and the redaction marks, and the records the referral
service returns.

Pure: no I/O.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.text import Line, Prose

__all__ = [
    "FORM_SCHEMA_VERSION",
    "SCHEMAS",
    "Adult",
    "Allegation",
    "ChildDetails",
    "ChildInvolved",
    "Consent",
    "Disclosure",
    "Employer",
    "EvidenceItem",
    "HouseholdPerson",
    "LadoOutcome",
    "LadoReferral",
    "MashOutcome",
    "MashReferral",
    "NewRedaction",
    "PoliceOutcome",
    "PoliceReferral",
    "RedactionRecord",
    "ReferralEventRecord",
    "ReferralForm",
    "ReferralKind",
    "ReferralOutcome",
    "ReferralRecord",
    "ReferralState",
    "ReferralSummary",
    "Referrer",
    "SelectedItem",
]

FORM_SCHEMA_VERSION: Final = 1

ReferralKind = Literal["social_care", "lado", "police"]
#: "discarded" is only ever the state of the summary :meth:`Referrals.discard` returns:
#: a discarded draft is deleted.
ReferralState = Literal["draft", "sent", "delivered", "accepted", "rejected", "closed", "discarded"]
ReferralRoute = Literal["node", "portal", "offline"]

_Name = Annotated[Line, Field(min_length=1, max_length=200)]
#: Addresses, places, descriptions: may run over several lines.
_Short = Annotated[Prose, Field(min_length=1, max_length=500)]
_Text = Annotated[Prose, Field(min_length=1, max_length=100_000)]
_OptText = Annotated[Prose, Field(max_length=100_000)]
_Id = Annotated[Line, Field(min_length=1, max_length=64)]

#: Why consent was not sought or not given.
NoConsentReason = Literal[
    # Seeking consent would put the child at greater risk of harm (or risk an investigation).
    "greater_risk",
    # Parents/carers were asked and refused; the referral goes ahead because of the risk.
    "refused",
    # Parents/carers could not be contacted in the time the referral allows.
    "not_contactable",
    # Another reason, explained in ``explanation``.
    "other",
]

HarmType = Literal[
    "physical", "emotional", "sexual", "neglect", "domestic_abuse", "exploitation",
    "online", "self_harm", "radicalisation", "other",
]  # fmt: skip


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


# --------------------------------------------------------------- shared parts


class Referrer(_Model):
    """Who makes the referral (usually the DSL), and how the agency reaches them."""

    name: _Name
    role: _Name
    agency: _Name
    phone: Annotated[Line, Field(min_length=3, max_length=40)]
    email: Annotated[str, Field(max_length=200, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = (
        None
    )


class Consent(_Model):
    """Are the parents/carers aware, has consent been given, and if not, why not.

    Consent is not sought where that would put the child at greater risk
    (``no_consent_reason`` = ``greater_risk``). A referral without consent can
    be sent only by the DSL (not a deputy), and the reason is recorded.
    """

    parents_aware: bool
    consent_given: bool
    no_consent_reason: NoConsentReason | None = None
    explanation: _OptText = ""

    @model_validator(mode="after")
    def _reason_when_no_consent(self) -> Consent:
        if self.consent_given:
            if not self.parents_aware:
                raise ValueError("consent cannot have been given if the parents/carers are unaware")
            if self.no_consent_reason is not None:
                raise ValueError("no_consent_reason is only for a referral without consent")
        else:
            if self.no_consent_reason is None:
                raise ValueError(
                    "without consent, no_consent_reason is required (greater_risk, refused, "
                    "not_contactable or other)"
                )
            if self.no_consent_reason == "other" and not self.explanation:
                raise ValueError("explanation is required when no_consent_reason is 'other'")
        return self


class ChildDetails(_Model):
    """The child (for an unborn child: ``expected_delivery`` instead of ``dob``)."""

    forename: _Name
    surname: _Name
    dob: date | None = None
    expected_delivery: date | None = None
    address: _Short
    sex: Literal["female", "male", "other", "unknown"]
    ethnicity: Annotated[Line, Field(max_length=100)] = ""
    first_language: Annotated[Line, Field(max_length=100)] = ""
    interpreter_needed: bool = False
    disability: Annotated[Prose, Field(max_length=500)] = ""
    religion: Annotated[Line, Field(max_length=100)] = ""
    school: Annotated[Line, Field(max_length=200)] = ""
    upn: Annotated[str, Field(pattern=r"^[A-Z][0-9]{11}[0-9A-Z]$")] | None = None
    nhs_number: Annotated[str, Field(pattern=r"^[0-9]{10}$")] | None = None
    gp: Annotated[Prose, Field(max_length=300)] = ""

    @model_validator(mode="after")
    def _born_or_expected(self) -> ChildDetails:
        if self.dob is None and self.expected_delivery is None:
            raise ValueError("dob is required (or expected_delivery for an unborn child)")
        return self


class HouseholdPerson(_Model):
    """A carer, household member or significant adult."""

    name: _Name
    relationship: _Name
    dob: date | None = None
    address: Annotated[Prose, Field(max_length=500)] = ""
    phone: Annotated[Line, Field(max_length=40)] = ""
    parental_responsibility: bool = False
    #: This person is the alleged perpetrator.
    alleged_perpetrator: bool = False


class Disclosure(_Model):
    """A disclosure: who disclosed, to whom, when, and what was said."""

    by: _Name
    to: _Name
    at: AwareDatetime
    summary: _Text


# ------------------------------------------------------------ MASH / social care


class MashReferral(_Model):
    """A referral to children's social care / the MASH, or a request for early help."""

    kind: Literal["social_care"] = "social_care"
    form_version: Literal[1] = FORM_SCHEMA_VERSION
    #: A safeguarding (child protection / child in need) referral or an early-help request.
    request: Literal["safeguarding", "early_help"]
    child: ChildDetails
    carers: Annotated[tuple[HouseholdPerson, ...], Field(min_length=1, max_length=20)]
    household: Annotated[tuple[HouseholdPerson, ...], Field(max_length=30)] = ()
    significant_adults: Annotated[tuple[HouseholdPerson, ...], Field(max_length=30)] = ()
    referrer: Referrer
    consent: Consent
    reason: _Text
    harm_types: Annotated[tuple[HarmType, ...], Field(min_length=1, max_length=10)]
    disclosures: Annotated[tuple[Disclosure, ...], Field(max_length=50)] = ()
    impact_on_child: _Text
    risk_rating: Literal["low", "medium", "high"]
    risk_reasons: _Text
    previous_involvement: _OptText = ""
    other_professionals: _OptText = ""


# -------------------------------------------------------------------- LADO


class Employer(_Model):
    """The employer's contacts for the allegation (the school's)."""

    organisation: _Name
    head_teacher: _Name
    chair_of_governors: Annotated[Line, Field(max_length=200)] = ""
    hr_lead: Annotated[Line, Field(max_length=200)] = ""


class Adult(_Model):
    """The adult the allegation is about (one LADO referral per adult)."""

    forename: _Name
    surname: _Name
    sex: Literal["female", "male", "other", "unknown"]
    dob: date | None = None
    ethnicity: Annotated[Line, Field(max_length=100)] = ""
    address: Annotated[Prose, Field(max_length=500)] = ""
    role: _Name
    workplace: _Name
    length_of_service: Annotated[Line, Field(max_length=100)] = ""
    employment_basis: Literal["permanent", "temporary", "agency", "volunteer", "contractor"]
    previous_allegations: _OptText = ""
    other_contact_with_children: _OptText = ""


class Allegation(_Model):
    category: Literal["physical", "emotional", "sexual", "neglect", "conduct"]
    happened_on: date
    place: _Short
    description: _Text
    after_restraint: bool = False
    incidents: Annotated[int, Field(ge=1, le=1000)] = 1
    injury: _OptText = ""
    #: When the school first knew of the allegation: the one-working-day deadline runs from here.
    known_at: AwareDatetime
    made_by: _Name
    made_by_relationship: _Name


class ChildInvolved(_Model):
    forename: _Name
    surname: _Name
    dob: date | None = None
    upn: Annotated[str, Field(pattern=r"^[A-Z][0-9]{11}[0-9A-Z]$")] | None = None


LadoCriterion = Literal[
    # behaved in a way that has harmed a child, or may have harmed a child
    "harmed_child",
    # possibly committed a criminal offence against or related to a child
    "criminal_offence",
    # behaved towards a child or children in a way that indicates they may pose a risk of harm
    "risk_of_harm",
    # behaved or may have behaved in a way that indicates they may not be suitable to work
    # with children
    "unsuitable",
]


class LadoReferral(_Model):
    """A referral to the Local Authority Designated Officer: one per adult."""

    kind: Literal["lado"] = "lado"
    form_version: Literal[1] = FORM_SCHEMA_VERSION
    employer: Employer
    adult: Adult
    allegation: Allegation
    children: Annotated[tuple[ChildInvolved, ...], Field(min_length=1, max_length=50)]
    criteria: Annotated[tuple[LadoCriterion, ...], Field(min_length=1, max_length=4)]
    others_told: _OptText = ""
    actions_so_far: _Text
    referrer: Referrer
    consent: Consent


# -------------------------------------------------------------------- police


class EvidenceItem(_Model):
    """Evidence held: described here; documents and images go only if the DSL selects them."""

    description: _Short
    kind: Literal["document", "image", "video", "device", "other"]
    held_by: _Name


class AllegedOffender(_Model):
    name: _Name
    dob: date | None = None
    address: Annotated[Prose, Field(max_length=500)] = ""
    relationship: Annotated[Line, Field(max_length=200)] = ""


class PoliceReferral(_Model):
    """A referral to the police (a child protection / safeguarding unit)."""

    kind: Literal["police"] = "police"
    form_version: Literal[1] = FORM_SCHEMA_VERSION
    child: ChildDetails
    alleged_offender: AllegedOffender | None = None
    what_happened: _Text
    happened_at: AwareDatetime
    place: _Short
    evidence: Annotated[tuple[EvidenceItem, ...], Field(max_length=100)] = ()
    immediate_risk: bool
    other_agencies_informed: _OptText = ""
    existing_reference: Annotated[Line, Field(max_length=100)] | None = None
    referrer: Referrer
    consent: Consent


ReferralForm = Annotated[MashReferral | LadoReferral | PoliceReferral, Field(discriminator="kind")]


# ----------------------------------------------------------------- outcomes


class MashOutcome(_Model):
    kind: Literal["social_care"] = "social_care"
    rag: Literal["red", "amber", "green"]
    decision: Literal[
        "section_47", "section_17", "early_help", "signposted", "no_further_action", "other"
    ]
    notes: _OptText = ""


class LadoOutcome(_Model):
    kind: Literal["lado"] = "lado"
    strategy_meeting_at: AwareDatetime | None = None
    outcome: Literal["substantiated", "unsubstantiated", "malicious", "false", "unfounded"]
    dbs_referral: bool = False
    notes: _OptText = ""


class PoliceOutcome(_Model):
    kind: Literal["police"] = "police"
    crime_reference: Annotated[Line, Field(min_length=1, max_length=100)]
    notes: _OptText = ""


ReferralOutcome = Annotated[MashOutcome | LadoOutcome | PoliceOutcome, Field(discriminator="kind")]


# ------------------------------------------------------- selection, redaction

SelectableKind = Literal["concern", "triage", "action", "contact", "document"]


class SelectedItem(_Model):
    """One line of the pupil's chronology chosen to go with the referral."""

    kind: SelectableKind
    id: _Id


class NewRedaction(_Model):
    """A third-party name (or other text) to hide in the copy that is sealed.

    Either ``text`` (every occurrence, in every selected record's text fields),
    or ``record`` + ``field`` + ``start``/``end`` (one span, in characters, of
    one field of one selected record, as the preview shows it).
    """

    text: Annotated[Line, Field(min_length=2, max_length=500)] | None = None
    record: SelectedItem | None = None
    field: Annotated[Line, Field(min_length=1, max_length=64)] | None = None
    start: Annotated[int, Field(ge=0)] | None = None
    end: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> NewRedaction:
        span = (self.record, self.field, self.start, self.end)
        if self.text is not None:
            if any(v is not None for v in span):
                raise ValueError("give either text, or record, field, start and end; not both")
        elif any(v is None for v in span):
            raise ValueError("give either text, or record, field, start and end")
        elif self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class RedactionRecord(NewRedaction):
    id: _Id


# ------------------------------------------------------------------ records


class ReferralEventRecord(_Model):
    """One step of a referral's life, timed (no safeguarding text). ``actor`` is the member
    of staff's id (None: the node itself); ``actor_name`` and ``actor_role`` say who that is."""

    at: AwareDatetime
    action: str
    actor: str | None
    note: str = ""
    actor_name: str | None = None
    actor_role: str | None = None


class ReferralSummary(_Model):
    """A referral without its content (for lists)."""

    id: _Id
    org_id: _Id
    pupil_id: _Id
    kind: ReferralKind
    agency_org_id: _Id
    state: ReferralState
    route: ReferralRoute | None
    package_id: str | None
    due_on: date | None
    created_at: AwareDatetime
    updated_at: AwareDatetime


class ReferralRecord(ReferralSummary):
    """A referral with its form, selection, redactions, lifecycle and outcome."""

    form: ReferralForm
    selection: tuple[SelectedItem, ...]
    redactions: tuple[RedactionRecord, ...]
    sent_without_consent: bool
    consent_reason: str | None
    ciphertext_sha256: str | None
    agency_reference: str | None
    acknowledged_by: str | None
    rejection_reason: str | None
    outcome: ReferralOutcome | None
    handover: dict[str, str] | None
    events: tuple[ReferralEventRecord, ...]
    #: The agency's name, from the directory (None: not in the directory any more).
    agency_name: str | None = None


SCHEMAS: dict[str, type[BaseModel]] = {
    "referral-social-care": MashReferral,
    "referral-lado": LadoReferral,
    "referral-police": PoliceReferral,
    "referral-outcome-social-care": MashOutcome,
    "referral-outcome-lado": LadoOutcome,
    "referral-outcome-police": PoliceOutcome,
}
