"""The DSL's JSON API for the pickup portal: make a pickup for a package, list, show, revoke.

``POST /api/v1/portal/pickups`` takes the referral package itself as the body
(``application/octet-stream``: a package encrypted to the organisation's own
key, see ``docs/portal.md``) and the rest in the query. The answer carries the
passcode (and the link, when it was not e-mailed) once; they are never stored.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Final

from aiohttp import web

from receivers.portal.records import IssuedPickup, PickupInfo
from receivers.portal.service import PickupPortal
from transfer.api.routing import (
    API,
    CHUNK,
    CONFIG_KEY,
    SIGNED_IN,
    Call,
    QueryParam,
    Route,
    _json,
)
from transfer.errors import InputError, TooLargeError, TransportError

PORTAL_KEY: Final = web.AppKey("portal", PickupPortal)


def _portal(call: Call) -> PickupPortal:
    return call.request.app[PORTAL_KEY]


async def create_pickup(call: Call) -> web.StreamResponse:
    portal = _portal(call)
    actor = call.who.actor
    await portal.authorise(actor, call.query["referral_id"])
    days_text = call.query.get("expires_in_days")
    days = None
    if days_text is not None:
        if not days_text.isascii() or not days_text.isdigit():
            raise InputError("expires_in_days must be a whole number of days")
        days = int(days_text)
    request = call.request
    limit = request.app[CONFIG_KEY].transfer.max_package_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLargeError(f"the package is larger than the limit of {limit} bytes")
    try:
        portal.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        upload = portal.directory / f".upload-{uuid.uuid4()}.age"
        fd = os.open(upload, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise TransportError(f"cannot store the upload: {exc.strerror}") from None
    try:
        size = 0
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLargeError(f"the package is larger than the limit of {limit} bytes")
                f.write(chunk)
        if size == 0:
            raise InputError("send the referral package as the request body")
        issued = await portal.create_pickup(
            actor,
            package=upload,
            referral_id=call.query["referral_id"],
            email=call.query["email"],
            agency_name=call.query.get("agency_name"),
            expires_in_days=days,
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            upload.unlink()
    return _json(issued, 201)


async def list_pickups(call: Call) -> web.StreamResponse:
    return _json(await _portal(call).list_pickups(call.who.actor))


async def get_pickup(call: Call) -> web.StreamResponse:
    return _json(await _portal(call).get_pickup(call.who.actor, call.path("pickup_id")))


async def revoke_pickup(call: Call) -> web.StreamResponse:
    return _json(await _portal(call).revoke(call.who.actor, call.path("pickup_id")))


async def reset_authenticator(call: Call) -> web.StreamResponse:
    return _json(await _portal(call).reset_totp(call.who.actor, call.path("pickup_id")))


PORTAL_ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        f"{API}/portal/pickups",
        create_pickup,
        "Offer a referral package to an agency through a one-time link (the body is the "
        "package); returns the passcode once",
        "portal",
        SIGNED_IN,
        raw_body=("*/*",),
        response=IssuedPickup,
        status=201,
        query=(
            QueryParam("referral_id", "the referral this package belongs to", True, 64),
            QueryParam("email", "the agency's registered e-mail address", True, 254),
            QueryParam("agency_name", "the agency's name, shown on the page", False, 200),
            QueryParam(
                "expires_in_days",
                "how long the link works (default 7)",
                False,
                3,
                kind="integer",
                minimum=1,
                maximum=30,
            ),
        ),
    ),
    Route(
        "GET",
        f"{API}/portal/pickups",
        list_pickups,
        "Pickups made by the organisation",
        "portal",
        SIGNED_IN,
        response=PickupInfo,
        many=True,
    ),
    Route(
        "GET",
        f"{API}/portal/pickups/{{pickup_id}}",
        get_pickup,
        "One pickup with its receipt trail",
        "portal",
        SIGNED_IN,
        response=PickupInfo,
    ),
    Route(
        "POST",
        f"{API}/portal/pickups/{{pickup_id}}/revoke",
        revoke_pickup,
        "Withdraw a link (the stored package is deleted)",
        "portal",
        SIGNED_IN,
        response=PickupInfo,
    ),
    Route(
        "POST",
        f"{API}/portal/pickups/{{pickup_id}}/reset-authenticator",
        reset_authenticator,
        "Remove the authenticator app of the pickup's agency address (it signs in with a "
        "passcode again); the address and the DSL team are told",
        "portal",
        SIGNED_IN,
        response=PickupInfo,
    ),
)
