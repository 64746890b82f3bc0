"""Referrals over a real store (SQLite and PostgreSQL): minimisation and redaction proved on
the decrypted package, consent by role, lifecycle, chronology, audit and deadlines."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas.manifest import ManifestEntry
from schemas.records import NewAction, NewConcern, NewTriage
from schemas.referrals import NewRedaction, SelectedItem
from tests.support.referrals import (
    CONSENT_RISK,
    Setting,
    lado_form,
    mash_form,
    police_form,
)
from transfer.age import decrypt_stream
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.package.layout import Addressee, PinnedSenderKey
from transfer.package.open import open_package
from transfer.referrals.consent import ConsentRequired
from transfer.referrals.forms import parse_form, parse_outcome
from transfer.referrals.redaction import RedactionError
from transfer.referrals.service import SealedReferral, referral_deadline_sweep
from transfer.store.permissions import PermissionDenied

T0 = datetime(2026, 9, 7, 9, 0, tzinfo=UTC)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@dataclass
class Case:
    pupil_id: str
    chosen: str  # concern that goes
    other: str  # concern that does not
    action: str  # action on the chosen concern, not selected
    doc_in: str
    doc_out: str


async def _case(st: Setting) -> Case:
    sc = st.school
    pupil = await sc.pupil("H801200001001")
    chosen = await sc.store.record_concern(
        sc.staff,
        NewConcern(
            pupil_ids=(pupil.id,),
            category="child_protection",
            happened_at=T0 - timedelta(days=1),
            location="At Kai Smith's house on Elm Road",
            account="SELECTED-ACCOUNT Amara said Kai Smith hit her. Kai Smith is her uncle.",
            people_involved="Kai Smith; neighbour Rita Jones",
        ),
    )
    other = await sc.store.record_concern(
        sc.staff,
        NewConcern(
            pupil_ids=(pupil.id,),
            category="bullying",
            happened_at=T0 - timedelta(days=30),
            account="UNSELECTED-CONCERN-MARKER about a playground row",
        ),
    )
    await sc.store.triage_concern(
        sc.dsl, chosen.id, NewTriage(decision="refer_social_care", reason="TRIAGE-REASON-MARKER")
    )
    action = await sc.store.add_action(
        sc.dsl, chosen.id, NewAction(text="UNSELECTED-ACTION-MARKER phone mum")
    )
    doc_in = await sc.store.add_document(
        sc.dsl,
        pupil.id,
        _chunks(b"SELECTED-DOCUMENT-BYTES body map scan"),
        filename="body-map-Kai Smith.pdf",
        concern_id=chosen.id,
    )
    doc_out = await sc.store.add_document(
        sc.dsl,
        pupil.id,
        _chunks(b"UNSELECTED-DOCUMENT-BYTES old letter"),
        filename="UNSELECTED-FILENAME.pdf",
    )
    return Case(pupil.id, chosen.id, other.id, action.id, doc_in.id, doc_out.id)


async def _seal(st: Setting, referral_id: str, actor: Any = None) -> tuple[bytes, SealedReferral]:
    buf = io.BytesIO()
    # These tests are about other things: a draft with nothing chosen goes as the form only
    # (that it needs confirming is tested in tests/integration/referrals/test_send_checks.py).
    chosen = (await st.referrals.get(st.school.dsl, referral_id)).selection
    sealed = await st.referrals.seal(
        actor or st.school.dsl, referral_id, buf, route="offline", form_only=not chosen
    )
    return buf.getvalue(), sealed


def _plaintext(ciphertext: bytes, st: Setting, kind: str) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(ciphertext), out, [st.agencies[kind].identity])
    return out.getvalue()


def _open(path: Path, st: Setting, kind: str) -> dict[str, bytes]:
    got: dict[str, bytes] = {}

    def take(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
        got[entry.path] = b"".join(chunks)

    open_package(
        path,
        take,
        identities=[st.agencies[kind].identity],
        sender_keys=PinnedSenderKey(st.school_keys.minisign_public_key, st.school_keys.org_id),
        addressee=Addressee.for_keyset(st.agencies[kind].keyset),
    )
    return got


async def test_only_the_selection_goes_and_names_are_redacted(
    setting: Setting, tmp_path: Path
) -> None:
    st, sc = setting, setting.school
    case = await _case(st)
    r = st.referrals
    draft = await r.draft(
        sc.dsl, pupil_id=case.pupil_id, agency_org_id="mash-bristol", form=parse_form(mash_form())
    )
    assert draft.state == "draft" and draft.kind == "social_care"
    chronology = await sc.store.chronology(sc.dsl, case.pupil_id)
    triage_id = next(e.id for e in chronology if e.kind == "triage")
    await r.select(
        sc.dsl,
        draft.id,
        [
            SelectedItem(kind="concern", id=case.chosen),
            SelectedItem(kind="triage", id=triage_id),
            SelectedItem(kind="document", id=case.doc_in),
        ],
    )
    await r.add_redaction(sc.dsl, draft.id, NewRedaction(text="Kai Smith"))
    # "neighbour Rita Jones" is the people_involved field from character 11 on.
    record = await r.add_redaction(
        sc.dsl,
        draft.id,
        NewRedaction(
            record=SelectedItem(kind="concern", id=case.chosen),
            field="people_involved",
            start=21,
            end=31,
        ),
    )
    assert len(record.redactions) == 2
    preview = await r.preview(sc.dsl, draft.id)
    concern_line = next(e for e in preview if e.kind == "concern")
    assert concern_line.record.people_involved == "[redacted]; neighbour [redacted]"  # type: ignore[union-attr]

    ciphertext, sealed = await _seal(st, draft.id)
    plain = _plaintext(ciphertext, st, "social_care")
    for marker in (
        b"UNSELECTED-CONCERN-MARKER",
        b"UNSELECTED-ACTION-MARKER",
        b"UNSELECTED-DOCUMENT-BYTES",
        b"UNSELECTED-FILENAME",
        b"Kai Smith",
        b"Rita Jones",
        case.other.encode(),
        case.action.encode(),
        case.doc_out.encode(),
    ):
        assert marker not in plain, marker
    for marker in (b"SELECTED-ACCOUNT", b"SELECTED-DOCUMENT-BYTES", b"TRIAGE-REASON-MARKER"):
        assert marker in plain, marker
    assert b"[redacted]" in plain
    assert b"Amara said [redacted] hit her. [redacted] is her uncle." in plain

    path = tmp_path / "referral.age"
    path.write_bytes(ciphertext)
    got = _open(path, st, "social_care")
    doc_sha = sealed.built.manifest.entries[-1].sha256
    assert set(got) == {
        "records/referral.json",
        "records/chronology.json",
        "records/people.json",
        f"records/concerns/{case.chosen}.json",
        f"records/triage/{triage_id}.json",
        f"records/documents/{case.doc_in}.json",
        f"documents/{doc_sha}",
    }
    assert sealed.built.manifest.kind == "referral_social_care"
    assert sealed.built.manifest.recipient.org_id == "mash-bristol"
    assert json.loads(got["records/referral.json"])["reason"] == mash_form()["reason"]
    # Who recorded the chosen lines (and no one else), by name and role.
    from transfer.store.people import recorded_by

    named = {p["id"]: p["name"] for p in json.loads(got["records/people.json"])}
    assert set(named) == {recorded_by(e.record) for e in preview} - {None}
    doc_record = json.loads(got[f"records/documents/{case.doc_in}.json"])
    assert doc_record["filename"] == "body-map-[redacted].pdf"

    # The store's own records are unchanged.
    concern = await sc.store.get_concern(sc.dsl, case.chosen)
    assert "Kai Smith hit her" in concern.account
    assert concern.people_involved == "Kai Smith; neighbour Rita Jones"

    # Sent: state, chronology line naming what it drew on, audit with codes only.
    assert sealed.referral.state == "sent" and sealed.referral.route == "offline"
    assert sealed.referral.package_id == str(sealed.built.manifest.package_id)
    events = [e for e in await sc.store.chronology(sc.dsl, case.pupil_id) if e.kind == "event"]
    sent_line = next(e.record for e in events if e.record.kind == "referral.sent")  # type: ignore[union-attr]
    assert "Bristol MASH" in sent_line.summary  # type: ignore[union-attr]
    assert case.chosen in sent_line.summary and triage_id in sent_line.summary  # type: ignore[union-attr]
    assert case.other not in sent_line.summary  # type: ignore[union-attr]
    audit = [e for e in sc.audit.events if e.action == "referral.sent"]
    assert audit[-1].outcome == "ok"
    assert audit[-1].detail["consent"] == "given"
    assert audit[-1].detail["entries"] == 3 and audit[-1].detail["documents"] == 1
    assert "Kai" not in json.dumps([e.detail for e in sc.audit.events], default=str)

    # Sent means sealed: no more changes, no second sealing.
    with pytest.raises(ConflictError, match="not a draft"):
        await r.select(sc.dsl, draft.id, [])
    with pytest.raises(ConflictError, match="already sealed"):
        await _seal(st, draft.id)


async def test_bad_selections_and_marks_are_refused_and_change_nothing(setting: Setting) -> None:
    st, sc = setting, setting.school
    case = await _case(st)
    r = st.referrals
    draft = await r.draft(
        sc.dsl, pupil_id=case.pupil_id, agency_org_id="mash-bristol", form=parse_form(mash_form())
    )
    with pytest.raises(NotFoundError, match="not in this pupil's chronology"):
        await r.select(sc.dsl, draft.id, [SelectedItem(kind="concern", id="nope")])
    await r.select(sc.dsl, draft.id, [SelectedItem(kind="concern", id=case.chosen)])
    with pytest.raises(RedactionError, match="found in none of the selected records"):
        await r.add_redaction(sc.dsl, draft.id, NewRedaction(text="Nobody Here"))
    with pytest.raises(RedactionError, match="outside the text"):
        await r.add_redaction(
            sc.dsl,
            draft.id,
            NewRedaction(
                record=SelectedItem(kind="concern", id=case.chosen),
                field="location",
                start=0,
                end=5000,
            ),
        )
    with pytest.raises(RedactionError, match="not selected"):
        await r.add_redaction(
            sc.dsl,
            draft.id,
            NewRedaction(
                record=SelectedItem(kind="concern", id=case.other), field="account", start=0, end=3
            ),
        )
    record = await r.get(sc.dsl, draft.id)
    assert record.redactions == () and len(record.selection) == 1
    # The form must suit the agency.
    with pytest.raises(InputError, match="a lado referral goes to the LADO"):
        await r.draft(
            sc.dsl,
            pupil_id=case.pupil_id,
            agency_org_id="mash-bristol",
            form=parse_form(lado_form()),
        )
    with pytest.raises(NotFoundError):
        await r.draft(
            sc.dsl, pupil_id=case.pupil_id, agency_org_id="nowhere", form=parse_form(mash_form())
        )


@pytest.mark.parametrize(
    ("who", "may_draft", "may_send_without_consent"),
    [
        ("dsl", True, True),
        ("deputy", True, False),
        ("staff", False, False),
        ("head", False, False),
        ("admin", False, False),
    ],
)
async def test_who_may_draft_and_send_without_consent(
    setting: Setting, who: str, may_draft: bool, may_send_without_consent: bool
) -> None:
    st, sc = setting, setting.school
    actor = getattr(sc, who)
    pupil = await sc.pupil("H801200001001")
    form = parse_form(mash_form(consent=CONSENT_RISK))
    if not may_draft:
        with pytest.raises(PermissionDenied):
            await st.referrals.draft(
                actor, pupil_id=pupil.id, agency_org_id="mash-bristol", form=form
            )
        refused = [e for e in sc.audit.events if e.action == "referral.drafted"]
        assert refused[-1].outcome == "refused"
        draft = await st.referrals.draft(
            sc.dsl, pupil_id=pupil.id, agency_org_id="mash-bristol", form=form
        )
        with pytest.raises(PermissionDenied):
            await st.referrals.get(actor, draft.id)
        with pytest.raises(PermissionDenied):
            await _seal(st, draft.id, actor)
        return
    draft = await st.referrals.draft(
        actor, pupil_id=pupil.id, agency_org_id="mash-bristol", form=form
    )
    if may_send_without_consent:
        _, sealed = await _seal(st, draft.id, actor)
        assert sealed.referral.sent_without_consent
        assert sealed.referral.consent_reason == "greater_risk"
        sent = [e for e in sc.audit.events if e.action == "referral.sent"][-1]
        assert sent.detail["consent"] == "not_given"
        assert sent.detail["consent_reason"] == "greater_risk"
        lines = await sc.store.chronology(sc.dsl, pupil.id)
        sent_line = next(e.record for e in lines if e.record.kind == "referral.sent")  # type: ignore[union-attr]
        assert "without parental consent" in sent_line.summary  # type: ignore[union-attr]
    else:
        with pytest.raises(ConsentRequired, match="only the DSL may do that"):
            await _seal(st, draft.id, actor)
        refusal = [e for e in sc.audit.events if e.action == "referral.sent"][-1]
        assert refusal.outcome == "refused" and refusal.detail["reason"] == "consent"
        assert (await st.referrals.get(actor, draft.id)).state == "draft"
        # The DSL can.
        _, sealed = await _seal(st, draft.id, sc.dsl)
        assert sealed.referral.sent_without_consent


async def test_lifecycle_to_outcome_is_timed_audited_and_in_the_chronology(
    setting: Setting,
) -> None:
    st, sc = setting, setting.school
    r = st.referrals
    pupil = await sc.pupil("H801200001001")
    draft = await r.draft(
        sc.dsl, pupil_id=pupil.id, agency_org_id="police-avon", form=parse_form(police_form())
    )
    with pytest.raises(ConflictError, match="is a draft, so it cannot be accepted"):
        await r.record_acknowledgement(draft.id, name="PC Jones", agency_reference="AS-1")
    sc.clock.advance(minutes=5)
    _, sealed = await _seal(st, draft.id)
    assert sealed.built.manifest.kind == "referral_police"
    sc.clock.advance(minutes=5)
    with pytest.raises(
        ConflictError, match="not yet with the agency, so it cannot take an outcome"
    ):
        await r.record_outcome(
            sc.dsl, draft.id, parse_outcome({"kind": "police", "crime_reference": "X"})
        )
    handed = await r.record_handover(
        sc.dsl, draft.id, to_whom="PC Jones", how="USB stick in person"
    )
    assert handed.state == "delivered"
    assert handed.handover is not None and handed.handover["to"] == "PC Jones"
    sc.clock.advance(hours=2)
    accepted = await r.acknowledge(
        sc.dsl, draft.id, name="PC Jones", agency_reference="AS-2026-0042"
    )
    assert accepted.state == "accepted" and accepted.agency_reference == "AS-2026-0042"
    assert accepted.acknowledged_by == "PC Jones"
    again = await r.record_acknowledgement(
        draft.id, name="PC Jones", agency_reference="AS-2026-0042"
    )
    assert again.state == "accepted"
    with pytest.raises(ConflictError, match="another agency reference"):
        await r.record_acknowledgement(draft.id, name="PC Jones", agency_reference="OTHER")
    with pytest.raises(InputError, match="this is a police referral"):
        await r.record_outcome(
            sc.dsl, draft.id, parse_outcome({"kind": "lado", "outcome": "false"})
        )
    sc.clock.advance(days=3)
    closed = await r.record_outcome(
        sc.dsl, draft.id, parse_outcome({"kind": "police", "crime_reference": "AS/123/26"})
    )
    assert closed.state == "closed"
    assert closed.outcome is not None and closed.outcome.crime_reference == "AS/123/26"  # type: ignore[union-attr]
    steps = [(e.action, e.at) for e in closed.events]
    assert [a for a, _ in steps] == ["drafted", "sent", "handed_over", "accepted", "outcome"]
    times = [t for _, t in steps]
    assert times == sorted(times) and times[0] < times[1] < times[2] < times[3]
    actions = sc.audit.actions()
    for action in (
        "referral.drafted",
        "referral.sent",
        "referral.handed_over",
        "referral.accepted",
        "referral.outcome",
    ):
        assert action in actions
    kinds = [
        e.record.kind  # type: ignore[union-attr]
        for e in await sc.store.chronology(sc.dsl, pupil.id)
        if e.kind == "event"
    ]
    assert kinds == [
        "referral.drafted",
        "referral.sent",
        "referral.handed_over",
        "referral.accepted",
        "referral.outcome",
    ]
    listed = await r.list(sc.dsl, state="closed")
    assert [x.id for x in listed] == [draft.id]
    assert await r.list(sc.deputy, state="draft") == []


async def test_receipts_move_a_node_referral_and_rejection_is_kept(setting: Setting) -> None:
    st, sc = setting, setting.school
    r = st.referrals
    pupil = await sc.pupil("H801200001001")
    draft = await r.draft(
        sc.dsl, pupil_id=pupil.id, agency_org_id="mash-bristol", form=parse_form(mash_form())
    )
    _, sealed = await _seal(st, draft.id)
    found = await r.find_by_package(str(sealed.built.manifest.package_id))
    assert found is not None and found.id == draft.id
    delivered = await r.record_delivery(draft.id, via="node")
    assert delivered.state == "delivered"
    assert (await r.record_delivery(draft.id)).state == "delivered"  # idempotent
    rejected = await r.record_rejection(draft.id, reason="Threshold not met: early help")
    assert rejected.state == "rejected"
    assert rejected.rejection_reason == "Threshold not met: early help"
    with pytest.raises(ConflictError):
        await r.record_acknowledgement(draft.id, name="A", agency_reference="B")
    assert "Threshold" not in json.dumps([e.detail for e in sc.audit.events], default=str)


class RecordingAlerts:
    def __init__(self) -> None:
        self.raised: list[dict[str, Any]] = []
        self.resolved: list[tuple[str, str]] = []
        self._seen: set[tuple[str, str, date]] = set()

    async def notify(self, org_id: str, **kw: Any) -> bool:
        key = (kw["key"], kw["level"], date.today())
        if key in self._seen:
            return False
        self._seen.add(key)
        self.raised.append({"org_id": org_id, **kw})
        return True

    async def resolve(self, org_id: str, key: str) -> None:
        self.resolved.append((org_id, key))


async def test_lado_deadline_alerts_the_dsl_until_sent(setting: Setting) -> None:
    st, sc = setting, setting.school
    alerts = RecordingAlerts()
    st.referrals.alerts = alerts
    pupil = await sc.pupil("H801200001001")
    # Known on Monday 7 Sept 2026 10:00 in England: due by the end of Tuesday 8 Sept.
    form = parse_form(lado_form(known_at="2026-09-07T10:00:00+01:00"))
    draft = await st.referrals.draft(
        sc.dsl, pupil_id=pupil.id, agency_org_id="lado-bristol", form=form
    )
    assert draft.due_on == date(2026, 9, 8)
    monday = datetime(2026, 9, 7, 15, 0, tzinfo=UTC)
    assert await referral_deadline_sweep(st.referrals, alerts, now=monday) == 0
    tuesday = datetime(2026, 9, 8, 9, 0, tzinfo=UTC)
    assert await referral_deadline_sweep(st.referrals, alerts, now=tuesday) == 1
    assert alerts.raised[-1]["level"] == "due"
    wednesday = datetime(2026, 9, 9, 9, 0, tzinfo=UTC)
    assert await referral_deadline_sweep(st.referrals, alerts, now=wednesday) == 1
    raised = alerts.raised[-1]
    assert raised["level"] == "overdue" and raised["org_id"] == sc.dsl.org_id
    assert raised["key"] == f"referral:{draft.id}" and raised["pupil_id"] == pupil.id
    assert "LADO referral" in raised["subject"] and "2026-09-08" in raised["message"]
    assert "Sam" not in raised["message"] and "Amara" not in raised["message"]
    await _seal(st, draft.id)
    assert alerts.resolved == [(sc.dsl.org_id, f"referral:{draft.id}")]
    assert await referral_deadline_sweep(st.referrals, alerts, now=wednesday) == 0
