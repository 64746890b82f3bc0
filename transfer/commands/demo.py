"""``handover demo``: a demo school built through the same code a user would use.

Creates a node with two schools (the sending primary and the receiving
secondary) and a MASH, staff in every role, pupils from a Common Transfer
File, a realistic chronology, then seals a leaver's file for the receiving
school, verifies it as the receiver would, and checks the audit log. Every
name and event is fictional.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from transfer.commands._common import Subparsers, add_data_dir, data_dir_of
from transfer.errors import InputError

SENDER = ("123456", "8012000", "Hillside Primary School")
RECEIVER = ("654321", "8014001", "Riverside Academy")
MASH = ("mash-bristol", "social_care", "Bristol Children's Social Care (MASH)")

# (surname, forename, dob, sex, serial) — fictional.
PUPILS = [
    ("Okafor", "Amara", "2015-03-14", "F", 101),
    ("Nowak", "Leon", "2014-11-02", "M", 102),
    ("Hughes", "Ellie", "2015-06-21", "F", 103),
    ("Begum", "Yusuf", "2015-01-09", "M", 104),
    ("Taylor", "Mia", "2014-09-30", "F", 105),
    ("Evans", "Noah", "2015-07-17", "M", 106),
]


def register(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="build a demo node with a realistic school and show it")
    add_data_dir(p)
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo first")
    p.set_defaults(handler=run)


def _upn(serial: int) -> str:
    from transfer.identifiers import upn_check_letter

    body = f"801200026{serial:03d}"
    return upn_check_letter(body) + body


def _ctf() -> bytes:
    from xml.sax.saxutils import escape

    pupils = "".join(
        f"""
    <Pupil>
      <UPN>{_upn(serial)}</UPN><Surname>{escape(sn)}</Surname><Forename>{escape(fn)}</Forename>
      <DOB>{dob}</DOB><Sex>{sex}</Sex>
      <BasicDetails><NCyearActual>6</NCyearActual></BasicDetails>
      <SchoolHistory><School><LEA>801</LEA><Estab>2000</Estab><URN>{SENDER[0]}</URN>
        <SchoolName>{SENDER[2]}</SchoolName><EntryDate>2019-09-04</EntryDate>
        <LeavingDate>2026-07-22</LeavingDate><LeavingReason>TRN</LeavingReason>
      </School></SchoolHistory>
    </Pupil>"""
        for sn, fn, dob, sex, serial in PUPILS
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<CTfile>
  <Header>
    <DocumentName>Common Transfer File</DocumentName><CTFversion>24.0</CTFversion>
    <DateTime>2026-07-20T14:32:05</DateTime><SupplierID>Demo</SupplierID>
    <SourceSchool><LEA>801</LEA><Estab>2000</Estab><URN>{SENDER[0]}</URN>
      <SchoolName>{SENDER[2]}</SchoolName><AcademicYear>2025</AcademicYear></SourceSchool>
    <DestSchool><LEA>801</LEA><Estab>4001</Estab><URN>{RECEIVER[0]}</URN></DestSchool>
  </Header>
  <CTFpupilData>{pupils}
  </CTFpupilData>
</CTfile>
""".encode()


def _prepare(data_dir: Path, fresh: bool) -> Path:
    """The demo's KEK lives beside, never inside, the data directory."""
    kek_file = data_dir.with_name(data_dir.name + ".kek")
    if fresh:
        shutil.rmtree(data_dir, ignore_errors=True)
        kek_file.unlink(missing_ok=True)
    if data_dir.exists():
        raise InputError(f"{data_dir} already exists: run 'handover demo --fresh' to rebuild it")
    data_dir.mkdir(parents=True, mode=0o700)
    fd = os.open(kek_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    (data_dir / "handover.toml").write_text(
        "# The demo node. The key-encryption key is in a file beside, not inside, this directory.\n"
        f'[node]\nname = "Handover demo"\n\n[security]\nkek_file = "{kek_file}"\n'
        "\n[server]\ndev_tls = true\n",
        encoding="utf-8",
    )
    os.environ.pop("HANDOVER_KEK", None)
    return kek_file


async def _demo(data_dir: Path) -> list[str]:
    from keys.minisign import PublicKey
    from schemas.manifest import Recipient, Sender
    from schemas.records import (
        NewAction,
        NewBodyMapMark,
        NewConcern,
        NewContact,
        NewTriage,
    )
    from transfer.age import X25519Recipient
    from transfer.commands.init import initialise
    from transfer.node import Node
    from transfer.package.from_store import build_leaver_package

    out: list[str] = []
    admin_pw = secrets.token_urlsafe(15)
    out += await initialise(
        data_dir,
        name="Handover demo",
        schools=[SENDER, RECEIVER],
        agencies=[MASH],
        admin="admin",
        admin_password=admin_pw,
    )
    out.append(f"  administrator password (shown once): {admin_pw}")
    async with await Node.open(data_dir) as node:
        store, accounts = node.store, node.accounts
        school = SENDER[0]
        people = {
            "dsl": ("s.patel", "Sam Patel", ["dsl"]),
            "deputy": ("j.okoro", "Jo Okoro", ["deputy_dsl"]),
            "head": ("r.clarke", "Rachel Clarke", ["head_teacher"]),
            "teacher": ("t.wood", "Tom Wood", ["staff"]),
            "auditor": ("d.fisher", "Dana Fisher", ["auditor"]),
        }
        actors = {}
        for key, (username, name, roles) in people.items():
            rec = await accounts.bootstrap_account(
                school, username=username, display_name=name, roles=roles,
                password=secrets.token_urlsafe(15),
            )  # fmt: skip
            actors[key] = await store.actor_for(rec.id)
        out.append(
            f"staff at {SENDER[2]}: " + ", ".join(f"{n} ({r[0]})" for _, n, r in people.values())
        )
        admin = await store.find_staff(school, "admin")
        assert admin is not None
        admin_actor = await store.actor_for(admin.id)
        await store.import_ctf(admin_actor, _ctf())
        pupils = await store.list_pupils(actors["dsl"])
        out.append(f"CTF import: {len(pupils)} pupils on roll (Year 6 leavers to {RECEIVER[2]})")
        amara = next(p for p in pupils if p.forename == "Amara")
        leon = next(p for p in pupils if p.forename == "Leon")

        t0 = datetime(2026, 1, 12, 9, 10, tzinfo=UTC)
        c1 = await store.record_concern(actors["teacher"], NewConcern(
            pupil_ids=(amara.id,), category="child_protection", happened_at=t0,
            location="Year 6 classroom",
            account="Amara arrived with a bruise on her left forearm and said she "
            "'fell off the sofa'. She seemed withdrawn and did not want to go home.",
            people_involved="Amara; class teacher",
            body_map=(NewBodyMapMark(pupil_id=amara.id, side="front", x=0.22, y=0.48,
                                     description="bruise, about 3 cm, yellow-green"),),
        ))  # fmt: skip
        await store.triage_concern(actors["dsl"], c1.id, NewTriage(
            decision="refer_social_care",
            reason="Unexplained injury with a change in presentation; pattern with earlier "
            "attendance concerns. Referral to MASH.",
        ))  # fmt: skip
        await store.add_contact(actors["dsl"], c1.id, NewContact(
            agency="Bristol MASH", contacted_at=t0 + timedelta(hours=3),
            outcome="Referral accepted; strategy discussion arranged.",
        ))  # fmt: skip
        await store.add_action(actors["dsl"], c1.id, NewAction(
            text="Check in with Amara each morning for two weeks.",
            assignee_id=actors["deputy"].staff_id, due_on=date(2026, 1, 26),
        ))  # fmt: skip
        c2 = await store.record_concern(actors["teacher"], NewConcern(
            pupil_ids=(amara.id, leon.id), category="online_safety",
            happened_at=t0 + timedelta(days=30), location="ICT suite",
            account="Both pupils said an older boy online asked them for photos.",
        ))  # fmt: skip
        await store.triage_concern(actors["dsl"], c2.id, NewTriage(
            decision="no_referral",
            reason="Parents informed; online safety session; no further risk identified.",
        ))  # fmt: skip

        async def minutes() -> object:
            yield b"Strategy discussion minutes (fictional demo document).\n" * 200

        await store.add_document(
            actors["dsl"], amara.id, minutes(),  # type: ignore[arg-type]
            filename="strategy-discussion-minutes.txt", media_type="text/plain",
            concern_id=c1.id,
        )  # fmt: skip
        chron = await store.chronology(actors["dsl"], amara.id)
        out.append(f"chronology of {amara.forename} {amara.surname}: {len(chron)} entries")
        for e in chron:
            out.append(f"  {e.occurred_at:%Y-%m-%d %H:%M}  {e.kind:<9} {_describe(e.record)}")

        sender_ks = node.keys.load(SENDER[0])
        to_ks = node.keys.load(RECEIVER[0])
        evidence = data_dir / "evidence"
        evidence.mkdir(exist_ok=True)
        pkg_path = evidence / f"leaver-file-{amara.upn}.age"
        with pkg_path.open("wb") as fh:
            built = await build_leaver_package(
                store, actors["dsl"], amara.id, fh,
                sender=Sender(org_id=sender_ks.org_id, key_fingerprint=sender_ks.fingerprint,
                              signing_key_id=sender_ks.key_id_hex),
                recipient=Recipient(org_id=to_ks.org_id, key_fingerprint=to_ks.fingerprint),
                signer=sender_ks.minisign_secret_key(),
                recipients=[X25519Recipient.from_string(to_ks.recipient)],
            )  # fmt: skip
        pub: PublicKey = sender_ks.minisign_public_key
        (evidence / "hillside.pub").write_text(pub.to_text(), encoding="utf-8")
        out.append(
            f"leaver's file sealed for {RECEIVER[2]}: {pkg_path} "
            f"({built.ciphertext_size} bytes, {len(built.manifest.entries)} entries, "
            f"sha256 {built.ciphertext_sha256[:16]}...)"
        )
        await node.audit_log.checkpoint()
    return out


def _describe(record: object) -> str:
    for attr in ("category", "decision", "agency", "filename"):
        value = getattr(record, attr, None)
        if value:
            return str(value)
    return ""


def run(args: argparse.Namespace) -> int:
    from transfer.cli import main as cli_main

    data_dir = data_dir_of(args) if args.data_dir else Path("demo-data").resolve()
    _prepare(data_dir, args.fresh)
    print("Building the demo node in", data_dir)
    for line in asyncio.run(_demo(data_dir)):
        print(line)
    pkg = next((data_dir / "evidence").glob("leaver-file-*.age"))
    print(f"\nThe receiving school verifies it ({RECEIVER[2]}, from this node's keys):")
    code = cli_main(["package", "verify", str(pkg), "--data-dir", str(data_dir),
                     "--org", RECEIVER[0]])  # fmt: skip
    if code:
        return code
    print("\nThe audit log, checked from scratch:")
    code = cli_main(["audit", "verify", "--data-dir", str(data_dir)])
    print(
        "\nTry next:\n"
        f"  .venv/bin/handover audit show --data-dir {data_dir} | tail\n"
        f"  .venv/bin/handover keys show {SENDER[0]} --data-dir {data_dir}\n"
        f"  .venv/bin/handover serve --data-dir {data_dir}"
    )
    return code
