"""The pickup portal: a referral package offered to an agency without a node.

A DSL makes a *pickup* (:meth:`PickupPortal.create_pickup`) from a referral
package encrypted to their own organisation's key. The node re-encrypts it,
streaming, to a fresh X25519 identity made for this pickup alone, and keeps
only that ciphertext (``<data dir>/portal/<pickup id>.age``). The identity's
secret is sealed under a key derived from the node's KEK *and* the link
token; only the token's hash is stored. The agency's registered address gets
the one-time link by e-mail (when SMTP is configured; otherwise the DSL is
shown it to pass on); the passcode is shown to the DSL once, to read out.

The agency user signs in with the link and the passcode (or, once enrolled,
a TOTP code), sees the referral, downloads the documents (decrypted chunk by
chunk, never to disk) and acknowledges receipt with their name and the
agency's reference. Every step is recorded (``portal_events``: who, when,
what, from which address) and audited (``portal.*``), and the acknowledgement
is passed on to the referrals lifecycle.

The service is one class, :class:`PickupPortal`, made of its parts: the sending
school's side (:mod:`~receivers.portal.pickups`), the agency's visit
(:mod:`~receivers.portal.visits`), its downloads (:mod:`~receivers.portal.downloads`)
and its authenticator app (:mod:`~receivers.portal.authenticator`), over a shared
core (:mod:`~receivers.portal.core`). The names callers import from here are
re-exported.
"""

from __future__ import annotations

from receivers.portal.authenticator import Authenticator
from receivers.portal.contracts import (
    MAX_ACK_GRACE_MINUTES,
    MAX_RECORD_BYTES,
    OPEN_PATH,
    PORTAL_DIR,
    AcknowledgementSink,
    Clock,
    DeliverySink,
    PickupMailer,
    PortalSettings,
    TeamAlerts,
    normalise_email,
    utc_now,
)
from receivers.portal.downloads import Downloads
from receivers.portal.errors import (
    AuthenticatorLocked,
    LinkClosed,
    LinkExpired,
    LinkLocked,
    LinkNotValid,
    LinkRevoked,
    PortalSessionEnded,
    WrongCurrentCode,
    WrongPortalCode,
)
from receivers.portal.pickups import Pickups
from receivers.portal.visits import Visits


class PickupPortal(Pickups, Visits, Downloads, Authenticator):
    """The pickup portal of one node. See the module docstring and ``docs/portal.md``."""


__all__ = [
    "MAX_ACK_GRACE_MINUTES",
    "MAX_RECORD_BYTES",
    "OPEN_PATH",
    "PORTAL_DIR",
    "AcknowledgementSink",
    "AuthenticatorLocked",
    "Clock",
    "DeliverySink",
    "LinkClosed",
    "LinkExpired",
    "LinkLocked",
    "LinkNotValid",
    "LinkRevoked",
    "PickupMailer",
    "PickupPortal",
    "PortalSessionEnded",
    "PortalSettings",
    "TeamAlerts",
    "WrongCurrentCode",
    "WrongPortalCode",
    "normalise_email",
    "utc_now",
]
