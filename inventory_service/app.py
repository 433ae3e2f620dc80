"""Wiring only: which handlers consume which topics, and the HTTP routes."""

from __future__ import annotations

from pathlib import Path

from events.contracts import REGISTRY
from events.kit.runtime import ServiceRuntime
from inventory_service.settings import Settings

MIGRATIONS = Path(__file__).with_name("migrations")


def build(settings: Settings) -> ServiceRuntime:
    return ServiceRuntime(settings, registry=REGISTRY, migrations=MIGRATIONS)
