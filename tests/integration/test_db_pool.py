"""The kit's connection pool against the real database: no reset query per release, yet no session
state and no open transaction ever reaches the next borrower."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from events.kit import db, inbox

pytestmark = pytest.mark.integration

ADVISORY_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
)


@pytest.fixture
async def pool(stack: Any) -> AsyncIterator[asyncpg.Pool]:
    url = stack.database_url("kit_pool")
    await db.ensure_database(url)
    pool = await db.create_pool(url, min_size=1, max_size=1)  # one connection: always the same
    yield pool
    await pool.close()


async def test_session_state_taken_under_session_state_is_gone_when_the_connection_returns(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as pooled, db.session_state(pooled) as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        await conn.execute("SELECT pg_advisory_lock(4242)")
        await conn.add_listener("kit_pool_test", lambda *_: None)
        assert await conn.fetchval(ADVISORY_LOCKS) == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == backend
        assert await conn.fetchval(ADVISORY_LOCKS) == 0
        assert await conn.fetch("SELECT pg_listening_channels()") == []


async def test_a_transaction_left_open_is_rolled_back_before_the_next_borrower(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute("CREATE TABLE IF NOT EXISTS kit_pool_rows (n int)")
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("INSERT INTO kit_pool_rows VALUES (1)")
        await conn.execute("SELECT pg_advisory_xact_lock(4343)")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM kit_pool_rows") == 0
        assert await conn.fetchval(ADVISORY_LOCKS) == 0
        assert not conn.is_in_transaction()


class _Unresettable:
    """A connection whose reset fails, as one busy with a dead operation does."""

    terminated = False

    async def reset(self) -> None:
        raise asyncpg.InternalClientError(
            "cannot switch to state 15; another operation is in progress"
        )

    def terminate(self) -> None:
        self.terminated = True


async def test_a_session_that_cannot_be_reset_is_closed_and_what_ended_it_propagates() -> None:
    conn = _Unresettable()
    with pytest.raises(asyncpg.InterfaceError, match="released"):
        async with db.session_state(conn):  # type: ignore[arg-type]
            raise asyncpg.InterfaceError("connection has been released back to the pool")
    assert conn.terminated
    quiet = _Unresettable()
    async with db.session_state(quiet):  # type: ignore[arg-type]
        pass
    assert quiet.terminated


async def test_a_connection_found_broken_is_closed_not_lent_again(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
    with pytest.raises(asyncpg.InternalClientError):
        async with pool.acquire() as pooled, db.discard_if_broken(pooled):
            raise asyncpg.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            )
    # the pool's only connection was closed: the next borrower gets a new, working one
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") != pid
    assert inbox.is_infrastructure_error(asyncpg.InternalClientError("broken"))


async def test_other_errors_leave_the_connection_to_the_pool(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
    with pytest.raises(ValueError, match="not the connection's fault"):
        async with pool.acquire() as pooled, db.discard_if_broken(pooled):
            raise ValueError("not the connection's fault")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == pid
