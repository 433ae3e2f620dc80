"""The five service processes on the local stack: start, stop, kill, health, logs.

Used by `shop up/status/down` and by the end-to-end tests, so the tests run the platform the way a
developer does: each service its own `python -m <service>` process with its own settings.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]

from deploy.local.common import DEFAULT_DATA_DIR, InfraError, read_pid, tail, terminate, wait_for


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
    ports: Mapping[str, int] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    services: tuple[ServiceDef, ...] = SERVICES

    def port(self, svc: ServiceDef) -> int:
        return self.ports.get(svc.package, svc.port)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port(BY_NAME[name])}"

    def pid_file(self, svc: ServiceDef) -> Path:
        return self.data_dir / "run" / f"{svc.package}.pid"

    def log_file(self, svc: ServiceDef) -> Path:
        return self.data_dir / "logs" / f"{svc.package}.log"

    def pid(self, name: str) -> int | None:
        svc = BY_NAME[name]
        pid = read_pid(self.pid_file(svc))
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

    def process_env(self, svc: ServiceDef) -> dict[str, str]:
        p = svc.prefix
        return {
            **os.environ,
            f"{p}KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            f"{p}DATABASE_URL": self.database_url(svc.database),
            f"{p}HTTP_PORT": str(self.port(svc)),
            **self.env,
        }

    def start(self, name: str) -> int:
        """Start one service unless it runs already; returns its pid."""
        svc = BY_NAME[name]
        if (pid := self.pid(name)) is not None:
            return pid
        self.log_file(svc).parent.mkdir(parents=True, exist_ok=True)
        self.pid_file(svc).parent.mkdir(parents=True, exist_ok=True)
        with self.log_file(svc).open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", svc.package],
                env=self.process_env(svc),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file(svc).write_text(str(proc.pid))
        return proc.pid

    def ready(self, name: str) -> bool:
        try:
            r = httpx.get(self.url(name) + "/health/ready", timeout=2.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def wait_ready(self, name: str, timeout: float = 90) -> None:
        svc = BY_NAME[name]

        def check() -> bool:
            if self.pid(name) is None:
                raise InfraError(
                    f"{svc.package} exited during start; last lines of "
                    f"{self.log_file(svc)}:\n{tail(self.log_file(svc), 15)}"
                )
            return self.ready(name)

        wait_for(check, timeout=timeout, what=f"{svc.package} to be ready")

    def start_all(self, timeout: float = 120, step: Callable[[str], None] | None = None) -> None:
        for svc in self.services:
            if step:
                step(f"starting {svc.package}")
            self.start(svc.package)
        for svc in self.services:
            self.wait_ready(svc.package, timeout)

    def stop(self, name: str, timeout: float = 30) -> bool:
        pid = self.pid(name)
        if pid is None:
            return False
        terminate(pid, timeout=timeout)
        self.pid_file(BY_NAME[name]).unlink(missing_ok=True)
        return True

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would: no clean shutdown."""
        pid = self.pid(name)
        if pid is None:
            raise InfraError(f"{name} is not running")
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(10)

    def send_signal(self, name: str, sig: signal.Signals) -> None:
        pid = self.pid(name)
        if pid is None:
            raise InfraError(f"{name} is not running")
        os.kill(pid, sig)

    def stop_all(self) -> list[str]:
        return [s.package for s in reversed(self.services) if self.stop(s.package)]

    def states(self) -> list[ServiceState]:
        out = []
        for svc in self.services:
            pid = self.pid(svc.package)
            url = self.url(svc.package)
            out.append(
                ServiceState(
                    svc.package,
                    pid,
                    url,
                    pid is not None and self.ready(svc.package),
                    self.log_file(svc),
                )
            )
        return out
