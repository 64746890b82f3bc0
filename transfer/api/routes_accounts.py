"""Accounts in the HTTP API: sign-in, sessions, TOTP, API tokens, staff administration and
the two-person rule. The accounts service (``transfer.auth.service``) checks permissions."""

from __future__ import annotations

import logging

from aiohttp import web

from schemas.api import (
    NewStaff,
    NewToken,
    PasswordChange,
    PasswordReset,
    SessionInfo,
    SignIn,
    StaffChanges,
    TotpConfirm,
)
from schemas.records import StaffRecord
from transfer.api.routing import (
    ANYONE,
    API,
    ENROLLING,
    NOBODY,
    SESSION_ONLY,
    SIGNED_IN,
    Call,
    QueryParam,
    Route,
    _json,
)
from transfer.auth.records import (
    AccountStatus,
    ApprovalRecord,
    IssuedToken,
    RecoveryCodes,
    SignInResult,
    TokenInfo,
    TotpEnrolment,
)
from transfer.store.permissions import Permission

log = logging.getLogger("transfer.api")

# -------------------------------------------------------------- sign-in


async def sign_in(call: Call) -> web.StreamResponse:
    data = call.body_as(SignIn)
    result = await call.accounts.sign_in(
        data.org, data.username, data.password, totp=data.totp, recovery_code=data.recovery_code
    )
    return _json(result, 201)


async def whoami(call: Call) -> web.StreamResponse:
    p = call.who
    return _json(
        SessionInfo(
            staff_id=p.actor.staff_id,
            org_id=p.actor.org_id,
            display_name=p.actor.display_name,
            roles=tuple(sorted(r.value for r in p.actor.roles)),
            kind=p.kind,
            permissions=tuple(sorted(x.value for x in Permission if p.actor.has(x))),
        )
    )


async def sign_out(call: Call) -> web.StreamResponse:
    await call.accounts.sign_out(call.who)
    return _json(None)


async def begin_totp(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.begin_totp_enrolment(call.who), 201)


async def confirm_totp(call: Call) -> web.StreamResponse:
    code = call.body_as(TotpConfirm).code
    return _json(await call.accounts.confirm_totp_enrolment(call.who, code))


async def new_recovery_codes(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.regenerate_recovery_codes(call.who), 201)


async def change_password(call: Call) -> web.StreamResponse:
    data = call.body_as(PasswordChange)
    await call.accounts.change_password(call.who, data.current_password, data.new_password)
    return _json(None)


async def list_tokens(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.list_tokens(call.who))


async def create_token(call: Call) -> web.StreamResponse:
    data = call.body_as(NewToken)
    issued = await call.accounts.create_token(
        call.who,
        name=data.name,
        scopes=[s.value for s in data.scopes],
        expires_in_days=data.expires_in_days,
    )
    return _json(issued, 201)


async def revoke_token(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.revoke_token(call.who, call.path("token_id")))


# ------------------------------------------------------ staff administration


async def list_staff(call: Call) -> web.StreamResponse:
    return _json(await call.store.list_staff(call.who.actor))


async def create_staff(call: Call) -> web.StreamResponse:
    data = call.body_as(NewStaff)
    result = await call.accounts.create_account(
        call.who.actor,
        username=data.username,
        display_name=data.display_name,
        roles=[r.value for r in data.roles],
        password=data.password,
        email=data.email,
    )
    return _json(result, 202 if isinstance(result, ApprovalRecord) else 201)


async def get_staff(call: Call) -> web.StreamResponse:
    return _json(await call.store.get_staff(call.who.actor, call.path("staff_id")))


async def update_staff(call: Call) -> web.StreamResponse:
    data = call.body_as(StaffChanges)
    actor, staff_id = call.who.actor, call.path("staff_id")
    result: StaffRecord | ApprovalRecord
    if data.display_name is not None or data.email is not None or data.roles is None:
        result = await call.store.update_staff(
            actor, staff_id, display_name=data.display_name, email=data.email
        )
    if data.roles is not None:
        result = await call.accounts.set_roles(actor, staff_id, [r.value for r in data.roles])
    return _json(result, 202 if isinstance(result, ApprovalRecord) else 200)


async def deactivate_staff(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.deactivate(call.who.actor, call.path("staff_id")))


async def unlock_staff(call: Call) -> web.StreamResponse:
    await call.accounts.unlock(call.who.actor, call.path("staff_id"))
    return _json(None)


async def reset_password(call: Call) -> web.StreamResponse:
    data = call.body_as(PasswordReset)
    waiting = await call.accounts.reset_password(
        call.who.actor, call.path("staff_id"), data.password
    )
    return _json(waiting, 202)


async def reset_totp(call: Call) -> web.StreamResponse:
    waiting = await call.accounts.reset_totp(call.who.actor, call.path("staff_id"))
    return _json(waiting, 202)


async def list_staff_approvals(call: Call) -> web.StreamResponse:
    state = call.query.get("state", "pending")
    return _json(
        await call.accounts.list_approvals(call.who.actor, state=None if state == "all" else state)
    )


async def get_staff_approval(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.get_approval(call.who.actor, call.path("approval_id")))


async def approve_staff_change(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.approve(call.who.actor, call.path("approval_id")))


async def decline_staff_change(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.decline(call.who.actor, call.path("approval_id")))


async def sign_in_problems(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.sign_in_problems(call.who.actor))


ACCOUNT_ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        f"{API}/session",
        sign_in,
        "Sign in (password and TOTP or a recovery code)",
        "session",
        NOBODY,
        body=SignIn,
        response=SignInResult,
        status=201,
    ),
    Route(
        "GET",
        f"{API}/session",
        whoami,
        "Who the bearer token acts as",
        "session",
        ANYONE,
        response=SessionInfo,
    ),
    Route(
        "DELETE",
        f"{API}/session",
        sign_out,
        "Sign out (end this session)",
        "session",
        ENROLLING,
        status=204,
    ),
    Route(
        "POST",
        f"{API}/me/totp",
        begin_totp,
        "Start TOTP enrolment (otpauth URI and QR)",
        "session",
        ENROLLING,
        response=TotpEnrolment,
        status=201,
    ),
    Route(
        "POST",
        f"{API}/me/totp/confirm",
        confirm_totp,
        "Confirm TOTP enrolment with a first code; returns recovery codes",
        "session",
        ENROLLING,
        body=TotpConfirm,
        response=RecoveryCodes,
    ),
    Route(
        "POST",
        f"{API}/me/recovery-codes",
        new_recovery_codes,
        "Replace the recovery codes",
        "session",
        SESSION_ONLY,
        response=RecoveryCodes,
        status=201,
    ),
    Route(
        "PUT",
        f"{API}/me/password",
        change_password,
        "Change one's own password",
        "session",
        SESSION_ONLY,
        body=PasswordChange,
        status=204,
    ),
    Route(
        "GET",
        f"{API}/tokens",
        list_tokens,
        "One's own API tokens",
        "tokens",
        SESSION_ONLY,
        response=TokenInfo,
        many=True,
    ),
    Route(
        "POST",
        f"{API}/tokens",
        create_token,
        "Create a scoped API token (shown once)",
        "tokens",
        SESSION_ONLY,
        body=NewToken,
        response=IssuedToken,
        status=201,
    ),
    Route(
        "DELETE",
        f"{API}/tokens/{{token_id}}",
        revoke_token,
        "Revoke an API token",
        "tokens",
        SESSION_ONLY,
        response=TokenInfo,
    ),
    Route(
        "GET",
        f"{API}/staff",
        list_staff,
        "Staff of the organisation",
        "staff",
        SIGNED_IN,
        response=StaffRecord,
        many=True,
    ),
    Route(
        "POST",
        f"{API}/staff",
        create_staff,
        "Add a staff member with a first password (with a DSL-team or head-teacher role: "
        "202, waits for a DSL's approval)",
        "staff",
        SESSION_ONLY,
        body=NewStaff,
        response=StaffRecord,
        status=201,
        accepted=ApprovalRecord,
    ),
    Route(
        "GET",
        f"{API}/staff/{{staff_id}}",
        get_staff,
        "One staff member",
        "staff",
        SIGNED_IN,
        response=StaffRecord,
    ),
    Route(
        "PATCH",
        f"{API}/staff/{{staff_id}}",
        update_staff,
        "Change roles, name or email (granting or removing a DSL-team or head-teacher role: "
        "202, waits for a DSL's approval; never one's own roles)",
        "staff",
        SESSION_ONLY,
        body=StaffChanges,
        response=StaffRecord,
        accepted=ApprovalRecord,
    ),
    Route(
        "POST",
        f"{API}/staff/{{staff_id}}/deactivate",
        deactivate_staff,
        "Deactivate an account (sessions end, tokens revoked)",
        "staff",
        SESSION_ONLY,
        response=StaffRecord,
    ),
    Route(
        "POST",
        f"{API}/staff/{{staff_id}}/unlock",
        unlock_staff,
        "Unlock an account locked by failed sign-ins",
        "staff",
        SESSION_ONLY,
        status=204,
    ),
    Route(
        "PUT",
        f"{API}/staff/{{staff_id}}/password",
        reset_password,
        "Set a new password for someone (for the DSL team or a head teacher: 202, waits for "
        "a DSL's approval)",
        "staff",
        SESSION_ONLY,
        body=PasswordReset,
        status=204,
        accepted=ApprovalRecord,
    ),
    Route(
        "DELETE",
        f"{API}/staff/{{staff_id}}/totp",
        reset_totp,
        "Remove someone's TOTP, they must enrol again (for the DSL team or a head teacher: "
        "202, waits for a DSL's approval)",
        "staff",
        SESSION_ONLY,
        status=204,
        accepted=ApprovalRecord,
    ),
    Route(
        "GET",
        f"{API}/staff-approvals",
        list_staff_approvals,
        "Account changes waiting for a DSL's approval (or decided: ?state=)",
        "staff",
        SIGNED_IN,
        response=ApprovalRecord,
        many=True,
        query=(
            QueryParam("state", "pending (default), approved, declined, withdrawn, expired or all"),
        ),
    ),
    Route(
        "GET",
        f"{API}/staff-approvals/{{approval_id}}",
        get_staff_approval,
        "One account change request",
        "staff",
        SIGNED_IN,
        response=ApprovalRecord,
    ),
    Route(
        "POST",
        f"{API}/staff-approvals/{{approval_id}}/approve",
        approve_staff_change,
        "Approve an account change (a DSL other than whoever asked): it applies now",
        "staff",
        SESSION_ONLY,
        response=ApprovalRecord,
    ),
    Route(
        "POST",
        f"{API}/staff-approvals/{{approval_id}}/decline",
        decline_staff_change,
        "Decline an account change (or withdraw one's own request)",
        "staff",
        SESSION_ONLY,
        response=ApprovalRecord,
    ),
    Route(
        "GET",
        f"{API}/sign-in-problems",
        sign_in_problems,
        "Accounts locked or with failed sign-ins",
        "staff",
        SIGNED_IN,
        response=AccountStatus,
        many=True,
    ),
)
