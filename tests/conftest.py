"""Fixtures every test tier shares. Tests that use `stack` (or live in tests/integration) are
marked `integration`; `pytest -m "not integration"` runs the rest without starting anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack, start_stack

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        in_dir = INTEGRATION_DIR in item.path.parents
        if in_dir or "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Kafka with the declared topics and a PostgreSQL server, for the whole test session."""
    with start_stack() as s:
        yield s
