"""Alerts name the child only when read, through the store; they keep no copy of it.

Issue 11, item 13 asked why ``alerts list`` showed pupils' names under a random
KEK. The alerts table holds no name (its subjects and messages are written by the
node and name no child); the names come from the pupils table, where a pupil's
basic details are plaintext by design (docs/store.md, "Encryption at rest"), so
no key was needed to read them. A wrong KEK is now refused when the node opens
(tests/integration/test_node_identity.py, tests/integration/test_damaged_state.py);
here: alerts ask the store for names when they are listed (``Store.pupil_names``:
the reader's permission, their own organisation's pupils only) and store none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from schemas.records import NewPupil
from tests.integration.alerts.test_alerts import URN, AlertWorld, open_world, upn
from transfer.alerts import Alerts
from transfer.alerts.tables import alerts as alerts_table
from transfer.config import SmtpSection
from transfer.mail import Mailer
from transfer.store.permissions import Role

OTHER = "199003"


@pytest.fixture
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[AlertWorld]:
    w = await open_world(db_url, tmp_path / "data")
    try:
        yield w
    finally:
        await w.store.close()


async def test_alerts_keep_no_name_and_show_only_their_own_schools_pupils(
    world: AlertWorld,
) -> None:
    store = world.store
    admin = await store.actor_for((await store.find_staff(URN, "admin")).id)  # type: ignore[union-attr]
    ours = await store.create_pupil(
        admin,
        NewPupil(upn=upn(1), surname="Zebedee", forename="Quilla", dob=date(2014, 1, 2), sex="F"),
    )
    # Another school on the same node, with a pupil of its own.
    await store.create_school(name="Other Primary", urn=OTHER, laestab="8012001")
    other_admin = await store.actor_for(
        (
            await store.bootstrap_staff(
                OTHER, username="oadmin", display_name="O", roles=[Role.ADMINISTRATOR]
            )
        ).id
    )
    theirs = await store.create_pupil(
        other_admin,
        NewPupil(upn=upn(2), surname="Xanthe", forename="Yorick", dob=date(2014, 1, 2), sex="M"),
    )
    alerts = Alerts(store, Mailer(SmtpSection()))
    assert await alerts.notify(
        URN, key="k-ours", level="due", subject="Due", message="M", pupil_id=ours.id
    )
    # An alert of our school that names (by a fault) a pupil of the other school.
    assert await alerts.notify(
        URN, key="k-theirs", level="due", subject="Due", message="M", pupil_id=theirs.id
    )
    listed = {a.key: a.pupil_name for a in await alerts.list(world.dsl)}
    assert listed == {"k-ours": "Quilla Zebedee", "k-theirs": None}
    # Nothing in the alerts table carries either child's name.
    async with store.sessions() as s:
        rows = (await s.execute(sa.select(alerts_table))).all()
    text = " ".join(str(v) for row in rows for v in row)
    for name in ("Quilla", "Zebedee", "Yorick", "Xanthe"):
        assert name not in text
    # An erased pupil is named as such.
    await store.erase_pupil(world.dsl, ours.id)
    listed = {a.key: a.pupil_name for a in await alerts.list(world.dsl)}
    assert listed["k-ours"] == "(erased)"
