"""`shop analytics` renders what the service answers; the HTTP call is replaced."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from analytics_service import cli
from analytics_service.domain import Aggregates

SUMMARY = {"range": "15m", "low_stock": [{"sku": "SKU-9", "available": 2, "threshold": 10}]} | {
    k: v for k, v in Aggregates().summary(0, "15m").items() if k in ("window", "totals")
}


def test_summary_shows_the_kpis_top_products_and_low_stock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def fake_fetch(url: str, path: str, params: dict[str, Any]) -> httpx.Response:
        calls.append((path, params))
        return httpx.Response(200, json=SUMMARY)

    monkeypatch.setattr(cli, "fetch", fake_fetch)
    result = CliRunner().invoke(cli.app, ["summary", "--range", "1h"])
    assert result.exit_code == 0, result.output
    assert calls == [("/api/summary", {"range": "1h"})]
    assert "payment decline rate" in result.output
    assert "SKU-9" in result.output


def test_export_writes_the_csv_it_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    csv = "start,end,placed\n0,60000,3\n"
    monkeypatch.setattr(cli, "fetch", lambda url, path, params: httpx.Response(200, text=csv))
    out = tmp_path / "w.csv"
    result = CliRunner().invoke(cli.app, ["export", "--columns", "placed", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == csv
    assert "1 windows written" in result.output
