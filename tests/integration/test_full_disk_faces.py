"""A full disk at the staff API and the web app: 503 with a plain word, one log line, an
alert for the DSL teams once it can be recorded, and work carries on once space is freed
(issue 17, item 6).

PostgreSQL raises its own ``disk_full`` here (``tests.support.disk.postgres_full``);
SQLite's "database or disk is full" is met on a real full file system by a served node in
``tests/integration/test_full_disk_serve.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.disk import postgres_full
from tests.support.web import Site, site_for
from tests.unit.auth.support import PASSWORD, URN
from transfer.alerts import Alerts
from transfer.config import SmtpSection
from transfer.mail import Mailer
from transfer.space import ALERT_KEY
from transfer.store.permissions import Role

pytestmark = pytest.mark.postgres


@pytest.fixture
async def site(pg_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    async with site_for(pg_url, tmp_path) as s:
        yield s


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_staff_api_answers_503_out_of_space_and_carries_on(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    await site.node.person("dsl", [Role.DSL], enrol=False)
    body = {"org": URN, "username": "dsl", "password": "not the password"}
    caplog.clear()
    with caplog.at_level(logging.INFO):
        async with postgres_full(site.node.store.engine):
            async with site.client.post("/api/v1/session", json=body) as r:
                status, doc = r.status, await r.json()
                rid = r.headers["X-Request-ID"]
    assert status == 503, doc
    assert r.content_type == "application/problem+json"
    assert doc["type"] == "urn:handover:problem:out-of-space"
    assert doc["title"] == "The node is out of storage space"
    assert doc["detail"].startswith("this node is out of storage space (the database ")
    [line] = _errors(caplog)
    assert line.getMessage().startswith("POST /api/v1/session failed: this node is out of")
    assert line.getMessage().endswith(f"[request {rid}]")
    assert line.exc_info is None
    # Space freed: the same request is answered as usual.
    async with site.client.post("/api/v1/session", json=body) as r:
        assert r.status == 401, await r.text()
    async with site.client.post("/api/v1/session", json={**body, "password": PASSWORD}) as r:
        assert r.status in (200, 201), await r.text()


async def test_a_web_page_answers_503_saying_the_server_is_out_of_space(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    await site.node.person("dsl", [Role.DSL], enrol=False)
    form = await site.get("/sign-in")
    fields = {
        "csrf": form.hidden("csrf"),
        "org": URN,
        "username": "dsl",
        "password": "not the password",
        "code": "",
    }
    caplog.clear()
    with caplog.at_level(logging.INFO):
        async with postgres_full(site.node.store.engine):
            page = await site.post("/sign-in", fields)
    assert page.status == 503
    assert page.title == "Sorry, the service is not available just now - Handover"
    assert "run out of storage space, so what you just did was not saved" in page.text
    assert "Traceback" not in page.text and "disk_full" not in page.text
    [line] = _errors(caplog)
    assert line.getMessage().startswith("POST /sign-in failed: this node is out of storage")
    assert line.exc_info is None
    # Space freed: the form works again.
    page = await site.post("/sign-in", {**fields, "password": PASSWORD})
    assert page.status == 200
    assert page.title != "Sorry, the service is not available just now - Handover"


async def test_the_dsl_teams_are_alerted_once_the_database_can_take_it(site: Site) -> None:
    store = site.node.store
    await site.node.person("dsl", [Role.DSL], enrol=False)
    alerts = Alerts(store, Mailer(SmtpSection()))
    orgs = [org.id for org in await store.list_organisations()]
    # Nothing to report while nothing was refused.
    assert await store.space.report(alerts, orgs) is False
    async with postgres_full(store.engine):
        async with site.client.post("/api/v1/session", json={"org": URN}) as r:
            assert r.status in (422, 503)
        async with site.client.post(
            "/api/v1/session", json={"org": URN, "username": "dsl", "password": "wrong"}
        ) as r:
            assert r.status == 503
        # While the disk is full the alert cannot be stored: it stays pending.
        from transfer.errors import OutOfSpaceError

        with pytest.raises(OutOfSpaceError):
            await store.space.report(alerts, orgs)
    assert store.space.pending_since is not None
    assert await store.space.report(alerts, orgs) is True
    assert store.space.pending_since is None
    keys = await alerts.open_keys(URN, ALERT_KEY)
    assert keys == [ALERT_KEY]
    # Reported once: the next run has nothing to say.
    assert await store.space.report(alerts, orgs) is False
