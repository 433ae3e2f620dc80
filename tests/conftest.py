"""Fixtures every test tier shares. Tests that use `stack` (or live in tests/integration) are
marked `integration`; `pytest -m "not integration"` runs the rest without starting anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack, start_stack

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "run_last: runs after every other test (the end-of-session card number scan)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        in_dir = INTEGRATION_DIR in item.path.parents
        if in_dir or "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
    # A stable sort: the run_last tests move behind all the others, each tier keeps its order.
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Kafka with the declared topics and a PostgreSQL server, for the whole test session."""
    with start_stack() as s:
        yield s
