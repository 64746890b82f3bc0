"""The API against its own OpenAPI document: Schemathesis drives a real node.

A node is built and started as an operator does (``handover serve``, TLS, a directory),
with a member of staff who is both DSL and administrator, signed in (TOTP enrolled), so
that every operation is reached past authentication. Schemathesis reads the node's
``/api/v1/openapi.json`` and sends, for every operation, the documented examples, the
boundary cases of each schema (its coverage phase) and generated requests, valid and
invalid, with a fixed seed and Hypothesis's derandomised mode, so a run is the same run
each time (``docs/adr/0008-schemathesis-contract-test.md``).

Passing means: no answer is a 5xx, and every answer (status, content type, headers,
body) is one the document describes. Three runs, each as its own member of staff, because
some operations end the session they run with, as they should:

- everything else, as a DSL who is also administrator: this session must hold to the end,
  so that every operation is reached past authentication;
- ``PUT /api/v1/me/password``, as a teacher (wrong current passwords lock the account);
- the staff administration operations, as an administrator (Schemathesis finds the
  administrator's own id in the staff list, and a change of one's own roles, or a
  deactivation, ends one's sessions).

``DELETE /api/v1/session`` is left out (it would end the session the run uses;
``tests/integration/api/test_session_api.py`` covers it).

So that requests reach the domain rather than stop at "no such pupil", the node holds a
pupil and a concern about them, and their ids are given to Schemathesis for every
``pupil_id`` and ``concern_id`` (``schemathesis.toml``): a body that breaks the schema
for a real pupil must then be refused, not stored (``negative_data_rejection``; on the
code before strict input, ``PATCH /api/v1/pupils/{pupil_id}`` took ``"leaving_date": 0``).

The run's figures (operations, test cases, seconds) are printed with ``-s``; its output
and JUnit reports are written to the test's temporary directory (named in the failure).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from transfer.demo.api import StaffClient
from transfer.demo.world import NodeSpec, World, build_world, run_cli

pytestmark = pytest.mark.contract

SCHOOL = ("123456", "8012000", "Hillside Primary School")
USER = "fuzz.dsl"
TEACHER = "fuzz.teacher"
ADMIN = "fuzz.admin"
#: Operations that can end the session they run with (see above), run as someone else.
OWN_PASSWORD = ("change_password",)
STAFF_ADMIN = (
    "create_staff",
    "update_staff",
    "deactivate_staff",
    "unlock_staff",
    "reset_password",
    "reset_totp",
)
#: Per operation and phase; with the coverage phase's boundary cases, a few thousand
#: requests in all: about a minute or two on two cores.
MAX_EXAMPLES = 30
SEED = 20261206
#: What must hold for every answer.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, dict[str, str]]]:
    """A node serving; the bearer tokens of a signed-in DSL who is also administrator, a
    teacher and an administrator, by username."""
    root = tmp_path_factory.mktemp("contract") / "world"
    world = build_world(root, [NodeSpec("school", "Hillside node", schools=[SCHOOL])])
    node = world.nodes["school"]
    password = secrets.token_urlsafe(15)
    people = {
        USER: ["--role", "dsl", "--role", "administrator"],
        TEACHER: ["--role", "staff"],
        ADMIN: ["--role", "administrator"],
    }
    os.environ["HANDOVER_PASSWORD"] = password
    try:
        for user, roles in people.items():
            run_cli(
                [
                    "account",
                    "create",
                    "--data-dir",
                    str(node.data_dir),
                    "--org",
                    SCHOOL[0],
                    "--user",
                    user,
                    "--name",
                    user.title(),
                    *roles,
                ]
            )
    finally:
        del os.environ["HANDOVER_PASSWORD"]
    world.start()
    try:
        tokens = {user: asyncio.run(_sign_in(world, user, password)) for user in people}
        known = asyncio.run(_pupil_and_concern(world, tokens[USER]))
        config = root / "schemathesis.toml"
        config.write_text(
            "[parameters]\n" + "".join(f'{k} = "{v}"\n' for k, v in known.items()),
            encoding="utf-8",
        )
        yield world, {**tokens, "config": str(config)}
    finally:
        world.stop()


async def _sign_in(world: World, user: str, password: str) -> str:
    node = world.nodes["school"]
    tls = ssl.create_default_context(cafile=str(world.trust_file))
    async with aiohttp.ClientSession() as http:
        client = StaffClient(http, node.base_url, tls)
        await client.sign_in(SCHOOL[0], user, password)
        assert client._token is not None
        return client._token


async def _pupil_and_concern(world: World, token: str) -> dict[str, str]:
    node = world.nodes["school"]
    tls = ssl.create_default_context(cafile=str(world.trust_file))
    async with aiohttp.ClientSession() as http:
        dsl = StaffClient(http, node.base_url, tls)
        dsl._token = token
        pupil = await dsl.call(
            "POST",
            "/pupils",
            {
                "upn": "H801200001001",
                "surname": "Okafor",
                "forename": "Amara",
                "dob": "2015-03-14",
                "sex": "F",
                "year_group": "6",
            },
        )
        concern = await dsl.call(
            "POST",
            "/concerns",
            {
                "pupil_ids": [pupil["id"]],
                "category": "child_protection",
                "happened_at": "2026-01-12T09:10:00+00:00",
                "account": "Arrived with a bruise.",
            },
        )
    return {"pupil_id": str(pupil["id"]), "concern_id": str(concern["id"])}


def _only(flag: str, operation_ids: tuple[str, ...]) -> list[str]:
    return [arg for op in operation_ids for arg in (flag, op)]


def test_every_answer_is_one_the_openapi_document_describes(
    node: tuple[World, dict[str, str]], tmp_path: Path
) -> None:
    world, tokens = node
    everything_else = ("sign_out", *OWN_PASSWORD, *STAFF_ADMIN)
    started = time.monotonic()
    runs = [
        _schemathesis(
            world,
            tokens,
            USER,
            tmp_path,
            "everything",
            _only("--exclude-operation-id", everything_else),
        ),
        _schemathesis(
            world,
            tokens,
            TEACHER,
            tmp_path,
            "own-password",
            _only("--include-operation-id", OWN_PASSWORD),
        ),
        _schemathesis(
            world,
            tokens,
            ADMIN,
            tmp_path,
            "staff-administration",
            _only("--include-operation-id", STAFF_ADMIN),
            session_holds=False,
        ),
    ]
    elapsed = time.monotonic() - started
    operations = sum(r.get("operations", 0) for r in runs)
    cases = sum(r.get("cases", 0) for r in runs)
    print(
        f"\nSchemathesis: {operations} operations, {cases} test cases, {elapsed:.0f} s "
        f"(seed {SEED}, {MAX_EXAMPLES} examples per operation and phase)"
    )
    # Every operation the document describes ran, but the one left out (sign_out).
    assert operations == runs[0]["documented"] - 1 and cases > 3000


def _schemathesis(
    world: World,
    tokens: dict[str, str],
    user: str,
    report: Path,
    name: str,
    only: list[str],
    *,
    session_holds: bool = True,
) -> dict[str, int]:
    """One Schemathesis run; its figures. Fails the test with its output if it fails."""
    base = world.nodes["school"].base_url
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        tokens["config"],
        "run",
        f"{base}/api/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {tokens[user]}",
        "--tls-verify",
        str(world.trust_file),
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        # One worker: Hypothesis parses lambdas' source with ``ast``, which CPython 3.11
        # does not make thread-safe ("AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--report",
        "junit",
        "--report-junit-path",
        str(report / f"{name}.xml"),
        "--no-color",
        *only,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=report,
        env={**os.environ, "NO_COLOR": "1"},
    )
    output = done.stdout + done.stderr
    (report / f"{name}.txt").write_text(output, encoding="utf-8")
    output += f"\n(output and JUnit report in {report})"
    assert done.returncode == 0, output[-20_000:]
    if session_holds:
        # Every operation was reached past authentication: the session held to the end.
        assert "Authentication failed" not in output, output[-20_000:]
    return _figures(output)


def _figures(output: str) -> dict[str, int]:
    out: dict[str, int] = {}
    found = re.search(r"API Operations:\s*\n\s*Selected:\s*(\d+)/(\d+)", output)
    if found:
        out["operations"] = int(found.group(1))
        out["documented"] = int(found.group(2))
    found = re.search(r"Test cases:\s*\n\s*(\d+) generated", output)
    if found:
        out["cases"] = int(found.group(1))
    return out
