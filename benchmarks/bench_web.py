"""The staff web app: the DSL's dashboard (server time) and the weight of a page.

One school on SQLite (a file, WAL) with 450 pupils and 2,000 concerns over a few years
(every one triaged but the newest 25, which wait for triage), 400 actions of which 60 are
still to do (some overdue), and 30 open alerts. The node's application is served on
loopback by aiohttp exactly as ``handover serve`` builds it (``create_app`` with the web
pages), a DSL signs in through the sign-in page, and the dashboard is requested
:data:`SAMPLES` times. Server time is measured by a middleware around the whole
application (sessions, CSRF, every service call, rendering, compression): what the
browser waits for, less the network.

Page weight: the dashboard's HTML plus every stylesheet and script it loads, as the
browser receives them (brotli, and gzip for a browser without brotli).
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyotp
from aiohttp import ClientSession, CookieJar, web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

from schemas.auditing import MemoryAudit
from schemas.records import NewAction, NewConcern, NewContact, NewPupil, NewTriage
from transfer.alerts import Alerts
from transfer.api import create_app
from transfer.auth import CHEAPEST, Accounts
from transfer.config import Config
from transfer.identifiers import upn_check_letter
from transfer.mail import Mailer
from transfer.store.service import Store
from transfer.web import WebServices

KEK = bytes(range(32))
WEB_KEY = bytes(range(32, 64))
URN = "123456"
PUPILS = 450
CONCERNS = 2000
UNTRIAGED = 25
ACTIONS = 400
OPEN_ACTIONS = 60
ALERTS = 30
SAMPLES = 300
#: The pupil whose chronology has 1,000 entries: 250 concerns, each triaged, with an
#: action and a contact with an agency.
LONG_CONCERNS = 250
PASSWORD = "a long benchmark password"


async def _seed(store: Store, accounts: Accounts, alerts: Alerts) -> tuple[str, str]:
    """The school's records; the DSL's TOTP secret and the long chronology's pupil's UPN."""
    await store.create_school(name="Benchmark Primary", urn=URN, laestab="8012000")
    admin_rec = await accounts.bootstrap_account(
        URN, username="admin", display_name="Admin", roles=["administrator"], password=PASSWORD
    )
    dsl_rec = await accounts.bootstrap_account(
        URN, username="dsl", display_name="Sam Patel", roles=["dsl"], password=PASSWORD
    )
    signed = await accounts.sign_in(URN, "dsl", PASSWORD)
    principal = await accounts.authenticate(signed.token, allow_enrolment=True)
    secret = (await accounts.begin_totp_enrolment(principal)).secret
    previous = pyotp.TOTP(secret).at(datetime.now(UTC) - timedelta(seconds=30))
    await accounts.confirm_totp_enrolment(principal, previous)
    admin, dsl = await store.actor_for(admin_rec.id), await store.actor_for(dsl_rec.id)
    pupils = []
    for n in range(PUPILS):
        body = f"801200{n:06d}"
        pupils.append(
            await store.create_pupil(
                admin,
                NewPupil(
                    upn=upn_check_letter(body) + body,
                    surname=f"Surname{n}",
                    forename=f"Pupil{n}",
                    dob=date(2015, 1, 1) + timedelta(days=n),
                    sex="F" if n % 2 else "M",
                    year_group=str(1 + n % 6),
                ),
            )
        )
    start = datetime.now(UTC) - timedelta(days=3 * 365)
    step = (datetime.now(UTC) - start) / CONCERNS
    concerns = []
    for n in range(CONCERNS):
        concern = await store.record_concern(
            dsl,
            NewConcern(
                pupil_ids=(pupils[n % PUPILS].id,),
                category="bullying",
                happened_at=start + step * n,
                account="Seen upset at break; said others took their lunch money.",
                location="Playground",
            ),
        )
        concerns.append(concern)
        if n < CONCERNS - UNTRIAGED:
            await store.triage_concern(
                dsl, concern.id, NewTriage(decision="monitor", reason="Watch and review.")
            )
    today = date.today()
    for n in range(ACTIONS):
        action = await store.add_action(
            dsl,
            concerns[-1 - n].id,
            NewAction(
                text="Speak to the pupil and review in a fortnight.",
                due_on=today + timedelta(days=n % 20 - 5),
                assignee_id=dsl.staff_id,
            ),
        )
        if n >= OPEN_ACTIONS:
            await store.complete_action(dsl, action.id)
    long = pupils[-1]  # also in a few of the concerns above: just over 1,000 entries
    for n in range(LONG_CONCERNS):
        concern = await store.record_concern(
            dsl,
            NewConcern(
                pupil_ids=(long.id,),
                category="neglect" if n % 3 else "attendance",
                happened_at=start + step * n * 8,
                account="Arrived hungry and tired; said there was no food at home last night.",
                location="Breakfast club",
            ),
        )
        await store.triage_concern(
            dsl, concern.id, NewTriage(decision="monitor", reason="Early help offered.")
        )
        await store.add_action(
            dsl,
            concern.id,
            NewAction(
                text="Check breakfast club attendance.",
                assignee_id=dsl.staff_id,
            ),
        )
        await store.add_contact(
            dsl,
            concern.id,
            NewContact(
                agency="Early Help team",
                contacted_at=start + step * n * 8,
                outcome="Family support worker to visit.",
            ),
        )
    for n in range(ALERTS):
        await alerts.notify(
            URN,
            key=f"bench:{n}",
            level="info",
            subject="Something to look at",
            message="A transfer request is waiting for an answer.",
            pupil_id=pupils[n].id,
        )
    return secret, str(long.upn)


Measured = dict[str, tuple[list[float], list[float], dict[str, int]]]


async def _measure(root: Path) -> Measured:
    """Each page's wall and CPU times (ms) and weights (bytes), by page name."""
    audit = MemoryAudit()
    store = await Store.open(f"sqlite+aiosqlite:///{root / 'bench.db'}", KEK, audit, data_dir=root)
    config = Config()
    accounts = Accounts(store, KEK, audit, config.security, hashing=CHEAPEST)
    alerts = Alerts(store, Mailer(config.smtp))
    secret, long_upn = await _seed(store, accounts, alerts)
    app = create_app(
        store=store,
        accounts=accounts,
        audit=audit,
        config=config,
        alerts=alerts,
        web_pages=WebServices(
            store=store,
            accounts=accounts,
            config=config,
            audit=audit,
            web_key=WEB_KEY,
            alerts=alerts,
        ),
    )
    pages = {"dashboard": "/", "pupil": f"/pupils/{long_upn}"}
    timings: list[float] = []
    cpu: list[float] = []
    watched = [""]

    @web.middleware
    async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            return await handler(request)
        finally:
            if request.path == watched[0]:
                timings.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - cpu_started) * 1000)

    app.middlewares.insert(0, timed)
    # As handover serve does (transfer/serving.py): start-up objects out of the collector.
    gc.collect()
    gc.freeze()
    server = TestServer(app)
    await server.start_server()
    out: Measured = {}
    try:
        base = str(server.make_url("")).rstrip("/")
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
            page = await (await http.get(base + "/sign-in")).text()
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf is not None
            resp = await http.post(
                base + "/sign-in",
                data={
                    "csrf": csrf.group(1),
                    "username": "dsl",
                    "password": PASSWORD,
                    "code": pyotp.TOTP(secret).now(),
                },
            )
            assert resp.status == 200 and "New concerns awaiting triage" in await resp.text()
            long_page = await (await http.get(base + pages["pupil"])).text()
            shown = re.search(r"of ([0-9,]+) entries", long_page)
            assert shown is not None and int(shown.group(1).replace(",", "")) >= 1000
            for name, path in pages.items():
                watched[0] = path
                for _ in range(20):  # warm up
                    await (await http.get(base + path)).read()
                timings.clear()
                cpu.clear()
                for _ in range(SAMPLES):
                    async with http.get(base + path, headers={"Accept-Encoding": "br"}) as r:
                        await r.read()
                out[name] = (list(timings), list(cpu), await _weigh(http, base, path))
    finally:
        await server.close()
        await store.close()
    return out


async def _weigh(http: ClientSession, base: str, path: str) -> dict[str, int]:
    """The page's HTML and every stylesheet and script it loads, as received (bytes)."""
    weight: dict[str, int] = {}
    for coding in ("br", "gzip"):
        async with http.get(
            base + path, headers={"Accept-Encoding": coding}, auto_decompress=False
        ) as r:
            raw = await r.read()
            html = await (await http.get(base + path)).text()
        weight[f"html_{coding}"] = len(raw)
        assets = re.findall(r'(?:href|src)="(/static/[^"]+\.(?:css|js))"', html)
        total = 0
        for asset in assets:
            async with http.get(
                base + asset, headers={"Accept-Encoding": coding}, auto_decompress=False
            ) as r:
                total += len(await r.read())
        # The module GOV.UK Frontend's code comes in (imported by handover.js).
        main_js = next(a for a in assets if a.endswith("handover.js"))
        body = await (await http.get(base + main_js)).text()
        for imported in re.findall(r'from "(/static/[^"]+)"', body):
            async with http.get(
                base + imported, headers={"Accept-Encoding": coding}, auto_decompress=False
            ) as r:
                total += len(await r.read())
        weight[f"assets_{coding}"] = total
    return weight


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        measured = asyncio.run(_measure(Path(tmp)))
    load = os.getloadavg()[0]
    lines = [
        "## Staff web app (`benchmarks/bench_web.py`)",
        "",
        f"A school on SQLite: {PUPILS} pupils, {CONCERNS:,} concerns ({UNTRIAGED} awaiting "
        f"triage), {ACTIONS} actions ({OPEN_ACTIONS} still to do), {ALERTS} open alerts, and "
        f"one pupil whose chronology has 1,000 entries ({LONG_CONCERNS} concerns, each with a "
        "triage decision, an action and a contact with an agency). A DSL signed in through "
        f"the sign-in page; each page requested {SAMPLES} times on loopback; server time "
        "measured by a middleware around the whole application (sessions, CSRF, every "
        f"service call, rendering, compression). Load average during the run: {load:.1f} on "
        "2 cores (the machine is shared). Command: `make bench` (or `.venv/bin/python -m "
        "benchmarks.bench_web`).",
        "",
        "| page | p50 | p95 | p99 | mean |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {
        "dashboard": "DSL dashboard (`GET /`)",
        "pupil": "pupil page, 1,000-entry chronology (`GET /pupils/{UPN}`)",
    }
    for key, (timings, cpu, _) in measured.items():
        p50, p95, p99 = (_pct(timings, q) for q in (0.5, 0.95, 0.99))
        c50, c95, c99 = (_pct(cpu, q) for q in (0.5, 0.95, 0.99))
        lines += [
            f"| {names[key]}, wall time | {p50:.1f} ms | {p95:.1f} ms | {p99:.1f} ms | "
            f"{statistics.fmean(timings):.1f} ms |",
            f"| the same, CPU time of the process | {c50:.1f} ms | {c95:.1f} ms | "
            f"{c99:.1f} ms | {statistics.fmean(cpu):.1f} ms |",
        ]
    lines += [
        "",
        "Wall time includes waiting for the shared CPU (see the load average); CPU time is "
        "what the request itself costs (all of the process's threads, the database's too). "
        "The pupil page reads the whole chronology (the store opens every entry the DSL may "
        "read, for the filters and the count) and sends one page of 100 entries.",
        "",
        "Page weight as the browser receives it (HTML, the stylesheets, the scripts and the "
        "GOV.UK Frontend module they import; static files are cached for a year after the "
        "first page):",
        "",
        "| page | HTML brotli | HTML gzip | CSS + JS brotli | CSS + JS gzip | total brotli "
        "| total gzip |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, (_, _, w) in measured.items():
        lines.append(
            f"| {names[key]} | {w['html_br'] / 1024:.1f} KB | {w['html_gzip'] / 1024:.1f} KB "
            f"| {w['assets_br'] / 1024:.1f} KB | {w['assets_gzip'] / 1024:.1f} KB | "
            f"**{(w['html_br'] + w['assets_br']) / 1024:.1f} KB** | "
            f"**{(w['html_gzip'] + w['assets_gzip']) / 1024:.1f} KB** |"
        )
    lines += [
        "",
        "Aim (issue 13): p95 under 100 ms on SQLite for both pages; a page under 150 KB "
        "compressed.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
