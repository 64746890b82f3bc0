"""Who may draft and send a referral, and the consent rule. Pure: no I/O.

- Drafting, choosing what goes, marking redactions and sending need
  :attr:`Permission.SEND_REFERRAL`: the DSL team (DSL and deputy DSLs).
- A referral whose form says consent was *not* given can be sent only by
  someone holding :attr:`Permission.SEND_WITHOUT_CONSENT`: the DSL, not a
  deputy. The form must then say why (``consent.no_consent_reason``, for
  example ``greater_risk``: seeking consent would put the child at greater
  risk); that reason is recorded on the referral and in the audit trail (the
  code only, never the explanation's text).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.referrals import Consent
from transfer.store.permissions import Actor, Permission, PermissionDenied

__all__ = [
    "ConsentDecision",
    "ConsentRequired",
    "check_send",
    "may_draft",
    "require_draft",
]


class ConsentRequired(PermissionDenied):
    """Consent was not given and the sender is not allowed to send without it."""


@dataclass(frozen=True)
class ConsentDecision:
    """What is recorded about consent when a referral is sent."""

    with_consent: bool
    #: The form's ``no_consent_reason`` when sent without consent.
    reason: str | None

    @property
    def audit_value(self) -> str:
        return "given" if self.with_consent else "not_given"


def may_draft(actor: Actor) -> bool:
    return actor.has(Permission.SEND_REFERRAL)


def require_draft(actor: Actor) -> None:
    """Raise :class:`PermissionDenied` unless ``actor`` is in the DSL team."""
    if not may_draft(actor):
        raise PermissionDenied(
            "only the DSL team (DSL or deputy DSL) may make or send a referral; "
            "tell your DSL about the concern instead"
        )


def check_send(actor: Actor, consent: Consent) -> ConsentDecision:
    """May ``actor`` send a referral with this consent? The decision, or an error."""
    require_draft(actor)
    if consent.consent_given:
        return ConsentDecision(with_consent=True, reason=None)
    if not actor.has(Permission.SEND_WITHOUT_CONSENT):
        raise ConsentRequired(
            "this referral is being sent without the parents' or carers' consent; only the "
            "DSL may do that: ask the DSL to send it"
        )
    # The form's validation makes the reason required when consent was not given.
    return ConsentDecision(with_consent=False, reason=consent.no_consent_reason)
