"""The route table of the HTTP API's core: the OpenAPI document, accounts
(``transfer.api.routes_accounts``) and the store (``transfer.api.routes_store``).

The app registers exactly these routes and those of the other ``routes_*`` modules,
and the OpenAPI document is built from them (``transfer.api.openapi``); a test checks
the two against the routes aiohttp really serves. The machinery (:class:`Route`,
:class:`Call`, :func:`bind`) is ``transfer.api.routing``.
"""

from __future__ import annotations

from aiohttp import web

from transfer.api.routes_accounts import ACCOUNT_ROUTES
from transfer.api.routes_store import STORE_ROUTES
from transfer.api.routing import API, NOBODY, OPENAPI_KEY, Call, Route

__all__ = ["ROUTES", "openapi_document"]


async def openapi_document(call: Call) -> web.StreamResponse:
    return web.json_response(call.request.app[OPENAPI_KEY])


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        f"{API}/openapi.json",
        openapi_document,
        "This API's OpenAPI 3.1 document",
        "meta",
        NOBODY,
    ),
    *ACCOUNT_ROUTES,
    *STORE_ROUTES,
)
