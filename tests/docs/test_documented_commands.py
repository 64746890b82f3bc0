"""Every command the README and ``docs/`` show is run, against the demo's real nodes.

The README's own ``make demo`` builds the world (two school nodes, a MASH in the
directory, a leaver's file handed over, referrals made); the nodes are then started
again with ``handover serve`` and every shell block of every page runs in ``bash``
(``set -euo pipefail``), page by page, in the order written, in a scratch directory
where ``.venv`` and the Makefile are at hand as in a checkout. A block that cannot
run here says why on the line above it (``*Not run by the documentation test: …*``),
visibly, in the page; nothing is skipped silently.

What the page says a command answers is held to: a ``curl`` followed by a comment
``# 422 …`` must answer 422, any other ``curl`` a 2xx; a command followed by
``#   handover: error: …`` must fail. The few values a reader fills in (the data
directory ``$D``, the API's address ``$API`` and a DSL's session ``$H``, a path
like ``/srv/handover``) are listed in ``PLACES`` and ``_environment``.
Every ``handover …`` command line in any block or inline code must name a real
sub-command and real options (checked against the parser).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keys.keyset import KeySet
from schemas.directory import OrgKind
from tests.docs.blocks import (
    OPERATOR,
    ROOT,
    SHELL,
    Block,
    Command,
    blocks,
    commands,
    pages,
)
from transfer.demo import scenario
from transfer.demo.procs import ServeProcess

#: Tools the pages use besides Handover itself.
TOOLS = ("bash", "make", "curl", "jq", "age", "minisign", "tar", "sha256sum")
#: A DSL the test adds to the demo's primary school, to hold ``$H`` (a session).
DOCS_DSL = ("docs.dsl", "Dee Okoro", "a long enough docs pass phrase 42")
#: The README's block that builds the world; run by the fixture, once.
DEMO_COMMAND = "make demo"
_LINE_COMMAND = re.compile(r"^(\.venv/bin/)?(handover|pytest|curl|make|minisign|age)(\s|$)")


@dataclass
class World:
    demo: Path
    scratch: Path
    base_env: dict[str, str]
    demo_output: str  # what the demo printed (stdout, then stderr)
    #: A DSL's session on the primary node, and one on the secondary.
    token: str
    token2: str
    #: Ids a reader reads off the screen (the chronology's entries), by the pages' names.
    ids: dict[str, str]


def _runnable(block: Block) -> bool:
    return block.lang in SHELL and block.not_run is None


def _all_blocks() -> list[Block]:
    return [b for page in pages() for b in blocks(page)]


# ----------------------------------------------------------------- the world


def _scratch(root: Path, demo: Path | None = None) -> Path:
    """A directory that looks like a checkout to the commands (``.venv``, ``Makefile``...),
    with the demo's work directory as ``demo/`` once ``make demo`` has made it."""
    root.mkdir(parents=True, exist_ok=True)
    for name in (".venv", "Makefile", "pyproject.toml", "scripts"):
        link = root / name
        if not link.exists():
            link.symlink_to(ROOT / name)
    if demo is not None and not (root / "demo").exists():
        (root / "demo").symlink_to(demo)
    return root


def _demo_block() -> Block:
    readme = next(b for b in blocks(ROOT / "README.md") if b.text.startswith(DEMO_COMMAND))
    assert readme.lang in SHELL and readme.not_run is None, readme.where
    return readme


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing tools {missing}: run `make tools`")
    # The virtual environment is up to date, so `make venv` in a page is a no-op.
    subprocess.run(["make", "venv"], cwd=ROOT, check=True, capture_output=True, timeout=900)
    top = tmp_path_factory.mktemp("docs")
    scratch = _scratch(top / "work")
    demo = top / "demo"
    env = {
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(top / "home"),
        "LC_ALL": "C.UTF-8",
        "DEMO_DIR": str(demo),
        # What a person types when init or an account asks for a password.
        "HANDOVER_ADMIN_PASSWORD": "a long enough pass phrase for the node 42",
        "HANDOVER_PASSWORD": "a long enough staff pass phrase 42",
    }
    (top / "home").mkdir()
    block = _demo_block()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.text],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"{block.where}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    nodes = _serve(demo)
    try:
        primary = demo / "nodes" / "primary"
        secondary = demo / "nodes" / "secondary"
        trust = demo / "trust.pem"
        token = asyncio.run(_session(primary, "123456", trust))
        token2 = asyncio.run(_session(secondary, "654321", trust))
        ids = _chronology_ids(_base_url(primary), token, trust)
        yield World(demo, scratch, env, done.stdout + done.stderr, token, token2, ids)
    finally:
        for node in nodes:
            node.stop()


def _base_url(data_dir: Path) -> str:
    import tomllib

    config = tomllib.loads((data_dir / "handover.toml").read_text(encoding="utf-8"))
    return str(config["node"]["base_url"])


def _serve(demo: Path) -> list[ServeProcess]:
    """Start the demo's two nodes again, as `handover demo --keep-running` would."""
    started = []
    for name in ("primary", "secondary"):
        data = demo / "nodes" / name
        node = ServeProcess(
            name,
            data,
            _base_url(data),
            demo / "logs" / f"{name}-docs.log",
            ca_file=demo / "trust.pem",
            env={k: "" for k in os.environ if k.startswith("HANDOVER_")},
        )
        node.start()
        started.append(node)
    for node in started:
        node.wait_ready()
    return started


async def _session(data_dir: Path, org: str, trust: Path) -> str:
    """A DSL's session token on a demo node (``$H``, ``$H2`` in the pages)."""
    import ssl

    import aiohttp

    from transfer.demo.api import StaffClient
    from transfer.node import Node
    from transfer.transport.http import http_transport

    username, name, password = DOCS_DSL
    async with await Node.open(data_dir, transport=http_transport) as node:
        if await node.store.find_staff(org, username) is None:
            await node.accounts.bootstrap_account(
                org, username=username, display_name=name, roles=["dsl"], password=password
            )
    ctx = ssl.create_default_context(cafile=str(trust))
    async with aiohttp.ClientSession() as http:
        client = StaffClient(http, _base_url(data_dir), ctx)
        await client.sign_in(org, username, password)
        token = client._token
    assert token
    return token


def _chronology_ids(base_url: str, token: str, trust: Path) -> dict[str, str]:
    """The ids of Amara's first concern and action, as her chronology shows them."""
    import json
    import ssl
    import urllib.request

    from transfer.demo.scenario import upn

    request = urllib.request.Request(
        f"{base_url}/api/v1/pupils/{upn(101)}/chronology",
        headers={"Authorization": f"Bearer {token}"},
    )
    ctx = ssl.create_default_context(cafile=str(trust))
    with urllib.request.urlopen(request, context=ctx, timeout=30) as resp:
        items = json.loads(resp.read())["items"]
    first = {
        kind: next(e["id"] for e in items if e["kind"] == kind) for kind in ("concern", "action")
    }
    return {"CONCERN": first["concern"], "ACTION": first["action"]}


def _environment(world: World) -> dict[str, str]:
    """What the pages call ``$D``, ``$API``, ``$H``... (the same for every page)."""
    demo = world.demo
    primary, secondary = demo / "nodes" / "primary", demo / "nodes" / "secondary"
    base = _base_url(primary)
    token = world.token
    evidence = demo / "evidence"
    return {
        **world.base_env,
        "D": str(primary),  # a node's data directory: the demo's primary school
        "D2": str(secondary),  # the other school's node
        "EVIDENCE": str(evidence),
        "API": f"{base}/api/v1",
        "H": f"Authorization: Bearer {token}",
        "API2": f"{_base_url(secondary)}/api/v1",
        "H2": f"Authorization: Bearer {world.token2}",
        "CURL_CA_BUNDLE": str(demo / "trust.pem"),
        # docs/verify-with-standard-tools.md: the agency's files.
        "PACKAGE": str(next(evidence.glob("leaver-file-*.age"))),
        "KEY": str(evidence / "riverside.key"),
        "SENDER_PUB": str(evidence / "hillside.pub"),
        **world.ids,
    }


#: Places a page names that exist only on a real server, and where they are here.
PLACES = {
    "/srv/handover": "srv-handover",
    "/media/offline/authority": "offline-authority",
}
#: Fingerprints a page shows being read aloud on the telephone, and where the person at the
#: other end reads them from (the files in the page's own run).
READ_ALOUD = {
    "SB4Q-AM8D-WTB8-73ST": '"$(docs_authority_fingerprint authority.pub)"',
    "4SAM-G0D0-K1RT-XGWJ": '"$(docs_entry_fingerprint lado.json)"',
    # docs/directory.md: the key of Riverside's that was on the stolen laptop.
    "3F0A9C1D2E3B4A5F": '"$(docs_key_id riverside.json)"',
}


def _entry_file(org_id: str, name: str, kind: OrgKind) -> str:
    from keys.keyset import KeySet
    from transfer.directory.document import entry_from_keyset

    keyset = KeySet.generate(org_id)
    entry = entry_from_keyset(
        keyset,
        name=name,
        kind=kind,
        endpoint=None,
        email=f"duty@{org_id}.example",
    )
    return entry.model_dump_json()


def _riverside(rotated: bool) -> str:
    """Riverside Academy's entry file, and the one it sends after rotating its keys."""
    from transfer.directory.document import entry_from_keyset

    if "riverside" not in _KEYSETS:
        _KEYSETS["riverside"] = KeySet.generate("100002")
    keyset = _KEYSETS["riverside"]
    if rotated:
        keyset = keyset.rotate()
    entry = entry_from_keyset(keyset, name="Riverside Academy", kind="school", urn="100002")
    return entry.model_dump_json()


_KEYSETS: dict[str, KeySet] = {}

#: Files a page's reader holds already (sent by someone else, or kept as evidence).
GIVEN: dict[str, Callable[[World], bytes]] = {
    "lado.json": lambda w: _entry_file("lado-testshire", "Testshire LADO", "lado").encode(),
    "form.json": lambda w: _json(scenario.mash_form()).encode(),
    "riverside.json": lambda w: _riverside(rotated=False).encode(),
    "riverside-new.json": lambda w: _riverside(rotated=True).encode(),
    # docs/receipts.md: the accepted receipt the sender keeps, and the receiver's key.
    "receipt-accepted.json": lambda w: (w.demo / "evidence" / "receipt-accepted.json").read_bytes(),
    "receipt-accepted.json.minisig": lambda w: (
        w.demo / "evidence" / "receipt-accepted.json.minisig"
    ).read_bytes(),
    "receiver.pub": lambda w: (w.demo / "evidence" / "riverside.pub").read_bytes(),
}


def _json(value: object) -> str:
    import json

    return json.dumps(value, indent=2)


_HELPERS = r"""
docs_authority_fingerprint() { python3 "$DOCS_ROOT/tests/docs/fingerprint.py" authority "$1"; }
docs_entry_fingerprint() { python3 "$DOCS_ROOT/tests/docs/fingerprint.py" entry "$1"; }
docs_key_id() { python3 "$DOCS_ROOT/tests/docs/fingerprint.py" key-id "$1"; }
"""
_CURL_SHIM = r"""
curl() {
  local code
  code=$(command curl --silent --show-error --output "$DOCS_BODY" --write-out '%{http_code}' "$@")
  cat "$DOCS_BODY"
  echo
  echo "$DOCS_AT $code" >> "$DOCS_STATUS"
}
"""


#: The HTTP status each command with a curl in it is to answer (None: any 2xx), by command.
Expected = dict[str, int | None]


def _script(page_blocks: list[Block], places: dict[str, str]) -> tuple[str, Expected]:
    """One bash script running the page's blocks in order, and what each curl is to answer."""
    parts = ["set -euo pipefail", _HELPERS, _CURL_SHIM]
    expected: Expected = {}
    for block in page_blocks:
        parts.append(f'cd "$DOCS_WORK"\necho "::: {block.where}"')
        for n, command in enumerate(commands(block.text), start=1):
            text = command.text
            for where, here in places.items():
                text = text.replace(where, here)
            for heard, source in READ_ALOUD.items():
                text = text.replace(heard, source)
            at = f"{block.where}#{n}"
            parts.append(f"DOCS_AT={at}")
            if _curls(command):
                expected[at] = command.expected_status
            if command.expected_to_fail:
                parts.append(
                    f"if\n{text}\nthen echo 'the page says this fails: it did not' >&2; exit 97; fi"
                )
            else:
                parts.append(text)
    return "\n".join(parts) + "\n", expected


def _curls(command: Command) -> int:
    return len(re.findall(r"(?:^|[\s;|&(`$])curl\s", command.text))


def _run_page(world: World, page: Path) -> subprocess.CompletedProcess[str]:
    runnable = [b for b in blocks(page) if _runnable(b) and b.text != _demo_block().text]
    work = _scratch(world.scratch / page.stem, world.demo)
    places = {k: str(work / v) for k, v in PLACES.items()}
    text = page.read_text(encoding="utf-8")
    for name, make in GIVEN.items():
        if name in text and not (work / name).exists():
            (work / name).write_bytes(make(world))
    script, expected = _script(runnable, places)
    env = {
        **_environment(world),
        "DOCS_WORK": str(work),
        "DOCS_ROOT": str(ROOT),
        "DOCS_BODY": str(work / ".docs-body"),
        "DOCS_STATUS": str(work / ".docs-status"),
    }
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    last = re.findall(r"^::: (\S+)$", done.stdout, re.M)
    where = last[-1] if last else str(page.relative_to(ROOT))
    assert done.returncode == 0, (
        f"a command in {where} failed (exit {done.returncode}):\n"
        f"{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}"
    )
    status_file = work / ".docs-status"
    got = status_file.read_text().split("\n") if status_file.exists() else []
    answered = [x.split(" ") for x in got if x]
    assert {at for at, _ in answered} == set(expected), (answered, expected)
    for at, code in answered:
        want = expected[at]
        ok = int(code) == want if want is not None else 200 <= int(code) < 300
        assert ok, f"{at}: a curl answered {code}, the page says {want or '2xx'}\n{done.stdout}"
    return done


# ----------------------------------------------------------------- the tests


def test_every_command_block_runs_or_says_why_not() -> None:
    problems = []
    for block in _all_blocks():
        first = next((x.strip() for x in block.text.splitlines() if x.strip()), "")
        if block.lang in SHELL | OPERATOR:
            continue
        if block.not_run is not None:
            problems.append(f"{block.where}: only shell or operator blocks are marked not run")
        elif block.lang in ("", "text") and _LINE_COMMAND.match(first) and block.lang == "":
            problems.append(
                f"{block.where}: a block of commands: fence it ```sh (it is run) or ```text "
                "(a synopsis, checked against the parser)"
            )
    for block in _all_blocks():
        if block.lang in OPERATOR and block.not_run is None:
            problems.append(f"{block.where}: an operator's file: say why it is not run")
    assert problems == []


RUN_PAGES = sorted(
    {b.page for b in _all_blocks() if _runnable(b)}, key=lambda p: str(p.relative_to(ROOT))
)


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_commands_of_each_page_run(world: World, page: Path) -> None:
    _run_page(world, page)


def test_the_demo_block_built_the_world(world: World) -> None:
    assert "is complete and proven" in world.demo_output
    # The story alone on the terminal: what seeding logged (alerts, with record ids) is in
    # the run's log file, as the last lines say.
    assert " INFO " not in world.demo_output and " WARNING " not in world.demo_output
    assert "handover.alerts" in (world.demo / "demo.log").read_text()
    assert f"{world.demo.resolve()}/demo.log" in world.demo_output
    assert (world.demo / "evidence" / "riverside.key").is_file()
    # The authority gave the demo's schools their towns (staff find a school by its town).
    listed = json.loads((world.demo / "authority" / "directory.json").read_bytes())
    towns = {e["org_id"]: e.get("town") for e in listed["organisations"] if e["kind"] == "school"}
    assert towns == scenario.TOWNS == {"123456": "Bristol", "654321": "Keynsham"}


# ------------------------------------------------- command lines against the parser

_INLINE = re.compile(r"`((?:\.venv/bin/)?handover [^`]+)`")


def _command_lines() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for page in pages():
        for block in blocks(page):
            for command in commands(block.text):
                for line in re.split(r"\s\|\s", command.text):
                    words = line.strip()
                    words = re.sub(r"^[A-Z_]+=('[^']*'|\S+)\s+", "", words)
                    if re.match(r"(\.venv/bin/)?handover\s", words):
                        found.append((block.where, words))
        text = page.read_text(encoding="utf-8")
        for m in _INLINE.finditer(text):
            line = text[: m.start()].count("\n") + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", m.group(1)))
    return found


def _parser_for(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    from transfer.cli import build_parser

    parser = build_parser()
    path: list[str] = []
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or not words or words[0] not in subs[0].choices:
            return parser, path
        path.append(words[0])
        parser = subs[0].choices[words.pop(0)]


def test_every_handover_command_shown_names_real_options() -> None:
    problems = []
    for where, line in _command_lines():
        words = line.replace("\\\n", " ").split()
        words = words[1:]  # "handover"
        top = {"-v", "--verbose", "--version", "-h", "--help"}
        while words and words[0] in top:
            words.pop(0)  # the global options, before any command
        if not words or words[0].startswith("[") or words[0] in ("...", "…"):
            continue
        first = words[0].split("|")
        for choice in first:
            parser, path = _parser_for([choice, *words[1:]])
            if not path:
                problems.append(f"{where}: no command 'handover {choice}'")
                continue
            known = {o for a in parser._actions for o in a.option_strings}
            for word in words:
                for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])\b", word):
                    if opt not in known and opt not in ("-h", "--help"):
                        problems.append(f"{where}: 'handover {' '.join(path)}' has no {opt}")
    assert problems == [], "\n".join(problems)
