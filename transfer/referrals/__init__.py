"""Referrals to children's social care / the MASH, the LADO and the police.

- :mod:`transfer.referrals.forms`: reading a form or an outcome, errors naming the field;
- :mod:`transfer.referrals.consent`: who may draft and send, the consent rule (pure);
- :mod:`transfer.referrals.redaction`: applying redaction marks to text (pure);
- :mod:`transfer.referrals.package`: the DSL's selection to a sealed package;
- :mod:`transfer.referrals.service`: :class:`~transfer.referrals.service.Referrals`, the
  service (database), a façade over :mod:`~transfer.referrals.base` (plumbing, reading),
  :mod:`~transfer.referrals.drafts`, :mod:`~transfer.referrals.lifecycle` (sending,
  receipts, outcomes) and :mod:`~transfer.referrals.deadlines` (the deadline sweep);
- the routes are in :mod:`receivers.agency_node`, :mod:`receivers.portal` and
  :mod:`receivers.offline`.

See ``docs/referrals.md``.
"""
