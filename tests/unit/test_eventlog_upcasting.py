"""Old schema versions are lifted to the current model; the recorded log still loads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from deploy.eventlog.records import decode_records
from events.contracts import REGISTRY
from events.envelope import DecodeError, Envelope, open_envelope
from events.messages import Event, Registry
from events.upcasting import Upcasters
from tests.fixtures.eventlog import recorded


class ParcelShipped(Event):
    """v3: `carrier` was `courier` in v1; v2 added `weight_g` (no default)."""

    topic: ClassVar[str] = "test.parcels"
    schema_version: ClassVar[int] = 3
    parcel_id: str
    carrier: str
    weight_g: int


def envelope(version: int, payload: dict[str, Any]) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4(),
        type="ParcelShipped",
        schema_version=version,
        occurred_at=datetime.now(UTC),
        producer="test",
        correlation_id="p-1",
        payload=payload,
    )


def parcel_upcasters() -> Upcasters:
    ups = Upcasters()
    ups.register(
        "ParcelShipped",
        1,
        lambda p: {**{k: v for k, v in p.items() if k != "courier"}, "carrier": p["courier"]},
    )
    ups.register("ParcelShipped", 2, lambda p: {**p, "weight_g": p.get("weight_g", 0)})
    return ups


def test_a_v1_payload_is_upcast_through_every_version_to_the_current_model() -> None:
    registry = Registry(ParcelShipped)
    old = envelope(1, {"parcel_id": "p-1", "courier": "ups"})
    msg = open_envelope(old, registry, parcel_upcasters())
    assert msg == ParcelShipped(parcel_id="p-1", carrier="ups", weight_g=0)


def test_a_current_payload_is_not_touched_and_a_newer_one_is_refused() -> None:
    registry = Registry(ParcelShipped)
    current = envelope(3, {"parcel_id": "p", "carrier": "dhl", "weight_g": 5})
    assert open_envelope(current, registry, parcel_upcasters()).weight_g == 5  # type: ignore[attr-defined]
    with pytest.raises(DecodeError, match="newer"):
        open_envelope(envelope(4, current.payload), registry, parcel_upcasters())


def test_an_upcaster_that_cannot_read_the_old_payload_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="cannot upcast ParcelShipped v1"):
        open_envelope(envelope(1, {"parcel_id": "p"}), Registry(ParcelShipped), parcel_upcasters())


def test_an_upcaster_is_registered_once_per_version() -> None:
    ups = parcel_upcasters()
    with pytest.raises(ValueError, match="twice"):
        ups.register("ParcelShipped", 1, dict)


def test_every_record_of_the_recorded_log_still_opens_with_todays_models() -> None:
    events, undecodable = decode_records(list(recorded()))
    assert not undecodable
    assert {e.type for e in events} >= {"OrderPlaced", "PaymentCaptured", "OrderCancelled"}
    for e in events:
        message = open_envelope(e.envelope, REGISTRY)
        assert message.type_name() == e.type
