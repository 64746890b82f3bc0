"""The fenced blocks of the README and of every page in ``docs/``, and the commands in them.

Shared by the documentation tests: ``test_documented_commands.py`` runs every shell
block against the demo's real nodes, ``tests/integration/package/test_standard_tools.py``
runs the standard-tools script against crafted packages.

A block that cannot run here says so in the page itself, on the line just above its
opening fence, in a form a reader sees::

    *Not run by the documentation test: it serves until stopped.*
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Fence languages whose blocks are commands to run.
SHELL = frozenset({"sh", "bash", "shell", "console"})
#: Fence languages whose blocks are run or configured by an operator (never by the test).
OPERATOR = frozenset({"ini"})
NOT_RUN = re.compile(r"^\*Not run by the documentation test: (?P<why>[^*]+\S)\*$")
_FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_+-]*)[ \t]*$")


def pages() -> list[Path]:
    """The README and every Markdown page under ``docs/``, in a fixed order."""
    docs = ROOT / "docs"
    return [ROOT / "README.md", *sorted(docs.glob("*.md")), *sorted(docs.glob("adr/*.md"))]


@dataclass(frozen=True)
class Block:
    page: Path
    #: 1-based line of the opening fence.
    line: int
    lang: str
    text: str
    #: Why the block is not run, from the annotation above it; None: it is run.
    not_run: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page``, with the annotation on the line above it (if any)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        # The annotation is the nearest text above, past a marker comment (``<!-- name -->``).
        above = next(
            (
                x.strip()
                for x in reversed(lines[:start])
                if x.strip() and not (x.strip().startswith("<!--") and x.strip().endswith("-->"))
            ),
            "",
        )
        note = NOT_RUN.match(above)
        out.append(
            Block(
                page=page,
                line=start + 1,
                lang=m.group("lang"),
                text="\n".join(lines[start + 1 : j]) + "\n",
                not_run=note.group("why") if note else None,
            )
        )
        i = j + 1
    return out


def marked_block(page: Path, marker: str) -> str:
    """The text of the block just after the HTML comment ``<!-- marker -->``."""
    text = page.read_text(encoding="utf-8")
    m = re.search(rf"<!-- {re.escape(marker)} -->\n```[a-z]*\n(.*?)\n```", text, re.S)
    if m is None:
        raise AssertionError(f"{page.name} has lost its {marker} block")
    return m.group(1)


@dataclass(frozen=True)
class Command:
    """One command of a shell block (continuation lines and quoted newlines joined)."""

    text: str
    #: The comment lines that follow it (what the page says it prints).
    notes: tuple[str, ...]

    @property
    def expected_status(self) -> int | None:
        """An HTTP status the page says the command answers (``# 422 ...``), if any."""
        for note in self.notes:
            m = re.match(r"#\s*(\d{3})\b", note)
            if m:
                return int(m.group(1))
        return None

    @property
    def expected_to_fail(self) -> bool:
        """The page shows the command refusing (``#   handover: error: ...``)."""
        return any(re.match(r"#\s*handover: error:", note) for note in self.notes)


def _open_quote(text: str) -> bool:
    """Whether ``text`` ends inside a quoted string (shell rules, simplified)."""
    quote: str | None = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote is None:
            if c == "#" and (i == 0 or text[i - 1] in " \t\n"):
                while i < len(text) and text[i] != "\n":
                    i += 1
                continue
            if c == "\\":
                i += 2
                continue
            if c in "'\"":
                quote = c
        elif quote == '"' and c == "\\":
            i += 2
            continue
        elif c == quote:
            quote = None
        i += 1
    return quote is not None


def commands(block_text: str) -> list[Command]:
    """The block's commands in order, each with the comment lines just after it."""
    out: list[Command] = []
    lines = block_text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.lstrip().startswith("#"):
            if out:
                last = out[-1]
                out[-1] = Command(last.text, (*last.notes, line.strip()))
            i += 1
            continue
        text = line
        while (text.rstrip().endswith("\\") or _open_quote(text)) and i + 1 < len(lines):
            i += 1
            text += "\n" + lines[i]
        out.append(Command(text, ()))
        i += 1
    return out
