"""``transfer.metrics``: a serving node's counters in the Prometheus text format (issue 16)."""

from __future__ import annotations

import pytest

from transfer.metrics import SWEEP_RUNS, SWEEP_SKIPPED_BUSY, SWEEPS_RUNNING, Metrics


def test_counts_per_label_and_renders_every_family() -> None:
    m = Metrics()
    m.inc(SWEEP_SKIPPED_BUSY, {"sweep": "deliver_due"})
    m.inc(SWEEP_SKIPPED_BUSY, {"sweep": "deliver_due"})
    m.inc(SWEEP_SKIPPED_BUSY, {"sweep": "pull_receipts"})
    m.set(SWEEPS_RUNNING, 1, {"sweep": "deliver_due"})
    assert m.value(SWEEP_SKIPPED_BUSY, {"sweep": "deliver_due"}) == 2
    assert m.value(SWEEP_RUNS, {"sweep": "deliver_due"}) == 0
    lines = m.render().splitlines()
    assert 'handover_sweep_skipped_busy_total{sweep="deliver_due"} 2' in lines
    assert 'handover_sweep_skipped_busy_total{sweep="pull_receipts"} 1' in lines
    assert 'handover_sweep_running{sweep="deliver_due"} 1' in lines
    assert "# TYPE handover_sweep_running gauge" in lines
    assert "# TYPE handover_sweep_runs_total counter" in lines


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.inc(SWEEP_RUNS, {"sweep": 'a"b\\c\nd'})
    assert 'handover_sweep_runs_total{sweep="a\\"b\\\\c\\nd"} 1' in m.render().splitlines()


def test_a_counter_only_goes_up() -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="only goes up"):
        m.inc(SWEEP_RUNS, by=-1)
    with pytest.raises(ValueError, match="only goes up"):
        m.set(SWEEP_RUNS, 0)
