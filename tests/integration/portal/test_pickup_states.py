"""The SQL form of a pickup's state (the ``WHERE`` of its conditional updates) says what the
Python form says, for every combination of the facts it is derived from."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from receivers.portal.core import in_states, state_of
from receivers.portal.tables import PortalPickup
from transfer.states.pickup import PICKUP, Pickup

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _row(n: int, facts: tuple[bool, ...]) -> PortalPickup:
    revoked, locked, acknowledged, past, deleted, opened = facts
    then = NOW - timedelta(hours=1)
    return PortalPickup(
        id=f"p{n}",
        org_id="org",
        referral_id="r",
        email="a@example.org",
        package_id="pkg",
        package_kind="referral_x",
        stored_sha256="0" * 64,
        stored_size=1,
        token_hash=f"{n:064d}",
        identity_sealed=None if deleted else b"sealed",
        passcode_hash="x",
        emailed=False,
        created_by="dsl",
        created_at=then,
        expires_at=NOW - timedelta(seconds=1) if past else NOW + timedelta(days=1),
        failed_count=0,
        locked_at=then if locked else None,
        revoked_at=then if revoked else None,
        first_opened_at=then if opened else None,
        acknowledged_at=then if acknowledged else None,
    )


def test_every_state_in_sql_is_the_state_in_python() -> None:
    engine = create_engine("sqlite://")
    PortalPickup.__table__.create(engine)  # type: ignore[attr-defined]
    rows = [_row(n, f) for n, f in enumerate(itertools.product((False, True), repeat=6))]
    with Session(engine) as s:
        s.add_all(rows)
        s.commit()
        expected = {r.id: state_of(r, NOW) for r in rows}
        for event in PICKUP.all_events():
            sources = set(PICKUP.sources(event))
            found = set(s.scalars(select(PortalPickup.id).where(in_states(sources, NOW))))
            assert found == {i for i, st in expected.items() if st in sources}, event
        for state in Pickup:
            found = set(s.scalars(select(PortalPickup.id).where(in_states([state], NOW))))
            assert found == {i for i, st in expected.items() if st is state}, state
        assert set(s.scalars(select(PortalPickup.id).where(in_states([], NOW)))) == set()
    engine.dispose()
