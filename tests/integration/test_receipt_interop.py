"""Receipts as evidence, checked by Debian's ``minisign`` binary, and receipts it signs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from keys import minisign
from keys.keyset import KeySet
from schemas.receipt import ReceiptActor, ReceiptBody
from transfer.receipts import (
    ReceiptError,
    SignedReceipt,
    sign_receipt,
    verify_receipt,
    write_evidence,
)

MINISIGN = shutil.which("minisign")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _need_minisign() -> None:
    if MINISIGN is None:
        pytest.fail("Debian's minisign is not installed: run `make tools`")


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert MINISIGN is not None
    return subprocess.run(
        [MINISIGN, *map(str, args)],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _body(org_id: str, key_id: str) -> ReceiptBody:
    return ReceiptBody(
        receipt_id=uuid4(),
        kind="accepted",
        package_id=uuid4(),
        package_kind="referral_social_care",
        sender_org_id="urn:school:100001",
        receiver_org_id=org_id,
        receiver_key_id=key_id,
        ciphertext_sha256=hashlib.sha256(b"ciphertext").hexdigest(),
        ciphertext_size=10,
        manifest_sha256=hashlib.sha256(b"manifest").hexdigest(),
        acted_by=ReceiptActor(name="Jo Bloggs", role="dsl"),
        reference="MASH-2026-0042",
        issued_at=datetime(2026, 9, 14, 10, 30, tzinfo=UTC),
    )


def test_minisign_verifies_receipt_evidence(tmp_path: Path) -> None:
    keys = KeySet.generate("la:social-care:301")
    signed = sign_receipt(_body(keys.org_id, keys.key_id_hex), keys)
    pub = tmp_path / "receiver.pub"
    pub.write_text(keys.minisign_public_key_text())
    body_path, sig_path = write_evidence(signed, tmp_path / "receipt-accepted.json")
    assert sig_path == tmp_path / "receipt-accepted.json.minisig"
    assert body_path.read_bytes() == signed.body_bytes
    assert not list(tmp_path.glob(".*.tmp"))

    res = _run("-Vm", body_path, "-x", sig_path, "-p", pub)
    assert res.returncode == 0, res.stderr
    assert f"handover-receipt-v1 accepted {signed.body.package_id}" in res.stdout
    # The default signature name works too (as docs/receipts.md shows).
    res = _run("-Vm", body_path, "-p", pub)
    assert res.returncode == 0, res.stderr

    # One changed byte in the evidence and minisign refuses it.
    body_path.write_bytes(signed.body_bytes.replace(b"MASH-2026-0042", b"MASH-2026-0043"))
    res = _run("-Vm", body_path, "-p", pub)
    assert res.returncode != 0
    assert "verification failed" in (res.stdout + res.stderr).lower()


def test_a_receipt_signed_by_minisign_verifies_here(tmp_path: Path) -> None:
    pk, sk = tmp_path / "theirs.pub", tmp_path / "theirs.key"
    res = _run("-G", "-W", "-p", pk, "-s", sk)
    assert res.returncode == 0, res.stderr
    public = minisign.PublicKey.from_text(pk.read_text())
    body = _body("la:social-care:302", public.key_id_hex)
    path = tmp_path / "receipt.json"
    path.write_bytes(body.canonical_bytes())
    comment = f"handover-receipt-v1 accepted {body.package_id}"
    res = _run("-S", "-s", sk, "-m", path, "-t", comment)
    assert res.returncode == 0, res.stderr
    signed = SignedReceipt(body, path.read_bytes(), (tmp_path / "receipt.json.minisig").read_text())
    assert verify_receipt(signed.to_json(), public_key=public).body == body

    # Signed by minisign with a comment for another purpose: refused.
    res = _run("-S", "-s", sk, "-m", path, "-t", "handover-manifest-v1 package=x")
    assert res.returncode == 0, res.stderr
    other = SignedReceipt(body, path.read_bytes(), (tmp_path / "receipt.json.minisig").read_text())
    with pytest.raises(ReceiptError, match="not made for this receipt"):
        verify_receipt(other, public_key=public)


def test_wire_modules_import_no_io_framework() -> None:
    code = (
        "import sys\n"
        "import transfer.httpsig, transfer.receipts, schemas.receipt\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'sqlalchemy'}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
        check=True,
        timeout=60,
    )
    assert res.stdout.strip() == "[]"
