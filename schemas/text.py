"""Text a person will read: no invisible characters that change what it appears to say.

A bidirectional override (U+202E RIGHT-TO-LEFT OVERRIDE) makes ``Smith\\u202eKCAB`` show
as "SmithBACK"; an isolate or embedding reorders a reference; a zero-width space makes
two names that look the same compare different; a Unicode tag character carries text no
one sees. A DSL reading a pupil's name, an agency's reference or a receipt's "accepted
by" must see what is there, so the boundary models refuse them, with a message naming
the character:

- :data:`Line` (a name, a reference, a label: one line): no control characters at all
  (tab and newline included), no format characters (Unicode category ``Cf``: the bidi
  controls U+200E/F, U+202A-U+202E, U+2066-U+2069, U+061C, zero-width space U+200B, word
  joiner U+2060, BOM U+FEFF, soft hyphen U+00AD, tags U+E0000-U+E007F...) except ZERO
  WIDTH NON-JOINER and ZERO WIDTH JOINER (U+200C, U+200D), which Persian, Indic scripts
  and emoji need; no line or paragraph separator (U+2028, U+2029);
- :data:`Prose` (an account, a reason: free text over many lines): tab, newline and
  carriage return are fine, and so are the left-to-right and right-to-left *marks*
  (U+200E, U+200F, U+061C) that right-to-left writing uses; the embedding, override and
  isolate controls (U+202A-U+202E, U+2066-U+2069), tag characters and other control
  characters are refused.

The JSON Schema of each carries a ``pattern`` saying the same (for the characters of the
Basic Multilingual Plane), so a client generated from the OpenAPI document knows.

Pure: the standard library and pydantic only.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Final

from pydantic import AfterValidator, Field

__all__ = ["Line", "Prose", "check_line", "check_prose", "first_hidden", "shown", "where"]

_JOINERS: Final = frozenset("\u200c\u200d")
_MARKS: Final = frozenset("\u200e\u200f\u061c")
_PROSE_WHITESPACE: Final = frozenset("\t\n\r")
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

#: ECMA-262 patterns (as JSON Schema reads them) for the schemas; the validators below
#: are what enforces, also beyond the Basic Multilingual Plane.
LINE_PATTERN: Final = (
    r"^[^\u0000-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891"
    r"\u08e2\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
    r"\ufff9-\ufffb]*$"
)
PROSE_PATTERN: Final = (
    r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$"
)


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}".strip() if name else f"U+{ord(char):04X}"


def first_hidden(value: str, *, prose: bool = False) -> str | None:
    """The first character of ``value`` that :data:`Line` (or :data:`Prose`) refuses, as
    ``U+202E RIGHT-TO-LEFT OVERRIDE``; None when there is none."""
    for char in value:
        if char.isprintable() and char not in _BIDI_CONTROLS:
            # Printable excludes Cc, Cf, Zl, Zp (and Co, Cn, Cs, Zs other than space: fine).
            continue
        category = unicodedata.category(char)
        if prose:
            if char in _PROSE_WHITESPACE or char in _MARKS or char in _JOINERS:
                continue
            if char in _BIDI_CONTROLS or category == "Cc" or 0xE0000 <= ord(char) <= 0xE007F:
                return _describe(char)
            continue
        if char in _JOINERS:
            continue
        if category in {"Cc", "Cf", "Zl", "Zp"}:
            return _describe(char)
    return None


def check_line(value: str) -> str:
    found = first_hidden(value)
    if found is not None:
        raise ValueError(
            f"must not contain control, invisible or direction-changing characters "
            f"(found {found}): a person reading it would not see what it says"
        )
    return value


def check_prose(value: str) -> str:
    found = first_hidden(value, prose=True)
    if found is not None:
        raise ValueError(
            f"must not contain direction-overriding, hidden or control characters "
            f"(found {found}): a person reading it would not see what it says"
        )
    return value


#: One line a person reads: a name, a reference, a label.
Line = Annotated[
    str, AfterValidator(check_line), Field(json_schema_extra={"pattern": LINE_PATTERN})
]
#: Free text a person reads, over several lines.
Prose = Annotated[
    str, AfterValidator(check_prose), Field(json_schema_extra={"pattern": PROSE_PATTERN})
]


def shown(value: object, limit: int = 40) -> str:
    """Text from outside made safe for a one-line message: every control, format, separator
    or unassigned character becomes ``?``, and it is cut at ``limit`` characters (``...``).

    A message with a value sent by someone else (a field name, a date that does not parse)
    must stay one line in the log and the terminal, and show what is there.
    """
    text = str(value)
    cut = text[:limit]
    safe = "".join("?" if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in cut)
    return safe + ("..." if len(text) > limit else "")


def where(loc: tuple[int | str, ...] | list[int | str], default: str = "(top)") -> str:
    """A pydantic error's location (``entries.0.path``) as :func:`shown` text."""
    return shown(".".join(str(p) for p in loc), 80) or default
