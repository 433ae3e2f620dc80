"""The Kafka broker and PostgreSQL server the integration tests run against.

Each is chosen in this order:
1. explicit settings: SHOP_TEST_KAFKA_BOOTSTRAP, SHOP_TEST_DATABASE_URL (a server URL; the tests
   create their databases under it);
2. a reachable Docker engine, through testcontainers;
3. the native stack from deploy/local on test-only ports (SHOP_TEST_KAFKA_PORT,
   SHOP_TEST_KAFKA_CONTROLLER_PORT, SHOP_TEST_PG_PORT), in a fresh folder, stopped at the end.
The declared topics are created on the broker whichever it is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from deploy.local.common import InfraError, read_pid, run_sync, wait_for
from deploy.local.kafka import KafkaBroker, broker_ready
from deploy.local.postgres import LocalPostgres, create_databases, with_database
from deploy.local.topics import ensure_topics
from events.topics import all_topics

KAFKA_IMAGE = "apache/kafka:4.1.1"
POSTGRES_IMAGE = "postgres:18"
DEFAULT_KAFKA_PORT = 19092
DEFAULT_KAFKA_CONTROLLER_PORT = 19093
DEFAULT_PG_PORT = 19433


@dataclass
class Stack:
    """Where the tests find Kafka and PostgreSQL."""

    kafka_bootstrap: str
    admin_url: str
    sources: dict[str, str] = field(default_factory=dict)
    _databases: set[str] = field(default_factory=set, repr=False)

    def database_url(self, dbname: str) -> str:
        """URL of a database on the test server, created on first use."""
        if dbname not in self._databases:
            run_sync(create_databases(self.admin_url, [dbname]))
            self._databases.add(dbname)
        return with_database(self.admin_url, dbname)


@contextlib.contextmanager
def start_stack(env: Mapping[str, str] = os.environ) -> Iterator[Stack]:
    """Provide Kafka and PostgreSQL for one test session and clean up after it."""
    with contextlib.ExitStack() as resources:
        explicit = env.get("SHOP_TEST_KAFKA_BOOTSTRAP") and env.get("SHOP_TEST_DATABASE_URL")
        native = _NativeFolder(env, resources)
        use_docker = not explicit and _docker_available()
        bootstrap, kafka_source, kafka_ready = _kafka(env, use_docker, native, resources)
        admin_url, pg_source = _postgres(env, use_docker, native, resources)
        kafka_ready()
        run_sync(ensure_topics(bootstrap, all_topics()))
        yield Stack(bootstrap, admin_url, {"kafka": kafka_source, "postgres": pg_source})


class _NativeFolder:
    """The native stack's folder, made (fresh) only when something native is started."""

    def __init__(self, env: Mapping[str, str], resources: contextlib.ExitStack) -> None:
        self._env = env
        self._resources = resources
        self._path: Path | None = None

    def __truediv__(self, name: str) -> Path:
        if self._path is None:
            self._path = _fresh_native_dir(self._env)
            self._resources.callback(shutil.rmtree, self._path, ignore_errors=True)
        return self._path / name


def _kafka(
    env: Mapping[str, str],
    use_docker: bool,
    native: _NativeFolder,
    resources: contextlib.ExitStack,
) -> tuple[str, str, Callable[[], None]]:
    """Bootstrap address, where it comes from, and how to wait until it answers."""
    if bootstrap := env.get("SHOP_TEST_KAFKA_BOOTSTRAP"):
        return bootstrap, "settings", _broker_answers(bootstrap)
    if use_docker:
        bootstrap = resources.enter_context(_docker_kafka())
        return bootstrap, "docker", _broker_answers(bootstrap)
    broker = KafkaBroker(
        data_dir=native / "kafka",
        port=int(env.get("SHOP_TEST_KAFKA_PORT", DEFAULT_KAFKA_PORT)),
        controller_port=int(
            env.get("SHOP_TEST_KAFKA_CONTROLLER_PORT", DEFAULT_KAFKA_CONTROLLER_PORT)
        ),
    )
    resources.callback(broker.stop)
    broker.launch()  # PostgreSQL starts while the JVM boots
    return broker.bootstrap, "native", broker.wait_ready


def _postgres(
    env: Mapping[str, str],
    use_docker: bool,
    native: _NativeFolder,
    resources: contextlib.ExitStack,
) -> tuple[str, str]:
    """Server URL (of its `postgres` database) and where it comes from."""
    if admin_url := env.get("SHOP_TEST_DATABASE_URL"):
        return admin_url, "settings"
    if use_docker:
        return resources.enter_context(_docker_postgres()), "docker"
    pg = LocalPostgres(
        data_dir=native / "postgres",
        port=int(env.get("SHOP_TEST_PG_PORT", DEFAULT_PG_PORT)),
    )
    resources.callback(pg.stop)
    pg.start()
    return pg.admin_url, "native"


def _broker_answers(bootstrap: str) -> Callable[[], None]:
    def wait() -> None:
        wait_for(lambda: broker_ready(bootstrap), timeout=120, what=f"Kafka at {bootstrap}")

    return wait


def _fresh_native_dir(env: Mapping[str, str]) -> Path:
    """A clean folder named after the ports, so a session killed before its teardown is cleaned
    up by the next one instead of leaving a broker holding the ports."""
    kport = env.get("SHOP_TEST_KAFKA_PORT", str(DEFAULT_KAFKA_PORT))
    pport = env.get("SHOP_TEST_PG_PORT", str(DEFAULT_PG_PORT))
    path = Path(tempfile.gettempdir()) / f"shop-test-stack-{kport}-{pport}"
    if path.exists():
        owner = read_pid(path / "owner.pid")
        if owner is not None and owner != os.getpid() and psutil.pid_exists(owner):
            raise InfraError(
                f"another test session (pid {owner}) runs the native test stack in {path}; "
                "wait for it or set SHOP_TEST_KAFKA_PORT, SHOP_TEST_KAFKA_CONTROLLER_PORT "
                "and SHOP_TEST_PG_PORT to other ports"
            )
        KafkaBroker(data_dir=path / "kafka").stop()
        LocalPostgres(data_dir=path / "postgres").stop()
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / "owner.pid").write_text(f"{os.getpid()}\n")
    return path


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _kafka_env(port: int) -> dict[str, str]:
    """The native broker's settings as the apache/kafka image's environment variables."""
    config = KafkaBroker(port=9092, controller_port=9093, host="localhost").config()
    config |= {
        "listeners": "PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "log.dirs": "/tmp/kraft-combined-logs",
    }
    env = {"KAFKA_" + key.upper().replace(".", "_"): value for key, value in config.items()}
    env["CLUSTER_ID"] = "5L6g3nShT-eMCtK--X86sw"
    return env


@contextlib.contextmanager
def _docker_kafka() -> Iterator[str]:
    # testcontainers' KafkaContainer drives Confluent's image through its own scripts, so the
    # official image runs as a plain container with a fixed host port it can advertise.
    from testcontainers.core.container import DockerContainer

    port = _free_port()
    container: Any = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, port)
    with container.with_envs(**_kafka_env(port)):
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def _docker_postgres() -> Iterator[str]:
    from testcontainers.community.postgres import PostgresContainer

    with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
        yield with_database(container.get_connection_url(), "postgres")
