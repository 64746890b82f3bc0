"""Reading JSON that came from outside: one value per key, no NaN or Infinity.

Python's ``json`` and pydantic's own parser both keep the *last* of two equal keys in
an object, silently. Two readers of one document may not agree on which one counts (a
signature checked by one tool, the value imported by another; a proxy's filter and the
node), so a document that says ``"role": "teacher", "role": "dsl"`` is ambiguous, and
every JSON that reaches the node from outside (API and peer bodies, package records and
manifests, receipts, directory documents, calendars, referral forms) is read through
:func:`loads` here, or checked by :func:`refuse_duplicate_keys` before pydantic parses
it. ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (RFC 8259) and are refused too.

Pure: the standard library only.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["JSONRefused", "loads", "refuse_duplicate_keys"]


class JSONRefused(ValueError):
    """The text is JSON that this project does not take (a key twice, a NaN constant,
    nesting too deep); the message says which, for a person."""


def _one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JSONRefused(f"the key {key[:40]!r} appears twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not allowed")


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON text (UTF-8 when bytes); refuse a key given twice in one object.

    Raises ``ValueError``: :class:`JSONRefused` for a duplicate key, a ``NaN`` /
    ``Infinity`` constant or nesting too deep; ``json.JSONDecodeError`` for text that is
    not JSON; ``UnicodeDecodeError`` for bytes that are not UTF-8.
    """
    text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    try:
        return json.loads(text, object_pairs_hook=_one_value_per_key, parse_constant=_no_constant)
    except RecursionError:
        raise JSONRefused("the JSON is nested too deeply") from None


def refuse_duplicate_keys(data: bytes | bytearray | memoryview | str) -> None:
    """Raise :class:`JSONRefused` if ``data`` gives a key twice (or holds ``NaN``...).

    For JSON that pydantic then parses itself (its errors name the fields): text that is
    not JSON at all is left to that parser to report.
    """
    try:
        loads(data)
    except JSONRefused:
        raise
    except ValueError:
        return
