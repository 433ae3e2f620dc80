"""The envelope and its wire encoding: what goes in comes out, and what is wrong is said clearly."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.contracts import REGISTRY, ReserveStock, Restock, StockLine, StockReserved
from events.envelope import (
    DecodeError,
    Envelope,
    decode,
    decode_envelope,
    encode,
    headers_for,
    open_envelope,
    wrap,
)

ORDER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
EVENT_ID = uuid.UUID("00000000-0000-4000-8000-0000000000e1")
WHEN = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

stock_lines = st.lists(
    st.builds(
        StockLine,
        sku=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True),
        quantity=st.integers(min_value=1, max_value=1000),
    ),
    min_size=1,
    max_size=100,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=12,
)


def reserve(*lines: StockLine) -> ReserveStock:
    return ReserveStock(order_id=ORDER_ID, lines=lines or (StockLine(sku="A-1", quantity=2),))


def wire(**overrides: Any) -> bytes:
    """A valid encoded ReserveStock envelope, with some fields replaced (None deletes)."""
    data = wrap(reserve(), producer="order_service", event_id=EVENT_ID, occurred_at=WHEN)
    fields = data.model_dump(mode="json")
    for key, value in overrides.items():
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    return orjson.dumps(fields)


def test_envelope_round_trips_through_bytes() -> None:
    message = reserve(StockLine(sku="A-1", quantity=2), StockLine(sku="B.2", quantity=1))
    envelope = wrap(message, producer="order_service", event_id=EVENT_ID, occurred_at=WHEN)

    header, decoded = decode(encode(envelope), REGISTRY)

    assert header.model_dump(exclude={"payload"}) == envelope.model_dump(exclude={"payload"})
    assert decoded == message
    assert header.occurred_at == WHEN
    assert decode_envelope(encode(envelope)) == envelope


def test_wrap_keys_the_correlation_to_the_order_and_follows_the_cause() -> None:
    command = wrap(reserve(), producer="order_service")
    assert command.correlation_id == str(ORDER_ID)
    assert command.causation_id is None
    assert command.type == "ReserveStock"
    assert command.schema_version == 1

    reply = StockReserved(order_id=ORDER_ID, lines=reserve().lines, expires_at=WHEN)
    event = wrap(reply, producer="inventory_service", causation=command)
    assert event.correlation_id == command.correlation_id
    assert event.causation_id == command.event_id
    assert event.event_id != command.event_id


def test_headers_copy_the_routing_fields() -> None:
    envelope = wrap(reserve(), producer="order_service", event_id=EVENT_ID)
    assert headers_for(envelope) == [
        ("event_id", str(EVENT_ID).encode()),
        ("event_type", b"ReserveStock"),
        ("correlation_id", str(ORDER_ID).encode()),
    ]


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(DecodeError, match="invalid envelope: trace: Extra inputs"):
        decode(wire(trace="x"), REGISTRY)
    payload = {"order_id": str(ORDER_ID), "lines": [{"sku": "A-1", "quantity": 1}], "note": "x"}
    with pytest.raises(DecodeError, match="invalid ReserveStock payload: note: Extra inputs"):
        decode(wire(payload=payload), REGISTRY)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "empty record value"),
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"{'single': 'quotes'}", "not JSON"),
        (b"[1, 2]", "invalid envelope: \\(root\\): Input should be a valid dictionary"),
        (b"{}", "invalid envelope: event_id: Field required \\(\\+6 more\\)"),
    ],
)
def test_decode_reports_undecodable_bytes_clearly(raw: bytes | None, expected: str) -> None:
    with pytest.raises(DecodeError, match=expected):
        decode(raw, REGISTRY)


@pytest.mark.parametrize("missing", ["event_id", "occurred_at"])
def test_an_envelope_without_its_own_id_or_time_is_refused(missing: str) -> None:
    with pytest.raises(DecodeError, match=f"invalid envelope: {missing}: Field required"):
        decode_envelope(wire(**{missing: None}))


def test_an_envelope_time_without_a_time_zone_is_refused() -> None:
    with pytest.raises(DecodeError, match="occurred_at"):
        decode_envelope(wire(occurred_at="2030-01-02T03:04:05"))


def test_newer_schema_version_than_known_is_refused() -> None:
    envelope = decode_envelope(wire(schema_version=2))
    with pytest.raises(DecodeError, match="ReserveStock schema version 2 is newer than the 1"):
        open_envelope(envelope, REGISTRY)


def test_an_older_schema_version_is_read_with_the_current_model() -> None:
    envelope = decode_envelope(wire(schema_version=1))
    assert open_envelope(envelope, REGISTRY) == reserve()


def test_an_unknown_message_type_is_refused() -> None:
    with pytest.raises(DecodeError, match="unknown message type 'ParcelShipped'"):
        decode(wire(type="ParcelShipped"), REGISTRY)


def test_an_invalid_payload_names_the_type_and_the_field() -> None:
    payload = {"sku": "A-1", "quantity": 0}
    with pytest.raises(DecodeError, match="invalid Restock payload: quantity: Input should be"):
        decode(wire(type="Restock", payload=payload), REGISTRY)


def test_a_payload_float_for_money_is_refused_on_the_wire() -> None:
    payload = {
        "order_id": str(ORDER_ID),
        "amount": {"amount": 10.0, "currency": "EUR"},
        "idempotency_key": "k",
    }
    with pytest.raises(DecodeError, match=r"invalid CapturePayment payload: amount\.amount"):
        decode(wire(type="CapturePayment", payload=payload), REGISTRY)


@settings(max_examples=50, deadline=None)
@given(stock_lines)
def test_random_stock_lines_round_trip_through_bytes(lines: list[StockLine]) -> None:
    message = ReserveStock(order_id=ORDER_ID, lines=tuple(lines))
    _, decoded = decode(encode(wrap(message, producer="order_service")), REGISTRY)
    assert decoded == message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_decode_with_anything_but_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(raw, REGISTRY)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "payload", "schema_version", "x"]), json_values))
def test_random_json_in_an_envelope_never_crashes_decode(fields: dict[str, Any]) -> None:
    base = orjson.loads(wire())
    with contextlib.suppress(DecodeError):
        decode(json.dumps({**base, **fields}).encode(), REGISTRY)


def test_restock_defaults_survive_the_wire() -> None:
    _, decoded = decode(encode(wrap(Restock(sku="A-1", quantity=3), producer="admin")), REGISTRY)
    assert decoded == Restock(sku="A-1", quantity=3, reason="restock")


def _pydantic_json(envelope: Any) -> bytes:
    return orjson.dumps(envelope.model_dump(mode="json"))


# what a payload holds on the wire (orjson reads integers of at most 64 bits)
wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.dictionaries(st.text(), wire_values, max_size=6),
    when=st.datetimes(timezones=st.timezones() | st.just(UTC)),
    causation=st.none() | st.uuids(),
)
def test_encode_writes_the_bytes_pydantics_json_mode_writes(
    payload: dict[str, Any], when: datetime, causation: uuid.UUID | None
) -> None:
    envelope = Envelope(
        event_id=EVENT_ID,
        type="Anything",
        schema_version=3,
        occurred_at=when,
        producer="unit",
        correlation_id="c-1",
        causation_id=causation,
        payload=payload,
    )
    assert encode(envelope) == _pydantic_json(envelope)


def test_encode_writes_contracts_and_objects_put_in_a_payload_as_pydantic_does() -> None:
    reserved = StockReserved(
        order_id=ORDER_ID, lines=(StockLine(sku="A-1", quantity=2),), expires_at=WHEN
    )
    for message in (reserve(), reserved, Restock(sku="B-2", quantity=5)):
        for when in (WHEN, WHEN.replace(microsecond=0), None):
            envelope = wrap(message, producer="unit", occurred_at=when)
            assert encode(envelope) == _pydantic_json(envelope)
    by_hand = wrap(reserve(), producer="unit").model_copy(
        update={"payload": {"id": ORDER_ID, "at": WHEN, "tags": {"x"}}}
    )
    assert encode(by_hand) == _pydantic_json(by_hand)
    assert orjson.loads(encode(by_hand))["payload"]["tags"] == ["x"]
