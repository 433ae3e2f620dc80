"""What must hold once the faults are healed and the platform has settled.

- the log's own audit (`shop events audit`, as a library) is clean;
- per SKU, on hand = initial stock + restocks - units of CONFIRMED orders, and nothing is left
  reserved;
- every captured payment belongs to a CONFIRMED order or was refunded, and every CONFIRMED order
  was captured;
- every acknowledged order reached a terminal state;
- every accepted request has exactly one order (no request, however often retried, made two);
- every request got a definite answer, and no service process exited on its own.

A fault the harness failed to inject is reported beside the faults, not as a violation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from deploy.eventlog import audit as auditing
from deploy.eventlog import reader
from deploy.eventlog.records import LogRecord, decode_records
from events.topics import all_topics
from tests.faults.load import OrderRequest

TERMINAL = {"CONFIRMED", "REJECTED", "CANCELLED"}


@dataclass(frozen=True, order=True)
class Violation:
    check: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.subject}: {self.detail}"


@dataclass
class Findings:
    violations: list[Violation] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    audit: dict[str, object] = field(default_factory=dict)

    def add(self, check: str, subject: str, detail: str) -> None:
        self.violations.append(Violation(check, subject, detail))


async def audit_log(bootstrap: str) -> auditing.AuditReport:
    """`shop events audit` over the whole log, with no grace for orders in flight."""
    names = [t.name for t in all_topics()]
    async with reader.consumer(bootstrap) as kafka:
        present = await reader.existing_topics(kafka)
        ranges = await reader.resolve(
            kafka, [n for n in names if n in present], reader.EARLIEST, reader.LATEST
        )
        records: list[LogRecord] = []
        async for batch in reader.read_ranges(kafka, ranges):
            records += batch
    found, undecodable = decode_records(records)
    report = auditing.audit(found, now=datetime.now(UTC), deadline=timedelta(0))
    report.undecodable += sum(1 for r in undecodable if not r.is_dead_letter)
    return report


async def check_all(
    *,
    bootstrap: str,
    database_url: Mapping[str, str],
    requests: Sequence[OrderRequest],
    stock_in: Mapping[str, int],
    unanswered: int,
    crashes: Sequence[str],
) -> Findings:
    found = Findings()
    report = await audit_log(bootstrap)
    found.audit = report.as_dict()
    for v in report.violations:
        found.add(f"audit {v.invariant}", v.subject, v.detail)
    orders = await _rows(
        database_url["order"], "SELECT order_id, customer_id, status, lines FROM orders"
    )
    payments = await _rows(database_url["payment"], "SELECT order_id, status FROM payments")
    stock = await _rows(database_url["inventory"], "SELECT sku, on_hand, reserved FROM stock")
    found.statuses = Counter(str(o["status"]) for o in orders)

    sold: Counter[str] = Counter()
    for o in orders:
        if o["status"] == "CONFIRMED":
            for line in orjson.loads(o["lines"]):
                sold[line["sku"]] += int(line["quantity"])
    levels = {str(s["sku"]): s for s in stock}
    for sku, units in stock_in.items():
        level = levels.get(sku)
        if level is None:
            found.add("stock", sku, "no stock row")
            continue
        expected = units - sold[sku]
        if level["on_hand"] != expected:
            found.add(
                "stock",
                sku,
                f"on hand {level['on_hand']}, expected {units} in - {sold[sku]} sold = {expected}",
            )
        if level["reserved"] != 0:
            found.add("stock", sku, f"{level['reserved']} still reserved after settling")

    status_of = {str(o["order_id"]): str(o["status"]) for o in orders}
    paid = {str(p["order_id"]): str(p["status"]) for p in payments}
    for order_id, pay in paid.items():
        if pay == "CAPTURED" and status_of.get(order_id) != "CONFIRMED":
            found.add("stray charge", order_id, f"captured, order {status_of.get(order_id)}")
    for order_id, status in status_of.items():
        if status == "CONFIRMED" and paid.get(order_id) != "CAPTURED":
            found.add("unpaid", order_id, f"CONFIRMED, payment {paid.get(order_id)}")

    per_customer: dict[str, list[str]] = {}
    for o in orders:
        per_customer.setdefault(str(o["customer_id"]), []).append(str(o["order_id"]))
    for r in requests:
        mine = per_customer.get(r.customer, [])
        if r.outcome == "ok":
            if mine != [r.order_id]:
                found.add("one order per request", r.key, f"answered {r.order_id}, found {mine}")
            elif status_of[mine[0]] not in TERMINAL:
                found.add("terminal", mine[0], f"still {status_of[mine[0]]}")
        elif len(mine) > 1:
            found.add("one order per request", r.key, f"{r.outcome} request made {len(mine)}")
    if unanswered:
        found.add("answers", "requests", f"{unanswered} request(s) still without a definite answer")
    for crash in crashes:
        found.add("crash", crash.split(" ", 1)[0], crash)
    return found


async def _rows(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql)
        return rows
    finally:
        await conn.close()
