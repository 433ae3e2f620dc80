"""Wiring only: which handlers consume which topics, and the HTTP routes."""

from __future__ import annotations

from pathlib import Path

from catalog_service.settings import Settings
from events.contracts import REGISTRY
from events.kit.runtime import ServiceRuntime

MIGRATIONS = Path(__file__).with_name("migrations")


def build(settings: Settings) -> ServiceRuntime:
    return ServiceRuntime(settings, registry=REGISTRY, migrations=MIGRATIONS)
