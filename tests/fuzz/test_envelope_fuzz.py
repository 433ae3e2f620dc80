"""events.envelope.decode under fuzzing: every corrupt record is refused with DecodeError (which
the inbox dead-letters), never with another exception (which would stop the consumer), and every
valid record decodes to the message that was sent."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.contracts import (
    REGISTRY,
    AuthorizePayment,
    OrderPlaced,
    PaymentDeclined,
    PricedLine,
    ProductUpserted,
    ReserveStock,
    Restock,
    StockLine,
    StockRejected,
)
from events.envelope import (
    MAX_RECORD_BYTES,
    DecodeError,
    Envelope,
    decode,
    decode_envelope,
    encode,
    open_envelope,
    wrap,
)
from events.messages import Message, Money
from tests.fixtures.eventlog import recorded
from tests.fuzz import corrupt as bad

KNOWN = frozenset(REGISTRY.names())
WHEN = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
ORDER = uuid.UUID("00000000-0000-4000-8000-000000000001")
USD = Money(amount=1999, currency="USD")

SAMPLES: tuple[Message, ...] = (
    Restock(sku="A-1", quantity=3),
    ReserveStock(order_id=ORDER, lines=(StockLine(sku="A-1", quantity=2),)),
    AuthorizePayment(
        order_id=ORDER,
        customer_id="c1",
        amount=USD,
        payment_token="tok_approve",
        idempotency_key="k-1",
    ),
    ProductUpserted(sku="A-1", name="A", category="c", price=USD, active=True, updated_at=WHEN),
    StockRejected(order_id=ORDER, reason="out of stock"),
    PaymentDeclined(order_id=ORDER, code="declined", reason="no"),
    OrderPlaced(
        order_id=ORDER,
        customer_id="c1",
        lines=(PricedLine(sku="A-1", quantity=1, unit_price=USD),),
        total=USD,
        placed_at=WHEN,
    ),
)
VALID = [encode(wrap(m, producer="fuzz", occurred_at=WHEN)) for m in SAMPLES]

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def refused(raw: bytes | None) -> DecodeError:
    """decode must refuse the record with DecodeError, and nothing else."""
    with pytest.raises(DecodeError) as caught:
        decode(raw, REGISTRY)
    return caught.value


@pytest.mark.parametrize("raw", VALID, ids=[type(m).__name__ for m in SAMPLES])
def test_every_sample_decodes_to_the_message_sent(raw: bytes) -> None:
    envelope, message = decode(raw, REGISTRY)
    assert orjson.dumps(envelope.model_dump(mode="json")) == raw
    assert message.type_name() == envelope.type


@FAST
@given(st.data())
def test_any_corruption_of_a_valid_record_is_refused_with_decode_error_only(
    data: st.DataObject,
) -> None:
    valid = data.draw(st.sampled_from(VALID))
    raw = data.draw(bad.corrupt(valid, KNOWN))
    # Some corruptions leave a valid record (a wrong type that is right by chance); any exception
    # but DecodeError escapes and fails the test.
    with contextlib.suppress(DecodeError):
        envelope, message = decode(raw, REGISTRY)
        assert message.type_name() == envelope.type


def two_step(raw: bytes | None) -> tuple[Envelope, Message]:
    """The path decode takes for older versions and refusals: the envelope, then its payload."""
    envelope = decode_envelope(raw)
    return envelope, open_envelope(envelope, REGISTRY)


def assert_same_as_two_step(raw: bytes | None) -> None:
    """decode's one-pass validation accepts and refuses exactly what the two-step path does."""
    try:
        envelope, message = two_step(raw)
    except DecodeError as exc:
        expected = str(exc)
    else:
        expected = ""
    if expected:
        assert str(refused(raw)) == expected
        return
    header, decoded = decode(raw, REGISTRY)
    assert decoded == message
    assert type(decoded) is type(message)
    assert header.model_dump(exclude={"payload"}) == envelope.model_dump(exclude={"payload"})


@FAST
@given(st.data())
def test_one_pass_decode_agrees_with_the_two_step_path_on_corrupt_records(
    data: st.DataObject,
) -> None:
    valid = data.draw(st.sampled_from(VALID))
    assert_same_as_two_step(data.draw(st.one_of(st.just(valid), bad.corrupt(valid, KNOWN))))


def test_one_pass_decode_agrees_with_the_two_step_path_on_the_recorded_log() -> None:
    records = recorded()
    assert len(records) > 100
    for record in records:
        assert_same_as_two_step(record.value)


@FAST
@given(st.sampled_from(VALID).flatmap(bad.payload_field_of_wrong_type))
def test_a_payload_field_of_the_wrong_json_type_is_refused(raw: bytes) -> None:
    refused(raw)


@FAST
@given(st.sampled_from(VALID).flatmap(bad.envelope_field_of_wrong_type))
def test_an_envelope_field_of_the_wrong_json_type_is_refused(raw: bytes) -> None:
    refused(raw)


@FAST
@given(st.sampled_from(VALID).flatmap(bad.envelope_field_missing))
def test_an_envelope_without_a_required_field_is_refused(raw: bytes) -> None:
    refused(raw)


@FAST
@given(st.sampled_from(VALID).flatmap(bad.payload_with_unknown_field))
def test_a_payload_with_an_unknown_field_is_refused(raw: bytes) -> None:
    refused(raw)


@FAST
@given(st.sampled_from(VALID).flatmap(lambda v: bad.unknown_event_type(v, KNOWN)))
def test_an_unknown_event_type_is_refused_and_named(raw: bytes) -> None:
    assert "unknown message type" in str(refused(raw))


@FAST
@given(st.sampled_from(VALID).flatmap(bad.newer_schema_version))
def test_a_schema_version_newer_than_known_is_refused(raw: bytes) -> None:
    assert "newer than" in str(refused(raw))


@FAST
@given(st.sampled_from(VALID).flatmap(bad.invalid_utf8))
def test_invalid_utf8_anywhere_is_refused(raw: bytes) -> None:
    refused(raw)


@FAST
@given(st.sampled_from(VALID).flatmap(bad.truncated))
def test_a_truncated_record_is_refused(raw: bytes) -> None:
    refused(raw)


@FAST
@given(bad.random_bytes())
def test_random_bytes_are_refused(raw: bytes) -> None:
    refused(raw)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(VALID).flatmap(bad.deeply_nested))
def test_deeply_nested_json_is_refused(raw: bytes) -> None:
    refused(raw)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID).flatmap(bad.huge))
def test_a_record_over_the_size_limit_is_refused_before_parsing(raw: bytes) -> None:
    assert len(raw) > MAX_RECORD_BYTES
    assert "limit" in str(refused(raw))


@pytest.mark.parametrize(
    ("field", "value"),
    [("quantity", "3"), ("quantity", 3.0), ("quantity", True), ("sku", 1), ("sku", None)],
)
def test_restock_refuses_json_values_that_lax_validation_would_coerce(
    field: str, value: object
) -> None:
    data = orjson.loads(VALID[0])
    data["payload"][field] = value
    assert "invalid Restock payload" in str(refused(orjson.dumps(data)))


def test_a_boolean_schema_version_is_refused() -> None:
    data = orjson.loads(VALID[0])
    data["schema_version"] = True
    assert "schema_version" in str(refused(orjson.dumps(data)))


def test_a_tombstone_is_refused() -> None:
    assert "empty" in str(refused(None))
