"""The progress line of ``handover package``: on a terminal only."""

from __future__ import annotations

import io

import pytest

from transfer.commands import package as command


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_shown_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _Terminal()
    monkeypatch.setattr("sys.stderr", err)
    show, done = command._progress("verifying")
    assert show is not None
    show(50 * 1024 * 1024, 100 * 1024 * 1024)
    show(100 * 1024 * 1024, 100 * 1024 * 1024)
    done()
    text = err.getvalue()
    assert "verifying:  50%" in text and "verifying: 100%" in text
    assert text.endswith("\r\x1b[K")


def test_progress_is_silent_when_piped(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    show, done = command._progress("verifying")
    assert show is None
    done()
    assert err.getvalue() == ""
