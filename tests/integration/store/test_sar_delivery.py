"""A subject access export goes to whoever asked for it and nowhere else.

It used to be written under ``<data dir>/exports/`` as plaintext JSON (restricted
concerns included) and decrypted documents, and left there; erasing the pupil did
not remove it. Now it is streamed (a tar archive) and never written on the node;
an export running when the pupil is erased stops short; and the plaintext exports
an earlier version left are deleted (at start-up, and with the pupil's erasure).
On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas.records import NewConcern, NewPupil
from tests.integration.store.conftest import School
from tests.support.sar import files_of, unpack
from tests.unit.auth.support import open_node
from transfer.api import create_app
from transfer.config import Config
from transfer.errors import IntegrityError
from transfer.store.exports import legacy_exports
from transfer.store.keyring import KeyDestroyed
from transfer.store.permissions import Role

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _holding(root: Path, *needles: bytes) -> list[Path]:
    """Every file under ``root`` (the whole tree) that holds any of ``needles``."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(n in data for n in needles):
                found.append(path)
    return found


def _legacy(data_dir: Path, pupil_id: str, text: str) -> Path:
    """An export as versions before this one left it: plaintext, under ``exports/``."""
    out = data_dir / "exports" / secrets.token_hex(16) / f"sar-{pupil_id}-20260901T080000Z"
    (out / "documents").mkdir(parents=True)
    (out / "export.json").write_text(json.dumps({"concerns": [{"account": text}]}))
    (out / "documents" / "d-letter.txt").write_text(text)
    return out


async def test_the_export_is_streamed_to_the_caller_and_never_kept(
    db_url: str, tmp_path: Path
) -> None:
    phrase = f"restricted-{secrets.token_hex(8)}"
    document = b"%PDF-1.7\n" + os.urandom(200_000) + phrase.encode()  # a document kept as a PDF
    async with open_node(db_url, tmp_path / "data") as node:
        app = create_app(
            store=node.store, accounts=node.accounts, audit=node.audit, config=Config()
        )  # the exports directory is the default one, inside the data directory
        async with TestClient(TestServer(app)) as client:
            dsl = await node.person("dsl", [Role.DSL])
            body = {"org": "199001", "username": "dsl", "password": dsl.password}
            body["totp"] = dsl.code(node.clock.now)
            node.next_step()
            token = (await (await client.post("/api/v1/session", json=body)).json())["token"]
            auth = {"Authorization": f"Bearer {token}"}
            pupil = await (
                await client.post(
                    "/api/v1/pupils",
                    headers=auth,
                    json={
                        "upn": "H801200001001",
                        "surname": "Okafor",
                        "forename": "Amara",
                        "dob": "2014-11-03",
                        "sex": "F",
                    },
                )
            ).json()
            concern = {
                "pupil_ids": [pupil["id"]],
                "category": "domestic_abuse",
                "happened_at": "2026-09-01T08:00:00+00:00",
                "account": f"Amara said {phrase} at home.",
            }
            resp = await client.post("/api/v1/concerns", headers=auth, json=concern)
            assert resp.status == 201, await resp.text()
            resp = await client.post(
                f"/api/v1/pupils/{pupil['id']}/documents?filename=letter.pdf",
                headers=auth,
                data=document,
            )
            assert resp.status == 201, await resp.text()
            ref = await resp.json()
            resp = await client.post(
                f"/api/v1/pupils/{pupil['id']}/subject-access-export", headers=auth
            )
            assert resp.status == 200 and resp.content_type == "application/x-tar"
            assert resp.headers["Content-Disposition"].startswith('attachment; filename="sar-')
            files = files_of(await resp.read())
    # The caller has all of it.
    (listing,) = [name for name in files if name.endswith("/export.json")]
    export = json.loads(files[listing])
    assert [c["account"] for c in export["concerns"]] == [concern["account"]]
    folder = listing.removesuffix("export.json")
    assert files[folder + export["files"][ref["id"]]] == document
    assert list(files) == [listing, folder + export["files"][ref["id"]]]
    # The node has none of it in plaintext, anywhere in its data directory.
    data_dir = tmp_path / "data"
    assert _holding(data_dir, phrase.encode(), document[:4096]) == []
    assert not (data_dir / "exports").exists()


async def test_an_export_running_when_the_pupil_is_erased_stops_short(school: School) -> None:
    store = school.store
    p = await school.pupil("H801200001001")
    await store.record_concern(
        school.staff,
        NewConcern(pupil_ids=(p.id,), category="bullying", happened_at=T0, account="text"),
    )
    for n in range(2):
        await store.add_document(
            school.dsl, p.id, _once(b"%PDF-1.7\n" + os.urandom(150_000)), filename=f"{n}.pdf"
        )
    archive = await store.export_subject_access(school.dsl, p.id)
    first = await anext(archive.chunks)
    assert b"export.json" in first
    await store.erase_pupil(school.dsl, p.id)
    received = [first]
    with pytest.raises((KeyDestroyed, IntegrityError)):
        async for piece in archive.chunks:
            received.append(piece)
    # Never a whole archive: no end-of-archive marker, not all the documents.
    assert sum(map(len, received)) < 300_000
    # A new export of the erased pupil holds only the tombstone.
    again = await store.export_subject_access(school.dsl, p.id)
    assert list(await unpack(again)) == [f"{again.name}/export.json"]


async def test_plaintext_exports_left_by_earlier_versions_are_removed(
    db_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    a, b = "0d6f6e0c-6f59-4b0e-9d5a-3b6f8a0f1a01", "0d6f6e0c-6f59-4b0e-9d5a-3b6f8a0f1a02"
    _legacy(data_dir, a, "left behind about a")
    _legacy(data_dir, b, "left behind about b")
    bundle = data_dir / "exports" / "referrals" / "bundle-1"
    bundle.mkdir(parents=True)
    (bundle / "README.txt").write_text("an offline referral bundle: not an export")
    # Opening the node (any command, or serve) removes them.
    async with open_node(db_url, data_dir) as node:
        assert legacy_exports(data_dir) == []
        assert _holding(data_dir, b"left behind") == []
        assert (bundle / "README.txt").exists()
        removed = [e.targets["pupil"] for e in node.audit.events if e.action == "store.sar.removed"]
        assert sorted(removed) == [a, b]
        # One left while the node runs (by a process of an earlier version) goes with
        # the pupil's erasure; another pupil's stays until it is erased or the node restarts.
        admin = await node.person("admin", [Role.ADMINISTRATOR])
        dsl = await node.person("dsl", [Role.DSL])
        pupils = []
        for upn in ("H801200001001", "X801200001002"):
            record = await node.store.create_pupil(
                await node.store.actor_for(admin.staff.id),
                NewPupil(upn=upn, surname="O", forename="A", dob=date(2014, 1, 1), sex="F"),
            )
            pupils.append(record.id)
        mine = _legacy(data_dir, pupils[0], "about the first")
        theirs = _legacy(data_dir, pupils[1], "about the second")
        await node.store.erase_pupil(await node.store.actor_for(dsl.staff.id), pupils[0])
        assert not mine.exists()
        assert theirs.exists()
