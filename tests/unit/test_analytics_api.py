"""The analytics HTTP API over in-memory aggregates: no Kafka, no faust running."""

from __future__ import annotations

import csv
import io
import itertools
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from analytics_service.api import build_app
from analytics_service.domain import MINUTE_MS, minute_of
from analytics_service.settings import Settings
from analytics_service.stream import AnalyticsStream


def facts(order: int, placed_at: int, confirmed_after_ms: int | None) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {"placed": [placed_at, "USD", 700, [["SKU-A", 2, 350]]]}
    if confirmed_after_ms is not None:
        out["confirmed"] = [placed_at + confirmed_after_ms, "USD", 700]
    return out


@pytest.fixture
def stream() -> AnalyticsStream:
    s = AnalyticsStream(Settings())
    now = int(time.time() * 1000)  # when the test runs, not when the module was collected
    for i in range(6):
        s.aggregates.replace(None, facts(i, now - i * MINUTE_MS, 1000 + i if i % 2 == 0 else None))
    s.aggregates.categorise("SKU-A", "kitchen")
    return s


@pytest.fixture
async def client(stream: AnalyticsStream) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(stream))
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as c:
        yield c


async def test_the_summary_reports_the_range_and_the_running_totals(
    client: httpx.AsyncClient,
) -> None:
    body = (await client.get("/api/summary", params={"range": "15m"})).json()
    assert body["window"]["placed"] == 6
    assert body["window"]["confirmed"] == 3
    assert body["window"]["revenue"] == {"USD": 2100}
    assert body["window"]["by_category"] == {"kitchen": {"units": 6, "revenue": {"USD": 2100}}}
    assert body["totals"]["top_products"]["by_units"] == [{"sku": "SKU-A", "units": 6}]
    assert len(body["series"]) == 15
    assert body["series"][-1]["start"] == minute_of(body["generated_at"])
    assert body["low_stock"] == []
    bad = await client.get("/api/summary", params={"range": "2d"})
    assert bad.status_code == 422


async def test_five_minute_windows_hop_by_one_minute(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/windows", params={"size": 5})).json()
    starts = [w["start"] for w in body["windows"]]
    assert all(b - a == MINUTE_MS for a, b in itertools.pairwise(starts))
    assert max(w["placed"] for w in body["windows"]) == 5


async def test_any_series_exports_as_csv(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/export.csv", params={"size": 1, "columns": "placed,revenue.USD"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["start", "end", "placed", "revenue.USD"]
    assert sum(int(row["placed"]) for row in rows) == 6
    assert sum(int(row["revenue.USD"] or 0) for row in rows) == 2100
    everything = await client.get("/api/export.csv")
    assert "latency_ms.p99" in everything.text.splitlines()[0]


async def test_the_dashboard_page_and_its_chart_library_are_served(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert "/static/chart.umd.min.js" in page.text
    library = await client.get("/static/chart.umd.min.js")
    assert library.status_code == 200
    assert "Chart.js v4" in library.text[:200]
