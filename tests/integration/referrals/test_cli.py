"""``handover referral ...`` run as a DSL would: the real command in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from schemas.records import NewConcern, NewPupil
from tests.support.referrals import CONSENT_RISK, mash_form
from transfer.store.permissions import Role

HANDOVER = [sys.executable, "-m", "transfer.cli"]
SCHOOL = "123456"


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HANDOVER, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def _prepare(data: Path) -> tuple[str, str]:
    from transfer.node import Node
    from transfer.transport.http import http_transport

    async with await Node.open(data, transport=http_transport) as node:
        store = node.store
        for name, role in (("dana", Role.DSL), ("dep", Role.DEPUTY_DSL), ("sam", Role.STAFF)):
            await store.bootstrap_staff(SCHOOL, username=name, display_name=name, roles=[role])
        admin = await store.find_staff(SCHOOL, "admin")
        assert admin is not None
        admin_actor = await store.actor_for(admin.id)
        pupil = await store.create_pupil(
            admin_actor,
            NewPupil(
                upn="H801200001001",
                surname="Okafor",
                forename="Amara",
                dob=date(2014, 11, 3),
                sex="F",
            ),
        )
        dana = await store.find_staff(SCHOOL, "dana")
        assert dana is not None
        concern = await store.record_concern(
            await store.actor_for(dana.id),
            NewConcern(
                pupil_ids=(pupil.id,),
                category="child_protection",
                happened_at=datetime(2026, 9, 1, 12, tzinfo=UTC),
                account="Amara said Kai Smith hit her.",
            ),
        )
        return pupil.id, concern.id


def test_referral_commands_from_draft_to_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env["HANDOVER_KEK"] = secrets.token_hex(32)
    env["HANDOVER_ADMIN_PASSWORD"] = "a long enough pass phrase 42"
    env["HOME"] = str(tmp_path / "home")
    data = tmp_path / "node"
    r = _run(
        [
            "init",
            "--data-dir",
            str(data),
            "--school",
            f"{SCHOOL}:8012000:Hillside",
            "--agency",
            "mash-bristol:social_care:Bristol MASH",
            "--admin",
            "admin",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    monkeypatch.setenv("HANDOVER_KEK", env["HANDOVER_KEK"])
    pupil_id, concern_id = asyncio.run(_prepare(data))
    base = ["--data-dir", str(data), "--org", SCHOOL]

    form = tmp_path / "form.json"
    form.write_text(json.dumps(mash_form(consent=CONSENT_RISK)))
    new = _run(
        [
            "referral",
            "new",
            *base,
            "--as",
            "dana",
            "--pupil",
            pupil_id,
            "--agency",
            "mash-bristol",
            "--form",
            str(form),
            "--select",
            f"concern:{concern_id}",
            "--redact",
            "Kai Smith",
            "--json",
        ],
        env,
    )
    assert new.returncode == 0, new.stderr
    record = json.loads(new.stdout)
    rid = record["id"]
    assert record["state"] == "draft" and len(record["redactions"]) == 1

    # A bad form: one line, naming the field, exit 2; staff may not draft.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({k: v for k, v in mash_form().items() if k != "risk_rating"}))
    refused = _run(
        [
            "referral",
            "new",
            *base,
            "--as",
            "dana",
            "--pupil",
            pupil_id,
            "--agency",
            "mash-bristol",
            "--form",
            str(bad),
        ],
        env,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "handover: error: the referral form is not valid: risk_rating is required"
    )
    staff = _run(
        [
            "referral",
            "new",
            *base,
            "--as",
            "sam",
            "--pupil",
            pupil_id,
            "--agency",
            "mash-bristol",
            "--form",
            str(form),
        ],
        env,
    )
    assert staff.returncode == 6 and "only the DSL team" in staff.stderr

    # The deputy may not send without consent; the DSL may.
    out = tmp_path / "out"
    deputy = _run(["referral", "bundle", *base, "--as", "dep", rid, "--out", str(out)], env)
    assert deputy.returncode == 6 and "only the DSL may do that" in deputy.stderr
    bundle = _run(
        [
            "referral",
            "bundle",
            *base,
            "--as",
            "dana",
            rid,
            "--out",
            str(out),
            "--passphrase",
            "--zip",
        ],
        env,
    )
    assert bundle.returncode == 0, bundle.stderr
    assert "passphrase (shown once" in bundle.stdout
    assert len(list(out.glob("*.zip"))) == 1

    hand = _run(
        [
            "referral",
            "handed-over",
            *base,
            "--as",
            "dana",
            rid,
            "--to",
            "Duty social worker",
            "--how",
            "secure upload portal",
        ],
        env,
    )
    assert hand.returncode == 0 and "delivered" in hand.stdout, hand.stderr
    ack = _run(
        [
            "referral",
            "acknowledge",
            *base,
            "--as",
            "dana",
            rid,
            "--name",
            "Jo Duty",
            "--reference",
            "MASH-77",
        ],
        env,
    )
    assert ack.returncode == 0 and "agency reference MASH-77" in ack.stdout, ack.stderr
    outcome = tmp_path / "outcome.json"
    outcome.write_text(
        json.dumps({"kind": "social_care", "rag": "amber", "decision": "section_17"})
    )
    done = _run(["referral", "outcome", *base, "--as", "dana", rid, "--file", str(outcome)], env)
    assert done.returncode == 0 and "closed" in done.stdout, done.stderr
    show = _run(["referral", "show", *base, "--as", "dep", rid], env)
    assert show.returncode == 0, show.stderr
    assert "consent: NOT given (greater_risk)" in show.stdout
    for step in ("drafted", "sent", "handed_over", "accepted", "outcome"):
        assert step in show.stdout
    # People by name and role, the agency by name; the ids stay in --json.
    dana_id = record["events"][0]["actor"]
    assert dana_id and dana_id not in show.stdout
    assert " drafted by dana (DSL)" in show.stdout and " sent by dana (DSL)" in show.stdout
    assert "to Bristol MASH (mash-bristol)" in show.stdout
    assert record["events"][0]["actor_name"] == "dana"
    assert record["events"][0]["actor_role"] == "DSL"
    assert record["agency_name"] == "Bristol MASH"
    listed = _run(["referral", "list", *base, "--as", "dana", "--state", "closed"], env)
    assert rid in listed.stdout
    missing = _run(["referral", "show", *base, "--as", "dana", "nope"], env)
    assert missing.returncode == 4 and "no such referral" in missing.stderr


def test_referral_cli_checks_and_the_child_by_upn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11, items 16 and 17 from the command line: ``--pupil UPN``; a draft whose
    ``--redact`` fails is not made; ``referral discard``; nothing chosen needs ``--form-only``;
    ``audit show --pupil UPN``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env["HANDOVER_KEK"] = secrets.token_hex(32)
    env["HANDOVER_ADMIN_PASSWORD"] = "a long enough pass phrase 42"
    env["HOME"] = str(tmp_path / "home")
    data = tmp_path / "node"
    r = _run(
        [
            "init",
            "--data-dir",
            str(data),
            "--school",
            f"{SCHOOL}:8012000:Hillside",
            "--agency",
            "mash-bristol:social_care:Bristol MASH",
            "--admin",
            "admin",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    monkeypatch.setenv("HANDOVER_KEK", env["HANDOVER_KEK"])
    pupil_id, concern_id = asyncio.run(_prepare(data))
    base = ["--data-dir", str(data), "--org", SCHOOL, "--as", "dana"]
    form = tmp_path / "form.json"
    form.write_text(json.dumps(mash_form()))

    def new_for(upn: str) -> list[str]:
        return [
            "referral",
            "new",
            *base,
            "--pupil",
            upn,
            "--agency",
            "mash-bristol",
            "--form",
            str(form),
        ]

    new = new_for("H801200001001")

    failed = _run([*new, "--select", f"concern:{concern_id}", "--redact", "Nobody Here"], env)
    assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1
    assert "Nobody Here" not in failed.stderr  # never echoed: it may be a third party's name
    listed = _run(["referral", "list", *base], env)
    assert listed.returncode == 0 and listed.stdout.strip() == "no referrals"
    bad_upn = _run(new_for("A801200001001"), env)
    assert bad_upn.returncode == 2 and "wrong check letter" in bad_upn.stderr

    made = _run([*new, "--json"], env)
    assert made.returncode == 0, made.stderr
    rid = json.loads(made.stdout)["id"]
    assert json.loads(made.stdout)["pupil_id"] == pupil_id
    out = tmp_path / "out"
    refused = _run(["referral", "bundle", *base, rid, "--out", str(out)], env)
    assert refused.returncode == 2 and "--form-only" in refused.stderr, refused.stderr
    assert not list(out.glob("*")) if out.exists() else True
    sent = _run(["referral", "bundle", *base, rid, "--out", str(out), "--form-only"], env)
    assert sent.returncode == 0, sent.stderr

    other = json.loads(_run([*new, "--json"], env).stdout)["id"]
    gone = _run(["referral", "discard", *base, other], env)
    assert (
        gone.returncode == 0 and f"referral {other}" in gone.stdout and "discarded" in (gone.stdout)
    ), gone.stderr
    assert _run(["referral", "show", *base, other], env).returncode == 4

    # "Who has looked at this child's file?" by UPN; a mistyped UPN gets the DfE's words.
    shown = _run(["audit", "show", "--data-dir", str(data), "--pupil", "H801200001001"], env)
    assert shown.returncode == 0, shown.stderr
    assert "referral.drafted" in shown.stdout and f"pupil={pupil_id}" in shown.stdout
    assert all(f"pupil={pupil_id}" in line for line in shown.stdout.splitlines())
    wrong = _run(["audit", "show", "--data-dir", str(data), "--pupil", "A801200001001"], env)
    assert wrong.returncode == 2 and "wrong check letter" in wrong.stderr


def test_a_form_with_many_problems_names_each_on_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every problem of the form file, one per field (not "and 9 more problems"); the form
    is read before the node is opened, so nothing is drafted."""
    from transfer.cli import main

    bad = tmp_path / "bad.json"
    form = {k: v for k, v in mash_form().items() if k not in ("request", "risk_rating")}
    form["child"] = {**form["child"], "upn": "X1"}
    bad.write_text(json.dumps(form))
    code = main(
        [
            "referral",
            "new",
            "--data-dir",
            str(tmp_path / "nowhere"),
            "--org",
            SCHOOL,
            "--as",
            "dana",
            "--pupil",
            "H801200001001",
            "--agency",
            "mash-bristol",
            "--form",
            str(bad),
        ]
    )
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "handover: error: the referral form is not valid (3 problems):"
    assert lines[1:] == [
        "  request is required",
        "  child.upn: String should match pattern '^[A-Z][0-9]{11}[0-9A-Z]$'",
        "  risk_rating is required",
    ]
    assert not (tmp_path / "nowhere").exists()
