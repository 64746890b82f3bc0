"""What a referral is checked for before it exists and before it goes (issue 11, item 17).

A draft is made whole or not at all (a selection or a redaction that does not fit
leaves no draft behind); a draft can be discarded; a referral with no chronology
entry chosen is sent only when the DSL confirms sending the form alone. The child is
named by UPN as readily as by id (item 16). SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from schemas.records import NewConcern
from schemas.referrals import NewRedaction, SelectedItem
from tests.support.referrals import Setting, mash_form
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.referrals.forms import parse_form
from transfer.referrals.redaction import RedactionError
from transfer.referrals.service import NothingSelectedError
from transfer.referrals.tables import Referral, ReferralEvent
from transfer.store.permissions import PermissionDenied
from transfer.store.tables import SealedField

UPN = "H801200001001"
T0 = datetime(2026, 9, 7, 9, 0, tzinfo=UTC)


async def _concern(st: Setting) -> tuple[str, str]:
    sc = st.school
    pupil = await sc.pupil(UPN)
    concern = await sc.store.record_concern(
        sc.staff,
        NewConcern(
            pupil_ids=(pupil.id,),
            category="child_protection",
            happened_at=T0 - timedelta(days=1),
            account="Amara said Kai Smith hit her.",
        ),
    )
    return pupil.id, concern.id


async def _rows(st: Setting) -> tuple[int, int, int]:
    async with st.school.store.sessions() as s:
        referrals = await s.scalar(sa.select(sa.func.count()).select_from(Referral))
        events = await s.scalar(sa.select(sa.func.count()).select_from(ReferralEvent))
        sealed = await s.scalar(
            sa.select(sa.func.count())
            .select_from(SealedField)
            .where(SealedField.record_table == "referrals")
        )
    return int(referrals or 0), int(events or 0), int(sealed or 0)


async def test_a_draft_is_made_whole_or_not_at_all(setting: Setting) -> None:
    st, sc = setting, setting.school
    pupil_id, concern_id = await _concern(st)
    form = parse_form(mash_form())
    chosen = [SelectedItem(kind="concern", id=concern_id)]
    # A name that appears nowhere in what is chosen: refused, and no draft is left behind.
    with pytest.raises(RedactionError):
        await st.referrals.draft(
            sc.dsl,
            pupil_id=UPN,
            agency_org_id="mash-bristol",
            form=form,
            selection=chosen,
            redactions=[NewRedaction(text="Nobody Here")],
        )
    # A chosen entry that does not exist: the same.
    with pytest.raises(NotFoundError):
        await st.referrals.draft(
            sc.dsl,
            pupil_id=UPN,
            agency_org_id="mash-bristol",
            form=form,
            selection=[SelectedItem(kind="concern", id="0b6c2f7e-9a1d-4c1b-8d2e-3f4a5b6c7d8e")],
        )
    assert await st.referrals.list(sc.dsl) == []
    assert await _rows(st) == (0, 0, 0)
    refusals = [e for e in sc.audit.events if e.action == "referral.drafted"]
    assert [e.outcome for e in refusals] == ["refused", "refused"]

    # All of it at once, the child named by UPN: one draft, one step in its history.
    draft = await st.referrals.draft(
        sc.dsl,
        pupil_id=UPN,
        agency_org_id="mash-bristol",
        form=form,
        selection=chosen,
        redactions=[NewRedaction(text="Kai Smith")],
    )
    assert draft.pupil_id == pupil_id and draft.selection == tuple(chosen)
    assert [m.text for m in draft.redactions] == ["Kai Smith"]
    assert [e.action for e in draft.events] == ["drafted"]
    assert [r.id for r in await st.referrals.list(sc.dsl, pupil_id=UPN)] == [draft.id]


async def test_a_draft_can_be_discarded(setting: Setting) -> None:
    st, sc = setting, setting.school
    pupil_id, concern_id = await _concern(st)
    draft = await st.referrals.draft(
        sc.dsl,
        pupil_id=pupil_id,
        agency_org_id="mash-bristol",
        form=parse_form(mash_form()),
        selection=[SelectedItem(kind="concern", id=concern_id)],
    )
    with pytest.raises(PermissionDenied):
        await st.referrals.discard(sc.staff, draft.id)
    gone = await st.referrals.discard(sc.dsl, draft.id)
    assert gone.id == draft.id and gone.state == "discarded" and gone.pupil_id == pupil_id
    with pytest.raises(NotFoundError):
        await st.referrals.get(sc.dsl, draft.id)
    with pytest.raises(NotFoundError):
        await st.referrals.discard(sc.dsl, draft.id)
    assert await _rows(st) == (0, 0, 0)  # the form, selection and marks are gone with it
    done = [e for e in sc.audit.events if e.action == "referral.discarded"]
    assert [(e.outcome, e.targets.get("pupil")) for e in done] == [
        ("refused", None),
        ("ok", pupil_id),
    ]
    lines = [
        getattr(e.record, "summary", "")
        for e in await sc.store.chronology(sc.dsl, pupil_id)
        if e.kind == "event"
    ]
    assert any("discarded before it was sent" in x for x in lines)

    # What was sealed cannot be discarded: it is the agency's record now.
    sent = await st.referrals.draft(
        sc.dsl,
        pupil_id=pupil_id,
        agency_org_id="mash-bristol",
        form=parse_form(mash_form()),
        selection=[SelectedItem(kind="concern", id=concern_id)],
    )
    await st.referrals.seal(sc.dsl, sent.id, io.BytesIO(), route="offline")
    with pytest.raises(ConflictError, match="only a draft can be discarded"):
        await st.referrals.discard(sc.dsl, sent.id)


async def test_nothing_chosen_goes_only_when_confirmed(setting: Setting) -> None:
    st, sc = setting, setting.school
    _, concern_id = await _concern(st)
    draft = await st.referrals.draft(
        sc.dsl, pupil_id=UPN, agency_org_id="mash-bristol", form=parse_form(mash_form())
    )
    with pytest.raises(NothingSelectedError) as err:
        await st.referrals.seal(sc.dsl, draft.id, io.BytesIO(), route="offline")
    assert err.value.http_status == 422 and "form alone" in err.value.message
    assert (await st.referrals.get(sc.dsl, draft.id)).state == "draft"
    refused = sc.audit.events[-1]
    assert (refused.action, refused.outcome, refused.detail["reason"]) == (
        "referral.sent",
        "refused",
        "nothing-selected",
    )
    sealed = await st.referrals.seal(
        sc.dsl, draft.id, io.BytesIO(), route="offline", form_only=True
    )
    assert sealed.referral.state == "sent"

    # Entries chosen and "the form only" asked for: a contradiction, refused.
    other = await st.referrals.draft(
        sc.dsl,
        pupil_id=UPN,
        agency_org_id="mash-bristol",
        form=parse_form(mash_form()),
        selection=[SelectedItem(kind="concern", id=concern_id)],
    )
    with pytest.raises(InputError, match="1 chronology entry is chosen"):
        await st.referrals.seal(sc.dsl, other.id, io.BytesIO(), route="offline", form_only=True)
    sealed = await st.referrals.seal(sc.dsl, other.id, io.BytesIO(), route="offline")
    assert sealed.referral.state == "sent"
