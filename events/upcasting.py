"""Upcasters: functions that lift an old schema version of a payload to the next one.

Event topics keep their records forever, so the model of today must read every version ever
written. When a message type changes incompatibly, bump its `schema_version`, register a function
from the old payload to the new one here, and `open_envelope` applies the chain (v1 -> v2 -> ...)
before validating against the current model. Compatible changes (a new optional field) need no
upcaster: the committed schemas under events/schemas already prove the old data still validates.

    UPCASTERS.register("OrderPlaced", 1, lambda p: {**p, "channel": "web"})  # v1 -> v2
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class UpcastError(ValueError):
    """No chain of upcasters leads from the record's version to the current one."""


class Upcasters:
    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, type_name: str, from_version: int, step: Upcaster) -> None:
        key = (type_name, from_version)
        if key in self._steps:
            raise ValueError(f"an upcaster from {type_name} v{from_version} is registered twice")
        self._steps[key] = step

    def knows(self, type_name: str, from_version: int) -> bool:
        return (type_name, from_version) in self._steps

    def upcast(
        self, type_name: str, version: int, payload: Mapping[str, Any], target: int
    ) -> Payload:
        """The payload lifted from `version` to `target`, one registered step at a time.

        A version without a step is a compatible change: the payload passes through unchanged.
        """
        data = dict(payload)
        for v in range(version, target):
            step = self._steps.get((type_name, v))
            if step is not None:
                try:
                    data = step(data)
                except (KeyError, TypeError, ValueError) as exc:
                    raise UpcastError(f"cannot upcast {type_name} v{v}: {exc!r}") from None
        return data


# The platform's upcasters. Every message type is at version 1 today, so there are none yet.
UPCASTERS = Upcasters()
