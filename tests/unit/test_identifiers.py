from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transfer.errors import InputError
from transfer.identifiers import (
    ENGLISH_LA_CODES,
    LA_CODES,
    UPN_ALPHABET,
    WELSH_LA_CODES,
    InvalidIdentifier,
    InvalidUPN,
    UPNErrorCategory,
    is_temporary_upn,
    upn_check_letter,
    validate_agency_id,
    validate_la_code,
    validate_laestab,
    validate_upn,
    validate_urn,
)

# --------------------------------------------------------------------------- UPN


def _reference_sum(body: str) -> int:
    """Independent restatement of the DfE rule, for cross-checking."""
    total = 0
    for weight, ch in zip(range(2, 14), body, strict=True):
        value = int(ch) if ch.isdigit() else "ABCDEFGHJKLMNPQRTUVWXYZ".index(ch)
        total += weight * value
    return total


def test_brief_examples() -> None:
    assert _reference_sum("801200001001") == 53
    assert _reference_sum("80120000101A") == 52
    assert upn_check_letter("801200001001") == "H"
    assert upn_check_letter("80120000101A") == "G"
    assert validate_upn("H801200001001") == "H801200001001"
    assert validate_upn("G80120000101A") == "G80120000101A"
    assert not is_temporary_upn("H801200001001")
    assert is_temporary_upn("G80120000101A")


def test_alphabet_has_no_i_o_s() -> None:
    assert len(UPN_ALPHABET) == 23
    assert not set("IOS") & set(UPN_ALPHABET)


def test_normalises_case_and_whitespace() -> None:
    assert validate_upn("  h801200001001\n") == "H801200001001"
    assert validate_upn("g80120000101a") == "G80120000101A"


@pytest.mark.parametrize(
    ("upn", "category"),
    [
        ("H801200001002", UPNErrorCategory.CHECK_LETTER),
        ("1801200001001", UPNErrorCategory.CHECK_LETTER),
        ("I801200001001", UPNErrorCategory.CHECK_LETTER),
        ("H999200001001", UPNErrorCategory.LA_CODE),
        ("H8A1200001001", UPNErrorCategory.LA_CODE),
        ("H001200001001", UPNErrorCategory.LA_CODE),
        ("H80120000X001", UPNErrorCategory.NOT_NUMERIC),
        ("H8012 0001001", UPNErrorCategory.NOT_NUMERIC),
        ("H80120000101O", UPNErrorCategory.CHARACTER_13),
        ("H80120000101S", UPNErrorCategory.CHARACTER_13),
        ("H80120000101-", UPNErrorCategory.CHARACTER_13),
        ("H80120000100", UPNErrorCategory.WRONG_LENGTH),
        ("H8012000010011", UPNErrorCategory.WRONG_LENGTH),
        ("", UPNErrorCategory.WRONG_LENGTH),
        ("H80120000100\u0661", UPNErrorCategory.CHARACTER_13),  # Arabic-Indic digit
    ],
)
def test_error_categories(upn: str, category: UPNErrorCategory) -> None:
    with pytest.raises(InvalidUPN) as info:
        validate_upn(upn)
    assert info.value.category is category
    assert info.value.detail["category"] == category.value
    assert isinstance(info.value, InputError)
    assert "\n" not in info.value.message


def test_wrong_check_letter_message_does_not_reveal_the_right_letter() -> None:
    with pytest.raises(InvalidUPN) as info:
        validate_upn("A801200001001")
    msg = info.value.message
    assert "wrong check letter" in msg
    assert "A801200001001" in msg
    assert "'H'" not in msg and " H " not in msg and "expected" not in msg.lower()


def test_message_echo_is_bounded_and_printable() -> None:
    with pytest.raises(InvalidUPN) as info:
        validate_upn("X" * 500 + "\x1b[31m")
    assert len(info.value.message) < 200
    assert "\x1b" not in info.value.message


def test_upn_check_letter_rejects_non_body() -> None:
    with pytest.raises(ValueError):
        upn_check_letter("80120000100")
    with pytest.raises(ValueError):
        upn_check_letter("8012000010I1")


# Bodies of a well-formed UPN (LA code recognised), permanent or temporary.
_la = st.sampled_from(sorted(LA_CODES))
_digits = st.text(alphabet="0123456789", min_size=8, max_size=8)
_last = st.sampled_from(list("0123456789") + list(UPN_ALPHABET))
_bodies = st.builds(lambda la, d, last: la + d + last, _la, _digits, _last)


@given(_bodies)
def test_every_body_has_exactly_one_valid_check_letter(body: str) -> None:
    valid = []
    for letter in string.ascii_uppercase:
        try:
            validate_upn(letter + body)
        except InvalidUPN as exc:
            assert exc.category is UPNErrorCategory.CHECK_LETTER
        else:
            valid.append(letter)
    assert valid == [upn_check_letter(body)]
    assert UPN_ALPHABET.index(valid[0]) == _reference_sum(body) % 23


_printable = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


@given(_bodies, st.integers(min_value=0, max_value=12), _printable)
def test_any_single_character_change_is_detected_or_flagged(
    body: str, position: int, replacement: str
) -> None:
    upn = upn_check_letter(body) + body
    if upn[position] == replacement.upper():
        return
    changed = upn[:position] + replacement + upn[position + 1 :]
    try:
        result = validate_upn(changed)
    except InvalidUPN:
        return
    # The only undetectable change: a temporary UPN's final letter swapped for the
    # digit with the same value (or vice versa), which flips temporary/permanent.
    assert position == 12
    assert is_temporary_upn(result) != is_temporary_upn(upn)


def test_la_code_lists() -> None:
    assert "801" in ENGLISH_LA_CODES
    assert {"201", "202", "938", "420", "942", "943"} <= ENGLISH_LA_CODES
    assert "681" in WELSH_LA_CODES and not WELSH_LA_CODES & ENGLISH_LA_CODES
    assert len(ENGLISH_LA_CODES) > 150
    assert LA_CODES["801"].startswith("Bristol")
    assert all(len(c) == 3 and c.isdigit() for c in LA_CODES)


# ---------------------------------------------------------------- other identifiers


def test_urn() -> None:
    assert validate_urn(" 108999 ") == "108999"
    for bad in ["10899", "1089990", "10899a", "", "\uff11\uff10\uff18\uff19\uff19\uff19"]:
        with pytest.raises(InvalidIdentifier) as info:
            validate_urn(bad)
        assert info.value.kind == "urn"


def test_la_code() -> None:
    assert validate_la_code("801") == "801"
    with pytest.raises(InvalidIdentifier, match="not a recognised"):
        validate_la_code("999")
    with pytest.raises(InvalidIdentifier, match="3 digits"):
        validate_la_code("80")


def test_laestab() -> None:
    assert validate_laestab("8012000") == "8012000"
    assert validate_laestab("801/2000") == "8012000"
    assert validate_laestab("801-2000") == "8012000"
    with pytest.raises(InvalidIdentifier) as info:
        validate_laestab("9992000")
    assert info.value.category == "unknown-la"
    for bad in ["801200", "80120001", "801/200", "80a2000", "801//2000"]:
        with pytest.raises(InvalidIdentifier) as info:
            validate_laestab(bad)
        assert info.value.category == "format"


@pytest.mark.parametrize("slug", ["mash-bristol", "lado", "police-avon-1", "a" * 64, "abc"])
def test_agency_id_valid(slug: str) -> None:
    assert validate_agency_id(slug) == slug


def test_agency_id_normalises() -> None:
    assert validate_agency_id("  MASH-Bristol ") == "mash-bristol"


@pytest.mark.parametrize(
    "slug", ["ab", "a" * 65, "-mash", "mash-", "mash_bristol", "mash bristol", "máshb", "mash.b"]
)
def test_agency_id_invalid(slug: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        validate_agency_id(slug)
    assert info.value.kind == "agency-id"
