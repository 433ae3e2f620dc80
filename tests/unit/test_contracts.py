"""The saga's vocabulary: names, topics, keys, and the values each message refuses."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from events import topics
from events.contracts import (
    ALL_MESSAGES,
    REGISTRY,
    AuthorizePayment,
    OrderPlaced,
    PricedLine,
    ProductUpserted,
    ReserveStock,
    Restock,
    StockLine,
    messages_on,
)
from events.messages import Command, Event, Money, UnknownMessageType

ORDER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")

# Past participles that do not end in "ed", allowed as the last word of an event's name.
IRREGULAR_PAST = frozenset({"Sent", "Paid", "Held", "Made", "Lost", "Found", "Built", "Split"})


def words(name: str) -> list[str]:
    return re.findall(r"[A-Z][a-z0-9]*", name)


def authorize(token: str) -> AuthorizePayment:
    return AuthorizePayment(
        order_id=ORDER_ID,
        customer_id="c-1",
        amount=Money(amount=1999, currency="EUR"),
        payment_token=token,
        idempotency_key=f"{ORDER_ID}:authorize",
    )


def test_every_message_type_has_a_topic_declared() -> None:
    declared = {t.name: t for t in topics.all_topics()}
    for model in ALL_MESSAGES:
        assert model.topic in declared, f"{model.type_name()} names undeclared topic {model.topic}"
        assert declared[model.topic].kind != "dlq"


def test_commands_go_to_command_topics_and_events_to_event_topics() -> None:
    for model in ALL_MESSAGES:
        kind = topics.spec(model.topic).kind
        if issubclass(model, Command):
            assert kind == "command", model.type_name()
        else:
            assert kind in {"event", "compacted"}, model.type_name()


def test_every_declared_topic_carries_some_message_type() -> None:
    for spec in topics.BASE_TOPICS:
        assert messages_on(spec.name), f"nothing is ever sent to {spec.name}"


def test_commands_are_imperative_and_events_past_tense() -> None:
    for model in ALL_MESSAGES:
        name = model.type_name()
        first, last = words(name)[0], words(name)[-1]
        if issubclass(model, Event):
            assert last.endswith("ed") or last in IRREGULAR_PAST, f"{name} is not past tense"
        else:
            assert issubclass(model, Command)
            assert not last.endswith("ed"), f"{name} reads as already done"
            assert last not in IRREGULAR_PAST, f"{name} reads as already done"
            assert not first.endswith("ed"), f"{name} does not start with a verb"


def test_every_message_type_is_registered_once_and_found_by_name() -> None:
    assert len(REGISTRY) == len(ALL_MESSAGES)
    for model in ALL_MESSAGES:
        assert REGISTRY.get(model.type_name()) is model
    with pytest.raises(UnknownMessageType, match="ParcelShipped"):
        REGISTRY.get("ParcelShipped")


def test_saga_messages_are_keyed_by_order_id_and_stock_messages_by_sku() -> None:
    reserve = ReserveStock(order_id=ORDER_ID, lines=(StockLine(sku="A-1", quantity=2),))
    assert reserve.partition_key() == str(ORDER_ID)
    assert Restock(sku="A-1", quantity=5).partition_key() == "A-1"


def test_messages_are_frozen() -> None:
    restock = Restock(sku="A-1", quantity=5)
    with pytest.raises(ValidationError, match="frozen"):
        restock.quantity = 6  # type: ignore[misc]


@pytest.mark.parametrize("amount", [10.5, 10.0, -1, True, "10"])
def test_money_refuses_floats_and_negative_amounts(amount: Any) -> None:
    with pytest.raises(ValidationError, match="amount"):
        Money(amount=amount, currency="USD")


def test_money_takes_integer_minor_units_from_json() -> None:
    assert Money.model_validate_json('{"amount": 1050, "currency": "EUR"}').amount == 1050
    assert Money.model_validate({"amount": 0, "currency": "JPY"}).amount == 0


def test_money_refuses_a_json_float_even_when_it_is_whole() -> None:
    with pytest.raises(ValidationError, match="amount"):
        Money.model_validate_json('{"amount": 1050.0, "currency": "EUR"}')


@pytest.mark.parametrize("currency", ["usd", "EURO", "€", ""])
def test_money_refuses_a_currency_that_is_not_an_iso_code(currency: str) -> None:
    with pytest.raises(ValidationError, match="currency"):
        Money(amount=1, currency=currency)


@pytest.mark.parametrize(
    "token", ["4111111111111111", "4111 1111 1111 1111", "tok_4111 1111 1111 1111", "tok_", ""]
)
def test_payment_token_refuses_a_card_number(token: str) -> None:
    with pytest.raises(ValidationError, match="payment_token"):
        authorize(token)


def test_payment_token_accepts_a_gateway_token() -> None:
    assert authorize("tok_approve").payment_token == "tok_approve"


def test_unknown_fields_are_refused_by_every_model() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Restock.model_validate({"sku": "A-1", "quantity": 1, "price": 100})
    with pytest.raises(ValidationError, match="extra"):
        StockLine.model_validate({"sku": "A-1", "quantity": 1, "unit_price": 5})


def test_an_order_needs_at_least_one_line_and_sane_quantities() -> None:
    price = Money(amount=100, currency="EUR")
    common: dict[str, Any] = {
        "order_id": ORDER_ID,
        "customer_id": "c-1",
        "total": price,
        "placed_at": datetime(2030, 1, 1, tzinfo=UTC),
    }
    with pytest.raises(ValidationError, match="lines"):
        OrderPlaced(lines=(), **common)
    with pytest.raises(ValidationError, match="quantity"):
        PricedLine(sku="A-1", quantity=0, unit_price=price)


def test_timestamps_must_carry_a_time_zone() -> None:
    with pytest.raises(ValidationError, match="updated_at"):
        ProductUpserted(
            sku="A-1",
            name="Lamp",
            category="home",
            price=Money(amount=100, currency="EUR"),
            updated_at=datetime(2030, 1, 1),
        )
