"""The local stack's PostgreSQL, as `make run`, the bench and the tests start it."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from deploy.local.postgres import LocalPostgres
from tests.ports import free_port

pytestmark = pytest.mark.integration


async def test_checkpoints_come_by_time_not_every_half_gigabyte_of_wal(tmp_path: Path) -> None:
    """With PostgreSQL's default max_wal_size (1GB) the platform under load forced a checkpoint
    every 90 s, whose writes and fsyncs stalled commits for seconds."""
    pg = LocalPostgres(data_dir=tmp_path / "postgres", port=free_port())
    pg.start()
    try:
        conn = await asyncpg.connect(pg.admin_url)
        try:
            rows = await conn.fetch(
                "SELECT name, setting || coalesce(unit, '') AS value FROM pg_settings "
                "WHERE name IN ('max_wal_size', 'checkpoint_timeout')"
            )
            settings = {r["name"]: r["value"] for r in rows}
        finally:
            await conn.close()
    finally:
        pg.stop()
    assert settings == {"max_wal_size": "4096MB", "checkpoint_timeout": "900s"}
