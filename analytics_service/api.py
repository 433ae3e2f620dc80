"""HTTP for analysts: the dashboard page, a JSON API, CSV export and a server-sent event stream."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from analytics_service.stream import AnalyticsStream
from events.kit.http import NO_TELEMETRY

STATIC = Path(__file__).with_name("static")
RangeName = Literal["15m", "1h", "24h"]
Range = Annotated[RangeName, Query(description="How far back from now: 15m, 1h or 24h.")]
Size = Annotated[
    int, Query(ge=1, le=60, description="Window minutes: 1 tumbling; more hops by 1 minute.")
]
HEARTBEAT_S = 15.0


def now_ms() -> int:
    return int(time.time() * 1000)


Snapshots = dict[str, tuple[tuple[int, int], dict[str, Any]]]


def snapshot(stream: AnalyticsStream, range_name: RangeName, cache: Snapshots) -> dict[str, Any]:
    """What the dashboard shows; computed once per change, range and second however many watch."""
    key = (stream.aggregates.version, now_ms() // 1000)
    cached = cache.get(range_name)
    if cached is not None and cached[0] == key:
        return cached[1]
    body = {
        "generated_at": now_ms(),
        "ready": stream.recovered.is_set(),
        "version": stream.aggregates.version,
        "watermark": stream.watermark(),
        "grace_s": stream.settings.grace_s,
        **stream.aggregates.summary(now_ms(), range_name),
        "low_stock": stream.low_stock(),
    }
    cache[range_name] = (key, body)
    return body


def flat_row(window: dict[str, Any]) -> dict[str, Any]:
    """One window as CSV columns: nested figures become `name.key` columns."""
    row: dict[str, Any] = {}
    for key, value in window.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                row[f"{key}.{sub}"] = v
        else:
            row[key] = value
    return row


def router(stream: AnalyticsStream) -> APIRouter:
    r = APIRouter(tags=["analytics"])
    cache: Snapshots = {}

    @r.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @r.get("/api/summary")
    async def summary(range: Range = "15m") -> Response:
        """KPIs, per-minute series, top products, low-stock alerts for a time range."""
        return Response(orjson.dumps(snapshot(stream, range, cache)), media_type="application/json")

    @r.get("/api/windows")
    async def windows(size: Size = 1) -> Response:
        """Kept windows by event time: 1-minute tumbling or 5-minute hopping (1-minute step)."""
        body = {"size_minutes": size, "windows": stream.aggregates.windows(size)}
        return Response(orjson.dumps(body), media_type="application/json")

    @r.get("/api/totals")
    async def totals() -> Response:
        """Running totals since the start of the log, with the top products."""
        body = stream.aggregates.totals_figures()
        return Response(orjson.dumps(body), media_type="application/json")

    @r.get("/api/state")
    async def state() -> Response:
        """The tables' digests, the offsets folded and the figures, in one consistent view.

        What `shop events rebuild analytics` compares a rebuild from the log with: `totals`,
        `windows` and `low_stock` are the bodies of /api/totals, /api/windows?size=1 and
        /api/low-stock, taken at the same instant as `positions` ("topic/partition" -> the
        offset after the last record folded since this process started).
        """
        s = stream.settings
        body = {
            "app_id": s.app_id,
            "ready": stream.recovered.is_set(),
            "grace_s": s.grace_s,
            "retention_h": s.retention_h,
            "generated_at": now_ms(),
            **stream.fold.state(),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @r.get("/api/positions")
    async def positions() -> Response:
        """How far the figures have read: "topic/partition" -> the offset after the last record
        folded. Cheap enough to poll (the bench measures freshness with it)."""
        body = {"generated_at": now_ms(), "positions": dict(stream.fold.positions)}
        return Response(orjson.dumps(body), media_type="application/json")

    @r.get("/api/low-stock")
    async def low_stock() -> list[dict[str, Any]]:
        """SKUs whose available stock is below their threshold now."""
        return stream.low_stock()

    @r.get("/api/export.csv")
    async def export_csv(
        size: Size = 1,
        columns: Annotated[
            str | None, Query(description="Comma-separated columns; all when omitted.")
        ] = None,
    ) -> Response:
        """Any series as CSV: one row per window, `start` in epoch milliseconds."""
        rows = [flat_row(w) for w in stream.aggregates.windows(size)]
        names: list[str] = []
        for row in rows:
            names += [k for k in row if k not in names]
        if columns:
            wanted = ["start", "end", *[c.strip() for c in columns.split(",") if c.strip()]]
            names = [n for n in wanted if n in names or n in ("start", "end")]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=names, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="analytics-{size}m.csv"'},
        )

    @r.get("/api/stream")
    async def events(request: Request, range: Range = "15m") -> StreamingResponse:
        """Server-sent events: a `summary` event whenever the figures change."""

        async def gen() -> AsyncIterator[bytes]:
            seen = -1
            quiet_since = time.monotonic()
            interval = stream.settings.push_interval_ms / 1000
            while not (stream.stopping.is_set() or await request.is_disconnected()):
                version = stream.aggregates.version
                if version != seen:
                    seen = version
                    quiet_since = time.monotonic()
                    data = orjson.dumps(snapshot(stream, range, cache))
                    yield b"event: summary\nid: %d\ndata: %s\n\n" % (version, data)
                elif time.monotonic() - quiet_since > HEARTBEAT_S:
                    quiet_since = time.monotonic()
                    yield b": keep-alive\n\n"
                await asyncio.sleep(interval)

        return StreamingResponse(
            gen(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return r


def build_app(stream: AnalyticsStream) -> FastAPI:
    app = FastAPI(
        telemetry=NO_TELEMETRY,
        title="analytics",
        summary="Real-time sales analytics over the event topics.",
    )
    app.include_router(router(stream))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
