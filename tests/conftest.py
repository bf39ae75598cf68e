"""Test layers by directory: tests/unit → ``unit``, tests/integration → ``integration``,
tests/cluster → ``cluster``."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path)
        if "/tests/unit/" in path:
            item.add_marker(pytest.mark.unit)
        elif "/tests/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/tests/cluster/" in path:
            item.add_marker(pytest.mark.cluster)
