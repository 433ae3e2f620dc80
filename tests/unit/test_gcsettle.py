"""The kit's garbage-collector settling: what exists at startup is frozen out of every later
collection, and the thresholds are what the module says."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from events.kit import gcsettle


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_settle_freezes_what_exists_and_sets_the_young_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHOP_GC_FREEZE", raising=False)
    monkeypatch.delenv("SHOP_GC_YOUNG", raising=False)
    gc.unfreeze()
    startup = [object() for _ in range(10)], {"built": "at startup"}
    gcsettle.settle()
    assert gc.get_freeze_count() > 1000  # the modules, classes and functions imported so far
    # nothing tracked before settle() is left in the generations a collection walks
    assert not any(o is startup for o in gc.get_objects())
    assert gc.get_threshold()[0] == gcsettle.YOUNG_THRESHOLD
    after = [object()]  # a list is tracked (a dict of strings would not be)
    assert any(o is after for o in gc.get_objects())


@pytest.mark.usefixtures("restored_gc")
def test_settle_can_be_told_not_to_freeze(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_GC_FREEZE", "0")
    monkeypatch.setenv("SHOP_GC_YOUNG", "5000")
    gc.unfreeze()
    gcsettle.settle()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] == 5000
