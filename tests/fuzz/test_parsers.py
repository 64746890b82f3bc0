"""Fuzzing the readers of untrusted files and documents (issue 17, "Hostile input").

Each target (``targets.py``) is fed good inputs mutated by Hypothesis; whatever the bytes,
it returns or raises a HandoverError with a one-line message. ``make test`` runs a short,
fixed budget; ``make fuzz`` a long, random one that keeps any crash under
``tests/assets/fuzz/`` (replayed by ``test_regressions.py``).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import fuzz_settings, json_mutated, mutated, run_target
from tests.fuzz.targets import FuzzTarget, all_targets

TARGETS = {t.name: t for t in all_targets()}


def _strategy(target: FuzzTarget) -> st.SearchStrategy[bytes]:
    raw = mutated(target.seeds)
    if target.json_seeds:
        return st.one_of(raw, json_mutated(target.json_seeds))
    return raw


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_hostile_input_gets_a_clear_error(name: str) -> None:
    target = TARGETS[name]

    @fuzz_settings()
    @given(data=_strategy(target))
    def fuzz(data: bytes) -> None:
        run_target(name, target.run, data)

    fuzz()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_seeds_are_accepted(name: str) -> None:
    """The fuzzing starts from inputs the target takes (else it would test only refusals)."""
    for seed in TARGETS[name].seeds:
        TARGETS[name].run(seed)
