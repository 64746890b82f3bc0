"""The LADO deadline sweep with the real alerts service: alert rows in the database, audit
events, and e-mails to the DSL team through a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from email.message import Message

from tests.integration.store.conftest import SCHOOL_URN
from tests.support.portal import smtp_server
from tests.support.referrals import Setting, lado_form
from transfer.alerts import Alerts
from transfer.config import SmtpSection
from transfer.mail import Mailer
from transfer.referrals.forms import parse_form
from transfer.referrals.service import referral_deadline_sweep
from transfer.store.permissions import Role

DSL_EMAIL = "dsl.team@harbourside.example.org"


def _body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


async def test_lado_deadline_sweep_with_the_real_alerts(setting: Setting) -> None:
    st, sc = setting, setting.school
    await sc.store.bootstrap_staff(
        SCHOOL_URN, username="lead", display_name="Lead", roles=[Role.DSL], email=DSL_EMAIL
    )
    with smtp_server() as (inbox, port):
        mailer = Mailer(
            SmtpSection(host="127.0.0.1", port=port, starttls=False, from_address="n@x.example")
        )
        alerts = Alerts(sc.store, mailer)
        st.referrals.alerts = alerts
        pupil = await sc.pupil("H801200001001")
        # Known on Monday 7 Sept 2026 10:00 in England: due by the end of Tuesday 8 Sept.
        draft = await st.referrals.draft(
            sc.dsl,
            pupil_id=pupil.id,
            agency_org_id="lado-bristol",
            form=parse_form(lado_form(known_at="2026-09-07T10:00:00+01:00")),
        )
        assert draft.due_on == date(2026, 9, 8)
        key = f"referral:{draft.id}"

        sc.clock.now = datetime(2026, 9, 7, 15, 0, tzinfo=UTC)  # Monday: not due yet
        assert await referral_deadline_sweep(st.referrals, alerts) == 0
        assert await alerts.list(sc.dsl) == []

        sc.clock.now = datetime(2026, 9, 8, 8, 0, tzinfo=UTC)  # Tuesday: due today
        assert await referral_deadline_sweep(st.referrals, alerts) == 1
        sc.clock.advance(hours=3)
        assert await referral_deadline_sweep(st.referrals, alerts) == 0  # once a day
        (due,) = await alerts.list(sc.dsl)
        assert (due.level, due.key, due.ref, due.pupil_id) == ("due", key, draft.id, pupil.id)
        assert due.day == date(2026, 9, 8) and due.mail_state == "sent"
        assert "LADO referral due today" == due.subject
        assert "2026-09-08" in due.message and draft.id in due.message
        assert len(inbox.messages) == 1
        mail = inbox.messages[0]
        assert mail["To"] == DSL_EMAIL and mail["Subject"] == "Handover: LADO referral due today"
        for secret in ("Amara", "Okafor", "Sam", "Teacher", "Grabbed"):
            assert secret not in _body(mail) and secret not in due.message

        sc.clock.now = datetime(2026, 9, 9, 8, 0, tzinfo=UTC)  # Wednesday: overdue
        assert await referral_deadline_sweep(st.referrals, alerts) == 1
        (overdue,) = await alerts.list(sc.dsl)  # the due alert was superseded
        assert overdue.level == "overdue" and overdue.subject == "LADO referral overdue"
        assert "has not been sent" in overdue.message
        assert len(inbox.messages) == 2

        # Sending it closes the alert; the sweep stays quiet afterwards.
        await st.referrals.seal(sc.dsl, draft.id, io.BytesIO(), route="offline", form_only=True)
        assert await alerts.list(sc.dsl) == []
        closed = await alerts.list(sc.dsl, open_only=False)
        assert {a.closed_reason for a in closed} == {"superseded", "resolved"}
        sc.clock.now = datetime(2026, 9, 10, 8, 0, tzinfo=UTC)
        assert await referral_deadline_sweep(st.referrals, alerts) == 0
        assert len(inbox.messages) == 2
    raised = [e for e in sc.audit.events if e.action == "alert.raised"]
    assert [e.detail["level"] for e in raised] == ["due", "overdue"]
    assert [e.targets.get("pupil") for e in raised] == [pupil.id, pupil.id]
    assert any(e.action == "alert.resolved" and e.detail.get("key") == key for e in sc.audit.events)
