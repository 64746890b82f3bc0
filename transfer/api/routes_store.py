"""The store in the HTTP API: categories, pupils, CTF imports, concerns, actions, contacts,
documents, the chronology and subject access exports. The store checks permissions."""

from __future__ import annotations

import base64
import logging
import urllib.parse
from collections.abc import AsyncIterator

from aiohttp import web

from schemas.api import StatusChange
from schemas.records import (
    ActionRecord,
    CategoryRecord,
    ChronologyLine,
    ConcernRecord,
    ConcernSummary,
    ContactRecord,
    CTFImportResult,
    Destination,
    DocumentRef,
    NewAction,
    NewConcern,
    NewContact,
    NewPupil,
    NewTriage,
    PupilChanges,
    PupilRecord,
    TriageRecord,
)
from transfer.api.problems import RequestValidationFailed
from transfer.api.routing import (
    API,
    CHUNK,
    CONFIG_KEY,
    SIGNED_IN,
    Call,
    QueryParam,
    Route,
    _json,
    read_limited,
)
from transfer.errors import HandoverError, InputError, TooLargeError
from transfer.identifiers import validate_laestab, validate_urn

log = logging.getLogger("transfer.api")

# -------------------------------------------------------------------- store


async def list_categories(call: Call) -> web.StreamResponse:
    return _json(await call.store.list_categories(call.who.actor))


async def list_pupils(call: Call) -> web.StreamResponse:
    return _json(await call.store.list_pupils(call.who.actor))


def _check_destination(d: Destination | None) -> None:
    """Refuse a destination the store would not fit in its columns.

    Work-around at the edge until ``Store.create_pupil``/``update_pupil`` validate
    the destination themselves (PostgreSQL otherwise fails on an over-long value).
    """
    if d is None:
        return
    if d.urn is not None:
        validate_urn(d.urn)
    if d.laestab is not None:
        validate_laestab(d.laestab)
    if d.name is not None and len(d.name) > 200:
        raise InputError("the destination school's name must be at most 200 characters")


async def create_pupil(call: Call) -> web.StreamResponse:
    data = call.body_as(NewPupil)
    _check_destination(data.destination)
    return _json(await call.store.create_pupil(call.who.actor, data), 201)


async def get_pupil(call: Call) -> web.StreamResponse:
    return _json(await call.store.get_pupil(call.who.actor, call.path("pupil_id")))


async def update_pupil(call: Call) -> web.StreamResponse:
    changes = call.body_as(PupilChanges)
    _check_destination(changes.destination)
    return _json(await call.store.update_pupil(call.who.actor, call.path("pupil_id"), changes))


def _flag(call: Call, name: str) -> bool:
    """A yes/no query parameter: ``true`` or ``false`` (absent: false)."""
    value = call.query.get(name)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    error = {"location": f"query.{name}", "message": "must be true or false", "type": "bool_type"}
    raise RequestValidationFailed(f"query.{name} must be true or false", [error])


async def import_ctf(call: Call) -> web.StreamResponse:
    limit = call.request.app[CONFIG_KEY].server.max_body_bytes
    data = await read_limited(call.request, limit)
    force = _flag(call, "force")
    return _json(await call.store.import_ctf(call.who.actor, data, force=force), 201)


async def list_concerns(call: Call) -> web.StreamResponse:
    pupil_id = call.query.get("pupil_id")
    return _json(await call.store.list_concerns(call.who.actor, pupil_id=pupil_id))


async def record_concern(call: Call) -> web.StreamResponse:
    return _json(await call.store.record_concern(call.who.actor, call.body_as(NewConcern)), 201)


async def get_concern(call: Call) -> web.StreamResponse:
    return _json(await call.store.get_concern(call.who.actor, call.path("concern_id")))


async def set_concern_status(call: Call) -> web.StreamResponse:
    status = call.body_as(StatusChange).status
    return _json(
        await call.store.set_concern_status(call.who.actor, call.path("concern_id"), status)
    )


async def triage_concern(call: Call) -> web.StreamResponse:
    data = call.body_as(NewTriage)
    return _json(
        await call.store.triage_concern(call.who.actor, call.path("concern_id"), data), 201
    )


async def add_action(call: Call) -> web.StreamResponse:
    data = call.body_as(NewAction)
    return _json(await call.store.add_action(call.who.actor, call.path("concern_id"), data), 201)


async def complete_action(call: Call) -> web.StreamResponse:
    return _json(await call.store.complete_action(call.who.actor, call.path("action_id")))


async def add_contact(call: Call) -> web.StreamResponse:
    data = call.body_as(NewContact)
    return _json(await call.store.add_contact(call.who.actor, call.path("concern_id"), data), 201)


async def upload_document(call: Call) -> web.StreamResponse:
    request = call.request
    limit = request.app[CONFIG_KEY].server.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLargeError(f"the document is larger than the limit of {limit} bytes")

    async def chunks() -> AsyncIterator[bytes]:
        size = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            size += len(chunk)
            if size > limit:
                raise TooLargeError(f"the document is larger than the limit of {limit} bytes")
            yield chunk
        if size == 0:
            # Found by the contract test: an empty body was stored as a 0-byte document.
            raise InputError("the document is empty: the request body is the file to upload")

    # The request's Content-Type says nothing reliable (a form's, curl's): the store reads
    # the document's kind from its first bytes and refuses kinds it does not keep.
    ref = await call.store.add_document(
        call.who.actor,
        call.path("pupil_id"),
        chunks(),
        filename=call.query["filename"],
        concern_id=call.query.get("concern_id"),
    )
    return _json(ref, 201)


def _content_disposition(filename: str) -> str:
    ascii_name = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    quoted = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


async def download_document(call: Call) -> web.StreamResponse:
    ref, chunks = await call.store.read_document(call.who.actor, call.path("document_id"))
    digest = base64.b64encode(bytes.fromhex(ref.sha256)).decode()
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": _content_disposition(ref.filename),
            "Repr-Digest": f"sha-256=:{digest}:",
            "X-Handover-Media-Type": ref.media_type[:200],
        },
    )
    response.content_length = ref.size
    await response.prepare(call.request)
    try:
        async for piece in chunks:
            await response.write(piece)
    except HandoverError as err:
        # The headers are gone: the only honest signal left is to cut the connection short.
        log.error("document %s failed while streaming: %s", ref.id, err.diagnostics())
        transport = call.request.transport
        if transport is not None:
            transport.abort()
        return response
    await response.write_eof()
    return response


async def chronology(call: Call) -> web.StreamResponse:
    return _json(await call.store.chronology_lines(call.who.actor, call.path("pupil_id")))


async def subject_access_export(call: Call) -> web.StreamResponse:
    """The export streamed to the caller as a tar archive; nothing is kept on the node."""
    archive = await call.store.export_subject_access(call.who.actor, call.path("pupil_id"))
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "application/x-tar",
            "Content-Disposition": _content_disposition(f"{archive.name}.tar"),
        },
    )
    await response.prepare(call.request)
    try:
        async for piece in archive.chunks:
            await response.write(piece)
    except HandoverError as err:
        # The headers are gone: cut the connection so the caller never has a whole archive.
        log.error("a subject access export stopped while streaming: %s", err.diagnostics())
        transport = call.request.transport
        if transport is not None:
            transport.abort()
        return response
    await response.write_eof()
    return response


_FORCE_CTF = QueryParam(
    "force",
    "true: import a CTF addressed to another school (your own leavers' CTF); without "
    "it such a CTF is refused (409 ctf-addressed-elsewhere, naming that school)",
    max_length=5,
)
_PUPIL_FILTER = QueryParam(
    "pupil_id", "only concerns about this pupil (its UPN, or its id)", kind="pupil"
)


STORE_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        f"{API}/categories",
        list_categories,
        "Concern categories",
        "concerns",
        SIGNED_IN,
        response=CategoryRecord,
        many=True,
    ),
    Route(
        "GET",
        f"{API}/pupils",
        list_pupils,
        "Pupils on roll",
        "pupils",
        SIGNED_IN,
        response=PupilRecord,
        many=True,
    ),
    Route(
        "POST",
        f"{API}/pupils",
        create_pupil,
        "Add a pupil by hand",
        "pupils",
        SIGNED_IN,
        body=NewPupil,
        response=PupilRecord,
        status=201,
    ),
    Route(
        "GET",
        f"{API}/pupils/{{pupil_id}}",
        get_pupil,
        "One pupil",
        "pupils",
        SIGNED_IN,
        response=PupilRecord,
    ),
    Route(
        "PATCH",
        f"{API}/pupils/{{pupil_id}}",
        update_pupil,
        "Change a pupil's details",
        "pupils",
        SIGNED_IN,
        body=PupilChanges,
        response=PupilRecord,
    ),
    Route(
        "POST",
        f"{API}/ctf-imports",
        import_ctf,
        "Import a Common Transfer File (XML)",
        "pupils",
        SIGNED_IN,
        raw_body=("application/xml", "text/xml"),
        response=CTFImportResult,
        status=201,
        query=(_FORCE_CTF,),
    ),
    Route(
        "GET",
        f"{API}/concerns",
        list_concerns,
        "Concerns one may read (no content)",
        "concerns",
        SIGNED_IN,
        response=ConcernSummary,
        many=True,
        query=(_PUPIL_FILTER,),
    ),
    Route(
        "POST",
        f"{API}/concerns",
        record_concern,
        "Record a concern",
        "concerns",
        SIGNED_IN,
        body=NewConcern,
        response=ConcernRecord,
        status=201,
    ),
    Route(
        "GET",
        f"{API}/concerns/{{concern_id}}",
        get_concern,
        "One concern with its content",
        "concerns",
        SIGNED_IN,
        response=ConcernRecord,
    ),
    Route(
        "PUT",
        f"{API}/concerns/{{concern_id}}/status",
        set_concern_status,
        "Change a concern's status",
        "concerns",
        SIGNED_IN,
        body=StatusChange,
        response=ConcernRecord,
    ),
    Route(
        "POST",
        f"{API}/concerns/{{concern_id}}/triage",
        triage_concern,
        "Record the DSL's triage decision",
        "concerns",
        SIGNED_IN,
        body=NewTriage,
        response=TriageRecord,
        status=201,
    ),
    Route(
        "POST",
        f"{API}/concerns/{{concern_id}}/actions",
        add_action,
        "Add an action",
        "concerns",
        SIGNED_IN,
        body=NewAction,
        response=ActionRecord,
        status=201,
    ),
    Route(
        "POST",
        f"{API}/actions/{{action_id}}/complete",
        complete_action,
        "Mark an action done",
        "concerns",
        SIGNED_IN,
        response=ActionRecord,
    ),
    Route(
        "POST",
        f"{API}/concerns/{{concern_id}}/contacts",
        add_contact,
        "Record an external contact",
        "concerns",
        SIGNED_IN,
        body=NewContact,
        response=ContactRecord,
        status=201,
    ),
    Route(
        "POST",
        f"{API}/pupils/{{pupil_id}}/documents",
        upload_document,
        "Upload a document (streamed; the body is the file)",
        "documents",
        SIGNED_IN,
        raw_body=("*/*",),
        response=DocumentRef,
        status=201,
        query=(
            QueryParam("filename", "the document's file name", True, 255),
            QueryParam("concern_id", "the concern it belongs to", kind="uuid"),
        ),
    ),
    Route(
        "GET",
        f"{API}/documents/{{document_id}}",
        download_document,
        "Download a document (streamed)",
        "documents",
        SIGNED_IN,
        response_media="application/octet-stream",
    ),
    Route(
        "GET",
        f"{API}/pupils/{{pupil_id}}/chronology",
        chronology,
        "A pupil's chronology, in time order, each line saying who recorded it",
        "pupils",
        SIGNED_IN,
        response=ChronologyLine,
        many=True,
    ),
    Route(
        "POST",
        f"{API}/pupils/{{pupil_id}}/subject-access-export",
        subject_access_export,
        "A subject access export for review, streamed as a tar archive (export.json and "
        "the documents); nothing is kept on the node",
        "pupils",
        SIGNED_IN,
        response_media="application/x-tar",
    ),
)
