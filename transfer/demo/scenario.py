"""The demo's story: a Year 6 leaver's file from a primary to a secondary school, and a MASH
referral through the pickup portal, on real nodes talking over loopback HTTPS.

Every name and event is fictional. Each step goes through the same code a
user's request would: the staff API over HTTPS for what staff do, the peer
protocol between the nodes, the portal's web pages for the agency worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import re
import secrets
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from transfer.demo.api import StaffClient
from transfer.demo.world import NodeSpec, OffNodeAgency, World, build_world, run_cli
from transfer.errors import HandoverError, PeerError
from transfer.private_files import write_private
from transfer.wording import plural

PRIMARY = ("123456", "8012000", "Hillside Primary School")
SECONDARY = ("654321", "8014001", "Riverside Academy")
#: The schools' towns, as the directory authority lists them.
TOWNS = {PRIMARY[0]: "Bristol", SECONDARY[0]: "Keynsham"}
MASH = OffNodeAgency(
    "mash-bristol", "social_care", "Bristol Children's Social Care (MASH)", "mash@bristol.example"
)

# (surname, forename, dob, sex, serial) — fictional Year 6 pupils.
PUPILS = [
    ("Okafor", "Amara", "2015-03-14", "F", 101),
    ("Nowak", "Leon", "2014-11-02", "M", 102),
    ("Hughes", "Ellie", "2015-06-21", "F", 103),
    ("Begum", "Yusuf", "2015-01-09", "M", 104),
    ("Taylor", "Mia", "2014-09-30", "F", 105),
    ("Evans", "Noah", "2015-07-17", "M", 106),
]

STAFF = {
    # key: (org, username, display name, roles)
    "dsl": (PRIMARY[0], "s.patel", "Sam Patel", ["dsl"]),
    "deputy": (PRIMARY[0], "j.okoro", "Jo Okoro", ["deputy_dsl"]),
    "teacher": (PRIMARY[0], "t.wood", "Tom Wood", ["staff"]),
    "head": (PRIMARY[0], "r.clarke", "Rachel Clarke", ["head_teacher"]),
    "dpo": (PRIMARY[0], "d.price", "Dana Price", ["auditor"]),
    "dsl2": (SECONDARY[0], "a.khan", "Aisha Khan", ["dsl"]),
    "deputy2": (SECONDARY[0], "m.hughes", "Mark Hughes", ["deputy_dsl"]),
    "teacher2": (SECONDARY[0], "l.brown", "Lucy Brown", ["staff"]),
    "head2": (SECONDARY[0], "p.singh", "Priya Singh", ["head_teacher"]),
    "dpo2": (SECONDARY[0], "e.ward", "Emma Ward", ["auditor"]),
}
#: Each school's administrator is the "admin" account ``handover init`` made.
ADMIN = ("admin", "Administrator", ["administrator"])


class DemoFailed(HandoverError):
    """A step of the demo did not happen as it should."""

    slug = "demo-failed"
    title = "The demo did not complete"
    exit_code = 1


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)

    def add(self, where: str, text: str) -> None:
        line = f"  {time.monotonic() - self.started:6.1f}s  {where:<10} {text}"
        self.lines.append(line)
        print(line, flush=True)


def upn(serial: int) -> str:
    from transfer.identifiers import upn_check_letter

    body = f"801200026{serial:03d}"
    return upn_check_letter(body) + body


def ctf() -> bytes:
    from xml.sax.saxutils import escape

    pupils = "".join(
        f"""
    <Pupil>
      <UPN>{upn(serial)}</UPN><Surname>{escape(sn)}</Surname><Forename>{escape(fn)}</Forename>
      <DOB>{dob}</DOB><Sex>{sex}</Sex>
      <BasicDetails><NCyearActual>6</NCyearActual></BasicDetails>
    </Pupil>"""
        for sn, fn, dob, sex, serial in PUPILS
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<CTfile>
  <Header>
    <DocumentName>Common Transfer File</DocumentName><CTFversion>24.0</CTFversion>
    <DateTime>2025-09-03T09:00:00</DateTime><SupplierID>Demo</SupplierID>
    <SourceSchool><LEA>801</LEA><Estab>2000</Estab><URN>{PRIMARY[0]}</URN>
      <SchoolName>{PRIMARY[2]}</SchoolName><AcademicYear>2025</AcademicYear></SourceSchool>
    <DestSchool><LEA>801</LEA><Estab>2000</Estab><URN>{PRIMARY[0]}</URN></DestSchool>
  </Header>
  <CTFpupilData>{pupils}
  </CTFpupilData>
</CTfile>
""".encode()


@dataclass
class DemoPerson:
    """Someone to sign in as on the web app (written to ``web.json``)."""

    node: str
    org: str
    username: str
    password: str
    totp_secret: str
    roles: list[str]
    display_name: str


@dataclass
class Seeded:
    passwords: dict[str, str]
    amara_id: str
    leon_id: str
    concern_id: str
    online_concern_id: str
    #: Everyone's TOTP secret (enrolled by the seed), by STAFF key or "admin:<org>".
    totp: dict[str, str] = field(default_factory=dict)
    people: list[DemoPerson] = field(default_factory=list)


async def _enrol(node: Any, org: str, username: str, password: str) -> str:
    """Set up TOTP for a demo account, as its owner would at first sign-in; the secret.

    The enrolment is confirmed with the previous time step's code (within the allowed
    drift), so that the same person can sign in straight away with the current code.
    """
    import pyotp

    result = await node.accounts.sign_in(org, username, password)
    principal = await node.accounts.authenticate(result.token, allow_enrolment=True)
    enrolment = await node.accounts.begin_totp_enrolment(principal)
    totp = pyotp.TOTP(enrolment.secret)
    await node.accounts.confirm_totp_enrolment(
        principal, totp.at(node.accounts.now() - timedelta(seconds=30))
    )
    await node.accounts.sign_out(principal)
    return str(enrolment.secret)


async def seed(world: World) -> Seeded:
    """Staff, pupils and a realistic chronology, made through the store's services."""
    from schemas.records import NewAction, NewBodyMapMark, NewConcern, NewContact, NewTriage
    from transfer.node import Node
    from transfer.transport.http import http_transport

    passwords: dict[str, str] = {}
    totp: dict[str, str] = {}
    people: list[DemoPerson] = []
    by_node = {PRIMARY[0]: world.nodes["primary"], SECONDARY[0]: world.nodes["secondary"]}
    actors: dict[str, Any] = {}
    for org in (PRIMARY[0], SECONDARY[0]):
        world_node = by_node[org]
        async with await Node.open(world_node.data_dir, transport=http_transport) as node:
            for key, (org_id, username, name, roles) in STAFF.items():
                if org_id != org:
                    continue
                passwords[key] = secrets.token_urlsafe(15)
                rec = await node.accounts.bootstrap_account(
                    org,
                    username=username,
                    display_name=name,
                    roles=roles,
                    password=passwords[key],
                )
                actors[key] = await node.store.actor_for(rec.id)
                totp[key] = await _enrol(node, org, username, passwords[key])
                people.append(
                    DemoPerson(
                        world_node.name, org, username, passwords[key], totp[key], roles, name
                    )
                )
            admin_user, admin_name, admin_roles = ADMIN
            secret = await _enrol(node, org, admin_user, world_node.admin_password)
            totp[f"admin:{org}"] = secret
            people.append(
                DemoPerson(
                    world_node.name,
                    org,
                    admin_user,
                    world_node.admin_password,
                    secret,
                    admin_roles,
                    admin_name,
                )
            )
            if org != PRIMARY[0]:
                continue
            store = node.store
            admin = await store.find_staff(org, "admin")
            assert admin is not None
            await store.import_ctf(await store.actor_for(admin.id), ctf())
            pupils = await store.list_pupils(actors["dsl"])
            amara = next(p for p in pupils if p.forename == "Amara")
            leon = next(p for p in pupils if p.forename == "Leon")
            t0 = datetime(2026, 1, 12, 9, 10, tzinfo=UTC)
            c1 = await store.record_concern(
                actors["teacher"],
                NewConcern(
                    pupil_ids=(amara.id,),
                    category="child_protection",
                    happened_at=t0,
                    location="Year 6 classroom",
                    account="Amara arrived with a bruise on her left forearm and said she "
                    "'fell off the sofa' at her uncle Darren Mills' flat. She seemed withdrawn "
                    "and did not want to go home.",
                    people_involved="Amara; class teacher; Darren Mills (uncle)",
                    body_map=(
                        NewBodyMapMark(
                            pupil_id=amara.id,
                            side="front",
                            x=0.22,
                            y=0.48,
                            description="bruise, about 3 cm, yellow-green",
                        ),
                    ),
                ),
            )
            await store.triage_concern(
                actors["dsl"],
                c1.id,
                NewTriage(
                    decision="refer_social_care",
                    reason="Unexplained injury with a change in presentation; pattern with "
                    "earlier attendance concerns. Referral to MASH.",
                ),
            )
            await store.add_contact(
                actors["dsl"],
                c1.id,
                NewContact(
                    agency="Bristol MASH",
                    contacted_at=t0 + timedelta(hours=3),
                    outcome="Consultation call; written referral to follow.",
                ),
            )
            await store.add_action(
                actors["dsl"],
                c1.id,
                NewAction(
                    text="Check in with Amara each morning for two weeks.",
                    assignee_id=actors["deputy"].staff_id,
                    due_on=date(2026, 1, 26),
                ),
            )
            c2 = await store.record_concern(
                actors["teacher"],
                NewConcern(
                    pupil_ids=(amara.id, leon.id),
                    category="online_safety",
                    happened_at=t0 + timedelta(days=30),
                    location="ICT suite",
                    account="Both pupils said an older boy online asked them for photos.",
                ),
            )
            await store.triage_concern(
                actors["dsl"],
                c2.id,
                NewTriage(
                    decision="no_referral",
                    reason="Parents informed; online safety session; no further risk identified.",
                ),
            )

            # Two concerns not triaged yet, for the DSL's dashboard (and the web app's demo).
            ellie = next(p for p in pupils if p.forename == "Ellie")
            yusuf = next(p for p in pupils if p.forename == "Yusuf")
            await store.record_concern(
                actors["teacher"],
                NewConcern(
                    pupil_ids=(ellie.id,),
                    category="neglect",
                    happened_at=store.now() - timedelta(days=2),
                    location="Breakfast club",
                    account="Ellie said she had not eaten since lunch the day before; she was "
                    "wearing the same clothes as all week.",
                ),
            )
            await store.record_concern(
                actors["head"],
                NewConcern(
                    pupil_ids=(yusuf.id,),
                    category="attendance",
                    happened_at=store.now() - timedelta(hours=5),
                    location="Office",
                    account="Third unexplained absence this month; the phone number on file does "
                    "not answer.",
                ),
            )

            async def minutes() -> AsyncIterator[bytes]:
                yield b"Strategy discussion minutes (fictional demo document).\n" * 200

            await store.add_document(
                actors["dsl"],
                amara.id,
                minutes(),
                filename="strategy-discussion-minutes.txt",
                concern_id=c1.id,
            )
            await node.audit_log.checkpoint()
    return Seeded(passwords, amara.id, leon.id, c1.id, c2.id, totp=totp, people=people)


def write_web_json(world: World, seeded: Seeded, path: Path) -> None:
    """``web.json``: each node's web address and the demo people to sign in as (0600)."""
    import json
    import os

    nodes = []
    for node in world.nodes.values():
        accounts = [
            {
                "username": p.username,
                "password": p.password,
                "totp_secret": p.totp_secret,
                "roles": p.roles,
                "display_name": p.display_name,
                "org": p.org,
            }
            for p in seeded.people
            if p.node == node.name
        ]
        nodes.append(
            {
                "name": node.name,
                "title": node.spec.title,
                "url": node.base_url + "/",
                "ca_file": str(world.trust_file),
                "accounts": accounts,
            }
        )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"nodes": nodes}, fh, indent=2)
        fh.write("\n")


async def wait_for(
    what: str, check: Callable[[], Awaitable[bool]], *, within: float = 90.0
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    raise DemoFailed(f"timed out after {within:.0f} s waiting until {what}")


def _ssl(world: World) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(world.trust_file))


async def leaver_file(
    world: World,
    seeded: Seeded,
    timeline: Timeline,
    evidence: Path,
    dsl: StaffClient,
    dsl2: StaffClient,
) -> str:
    """Send Amara's file from the primary to the secondary; open and accept it there."""
    from keys import minisign
    from transfer.receipts import SignedReceipt, verify_receipt, write_evidence

    secondary = world.nodes["secondary"]
    leaving = date.today()
    pupil = await dsl.call(
        "PATCH",
        f"/pupils/{seeded.amara_id}",
        {
            "leaving_date": leaving.isoformat(),
            "destination": {"kind": "school", "urn": SECONDARY[0], "name": SECONDARY[2]},
        },
    )
    timeline.add(
        "primary",
        f"marked {pupil['forename']} {pupil['surname']} (Year 6, UPN {pupil['upn']}) as "
        f"leaving on {leaving:%d %b %Y} for {SECONDARY[2]}",
    )
    sent = await dsl.call(
        "POST", "/outbox/leaver-files", {"pupil_id": seeded.amara_id, "to_org_id": SECONDARY[0]}
    )
    package_id = str(sent["id"])
    timeline.add(
        "primary",
        f"leaver's file sealed and queued: package {package_id[:8]}, "
        f"{sent['ciphertext_size']} bytes, sha256 {str(sent['ciphertext_sha256'])[:12]}...",
    )

    async def state_is(*states: str) -> bool:
        record = await dsl.call("GET", f"/outbox/{package_id}")
        return str(record["state"]) in states

    await wait_for("the package is delivered", lambda: state_is("delivered", "viewed", "accepted"))
    timeline.add("primary", "delivered: the signed delivered receipt came back and verified")

    inbox = (await dsl2.call("GET", "/inbox"))["items"]
    if not any(item["package_id"] == package_id for item in inbox):
        raise DemoFailed("the delivered package is not in the secondary school's inbox")
    timeline.add("secondary", f"{dsl2.display_name} (DSL) sees the package in the inbox")
    incoming = secondary.data_dir / "inbox" / f"{package_id}.age"
    if incoming.exists():
        shutil.copyfile(incoming, evidence / f"leaver-file-{upn(101)}.age")
    preview = await dsl2.call("GET", f"/inbox/{package_id}")
    timeline.add(
        "secondary",
        f"opened it: every signature and hash checked; {_preview_summary(preview)}",
    )
    accepted = await dsl2.call("POST", f"/inbox/{package_id}/accept", {})
    timeline.add("secondary", f"accepted and imported: {_accept_summary(accepted)}")
    await wait_for("the accepted receipt reaches the primary", lambda: state_is("accepted"))
    record = await dsl.call("GET", f"/outbox/{package_id}")
    timeline.add("primary", "accepted: the signed accepted receipt came back and verified")

    public = minisign.PublicKey.from_base64(await _signing_key(world, SECONDARY[0]))
    kinds = []
    for item in record["receipts"]:
        signed = SignedReceipt.from_dict({"receipt": item["body"], "signature": item["signature"]})
        verify_receipt(
            signed,
            public_key=public,
            package_id=signed.body.package_id,
            receiver_org_id=SECONDARY[0],
        )
        write_evidence(signed, evidence / f"receipt-{signed.body.kind}.json")
        kinds.append(signed.body.kind)
    for needed in ("delivered", "accepted"):
        if needed not in kinds:
            raise DemoFailed(f"the sender holds no {needed} receipt")
    timeline.add(
        "evidence", f"{plural(len(kinds), 'receipt')} ({', '.join(kinds)}) verified again and kept"
    )
    return package_id


async def story(world: World, seeded: Seeded, timeline: Timeline, evidence: Path) -> str:
    """Both DSLs sign in once (enrolling TOTP), then the handover and the referrals."""
    import aiohttp

    primary, secondary = world.nodes["primary"], world.nodes["secondary"]
    ctx = _ssl(world)
    async with aiohttp.ClientSession() as http:
        dsl = StaffClient(http, primary.base_url, ctx)
        await dsl.sign_in(
            PRIMARY[0], "s.patel", seeded.passwords["dsl"], totp_secret=seeded.totp["dsl"]
        )
        timeline.add("primary", f"{dsl.display_name} (DSL) signed in with an authenticator code")
        dsl2 = StaffClient(http, secondary.base_url, ctx)
        await dsl2.sign_in(
            SECONDARY[0], "a.khan", seeded.passwords["dsl2"], totp_secret=seeded.totp["dsl2"]
        )
        timeline.add("secondary", f"{dsl2.display_name} (DSL) signed in with an authenticator code")
        package_id = await leaver_file(world, seeded, timeline, evidence, dsl, dsl2)
        await referral(world, seeded, timeline, evidence, dsl)
    return package_id


#: The preview's record counts, named one at a time.
_RECORD_NOUNS: dict[str, str] = {
    "actions": "action",
    "concerns": "concern",
    "contacts": "contact",
    "documents": "document",
    "events": "event",
    "triage": "triage decision",
}


def _preview_summary(preview: dict[str, Any]) -> str:
    counts = preview.get("counts") or {}
    if isinstance(counts, dict) and counts:
        named = ((_RECORD_NOUNS.get(str(k), str(k)), int(v)) for k, v in sorted(counts.items()))
        return ", ".join(plural(n, noun) for noun, n in named)
    return plural(len(preview.get("chronology") or []), "chronology entry")


def _accept_summary(accepted: dict[str, Any]) -> str:
    counts = accepted.get("counts") or {}
    records = sum(int(v) for v in counts.values()) if isinstance(counts, dict) else 0
    how = "as a new pupil" if accepted.get("new_pupil") else f"matched by {accepted['matched_by']}"
    return f"{plural(records, 'record')} imported {how}, each kept with its provenance"


async def _signing_key(world: World, org_id: str) -> str:
    from transfer.directory.document import parse_document

    doc = parse_document(world.directory_file.read_bytes())
    entry = doc.entry(org_id)
    if entry is None:
        raise DemoFailed(f"{org_id} is not in the directory")
    return entry.signing_key


async def referral(
    world: World, seeded: Seeded, timeline: Timeline, evidence: Path, dsl: StaffClient
) -> None:
    """A MASH referral through the pickup portal, and an offline bundle of another."""
    ctx = _ssl(world)
    form = mash_form()
    chron = (await dsl.call("GET", f"/pupils/{seeded.amara_id}/chronology"))["items"]
    chosen = [
        {"kind": e["kind"], "id": e["id"]}
        for e in chron
        if e.get("concern_id") == seeded.concern_id
        and e["kind"] in ("concern", "triage", "document")
    ]
    draft = await dsl.call(
        "POST",
        "/referrals",
        {
            "pupil_id": seeded.amara_id,
            "agency_org_id": MASH.org_id,
            "form": form,
            "selection": chosen,
            "redactions": [{"text": "Darren Mills"}],
        },
    )
    ref_id = str(draft["id"])
    timeline.add(
        "primary",
        f"MASH referral drafted: {len(chosen)} of {plural(len(chron), 'chronology entry')} "
        "chosen, "
        "one third-party name marked for redaction",
    )
    sent = await dsl.call("POST", f"/referrals/{ref_id}/send", {"route": "portal"})
    link, passcode = str(sent["link"]), str(sent["passcode"])
    timeline.add(
        "primary",
        "sealed and put on the pickup portal; passcode read out to the MASH by phone",
    )
    await portal_pickup(ctx, link, passcode, timeline)
    record = await dsl.call("GET", f"/referrals/{ref_id}")
    if record["state"] != "accepted":
        raise DemoFailed(f"the referral is {record['state']}, not accepted, after pickup")
    timeline.add(
        "primary", f"referral accepted by the MASH, reference {record.get('agency_reference')}"
    )

    second = await dsl.call(
        "POST",
        "/referrals",
        {
            "pupil_id": seeded.leon_id,
            "agency_org_id": MASH.org_id,
            "form": mash_form(child=("Leon", "Nowak", "2014-11-02", "male"), request="early_help"),
            "selection": [{"kind": "concern", "id": seeded.online_concern_id}],
        },
    )
    bundle = await dsl.call("POST", f"/referrals/{second['id']}/send", {"route": "offline"})
    out = evidence / "offline-bundle"
    shutil.copytree(Path(str(bundle["bundle_path"])), out, dirs_exist_ok=True)
    await dsl.call(
        "POST",
        f"/referrals/{second['id']}/handover",
        {
            "to_whom": "Bristol MASH duty desk",
            "how": "encrypted USB stick, by hand",
        },
    )
    timeline.add(
        "primary",
        f"early-help request written as an offline bundle ({out.name}/) and its hand-over recorded",
    )


async def portal_pickup(ctx: ssl.SSLContext, link: str, passcode: str, timeline: Timeline) -> None:
    """The MASH worker follows the link, enters the passcode, reads, downloads, acknowledges."""
    import aiohttp

    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as agency:
        base = link.split("/portal/", 1)[0]
        async with agency.get(link, ssl=ctx) as resp:
            page = await resp.text()
            if resp.status != 200:
                raise DemoFailed(f"the pickup link answered {resp.status}")
        form = _hidden_fields(page, "passcode")
        form["passcode"] = passcode
        async with agency.post(f"{base}/portal/open", data=form, ssl=ctx) as resp:
            page = await resp.text()
            if resp.status != 200 or "acknowledge" not in page:
                raise DemoFailed(f"the passcode was not accepted ({resp.status})")
        timeline.add("MASH", "opened the link and entered the passcode; the referral is shown")
        for href in re.findall(r'href="(/portal/documents/\d+)"', page):
            async with agency.get(base + html.unescape(href), ssl=ctx) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise DemoFailed(f"a document download answered {resp.status}")
            timeline.add(
                "MASH",
                f"downloaded a document ({len(data)} bytes, "
                f"sha256 {hashlib.sha256(data).hexdigest()[:12]}...)",
            )
        ack = _hidden_fields(page, "acknowledge")
        ack.update({"name": "Priya Shah (MASH social worker)", "reference": "MASH-2026-0415"})
        async with agency.post(f"{base}/portal/acknowledge", data=ack, ssl=ctx) as resp:
            if resp.status != 200:
                raise DemoFailed(f"the acknowledgement answered {resp.status}")
        timeline.add("MASH", "acknowledged receipt with a name and the MASH reference")


def _hidden_fields(page: str, form_marker: str) -> dict[str, str]:
    """The hidden inputs of the form whose action or method contains ``form_marker``."""
    for form in re.findall(r"<form\b.*?</form>", page, flags=re.S):
        if form_marker in form:
            pairs = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)
            return {name: html.unescape(value) for name, value in pairs}
    raise PeerError(f"the portal page has no {form_marker} form")


def mash_form(
    child: tuple[str, str, str, str] = ("Amara", "Okafor", "2015-03-14", "female"),
    request: str = "safeguarding",
) -> dict[str, Any]:
    forename, surname, dob, sex = child
    return {
        "kind": "social_care",
        "request": request,
        "child": {
            "forename": forename,
            "surname": surname,
            "dob": dob,
            "sex": sex,
            "address": "12 Elm Road, Bristol BS5 0AA",
            "school": PRIMARY[2],
        },
        "carers": [
            {"name": "Grace Okafor", "relationship": "mother", "parental_responsibility": True}
        ],
        "referrer": {
            "name": "Sam Patel",
            "role": "Designated Safeguarding Lead",
            "agency": PRIMARY[2],
            "phone": "0117 496 0000",
        },
        "consent": {"parents_aware": True, "consent_given": True},
        "reason": "Unexplained bruising with a change in presentation; the child said she "
        "did not want to go home.",
        "harm_types": ["physical"],
        "impact_on_child": "Withdrawn in class; reluctant to go home.",
        "risk_rating": "medium",
        "risk_reasons": "Injury unexplained; earlier attendance concerns.",
    }


def specs() -> list[NodeSpec]:
    return [
        NodeSpec(
            "primary",
            "Hillside Primary School node",
            schools=[PRIMARY],
            towns={PRIMARY[0]: TOWNS[PRIMARY[0]]},
        ),
        NodeSpec(
            "secondary",
            "Riverside Academy node",
            schools=[SECONDARY],
            towns={SECONDARY[0]: TOWNS[SECONDARY[0]]},
        ),
    ]


def export_keys(world: World, evidence: Path) -> None:
    """The sender's minisign public key and the receiver's age identity (for the demo only)."""
    primary, secondary = world.nodes["primary"], world.nodes["secondary"]
    run_cli(
        [
            "keys",
            "export-public",
            PRIMARY[0],
            "--data-dir",
            str(primary.data_dir),
            "--minisign",
            str(evidence / "hillside.pub"),
        ]
    )
    run_cli(
        [
            "keys",
            "export-public",
            SECONDARY[0],
            "--data-dir",
            str(secondary.data_dir),
            "--minisign",
            str(evidence / "riverside.pub"),
        ]
    )
    run_cli(
        [
            "keys",
            "export-identity",
            SECONDARY[0],
            "--data-dir",
            str(secondary.data_dir),
            "--yes-i-understand",
            "-o",
            str(evidence / "riverside.key"),
        ]
    )
    # A secret key: readable by this user alone, like the original in secrets/.
    write_private(evidence / "mash.key", world.agency_identities[MASH.org_id].read_bytes())


def fingerprint(world: World, node: str, org_id: str) -> str:
    """The organisation's key fingerprint, as ``handover keys show`` prints it."""
    out = run_cli(["keys", "show", org_id, "--data-dir", str(world.nodes[node].data_dir)])
    for line in out.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "fingerprint":
            return value.strip()
    raise DemoFailed(f"'handover keys show {org_id}' printed no fingerprint")


def build(workdir: Path) -> World:
    return build_world(workdir, specs(), agencies=[MASH])
