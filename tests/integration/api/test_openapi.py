"""The OpenAPI document served by the app describes exactly the routes the app serves."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.integration.api.conftest import Api, api_config
from transfer.api import create_app
from transfer.api.routing import OPENAPI_KEY

METHODS = {"get", "post", "put", "patch", "delete"}


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        assert isinstance(path, str)
        out.add((route.method.lower(), path))
    return out


async def _nothing(request: web.Request) -> web.Response:
    return web.Response()


def documented_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, path) for path, ops in doc["paths"].items() for m in ops if m in METHODS}


async def test_document_and_app_routes_match(api: Api) -> None:
    resp = await api.client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    assert api.client.app is not None
    served = served_routes(api.client.app)
    documented = documented_routes(doc)
    assert served == documented, (served - documented, documented - served)
    assert len(served) >= 35


async def test_every_operation_is_complete_and_refs_resolve(api: Api) -> None:
    doc = await (await api.client.get("/api/v1/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    ids = set()

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["operationId"] not in ids
            ids.add(op["operationId"])
            assert op["summary"] and op["responses"]
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
            if method in ("post", "put", "patch") and "requestBody" in op:
                assert op["requestBody"]["content"]
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    # Request models are the strict ones: unknown fields are refused.
    assert schemas["NewPupil"]["additionalProperties"] is False
    assert schemas["SignIn"]["additionalProperties"] is False


async def test_a_route_added_outside_the_table_would_be_caught(api: Api) -> None:
    app = create_app(
        store=api.node.store,
        accounts=api.node.accounts,
        audit=api.node.audit,
        config=api_config(),
    )
    app.router.add_get("/api/v1/extra", _nothing)
    doc = app[OPENAPI_KEY]
    assert served_routes(app) - documented_routes(doc) == {("get", "/api/v1/extra")}
