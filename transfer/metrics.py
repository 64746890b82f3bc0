"""A serving node's own counters, for the operator's monitoring (Prometheus text format).

One :class:`Metrics` per ``serve`` process (each process counts its own work; a monitoring
system adds up the processes that share a database). ``handover serve`` exposes it on
``http://server.metrics_host:server.metrics_port/metrics`` when ``server.metrics_port`` is
set (see ``docs/operations.md``). The counters say how the node's work goes, never what it
is about: no names, no identifiers of pupils, staff or packages, only sweep names.

Pure: no I/O; the listener lives in :mod:`transfer.serving`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["CONTENT_TYPE", "SWEEPS_RUNNING", "SWEEP_RUNS", "SWEEP_SKIPPED_BUSY", "Metrics"]

#: The Prometheus text exposition format, version 0.0.4.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

SWEEP_RUNS: Final = "handover_sweep_runs_total"
SWEEP_SKIPPED_BUSY: Final = "handover_sweep_skipped_busy_total"
SWEEPS_RUNNING: Final = "handover_sweep_running"

Kind = Literal["counter", "gauge"]
_Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Family:
    kind: Kind
    help: str


_KNOWN: Final[dict[str, _Family]] = {
    SWEEP_RUNS: _Family("counter", "Scheduled sweeps started, by sweep."),
    SWEEP_SKIPPED_BUSY: _Family(
        "counter",
        "Sweeps not started because the same sweep was still running when it was due "
        "(the running one carries on; the next due one picks up what is left), by sweep.",
    ),
    SWEEPS_RUNNING: _Family("gauge", "Sweeps running now (0 or 1 each), by sweep."),
}


def _labels(labels: Mapping[str, str] | None) -> _Labels:
    return tuple(sorted((labels or {}).items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Counters and gauges of one process, each with optional labels."""

    def __init__(self) -> None:
        self._values: dict[str, dict[_Labels, float]] = {name: {} for name in _KNOWN}

    def inc(self, name: str, labels: Mapping[str, str] | None = None, by: float = 1.0) -> None:
        """Add ``by`` to a counter (or a gauge)."""
        if by < 0 and _KNOWN[name].kind == "counter":
            raise ValueError(f"{name} is a counter: it only goes up")
        series = self._values[name]
        key = _labels(labels)
        series[key] = series.get(key, 0.0) + float(by)

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set a gauge."""
        if _KNOWN[name].kind != "gauge":
            raise ValueError(f"{name} is a counter: it only goes up")
        self._values[name][_labels(labels)] = float(value)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """The current value of one series (0 if never counted)."""
        return self._values[name].get(_labels(labels), 0.0)

    def render(self) -> str:
        """Every family in the Prometheus text format (``CONTENT_TYPE``)."""
        lines: list[str] = []
        for name, family in _KNOWN.items():
            lines.append(f"# HELP {name} {family.help}")
            lines.append(f"# TYPE {name} {family.kind}")
            for key, value in sorted(self._values[name].items()):
                shown = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
                number = int(value) if value.is_integer() else value
                lines.append(f"{name}{{{shown}}} {number}" if shown else f"{name} {number}")
        return "\n".join(lines) + "\n"
