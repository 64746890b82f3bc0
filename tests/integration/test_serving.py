"""``transfer.serving.serving``: what ``handover serve`` runs once the node is open.

The node is served in the test's own process, as the audit benchmark does: its
requests append to the node's own audit log, and leaving the block stops both the
server and the scheduler.
"""

from __future__ import annotations

import gc
import re
import secrets
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from transfer.commands.init import initialise
from transfer.errors import ConfigError
from transfer.metrics import SWEEP_SKIPPED_BUSY
from transfer.node import Node
from transfer.serving import serving
from transfer.transport.http import http_transport


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    """``serving`` freezes the objects alive at start-up (as serve does); undo it afterwards."""
    yield
    gc.unfreeze()


@pytest.fixture
async def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HANDOVER_KEK", secrets.token_hex(32))
    data = tmp_path / "node"
    await initialise(
        data,
        name="t",
        schools=[("123456", "8012000", "Hillside")],
        agencies=[],
        admin=None,
        admin_password=None,
    )
    return data


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def test_serves_the_api_and_sweeps_until_the_block_ends(data_dir: Path) -> None:
    async with await Node.open(data_dir, transport=http_transport) as node:
        async with serving(node, "127.0.0.1", 0) as running:
            assert running.port > 0 and running.scheme == "https"
            assert running.base_url == f"https://127.0.0.1:{running.port}"
            assert running.scheduler.running
            jobs = {job.func.__name__ for job in running.scheduler.get_jobs()}
            assert {"_sweep_retention", "_checkpoint", "push_due", "send_due"} <= jobs
            assert "referral_deadline_sweep" in jobs and "sweep_expired" in jobs
            ctx = ssl.create_default_context(cafile=str(data_dir / "tls" / "dev-cert.pem"))
            before = await node.audit_log.size()
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{running.base_url}/api/v1/openapi.json", ssl=ctx) as r:
                    assert r.status == 200
                    assert (await r.json())["openapi"].startswith("3.1")
                body = {"org": "123456", "username": "nobody", "password": "not the password"}
                async with http.post(f"{running.base_url}/api/v1/session", json=body, ssl=ctx) as r:
                    assert r.status == 401
            # The request handler appended through the node's own audit log.
            assert await node.audit_log.size() == before + 1
            entry_body, _ = await node.audit_log.entry(before)
            assert b'"action":"signin.failed"' in entry_body
        assert not running.scheduler.running
        assert _refused(running.port)


async def test_refuses_to_serve_without_tls(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOVER_SERVER__DEV_TLS", "false")
    async with await Node.open(data_dir, transport=http_transport) as node:
        with pytest.raises(ConfigError, match=r"no TLS: set server\.tls_cert"):
            async with serving(node, "127.0.0.1", 0):
                pytest.fail("served without TLS")


async def test_names_an_address_it_cannot_listen_on(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with await Node.open(data_dir, transport=http_transport) as node:
            with pytest.raises(ConfigError, match=re.escape(f"cannot listen on 127.0.0.1:{port}:")):
                async with serving(node, "127.0.0.1", port):
                    pytest.fail("served on a port that is taken")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serves_its_counters_on_the_metrics_port(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: a sweep still busy when due is counted here instead of logged as a WARNING."""
    port = _free_port()
    monkeypatch.setenv("HANDOVER_SERVER__METRICS_PORT", str(port))
    async with await Node.open(data_dir, transport=http_transport) as node:
        async with serving(node, "127.0.0.1", 0) as running:
            names = [job.name for job in running.scheduler.get_jobs()]
            assert len(set(names)) == len(names)  # one series per sweep
            running.metrics.inc(SWEEP_SKIPPED_BUSY, {"sweep": "deliver_due"})
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    text = await r.text()
                async with http.get(f"http://127.0.0.1:{port}/api/v1/openapi.json") as r:
                    assert r.status == 404  # the counters and nothing else
            assert 'handover_sweep_skipped_busy_total{sweep="deliver_due"} 1\n' in text
            assert 'handover_sweep_running{sweep="deliver_due"} 0\n' in text
            assert "# TYPE handover_sweep_runs_total counter" in text
        assert _refused(port)
