"""Structured logs: JSON off a terminal, with the message ids bound by the kit."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

# What the message being handled adds to every log line: a function, called only when a line is
# written. The consumers set it once per message; structlog's bound_contextvars set (and reset)
# one context variable per field, a tenth of a consumer's CPU per message on the hot path
# (7 fields), for lines that are almost never written.
_MESSAGE: ContextVar[Callable[[], Mapping[str, Any]] | None] = ContextVar(
    "shop_message_fields", default=None
)


@contextlib.contextmanager
def message_context(fields: Callable[[], Mapping[str, Any]]) -> Iterator[None]:
    """Add `fields()` to every log line written inside the block (by this task and the tasks it
    starts), as structlog's bound_contextvars would, but computed only if a line is written."""
    token = _MESSAGE.set(fields)
    try:
        yield
    finally:
        _MESSAGE.reset(token)


def merge_message_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor of `message_context`; a line's own fields win."""
    fields = _MESSAGE.get()
    if fields is not None:
        for key, value in fields().items():
            event_dict.setdefault(key, value)
    return event_dict


def configure_logging(
    level: str = "INFO", *, json: bool = True, service: str | None = None
) -> None:
    """Route structlog and stdlib logging (aiokafka, uvicorn) through one JSON renderer."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        merge_message_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        # filter_by_level first: a line below the level costs no processor (nor its fields)
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    if service:
        structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
