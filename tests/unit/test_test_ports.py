"""The fixed ports of the test stacks lie below Linux's ephemeral range (32768-60999): a port in it
can be held by any outgoing connection at the moment a test server wants to bind it."""

from __future__ import annotations

import bench.__main__ as bench_main
from tests import ports, stack
from tests.cluster import conftest as cluster
from tests.security import conftest as security

EPHEMERAL_START = 32768


def test_every_fixed_test_port_is_below_the_ephemeral_range() -> None:
    ports = {
        "kafka": stack.DEFAULT_KAFKA_PORT,
        "kafka controller": stack.DEFAULT_KAFKA_CONTROLLER_PORT,
        "postgres": stack.DEFAULT_PG_PORT,
        "cluster kafka (+2 per node, 3 nodes)": cluster.DEFAULT_KAFKA_PORT + 5,
        "cluster postgres": cluster.DEFAULT_PG_PORT,
        "secured kafka (+1 controller)": security.SECURE_KAFKA_PORT + 1,
        "secured postgres": security.SECURE_PG_PORT,
    }
    assert {name: port for name, port in ports.items() if port >= EPHEMERAL_START} == {}
    assert len(set(ports.values())) == len(ports)


def test_free_ports_lie_below_the_ephemeral_range_clear_of_the_fixed_ones() -> None:
    low, high = ports.FREE_RANGE
    assert high <= EPHEMERAL_START
    fixed = [
        stack.DEFAULT_KAFKA_PORT,
        stack.DEFAULT_KAFKA_CONTROLLER_PORT,
        stack.DEFAULT_PG_PORT,
        cluster.DEFAULT_PG_PORT,
        *range(cluster.DEFAULT_KAFKA_PORT, cluster.DEFAULT_KAFKA_PORT + 6),
        security.SECURE_KAFKA_PORT,
        security.SECURE_KAFKA_PORT + 1,
        security.SECURE_PG_PORT,
        *range(bench_main.DEFAULT_PORT_BASE, bench_main.DEFAULT_PORT_BASE + 100),
    ]
    assert [p for p in fixed if low <= p < high] == []
    chosen = [ports.free_port() for _ in range(50)]
    assert len(set(chosen)) == 50
    assert all(low <= p < high for p in chosen)
