"""The outbox against the real peer server (``transfer/api/peer.py``) on a socket:
a sender killed mid-upload is taken over when its lease runs out, and the upload resumes from
the offset the receiver holds; nothing arrives twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.exchange.inbox_support import RECEIVER, Rig, receiving_node
from transfer.config import Config, TransferSection
from transfer.exchange.outbox import Outbox
from transfer.transport.base import PeerResponse
from transfer.transport.http import PeerClient

CHUNK = 64 * 1024


class SlowClient(PeerClient):
    """Pauses before each upload chunk, so a test can kill the sender mid-upload."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.patches = 0
        self.two_sent = asyncio.Event()

    async def request(self, *args: Any, **kwargs: Any) -> PeerResponse:
        if args[2] == "PATCH":
            self.patches += 1
            if self.patches == 3:
                self.two_sent.set()
            await asyncio.sleep(0.2)
        return await super().request(*args, **kwargs)


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path) as r:
        yield r


def _outbox(rig: Rig, config: Config, worker: str, client: PeerClient) -> Outbox:
    return Outbox(
        store=rig.store,
        keys=rig.keys,
        directory=rig.directory,
        client=client,
        config=config,
        data_dir=rig.data_dir,
        worker_id=worker,
        lease_seconds=1.0,
    )


async def test_killed_sender_is_taken_over_and_resumes_without_duplicate(rig: Rig) -> None:
    config = rig.services.config.model_copy(
        update={"transfer": TransferSection(chunk_bytes=CHUNK, max_package_bytes=4 * 1024**2)}
    )
    slow = SlowClient(keys=rig.keys, directory=rig.directory, config=config)
    fast = PeerClient(keys=rig.keys, directory=rig.directory, config=config)
    try:
        first, second = _outbox(rig, config, "a", slow), _outbox(rig, config, "b", fast)
        rig.services.receipts = second
        pupil = await rig.make_pupil_file()
        queued = await first.queue_leaver_file(rig.school.dsl, pupil, RECEIVER)
        size = queued.ciphertext_size
        assert size is not None and size > 4 * CHUNK
        part = rig.data_dir / "incoming" / f"{queued.id}.part"

        task = asyncio.create_task(first.deliver_due())
        await asyncio.wait_for(slow.two_sent.wait(), 30)
        task.cancel()  # the process is killed: its lease stays in the database
        with pytest.raises(asyncio.CancelledError):
            await task
        held = part.stat().st_size
        assert held == 2 * CHUNK

        assert await second.deliver_due() == 0  # the lease still holds
        await asyncio.sleep(1.1)
        assert await second.deliver_due() == 1
        done = await second.get(rig.school.dsl, queued.id)
        assert done.state == "delivered" and [r.kind for r in done.receipts] == ["delivered"]
        assert second.bytes_sent == size - held and second.bytes_sent < size
        inbox = rig.data_dir / "inbox" / f"{queued.id}.age"
        assert inbox.read_bytes() == first.path_of(queued.id).read_bytes()
        assert len(rig.events("transfer.received", "ok")) == 1
        assert [i.package_id for i in await rig.inbox.list(rig.receiver_dsl)] == [queued.id]
    finally:
        await slow.close()
        await fast.close()
