"""Administration: staff accounts (administrator role; no concern content anywhere here).

The list of accounts (name, roles, active / locked / deactivated / invited), inviting
someone by a one-time link (the administrator never types a password: the person
chooses their own at ``/invitation/...`` and sets up their authenticator app at once),
changing roles, deactivating, unlocking and resetting two-factor sign-in. Changes the
two-person rule holds back show "waiting for a DSL's approval"; a DSL approves or
declines them on ``/admin/approvals``. Every decision is the services'
(:class:`transfer.auth.service.Accounts`, :mod:`transfer.auth.invitations`,
:mod:`transfer.auth.approvals`): nobody raises their own roles, whatever the page sends.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from transfer.auth.invitations import InvitationInvalid, IssuedInvitation, StaffLine
from transfer.auth.records import ApprovalRecord
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.store.permissions import Permission, PermissionDenied, Role
from transfer.web.core import (
    ADMIN_PERMISSIONS,
    CSRF_FIELD,
    FORM_KEY,
    PRE_COOKIE,
    ROLE_NAMES,
    SESSION_COOKIE,
    CsrfRefused,
    FormErrors,
    Visit,
    WebRoute,
    form_data,
    webapp,
)
from transfer.web.rendering import redirect
from transfer.web.tokens import KeptForm

STATES: Final = {
    "active": ("Active", "govuk-tag--green"),
    "locked": ("Locked", "govuk-tag--red"),
    "deactivated": ("Deactivated", "govuk-tag--grey"),
    "invited": ("Invited", "govuk-tag--blue"),
    "invitation expired": ("Invitation expired", "govuk-tag--yellow"),
}
_DONE: Final = {
    "roles": "The roles have been changed. Their sessions have ended, so the new roles apply "
    "from their next sign-in.",
    "waiting": "This change is waiting for a DSL's approval. The DSL team has been alerted; "
    "it happens when a DSL approves it.",
    "deactivated": "The account has been deactivated. Its sessions and API tokens have ended.",
    "unlocked": "The account has been unlocked.",
    "two-factor": "Their authenticator app has been removed. They set up a new one when they "
    "next sign in.",
    "approved": "The change has been approved and made.",
    "declined": "The change has been declined. Nothing was changed.",
}
_KINDS: Final = {
    "create_account": "New account",
    "change_roles": "Change of roles",
    "reset_password": "New password",
    "reset_totp": "Remove authenticator app",
}


def role_names(roles: Any) -> str:
    return ", ".join(ROLE_NAMES[r] for r in Role if r.value in set(roles)) or "No role"


def _need(visit: Visit, permission: Permission) -> None:
    """A page only for those who hold ``permission`` (the services refuse the rest anyway)."""
    if not visit.actor.has(permission):
        raise PermissionDenied("this page is for your school's administrator")


def _role_items(chosen: Any) -> list[dict[str, Any]]:
    return [
        {"value": r.value, "text": ROLE_NAMES[r], "checked": r.value in set(chosen)} for r in Role
    ]


# ------------------------------------------------------------------ the list


async def staff_list(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    _need(visit, Permission.MANAGE_STAFF)
    lines = await app.accounts.invitations.lines(visit.actor)
    waiting = await app.accounts.list_approvals(visit.actor)
    by_person: dict[str, list[ApprovalRecord]] = {}
    for a in waiting:
        by_person.setdefault(a.staff_id or "", []).append(a)
    return app.page(
        request,
        "admin_staff.html",
        visit,
        title="Staff accounts",
        lines=lines,
        admin_here="/admin/staff",
        admin_sections=admin_sections(visit),
        states=STATES,
        role_names=role_names,
        waiting=by_person,
        new_accounts=[a for a in waiting if a.staff_id is None],
    )


async def _line(request: web.Request, visit: Visit, staff_id: str) -> StaffLine:
    lines = await webapp(request).accounts.invitations.lines(visit.actor)
    for line in lines:
        if line.staff_id == staff_id:
            return line
    raise NotFoundError("no such staff member in your organisation")


async def _person_page(
    request: web.Request,
    visit: Visit,
    *,
    chosen: Any = None,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    app = webapp(request)
    _need(visit, Permission.MANAGE_STAFF)
    line = await _line(request, visit, request.match_info["staff_id"])
    waiting = [
        a for a in await app.accounts.list_approvals(visit.actor) if a.staff_id == line.staff_id
    ]
    return app.page(
        request,
        "admin_person.html",
        visit,
        title=line.display_name,
        line=line,
        states=STATES,
        role_names=role_names,
        waiting=waiting,
        kinds=_KINDS,
        roles=_role_items(line.roles if chosen is None else chosen),
        own=line.staff_id == visit.actor.staff_id,
        status=400 if errors else 200,
        errors=errors,
        notice=notice,
        done=_DONE.get(request.query.get("done", "")),
    )


async def person(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _person_page(request, visit)


async def kept_roles(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    return await _person_page(
        request,
        visit,
        chosen=kept.values("roles"),
        notice="You were signed out, so nothing was changed. The roles you chose have been "
        "kept: check them and save again.",
    )


async def change_roles(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    staff_id = request.match_info["staff_id"]
    chosen = request[FORM_KEY].getall("roles", [])
    errors = FormErrors()
    if not chosen or not set(chosen) <= {r.value for r in Role}:
        errors.add("roles", "Select at least one role")
        return await _person_page(request, visit, chosen=chosen, errors=errors)
    try:
        result = await app.accounts.set_roles(visit.actor, staff_id, chosen)
    except ConflictError as err:
        errors.add("roles", _sentence(err.diagnostics()))
        return await _person_page(request, visit, chosen=chosen, errors=errors)
    done = "waiting" if isinstance(result, ApprovalRecord) else "roles"
    return redirect(f"/admin/staff/{staff_id}?done={done}")


async def _confirm_page(request: web.Request, visit: Visit, what: str) -> web.StreamResponse:
    _need(visit, Permission.MANAGE_STAFF)
    line = await _line(request, visit, request.match_info["staff_id"])
    return webapp(request).page(
        request,
        "admin_confirm.html",
        visit,
        line=line,
        what=what,
        title=(
            f"Deactivate {line.display_name}'s account?"
            if what == "deactivate"
            else f"Remove {line.display_name}'s authenticator app?"
        ),
    )


async def confirm_deactivate(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _confirm_page(request, visit, "deactivate")


async def confirm_two_factor(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _confirm_page(request, visit, "two-factor")


async def deactivate(request: web.Request, visit: Visit) -> web.StreamResponse:
    staff_id = request.match_info["staff_id"]
    await webapp(request).accounts.deactivate(visit.actor, staff_id)
    return redirect(f"/admin/staff/{staff_id}?done=deactivated")


async def unlock(request: web.Request, visit: Visit) -> web.StreamResponse:
    staff_id = request.match_info["staff_id"]
    await webapp(request).accounts.unlock(visit.actor, staff_id)
    return redirect(f"/admin/staff/{staff_id}?done=unlocked")


async def reset_two_factor(request: web.Request, visit: Visit) -> web.StreamResponse:
    staff_id = request.match_info["staff_id"]
    waiting = await webapp(request).accounts.reset_totp(visit.actor, staff_id)
    return redirect(f"/admin/staff/{staff_id}?done={'waiting' if waiting else 'two-factor'}")


# ------------------------------------------------------------------ inviting


def _invite_values(source: Any) -> dict[str, Any]:
    if isinstance(source, KeptForm):
        return {k: source.value(k) for k in ("display_name", "username", "email")} | {
            "roles": source.values("roles")
        }
    return {k: source.get(k, "").strip() for k in ("display_name", "username", "email")} | {
        "roles": source.getall("roles", [])
    }


async def _invite_page(
    request: web.Request,
    visit: Visit,
    values: dict[str, Any],
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    _need(visit, Permission.MANAGE_STAFF)
    return webapp(request).page(
        request,
        "admin_invite.html",
        visit,
        title="Invite someone",
        values=values,
        roles=_role_items(values["roles"]),
        status=400 if errors else 200,
        errors=errors,
        notice=notice,
    )


async def show_invite(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _invite_page(
        request, visit, {"display_name": "", "username": "", "email": "", "roles": ["staff"]}
    )


async def kept_invite(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    return await _invite_page(
        request,
        visit,
        _invite_values(kept),
        notice="You were signed out, so nobody was invited. What you typed has been kept: "
        "check it and send again.",
    )


async def invite(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    values = _invite_values(request[FORM_KEY])
    errors = FormErrors()
    if not values["display_name"]:
        errors.add("display_name", "Enter their full name")
    elif len(values["display_name"]) > 200:
        errors.add("display_name", "The name must be 200 characters or fewer")
    if not values["username"]:
        errors.add("username", "Enter a username for them to sign in with")
    if values["email"] and ("@" not in values["email"] or len(values["email"]) > 320):
        errors.add("email", "Enter an email address like name@school.sch.uk, or leave it empty")
    if not values["roles"] or not set(values["roles"]) <= {r.value for r in Role}:
        errors.add("roles", "Select at least one role")
    if errors:
        return await _invite_page(request, visit, values, errors=errors)
    try:
        issued = await app.accounts.invitations.invite(
            visit.actor,
            username=values["username"],
            display_name=values["display_name"],
            roles=values["roles"],
            email=values["email"] or None,
        )
    except ConflictError:
        errors.add("username", "This username is taken already: choose another")
        return await _invite_page(request, visit, values, errors=errors)
    except InputError as err:
        errors.add("username", _sentence(err.diagnostics()))
        return await _invite_page(request, visit, values, errors=errors)
    return _link_page(request, visit, issued)


def _link_page(request: web.Request, visit: Visit, issued: IssuedInvitation) -> web.Response:
    # The node's public address (as in alerts' links), not the Host header a proxy passes on.
    origin = webapp(request).services.config.node.base_url.rstrip("/")
    return webapp(request).page(
        request,
        "admin_invited.html",
        visit,
        title=f"Invitation for {issued.staff.display_name}",
        issued=issued,
        link=origin + issued.path,
        role_names=role_names,
    )


async def reinvite(request: web.Request, visit: Visit) -> web.StreamResponse:
    issued = await webapp(request).accounts.invitations.reinvite(
        visit.actor, request.match_info["staff_id"]
    )
    return _link_page(request, visit, issued)


# ------------------------------------------------------------------ the invited person


async def _invitation_page(
    request: web.Request, token: str, *, errors: FormErrors | None = None
) -> web.StreamResponse:
    app = webapp(request)
    try:
        info = await app.accounts.invitations.info(token)
    except InvitationInvalid as err:
        return app.page(
            request,
            "error.html",
            None,
            title="This invitation link does not work",
            status=410,
            text=_sentence(err.diagnostics()),
            status_code=410,
        )
    binding, fresh = app.pre_binding(request)
    response = app.page(
        request,
        "invitation.html",
        None,
        title="Choose your password",
        info=info,
        org_name=await app.org_name(info.org_id),
        token=token,
        csrf=app.keys.csrf_token(binding),
        status=400 if errors else 200,
        errors=errors,
    )
    if fresh:
        app.set_cookie(response, request, PRE_COOKIE, binding)
    return response


async def show_invitation(request: web.Request, visit: Visit | None) -> web.StreamResponse:
    return await _invitation_page(request, request.match_info["token"])


async def accept_invitation(request: web.Request, visit: Visit | None) -> web.StreamResponse:
    app = webapp(request)
    data = await form_data(request)
    binding = request.cookies.get(app.cookie_name(request, PRE_COOKIE), "")
    if not app.keys.csrf_valid(binding, data.get(CSRF_FIELD, "")):
        raise CsrfRefused(
            "this form has expired or was not sent from this service; open the invitation "
            "link again"
        )
    token = data.get("token", "")
    new, again = data.get("new_password", ""), data.get("confirm_password", "")
    errors = FormErrors()
    if not new:
        errors.add("new_password", "Choose a password")
    elif new != again:
        errors.add("confirm_password", "The passwords do not match")
    if errors:
        return await _invitation_page(request, token, errors=errors)
    try:
        result = await app.accounts.invitations.accept(token, new)
    except InvitationInvalid:
        return await _invitation_page(request, token)
    except InputError as err:
        errors.add("new_password", _sentence(err.diagnostics()))
        return await _invitation_page(request, token, errors=errors)
    where = "/sign-in/authenticator" if result.state == "must_enrol_totp" else "/"
    response = redirect(where)
    app.set_cookie(response, request, SESSION_COOKIE, result.token)
    app.clear_cookie(response, request, PRE_COOKIE)
    return response


# ------------------------------------------------------------------ approvals (DSL)


async def approvals(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    pending = await app.accounts.list_approvals(visit.actor)
    return app.page(
        request,
        "admin_approvals.html",
        visit,
        title="Account changes waiting for approval",
        admin_here="/admin/approvals",
        admin_sections=admin_sections(visit),
        pending=pending,
        kinds=_KINDS,
        role_names=role_names,
        may_decide=visit.actor.has(Permission.APPROVE_STAFF_CHANGES),
        done=_DONE.get(request.query.get("done", "")),
    )


async def approve(request: web.Request, visit: Visit) -> web.StreamResponse:
    await webapp(request).accounts.approve(visit.actor, request.match_info["approval_id"])
    return redirect("/admin/approvals?done=approved")


async def decline(request: web.Request, visit: Visit) -> web.StreamResponse:
    await webapp(request).accounts.decline(visit.actor, request.match_info["approval_id"])
    return redirect("/admin/approvals?done=declined")


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return (text[:1].upper() + text[1:] + ".") if text else text


_ONE: Final = "/admin/staff/{staff_id}"


#: The parts of the Administration area, and what each needs (the services decide the rest).
SECTIONS: Final = (
    ("/admin/staff", "Staff accounts", (Permission.MANAGE_STAFF,)),
    (
        "/admin/approvals",
        "Waiting for approval",
        (Permission.MANAGE_STAFF, Permission.APPROVE_STAFF_CHANGES),
    ),
    ("/admin/pupils", "Pupils", (Permission.MANAGE_PUPILS,)),
    (
        "/admin/organisation",
        "Organisation",
        (Permission.MANAGE_KEYS, Permission.MANAGE_CATEGORIES, Permission.RUN_RETENTION),
    ),
    ("/admin/retention", "Retention", (Permission.RUN_RETENTION,)),
)


def admin_sections(visit: Visit) -> list[tuple[str, str]]:
    """The parts of the Administration area this person may use, (href, text)."""
    return [(h, t) for h, t, needs in SECTIONS if any(visit.actor.has(p) for p in needs)]


async def admin_home(request: web.Request, visit: Visit) -> web.StreamResponse:
    """``/admin``: the first part of the Administration area this person may use."""
    if not any(visit.actor.has(p) for p in ADMIN_PERMISSIONS):
        raise PermissionDenied("this page is for your school's administrator")
    return redirect(admin_sections(visit)[0][0])


ROUTES: Final = (
    WebRoute("GET", "/admin", admin_home, "StaffInvitations.lines", name="admin"),
    WebRoute(
        "GET",
        "/admin/staff",
        staff_list,
        "StaffInvitations.lines, Accounts.list_approvals",
        name="admin-staff",
    ),
    WebRoute("GET", "/admin/staff/invite", show_invite, "StaffInvitations.invite"),
    WebRoute("POST", "/admin/staff/invite", invite, "StaffInvitations.invite", form=kept_invite),
    WebRoute("GET", _ONE, person, "StaffInvitations.lines, Accounts.list_approvals"),
    WebRoute("POST", f"{_ONE}/roles", change_roles, "Accounts.set_roles", form=kept_roles),
    WebRoute("GET", f"{_ONE}/deactivate", confirm_deactivate, "Accounts.deactivate"),
    WebRoute("POST", f"{_ONE}/deactivate", deactivate, "Accounts.deactivate"),
    WebRoute("POST", f"{_ONE}/unlock", unlock, "Accounts.unlock"),
    WebRoute("GET", f"{_ONE}/two-factor", confirm_two_factor, "Accounts.reset_totp"),
    WebRoute("POST", f"{_ONE}/two-factor", reset_two_factor, "Accounts.reset_totp"),
    WebRoute("POST", f"{_ONE}/invitation", reinvite, "StaffInvitations.reinvite"),
    WebRoute("GET", "/invitation/{token}", show_invitation, "StaffInvitations.info", "public"),
    WebRoute("POST", "/invitation", accept_invitation, "StaffInvitations.accept", "public"),
    WebRoute(
        "GET", "/admin/approvals", approvals, "Accounts.list_approvals", name="admin-approvals"
    ),
    WebRoute("POST", "/admin/approvals/{approval_id}/approve", approve, "Accounts.approve"),
    WebRoute("POST", "/admin/approvals/{approval_id}/decline", decline, "Accounts.decline"),
)
