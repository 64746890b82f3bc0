"""The long campaign runs only when asked for (``-m faults_long``, ``make faults``).

Its tests are deselected otherwise (not skipped): ``make test`` runs the short seeded runs.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "faults_long" in (config.option.markexpr or ""):
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if item.get_closest_marker("faults_long") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
