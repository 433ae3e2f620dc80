"""Health and metrics routes every service process serves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

Check = Callable[[], Awaitable[None]]
# FastAPI answers 400 when a JSON body cannot be read at all (not UTF-8, for example).
UNREADABLE_BODY: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body cannot be read as JSON (for example, it is not UTF-8)"}
}
CHECK_TIMEOUT_S = 2.0


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
