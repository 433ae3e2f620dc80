"""Replicas in the local service supervisor: names, ports and pid files, without processes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from deploy.local.services import BY_NAME, REPLICA_PORT_STEP, ServiceSupervisor, parse_replicas


def supervisor(
    tmp_path: Path,
    ports: Mapping[str, int | Sequence[int]] | None = None,
    replicas: Mapping[str, int] | None = None,
) -> ServiceSupervisor:
    return ServiceSupervisor(
        kafka_bootstrap="127.0.0.1:1",
        database_url=lambda db: f"postgresql://postgres@127.0.0.1:1/{db}",
        data_dir=tmp_path,
        ports=ports or {},
        replicas=replicas or {},
    )


def test_replicas_parse_by_short_or_package_name() -> None:
    assert parse_replicas("inventory=3, order_service=2") == {
        "inventory_service": 3,
        "order_service": 2,
    }
    assert parse_replicas("") == {}


@pytest.mark.parametrize("spec", ["inventory", "inventory=0", "stock=2", "inventory=two"])
def test_a_bad_replica_spec_is_refused_with_the_reason(spec: str) -> None:
    with pytest.raises(ValueError, match=r"SERVICE=COUNT|at least once"):
        parse_replicas(spec)


def test_without_replicas_ports_pid_files_and_logs_are_as_before(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, ports={"inventory_service": 18003})
    inventory = BY_NAME["inventory"]
    assert sup.replica_count(inventory) == 1
    assert sup.port(inventory) == 18003
    assert sup.url("inventory") == "http://127.0.0.1:18003"
    assert sup.port(BY_NAME["order"]) == 8000
    assert sup.pid_file(inventory) == tmp_path / "run" / "inventory_service.pid"
    assert sup.log_file(inventory) == tmp_path / "logs" / "inventory_service.log"
    assert sup.process_env(inventory)["INVENTORY_HTTP_PORT"] == "18003"


def test_each_replica_gets_its_own_port_pid_file_and_log(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, replicas={"inventory": 3})
    inventory = BY_NAME["inventory_service"]
    assert sup.replica_count(inventory) == 3
    assert [sup.port(inventory, k) for k in range(3)] == [
        8003,
        8003 + REPLICA_PORT_STEP,
        8003 + 2 * REPLICA_PORT_STEP,
    ]
    assert sup.pid_file(inventory, 2) == tmp_path / "run" / "inventory_service.2.pid"
    assert sup.log_file(inventory, 1) == tmp_path / "logs" / "inventory_service.1.log"
    env = sup.process_env(inventory, 2)
    assert env["INVENTORY_HTTP_PORT"] == str(8003 + 2 * REPLICA_PORT_STEP)
    assert env["INVENTORY_DATABASE_URL"] == sup.process_env(inventory, 0)["INVENTORY_DATABASE_URL"]


def test_replica_ports_can_be_given_one_by_one(tmp_path: Path) -> None:
    sup = supervisor(
        tmp_path, ports={"inventory_service": [41001, 41007]}, replicas={"inventory": 2}
    )
    inventory = BY_NAME["inventory"]
    assert [sup.port(inventory, k) for k in range(2)] == [41001, 41007]


def test_ports_of_replicas_never_collide_with_other_services(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, replicas={s.package: 6 for s in BY_NAME.values()})
    ports = [sup.port(s, k) for s in sup.services for k in range(6)]
    assert len(ports) == len(set(ports))


def test_replicas_left_by_an_earlier_run_are_found_from_their_pid_files(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "inventory_service.2.pid").write_text("999999999")
    (tmp_path / "run" / "inventory_service.notes.pid").write_text("1")
    sup = supervisor(tmp_path)
    inventory = BY_NAME["inventory"]
    assert sup.replica_ids(inventory) == [0, 2]
    assert sup.pid("inventory", 2) is None
    assert sup.stop("inventory") is False
    assert not (tmp_path / "run" / "inventory_service.2.pid").exists()
