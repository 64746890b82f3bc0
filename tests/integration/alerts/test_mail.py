"""The mailer against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from transfer.config import SmtpSection
from transfer.errors import ConfigError, InputError, TransportError
from transfer.mail import Mailer, valid_address


@dataclass
class Inbox:
    """What the test SMTP server received."""

    messages: list[tuple[str, list[str], Message]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.messages.append(
            (str(envelope.mail_from), list(envelope.rcpt_tos), message_from_bytes(raw))
        )
        return "250 Message accepted"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _authenticator(inbox: Inbox) -> Any:
    def check(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            inbox.logins.append(auth_data.login.decode())
            ok = auth_data.login == b"school" and auth_data.password == b"s3cret pass"
            return AuthResult(success=ok, handled=False)
        return AuthResult(success=False, handled=False)

    return check


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticator(inbox),
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def _mailer(port: int, **kw: Any) -> Mailer:
    return Mailer(
        SmtpSection(
            host="127.0.0.1",
            port=port,
            starttls=False,
            from_address="alerts@node.example.org",
            timeout_seconds=5,
            **kw,
        )
    )


async def test_sends_a_plain_text_message(
    smtp_server: tuple[Inbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    inbox, port = smtp_server
    mailer = _mailer(port)
    assert mailer.enabled
    body = "A leaver's file is due today.\nSign in to Handover to see which pupil."
    with caplog.at_level(logging.DEBUG, logger="handover"):
        await mailer.send(["dsl@school.example.org", "deputy@school.example.org"], "Due", body)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("handover"))
    assert len(inbox.messages) == 1
    sender, rcpts, msg = inbox.messages[0]
    assert sender == "alerts@node.example.org"
    assert rcpts == ["dsl@school.example.org", "deputy@school.example.org"]
    assert msg["Subject"] == "Due"
    assert msg["From"] == "alerts@node.example.org"
    assert msg["Auto-Submitted"] == "auto-generated"
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload.decode().replace("\r\n", "\n").strip() == body
    # The log says that a message went, never what it said or to whom.
    assert "2 recipients" in ours
    assert "Sign in" not in ours and "dsl@school" not in ours


async def test_disabled_mailer_sends_nothing() -> None:
    mailer = Mailer(SmtpSection())
    assert not mailer.enabled
    await mailer.send(["dsl@school.example.org"], "x", "y")  # no server anywhere: no error


async def test_signs_in_with_the_password_from_its_file(
    smtp_server: tuple[Inbox, int], tmp_path: Path
) -> None:
    inbox, port = smtp_server
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret pass\n")
    mailer = _mailer(port, username="school", password_file=secret)
    await mailer.send(["dsl@school.example.org"], "Hello", "Body")
    assert inbox.logins == ["school"] and len(inbox.messages) == 1

    secret.write_text("wrong\n")
    wrong = _mailer(port, username="school", password_file=secret)
    with pytest.raises(TransportError, match="refused the username and password") as err:
        await wrong.send(["dsl@school.example.org"], "Hello", "Body")
    assert "wrong" not in str(err.value)
    assert len(inbox.messages) == 1


async def test_refused_recipient_and_unreachable_server_are_transport_errors(
    smtp_server: tuple[Inbox, int],
) -> None:
    inbox, port = smtp_server
    inbox.refuse.add("gone@school.example.org")
    mailer = _mailer(port)
    with pytest.raises(TransportError, match="refused"):
        await mailer.send(["gone@school.example.org"], "Hello", "Body")
    with pytest.raises(TransportError, match=r"cannot send e-mail through 127\.0\.0\.1"):
        await _mailer(_free_port()).send(["dsl@school.example.org"], "Hello", "Body")


async def test_starttls_required_but_not_offered(smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    mailer = Mailer(SmtpSection(host="127.0.0.1", port=port, starttls=True, timeout_seconds=5))
    with pytest.raises(TransportError, match="STARTTLS"):
        await mailer.send(["dsl@school.example.org"], "Hello", "Body")
    assert inbox.messages == []


async def test_bad_input_and_configuration_are_refused(tmp_path: Path) -> None:
    mailer = _mailer(25)
    with pytest.raises(InputError, match="recipient"):
        await mailer.send([], "s", "b")
    with pytest.raises(InputError, match="plain e-mail address"):
        await mailer.send(["dsl@school.example.org\r\nBcc: x@evil.example"], "s", "b")
    with pytest.raises(InputError, match="subject"):
        await mailer.send(["dsl@school.example.org"], "x" * 300, "b")
    with pytest.raises(ConfigError, match="password_file"):
        Mailer(SmtpSection(host="mail.example.org", username="u"))
    with pytest.raises(ConfigError, match="in clear"):
        Mailer(
            SmtpSection(
                host="mail.example.org",
                username="u",
                starttls=False,
                password_file=tmp_path / "p",
            )
        )
    with pytest.raises(ConfigError, match="does not exist"):
        Mailer(SmtpSection(host="mail.example.org", username="u", password_file=tmp_path / "p"))
    with pytest.raises(ConfigError, match="from_address"):
        Mailer(SmtpSection(host="mail.example.org", from_address="not an address"))
    assert valid_address("a.b+c@school.example.org")
    assert not valid_address("a b@school.example.org")
