"""The bridge that hands a stored document's chunks from the event loop to the builder's
thread: one batch fetched ahead, so that the loop decrypts the next while the thread
encrypts this one; closed cleanly when the builder stops early."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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

    def __init__(
        self,
        count: int,
        fail_at: int | None = None,
        *,
        gate_at: int | None = None,
        gate: threading.Event | None = None,
    ) -> None:
        self.count = count
        self.fail_at = fail_at
        self.gate_at = gate_at
        self.gate = gate
        self.asked = [threading.Event() for _ in range(count)]
        self.closed = threading.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            for i in range(self.count):
                self.asked[i].set()
                if i == self.gate_at and self.gate is not None:
                    await asyncio.to_thread(self.gate.wait, 10)
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


def test_stopping_early_closes_the_reader_after_the_batch_under_way(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The builder gives up (another entry failed) while the next batch is still being
    read: the reader is closed once that read is done (an async generator cannot be
    closed while it runs), and the close waits for it."""
    gate = threading.Event()
    source = Source(5, gate_at=1, gate=gate)
    chunks = _LoopBridge(loop).iterate(source.chunks())
    next(chunks)
    assert source.asked[1].wait(5)  # the read ahead is under way, held at the gate
    errors: list[BaseException] = []

    def give_up() -> None:
        try:
            chunks.close()
        except BaseException as exc:
            errors.append(exc)

    closer = threading.Thread(target=give_up)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive() and not source.closed.is_set()  # waiting for the read
    gate.set()
    closer.join(5)
    assert not closer.is_alive() and errors == []
    assert source.closed.wait(5)
    assert not source.asked[3].is_set()


def test_a_reader_abandoned_on_the_loop_thread_does_not_stop_the_loop(tmp_path: Path) -> None:
    """A consumer that fails mid-document without closing the chunks leaves the generator
    to the garbage collector, which may finalise it on the event loop's own thread (the
    error travels back to the loop through ``to_thread``): its clean-up must not wait there
    for the loop. Run in a child process, so that a stopped loop fails this test instead of
    hanging the suite."""
    script = tmp_path / "abandon.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, gc
            from transfer.package.from_store import BRIDGE_BYTES, _LoopBridge

            async def slow():
                try:
                    for i in range(5):
                        await asyncio.sleep(0.1)
                        yield bytes([i]) * BRIDGE_BYTES
                finally:
                    print("reader closed", flush=True)

            def consume(bridge):
                chunks = bridge.iterate(slow())  # kept by the frame, which the error keeps
                for _ in chunks:
                    raise OSError("disk full")

            async def main():
                bridge = _LoopBridge(asyncio.get_running_loop())
                try:
                    await asyncio.to_thread(consume, bridge)
                except OSError:
                    pass
                gc.collect()
                await asyncio.sleep(0.5)
                print("loop alive", flush=True)

            asyncio.run(main())
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["reader", "closed", "loop", "alive"], done.stdout


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
