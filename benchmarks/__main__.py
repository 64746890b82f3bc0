"""Run every benchmark module in this package and write docs/benchmarks.md."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import benchmarks

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main() -> int:
    sections: list[str] = []
    only = set(sys.argv[1:])
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if not info.name.startswith("bench_") or (only and info.name not in only):
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        print(f"running {info.name} ...", file=sys.stderr, flush=True)
        sections.append(module.run())
    header = (
        "# Benchmarks\n\nProduced by `make bench` (`.venv/bin/python -m benchmarks`) on the "
        "project's 2-core machine. Each section names what it measured and how.\n\n"
    )
    OUT.write_text(header + "\n\n".join(sections) + "\n", encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
