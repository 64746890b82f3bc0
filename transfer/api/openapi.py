"""The OpenAPI 3.1 document of the API, built from the route table and the pydantic models."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from schemas.records import LAESTAB_PATTERN, UPN_PATTERN
from transfer.api.problems import MEDIA_TYPE as PROBLEM
from transfer.api.routing import JSON, QueryParam, Route, is_id_parameter, is_pupil_parameter
from transfer.identifiers import LA_CODES, UPN_ALPHABET

_REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"\{([a-z_]+)\}")

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "format": "uri"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "location": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


def _schemas(routes: Iterable[Route]) -> tuple[dict[tuple[Any, str], Any], Any]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for r in routes:
        if r.body is not None and (r.body, "validation") not in wanted:
            wanted.append((r.body, "validation"))
        for model in (r.response, r.accepted):
            if model is not None and (model, "serialization") not in wanted:
                wanted.append((model, "serialization"))
    refs, defs = models_json_schema(wanted, ref_template=_REF)
    out: dict[tuple[Any, str], Any] = {(m, mode): ref for (m, mode), ref in refs.items()}
    return out, defs.get("$defs", {})


def _la_codes() -> str:
    return "(?:" + "|".join(sorted(LA_CODES)) + ")"


def identifier_patterns() -> dict[str, str]:
    """The schemas' structural identifier patterns, spelt out as the server checks them: a
    recognised LA code (``transfer.identifiers.LA_CODES``), a check letter from the UPN
    alphabet (no I, O or S). What a pattern cannot say (the check letter's value) is said
    in the field's description."""
    letters = "".join(sorted(UPN_ALPHABET))
    letter = f"[{letters}]"
    return {
        UPN_PATTERN: f"^{letter}{_la_codes()}[0-9]{{8}}(?:[0-9]|{letter})$",
        LAESTAB_PATTERN: f"^{_la_codes()}[0-9]{{4}}$",
    }


def _spell_out_identifiers(node: Any, patterns: dict[str, str]) -> None:
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and pattern in patterns:
            node["pattern"] = patterns[pattern]
        for value in node.values():
            _spell_out_identifiers(value, patterns)
    elif isinstance(node, list):
        for value in node:
            _spell_out_identifiers(value, patterns)


def _require_discriminators(defs: dict[str, Any]) -> None:
    """A discriminated union's tag (``kind`` of a referral form or outcome) has a default in
    the model, but the server reads it to choose the form: it must be sent, so each member's
    schema says it is required."""

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            found = node.get("discriminator")
            if isinstance(found, dict):
                tag = found.get("propertyName")
                for ref in (found.get("mapping") or {}).values():
                    member = defs.get(str(ref).rsplit("/", 1)[-1])
                    if isinstance(member, dict) and tag not in member.get("required", []):
                        member["required"] = [*member.get("required", []), tag]
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(defs)


def _pupil_reference() -> dict[str, Any]:
    """A pupil named by record id or by UPN (``QueryParam`` kind ``pupil``, ``pupil_id``)."""
    return {
        "type": "string",
        "anyOf": [
            {"format": "uuid"},
            {"pattern": identifier_patterns()[UPN_PATTERN]},
        ],
        "description": "the pupil's UPN, or its record id",
    }


def _path_parameter(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if is_id_parameter(name):
        schema["format"] = "uuid"
    elif is_pupil_parameter(name):
        schema = _pupil_reference()
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query_parameter(q: QueryParam) -> dict[str, Any]:
    schema: dict[str, Any]
    if q.choices:
        schema = {"type": "string", "enum": list(q.choices)}
    elif q.kind == "uuid":
        schema = {"type": "string", "format": "uuid"}
    elif q.kind == "pupil":
        schema = _pupil_reference()
    elif q.kind == "integer":
        schema = {"type": "integer", "minimum": q.minimum, "maximum": q.maximum}
    else:
        schema = {"type": "string", "minLength": 1, "maxLength": q.max_length}
    return {
        "name": q.name,
        "in": "query",
        "required": q.required,
        "description": q.description,
        "schema": schema,
    }


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM: {"schema": {"$ref": _REF.format(model="Problem")}}},
    }


def build_openapi(routes: Iterable[Route], *, title: str, version: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document describing ``routes`` exactly."""
    routes = list(routes)
    refs, defs = _schemas(routes)
    defs["Problem"] = _PROBLEM_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "operationId": r.operation_id,
            "summary": r.summary,
            "tags": [r.tag],
        }
        params = [_path_parameter(n) for n in _PARAM.findall(r.path)]
        params += [_query_parameter(q) for q in r.query]
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": refs[(r.body, "validation")]}},
            }
        elif r.raw_body:
            op["requestBody"] = {
                "required": True,
                "content": {
                    m: {"schema": {"type": "string", "format": "binary"}} for m in r.raw_body
                },
            }
        ok: dict[str, Any] = {"description": r.summary}
        if r.response is not None:
            schema = refs[(r.response, "serialization")]
            if r.many:
                schema = {
                    "type": "object",
                    "required": ["items"],
                    "properties": {"items": {"type": "array", "items": schema}},
                }
            ok["content"] = {JSON: {"schema": schema}}
        elif r.response_media != JSON:
            ok["content"] = {r.response_media: {"schema": {"type": "string", "format": "binary"}}}
        elif r.status != 204:
            ok["content"] = {JSON: {"schema": {"type": "object"}}}
        responses: dict[str, Any] = {str(r.status): ok}
        if r.accepted is not None:
            responses["202"] = {
                "description": "Accepted: the change waits for a DSL's approval",
                "content": {JSON: {"schema": refs[(r.accepted, "serialization")]}},
            }
        if r.body is not None or r.raw_body or r.query:
            responses["400"] = _problem("The input is not valid")
            responses["413"] = _problem("The body is too large")
            responses["415"] = _problem("Wrong content type")
            responses["422"] = _problem("The body does not match the schema")
        if r.auth:
            op["security"] = [{"bearer": []}]
            responses["401"] = _problem("Not signed in, or the session or token is not valid")
            responses["403"] = _problem("The role (or the token's scopes) does not allow this")
        if "{" in r.path:
            responses["404"] = _problem("Not found (or not visible to the caller)")
        responses["default"] = _problem("Any other error, as a problem document")
        op["responses"] = responses
        paths.setdefault(r.path, {})[r.method.lower()] = op
    _spell_out_identifiers(defs, identifier_patterns())
    _require_discriminators(defs)
    method_order: list[Literal["get", "post", "put", "patch", "delete"]] = [
        "get",
        "post",
        "put",
        "patch",
        "delete",
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Handover's JSON API. Errors are RFC 9457 problem documents.",
        },
        "paths": {
            p: {m: ops[m] for m in method_order if m in ops} for p, ops in sorted(paths.items())
        },
        "components": {
            "schemas": dict(sorted(defs.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A session token (hos_…) from POST /api/v1/session, "
                    "or an API token (hot_…)",
                }
            },
        },
    }
