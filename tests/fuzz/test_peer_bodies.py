"""Fuzzing the peer protocol's bodies over HTTP, against a real receiving node (issue 17).

Every request is properly signed by a known organisation (so the body, not the
signature check, is what meets the hostile bytes) and sent to a node served on loopback
with its inbox, receipt intake and transfer requests. Whatever the body, the answer is
never a 500: a 2xx, or a problem document (RFC 9457) with its 4xx (or 503 for a part this
node does not run). The node runs in a thread of its own with its own event loop, so
Hypothesis (which is synchronous) drives it request by request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.receipt import ReceiptBody
from tests.fuzz.harness import CORPUS, fuzz_settings, json_mutated, keep_crash, mutated
from tests.fuzz.targets import checkpoint_note
from tests.integration.exchange.inbox_support import RECEIVER, SENDER, Rig, receiving_node, upn
from transfer.alerts import Alerts
from transfer.audit.log import PeerCheckpoint
from transfer.config import SmtpSection
from transfer.exchange.outbox import Outbox
from transfer.exchange.requests import TransferRequests
from transfer.mail import Mailer
from transfer.receipts import sign_receipt
from transfer.transport.http import PeerClient

T = TypeVar("T")
#: Fewer examples than the parsers: each one is a signed HTTP request and a transaction.
SCALE = 0.4


class _ServedNode:
    """A receiving node served in a thread with its own event loop; called synchronously."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()
        self.rig: Rig = self.run(self._open(tmp))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    async def _open(self, tmp: Path) -> Rig:
        db = f"sqlite+aiosqlite:///{tmp / 'handover.db'}"
        rig = await self._stack.enter_async_context(receiving_node(db, tmp))
        config = rig.services.config
        client = PeerClient(keys=rig.keys, directory=rig.directory, config=config)
        self._stack.push_async_callback(client.close)
        outbox = Outbox(
            store=rig.store,
            keys=rig.keys,
            directory=rig.directory,
            client=client,
            config=config,
            data_dir=rig.data_dir,
        )
        rig.services.requests = TransferRequests(
            store=rig.store,
            outbox=outbox,
            client=client,
            directory=rig.directory,
            alerts=Alerts(rig.store, Mailer(SmtpSection())),
            config=config,
        )
        return rig

    def post(self, path: str, body: bytes) -> tuple[int, dict[str, Any], Any]:
        return self.run(self.rig.call("POST", path, body))

    def close(self) -> None:
        self.run(self._stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_ServedNode]:
    served = _ServedNode(tmp_path_factory.mktemp("peer-fuzz"))
    try:
        yield served
    finally:
        served.close()


def _receipt_body(rig: Rig) -> dict[str, Any]:
    keys = rig.sender_keys  # the caller issues the receipt (it received a package of ours)
    body = ReceiptBody(
        receipt_id=uuid.uuid4(),
        kind="delivered",
        package_id=uuid.uuid4(),
        package_kind="leaver_file",
        sender_org_id=RECEIVER,
        receiver_org_id=keys.org_id,
        receiver_key_id=keys.key_id_hex,
        ciphertext_sha256="ab" * 32,
        ciphertext_size=1234,
        issued_at=datetime.now(UTC),
    )
    signed = sign_receipt(body, keys)
    carried = PeerCheckpoint(checkpoint_note(), None, []).to_json()
    return {"receipt": signed.to_dict(), "checkpoint": carried}


def _seeds(rig: Rig) -> dict[str, list[dict[str, Any]]]:
    request_id = str(uuid.uuid4())
    return {
        "/peer/v1/packages": [rig.offer_body(str(uuid.uuid4()), b"x" * 5000)],
        "/peer/v1/receipts": [_receipt_body(rig), {"receipt": _receipt_body(rig)["receipt"]}],
        "/peer/v1/transfer-requests": [
            {
                "request_id": request_id,
                "requester_org_id": SENDER,
                "holder_org_id": RECEIVER,
                "upn": upn(7),
                "dob": "2014-11-03",
                "surname": "Okafor",
                "forename": "Ada",
                "note": "She joined us on Monday.",
            }
        ],
        f"/peer/v1/transfer-requests/{request_id}/decision": [
            {"decision": "declined", "reason": "Not our pupil.", "package_id": None},
            {"decision": "authorised", "package_id": str(uuid.uuid4())},
        ],
        f"/peer/v1/packages/{uuid.uuid4()}/complete": [{}],
    }


def _check(node: _ServedNode, path: str, body: bytes) -> None:
    status, doc, headers = node.post(path, body)
    problem = str(headers.get("Content-Type", "")).startswith("application/problem+json")
    fine = 200 <= status < 300 or (400 <= status < 500 and problem)
    # 503 only for a part this node does not run, or a retry-later condition: never a crash.
    fine = fine or (status == 503 and problem and doc.get("type") != "internal-error")
    if not fine:
        route = path.split("/")[3] if path.count("/") > 3 else path.rsplit("/", 1)[-1]
        kept = keep_crash("peer", path.encode() + b"\n" + body, f"{route}:{status}")
        raise AssertionError(f"{path} answered {status} {doc} to {body[:300]!r} ({kept})")


@pytest.mark.parametrize(
    "route", ["offer", "receipts", "transfer-requests", "decision", "complete"]
)
def test_hostile_peer_bodies_get_a_problem_document_never_a_500(
    node: _ServedNode, route: str
) -> None:
    seeds = _seeds(node.rig)
    path = {
        "offer": "/peer/v1/packages",
        "receipts": "/peer/v1/receipts",
        "transfer-requests": "/peer/v1/transfer-requests",
        "decision": next(p for p in seeds if p.endswith("/decision")),
        "complete": next(p for p in seeds if p.endswith("/complete")),
    }[route]
    good = seeds[path]
    raw = [json.dumps(v).encode() for v in good]
    # The good bodies are answered (not refused as malformed): the fuzzing starts inside.
    for body in raw:
        status, doc, _ = node.post(path, body)
        if route in ("offer", "receipts", "transfer-requests"):
            assert 200 <= status < 300, doc
        else:  # parsed, then not found: no such request or package here
            assert status == 404, doc

    # Inputs a long run found (``tests/assets/fuzz/peer/``: the path, a newline, the body)
    # are replayed first, signed afresh.
    for kept in sorted((CORPUS / "peer").glob("*")):
        kept_path, _, kept_body = kept.read_bytes().partition(b"\n")
        if kept_path.decode().split("/")[3:4] == path.split("/")[3:4]:
            _check(node, kept_path.decode(), kept_body)

    @fuzz_settings(SCALE)
    @given(body=st.one_of(mutated(raw, max_ops=4), json_mutated(good)))
    def fuzz(body: bytes) -> None:
        _check(node, path, body)

    fuzz()
