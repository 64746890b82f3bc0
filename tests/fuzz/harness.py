"""What every fuzz target shares: the budget, mutations of good inputs, and crash keeping.

A *target* is a function that takes untrusted bytes and either returns or raises a
:class:`~transfer.errors.HandoverError` (the one error root, which every face turns into
one clear line or an RFC 9457 problem). Any other exception is a crash.

Inputs are good examples (seeds) mutated by Hypothesis: flipped bits, cuts, inserted
and deleted runs, duplicated runs, and "interesting" bytes (NUL, invalid UTF-8, huge
numbers, JSON and XML punctuation), plus plain random bytes; JSON inputs are also
mutated as structures (a value replaced by any JSON value, a key removed or added).

Budget: ``HANDOVER_FUZZ_EXAMPLES`` examples per target (default :data:`SHORT`, for
``make test``); ``make fuzz`` runs a long budget. With ``HANDOVER_FUZZ_SAVE=1`` (set by
``make fuzz``) each crashing input is written to ``tests/assets/fuzz/<target>/`` so it is
replayed by every later run (``test_regressions.py``) once fixed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from transfer.errors import HandoverError

#: Examples per target in ``make test``: all targets together take a few seconds.
SHORT: Final = 150
CORPUS: Final = Path(__file__).resolve().parents[1] / "assets" / "fuzz"

Target = Callable[[bytes], object]


def examples(scale: float = 1.0) -> int:
    """This run's examples per target (``HANDOVER_FUZZ_EXAMPLES``), times ``scale``."""
    text = os.environ.get("HANDOVER_FUZZ_EXAMPLES", "")
    n = int(text) if text.isdigit() else SHORT
    return max(10, int(n * scale))


def fuzz_settings(scale: float = 1.0) -> settings:
    return settings(
        max_examples=examples(scale),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=not os.environ.get("HANDOVER_FUZZ_EXAMPLES"),
        database=None,
    )


def keep_crash(target: str, data: bytes, kind: str = "") -> Path | None:
    """Write a crashing input under ``tests/assets/fuzz/<target>/`` (``make fuzz`` only).

    ``kind`` names the failure (the exception and where it was raised): Hypothesis tries
    many inputs while it shrinks one failure and runs the smallest last, so each kind
    keeps one file, the smallest input.
    """
    if not os.environ.get("HANDOVER_FUZZ_SAVE"):
        return None
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256((kind or data.hex()).encode()).hexdigest()[:16]
    path = folder / f"crash-{key}.bin"
    path.write_bytes(data)
    return path


def _kind(exc: BaseException, what: str) -> str:
    """The failure's kind: what went wrong, the exception's type and where it was raised."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    place = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
    return f"{what}:{type(exc).__name__}:{place}"


def run_target(name: str, target: Target, data: bytes) -> None:
    """Run one input; a crash (anything but a HandoverError) fails, naming the input."""
    try:
        target(data)
    except HandoverError as exc:
        if "\n" in exc.diagnostics() or not exc.diagnostics().strip():
            kept = keep_crash(name, data, _kind(exc, "not-one-line"))
            raise AssertionError(
                f"{name}: a message that is not one line: {exc!r} ({kept})"
            ) from exc
    except Exception as exc:
        kept = keep_crash(name, data, _kind(exc, "escaped"))
        raise AssertionError(
            f"{name}: {type(exc).__name__} escaped instead of a clear error: {exc!r}"
            + (f" (kept as {kept})" if kept else f" (input {data[:200]!r})")
        ) from exc


# ------------------------------------------------------------------ byte mutations

_INTERESTING: Final = (
    b"\x00",
    b"\xff",
    b"\x80",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\n",
    b"\r\n",
    b"-",
    b"+",
    b"=",
    b"/",
    b'"',
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"-1",
    b"0",
    b"99999999999999999999999",
    b"1e999",
    b"NaN",
    b"{}",
    b"[]",
    b"null",
    b"true",
    b"<",
    b">",
    b"&",
    b"<?xml",
    b"]]>",
    b"&#0;",
    b" ",
    b"\t",
)

_POS = st.integers(0, 2**31)
_OPS = st.one_of(
    st.tuples(st.just("flip"), _POS, st.integers(1, 255)),
    st.tuples(st.just("cut"), _POS),
    st.tuples(st.just("insert"), _POS, st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("delete"), _POS, st.integers(1, 64)),
    st.tuples(st.just("dup"), _POS, st.integers(1, 64), _POS),
    st.tuples(st.just("word"), _POS, st.sampled_from(_INTERESTING)),
)


def _apply(seed: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    data = bytearray(seed)
    for op in ops:
        n = len(data)
        kind = op[0]
        at = op[1] % (n + 1)
        if kind == "flip" and n:
            data[at % n] ^= op[2]
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = op[2]
        elif kind == "delete":
            del data[at : at + op[2]]
        elif kind == "dup" and n:
            piece = bytes(data[at : at + op[2]])
            to = op[3] % (n + 1)
            data[to:to] = piece
        elif kind == "word":
            data[at:at] = op[2]
    return bytes(data)


def mutated(seeds: Sequence[bytes], *, max_ops: int = 6) -> st.SearchStrategy[bytes]:
    """Good inputs with a few random edits, and (one time in ten or so) random bytes."""
    edited = st.builds(
        _apply, st.sampled_from(list(seeds)), st.lists(_OPS, min_size=1, max_size=max_ops)
    )
    return st.one_of(edited, edited, edited, st.binary(max_size=512))


# ------------------------------------------------------------------ JSON mutations

_JSON_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _set(value: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    head, rest = path[0], path[1:]
    if delete and not rest:
        del copy[head]
    else:
        copy[head] = _set(copy[head], rest, new, delete)
    return copy


@st.composite
def json_mutated(draw: st.DrawFn, seeds: Sequence[Any]) -> bytes:
    """A good JSON value with one to three parts replaced, removed or added, as bytes."""
    value = draw(st.sampled_from(list(seeds)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete" and path:
            value = _set(value, path, None, True)
        elif action == "add":
            target = value
            for p in path:
                target = target[p]
            if isinstance(target, dict):
                key = draw(st.text(max_size=12))
                value = _set(value, path, {**target, key: draw(_JSON_VALUE)}, False)
            else:
                value = _set(value, path, draw(_JSON_VALUE), False)
        else:
            value = _set(value, path, draw(_JSON_VALUE), False)
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
