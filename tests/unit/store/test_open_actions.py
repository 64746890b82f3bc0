"""Store.open_actions: the DSL team's actions not yet done, soonest due first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from schemas.records import NewAction, NewConcern, NewPupil
from tests.unit.auth.support import OTHER_URN, Node, open_node
from transfer.identifiers import upn_check_letter
from transfer.store.permissions import PermissionDenied, Role


def _upn(serial: int) -> str:
    body = f"801200001{serial:03d}"
    return upn_check_letter(body) + body


@pytest.fixture
async def node(db_url: str, tmp_path: Path) -> AsyncIterator[Node]:
    async with open_node(db_url, tmp_path / "data") as n:
        yield n


async def test_open_actions_in_due_order_without_done_or_erased_or_other_schools(
    node: Node,
) -> None:
    dsl = await node.session(await node.person("dsl", [Role.DSL]))
    admin = await node.session(await node.person("admin", [Role.ADMINISTRATOR]))
    pupils = [
        await node.store.create_pupil(
            admin.actor,
            NewPupil(upn=upn, surname=name, forename="A", dob=date(2015, 1, 2), sex="F"),
        )
        for upn, name in ((_upn(1), "Okafor"), (_upn(2), "Nowak"))
    ]
    concerns = [
        await node.store.record_concern(
            dsl.actor,
            NewConcern(
                pupil_ids=(p.id,),
                category="bullying",
                account="Seen crying.",
                happened_at=datetime(2026, 9, 1, 9, 0, tzinfo=UTC),
            ),
        )
        for p in pupils
    ]
    add = node.store.add_action
    late = await add(
        dsl.actor, concerns[0].id, NewAction(text="Call home", due_on=date(2026, 9, 2))
    )
    undated = await add(dsl.actor, concerns[0].id, NewAction(text="Review in a month"))
    soon = await add(
        dsl.actor, concerns[0].id, NewAction(text="Meet Amara", due_on=date(2026, 9, 9))
    )
    done = await add(dsl.actor, concerns[0].id, NewAction(text="Done already"))
    await node.store.complete_action(dsl.actor, done.id)
    erased = await add(dsl.actor, concerns[1].id, NewAction(text="Gone", due_on=date(2026, 9, 1)))
    await node.store.erase_pupil(dsl.actor, pupils[1].id)

    other = await node.session(await node.person("dsl2", [Role.DSL], org=OTHER_URN), OTHER_URN)
    assert await node.store.open_actions(other.actor) == []

    actions = await node.store.open_actions(dsl.actor)
    assert [a.id for a in actions] == [late.id, soon.id, undated.id]
    assert [a.text for a in actions] == ["Call home", "Meet Amara", "Review in a month"]
    assert erased.id not in {a.id for a in actions}
    assert node.events("store.action.list")[-1].detail == {"count": 3}


async def test_only_the_dsl_team_lists_actions(node: Node) -> None:
    for role in (Role.HEAD_TEACHER, Role.STAFF, Role.ADMINISTRATOR, Role.AUDITOR):
        who = await node.session(await node.person(f"p_{role.value}", [role]))
        with pytest.raises(PermissionDenied):
            await node.store.open_actions(who.actor)
    assert len([e for e in node.events("store.action.list") if e.outcome == "refused"]) == 4
