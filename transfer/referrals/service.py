"""The referral service: drafts, selection, redaction, sealing, lifecycle, outcomes, deadlines.

:class:`Referrals` works over the concern store (its engine, key ring and
audit door), the node's key files (the school's signing key) and the
directory (the agency's kind and ``age1…`` recipient). Every method checks
the actor (:mod:`transfer.referrals.consent`), is one transaction, audits
``referral.*`` events (codes and ids only, never text) and writes the steps a
DSL needs to see into the pupil's chronology (``referral.sent``...).

It is a façade over its parts, each a class over :class:`~transfer.referrals.base.ReferralsBase`
(the plumbing, and reading referrals back):

- :mod:`transfer.referrals.drafts`: drafting, choosing entries, redaction marks, discarding;
- :mod:`transfer.referrals.lifecycle`: sealing and sending, taking back, receipts,
  acknowledgements, rejections, hand-overs and outcomes, through the referral machine;
- :mod:`transfer.referrals.deadlines`: drafts due or overdue, and the alert sweep.

Lifecycle: ``draft`` → ``sent`` → ``delivered`` → ``accepted`` (with the
agency's reference) or ``rejected`` (with a reason) → ``closed`` (outcome
recorded). Each step is timed in ``referral_events``.

The routes (``receivers/``) call :meth:`Referrals.seal` to make the package
and then deliver it their way; receipts and acknowledgements come back through
:meth:`~Referrals.record_delivery`, :meth:`~Referrals.record_acknowledgement` and
:meth:`~Referrals.record_rejection`.
"""

from __future__ import annotations

from transfer.referrals.base import AgencyDirectory, AgencyEntry, DeadlineAlerts
from transfer.referrals.deadlines import ReferralDeadlines, alert_key, referral_deadline_sweep
from transfer.referrals.drafts import ReferralDrafts
from transfer.referrals.lifecycle import (
    NothingSelectedError,
    ReferralLifecycle,
    SealedReferral,
    check_selection,
)

__all__ = [
    "AgencyDirectory",
    "AgencyEntry",
    "DeadlineAlerts",
    "NothingSelectedError",
    "Referrals",
    "SealedReferral",
    "alert_key",
    "check_selection",
    "referral_deadline_sweep",
]


class Referrals(ReferralDrafts, ReferralLifecycle, ReferralDeadlines):
    """The referrals of the organisations on one node."""
