"""``handover demo``: two schools' nodes on loopback hand over a leaver's file, and a MASH
referral goes out through the pickup portal, with every receipt verified.

Starts real ``handover serve`` processes (a primary and a secondary school),
seeds a realistic chronology, marks a Year 6 pupil as leaving, sends the file,
opens and accepts it at the secondary school, then sends a MASH referral via
the pickup portal (acknowledged over real HTTP) and writes an offline bundle.
It prints a timeline and exits 0 only if every step happened and checked.
Each node's data directory is ``DIR/nodes/<name>/``; the evidence (packages,
keys, receipts) is in ``DIR/evidence/``. Every name and event is fictional.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import threading
from pathlib import Path

from transfer.commands._common import Subparsers
from transfer.errors import InputError


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "demo",
        help="run two school nodes on loopback and hand over a leaver's file end to end",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("demo"),
        metavar="DIR",
        help="where the nodes, logs and evidence go (default: ./demo)",
    )
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo in DIR first")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the nodes running afterwards (Ctrl-C stops them)",
    )
    p.set_defaults(handler=run)
    c = sub.add_parser(
        "demo-code",
        help="print a demo person's current authenticator code (from DIR/web.json)",
        description="Print the 6-digit code a demo person's authenticator app would show now, "
        "from the TOTP secrets the demo wrote to DIR/web.json. For the demo only.",
    )
    c.add_argument("username", help="a demo username, e.g. s.patel (see DIR/web.json)")
    c.add_argument(
        "--workdir",
        type=Path,
        default=Path("demo"),
        metavar="DIR",
        help="the demo's directory (default: ./demo)",
    )
    c.add_argument(
        "--node", metavar="NAME", help="primary or secondary (when a username is at both)"
    )
    c.set_defaults(handler=code)


def _prepare(workdir: Path, fresh: bool) -> Path:
    workdir = workdir.resolve()
    if fresh and workdir.exists():
        if not (workdir / "nodes").is_dir() and any(workdir.iterdir()):
            raise InputError(f"{workdir} is not an earlier demo; not deleting it")
        shutil.rmtree(workdir)
    if workdir.exists() and any(workdir.iterdir()):
        raise InputError(f"{workdir} already exists: add --fresh to rebuild the demo there")
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return workdir


def _log_to_file(path: Path) -> None:
    """This process's log to ``path``; only errors still on the terminal.

    Seeding the story logs what a node logs (alerts raised for the seeded concerns, one of
    them an overdue action, with record ids): right for an operator's log, noise in the
    narrated timeline. The nodes' own logs are files in DIR/logs/ already.
    """
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setLevel(logging.ERROR)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(to_file)


def run(args: argparse.Namespace) -> int:
    from transfer.demo import scenario
    from transfer.demo.world import run_cli

    workdir = _prepare(args.workdir, args.fresh)
    _log_to_file(workdir / "demo.log")
    evidence = workdir / "evidence"
    evidence.mkdir(mode=0o700)  # it holds two secret keys (riverside.key, mash.key)
    print(f"Setting up two school nodes, a directory authority and keys in {workdir}")
    world = scenario.build(workdir)
    timeline = scenario.Timeline()
    for node in world.nodes.values():
        timeline.add(node.name, f"{node.spec.title}: data in {node.data_dir}")
    timeline.add(
        "authority",
        "directory of both schools and the MASH signed; each node "
        "pinned the authority's key and imported it",
    )
    seeded = asyncio.run(scenario.seed(world))
    timeline.add("primary", "staff, 6 Year 6 pupils (from a CTF) and a chronology recorded")
    scenario.write_web_json(world, seeded, workdir / "web.json")
    timeline.add("web", f"demo people to sign in as, with their authenticators: {workdir}/web.json")
    try:
        world.start()
        timeline.add("nodes", ", ".join(f"{n.name} at {n.base_url}" for n in world.nodes.values()))
        package_id = asyncio.run(scenario.story(world, seeded, timeline, evidence))
        scenario.export_keys(world, evidence)
        for node in world.nodes.values():
            run_cli(["audit", "checkpoint", "--data-dir", str(node.data_dir)])
            out = run_cli(["audit", "verify", "--data-dir", str(node.data_dir)])
            lines = out.strip().splitlines()
            timeline.add(node.name, next((x for x in lines if "intact" in x), lines[0]))
            for extra in (x for x in lines if "witnessed" in x):
                timeline.add(node.name, extra)
        primary_fp = scenario.fingerprint(world, "primary", scenario.PRIMARY[0])
        secondary_fp = scenario.fingerprint(world, "secondary", scenario.SECONDARY[0])
        package = evidence / f"leaver-file-{scenario.upn(101)}.age"
        print(f"\nThe handover of package {package_id} is complete and proven.")
        print("Key fingerprints (what each school reads to the other over the telephone):")
        print(f"  {scenario.PRIMARY[2]} ({scenario.PRIMARY[0]}): {primary_fp}")
        print(f"  {scenario.SECONDARY[2]} ({scenario.SECONDARY[0]}): {secondary_fp}")
        print(f"Evidence in {evidence}: check it with Handover, as the receiving school:")
        print(
            f"  .venv/bin/handover package verify {package} -i {evidence}/riverside.key "
            f"--org {scenario.SECONDARY[0]} --fingerprint {secondary_fp} "
            f"--sender-key {evidence}/hillside.pub"
        )
        print("or with the standard tools:")
        print(f"  age -d -i {evidence}/riverside.key {package} | tar -t")
        print(f"  minisign -Vm {evidence}/receipt-accepted.json -p {evidence}/riverside.pub")
        print(f"  {evidence}/offline-bundle/README.txt explains the offline bundle")
        print(f"Logs: this run's in {workdir}/demo.log, the nodes' in {workdir}/logs/.")
        print("Point any command at a node afterwards, e.g.")
        print(f"  .venv/bin/handover audit show --data-dir {world.nodes['primary'].data_dir}")
        if args.keep_running:
            _wait_until_interrupted(world)
    finally:
        world.stop()
    return 0


def code(args: argparse.Namespace) -> int:
    import json

    import pyotp

    path = args.workdir / "web.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(
            f"{path} is not there: run 'handover demo --workdir {args.workdir}' first"
        ) from None
    found = [
        account
        for node in data.get("nodes", [])
        if args.node in (None, node.get("name"))
        for account in node.get("accounts", [])
        if account.get("username") == args.username
    ]
    if not found:
        raise InputError(f"no demo person {args.username!r} in {path}")
    if len(found) > 1:
        raise InputError(f"{args.username!r} is at more than one node: add --node NAME")
    print(pyotp.TOTP(found[0]["totp_secret"]).now())
    return 0


def _wait_until_interrupted(world: object) -> None:
    from transfer.demo.world import World

    assert isinstance(world, World)
    print("\nThe nodes keep running (Ctrl-C stops them). Open the web app in a browser:")
    for node in world.nodes.values():
        print(f"  {node.name}: {node.base_url}/  (API: {node.base_url}/api/v1/)")
    workdir = world.root
    print(
        f"  the certificates are self-signed: accept the browser's warning, or trust "
        f"{world.trust_file}"
    )
    print(f"  people, passwords and roles: {workdir}/web.json; for example Sam Patel (DSL):")
    print(
        f"    username s.patel, password: jq -r '.nodes[0].accounts[0].password' {workdir}/web.json"
    )
    print(f"    code: .venv/bin/handover demo-code --workdir {workdir} s.patel")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
