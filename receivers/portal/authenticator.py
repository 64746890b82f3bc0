"""The agency address's authenticator app: set up, replaced (with a code from the current
app) or reset by the sending school's DSL; both sides are told."""

from __future__ import annotations

import logging
import uuid
from typing import (
    Literal,
)

import segno
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, update

from receivers.portal import tokens
from receivers.portal.core import PortalCore
from receivers.portal.errors import (
    AuthenticatorLocked,
    WrongCurrentCode,
    WrongPortalCode,
)
from receivers.portal.records import (
    PickupInfo,
    PortalVisit,
    TotpSetup,
)
from receivers.portal.tables import PortalAgencyUser, PortalPickup
from transfer.auth import codes
from transfer.errors import (
    ConflictError,
    HandoverError,
    InputError,
)
from transfer.store.permissions import Actor

log = logging.getLogger("receivers.portal")


class Authenticator(PortalCore):
    """Setting up, replacing and resetting an agency address's authenticator app."""

    async def totp_setup(self, visit: PortalVisit, sealed: str | None = None) -> TotpSetup:
        """What the set-up page shows: a new secret (or the one sealed in ``sealed``, when the
        form is shown again), sealed to this session for the form. Changes nothing stored."""
        secret = codes.new_totp_secret()
        if sealed is not None:
            secret = self._open_setup(visit, sealed)
        async with self.store.sessions() as s:
            user = await s.get(PortalAgencyUser, visit.email)
        uri = codes.provisioning_uri(secret, account=visit.email, issuer="Handover referrals")
        svg = segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff")
        return TotpSetup(
            secret=secret,
            uri=uri,
            svg=svg,
            sealed=tokens.seal_totp_setup(
                self._kek, session_id=visit.session_id, email=visit.email, secret=secret
            ),
            replacing=user is not None and user.totp_sealed is not None,
        )

    def _open_setup(self, visit: PortalVisit, sealed: str) -> str:
        secret = tokens.open_totp_setup(
            self._kek, session_id=visit.session_id, email=visit.email, sealed=sealed
        )
        if secret is None:
            raise InputError("this set-up form has expired; open the set-up page again")
        return secret

    async def enrol_totp(
        self,
        visit: PortalVisit,
        *,
        setup: str,
        code: str,
        current_code: str | None = None,
        ip: str | None = None,
    ) -> bool:
        """Set up (or replace) the agency address's authenticator app; True if replaced.

        ``setup`` is the sealed secret of the set-up form and ``code`` a code from the new
        app. Replacing an app that is set up needs ``current_code``, a code from it: a
        session alone (a passcode read out once) is not enough to take over every later
        referral to the address. Wrong current codes are counted per address before they
        are checked; past ``max_attempts`` only the sending school's DSL can reset the app
        (:meth:`reset_totp`). The agency address and the school's DSL team are told.
        """
        secret = self._open_setup(visit, setup)
        now = self.now()
        step = codes.matching_step(secret, code, now, self.settings.totp_drift_steps)
        if step is None:
            raise WrongPortalCode(
                "that code from the new app is not right; check the time on your phone and "
                "try the next code"
            )
        async with self.store.sessions() as s:
            user = await s.get(PortalAgencyUser, visit.email)
        replacing = user is not None and user.totp_sealed is not None
        row = await self._pickup(visit.pickup_id)
        if replacing:
            assert user is not None
            if not (current_code or "").strip():
                raise WrongCurrentCode(
                    "enter a code from the authenticator app this address uses now"
                )
            await self._check_current_code(user, current_code or "", row, ip)
        sealed = self._seal_totp(visit.email, secret)
        try:
            async with self.store.sessions() as s, s.begin():
                if user is None:
                    s.add(
                        PortalAgencyUser(
                            email=visit.email,
                            created_at=now,
                            totp_sealed=sealed,
                            totp_last_step=step,
                            enrolled_at=now,
                            totp_failed_count=0,
                        )
                    )
                    await s.flush()
                else:
                    # Only the app that was checked is replaced (or none, if none was set up).
                    held = (
                        PortalAgencyUser.totp_sealed == user.totp_sealed
                        if replacing
                        else PortalAgencyUser.totp_sealed.is_(None)
                    )
                    result = await s.execute(
                        update(PortalAgencyUser)
                        .where(PortalAgencyUser.email == visit.email, held)
                        .values(
                            totp_sealed=sealed,
                            totp_pending_sealed=None,
                            totp_last_step=step,
                            enrolled_at=now,
                            totp_failed_count=0,
                        )
                    )
                    if not getattr(result, "rowcount", 0):
                        raise ConflictError(
                            "the authenticator app for this address was changed a moment ago; "
                            "open the set-up page again"
                        )
                kind = "totp_replaced" if replacing else "totp_enrolled"
                self._event(s, visit.pickup_id, kind, ip=ip, who=visit.email)
        except sa_exc.IntegrityError:
            raise ConflictError(
                "the authenticator app for this address was set up a moment ago; "
                "open the set-up page again"
            ) from None
        await self._audit(
            "portal.totp_replaced" if replacing else "portal.totp_enrolled", None, row, ip=ip
        )
        await self._tell_both(row, "replaced" if replacing else "enrolled")
        return replacing

    async def _check_current_code(
        self, user: PortalAgencyUser, code: str, row: PortalPickup, ip: str | None
    ) -> None:
        """Check a code from the address's current app; counted first, so parallel guesses
        cannot pass ``max_attempts``. Raises :class:`WrongCurrentCode` or
        :class:`AuthenticatorLocked`."""
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                update(PortalAgencyUser)
                .where(PortalAgencyUser.email == user.email)
                .values(totp_failed_count=PortalAgencyUser.totp_failed_count + 1)
                .execution_options(synchronize_session=False)
            )
            attempt = int(
                await s.scalar(
                    select(PortalAgencyUser.totp_failed_count).where(
                        PortalAgencyUser.email == user.email
                    )
                )
                or 0
            )
        limit = self.settings.max_attempts
        locked_text = (
            "too many wrong codes from the authenticator app this address uses; the school "
            "that sent you this referral can reset it (ask their safeguarding lead)"
        )
        if attempt > limit:
            await self._audit("portal.totp_replace_refused", None, row, "refused", ip=ip)
            raise AuthenticatorLocked(locked_text)
        if await self._check_totp(user, code):
            return
        async with self.store.sessions() as s, s.begin():
            self._event(s, row.id, "totp_replace_failed", ip=ip, who=user.email)
        await self._audit("portal.totp_replace_failed", None, row, "refused", ip=ip)
        left = limit - attempt
        if left <= 0:
            raise AuthenticatorLocked(locked_text)
        raise WrongCurrentCode(
            f"that code from the app you use now is not right; {left} more "
            f"{'try' if left == 1 else 'tries'}"
        )

    async def reset_totp(self, actor: Actor, pickup_id: str) -> PickupInfo:
        """The sending school's DSL removes the authenticator app of a pickup's agency address.

        For an agency that lost its phone, or an app set up by someone who should not
        have: the address signs in with a passcode again and may set up a new app. The
        agency address and the DSL team are told.
        """
        await self._require(actor, "portal.totp_reset", {"pickup": pickup_id[:36]})
        async with self.store.sessions() as s, s.begin():
            row = await self._own(s, actor, pickup_id)
            result = await s.execute(
                update(PortalAgencyUser)
                .where(
                    PortalAgencyUser.email == row.email,
                    PortalAgencyUser.totp_sealed.is_not(None)
                    | (PortalAgencyUser.totp_failed_count > 0),
                )
                .values(
                    totp_sealed=None,
                    totp_pending_sealed=None,
                    totp_last_step=None,
                    enrolled_at=None,
                    totp_failed_count=0,
                )
            )
            if not getattr(result, "rowcount", 0):
                raise ConflictError(f"{row.email} has no authenticator app set up here")
            self._event(s, row.id, "totp_reset", who=actor.staff_id)
        await self._audit("portal.totp_reset", actor.staff_id, row)
        await self._tell_both(row, "reset")
        return await self.get_pickup(actor, pickup_id)

    async def _tell_both(
        self, row: PortalPickup, what: Literal["enrolled", "replaced", "reset"]
    ) -> None:
        """Tell the agency address (e-mail) and the sending school's DSL team (an alert)."""
        org = await self.store.get_organisation(row.org_id)
        when = f"{self.now():%-d %B %Y at %H:%M} UTC"
        done = {
            "enrolled": "was set up",
            "replaced": "was replaced by a new one",
            "reset": f"was removed by {org.name}",
        }[what]
        if self.mailer is not None and self.mailer.enabled:
            body = (
                f"The authenticator app used to sign in to referrals sent to {row.email} "
                f"through Handover {done} on {when}.\n\n"
            )
            if what == "reset":
                body += (
                    "Next time a referral comes, sign in with the passcode the school gives "
                    "you by telephone; you can then set up an app again.\n"
                )
            else:
                body += (
                    "Whoever holds that app can sign in to later referrals sent to this "
                    f"address. If this was not you, contact {org.name} at once and ask their "
                    "safeguarding lead to reset it.\n"
                )
            try:
                await self.mailer.send(
                    [row.email], f"Your Handover authenticator app {done.split(' by ')[0]}", body
                )
            except HandoverError as err:
                log.warning(
                    "could not tell %s that its authenticator app %s: %s",
                    row.email,
                    done,
                    err.diagnostics(),
                )
        if self.alerts is not None:
            message = (
                f"The authenticator app that {row.email} uses to sign in to your referrals "
                f"{done} on {when}, on the pickup of referral {row.referral_id}."
            )
            if what != "reset":
                message += (
                    " If the agency did not expect this, reset its app (the pickup's "
                    "reset-authenticator action) and withdraw the links still open to it."
                )
            subject = {
                "enrolled": "An agency set up an authenticator app",
                "replaced": "An agency's authenticator app was replaced",
                "reset": "An agency's authenticator app was reset",
            }[what]
            try:
                await self.alerts.notify(
                    row.org_id,
                    key=f"portal-authenticator:{uuid.uuid4()}",
                    level="info",
                    subject=subject,
                    message=message,
                    ref=row.id,
                )
            except HandoverError as err:
                log.error("could not alert the DSL team of %s: %s", row.org_id, err.diagnostics())
