"""The fixed ports of the test stacks lie below Linux's ephemeral range (32768-60999): a port in it
can be held by any outgoing connection at the moment a test server wants to bind it."""

from __future__ import annotations

from tests import stack
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
