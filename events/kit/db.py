"""PostgreSQL plumbing: create the service database, a pool, and plain-SQL migrations."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A plain connection or one borrowed from a pool: handlers and repositories take either.
Conn = asyncpg.Connection | PoolConnectionProxy

KIT_MIGRATIONS = Path(__file__).with_name("migrations")

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name        TEXT PRIMARY KEY,
    checksum    TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT name, checksum FROM schema_migrations"
INSERT_APPLIED = "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)"
MIGRATION_LOCK = 7_340_001


class MigrationError(RuntimeError):
    pass


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def ensure_database(url: str) -> None:
    """Create the database the URL names if it does not exist (needs CREATEDB on the server)."""
    name = database_name(url)
    if not name:
        raise ValueError(f"database URL names no database: {url!r}")
    conn = await asyncpg.connect(_with_database(url, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """What the pool does to a connection given back, after asyncpg has rolled back any
    transaction left open: nothing more. asyncpg's default runs its reset query (unlock every
    advisory lock, close cursors, UNLISTEN, RESET ALL), a round trip per transaction, for
    session state that the services' transactions never take; code that does take it releases
    it through `session_state`."""


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, reset=_no_session_reset
    )
    assert pool is not None
    return pool


# What asyncpg raises on a connection the pool handed out while it was still busy with an operation
# its backend never finished (the backend cut mid-statement, its error read before its EOF:
# MagicStack/asyncpg#784, sqlalchemy/sqlalchemy#13241). The connection is of no further use.
BROKEN_CONNECTION = asyncpg.InternalClientError


@contextlib.asynccontextmanager
async def discard_if_broken(conn: Conn) -> AsyncIterator[Conn]:
    """Close the connection, rather than give it back to the pool, when asyncpg finds it left in
    the middle of a dead operation; the error propagates, for the caller to retry on another."""
    try:
        yield conn
    except BROKEN_CONNECTION:
        conn.terminate()
        raise


@contextlib.asynccontextmanager
async def session_state(conn: Conn) -> AsyncIterator[Conn]:
    """Hold a pooled connection that takes session state (a session advisory lock, LISTEN) and
    reset it fully at the end, or close it when that fails: the pool itself does not. A failed
    reset is not raised (the state ends with the connection), so whatever ended the block is what
    propagates."""
    try:
        yield conn
    finally:
        try:
            await conn.reset()
        except BaseException as exc:
            conn.terminate()
            if not isinstance(exc, Exception):
                raise


def _migration_files(folders: Iterable[Path]) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    for folder in folders:
        prefix = "kit" if folder == KIT_MIGRATIONS else folder.parent.name
        files += [(f"{prefix}/{p.name}", p) for p in sorted(folder.glob("*.sql"))]
    return files


async def apply_migrations(pool: asyncpg.Pool, *folders: Path) -> list[str]:
    """Apply the kit's migrations, then each folder's, in name order; each once, recorded.

    A migration already applied whose file has since changed is an error:
    migrations are append-only.
    """
    applied_now: list[str] = []
    async with pool.acquire() as pooled, session_state(pooled) as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await conn.execute(CREATE_MIGRATIONS_TABLE)
            done = {r["name"]: r["checksum"] for r in await conn.fetch(SELECT_APPLIED)}
            for name, path in _migration_files((KIT_MIGRATIONS, *folders)):
                sql = path.read_text()
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if name in done:
                    if done[name] != checksum:
                        raise MigrationError(f"migration {name} changed after it was applied")
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(INSERT_APPLIED, name, checksum)
                applied_now.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now
