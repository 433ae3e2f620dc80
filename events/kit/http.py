"""Health and metrics routes every service process serves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Check = Callable[[], Awaitable[None]]
# FastAPI answers 400 when a JSON body cannot be read at all (not UTF-8, for example).
UNREADABLE_BODY: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body cannot be read as JSON (for example, it is not UTF-8)"}
}
CHECK_TIMEOUT_S = 2.0
DEFAULT_MAX_BODY_BYTES = 64 * 1024


# FastAPI's OpenTelemetry instrumentation, off: nothing here configures a provider, yet with it on
# every request asked OpenTelemetry for its global providers (an environment lookup each, 2 % of
# the order service's CPU). Every app of the platform, the monolith baseline too, is made with it.
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def harden(app: FastAPI, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
    """413 for a body over the limit, and 422s that never echo the input; the runtime applies it
    to every service's app, after a service that chose its own limit (order) has applied it."""
    if getattr(app.state, "hardened", False):
        return
    app.state.hardened = True
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)


def health_router(checks: Mapping[str, Check]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        """The process is up and its event loop answers."""
        return {"status": "live"}

    @router.get("/health/ready")
    async def ready() -> JSONResponse:
        """The database and the broker are reachable."""
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"failed: {type(exc).__name__}"
        ok = all(v == "ok" for v in results.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": results},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


class BodyLimit:
    """Refuse request bodies over a limit with 413, whether or not Content-Length is sent.

    The body is read here, up to the limit, before the app sees it (then replayed): a limit met
    while the app was reading it would be the app's error, and FastAPI answers any error in
    reading a body with 400."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        received = await receive_body(receive, self.max_bytes)
        if received is None:
            await _too_large(send, self.max_bytes)
            return
        await self.app(scope, replay(received, receive), send)


async def receive_body(receive: Receive, max_bytes: int | None = None) -> list[Message] | None:
    """The messages that carry a request's body, up to its last or to the client leaving; None
    once the body is over `max_bytes`."""
    received: list[Message] = []
    seen = 0
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return received
        seen += len(message.get("body", b""))
        if max_bytes is not None and seen > max_bytes:
            return None
        if not message.get("more_body", False):
            return received


def replay(received: list[Message], receive: Receive) -> Receive:
    """`receive` as if the messages already received had not been read yet."""
    pending = received[::-1]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps({"detail": f"request body larger than {limit} bytes"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with what is wrong and where, never echoing the input (it may hold a card number)."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)
