"""``schemas.jsontext`` (one value per key) and ``schemas.text`` (no hidden characters),
and the parse points from outside that use them: package records, referral forms,
calendars, directory documents, manifests and receipts."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from schemas import jsontext
from schemas.manifest import Manifest, ManifestDecodeError
from schemas.receipt import ReceiptBody, ReceiptDecodeError
from schemas.text import LINE_PATTERN, PROSE_PATTERN, Line, Prose, first_hidden, shown, where
from transfer.deadlines import CalendarError, calendar_from_json
from transfer.directory.document import DirectoryFormatError, parse_document
from transfer.exchange.importing import RecordsError, parse_records
from transfer.referrals.forms import FormError, parse_form


def test_a_key_twice_is_refused_at_any_depth() -> None:
    assert jsontext.loads(b'{"a": {"b": [1, {"c": 2}]}}') == {"a": {"b": [1, {"c": 2}]}}
    for text in ['{"a": 1, "a": 1}', '{"x": {"a": 1, "b": 2, "a": 3}}', '[{"k": 1, "k": 2}]']:
        with pytest.raises(jsontext.JSONRefused, match="appears twice"):
            jsontext.loads(text)
        with pytest.raises(jsontext.JSONRefused):
            jsontext.refuse_duplicate_keys(text)


def test_nan_infinity_and_deep_nesting_are_refused_and_not_json_is_left_to_the_parser() -> None:
    for text in ['{"a": NaN}', "[Infinity]", "-Infinity", "[" * 100_000 + "]" * 100_000]:
        with pytest.raises(jsontext.JSONRefused):
            jsontext.loads(text)
    with pytest.raises(json.JSONDecodeError):
        jsontext.loads("{")
    with pytest.raises(UnicodeDecodeError):
        jsontext.loads(b"\xff")
    jsontext.refuse_duplicate_keys("{")  # pydantic reports that one, naming the field


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Smith\u202eKCAB", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("a\u202ab", "U+202A LEFT-TO-RIGHT EMBEDDING"),
        ("a\u2067b\u2069", "U+2067 RIGHT-TO-LEFT ISOLATE"),
        ("a\u200eb", "U+200E LEFT-TO-RIGHT MARK"),
        ("a\u061cb", "U+061C ARABIC LETTER MARK"),
        ("a\u200bb", "U+200B ZERO WIDTH SPACE"),
        ("a\ufeffb", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("a\u00adb", "U+00AD SOFT HYPHEN"),
        ("a\U000e0041b", "U+E0041 TAG LATIN CAPITAL LETTER A"),
        ("a\u2028b", "U+2028 LINE SEPARATOR"),
        ("a\tb", "U+0009"),
        ("a\x00b", "U+0000"),
    ],
)
def test_a_line_refuses_every_hidden_character_and_names_it(text: str, found: str) -> None:
    assert first_hidden(text) == found


def test_a_line_keeps_what_real_names_need() -> None:
    for name in [
        "O'Neil-Smith",
        "Zoë Brontë",
        "محمد",
        "מרים",
        "\u0645\u06cc\u200c\u0631\u0627",
        "👨\u200d👩\u200d👧",
        "Ana\u00a0Lu",
    ]:
        assert first_hidden(name) is None, name


def test_prose_keeps_lines_and_marks_but_not_overrides() -> None:
    arabic = "\u0642\u0627\u0644\u062a"
    assert first_hidden(f"Line one.\r\nTwo,\tindented \u200f{arabic}\u200e.", prose=True) is None
    assert first_hidden("said \u202eemoh\u202c", prose=True) == "U+202E RIGHT-TO-LEFT OVERRIDE"
    assert first_hidden("x\u2066y", prose=True) == "U+2066 LEFT-TO-RIGHT ISOLATE"
    assert first_hidden("x\U000e0020y", prose=True) == "U+E0020 TAG SPACE"
    assert first_hidden("x\x07y", prose=True) == "U+0007"


def test_the_models_refuse_with_a_message_and_their_schemas_say_so() -> None:
    class Named(BaseModel):
        name: Line
        account: Prose

    with pytest.raises(ValidationError, match=r"U\+202E RIGHT-TO-LEFT OVERRIDE"):
        Named(name="Smith\u202e", account="ok")
    with pytest.raises(ValidationError, match=r"U\+2069 POP DIRECTIONAL ISOLATE"):
        Named(name="Smith", account="\u2069")
    props = Named.model_json_schema()["properties"]
    assert props["name"]["pattern"] == LINE_PATTERN
    assert props["account"]["pattern"] == PROSE_PATTERN


PUPIL = {
    "schema_version": 1,
    "id": "p1",
    "org_id": "123456",
    "upn": "H801200001001",
    "surname": "Okafor",
    "forename": "Amara",
    "dob": "2014-11-03",
    "sex": "F",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}


def test_a_received_record_with_a_key_twice_or_a_hidden_character_in_a_name_is_refused() -> None:
    good = json.dumps(PUPIL).encode()
    assert parse_records({"records/pupil.json": good}).pupil is not None
    twice = good[:-1] + b', "surname": "Someone Else"}'
    with pytest.raises(RecordsError, match="'surname' appears twice"):
        parse_records({"records/pupil.json": twice})
    hidden = json.dumps({**PUPIL, "surname": "Oka\u202efor"}).encode()
    with pytest.raises(RecordsError, match=r"surname .*U\+202E"):
        parse_records({"records/pupil.json": hidden})


def test_a_referral_form_and_a_calendar_with_a_key_twice_are_refused() -> None:
    with pytest.raises(FormError, match="appears twice"):
        parse_form(b'{"kind": "police", "kind": "lado"}')
    calendar = b'{"name": "x", "terms": [], "terms": []}'
    with pytest.raises(CalendarError, match="appears twice"):
        calendar_from_json(calendar)


def test_signed_documents_with_a_key_twice_are_refused() -> None:
    with pytest.raises(ManifestDecodeError, match="appears twice"):
        Manifest.from_bytes(b'{"format": 1, "format": 1}')
    with pytest.raises(ReceiptDecodeError, match="appears twice"):
        ReceiptBody.from_bytes(b'{"type": "x", "type": "x"}')
    with pytest.raises(DirectoryFormatError, match="appears twice"):
        parse_document(b'{"serial": 1, "serial": 2}')


def test_values_from_outside_are_shown_on_one_line() -> None:
    # Found by make fuzz: a newline in a CTF date or a receipt's field name forged a log line.
    assert shown("2026-07-20T\n4:32:05") == "2026-07-20T?4:32:05"
    assert shown("a\u202eb\u2028c\x00d\te") == "a?b?c?d?e"
    assert shown("Zoë Ní Bhriain") == "Zoë Ní Bhriain"
    assert shown("x" * 50, 10) == "x" * 10 + "..."
    assert where(("entries", 0, "pa\nth")) == "entries.0.pa?th"
    assert where(()) == "(top)"
    assert where((), "body") == "body"
