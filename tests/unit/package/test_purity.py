"""The pure parts of packaging import neither aiohttp nor SQLAlchemy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_pure_package_modules_do_not_import_io_frameworks() -> None:
    code = (
        "import sys\n"
        "import schemas.manifest, transfer.package.tar, transfer.package.layout\n"
        "import transfer.package.build, transfer.package.open\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'sqlalchemy'}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
        check=True,
        timeout=60,
    )
    assert res.stdout.strip() == "[]"
