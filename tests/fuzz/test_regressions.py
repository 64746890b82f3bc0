"""Every input under ``tests/assets/fuzz/<target>/`` that once crashed a reader gets a clear
error today (``tests/assets/fuzz/README.md`` says where each came from)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.harness import CORPUS, run_target
from tests.fuzz.targets import by_name

#: ``peer/`` holds request bodies, replayed against a node by ``test_peer_bodies.py``.
INPUTS = sorted(p for p in CORPUS.glob("*/*") if p.is_file() and p.parent.name != "peer")


def test_every_kept_input_belongs_to_a_target() -> None:
    assert INPUTS, "the regression inputs are missing"
    for path in INPUTS:
        by_name(path.parent.name)  # KeyError: a folder no target replays


@pytest.mark.parametrize("path", INPUTS, ids=[f"{p.parent.name}/{p.name}" for p in INPUTS])
def test_a_kept_crash_input_gets_a_clear_error(path: Path) -> None:
    target = by_name(path.parent.name)
    run_target(target.name, target.run, path.read_bytes())
