"""The portal's pages and the DSL's JSON API over a real socket, with a plain HTTP client."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import aiohttp

from receivers.portal.webparts import CSP
from tests.support.portal import AGENCY_EMAIL, PortalWorld, portal_world, served
from transfer.tls import make_self_signed, server_context


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, name
    return found.group(1)


async def _issue(world: PortalWorld) -> tuple[str, str]:
    path, _ = world.package()
    issued = await world.portal.create_pickup(
        world.dsl, package=path, referral_id="ref-1", email=AGENCY_EMAIL
    )
    assert issued.link
    return issued.link, issued.passcode


def _check_headers(resp: aiohttp.ClientResponse) -> None:
    assert resp.headers["Content-Security-Policy"] == CSP
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"


async def test_csrf_is_required_on_every_form(tmp_path: Path) -> None:
    async with portal_world(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path) as world:
        async with (
            served(world) as base,
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        ):
            link, passcode = await _issue(world)
            async with http.get(link) as resp:
                assert resp.status == 200
                _check_headers(resp)
                page = await resp.text()
            token, csrf = _field(page, "t"), _field(page, "csrf")
            form = {"t": token, "method": "passcode", "passcode": passcode}
            altered = csrf[:-1] + ("1" if csrf.endswith("0") else "0")
            for bad in ({}, {"csrf": "0" * 64}, {"csrf": altered}):
                async with http.post(f"{base}/portal/open", data={**form, **bad}) as resp:
                    assert resp.status == 403
                    assert "This form has expired" in await resp.text()
            # The right token, but from another browser (no pre-sign-in cookie): refused.
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
                async with other.post(f"{base}/portal/open", data={**form, "csrf": csrf}) as r:
                    assert r.status == 403
            async with http.post(
                f"{base}/portal/open", data={**form, "csrf": csrf}, allow_redirects=False
            ) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/portal/referral"
            async with http.get(f"{base}/portal/referral") as resp:
                page = await resp.text()
                assert resp.status == 200 and "Ellie Marsh" in page
            ack = {"name": "Sam Jones", "reference": "MASH-1"}
            sign_out_csrf = re.findall(r'name="csrf" value="([^"]*)"', page)[-1]
            for bad in ({}, {"csrf": sign_out_csrf}, {"csrf": "x"}):
                async with http.post(f"{base}/portal/acknowledge", data={**ack, **bad}) as resp:
                    assert resp.status == 403
            info = await world.portal.get_pickup(world.dsl, world.pickup_ids()[0])
            assert info.acknowledged_at is None and world.acks.calls == []
            async with http.post(
                f"{base}/portal/acknowledge", data={**ack, "csrf": _field(page, "csrf")}
            ) as resp:
                assert resp.status == 200 and "Thank you" in await resp.text()
            assert world.acks.calls[0]["reference"] == "MASH-1"


async def test_headers_cookies_and_errors(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, hostname="127.0.0.1")
    client_tls = ssl.create_default_context(cafile=str(cert))
    client_tls.check_hostname = False
    async with portal_world(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path) as world:
        async with served(world, ssl_context=server_context(cert, key)) as base:
            connector = aiohttp.TCPConnector(ssl=client_tls)
            async with aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)
            ) as http:
                link, passcode = await _issue(world)
                assert link.startswith("https://")
                async with http.get(link) as resp:
                    _check_headers(resp)
                    pre = resp.headers.getall("Set-Cookie")[0]
                    assert pre.startswith("__Host-portal_pre=")
                    for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
                        assert flag in pre
                    page = await resp.text()
                    assert '<meta name="viewport"' in page and "<script" not in page
                form = {
                    "t": _field(page, "t"),
                    "csrf": _field(page, "csrf"),
                    "method": "passcode",
                    "passcode": passcode,
                }
                async with http.post(
                    f"{base}/portal/open", data=form, allow_redirects=False
                ) as resp:
                    cookie = next(
                        c
                        for c in resp.headers.getall("Set-Cookie")
                        if c.startswith("__Host-portal_session=")
                    )
                    for flag in ("HttpOnly", "Secure", "SameSite=Strict"):
                        assert flag in cookie
                    _check_headers(resp)
                async with http.get(f"{base}/portal/referral") as resp:
                    assert resp.status == 200
                    _check_headers(resp)
                async with http.get(f"{base}/portal/documents/0") as resp:
                    assert resp.status == 200
                    _check_headers(resp)
                    assert resp.headers["Content-Disposition"].startswith(
                        'attachment; filename="body-map.pdf"'
                    )
                    assert resp.headers["Content-Type"] == "application/octet-stream"
                    await resp.read()
                async with http.get(f"{base}/portal/static/portal.css") as resp:
                    assert resp.status == 200 and resp.content_type == "text/css"
                    _check_headers(resp)
                for path, status in (
                    ("/portal/documents/9", 404),
                    ("/portal/documents/x", 404),
                    ("/portal/nowhere", 404),
                ):
                    async with http.get(base + path) as resp:
                        assert resp.status == status
                        assert resp.content_type == "text/html"
                        _check_headers(resp)
            # Without the session cookie: a plain page, not the referral.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as h:
                async with h.get(f"{base}/portal/referral") as resp:
                    assert resp.status == 401
                    assert "Please open your link again" in await resp.text()


async def test_dsl_json_api(tmp_path: Path) -> None:
    async with portal_world(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path) as world:
        async with (
            served(world) as base,
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        ):
            dsl = world.node.people["dsl"]
            body = {
                "org": "199001",
                "username": "dsl",
                "password": dsl.password,
                "totp": dsl.code(world.node.clock.now),
            }
            world.node.next_step()
            async with http.post(f"{base}/api/v1/session", json=body) as resp:
                assert resp.status == 201, await resp.text()
                auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
            path, _ = world.package()
            query = {
                "referral_id": "ref-5",
                "email": AGENCY_EMAIL,
                "agency_name": "MASH",
                "expires_in_days": "3",
            }
            async with http.post(
                f"{base}/api/v1/portal/pickups",
                params=query,
                data=path.read_bytes(),
                headers={**auth, "Content-Type": "application/octet-stream"},
            ) as resp:
                assert resp.status == 201, await resp.text()
                issued = await resp.json()
            assert issued["link"].startswith(f"{base}/portal/open?t=")
            assert re.fullmatch(r"\d{3}-\d{3}-\d{3}-\d{3}", issued["passcode"])
            pickup_id = issued["pickup"]["id"]
            async with http.get(f"{base}/api/v1/portal/pickups", headers=auth) as resp:
                items = (await resp.json())["items"]
                assert [i["id"] for i in items] == [pickup_id]
                assert "passcode" not in items[0] and "token" not in str(items[0])
            # The agency address has no authenticator app yet: nothing to reset (409).
            reset = f"{base}/api/v1/portal/pickups/{pickup_id}/reset-authenticator"
            async with http.post(reset, headers=auth) as resp:
                assert resp.status == 409 and "no authenticator app" in await resp.text()
                assert resp.content_type == "application/problem+json"
            async with http.post(
                f"{base}/api/v1/portal/pickups/{pickup_id}/revoke", headers=auth
            ) as resp:
                assert resp.status == 200 and (await resp.json())["state"] == "revoked"
            async with http.get(issued["link"]) as resp:
                assert resp.status == 410 and "withdrawn" in await resp.text()
            bad = [
                ({**query, "email": "nope"}, path.read_bytes(), 400),
                # A whole number of days from 1 to 30, as the OpenAPI document says.
                ({**query, "expires_in_days": "x"}, path.read_bytes(), 422),
                ({**query, "expires_in_days": "99"}, path.read_bytes(), 422),
                ({"email": AGENCY_EMAIL}, path.read_bytes(), 422),
                (query, b"", 400),
                (query, b"not a package at all", 422),
            ]
            for params, data, status in bad:
                async with http.post(
                    f"{base}/api/v1/portal/pickups",
                    params=params,
                    data=data,
                    headers={**auth, "Content-Type": "application/octet-stream"},
                ) as resp:
                    assert resp.status == status, (params, await resp.text())
                    assert resp.content_type == "application/problem+json"
            async with http.get(f"{base}/api/v1/portal/pickups") as resp:
                assert resp.status == 401
            async with http.post(f"{base}/api/v1/portal/pickups/nope/revoke", headers=auth) as r:
                assert r.status == 404
            assert sorted(p.name for p in world.portal.directory.iterdir()) == []
