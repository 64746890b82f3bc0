"""Per kind of agency: which form it takes, which package kind, and the deadline rule.

Pure: no I/O. The referral service asks :func:`rule_for` which form a
directory entry of kind ``social_care``, ``lado`` or ``police`` takes, refuses
a form sent to the wrong kind of agency (:func:`check_addressee`), and asks
:func:`due_on` when the referral must be sent:

- LADO: within one working day (Monday to Friday, not a bank holiday) of the
  allegation becoming known to the school (``allegation.known_at``, read as a
  date in England);
- children's social care / MASH and the police: immediately, with no
  working-day allowance; the service records no deadline, and the DSL is
  expected to send the same day (a police referral with ``immediate_risk``
  means phoning 999 first: the package is the written follow-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final
from zoneinfo import ZoneInfo

from schemas.manifest import PackageKind
from schemas.referrals import LadoReferral, MashReferral, PoliceReferral, ReferralKind
from transfer.deadlines import SchoolCalendar, working_days_after
from transfer.errors import InputError

__all__ = [
    "ENGLAND",
    "RULES",
    "AgencyRule",
    "check_addressee",
    "due_on",
    "rule_for",
]

ENGLAND: Final = ZoneInfo("Europe/London")

Form = MashReferral | LadoReferral | PoliceReferral


@dataclass(frozen=True)
class AgencyRule:
    kind: ReferralKind
    label: str
    form: type[Form]
    package_kind: PackageKind
    #: Working days after the allegation/concern became known; None: no fixed deadline.
    working_days: int | None


RULES: Final[dict[str, AgencyRule]] = {
    "social_care": AgencyRule(
        "social_care", "children's social care / MASH", MashReferral,
        "referral_social_care", None,
    ),
    "lado": AgencyRule("lado", "the LADO", LadoReferral, "referral_lado", 1),
    "police": AgencyRule("police", "the police", PoliceReferral, "referral_police", None),
}  # fmt: skip


def rule_for(kind: str) -> AgencyRule:
    """The rule for an agency kind; :class:`InputError` if that kind takes no referrals."""
    rule = RULES.get(kind)
    if rule is None:
        raise InputError(
            f"an organisation of kind {kind[:40]!r} does not take referrals; referrals go to "
            "children's social care (social_care), the LADO (lado) or the police (police)"
        )
    return rule


def check_addressee(form: Form, agency_kind: str, agency_name: str) -> AgencyRule:
    """Refuse a form addressed to the wrong kind of agency; the agency's rule otherwise."""
    rule = rule_for(agency_kind)
    if not isinstance(form, rule.form):
        wanted = RULES[form.kind].label
        raise InputError(
            f"{agency_name[:100]} is {rule.label}; a {form.kind} referral goes to {wanted}"
        )
    return rule


def due_on(form: Form, calendar: SchoolCalendar) -> date | None:
    """The last day the referral may be sent, or None when the rule has no deadline."""
    rule = RULES[form.kind]
    if rule.working_days is None or not isinstance(form, LadoReferral):
        return None
    known = form.allegation.known_at.astimezone(ENGLAND).date()
    return working_days_after(known, rule.working_days, calendar)
