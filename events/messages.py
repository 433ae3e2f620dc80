"""Base classes for every message on the wire and the registry that maps type names to models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

MessageKind = Literal["event", "command"]
T = TypeVar("T")


class Message(BaseModel):
    """A payload carried inside an envelope: frozen, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ClassVar[MessageKind]
    schema_version: ClassVar[int] = 1
    topic: ClassVar[str]

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    def partition_key(self) -> str:
        """The key that keeps related messages on one partition (the order id for the saga)."""
        raise NotImplementedError


class Event(Message):
    """Something that happened; named in the past tense."""

    kind: ClassVar[MessageKind] = "event"


class Command(Message):
    """Something a service is asked to do; named in the imperative."""

    kind: ClassVar[MessageKind] = "command"


class Money(BaseModel):
    """An amount in integer minor units of an ISO 4217 currency. Never a float."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # strict: lax mode would turn 10.0, True or "10" into an amount; JSON integers still pass.
    amount: int = Field(ge=0, strict=True, description="Integer minor units (cents for USD).")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")


class UnknownMessageType(LookupError):
    """The envelope names a type this registry does not know."""


class Registry:
    """Maps a type name to its model class; explicit, filled by the contracts module."""

    def __init__(self, *models: type[Message]) -> None:
        self._by_name: dict[str, type[Message]] = {}
        # What other modules derive from the models (a validator of them all), by their name for
        # it; emptied when a model is added. See `derived`.
        self._derived: dict[str, Any] = {}
        for model in models:
            self.add(model)

    def add(self, model: type[Message]) -> None:
        name = model.type_name()
        if name in self._by_name:
            raise ValueError(f"message type {name!r} registered twice")
        self._by_name[name] = model
        self._derived.clear()

    def derived(self, name: str, build: Callable[[Registry], T]) -> T:
        """`build(self)`, computed once per set of models and kept under `name`."""
        try:
            value: T = self._derived[name]
        except KeyError:
            value = self._derived[name] = build(self)
        return value

    def get(self, name: str) -> type[Message]:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownMessageType(f"unknown message type {name!r}") from None

    def __iter__(self) -> Any:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return sorted(self._by_name)
