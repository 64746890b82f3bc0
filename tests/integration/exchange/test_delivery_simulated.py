"""The delivery logic under network faults, over the in-memory transport (no socket).

The outbox of the sending school talks to the inbox of the receiving school in the same
process (:mod:`transfer.transport.memory`), and the network loses requests, loses
answers, delays, duplicates and cuts bodies half-way. Whatever happens, the guarantees of
``docs/delivery.md`` hold: the receiver holds each package once, byte for byte; a lost
request or answer is retried and the retry ends in the same signed ``delivered`` receipt;
a cut body is refused and the upload resumes; a duplicate makes no second copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from tests.integration.exchange.inbox_support import RECEIVER, SENDER, Rig, receiving_node
from transfer.exchange.inbox import PeerCaller
from transfer.exchange.outbox import Outbox, OutgoingRecord
from transfer.exchange.tables import IncomingPackage, IssuedReceipt, outgoing_packages
from transfer.transport.memory import Fault, FaultKind, MemoryNetwork

#: A new pupil for each example of the property test.
_SERIALS = itertools.count(100)
#: Small chunks, so a package goes in several PATCH requests and a cut one can resume.
CHUNK = 64 * 1024
OFFER = ("POST", "/packages")
PATCH = ("PATCH", None)
COMPLETE = ("POST", "/complete")


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path, serve=False) as r:
        yield r


def _net_and_outbox(rig: Rig) -> tuple[MemoryNetwork, Outbox]:
    net = MemoryNetwork()
    net.join(RECEIVER, rig.inbox, rig.directory)
    config = rig.services.config
    transfer = config.transfer.model_copy(update={"chunk_bytes": CHUNK})
    config = config.model_copy(update={"transfer": transfer})
    outbox = Outbox(
        store=rig.store,
        keys=rig.keys,
        directory=rig.directory,
        client=net.transport(rig.keys, rig.directory, config),
        config=config,
        data_dir=rig.data_dir,
    )
    return net, outbox


async def _queue(rig: Rig, outbox: Outbox, serial: int = 1) -> OutgoingRecord:
    pupil = await rig.make_pupil_file(serial)
    queued = await outbox.queue_leaver_file(rig.school.dsl, pupil, RECEIVER)
    assert queued.ciphertext_size is not None and queued.ciphertext_size > 2 * CHUNK
    return queued


async def _due_now(rig: Rig, package_id: str) -> None:
    """The retry's pause is over (it is due at once)."""
    async with rig.store.sessions() as s, s.begin():
        await s.execute(
            update(outgoing_packages)
            .where(outgoing_packages.c.id == package_id)
            .values(next_attempt_at=None)
        )


async def _deliver(rig: Rig, outbox: Outbox, package_id: str, *, rounds: int = 12) -> int:
    """Delivery sweeps until the package leaves the queue; how many it took."""
    for n in range(1, rounds + 1):
        await _due_now(rig, package_id)
        await outbox.deliver_due()
        if (await outbox.get(rig.school.dsl, package_id)).state != "queued":
            return n
    raise AssertionError(f"package {package_id} still queued after {rounds} sweeps")


async def _held_once(rig: Rig, outbox: Outbox, queued: OutgoingRecord) -> None:
    """The receiver holds the package exactly once, byte for byte, with one delivered
    receipt; the sender is delivered and holds that same receipt."""
    async with rig.store.sessions() as s:
        rows = (
            await s.scalars(select(IncomingPackage).where(IncomingPackage.id == queued.id))
        ).all()
        delivered = await s.scalar(
            select(func.count())
            .select_from(IssuedReceipt)
            .where(IssuedReceipt.package_id == queued.id, IssuedReceipt.kind == "delivered")
        )
    assert len(rows) == 1 and rows[0].state == "delivered"
    assert delivered == 1
    held = (rig.data_dir / "inbox" / f"{queued.id}.age").read_bytes()
    assert len(held) == queued.ciphertext_size
    assert hashlib.sha256(held).hexdigest() == queued.ciphertext_sha256
    record = await outbox.get(rig.school.dsl, queued.id)
    assert record.state == "delivered"
    assert [r.kind for r in record.receipts] == ["delivered"]
    issued = await rig.inbox.receipts_for_sender(_caller(rig), queued.id)
    assert [str(r.body.receipt_id) for r in issued if r.body.kind == "delivered"] == [
        record.receipts[0].receipt_id
    ]


def _caller(rig: Rig) -> PeerCaller:
    return PeerCaller(org_id=SENDER, name="Harbourside Primary", key_id=rig.sender_keys.key_id_hex)


def _fault(kind: FaultKind, where: tuple[str, str | None], seconds: float = 0.0) -> Fault:
    method, end = where
    return Fault(kind, method=method, path_end=end, seconds=seconds)


async def test_without_faults_the_package_is_delivered_in_one_sweep(rig: Rig) -> None:
    net, outbox = _net_and_outbox(rig)
    queued = await _queue(rig, outbox)
    assert await _deliver(rig, outbox, queued.id) == 1
    await _held_once(rig, outbox, queued)
    patches = [s for s in net.sent if s.method == "PATCH"]
    assert len(patches) == -(-(queued.ciphertext_size or 0) // CHUNK)


@pytest.mark.parametrize("where", [OFFER, PATCH, COMPLETE], ids=["offer", "chunk", "complete"])
async def test_a_lost_request_is_retried(rig: Rig, where: tuple[str, str | None]) -> None:
    net, outbox = _net_and_outbox(rig)
    queued = await _queue(rig, outbox)
    net.inject(_fault("drop_request", where))
    await outbox.deliver_due()
    after = await outbox.get(rig.school.dsl, queued.id)
    assert after.state == "queued" and after.attempts == 1
    assert after.last_error is not None and "lost" in after.last_error
    assert [e.event for e in after.events][-1] == "retry"
    assert await _deliver(rig, outbox, queued.id) == 1
    await _held_once(rig, outbox, queued)


@pytest.mark.parametrize("where", [OFFER, PATCH, COMPLETE], ids=["offer", "chunk", "complete"])
async def test_a_lost_answer_is_retried_and_ends_in_the_same_receipt(
    rig: Rig, where: tuple[str, str | None]
) -> None:
    net, outbox = _net_and_outbox(rig)
    queued = await _queue(rig, outbox)
    net.inject(_fault("drop_response", where))
    await outbox.deliver_due()
    assert (await outbox.get(rig.school.dsl, queued.id)).state == "queued"
    await _deliver(rig, outbox, queued.id)
    await _held_once(rig, outbox, queued)
    if where == COMPLETE:
        # The receiver had delivered it: the retry's offer is answered with the receipt.
        offers = [s for s in net.sent if s.method == "POST" and s.path.endswith("/packages")]
        assert offers[-1].outcome == "200"


async def test_a_delayed_request_still_delivers(rig: Rig) -> None:
    net, outbox = _net_and_outbox(rig)
    queued = await _queue(rig, outbox)
    net.inject(_fault("delay", PATCH, 0.2), _fault("delay", COMPLETE, 0.2))
    assert await _deliver(rig, outbox, queued.id) == 1
    await _held_once(rig, outbox, queued)
    assert [s.fault for s in net.sent if s.fault] == ["delay", "delay"]


@pytest.mark.parametrize("where", [OFFER, PATCH, COMPLETE], ids=["offer", "chunk", "complete"])
async def test_a_duplicated_request_makes_no_second_copy(
    rig: Rig, where: tuple[str, str | None]
) -> None:
    net, outbox = _net_and_outbox(rig)
    queued = await _queue(rig, outbox)
    net.inject(_fault("duplicate", where))
    await _deliver(rig, outbox, queued.id)
    await _held_once(rig, outbox, queued)


async def test_a_cut_body_is_refused_and_the_upload_resumes(rig: Rig) -> None:
    net, outbox = _net_and_outbox(rig)
    queued = await _queue(rig, outbox)
    # The second chunk is cut half-way: the receiver keeps none of it.
    net.inject(_fault("cut_body", PATCH))
    await outbox.deliver_due()
    after = await outbox.get(rig.school.dsl, queued.id)
    assert after.state == "queued" and after.last_error is not None
    held = await rig.inbox.upload_offset(_caller(rig), queued.id)
    assert held % CHUNK == 0 and held < (queued.ciphertext_size or 0)
    assert await _deliver(rig, outbox, queued.id) == 1
    await _held_once(rig, outbox, queued)
    # The retry resumed where the receiver stood: no chunk before it was sent again.
    retry_patches = [s for s in net.sent if s.method == "PATCH"][1:]
    size = queued.ciphertext_size or 0
    assert len(retry_patches) == -(-(size - held) // CHUNK)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    faults=st.lists(
        st.tuples(
            st.sampled_from(["drop_request", "drop_response", "duplicate", "cut_body", "delay"]),
            st.sampled_from([OFFER, PATCH, COMPLETE, ("HEAD", None)]),
        ),
        max_size=6,
    )
)
async def test_any_sequence_of_faults_ends_with_the_package_held_once(
    rig: Rig, faults: list[tuple[FaultKind, tuple[str, str | None]]]
) -> None:
    net, outbox = _net_and_outbox(rig)
    queued = await _queue(rig, outbox, next(_SERIALS))
    net.inject(*(_fault(kind, where, 0.01) for kind, where in faults))
    await _deliver(rig, outbox, queued.id, rounds=len(faults) + 3)
    await _held_once(rig, outbox, queued)


async def _pull_due_now(rig: Rig, package_id: str) -> None:
    async with rig.store.sessions() as s, s.begin():
        await s.execute(
            update(outgoing_packages)
            .where(outgoing_packages.c.id == package_id)
            .values(next_pull_at=None)
        )


async def test_a_lost_receipt_pull_is_asked_again_and_a_duplicate_is_kept_once(rig: Rig) -> None:
    net, outbox = _net_and_outbox(rig)
    queued = await _queue(rig, outbox)
    await _deliver(rig, outbox, queued.id)
    await rig.inbox.show(rig.receiver_dsl, queued.id)  # the receiver issues a viewed receipt
    net.inject(_fault("drop_request", ("GET", "/receipts")))
    await _pull_due_now(rig, queued.id)
    assert await outbox.pull_receipts() == 0
    assert (await outbox.get(rig.school.dsl, queued.id)).state == "delivered"
    net.inject(_fault("duplicate", ("GET", "/receipts")))
    await _pull_due_now(rig, queued.id)
    assert await outbox.pull_receipts() == 1
    record = await outbox.get(rig.school.dsl, queued.id)
    assert record.state == "viewed"
    assert sorted(r.kind for r in record.receipts) == ["delivered", "viewed"]
    await _pull_due_now(rig, queued.id)
    assert await outbox.pull_receipts() == 0  # held already: nothing changes
    assert len((await outbox.get(rig.school.dsl, queued.id)).receipts) == 2


async def test_a_slow_delivery_holds_one_slot_not_the_whole_sweep(rig: Rig) -> None:
    """The sweep keeps ``window`` deliveries going: while one offer hangs, the other slot
    delivers every other package (a sweep that waited for its slowest would stall)."""
    net, outbox = _net_and_outbox(rig)
    queued = [await _queue(rig, outbox, serial) for serial in range(1, 6)]
    net.inject(_fault("delay", OFFER, seconds=600))  # the first offer sent hangs
    sweep = asyncio.create_task(outbox.deliver_flowing(window=2))
    try:
        async with asyncio.timeout(120):
            while True:
                states = [(await outbox.get(rig.school.dsl, q.id)).state for q in queued]
                if states.count("delivered") == 4:
                    break
                assert not sweep.done(), f"the sweep ended early: {states}"
                await asyncio.sleep(0.05)
        assert states.count("queued") == 1
        offers = [s for s in net.sent if s.method == "POST" and s.path.endswith("/packages")]
        assert len(offers) == 4  # the hung offer has not been answered yet
    finally:
        sweep.cancel()
        await asyncio.gather(sweep, return_exceptions=True)
    for q in queued:
        if (await outbox.get(rig.school.dsl, q.id)).state == "delivered":
            await _held_once(rig, outbox, q)


async def test_a_sweep_tries_at_most_its_limit_and_leaves_the_rest_due(rig: Rig) -> None:
    _, outbox = _net_and_outbox(rig)
    queued = [await _queue(rig, outbox, serial) for serial in range(1, 6)]
    assert await outbox.deliver_flowing(window=2, most=3) == 3
    states = sorted([(await outbox.get(rig.school.dsl, q.id)).state for q in queued])
    assert states == ["delivered"] * 3 + ["queued"] * 2
    assert await outbox.deliver_flowing(window=2, most=3) == 2
    for q in queued:
        await _held_once(rig, outbox, q)
