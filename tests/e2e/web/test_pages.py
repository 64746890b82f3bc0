"""The web app's sessions, CSRF and kept forms, in-process on each engine with a clock
the test moves (so expiry and lock-out are exact, not waited for)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.web import Site, site_for
from tests.unit.auth.support import PASSWORD, URN
from transfer.store.permissions import Role
from transfer.web.rendering import CSP


@pytest.fixture
async def site(db_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    async with site_for(db_url, tmp_path) as s:
        yield s


async def test_every_page_but_sign_in_sends_a_stranger_to_sign_in(site: Site) -> None:
    for path in ("/", "/account", "/account/password", "/account/tokens/new"):
        page = await site.get(path, follow=False)
        assert page.status == 303
        assert page.headers["Location"].startswith("/sign-in"), path
    page = await site.get("/sign-in")
    assert page.status == 200 and page.title == "Sign in to Handover - Handover"
    assert page.headers["Content-Security-Policy"] == CSP
    assert "unsafe-inline" not in CSP and "frame-ancestors 'none'" in CSP
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert 'style="' not in page.text and "<script>" not in page.text
    assert "Set-Cookie" in page.headers


async def test_after_signing_in_the_person_goes_where_they_were_going(site: Site) -> None:
    dsl = await site.node.person("dsl", [Role.DSL])
    first = await site.get("/account/password")
    assert first.url.endswith("/sign-in?next=/account/password")
    page = await site.post(
        "/sign-in",
        {
            "csrf": first.hidden("csrf"),
            "org": URN,
            "username": "dsl",
            "password": dsl.password,
            "code": dsl.code(site.node.clock.now),
            "next": "/account/password",
        },
    )
    assert page.title == "Change your password - Handover"
    # Never anywhere else: another site, or a page that does not exist.
    for bad in ("https://evil.example/", "//evil.example/", "/nowhere"):
        site.node.next_step()
        await site.post("/sign-out", {"csrf": page.hidden("csrf")})
        again = await site.get("/sign-in")
        page = await site.post(
            "/sign-in",
            {
                "csrf": again.hidden("csrf"),
                "org": URN,
                "username": "dsl",
                "password": dsl.password,
                "code": dsl.code(site.node.clock.now),
                "next": bad,
            },
        )
        assert urlsplit(page.url).path == "/", bad
        assert page.title == "Home - Handover"


async def test_a_form_without_the_sessions_csrf_token_is_refused(site: Site) -> None:
    dsl = await site.node.person("dsl", [Role.DSL])
    home = await site.sign_in(dsl)
    token = home.hidden("csrf")
    signed_in = len(site.node.events("signin.ok"))
    altered = token[:-1] + ("1" if token.endswith("0") else "0")  # never the token itself
    for data in ({}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": altered}):
        page = await site.post(
            "/account/password",
            {
                **data,
                "current_password": PASSWORD,
                "new_password": "x" * 20,
                "confirm_password": "x" * 20,
            },
        )
        assert page.status == 403
        assert "not sent from a page of this service" in page.text
        assert page.title == "You cannot do this - Handover"
    assert not site.node.events("password.changed")
    # The sign-in form has its own token, bound to a pre-sign-in cookie.
    page = await site.post("/sign-in", {"username": "dsl", "password": PASSWORD})
    assert page.status == 403
    assert len(site.node.events("signin.ok")) == signed_in


async def test_a_post_after_expiry_keeps_the_form_for_the_same_person_only(site: Site) -> None:
    dsl = await site.node.person("dsl", [Role.DSL])
    other = await site.node.person("other", [Role.DSL])
    await site.sign_in(dsl)
    form = await site.get("/account/tokens/new")
    fields = [
        ("csrf", form.hidden("csrf")),
        ("form_owner", form.hidden("form_owner")),
        ("name", "Weekly CTF import"),
        ("scopes", "pupil.read"),
        ("scopes", "ctf.import"),
        ("lifetime", "30"),
    ]
    site.node.clock.advance(minutes=16)
    page = await site.post("/account/tokens/new", fields)
    assert page.title == "Sign in to Handover - Handover"
    assert "What you had typed has been kept" in page.text
    kept = page.hidden("kept_form")
    assert "Weekly" not in kept and "ctf" not in kept
    assert site.node.events("session.end")[-1].detail == {"reason": "expired_idle"}

    # Someone else signing in on this computer does not get it.
    page = await site.post(
        "/sign-in",
        {
            "csrf": page.hidden("csrf"),
            "org": URN,
            "username": "other",
            "password": PASSWORD,
            "code": other.code(site.node.clock.now),
            "kept_form": kept,
        },
    )
    site.node.next_step()
    assert page.title == "Home - Handover" and "Weekly CTF import" not in page.text
    await site.post("/sign-out", {"csrf": page.hidden("csrf")})

    again = await site.get("/sign-in")
    page = await site.post(
        "/sign-in",
        {
            "csrf": again.hidden("csrf"),
            "org": URN,
            "username": "dsl",
            "password": PASSWORD,
            "code": dsl.code(site.node.clock.now),
            "kept_form": kept,
        },
    )
    site.node.next_step()
    assert page.title == "Create an API token - Handover"
    assert 'value="Weekly CTF import"' in page.text
    assert re.search(r'value="ctf\.import" checked', page.text)
    assert re.search(r'value="30" checked', page.text)
    assert "What you typed has been kept" in page.text

    # A kept form lasts an hour.
    await site.post("/sign-out", {"csrf": page.hidden("csrf")})
    site.node.clock.advance(minutes=61)
    again = await site.get("/sign-in")
    page = await site.post(
        "/sign-in",
        {
            "csrf": again.hidden("csrf"),
            "org": URN,
            "username": "dsl",
            "password": PASSWORD,
            "code": dsl.code(site.node.clock.now),
            "kept_form": kept,
        },
    )
    assert page.title == "Home - Handover"


async def test_passwords_are_never_kept_over_an_expiry(site: Site) -> None:
    dsl = await site.node.person("dsl", [Role.DSL])
    await site.sign_in(dsl)
    form = await site.get("/account/password")
    site.node.clock.advance(minutes=16)
    page = await site.post(
        "/account/password",
        {
            "csrf": form.hidden("csrf"),
            "form_owner": form.hidden("form_owner"),
            "current_password": PASSWORD,
            "new_password": "a new long phrase here",
            "confirm_password": "a new long phrase here",
        },
    )
    kept = page.hidden("kept_form")
    page = await site.post(
        "/sign-in",
        {
            "csrf": page.hidden("csrf"),
            "org": URN,
            "username": "dsl",
            "password": PASSWORD,
            "code": dsl.code(site.node.clock.now),
            "kept_form": kept,
        },
    )
    assert page.title == "Change your password - Handover"
    assert "passwords are never kept" in page.text
    assert "a new long phrase" not in page.text
    assert not site.node.events("password.changed")


async def test_changing_the_password_signs_out_everywhere_else(site: Site) -> None:
    dsl = await site.node.person("dsl", [Role.DSL])
    elsewhere = await site.node.accounts.sign_in(
        URN, "dsl", PASSWORD, totp=dsl.code(site.node.clock.now)
    )
    site.node.next_step()
    await site.sign_in(dsl)
    form = await site.get("/account/password")
    page = await site.post(
        "/account/password",
        {
            "csrf": form.hidden("csrf"),
            "current_password": PASSWORD,
            "new_password": "a new long phrase here",
            "confirm_password": "a new long phrase here",
        },
    )
    assert page.title == "Your account - Handover"
    assert "signed out on every other device" in page.text
    assert site.node.events("password.changed")
    from transfer.auth import SessionInvalid

    with pytest.raises(SessionInvalid):
        await site.node.accounts.authenticate(elsewhere.token)
    # This browser's session goes on.
    assert (await site.get("/account")).title == "Your account - Handover"


async def test_lock_out_and_slow_down_in_plain_words(site: Site) -> None:
    await site.node.person("teacher", [Role.STAFF], enrol=False)
    messages = []
    for _ in range(8):
        form = await site.get("/sign-in")
        data = {"csrf": form.hidden("csrf"), "org": URN, "username": "teacher", "password": "x"}
        page = await site.post("/sign-in", data)
        messages.append(re.findall(r'href="#username">([^<]+)<', page.text)[0])
        site.node.clock.advance(seconds=301)
    assert messages[0] == "The username, password or code is not right. Check them and try again."
    form = await site.get("/sign-in")
    page = await site.post(
        "/sign-in",
        {"csrf": form.hidden("csrf"), "org": URN, "username": "teacher", "password": PASSWORD},
    )
    found = re.findall(r'href="#username">([^<]+)<', page.text)[0]
    locked = (
        r"This account is locked until \d{1,2}(:\d\d)?(am|pm) after too many failed "
        r"attempts\. Ask your administrator to unlock it\."
    )
    assert re.fullmatch(locked, found), found
    site.node.clock.advance(minutes=20)
    await site.node.person("quick", [Role.STAFF], enrol=False)
    for _ in range(3):
        form = await site.get("/sign-in")
        await site.post(
            "/sign-in",
            {"csrf": form.hidden("csrf"), "org": URN, "username": "quick", "password": "wrong"},
        )
    form = await site.get("/sign-in")
    page = await site.post(
        "/sign-in",
        {"csrf": form.hidden("csrf"), "org": URN, "username": "quick", "password": "wrong"},
    )
    assert page.status == 429
    assert "Too many failed attempts. Wait 1 second, then try again." in page.text


async def test_errors_are_pages_with_a_reference_never_json_or_a_traceback(site: Site) -> None:
    page = await site.get("/no/such/page")
    assert page.status == 404 and page.title == "Page not found - Handover"
    assert page.headers["X-Request-Id"] in page.text
    page = await site.get("/sign-out")
    assert page.status == 405 and "Traceback" not in page.text
    api = await site.get("/api/v1/no-such-route")
    assert api.status == 404
    assert api.headers["Content-Type"].startswith("application/problem+json")


async def test_timeout_is_shown_without_javascript(site: Site) -> None:
    dsl = await site.node.person("dsl", [Role.DSL])
    home = await site.sign_in(dsl)
    assert 'data-idle-seconds="900"' in home.text
    when = site.node.clock.now + timedelta(minutes=15)
    from transfer.web.rendering import clock_time

    assert f"you will be signed out at {clock_time(when)} if you do nothing" in home.text
