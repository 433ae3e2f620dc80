"""A three-broker KRaft cluster and a PostgreSQL server of the cluster tests' own, once per session.

These tests take minutes, so they run when asked for (`make test-cluster`, `pytest tests/cluster`,
or SHOP_TEST_CLUSTER=1), not in a plain `pytest` / `make test`; CI runs them as a phase of their own.
Ports: SHOP_TEST_CLUSTER_KAFKA_PORT (node i listens on it + 2(i-1), its controller next to it;
default 19200) and SHOP_TEST_CLUSTER_PG_PORT (default 19240), apart from the main test stack's, so
both may run in one session. Data lives in a fresh folder named after the ports, removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from deploy.local.common import InfraError, read_pid
from deploy.local.kafka import KafkaCluster
from deploy.local.stack import LocalStack
from tests.stack import Stack

CLUSTER_DIR = Path(__file__).resolve().parent
BROKERS = 3
DEFAULT_KAFKA_PORT = 19200
DEFAULT_PG_PORT = 19240


@dataclass
class Cluster:
    local: LocalStack  # the cluster's nodes (local.kafka.nodes) and PostgreSQL
    stack: Stack  # what the platform helpers take: bootstrap of every node, databases

    @property
    def kafka(self) -> KafkaCluster:
        return self.local.kafka


def _names_cluster_tests(arg: str) -> bool:
    path = Path(arg.split("::")[0]).resolve()
    return path == CLUSTER_DIR or CLUSTER_DIR in path.parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SHOP_TEST_CLUSTER") == "1" or any(
        _names_cluster_tests(a) for a in config.args
    ):
        return
    ours = [i for i in items if CLUSTER_DIR in i.path.parents]
    if ours:
        config.hook.pytest_deselected(items=ours)
        items[:] = [i for i in items if CLUSTER_DIR not in i.path.parents]


def _fresh_dir(kport: int, pport: int) -> Path:
    path = Path(tempfile.gettempdir()) / f"shop-test-cluster-{kport}-{pport}"
    if path.exists():
        owner = read_pid(path / "owner.pid")
        if owner is not None and owner != os.getpid() and psutil.pid_exists(owner):
            raise InfraError(
                f"another test session (pid {owner}) runs the cluster tests in {path}; wait for "
                "it or set SHOP_TEST_CLUSTER_KAFKA_PORT and SHOP_TEST_CLUSTER_PG_PORT"
            )
        LocalStack(path).down()  # what a killed session left running
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / "owner.pid").write_text(f"{os.getpid()}\n")
    return path


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    kport = int(os.environ.get("SHOP_TEST_CLUSTER_KAFKA_PORT", DEFAULT_KAFKA_PORT))
    pport = int(os.environ.get("SHOP_TEST_CLUSTER_PG_PORT", DEFAULT_PG_PORT))
    data = _fresh_dir(kport, pport)
    local = LocalStack(data, kafka_port=kport, pg_port=pport, brokers=BROKERS)
    try:
        local.up(databases=(), timeout=180)
        yield Cluster(local, Stack(local.kafka.bootstrap, local.postgres.admin_url))
    finally:
        local.down()
        shutil.rmtree(data, ignore_errors=True)
