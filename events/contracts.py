"""The whole saga's vocabulary: catalog, order, inventory and payment commands and events.

Commands are imperative (ReserveStock), events past tense (StockReserved). Every model is frozen
and forbids unknown fields; money is integer minor units plus an ISO 4217 code. Only payment tokens
travel, never card numbers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from events import topics
from events.messages import Command, Event, Money, Registry

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Quantity = Annotated[int, Field(ge=1, le=1000)]
PaymentToken = Annotated[str, Field(pattern=r"^tok_[A-Za-z0-9_]{1,64}$")]
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=200)]
Reason = Annotated[str, Field(max_length=500)]


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    STOCK_RESERVED = "STOCK_RESERVED"
    PAYMENT_AUTHORIZED = "PAYMENT_AUTHORIZED"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


TERMINAL_STATUSES = frozenset({OrderStatus.CONFIRMED, OrderStatus.REJECTED, OrderStatus.CANCELLED})


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StockLine(_Part):
    sku: Sku
    quantity: Quantity


class PricedLine(_Part):
    sku: Sku
    quantity: Quantity
    unit_price: Money


class Shortage(_Part):
    sku: Sku
    requested: int = Field(ge=1)
    available: int = Field(ge=0)


class _OrderMessage:
    """Saga messages are keyed by order id, so one order's messages keep their order."""

    order_id: uuid.UUID

    def partition_key(self) -> str:
        return str(self.order_id)


def order_ids(messages: Iterable[object]) -> list[uuid.UUID]:
    """The orders that the saga messages among `messages` name, each once, sorted: the order in
    which a batch's unit of work locks them."""
    return sorted({m.order_id for m in messages if isinstance(m, _OrderMessage)})


class _SkuMessage:
    sku: str

    def partition_key(self) -> str:
        return self.sku


# --- catalog -------------------------------------------------------------------------------------


class ProductUpserted(_SkuMessage, Event):
    """A product was created or changed (deactivation is active=false); compacted by SKU."""

    topic: ClassVar[str] = topics.CATALOG_PRODUCTS

    sku: Sku
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    category: str = Field(min_length=1, max_length=100)
    price: Money
    active: bool = True
    updated_at: AwareDatetime


# --- order ---------------------------------------------------------------------------------------


class OrderPlaced(_OrderMessage, Event):
    """A client's order was accepted and priced from the catalog view; the saga starts."""

    topic: ClassVar[str] = topics.ORDER_EVENTS

    order_id: uuid.UUID
    customer_id: str = Field(min_length=1, max_length=100)
    lines: tuple[PricedLine, ...] = Field(min_length=1, max_length=100)
    total: Money
    placed_at: AwareDatetime


class OrderStatusChanged(_OrderMessage, Event):
    """The saga moved an order to a non-terminal status."""

    topic: ClassVar[str] = topics.ORDER_EVENTS

    order_id: uuid.UUID
    status: OrderStatus
    previous_status: OrderStatus


class OrderConfirmed(_OrderMessage, Event):
    topic: ClassVar[str] = topics.ORDER_EVENTS

    order_id: uuid.UUID
    customer_id: str
    total: Money


class OrderRejected(_OrderMessage, Event):
    topic: ClassVar[str] = topics.ORDER_EVENTS

    order_id: uuid.UUID
    customer_id: str
    reason: Reason


class OrderCancellationRequested(_OrderMessage, Event):
    topic: ClassVar[str] = topics.ORDER_EVENTS

    order_id: uuid.UUID
    reason: Reason


class OrderCancelled(_OrderMessage, Event):
    topic: ClassVar[str] = topics.ORDER_EVENTS

    order_id: uuid.UUID
    customer_id: str
    reason: Reason
    refunded: bool = False


# --- inventory -----------------------------------------------------------------------------------


class ReserveStock(_OrderMessage, Command):
    """Reserve every line of the order, or none."""

    topic: ClassVar[str] = topics.INVENTORY_COMMANDS

    order_id: uuid.UUID
    lines: tuple[StockLine, ...] = Field(min_length=1, max_length=100)


class CommitReservation(_OrderMessage, Command):
    topic: ClassVar[str] = topics.INVENTORY_COMMANDS

    order_id: uuid.UUID


class ReleaseReservation(_OrderMessage, Command):
    topic: ClassVar[str] = topics.INVENTORY_COMMANDS

    order_id: uuid.UUID
    reason: Reason


class RestockOrder(_OrderMessage, Command):
    """Put a committed order's units back on hand (cancel after confirmation)."""

    topic: ClassVar[str] = topics.INVENTORY_COMMANDS

    order_id: uuid.UUID
    reason: Reason


class Restock(_SkuMessage, Command):
    """An administrator adds units of a SKU."""

    topic: ClassVar[str] = topics.INVENTORY_COMMANDS

    sku: Sku
    quantity: int = Field(ge=1, le=1_000_000)
    reason: Reason = "restock"


class StockReserved(_OrderMessage, Event):
    topic: ClassVar[str] = topics.INVENTORY_EVENTS

    order_id: uuid.UUID
    lines: tuple[StockLine, ...]
    expires_at: AwareDatetime


class StockRejected(_OrderMessage, Event):
    topic: ClassVar[str] = topics.INVENTORY_EVENTS

    order_id: uuid.UUID
    reason: Reason
    shortages: tuple[Shortage, ...] = ()


class ReservationCommitted(_OrderMessage, Event):
    topic: ClassVar[str] = topics.INVENTORY_EVENTS

    order_id: uuid.UUID
    lines: tuple[StockLine, ...]


class ReservationReleased(_OrderMessage, Event):
    topic: ClassVar[str] = topics.INVENTORY_EVENTS

    order_id: uuid.UUID
    lines: tuple[StockLine, ...]
    reason: Reason


class ReservationExpired(_OrderMessage, Event):
    """A reservation outlived its TTL and its units went back to available."""

    topic: ClassVar[str] = topics.INVENTORY_EVENTS

    order_id: uuid.UUID
    lines: tuple[StockLine, ...]
    expired_at: AwareDatetime


class OrderRestocked(_OrderMessage, Event):
    topic: ClassVar[str] = topics.INVENTORY_EVENTS

    order_id: uuid.UUID
    lines: tuple[StockLine, ...]


class StockLevelChanged(_SkuMessage, Event):
    topic: ClassVar[str] = topics.INVENTORY_EVENTS

    sku: Sku
    on_hand: int = Field(ge=0)
    reserved: int = Field(ge=0)
    available: int = Field(ge=0)
    cause: str = Field(max_length=50)


class LowStockDetected(_SkuMessage, Event):
    topic: ClassVar[str] = topics.INVENTORY_EVENTS

    sku: Sku
    available: int = Field(ge=0)
    threshold: int = Field(ge=0)


# --- payment -------------------------------------------------------------------------------------


class AuthorizePayment(_OrderMessage, Command):
    topic: ClassVar[str] = topics.PAYMENT_COMMANDS

    order_id: uuid.UUID
    customer_id: str
    amount: Money
    payment_token: PaymentToken
    idempotency_key: IdempotencyKey


class CapturePayment(_OrderMessage, Command):
    topic: ClassVar[str] = topics.PAYMENT_COMMANDS

    order_id: uuid.UUID
    amount: Money
    idempotency_key: IdempotencyKey


class VoidPayment(_OrderMessage, Command):
    topic: ClassVar[str] = topics.PAYMENT_COMMANDS

    order_id: uuid.UUID
    reason: Reason
    idempotency_key: IdempotencyKey


class RefundPayment(_OrderMessage, Command):
    topic: ClassVar[str] = topics.PAYMENT_COMMANDS

    order_id: uuid.UUID
    amount: Money
    reason: Reason
    idempotency_key: IdempotencyKey


class PaymentAuthorized(_OrderMessage, Event):
    topic: ClassVar[str] = topics.PAYMENT_EVENTS

    order_id: uuid.UUID
    payment_id: uuid.UUID
    amount: Money
    authorization_code: str = Field(max_length=100)


class PaymentDeclined(_OrderMessage, Event):
    topic: ClassVar[str] = topics.PAYMENT_EVENTS

    order_id: uuid.UUID
    code: str = Field(max_length=50, description="declined, insufficient_funds, gateway_timeout...")
    reason: Reason


class PaymentCaptured(_OrderMessage, Event):
    topic: ClassVar[str] = topics.PAYMENT_EVENTS

    order_id: uuid.UUID
    payment_id: uuid.UUID
    amount: Money


class PaymentVoided(_OrderMessage, Event):
    topic: ClassVar[str] = topics.PAYMENT_EVENTS

    order_id: uuid.UUID
    payment_id: uuid.UUID | None = None


class PaymentRefunded(_OrderMessage, Event):
    topic: ClassVar[str] = topics.PAYMENT_EVENTS

    order_id: uuid.UUID
    payment_id: uuid.UUID
    amount: Money


class PaymentOperationFailed(_OrderMessage, Event):
    """Capture, void or refund could not be done; the saga decides what follows."""

    topic: ClassVar[str] = topics.PAYMENT_EVENTS

    order_id: uuid.UUID
    operation: str = Field(max_length=20)
    reason: Reason


ALL_MESSAGES: tuple[type[Event] | type[Command], ...] = (
    ProductUpserted,
    OrderPlaced,
    OrderStatusChanged,
    OrderConfirmed,
    OrderRejected,
    OrderCancellationRequested,
    OrderCancelled,
    ReserveStock,
    CommitReservation,
    ReleaseReservation,
    RestockOrder,
    Restock,
    StockReserved,
    StockRejected,
    ReservationCommitted,
    ReservationReleased,
    ReservationExpired,
    OrderRestocked,
    StockLevelChanged,
    LowStockDetected,
    AuthorizePayment,
    CapturePayment,
    VoidPayment,
    RefundPayment,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentCaptured,
    PaymentVoided,
    PaymentRefunded,
    PaymentOperationFailed,
)

REGISTRY = Registry(*ALL_MESSAGES)


def messages_on(topic: str) -> list[type[Event] | type[Command]]:
    return [m for m in ALL_MESSAGES if m.topic == topic]
