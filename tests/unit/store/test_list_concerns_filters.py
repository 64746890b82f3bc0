"""Store.list_concerns(status=..., limit=...): the dashboard's lists, filtered in the query."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from schemas.records import NewConcern, NewPupil, NewTriage
from tests.unit.auth.support import Node, open_node
from transfer.identifiers import upn_check_letter
from transfer.store.permissions import Role

T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def node(db_url: str, tmp_path: Path) -> AsyncIterator[Node]:
    async with open_node(db_url, tmp_path / "data") as n:
        yield n


async def test_status_and_limit_keep_what_each_role_may_read(node: Node) -> None:
    dsl = await node.session(await node.person("dsl", [Role.DSL]))
    head = await node.session(await node.person("head", [Role.HEAD_TEACHER]))
    admin = await node.session(await node.person("admin", [Role.ADMINISTRATOR]))
    body = "801200001001"
    pupil = await node.store.create_pupil(
        admin.actor,
        NewPupil(
            upn=upn_check_letter(body) + body,
            surname="Okafor",
            forename="Amara",
            dob=date(2015, 1, 2),
            sex="F",
        ),
    )
    made = []
    for n in range(6):
        category = "domestic_abuse" if n in (4, 5) else "bullying"  # restricted: 4 and 5
        made.append(
            await node.store.record_concern(
                dsl.actor,
                NewConcern(
                    pupil_ids=(pupil.id,),
                    category=category,
                    account="Seen upset.",
                    happened_at=T0 + timedelta(days=n),
                ),
            )
        )
    for c in made[:2]:
        await node.store.triage_concern(
            dsl.actor, c.id, NewTriage(decision="monitor", reason="Watch.")
        )

    waiting = await node.store.list_concerns(dsl.actor, status="open")
    assert [c.id for c in waiting] == [made[n].id for n in (5, 4, 3, 2)]
    assert [c.id for c in await node.store.list_concerns(dsl.actor, limit=2)] == [
        made[5].id,
        made[4].id,
    ]
    # The head teacher never sees restricted categories, with or without a limit.
    newest = await node.store.list_concerns(head.actor, limit=2)
    assert [c.id for c in newest] == [made[3].id, made[2].id]
    assert len(await node.store.list_concerns(head.actor)) == 4
    reviewed = await node.store.list_concerns(head.actor, status="under_review", limit=1)
    assert [c.id for c in reviewed] == [made[1].id]
    assert node.events("store.concern.list")[-1].detail == {"count": 1}
