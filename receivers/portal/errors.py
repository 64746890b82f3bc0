"""The portal's errors: each one is what the agency (or the DSL) is told."""

from __future__ import annotations

from transfer.errors import (
    AuthenticationError,
    NotFoundError,
    PolicyError,
)


class LinkNotValid(NotFoundError):
    """An unknown or altered link: the same answer for both, so nothing can be learnt."""

    slug = "portal-link-not-valid"
    title = "This link is not valid"


class LinkExpired(PolicyError):
    http_status = 410
    slug = "portal-link-expired"
    title = "This link has expired"


class LinkRevoked(PolicyError):
    http_status = 410
    slug = "portal-link-revoked"
    title = "This link has been withdrawn"


class LinkLocked(PolicyError):
    slug = "portal-link-locked"
    title = "This link is locked"


class LinkClosed(PolicyError):
    """The agency acknowledged the referral and the grace after it has passed."""

    http_status = 410
    slug = "portal-link-closed"
    title = "This link is closed"


class WrongPortalCode(AuthenticationError):
    """A wrong passcode or authenticator code."""

    slug = "portal-wrong-code"
    title = "The code is not right"


class WrongCurrentCode(WrongPortalCode):
    """A wrong code from the authenticator app an address uses now (to replace it)."""

    slug = "portal-wrong-current-code"


class AuthenticatorLocked(PolicyError):
    """Too many wrong codes from the current app: only the sending school's DSL can reset it."""

    slug = "portal-authenticator-locked"
    title = "The authenticator app cannot be replaced here"


class PortalSessionEnded(AuthenticationError):
    slug = "portal-session-ended"
    title = "Please open your link again"
