"""The envelope every message travels in, and its JSON wire encoding."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
)

from events.ids import new_id
from events.messages import Message, Registry
from events.upcasting import UPCASTERS, UpcastError, Upcasters

# The largest legitimate record (an order of 100 lines, a product with a 5,000-character
# description) is a few tens of KiB; anything far bigger is refused before it is parsed.
MAX_RECORD_BYTES = 256 * 1024


class DecodeError(ValueError):
    """The bytes are not a valid envelope, or its payload does not fit its type."""


class Header(BaseModel):
    """The envelope without its payload: what `decode` returns beside the typed message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID
    type: str
    schema_version: int = Field(ge=1)
    occurred_at: AwareDatetime
    producer: str
    correlation_id: str
    causation_id: uuid.UUID | None = None


class Envelope(Header):
    """Who, what and why of a message; the payload is the typed message itself.

    Identity and time are required, never defaulted: a record decoded without them is refused
    rather than given a fresh id (the inbox would apply it twice) or the time of reading (replays
    would differ). Use `wrap` to make one.
    """

    payload: dict[str, Any]


def wrap(
    message: Message,
    *,
    producer: str,
    correlation_id: str | None = None,
    causation: Header | None = None,
    event_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
) -> Envelope:
    """Put a message in an envelope; the correlation id follows the cause unless given."""
    if correlation_id is None:
        correlation_id = causation.correlation_id if causation else message.partition_key()
    return Envelope(
        event_id=event_id or new_id(),
        type=message.type_name(),
        schema_version=message.schema_version,
        occurred_at=occurred_at or datetime.now(UTC),
        producer=producer,
        correlation_id=correlation_id,
        causation_id=causation.event_id if causation else None,
        payload=message.model_dump(mode="json"),
    )


def encode(envelope: Envelope) -> bytes:
    """The envelope's JSON, byte for byte what pydantic's JSON mode gives, five times faster.

    An envelope made by `wrap` (its time in UTC, its payload JSON already) goes to orjson as it
    is: orjson writes its UUIDs and UTC times as pydantic does. Any other (a time read from the
    wire, in another zone, or an object put in a payload by hand) takes pydantic's way.
    """
    if envelope.occurred_at.tzinfo is UTC:
        with contextlib.suppress(orjson.JSONEncodeError):
            return orjson.dumps(envelope.__dict__, option=orjson.OPT_UTC_Z)
    return orjson.dumps(envelope.model_dump(mode="json"))


def decode_envelope(raw: bytes | None) -> Envelope:
    if raw is None:
        raise DecodeError("empty record value")
    if len(raw) > MAX_RECORD_BYTES:
        raise DecodeError(f"record of {len(raw)} bytes is over the {MAX_RECORD_BYTES}-byte limit")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError(
            "invalid envelope: (root): Input should be a valid dictionary, "
            f"not {type(data).__name__}"
        )
    try:
        # Strict JSON validation: 1 is not a time nor true a version (lax mode would coerce them).
        return Envelope.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise DecodeError(f"invalid envelope: {_first_error(exc)}") from None


def open_envelope(
    envelope: Envelope, registry: Registry, upcasters: Upcasters = UPCASTERS
) -> Message:
    """Validate the payload against the model its type names, upcast first if it is older.

    Validation is strict JSON: a string "3" or a float 3.0 for an integer, or true for a number,
    is a producer's bug, refused here rather than coerced into a plausible message.
    """
    try:
        model = registry.get(envelope.type)
    except LookupError as exc:
        raise DecodeError(str(exc)) from None
    if envelope.schema_version > model.schema_version:
        raise DecodeError(
            f"{envelope.type} schema version {envelope.schema_version} is newer than the "
            f"{model.schema_version} this service knows"
        )
    payload = envelope.payload
    if envelope.schema_version < model.schema_version:
        try:
            payload = upcasters.upcast(
                envelope.type, envelope.schema_version, payload, model.schema_version
            )
        except UpcastError as exc:
            raise DecodeError(str(exc)) from None
    try:
        # orjson reads 1,024 levels of nesting but writes only 254: too deep is invalid too.
        as_json = orjson.dumps(payload)
    except orjson.JSONEncodeError as exc:
        raise DecodeError(f"invalid {envelope.type} payload: {exc}") from None
    try:
        return model.model_validate_json(as_json, strict=True)
    except ValidationError as exc:
        raise DecodeError(f"invalid {envelope.type} payload: {_first_error(exc)}") from None


def decode(raw: bytes | None, registry: Registry) -> tuple[Header, Message]:
    """The header and the typed message of a record, or DecodeError saying what is wrong.

    A record of a type at its current version, which is nearly every record, is validated in one
    pass over its bytes into a typed envelope (`_typed`). Anything else (an older version to
    upcast, an unknown type, an invalid record) takes the two-step path, which upcasts or says
    precisely what is wrong. Both accept exactly the same records: the fast pass is strict JSON
    validation against the same models, and orjson must read the bytes first in both.
    """
    adapter = _typed(registry)
    if adapter is not None and raw is not None and len(raw) <= MAX_RECORD_BYTES:
        try:
            orjson.loads(raw)  # the same JSON grammar as the two-step path (e.g. 64-bit integers)
            typed = adapter.validate_json(raw, strict=True)
        except (orjson.JSONDecodeError, ValidationError):
            pass
        else:
            return typed, typed.payload
    envelope = decode_envelope(raw)
    return envelope, open_envelope(envelope, registry)


class _TypedEnvelope(Header):
    payload: Message


def _typed(registry: Registry) -> TypeAdapter[_TypedEnvelope] | None:
    return registry.derived("typed-envelopes", _typed_envelopes)


def _typed_envelopes(registry: Registry) -> TypeAdapter[_TypedEnvelope] | None:
    """One validator for every type of the registry at its current version: the envelope whose
    `type` names the model and whose payload is that model, chosen by `type`."""
    models = [
        create_model(
            f"{m.type_name()}Envelope",
            __base__=_TypedEnvelope,
            type=(Literal[m.type_name()], ...),
            # not Literal[v]: a Literal lets the float 1.0 pass for 1, strict int does not
            schema_version=(int, Field(ge=m.schema_version, le=m.schema_version)),
            payload=(m, ...),
        )
        for m in registry
    ]
    adapter: TypeAdapter[Any] | None = None
    if len(models) == 1:
        adapter = TypeAdapter(models[0])
    elif models:
        adapter = TypeAdapter(Annotated[Union[tuple(models)], Field(discriminator="type")])  # noqa: UP007
    return adapter


def headers_for(envelope: Envelope) -> list[tuple[str, bytes]]:
    """Copies of the routing fields as Kafka headers, so tools can filter without parsing JSON."""
    return headers_of(envelope.event_id, envelope.type, envelope.correlation_id)


def headers_of(
    event_id: uuid.UUID, event_type: str, correlation_id: str
) -> list[tuple[str, bytes]]:
    """The Kafka headers of an envelope with these fields (`headers_for`), as the outbox relay
    makes them from the columns it keeps them in."""
    return [
        ("event_id", str(event_id).encode()),
        ("event_type", event_type.encode()),
        ("correlation_id", correlation_id.encode()),
    ]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(root)"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"
