"""Every service runs as its own process and reports its health and metrics over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.kit_support import eventually

pytestmark = pytest.mark.integration

SERVICES = {
    "order_service": "ORDER_",
    "inventory_service": "INVENTORY_",
    "payment_service": "PAYMENT_",
    "catalog_service": "CATALOG_",
    "analytics_service": "ANALYTICS_",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("package", sorted(SERVICES))
async def test_service_process_serves_health_and_metrics_and_stops_on_sigterm(
    stack: object, package: str, tmp_path: Path
) -> None:
    prefix = SERVICES[package]
    port = free_port()
    env = os.environ | {
        f"{prefix}KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap,  # type: ignore[attr-defined]
        f"{prefix}DATABASE_URL": stack.database_url(f"proc_{package}"),  # type: ignore[attr-defined]
        f"{prefix}HTTP_PORT": str(port),
    }
    # The log goes to a file, not a pipe: a service replaying a long shared log writes more than a
    # pipe holds before anyone reads it, and would block on its own logging.
    log_file = tmp_path / f"{package}.log"
    with log_file.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", package], env=env, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=2.0) as client:

            async def ready() -> bool:
                assert proc.poll() is None, f"{package} exited early"
                try:
                    return (await client.get("/health/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout=60, interval=0.2)
            live = await client.get("/health/live")
            body = (await client.get("/health/ready")).json()
            metrics = await client.get("/metrics")
        assert live.status_code == 200
        assert body["checks"] == {"database": "ok", "kafka": "ok"}
        assert metrics.status_code == 200
        assert "shop_outbox_backlog" in metrics.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        stderr = log_file.read_text()
    assert proc.returncode == 0, stderr[-2000:]
    assert '"event": "service stopped"' in stderr
