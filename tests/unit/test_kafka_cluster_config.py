"""The local Kafka cluster's layout and replication settings, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.local.common import InfraError
from deploy.local.kafka import KafkaCluster
from deploy.local.stack import LocalStack
from events.topics import replication_for


@pytest.mark.parametrize(
    ("brokers", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (5, (3, 2))]
)
def test_topics_get_three_replicas_and_min_isr_two_from_three_brokers_on(
    brokers: int, expected: tuple[int, int]
) -> None:
    assert replication_for(brokers) == expected


def test_three_nodes_take_consecutive_ports_and_folders_of_their_own(tmp_path: Path) -> None:
    cluster = KafkaCluster(data_dir=tmp_path / "kafka", brokers=3, port=32100)
    assert [(n.port, n.cport) for n in cluster.nodes] == [
        (32100, 32101),
        (32102, 32103),
        (32104, 32105),
    ]
    assert [n.data_dir for n in cluster.nodes] == [
        tmp_path / "kafka" / f"node-{i}" for i in (1, 2, 3)
    ]
    assert cluster.bootstrap == "127.0.0.1:32100,127.0.0.1:32102,127.0.0.1:32104"
    assert [n.name for n in cluster.nodes] == ["kafka-1", "kafka-2", "kafka-3"]


def test_every_node_votes_in_one_quorum_and_replicates_internal_topics_three_times(
    tmp_path: Path,
) -> None:
    configs = [n.config() for n in KafkaCluster(tmp_path, brokers=3, port=32100).nodes]
    voters = "1@127.0.0.1:32101,2@127.0.0.1:32103,3@127.0.0.1:32105"
    assert {c["controller.quorum.voters"] for c in configs} == {voters}
    assert [c["node.id"] for c in configs] == ["1", "2", "3"]
    for c in configs:
        assert c["process.roles"] == "broker,controller"
        assert c["default.replication.factor"] == "3"
        assert c["min.insync.replicas"] == "2"
        assert c["offsets.topic.replication.factor"] == "3"
        assert c["transaction.state.log.replication.factor"] == "3"
        assert c["transaction.state.log.min.isr"] == "2"


def test_a_single_node_keeps_its_folder_ports_and_replication_of_one(tmp_path: Path) -> None:
    cluster = KafkaCluster(data_dir=tmp_path / "kafka")
    (node,) = cluster.nodes
    assert node.data_dir == tmp_path / "kafka"
    assert (node.port, node.cport, node.name, node.heap) == (9092, 9093, "kafka", "512m")
    config = node.config()
    assert config["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert config["transaction.state.log.replication.factor"] == "1"
    assert config["min.insync.replicas"] == "1"


def test_the_stack_finds_the_cluster_size_it_was_started_with(tmp_path: Path) -> None:
    assert LocalStack(tmp_path).kafka.brokers == 1
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "cluster.json").write_text('{"brokers": 3}')
    assert LocalStack(tmp_path).kafka.brokers == 3
    assert LocalStack(tmp_path, brokers=1).kafka.brokers == 1


def test_a_cluster_has_at_least_one_broker(tmp_path: Path) -> None:
    with pytest.raises(InfraError):
        KafkaCluster(tmp_path, brokers=0)
