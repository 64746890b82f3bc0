"""A small client of a node's staff API, used by the demo to act as each school's staff."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
import pyotp

from transfer.errors import PeerError

API = "/api/v1"


class StaffClient:
    """A signed-in member of staff talking to their node's API over HTTPS."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, ssl_ctx: ssl.SSLContext) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._ssl = ssl_ctx
        self._token: str | None = None
        self.display_name = ""
        self.totp_secret: str | None = None

    async def sign_in(
        self, org: str, username: str, password: str, totp_secret: str | None = None
    ) -> None:
        """Sign in; enrol TOTP first if the role needs it and it is not set up yet."""
        body: dict[str, Any] = {"org": org, "username": username, "password": password}
        if totp_secret:
            body["totp"] = pyotp.TOTP(totp_secret).now()
        result = await self.call("POST", "/session", body)
        self._token = str(result["token"])
        self.display_name = str(result["display_name"])
        self.totp_secret = totp_secret
        if result["state"] == "must_enrol_totp":
            enrolment = await self.call("POST", "/me/totp")
            secret = str(enrolment["secret"])
            await self.call("POST", "/me/totp/confirm", {"code": pyotp.TOTP(secret).now()})
            self.totp_secret = secret

    async def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One API call; a problem document becomes a :class:`PeerError` naming it."""
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if content_type:
            headers["Content-Type"] = content_type
        url = self._base + API + path
        async with self._http.request(
            method, url, json=body, data=data, headers=headers, params=params, ssl=self._ssl
        ) as resp:
            if resp.status == 204:
                return None
            if resp.content_type == "application/json" or resp.content_type.endswith("+json"):
                payload = await resp.json(content_type=None)
            else:
                payload = await resp.read()
            if resp.status >= 400:
                detail = payload.get("detail") if isinstance(payload, dict) else None
                title = payload.get("title") if isinstance(payload, dict) else None
                raise PeerError(f"{method} {path}: {resp.status} {title or ''}: {detail or ''}")
            return payload
