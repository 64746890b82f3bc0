"""The pure helpers: TOTP step matching, recovery codes, token hashes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp

from transfer.auth import codes

SECRET = codes.new_totp_secret()
NOW = datetime(2026, 9, 7, 9, 0, 5, tzinfo=UTC)


def test_current_code_matches_its_step() -> None:
    code = pyotp.TOTP(SECRET).at(NOW)
    assert codes.matching_step(SECRET, code, NOW, 0) == codes.time_step(NOW)
    assert codes.matching_step(SECRET, f" {code[:3]} {code[3:]} ", NOW, 0) is not None


def test_drift_window_is_respected_both_ways() -> None:
    before = pyotp.TOTP(SECRET).at(NOW - timedelta(seconds=30))
    after = pyotp.TOTP(SECRET).at(NOW + timedelta(seconds=30))
    two_before = pyotp.TOTP(SECRET).at(NOW - timedelta(seconds=60))
    assert codes.matching_step(SECRET, before, NOW, 1) == codes.time_step(NOW) - 1
    assert codes.matching_step(SECRET, after, NOW, 1) == codes.time_step(NOW) + 1
    assert codes.matching_step(SECRET, before, NOW, 0) is None
    if two_before not in (before, pyotp.TOTP(SECRET).at(NOW), after):
        assert codes.matching_step(SECRET, two_before, NOW, 1) is None


def test_malformed_codes_never_match() -> None:
    for bad in ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦"]:
        assert codes.matching_step(SECRET, bad, NOW, 3) is None


def test_uri_and_terminal_qr() -> None:
    uri = codes.provisioning_uri(SECRET, account="dsl@199001", issuer="Handover")
    assert uri.startswith("otpauth://totp/Handover:dsl%40199001?secret=" + SECRET)
    assert "issuer=Handover" in uri
    qr = codes.terminal_qr(uri)
    assert "█" in qr and len(qr.splitlines()) > 20


def test_recovery_codes_are_distinct_and_hashed_per_person() -> None:
    batch = codes.new_recovery_codes()
    assert len(batch) == codes.RECOVERY_CODES == len(set(batch))
    assert all(len(c) == 19 and c.count("-") == 3 for c in batch)
    h = codes.recovery_code_hash("staff-a", batch[0])
    assert h == codes.recovery_code_hash("staff-a", batch[0].upper().replace("-", " "))
    assert h != codes.recovery_code_hash("staff-b", batch[0])
    assert batch[0] not in h


def test_tokens_are_random_and_only_their_hash_is_kept() -> None:
    a, b = codes.new_token(codes.SESSION_PREFIX), codes.new_token(codes.SESSION_PREFIX)
    assert a != b and a.startswith("hos_") and len(a) > 40
    assert codes.token_hash(a) != codes.token_hash(b)
    assert len(codes.token_hash(a)) == 64 and a[4:] not in codes.token_hash(a)
