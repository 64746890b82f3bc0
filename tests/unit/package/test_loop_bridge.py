"""The bridge that hands a stored document's chunks from the event loop to the builder's
thread: one batch fetched ahead, so that the loop decrypts the next while the thread
encrypts this one; closed cleanly when the builder stops early."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from transfer.package.from_store import BRIDGE_BYTES, _LoopBridge


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


class Source:
    """Chunks of one batch each; records which were asked for, and whether it was closed."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count = count
        self.fail_at = fail_at
        self.asked = [threading.Event() for _ in range(count)]
        self.closed = threading.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            for i in range(self.count):
                self.asked[i].set()
                if i == self.fail_at:
                    raise OSError("disk gone")
                yield bytes([i]) * BRIDGE_BYTES
        finally:
            self.closed.set()


def test_the_next_batch_is_fetched_while_this_one_is_being_used(
    loop: asyncio.AbstractEventLoop,
) -> None:
    source = Source(3)
    chunks = _LoopBridge(loop).iterate(source.chunks())
    first = next(chunks)
    assert first[:1] == b"\x00"
    # Still holding the first batch, the second is already being read on the loop.
    assert source.asked[1].wait(5), "the next batch was not asked for ahead"
    assert not source.asked[2].is_set()  # only one ahead: memory stays bounded
    rest = list(chunks)
    assert [c[:1] for c in rest] == [b"\x01", b"\x02"]
    assert source.closed.wait(5)


def test_stopping_early_closes_the_reader(loop: asyncio.AbstractEventLoop) -> None:
    source = Source(5)
    chunks = _LoopBridge(loop).iterate(source.chunks())
    next(chunks)
    assert source.asked[1].wait(5)
    chunks.close()  # the builder gave up (e.g. another entry failed)
    assert source.closed.wait(5)
    assert not source.asked[3].is_set()


def test_an_error_while_reading_ahead_reaches_the_builder_after_the_batches_before_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
    source = Source(4, fail_at=2)
    got: list[bytes] = []
    with pytest.raises(OSError, match="disk gone"):
        for chunk in _LoopBridge(loop).iterate(source.chunks()):
            got.append(chunk[:1])
    assert got == [b"\x00", b"\x01"]
    assert source.closed.wait(5)
