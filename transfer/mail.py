"""Outgoing e-mail: :class:`Mailer`, over the standard library's ``smtplib`` in a thread.

Configured by the ``[smtp]`` section (``transfer.config.SmtpSection``): an
empty ``host`` turns e-mail off (alerts then stay in the app and the log). With
``starttls`` the connection is upgraded with the system's CA certificates and
host-name checking before anything else is said; a username makes the mailer
sign in with the password read from ``smtp.password_file`` (never from the
configuration file itself). A password is only ever sent over STARTTLS, or to a
server on the loopback interface.

The mailer never logs a message body, a password or a recipient list: only
how many recipients and whether the server took the message.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from transfer.config import SmtpSection
from transfer.errors import ConfigError, InputError, TransportError
from transfer.wording import plural

log = logging.getLogger("handover.mail")

#: A plain mailbox: local part @ domain, no spaces, no angle brackets, no control characters.
_ADDRESS = re.compile(
    r"[^\s@<>()\[\],;:\"\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
)
MAX_SUBJECT = 200
MAX_BODY = 100_000


def valid_address(address: str) -> bool:
    """Whether ``address`` is a plain ``local@domain`` mailbox we are willing to write to."""
    return len(address) <= 320 and _ADDRESS.fullmatch(address) is not None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_password(path: Path) -> str:
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"smtp.password_file {path} does not exist") from None
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"smtp.password_file {path} cannot be read as UTF-8 text") from None
    password = text.strip("\r\n")
    if not password:
        raise ConfigError(f"smtp.password_file {path} is empty")
    return password


class Mailer:
    """Sends plain-text e-mail through the configured SMTP server (or nothing, when disabled)."""

    def __init__(self, smtp: SmtpSection) -> None:
        self._cfg = smtp
        self._password: str | None = None
        if not smtp.host:
            return
        if not valid_address(smtp.from_address):
            raise ConfigError(
                f"smtp.from_address {smtp.from_address[:80]!r} is not a plain e-mail address"
            )
        if smtp.username:
            if smtp.password_file is None:
                raise ConfigError("smtp.username is set but smtp.password_file is not")
            if not smtp.starttls and not _is_loopback(smtp.host):
                raise ConfigError(
                    "smtp.username is set without smtp.starttls: the password would cross the "
                    "network in clear; turn smtp.starttls on"
                )
            self._password = _read_password(smtp.password_file)

    @property
    def enabled(self) -> bool:
        return bool(self._cfg.host)

    @property
    def server(self) -> str:
        """``host:port`` of the mail server, for messages (never carries a secret)."""
        return f"{self._cfg.host}:{self._cfg.port}"

    def _message(self, to: Sequence[str], subject: str, body: str) -> EmailMessage:
        if not to:
            raise InputError("an e-mail needs at least one recipient")
        for address in to:
            if not valid_address(address):
                raise InputError(f"{address[:80]!r} is not a plain e-mail address")
        subject = " ".join(subject.split())
        if not subject or len(subject) > MAX_SUBJECT:
            raise InputError(f"an e-mail subject must be 1 to {MAX_SUBJECT} characters")
        if len(body) > MAX_BODY:
            raise InputError(f"an e-mail body must be at most {MAX_BODY} characters")
        msg = EmailMessage()
        msg["From"] = self._cfg.from_address
        msg["To"] = ", ".join(to)
        msg["Subject"] = subject
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self._cfg.from_address.rpartition("@")[2])
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body)
        return msg

    def _send_sync(self, msg: EmailMessage, to: Sequence[str]) -> None:
        cfg = self._cfg
        with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_seconds) as smtp:
            smtp.ehlo()
            if cfg.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if cfg.username and self._password is not None:
                smtp.login(cfg.username, self._password)
            refused = smtp.send_message(msg, from_addr=cfg.from_address, to_addrs=list(to))
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)

    async def send(self, to: Sequence[str], subject: str, body: str) -> None:
        """Send one message to ``to``; TransportError if the server refuses or is unreachable.

        Does nothing when e-mail is not configured (``smtp.host`` empty).
        """
        if not self.enabled:
            return
        msg = self._message(to, subject, body)
        try:
            await asyncio.to_thread(self._send_sync, msg, list(to))
        except smtplib.SMTPAuthenticationError:
            raise TransportError(
                f"the mail server at {self.server} refused the username and password "
                "(check smtp.username and smtp.password_file)"
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise TransportError(
                f"the mail server at {self.server} refused {len(exc.recipients)} of "
                f"{plural(len(to), 'recipient')}"
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise TransportError(
                f"the mail server at {self.server} does not offer STARTTLS; "
                "set smtp.starttls = false only for a server on this machine"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise TransportError(
                f"the mail server at {self.server} refused the message (SMTP {exc.smtp_code})"
            ) from None
        except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
            raise TransportError(
                f"cannot send e-mail through {self.server}: {type(exc).__name__}"
                + (f" ({exc.strerror})" if isinstance(exc, OSError) and exc.strerror else "")
            ) from None
        log.info("e-mail sent through %s to %s", self.server, plural(len(to), "recipient"))
