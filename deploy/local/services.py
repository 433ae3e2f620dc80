"""The five service processes on the local stack: start, stop, kill, health, logs.

Used by `shop up/status/down` and by the end-to-end tests, so the tests run the platform the way a
developer does: each service its own `python -m <service>` process with its own settings.

A service may run as several replicas (`shop up --replicas inventory=3`): processes with the same
settings, so the same consumer group, each on its own HTTP port. Replica 0 keeps the service's
port, pid file and log; replica k listens on port + k * REPLICA_PORT_STEP (the services' own
ports are consecutive, so consecutive replica ports would collide) unless ports are given, and
has `<package>.<k>.pid` and `<package>.<k>.log`; every analytics process gets a table folder of its
own (`analytics`, `analytics.<k>` under the data dir): RocksDB files are never shared.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil  # type: ignore[import-untyped]

from deploy.local.common import DEFAULT_DATA_DIR, InfraError, read_pid, tail, terminate, wait_for

if TYPE_CHECKING:
    from deploy.local.kafka_security import BrokerSecurity


@dataclass(frozen=True)
class ServiceDef:
    package: str
    prefix: str
    port: int
    database: str
    role: str


SERVICES: tuple[ServiceDef, ...] = (
    ServiceDef("catalog_service", "CATALOG_", 8001, "catalog", "products and prices"),
    ServiceDef("inventory_service", "INVENTORY_", 8003, "inventory", "stock and reservations"),
    ServiceDef("payment_service", "PAYMENT_", 8004, "payment", "payments (simulated gateway)"),
    ServiceDef("order_service", "ORDER_", 8000, "order", "ingress API and order saga"),
    ServiceDef("analytics_service", "ANALYTICS_", 8002, "analytics", "sales analytics"),
)
BY_NAME = {s.package: s for s in SERVICES} | {s.database: s for s in SERVICES}
REPLICA_PORT_STEP = 10
# how long a process that no longer matches its pid file is given to show its exit code
EXIT_GRACE_S = 5.0


def parse_replicas(spec: str) -> dict[str, int]:
    """`inventory=3,order=2` as {package: count}; a service left out runs once."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, count = item.partition("=")
        if not sep or name.strip() not in BY_NAME or not count.strip().isdigit():
            raise ValueError(f"{item!r}: expected SERVICE=COUNT with SERVICE one of the five")
        if int(count) < 1:
            raise ValueError(f"{item!r}: a service runs at least once")
        counts[BY_NAME[name.strip()].package] = int(count)
    return counts


@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int | None
    url: str
    ready: bool
    log: Path


@dataclass
class ServiceSupervisor:
    """Starts and watches service processes; pid files and logs live under the data folder."""

    kafka_bootstrap: str
    database_url: Callable[[str], str]
    data_dir: Path = DEFAULT_DATA_DIR
    # A port per service (replica 0), or one port per replica.
    ports: Mapping[str, int | Sequence[int]] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    services: tuple[ServiceDef, ...] = SERVICES
    # Processes per service, by package or short name; 1 where not given.
    replicas: Mapping[str, int] = field(default_factory=dict)
    # A secured broker: each service connects as its own SASL user (deploy/local/kafka_security).
    kafka_security: BrokerSecurity | None = None
    # The processes this supervisor started and has not ended itself, to say how one that died
    # ended. Its own stop and kill reap through psutil and drop the entry: a Popen polled after
    # that could only guess (its pid may belong to another process by then).
    _procs: dict[tuple[str, int], subprocess.Popen[bytes]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def replica_count(self, svc: ServiceDef) -> int:
        return self.replicas.get(svc.package, self.replicas.get(svc.database, 1))

    def replica_ids(self, svc: ServiceDef) -> list[int]:
        """The configured replicas and any other that left a pid file (from an earlier run)."""
        found = {0, *range(self.replica_count(svc))}
        for path in (self.data_dir / "run").glob(f"{svc.package}.*.pid"):
            suffix = path.name.removeprefix(f"{svc.package}.").removesuffix(".pid")
            if suffix.isdigit():
                found.add(int(suffix))
        return sorted(found)

    def port(self, svc: ServiceDef, replica: int = 0) -> int:
        given = self.ports.get(svc.package)
        if isinstance(given, Sequence):
            if replica < len(given):
                return given[replica]
            given = given[0] if given else None
        return (svc.port if given is None else given) + replica * REPLICA_PORT_STEP

    def url(self, name: str, replica: int = 0) -> str:
        return f"http://127.0.0.1:{self.port(BY_NAME[name], replica)}"

    def _suffix(self, replica: int) -> str:
        return f".{replica}" if replica else ""

    def pid_file(self, svc: ServiceDef, replica: int = 0) -> Path:
        return self.data_dir / "run" / f"{svc.package}{self._suffix(replica)}.pid"

    def log_file(self, svc: ServiceDef, replica: int = 0) -> Path:
        return self.data_dir / "logs" / f"{svc.package}{self._suffix(replica)}.log"

    def pid(self, name: str, replica: int = 0) -> int | None:
        """The service's running process: the one this supervisor started while it has not
        ended (its own child: the pid cannot be reused before it is reaped here), otherwise the
        one its pid file names if that process's command line names the service (one started
        by another supervisor, e.g. an earlier `shop up`)."""
        svc = BY_NAME[name]
        started = self._procs.get((svc.package, replica))
        if started is not None and started.poll() is None:
            return started.pid
        pid = read_pid(self.pid_file(svc, replica))
        if pid is None:
            return None
        try:
            proc = psutil.Process(pid)
            alive = proc.status() != psutil.STATUS_ZOMBIE and any(
                svc.package in part for part in proc.cmdline()
            )
        except psutil.Error:
            alive = False
        return pid if alive else None

    def process_env(self, svc: ServiceDef, replica: int = 0) -> dict[str, str]:
        p = svc.prefix
        return {
            **os.environ,
            f"{p}KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            f"{p}DATABASE_URL": self.database_url(svc.database),
            f"{p}HTTP_PORT": str(self.port(svc, replica)),
            # a process that dies in native code (a signal) leaves its Python stack in the log
            "PYTHONFAULTHANDLER": "1",
            **(self.kafka_security.service_env(svc) if self.kafka_security else {}),
            # one signing key for the whole platform, the one `shop token` signs with
            **(
                {f"{p}AUTH_SIGNING_KEY": os.environ["SHOP_AUTH_SIGNING_KEY"]}
                if "SHOP_AUTH_SIGNING_KEY" in os.environ
                else {}
            ),
            # the simulated gateway's books outlive the payment process, as a real gateway's do
            **(
                {f"{p}GATEWAY_STATE_PATH": str(self.data_dir / "payment-gateway.sqlite3")}
                if svc.package == "payment_service"
                else {}
            ),
            # each analytics process its own RocksDB tables: two must never open the same files
            **(
                {f"{p}DATA_DIR": str(self.data_dir / f"analytics{self._suffix(replica)}")}
                if svc.package == "analytics_service"
                else {}
            ),
            **self.env,
        }

    def start(self, name: str, replica: int | None = None) -> int:
        """Start the service's replicas (or one) that do not run already; returns the first pid."""
        svc = BY_NAME[name]
        if replica is not None:
            return self._start_one(svc, replica)
        pids = [self._start_one(svc, k) for k in range(self.replica_count(svc))]
        return pids[0]

    def _start_one(self, svc: ServiceDef, replica: int) -> int:
        if (pid := self.pid(svc.package, replica)) is not None:
            return pid
        log_file, pid_file = self.log_file(svc, replica), self.pid_file(svc, replica)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", svc.package],
                env=self.process_env(svc, replica),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        pid_file.write_text(str(proc.pid))
        self._procs[(svc.package, replica)] = proc
        return proc.pid

    def how_it_ended(self, name: str, replica: int = 0) -> str:
        """How a process this supervisor started ended: exit code, signal, or still running."""
        proc = self._procs.get((BY_NAME[name].package, replica))
        if proc is None:
            return "exited"
        try:
            # A process on its way out loses its command line (so no longer matches its pid
            # file) a moment before it has an exit code to read.
            code = proc.wait(EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            return (
                f"(pid {proc.pid}) no longer matches its pid file, yet is still running "
                f"({self._pid_file_view(BY_NAME[name], replica)})"
            )
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"(pid {proc.pid}) was killed by {signal.Signals(-code).name}"
        return f"(pid {proc.pid}) exited with code {code}"

    def _pid_file_view(self, svc: ServiceDef, replica: int) -> str:
        """What the pid file names and what that process looks like now, for an error."""
        pid = read_pid(self.pid_file(svc, replica))
        if pid is None:
            return f"the pid file {self.pid_file(svc, replica)} names no pid"
        try:
            proc = psutil.Process(pid)
            return f"the pid file names {pid}: {proc.status()}, command line {proc.cmdline()}"
        except psutil.Error as exc:
            return f"the pid file names {pid}: {exc!r}"

    def ready(self, name: str, replica: int = 0) -> bool:
        try:
            r = httpx.get(self.url(name, replica) + "/health/ready", timeout=2.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def wait_ready(self, name: str, timeout: float = 90, replica: int | None = None) -> None:
        """Wait until the service's configured replicas (or one of them) answer ready."""
        svc = BY_NAME[name]
        wanted = range(self.replica_count(svc)) if replica is None else [replica]
        for k in wanted:
            log_file = self.log_file(svc, k)

            def check(k: int = k, log_file: Path = log_file) -> bool:
                if self.pid(name, k) is None:
                    raise InfraError(
                        f"{svc.package} {self.how_it_ended(name, k)} during start; last lines of "
                        f"{log_file}:\n{tail(log_file, 15)}"
                    )
                return self.ready(name, k)

            wait_for(check, timeout=timeout, what=f"{svc.package} to be ready")

    def start_all(self, timeout: float = 120, step: Callable[[str], None] | None = None) -> None:
        for svc in self.services:
            if step:
                step(f"starting {svc.package}")
            self.start(svc.package)
        for svc in self.services:
            self.wait_ready(svc.package, timeout)

    def stop(self, name: str, timeout: float = 30, replica: int | None = None) -> bool:
        """Stop every replica of a service (or one); False when none was running."""
        svc = BY_NAME[name]
        stopped = False
        for k in self.replica_ids(svc) if replica is None else [replica]:
            pid = self.pid(name, k)
            if pid is not None:
                terminate(pid, timeout=timeout)
                stopped = True
            self.pid_file(svc, k).unlink(missing_ok=True)
            self._procs.pop((svc.package, k), None)
        return stopped

    def kill(self, name: str, replica: int = 0) -> None:
        """SIGKILL, as a crash would: no clean shutdown."""
        pid = self.pid(name, replica)
        if pid is None:
            raise InfraError(f"{name} (replica {replica}) is not running")
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(10)
        self._procs.pop((BY_NAME[name].package, replica), None)

    def send_signal(self, name: str, sig: signal.Signals, replica: int = 0) -> None:
        pid = self.pid(name, replica)
        if pid is None:
            raise InfraError(f"{name} (replica {replica}) is not running")
        os.kill(pid, sig)

    def stop_all(self) -> list[str]:
        return [s.package for s in reversed(self.services) if self.stop(s.package)]

    def states(self) -> list[ServiceState]:
        """One row per replica; replica k > 0 is named `<package>[k]`."""
        out = []
        for svc in self.services:
            for k in self.replica_ids(svc):
                pid = self.pid(svc.package, k)
                if k >= self.replica_count(svc) and pid is None:
                    continue
                out.append(
                    ServiceState(
                        f"{svc.package}[{k}]" if k else svc.package,
                        pid,
                        self.url(svc.package, k),
                        pid is not None and self.ready(svc.package, k),
                        self.log_file(svc, k),
                    )
                )
        return out
