"""`shop analytics`: the dashboard's figures in a terminal, and CSV export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Sales analytics from the running analytics service.", no_args_is_help=True)
console = Console()

Url = Annotated[
    str, typer.Option("--url", envvar="SHOP_ANALYTICS_URL", help="The analytics service.")
]


def fetch(url: str, path: str, params: dict[str, Any]) -> httpx.Response:
    try:
        r = httpx.get(url.rstrip("/") + path, params=params, timeout=10.0)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the analytics service at {url}: {exc}[/red]")
        raise typer.Exit(1) from None
    if r.status_code != 200:
        console.print(f"[red]{r.status_code} from {path}: {r.text[:300]}[/red]")
        raise typer.Exit(1)
    return r


def money(amounts: dict[str, int]) -> str:
    return " · ".join(f"{minor / 100:,.2f} {cur}" for cur, minor in sorted(amounts.items())) or "0"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def summary_table(body: dict[str, Any]) -> Table:
    """The KPIs of the range next to the running totals."""
    table = Table("figure", f"last {body['range']}", "since start", title="sales analytics")
    w, t = body["window"], body["totals"]
    for name in ("placed", "confirmed", "rejected", "cancelled", "refunded", "units"):
        table.add_row(name, str(w[name]), str(t[name]))
    table.add_row("revenue", money(w["revenue"]), money(t["revenue"]))
    table.add_row(
        "average order value", money(w["average_order_value"]), money(t["average_order_value"])
    )
    table.add_row(
        "payment decline rate", rate(w["payment_decline_rate"]), rate(t["payment_decline_rate"])
    )
    table.add_row("out-of-stock rate", rate(w["out_of_stock_rate"]), rate(t["out_of_stock_rate"]))
    lat = w["latency_ms"]
    table.add_row(
        "placed → confirmed p50/p90/p99 (ms)", f"{lat['p50']}/{lat['p90']}/{lat['p99']}", ""
    )
    return table


@app.command("summary")
def summary(
    url: Url = "http://127.0.0.1:8002",
    range_: Annotated[str, typer.Option("--range", help="15m, 1h or 24h.")] = "15m",
) -> None:
    """KPIs for a time range, top products and low-stock alerts."""
    body: dict[str, Any] = fetch(url, "/api/summary", {"range": range_}).json()
    console.print(summary_table(body))
    top = Table("SKU", "units", title="top products by units")
    for row in body["window"]["top_products"]["by_units"]:
        top.add_row(row["sku"], str(row["units"]))
    console.print(top)
    if body["low_stock"]:
        low = Table("SKU", "available", "threshold", title="low stock")
        for a in body["low_stock"]:
            low.add_row(a["sku"], str(a["available"]), str(a["threshold"]))
        console.print(low)


@app.command("export")
def export(
    url: Url = "http://127.0.0.1:8002",
    size: Annotated[int, typer.Option(min=1, max=60, help="Window minutes.")] = 1,
    columns: Annotated[
        str | None, typer.Option(help="Comma-separated columns, e.g. placed,revenue.USD.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Windows as CSV, one row per window."""
    params: dict[str, Any] = {"size": size} | ({"columns": columns} if columns else {})
    text = fetch(url, "/api/export.csv", params).text
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        console.print(f"{text.count(chr(10)) - 1} windows written to {out}")
