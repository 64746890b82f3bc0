"""End to end over a real socket: the sender's outbox and client deliver to the peer server;
the receiving DSL accepts; the receipt-push sweep brings the accepted receipt back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.exchange.inbox_support import RECEIVER, Rig, receiving_node
from transfer.exchange.outbox import Outbox
from transfer.exchange.receipt_push import ReceiptPusher
from transfer.transport.http import PeerClient


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path) as r:
        yield r


async def test_outbox_delivers_and_the_accepted_receipt_comes_back(rig: Rig) -> None:
    client = PeerClient(keys=rig.keys, directory=rig.directory, config=rig.services.config)
    try:
        outbox = Outbox(
            store=rig.store,
            keys=rig.keys,
            directory=rig.directory,
            client=client,
            config=rig.services.config,
            data_dir=rig.data_dir,
        )
        rig.services.receipts = outbox
        pupil = await rig.make_pupil_file()
        queued = await outbox.queue_leaver_file(rig.school.dsl, pupil, RECEIVER)
        pid = queued.id
        assert await outbox.deliver_due() == 1
        sent = await outbox.get(rig.school.dsl, pid)
        assert sent.state == "delivered"
        assert [i.package_id for i in await rig.inbox.list(rig.receiver_dsl)] == [pid]

        await rig.inbox.accept(rig.receiver_dsl, pid)
        pusher = ReceiptPusher(store=rig.store, client=client, config=rig.services.config)
        # The accepted receipt, and the delivered one with it (already held: kept once).
        assert await pusher.push_due() == 2
        done = await outbox.get(rig.school.dsl, pid)
        assert done.state == "accepted"
        # Nothing is left to push, and a second sweep sends nothing twice.
        assert await pusher.push_due() == 0
    finally:
        await client.close()
