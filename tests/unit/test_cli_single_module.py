"""``handover X`` loads only the sub-command module X when the first argument names one."""

from __future__ import annotations

import pytest

from transfer.cli import _single_module, build_parser


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["age", "decrypt"], "age"),
        (["audit"], "audit"),
        (["directory", "show"], "directory"),  # a package of modules
        # Registered by another module (requests): the whole parser finds it.
        (["request-file", "--help"], None),
        (["nonsense"], None),
        (["_common"], None),
        (["-v", "age"], None),
        (["../age"], None),
        ([], None),
    ],
)
def test_the_first_argument_picks_the_module(argv: list[str], expected: str | None) -> None:
    assert _single_module(argv) == expected


def test_a_parser_for_one_module_knows_only_that_command() -> None:
    one = build_parser("age")
    assert one.parse_args(["age", "keygen"]).command == "age"
    with pytest.raises(SystemExit):
        one.parse_args(["audit", "verify"])
    every = build_parser()
    assert every.parse_args(["audit", "verify"]).command == "audit"
