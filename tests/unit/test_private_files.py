"""``transfer.private_files``: 0600/0700 whatever the umask; a caller's own folders untouched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from transfer.private_files import create_private, private_dir, tighten, write_private


@pytest.fixture(autouse=True)
def _usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return path.lstat().st_mode & 0o777


def test_created_files_and_folders_are_private(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # a caller's own folder, say
    deep = private_dir(tmp_path / "a" / "b" / "c")
    assert [_mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", deep)] == [0o700] * 3
    assert _mode(tmp_path) == 0o755  # an existing folder is not changed
    write_private(deep / "f", b"x")
    assert _mode(deep / "f") == 0o600 and (deep / "f").read_bytes() == b"x"
    loose = deep / "g"
    loose.write_bytes(b"")
    loose.chmod(0o644)
    os.close(create_private(loose, os.O_WRONLY))
    assert _mode(loose) == 0o600  # an existing file opened this way is closed too
    write_private(loose, b"y")
    assert _mode(loose) == 0o600 and sorted(p.name for p in deep.iterdir()) == ["f", "g"]


def test_tighten_closes_everything_but_follows_no_link(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "d").write_bytes(b"")
    (root / "x.db").write_bytes(b"")
    outside = tmp_path / "outside"
    outside.write_bytes(b"")
    outside.chmod(0o644)
    (root / "link").symlink_to(outside)
    root.chmod(0o755)
    assert tighten(root) == 4
    assert [_mode(p) for p in (root, root / "docs", root / "docs" / "d", root / "x.db")] == [
        0o700,
        0o700,
        0o600,
        0o600,
    ]
    assert _mode(outside) == 0o644
    assert tighten(root) == 0
    assert tighten(tmp_path / "missing") == 0
