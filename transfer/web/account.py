"""Your account: who you are, changing your password (which signs you out everywhere
else), setting up an authenticator app, and API tokens (made after a step-up code)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from transfer.auth.service import WrongPassword
from transfer.errors import InputError
from transfer.store.permissions import NEEDS_TOTP, Permission
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.rendering import redirect
from transfer.web.stepup import check_code
from transfer.web.tokens import KeptForm

#: What each permission lets a token do, in words (the scopes offered are those one holds).
SCOPE_NAMES: Final = {
    Permission.READ_PUPILS: "Read pupils' details",
    Permission.MANAGE_PUPILS: "Add and change pupils",
    Permission.IMPORT_CTF: "Import common transfer files",
    Permission.RECORD_CONCERN: "Record concerns",
    Permission.READ_ALL_CONCERNS: "Read all concerns",
    Permission.TRIAGE: "Triage concerns",
    Permission.MANAGE_ACTIONS: "Add and complete actions",
    Permission.MANAGE_CONTACTS: "Record contacts with agencies",
    Permission.MANAGE_DOCUMENTS: "Upload and download documents",
    Permission.READ_CHRONOLOGY: "Read chronologies",
    Permission.READ_RESTRICTED: "Read restricted categories",
    Permission.EXPORT_SUBJECT_ACCESS: "Export subject access requests",
    Permission.RUN_RETENTION: "Run retention",
    Permission.MANAGE_CATEGORIES: "Manage categories",
    Permission.READ_AUDIT: "Read the audit trail",
    Permission.SEND_TRANSFER: "Send files to other schools",
    Permission.RECEIVE_TRANSFER: "Receive files from other schools",
    Permission.SEND_REFERRAL: "Send referrals",
    Permission.SEND_WITHOUT_CONSENT: "Send referrals without consent",
    Permission.MANAGE_KEYS: "Manage keys",
    Permission.HANDLE_ALERTS: "See and dismiss alerts",
    Permission.MANAGE_STAFF: "Manage staff accounts",
}
LIFETIMES: Final = {"30": "30 days", "90": "90 days", "366": "1 year"}
_DONE: Final = {
    "password": "Your password has been changed. You have been signed out on every other device.",
    "revoked": "The API token has been revoked. It no longer works.",
}


def _scopes(visit: Visit) -> list[tuple[str, str]]:
    return [(p.value, name) for p, name in SCOPE_NAMES.items() if visit.actor.has(p)]


async def account(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    tokens = await app.accounts.list_tokens(visit.principal)
    names = {p.value: n for p, n in SCOPE_NAMES.items()}
    return app.page(
        request,
        "account.html",
        visit,
        title="Your account",
        tokens=[t for t in tokens if t.revoked_at is None],
        scope_names=names,
        done=_DONE.get(request.query.get("done", "")),
        now=app.accounts.now(),
        totp_required=bool(visit.roles & NEEDS_TOTP),
    )


# ------------------------------------------------------------------ password


async def _password_page(
    request: web.Request, visit: Visit, errors: FormErrors | None = None, notice: str = ""
) -> web.StreamResponse:
    return webapp(request).page(
        request,
        "change_password.html",
        visit,
        title="Change your password",
        status=400 if errors else 200,
        errors=errors,
        notice=notice,
    )


async def show_password(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _password_page(request, visit)


async def kept_password(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    return await _password_page(
        request,
        visit,
        notice="You were signed out before your password was changed. For "
        "your security, passwords are never kept: enter them again.",
    )


async def change_password(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    data = request[FORM_KEY]
    current, new, again = (
        data.get(k, "") for k in ("current_password", "new_password", "confirm_password")
    )
    errors = FormErrors()
    if not current:
        errors.add("current_password", "Enter your current password")
    if not new:
        errors.add("new_password", "Enter a new password")
    elif new != again:
        errors.add("confirm_password", "The new passwords do not match")
    if errors:
        return await _password_page(request, visit, errors)
    try:
        await app.accounts.change_password(visit.principal, current, new)
    except WrongPassword:
        errors.add("current_password", "Your current password is not right")
        return await _password_page(request, visit, errors)
    except InputError as err:
        errors.add("new_password", _sentence(err.diagnostics()))
        return await _password_page(request, visit, errors)
    return redirect("/account?done=password")


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] if text else text


# ------------------------------------------------------------------ API tokens


def _token_values(source: Any) -> dict[str, Any]:
    return {
        "name": source.value("name") if isinstance(source, KeptForm) else source.get("name", ""),
        "scopes": source.values("scopes")
        if isinstance(source, KeptForm)
        else source.getall("scopes", []),
        "lifetime": source.value("lifetime")
        if isinstance(source, KeptForm)
        else source.get("lifetime", ""),
    }


def _validate_token(visit: Visit, values: dict[str, Any], errors: FormErrors) -> None:
    name = str(values["name"]).strip()
    if not name:
        errors.add("name", "Enter a name for the token, such as the program that will use it")
    elif len(name) > 100:
        errors.add("name", "The name must be 100 characters or fewer")
    allowed = {v for v, _ in _scopes(visit)}
    if not values["scopes"] or not set(values["scopes"]) <= allowed:
        errors.add("scopes", "Select what the token may do")
    if values["lifetime"] not in LIFETIMES:
        errors.add("lifetime", "Select how long the token lasts")


async def _new_token_page(
    request: web.Request,
    visit: Visit,
    values: dict[str, Any],
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    return webapp(request).page(
        request,
        "token_new.html",
        visit,
        title="Create an API token",
        status=400 if errors else 200,
        errors=errors,
        values=values,
        scopes=_scopes(visit),
        lifetimes=LIFETIMES,
        notice=notice,
    )


async def show_new_token(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _new_token_page(request, visit, {"name": "", "scopes": [], "lifetime": "90"})


_KEPT_NOTICE: Final = (
    "You were signed out, so nothing was saved. What you typed has been kept: check it "
    "and continue."
)


async def kept_new_token(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    return await _new_token_page(request, visit, _token_values(kept), notice=_KEPT_NOTICE)


async def check_new_token(request: web.Request, visit: Visit) -> web.StreamResponse:
    values = _token_values(request[FORM_KEY])
    errors = FormErrors()
    _validate_token(visit, values, errors)
    if errors:
        return await _new_token_page(request, visit, values, errors=errors)
    return await _confirm_token_page(request, visit, values)


async def _confirm_token_page(
    request: web.Request,
    visit: Visit,
    values: dict[str, Any],
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    names = {p.value: n for p, n in SCOPE_NAMES.items()}
    return webapp(request).page(
        request,
        "token_confirm.html",
        visit,
        title="Check the token before it is created",
        status=400 if errors else 200,
        errors=errors,
        values=values,
        scope_names=names,
        lifetimes=LIFETIMES,
        notice=notice,
    )


async def kept_confirm_token(
    request: web.Request, visit: Visit, kept: KeptForm
) -> web.StreamResponse:
    return await _confirm_token_page(request, visit, _token_values(kept), notice=_KEPT_NOTICE)


async def create_token(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    data = request[FORM_KEY]
    values = _token_values(data)
    errors = FormErrors()
    _validate_token(visit, values, errors)
    if errors:
        return await _new_token_page(request, visit, values, errors=errors)
    if not await check_code(app, visit, data.get("code", ""), errors):
        return await _confirm_token_page(request, visit, values, errors=errors)
    issued = await app.accounts.create_token(
        visit.principal,
        name=str(values["name"]).strip(),
        scopes=values["scopes"],
        expires_in_days=int(values["lifetime"]),
    )
    return app.page(request, "token_created.html", visit, title="Your new API token", issued=issued)


async def revoke_token(request: web.Request, visit: Visit) -> web.StreamResponse:
    await webapp(request).accounts.revoke_token(visit.principal, request.match_info["token_id"])
    return redirect("/account?done=revoked")


ROUTES: Final = (
    WebRoute("GET", "/account", account, "Accounts.list_tokens", name="account"),
    WebRoute("GET", "/account/password", show_password, "Accounts.change_password"),
    WebRoute(
        "POST", "/account/password", change_password, "Accounts.change_password", form=kept_password
    ),
    WebRoute("GET", "/account/tokens/new", show_new_token, "Accounts.create_token"),
    WebRoute(
        "POST", "/account/tokens/new", check_new_token, "Accounts.create_token", form=kept_new_token
    ),
    WebRoute(
        "POST",
        "/account/tokens/confirm",
        create_token,
        "Accounts.step_up, Accounts.create_token",
        form=kept_confirm_token,
    ),
    WebRoute("POST", "/account/tokens/{token_id}/revoke", revoke_token, "Accounts.revoke_token"),
)
