"""The ``handover`` command.

Sub-commands live one module each in :mod:`transfer.commands`; every module
there exposes ``register(subparsers)`` which adds its parser and sets
``handler`` (a function of the parsed arguments returning an exit code).
Only :class:`transfer.errors.HandoverError` is caught: it is printed as one
line and the process exits with the error's code. ``--verbose`` adds the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

import transfer.commands
from transfer import __version__
from transfer.errors import HandoverError


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``) one with just the sub-command module of that name.

    Importing every sub-command costs a noticeable part of a second; a command
    such as ``handover age`` needs only its own module.
    """
    parser = argparse.ArgumentParser(
        prog="handover",
        description="Signed, end-to-end encrypted transfer of child-protection records.",
    )
    parser.add_argument("--version", action="version", version=f"handover {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show debug logs and tracebacks"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if only is not None:
        names = [only]
    else:
        import pkgutil

        names = sorted(m.name for m in pkgutil.iter_modules(transfer.commands.__path__))
    for name in names:
        if name.startswith("_"):
            continue
        module = importlib.import_module(f"transfer.commands.{name}")
        module.register(sub)
    return parser


def _single_module(argv: Sequence[str]) -> str | None:
    """The sub-command module to load alone, when the first argument names one exactly."""
    if not argv or argv[0].startswith("-"):
        return None
    name = argv[0].replace("-", "_")
    if name.startswith("_") or not name.isidentifier():
        return None
    # A look in the directory, not pkgutil (whose import alone costs a few milliseconds).
    found = any(
        os.path.isfile(os.path.join(d, f"{name}.py"))
        or os.path.isfile(os.path.join(d, name, "__init__.py"))
        for d in transfer.commands.__path__
    )
    return name if found else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_single_module(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # Library chatter (migrations run, every scheduled sweep started) only with -v.
        for noisy in ("alembic", "apscheduler"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = handler(args)
    except HandoverError as exc:
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"handover: error: {exc.diagnostics()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("handover: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
