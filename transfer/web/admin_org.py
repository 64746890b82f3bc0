"""Administration: the organisation (no concern content).

- its keys: the fingerprint in groups and as said on the phone (when a partner school
  checks it), the encryption and signing keys, earlier keys with when they were replaced
  or revoked; rotating them, confirmed with a fresh authenticator code;
- the signed directory the node holds: its authority, serial, dates and who is in it;
  importing a new one (the document and its minisign signature, checked against the
  pinned authority's key);
- categories (added and restricted by the DSL, shown to the administrator) and the
  retention policy (set by the DSL).

Each part is shown to whoever its service lets read it (``KeyAdministration`` for the
keys and the directory, ``Store`` for categories and retention); the rest are left out.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import BodyPartReader, web

from keys.fingerprint import read_aloud
from transfer.directory.administration import KeyAdministration
from transfer.errors import ConflictError, HandoverError, InputError, NotFoundError, TooLargeError
from transfer.store.permissions import Permission, PermissionDenied
from transfer.web.admin_staff import admin_sections
from transfer.web.core import FORM_KEY, UPLOAD_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.rendering import redirect
from transfer.web.stepup import check_code

#: Largest directory document accepted from the page.
MAX_DIRECTORY_BYTES: Final = 16 * 1024 * 1024
KINDS: Final = {
    "school": "School",
    "social_care": "Children's social care",
    "lado": "LADO",
    "police": "Police",
    "other": "Other agency",
}
_DONE: Final = {
    "rotated": "New keys have been made. The earlier decryption key is kept for files still "
    "on their way. Tell your partner schools the new fingerprint, and give the new "
    "keys to whoever runs your directory.",
    "category": "The category has been added.",
    "retention": "The retention policy has been changed.",
}


def _key_admin(request: web.Request) -> KeyAdministration:
    key_admin = webapp(request).services.key_admin
    if key_admin is None:
        raise NotFoundError("keys are not managed from this server's pages")
    return key_admin


async def _org_page(
    request: web.Request,
    visit: Visit,
    *,
    errors: FormErrors | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
    done: str = "",
) -> web.StreamResponse:
    app = webapp(request)
    actor = visit.actor
    context: dict[str, Any] = {}
    shown = False
    if actor.has(Permission.MANAGE_KEYS) and app.services.key_admin is not None:
        keys = await app.services.key_admin.keys(actor)
        held, entries = await app.services.key_admin.directory(actor)
        context |= {
            "keys": keys,
            "spoken": read_aloud(keys.fingerprint),
            "held": held,
            "entries": entries,
        }
        shown = True
    if actor.has(Permission.MANAGE_KEYS) or actor.has(Permission.MANAGE_CATEGORIES):
        context["categories"] = await app.store.list_categories(actor)
        context["may_add_category"] = actor.has(Permission.MANAGE_CATEGORIES)
        shown = True
    if actor.has(Permission.RUN_RETENTION):
        try:
            context["policy"] = await app.store.retention_policy(actor)
        except NotFoundError:
            context["policy"] = None
        context["may_set_policy"] = True
        shown = True
    if not shown:
        raise PermissionDenied("this page is for your school's administrator")
    return app.page(
        request,
        "admin_org.html",
        visit,
        title="Organisation",
        kinds=KINDS,
        admin_here="/admin/organisation",
        admin_sections=admin_sections(visit),
        errors=errors,
        values=values or {},
        status=400 if errors and status == 200 else status,
        done=done or _DONE.get(request.query.get("done", ""), ""),
        **context,
    )


async def organisation(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _org_page(request, visit)


# ------------------------------------------------------------------ keys


async def _rotate_page(
    request: web.Request, visit: Visit, errors: FormErrors | None = None
) -> web.StreamResponse:
    keys = await _key_admin(request).keys(visit.actor)
    return webapp(request).page(
        request,
        "admin_rotate.html",
        visit,
        title="Make new keys for your school",
        keys=keys,
        errors=errors,
        status=400 if errors else 200,
    )


async def show_rotate(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _rotate_page(request, visit)


async def rotate(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    key_admin = _key_admin(request)
    if not visit.actor.has(Permission.MANAGE_KEYS):  # refused and audited by the service
        await key_admin.keys(visit.actor)
    errors = FormErrors()
    if not await check_code(app, visit, request[FORM_KEY].get("code", ""), errors):
        return await _rotate_page(request, visit, errors)
    await key_admin.rotate(visit.actor)
    return redirect("/admin/organisation?done=rotated")


# ------------------------------------------------------------------ the directory


async def import_directory(request: web.Request, visit: Visit) -> web.StreamResponse:
    key_admin = _key_admin(request)
    if not visit.actor.has(Permission.MANAGE_KEYS):
        await key_admin.keys(visit.actor)  # refused and audited by the service
    signature = request[FORM_KEY].get("signature", "").strip()
    part: BodyPartReader | None = request.get(UPLOAD_KEY)
    errors = FormErrors()
    values = {"signature": signature}
    if not signature:
        errors.add("signature", "Paste the text of the directory's signature file (.minisig)")
    data = b""
    if part is None or not part.filename:
        errors.add("directory", "Select the directory file (directory.json)")
    else:
        try:
            data = await _read(part, MAX_DIRECTORY_BYTES)
        except TooLargeError:
            errors.add("directory", "The file must be smaller than 16 MB")
    if errors:
        return await _org_page(request, visit, errors=errors, values=values)
    try:
        result = await key_admin.import_directory(visit.actor, data, signature.encode())
    except (InputError, ConflictError, HandoverError) as err:
        if isinstance(err, PermissionDenied):
            raise
        errors.add("directory", f"The directory was not imported: {_plain(err.diagnostics())}")
        return await _org_page(request, visit, errors=errors, values=values)
    if result.unchanged:
        done = f"This node holds this directory already (number {result.serial}): nothing changed."
    else:
        done = (
            f"The directory has been imported: number {result.serial}, with "
            f"{result.organisations} organisations."
        )
    return await _org_page(request, visit, done=done)


async def _read(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise TooLargeError("the file is too large")
    return bytes(data)


def _plain(text: str) -> str:
    text = text.strip().rstrip(".")
    return (text[:1].lower() + text[1:] + ".") if text else text


# ------------------------------------------------------------------ categories, retention


async def add_category(request: web.Request, visit: Visit) -> web.StreamResponse:
    data = request[FORM_KEY]
    label = data.get("label", "").strip()
    restricted = data.get("restricted") == "yes"
    values = {"label": label, "restricted": "yes" if restricted else ""}
    errors = FormErrors()
    if not label:
        errors.add("label", "Enter the category's name, for example Online safety")
    elif len(label) > 200:
        errors.add("label", "The name must be 200 characters or fewer")
    key = "_".join("".join(c if c.isalnum() else " " for c in label.lower()).split())[:64]
    if not errors and len(key) < 2:
        errors.add("label", "The name needs at least two letters or digits")
    if errors:
        if not visit.actor.has(Permission.MANAGE_CATEGORIES):
            raise PermissionDenied("only the DSL adds categories")
        return await _org_page(request, visit, errors=errors, values=values)
    try:
        await webapp(request).store.add_category(
            visit.actor, key=key, label=label, restricted=restricted
        )
    except ConflictError:
        errors.add("label", "There is a category with this name already")
        return await _org_page(request, visit, errors=errors, values=values)
    return redirect("/admin/organisation?done=category")


async def set_retention(request: web.Request, visit: Visit) -> web.StreamResponse:
    data = request[FORM_KEY]
    years_text = data.get("years", "").strip()
    description = data.get("description", "").strip()
    values = {"years": years_text, "description": description}
    errors = FormErrors()
    years = int(years_text) if years_text.isdigit() else 0
    if not 1 <= years <= 120:
        errors.add("years", "Enter the number of years, from 1 to 120, for example 25")
    if not description:
        errors.add("description", "Say where the policy comes from, for example the IRMS toolkit")
    elif len(description) > 500:
        errors.add("description", "The description must be 500 characters or fewer")
    if errors:
        if not visit.actor.has(Permission.RUN_RETENTION):
            raise PermissionDenied("only the DSL sets the retention policy")
        return await _org_page(request, visit, errors=errors, values=values)
    await webapp(request).store.set_retention_policy(
        visit.actor, years=years, description=description
    )
    return redirect("/admin/organisation?done=retention")


ROUTES: Final = (
    WebRoute(
        "GET",
        "/admin/organisation",
        organisation,
        "KeyAdministration.keys, KeyAdministration.directory, Store.list_categories, "
        "Store.retention_policy",
        name="admin-organisation",
    ),
    WebRoute("GET", "/admin/organisation/keys/new", show_rotate, "KeyAdministration.keys"),
    WebRoute(
        "POST", "/admin/organisation/keys/new", rotate, "Accounts.step_up, KeyAdministration.rotate"
    ),
    WebRoute(
        "POST",
        "/admin/organisation/directory",
        import_directory,
        "KeyAdministration.import_directory",
        upload=True,
    ),
    WebRoute("POST", "/admin/organisation/categories", add_category, "Store.add_category"),
    WebRoute("POST", "/admin/organisation/retention", set_retention, "Store.set_retention_policy"),
)
