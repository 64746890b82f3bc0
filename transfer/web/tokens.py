"""The web app's secrets: CSRF tokens, the owner mark of a form, kept forms. Pure.

Every key is derived from the node's web key (itself derived from the KEK with
its own label, :data:`transfer.node.WEB_KEY_LABEL`) with a purpose label:

- **CSRF** (synchroniser token per session): ``HMAC-SHA-256(csrf key, binding)``,
  where the binding is the session token in the browser's cookie (or, before
  sign-in, a random pre-session cookie). It needs no storage, changes with every
  session, cannot be computed without the HttpOnly cookie, and is compared in
  constant time. It still checks after the session has expired, which is what
  lets an expired form be kept.
- **Owner** of a form: the staff id of whoever the page was rendered for, sealed
  (AES-256-GCM) and bound to the session token, so that a form typed by one
  person and kept over an expiry is only ever given back to that person.
- **Kept form** (a POST that arrived after its session expired): the path and the
  fields, sealed with an expiry time; it travels only in a hidden field of the
  sign-in page, never on disk or in a URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from keys import aead

_CSRF: Final = b"handover:web:csrf:v1"
_OWNER: Final = b"handover:web:form-owner:v1"
_KEPT: Final = b"handover:web:kept-form:v1"
_ENROL: Final = b"handover:web:totp-enrolment:v1"
#: The most a kept form may hold (characters of its JSON), so a hidden field stays sane.
MAX_KEPT_CHARS: Final = 200_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return b""


def _binding(value: str) -> bytes:
    return hashlib.sha256(b"handover:web:binding:v1:" + value.encode("utf-8")).digest()


@dataclass(frozen=True)
class WebKeys:
    """The purpose keys of the web app, from the node's web key."""

    csrf: bytes
    owner: bytes
    kept: bytes
    enrolment: bytes

    @classmethod
    def from_web_key(cls, web_key: bytes) -> WebKeys:
        return cls(
            csrf=aead.purpose_key(web_key, _CSRF),
            owner=aead.purpose_key(web_key, _OWNER),
            kept=aead.purpose_key(web_key, _KEPT),
            enrolment=aead.purpose_key(web_key, _ENROL),
        )

    # ----------------------------------------------------------------- CSRF

    def csrf_token(self, binding: str) -> str:
        """The CSRF token of every form shown to the browser holding ``binding``."""
        return hmac.new(self.csrf, _binding(binding), hashlib.sha256).hexdigest()

    def csrf_valid(self, binding: str, token: str) -> bool:
        if not binding or not token:
            return False
        expected = self.csrf_token(binding)
        return hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace"))

    # ----------------------------------------------------------------- owner

    def owner_mark(self, binding: str, staff_id: str) -> str:
        return _b64(aead.seal(self.owner, staff_id.encode("utf-8"), _binding(binding)))

    def owner_of(self, binding: str, mark: str) -> str | None:
        """The staff id in ``mark`` if it was made for ``binding``; None otherwise."""
        try:
            return aead.unseal(self.owner, _unb64(mark), _binding(binding)).decode("utf-8")
        except (aead.UnsealError, UnicodeDecodeError):
            return None

    # ------------------------------------------------------------- kept form

    def keep_form(
        self, *, path: str, fields: list[tuple[str, str]], owner: str, now: datetime, minutes: int
    ) -> str:
        """Seal a form that arrived after its session expired, for ``minutes``."""
        body = json.dumps(
            {
                "path": path,
                "fields": fields,
                "owner": owner,
                "until": (now + timedelta(minutes=minutes)).timestamp(),
            },
            separators=(",", ":"),
        )
        if len(body) > MAX_KEPT_CHARS:
            raise ValueError("the form is too large to keep")
        return _b64(aead.seal(self.kept, body.encode("utf-8"), _KEPT))

    def open_kept(self, sealed: str, now: datetime) -> KeptForm | None:
        """The kept form, if ``sealed`` is ours and has not expired; None otherwise."""
        if not sealed or len(sealed) > 2 * MAX_KEPT_CHARS:
            return None
        try:
            data = json.loads(aead.unseal(self.kept, _unb64(sealed), _KEPT))
        except (aead.UnsealError, ValueError):
            return None
        until = datetime.fromtimestamp(float(data["until"]), UTC)
        if now >= until:
            return None
        fields = [(str(k), str(v)) for k, v in data["fields"]]
        return KeptForm(path=str(data["path"]), fields=fields, owner=str(data["owner"]))

    # ------------------------------------------------------ TOTP enrolment

    def seal_enrolment(self, binding: str, secret: str, uri: str) -> str:
        """The enrolment being set up (its secret and URI), for the page's hidden field, so
        that a mistyped code shows the same QR code again instead of starting over."""
        body = json.dumps({"secret": secret, "uri": uri}).encode("utf-8")
        return _b64(aead.seal(self.enrolment, body, _binding(binding)))

    def open_enrolment(self, binding: str, sealed: str) -> tuple[str, str] | None:
        try:
            data = json.loads(aead.unseal(self.enrolment, _unb64(sealed), _binding(binding)))
            return str(data["secret"]), str(data["uri"])
        except (aead.UnsealError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class KeptForm:
    path: str
    fields: list[tuple[str, str]]
    owner: str

    def value(self, name: str) -> str:
        return next((v for k, v in self.fields if k == name), "")

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k == name]
