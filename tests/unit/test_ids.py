"""New ids are time-ordered (UUID version 7), so the indexes on them grow at one end."""

from __future__ import annotations

import time
import uuid

import orjson

from events.contracts import OrderCancelled
from events.envelope import encode, wrap
from events.ids import new_id


def test_new_ids_are_standard_version_7_uuids_that_increase() -> None:
    ids = [new_id() for _ in range(10_000)]

    assert all(type(i) is uuid.UUID and i.version == 7 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # the first 48 bits are the creation time in milliseconds
    assert abs((ids[-1].int >> 80) - time.time() * 1000) < 5_000


def test_an_envelope_gets_a_new_id_of_its_own_unless_it_is_given_one() -> None:
    message = OrderCancelled(order_id=uuid.uuid4(), customer_id="c", reason="r", refunded=False)
    first, second = wrap(message, producer="t"), wrap(message, producer="t")
    given = uuid.uuid5(uuid.NAMESPACE_URL, "seed")

    assert first.event_id.version == 7
    assert first.event_id < second.event_id
    assert wrap(message, producer="t", event_id=given).event_id == given
    assert orjson.loads(encode(first))["event_id"] == str(first.event_id)
