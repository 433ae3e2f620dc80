"""`shop events`: read, carry, trace, audit and replay the Kafka log.

The logic lives in deploy/eventlog (pure where it can be); this module parses options, runs it
and prints: rich tables and readable lines by default, JSON with `--json`, progress on stderr.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from analytics_service.settings import Settings
from deploy.eventlog import audit as auditing
from deploy.eventlog import groups, reader, redrive, transfer
from deploy.eventlog import rebuild as rebuilding
from deploy.eventlog import trace as tracing
from deploy.eventlog.reader import Bound
from deploy.eventlog.records import EventLogError, LogRecord, decode_records, matches
from events.kit.settings import LOCAL_KAFKA
from events.topics import all_topics

T = TypeVar("T")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

events_app = typer.Typer(
    help="Read, carry, trace, audit and replay the event log.", no_args_is_help=True
)

Bootstrap = Annotated[
    str,
    typer.Option(
        "--bootstrap", envvar="SHOP_KAFKA_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers."
    ),
]
Json = Annotated[bool, typer.Option("--json", help="JSON output (one object per line).")]
Prefix = Annotated[
    str,
    typer.Option("--topic-prefix", help="Read the topics under this prefix (a sandbox)."),
]


def _run(work: Awaitable[T]) -> T:
    """Run async work; a failure the user can act on becomes one line and exit code 1."""
    try:
        return asyncio.run(work)  # type: ignore[arg-type]
    except EventLogError as exc:
        err_console.print(f"[red]error: {escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None


def _emit_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, default=str).decode() + "\n")


@contextmanager
def _progress(what: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    bar = Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not enabled,
    )
    with bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _log_topics(prefix: str, dlq: bool = True) -> list[str]:
    return [prefix + t.name for t in all_topics() if dlq or t.kind != "dlq"]


async def _present(bootstrap: str, names: list[str]) -> list[str]:
    async with reader.consumer(bootstrap) as kafka:
        have = await reader.existing_topics(kafka)
    present = [n for n in names if n in have]
    if not present:
        raise EventLogError(f"none of the topics exist: {', '.join(names)}")
    return present


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _record_dict(r: LogRecord) -> dict[str, Any]:
    value: Any
    try:
        value = orjson.loads(r.value) if r.value is not None else None
    except orjson.JSONDecodeError:
        value = r.value.decode(errors="replace") if r.value else None
    return {
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": _when(r.timestamp),
        "key": r.key.decode(errors="replace") if r.key is not None else None,
        "headers": {k: v.decode(errors="replace") for k, v in r.headers},
        "value": value,
    }


def _record_line(r: LogRecord) -> str:
    kind = r.header("event_type") or "?"
    corr = r.header("correlation_id") or "-"
    payload = ""
    if r.value is not None:
        try:
            payload = orjson.dumps(orjson.loads(r.value).get("payload")).decode()
        except (orjson.JSONDecodeError, AttributeError):
            payload = repr(r.value[:80])
    if len(payload) > 160:
        payload = payload[:157] + "..."
    dlq = f" [red]DLQ {escape(r.header('dlq.reason') or '')}[/red]" if r.is_dead_letter else ""
    return (
        f"[dim]{_when(r.timestamp)}[/dim] {escape(r.topic)}[{r.partition}]@{r.offset} "
        f"[bold]{escape(kind)}[/bold] corr={escape(corr)}{dlq} [dim]{escape(payload)}[/dim]"
    )


# --- tail ----------------------------------------------------------------------------------------


@events_app.command("tail")
def tail(
    topics: Annotated[list[str], typer.Argument(help="Topics to read.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep reading new records.")
    ] = False,
    types: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only these event types.")
    ] = None,
    correlation: Annotated[
        str | None, typer.Option("--correlation", "-c", help="Only this correlation id.")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="earliest, latest, an offset, an ISO time or an age (15m)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many records.")] = None,
    bootstrap: Bootstrap = LOCAL_KAFKA,
    as_json: Json = False,
) -> None:
    """Print the records of topics, readable or as JSON lines; --follow keeps going."""
    wanted = set(types or ())
    begin = reader.parse_bound(start, reader.LATEST if follow else reader.EARLIEST)

    def show(r: LogRecord) -> None:
        if as_json:
            _emit_json(_record_dict(r))
        else:
            console.print(_record_line(r), soft_wrap=True)

    async def work() -> None:
        shown = 0

        def keep(r: LogRecord) -> bool:
            return matches(r, types=wanted, correlation=correlation)

        async with reader.consumer(bootstrap) as kafka:
            ranges = await reader.resolve(kafka, topics, begin, reader.LATEST)
            async for batch in reader.read_ranges(kafka, ranges, keep=keep):
                for r in batch:
                    show(r)
                    shown += 1
                    if limit and shown >= limit:
                        return
            if not follow:
                return
            tps = await reader.partitions_of(kafka, topics)
            ends = await kafka.end_offsets(tps)
            kafka.assign(tps)
            for tp in tps:
                lo = ranges.get(tp, (ends[tp], ends[tp]))[1]
                kafka.seek(tp, max(lo, ends[tp]) if tp not in ranges else lo)
            while True:
                fetched = await kafka.getmany(timeout_ms=500, max_records=1000)
                for recs in fetched.values():
                    for cr in recs:
                        r = LogRecord.from_consumer(cr)
                        if keep(r):
                            show(r)
                            shown += 1
                            if limit and shown >= limit:
                                return

    with suppress(KeyboardInterrupt):
        _run(work())


# --- trace ---------------------------------------------------------------------------------------


def _took(step: tracing.Step) -> str:
    if step.took is None:
        return ""
    ms = step.took.total_seconds() * 1000
    return f"+{ms:.0f} ms" if ms < 10_000 else f"+{ms / 1000:.1f} s"


@events_app.command("trace")
def trace(
    order_id: Annotated[str, typer.Argument(help="The order id (the saga's correlation id).")],
    bootstrap: Bootstrap = LOCAL_KAFKA,
    topic_prefix: Prefix = "",
    as_json: Json = False,
) -> None:
    """Every message of one order across all topics, DLQs included, in causal order."""

    async def work() -> list[tracing.Step]:
        names = await _present(bootstrap, _log_topics(topic_prefix))
        with _progress("reading the log", not as_json):
            records = await reader.read_topics(
                bootstrap,
                names,
                keep=lambda r: r.header("correlation_id") == order_id,
            )
        found, _ = decode_records(records)
        return tracing.causal_order(found)

    steps = _run(work())
    if not steps:
        err_console.print(f"[red]error: no messages with correlation id {escape(order_id)}[/red]")
        raise typer.Exit(1)
    if as_json:
        for step in steps:
            _emit_json(tracing.step_dict(step))
        return
    table = Table(title=f"order {order_id}", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("step (↩ compensation)", no_wrap=True)
    table.add_column("where", no_wrap=True)
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    for step in steps:
        e = step.event
        name = escape(" " * step.depth + ("└" if step.depth else "") + e.type)
        if step.copy == "dead-lettered":
            name += f" [red]dead-lettered: {escape(e.record.header('dlq.reason') or '')}[/red]"
        elif step.copy:
            name += " [dim](duplicate)[/dim]"
        elif step.compensation:
            name += " [yellow]↩[/yellow]"
        table.add_row(
            name,
            f"{escape(e.record.topic)}[{e.record.partition}]@{e.record.offset}",
            e.occurred_at.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3],
            _took(step),
        )
    console.print(table)
    span = steps[-1].event.occurred_at - steps[0].event.occurred_at
    console.print(f"{len(steps)} messages over {span.total_seconds():.3f} s")


# --- export / import -----------------------------------------------------------------------------


@events_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="FILE.jsonl or FILE.jsonl.gz")],
    topics: Annotated[
        list[str] | None, typer.Option("--topics", help="Topics [default: all declared].")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="earliest, an offset, an ISO time or an age.")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="latest, an offset, an ISO time or an age.")
    ] = None,
    bootstrap: Bootstrap = LOCAL_KAFKA,
    as_json: Json = False,
) -> None:
    """Write a range of the log to a JSON-lines file, keys, headers and payloads intact."""
    names = topics or _log_topics("")

    async def work() -> transfer.TransferStats:
        with _progress("exporting", not as_json) as progress:
            return await transfer.export(
                bootstrap,
                names,
                out,
                start=reader.parse_bound(start, reader.EARLIEST),
                end=reader.parse_bound(end, reader.LATEST),
                progress=progress,
            )

    stats = _run(work())
    summary = {
        "file": str(out),
        "records": stats.records,
        "seconds": round(stats.seconds, 3),
        "per_second": round(stats.rate),
        "topics": stats.per_topic,
    }
    if as_json:
        _emit_json(summary)
    else:
        console.print(
            f"exported {stats.records} records from {len(names)} topics to {escape(str(out))} "
            f"in {stats.seconds:.2f} s ({stats.rate:,.0f}/s)"
        )


@events_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A file written by `shop events export`.")],
    topic_prefix: Annotated[
        str, typer.Option("--topic-prefix", help="Write to PREFIX+topic (a sandbox).")
    ] = "",
    bootstrap: Bootstrap = LOCAL_KAFKA,
    as_json: Json = False,
) -> None:
    """Write an export back, each record to the same partition, in order; topics are created."""

    async def work() -> tuple[transfer.TransferStats, list[str]]:
        with _progress("importing", not as_json) as progress:
            return await transfer.import_file(
                bootstrap, file, topic_prefix=topic_prefix, progress=progress
            )

    stats, created = _run(work())
    if as_json:
        _emit_json({"records": stats.records, "created_topics": created, "topics": stats.per_topic})
        return
    for name in created:
        console.print(f"[green]created[/green] {escape(name)}")
    console.print(
        f"imported {stats.records} records into {len(stats.per_topic)} topics "
        f"in {stats.seconds:.2f} s"
    )


# --- replay --------------------------------------------------------------------------------------


@events_app.command("replay")
def replay(
    group: Annotated[str, typer.Option("--group", "-g", help="The consumer group to reset.")],
    to_earliest: Annotated[bool, typer.Option("--to-earliest", help="Back to the start.")] = False,
    to_time: Annotated[
        str | None, typer.Option("--to-time", help="To the first record at or after this time.")
    ] = None,
    topics: Annotated[
        list[str] | None,
        typer.Option("--topic", help="Only these topics [default: those the group committed]."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the change only.")] = False,
    bootstrap: Bootstrap = LOCAL_KAFKA,
    as_json: Json = False,
) -> None:
    """Reset a consumer group's offsets so its service reprocesses history (group must be idle)."""
    if to_earliest == (to_time is not None):
        err_console.print("[red]error: give exactly one of --to-earliest and --to-time[/red]")
        raise typer.Exit(2)
    target: Bound = reader.EARLIEST if to_earliest else reader.parse_bound(to_time, reader.EARLIEST)

    async def work() -> tuple[groups.GroupState, list[groups.OffsetChange]]:
        state = await groups.describe(bootstrap, group)
        changes = await groups.plan(bootstrap, group, target, topics)
        if not dry_run:
            await groups.apply(bootstrap, group, changes)
        return state, changes

    state, changes = _run(work())
    if as_json:
        _emit_json(
            {
                "group": group,
                "state": state.state,
                "members": len(state.members),
                "dry_run": dry_run,
                "changes": [c.as_dict() for c in changes],
            }
        )
        return
    title = f"group {group} ({state.state}) → {target}" + (" [dry run]" if dry_run else "")
    table = Table("topic", "partition", "current", "new", "records to reprocess", title=title)
    for c in changes:
        table.add_row(
            escape(c.topic),
            str(c.partition),
            "-" if c.current is None else str(c.current),
            str(c.new),
            "-" if c.delta is None else str(-c.delta),
        )
    console.print(table)
    if dry_run:
        if state.members:
            console.print(
                f"[yellow]group has {len(state.members)} live member(s): a reset would be "
                "refused[/yellow]"
            )
        console.print("dry run: nothing changed")
    else:
        console.print(f"[green]reset {len(changes)} partitions of {escape(group)}[/green]")


# --- redrive -------------------------------------------------------------------------------------


@events_app.command("redrive")
def redrive_(
    dlq_topic: Annotated[
        str, typer.Argument(help="The dead-letter topic, e.g. payment.commands.dlq")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent.")] = False,
    group: Annotated[
        str, typer.Option(help="Consumer group that remembers what was redriven.")
    ] = redrive.DEFAULT_GROUP,
    bootstrap: Bootstrap = LOCAL_KAFKA,
    as_json: Json = False,
) -> None:
    """Send dead letters back to their source topic (dlq.* headers stripped), each once."""
    if not dlq_topic.endswith(".dlq"):
        err_console.print(f"[red]error: {escape(dlq_topic)} is not a dead-letter topic[/red]")
        raise typer.Exit(2)
    report = _run(redrive.redrive(bootstrap, dlq_topic, group=group, dry_run=dry_run))
    if as_json:
        _emit_json(
            {
                "dlq": dlq_topic,
                "dry_run": dry_run,
                "sent": report.sent,
                "records": [p.as_dict() for p in report.planned],
                "skipped": [r.offset for r in report.skipped],
            }
        )
        return
    if report.planned:
        table = Table("offset", "event", "back to", "reason", "error")
        for p in report.planned:
            table.add_row(
                str(p.record.offset),
                escape(p.record.header("event_type") or "?"),
                escape(p.topic) + (f"[{p.partition}]" if p.partition is not None else ""),
                escape(p.record.header("dlq.reason") or ""),
                escape((p.record.header("dlq.error") or "")[:60]),
            )
        console.print(table)
    for r in report.skipped:
        console.print(f"[yellow]offset {r.offset}: no dlq.source_topic header, skipped[/yellow]")
    if dry_run:
        console.print(f"dry run: {len(report.planned)} would be sent")
    else:
        console.print(f"sent {report.sent} dead letters back to their topics")


# --- audit ---------------------------------------------------------------------------------------


@events_app.command("audit")
def audit(
    topic_prefix: Prefix = "",
    deadline: Annotated[
        float, typer.Option(help="Seconds an order may take to end before it counts as stuck.")
    ] = 120,
    bootstrap: Bootstrap = LOCAL_KAFKA,
    as_json: Json = False,
) -> None:
    """Check the design brief's invariants over the whole log; exit 1 naming the orders."""

    async def work() -> auditing.AuditReport:
        names = await _present(bootstrap, _log_topics(topic_prefix))
        async with reader.consumer(bootstrap) as kafka:
            ranges = await reader.resolve(kafka, names, reader.EARLIEST, reader.LATEST)
            total = sum(hi - lo for lo, hi in ranges.values())
            records: list[LogRecord] = []
            with _progress("reading the log", not as_json) as progress:
                async for batch in reader.read_ranges(kafka, ranges):
                    records += batch
                    progress(len(records), total)
        found, undecodable = decode_records(records)
        report = auditing.audit(found, now=datetime.now(UTC), deadline=timedelta(seconds=deadline))
        report.undecodable += sum(1 for r in undecodable if not r.is_dead_letter)
        return report

    report = _run(work())
    if as_json:
        _emit_json(report.as_dict())
    else:
        summary = Table(show_header=False, box=None)
        summary.add_row("events", str(report.events))
        summary.add_row("skus", str(report.skus))
        for outcome, n in sorted(report.outcomes.items()):
            summary.add_row(f"orders {outcome.lower()}", str(n))
        summary.add_row("dead letters", str(report.dead_letters))
        if report.undecodable:
            summary.add_row("undecodable", str(report.undecodable))
        console.print(summary)
        if report.ok:
            console.print("[green]audit passed: every invariant holds[/green]")
        else:
            table = Table("invariant", "order / sku", "what", title="violations")
            for v in report.violations:
                table.add_row(v.invariant, escape(v.subject), escape(v.detail))
            console.print(table)
            console.print(
                f"[red]audit failed: {len(report.violations)} violation(s) involving "
                f"{', '.join(report.subjects)}[/red]",
                soft_wrap=True,
            )
    if not report.ok:
        raise typer.Exit(1)


# --- rebuild -------------------------------------------------------------------------------------

rebuild_app = typer.Typer(
    help="Rebuild a read model from the whole log and compare it with the live one.",
    no_args_is_help=True,
)
events_app.add_typer(rebuild_app, name="rebuild")

LIVE_ANALYTICS = "http://127.0.0.1:8002"


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} events/s")


def _rebuild_fail(message: str) -> NoReturn:
    err_console.print(f"[red]error: {escape(message)}[/red]", soft_wrap=True)
    raise typer.Exit(2)


def _rebuild_report(
    rebuilt: rebuilding.Rebuilt,
    live: dict[str, Any] | None,
    live_error: str | None,
    lag: dict[str, int],
    comparison: rebuilding.Comparison | None,
    dropped: list[str],
) -> dict[str, Any]:
    state = rebuilt.fold.state()
    if comparison is not None:
        outcome = "match" if comparison.ok else "differ"
    elif lag:
        outcome = "live behind"
    else:
        outcome = "no live service"
    return {
        "app_id": rebuilt.app_id,
        "records": rebuilt.records,
        "seconds": round(rebuilt.seconds, 3),
        "events_per_s": round(rebuilt.rate),
        "read_to": rebuilt.read_to,
        "changelogs": {
            "records": rebuilt.changelog_records,
            "kept": not dropped,
            "deleted": dropped,
        },
        "live": None
        if live is None
        else {"app_id": live.get("app_id"), "positions": live.get("positions")},
        "live_error": live_error,
        "live_behind": lag,
        "newer_than_rebuild": dict(rebuilt.newer),
        "outcome": outcome,
        "differing": comparison.differing if comparison else [],
        "differences": [d.as_dict() for d in comparison.differences] if comparison else [],
        "rebuilt": {k: state[k] for k in ("tables", "totals", "low_stock", "horizon")}
        | {"windows": len(state["windows"])},
    }


def _print_rebuild(report: dict[str, Any], comparison: rebuilding.Comparison | None) -> None:
    kept = report["changelogs"]["kept"]
    console.print(
        f"rebuilt {report['records']:,} records in {report['seconds']:.2f} s "
        f"({report['events_per_s']:,} events/s) under [bold]{escape(report['app_id'])}[/bold]; "
        + ("changelogs kept: " if kept else "changelogs written, then deleted (--keep keeps): ")
        + ", ".join(f"{n} {c:,}" for n, c in report["changelogs"]["records"].items()),
        soft_wrap=True,
    )
    if report["live"] is None:
        console.print(
            f"[yellow]no live analytics service: {escape(report['live_error'] or '')}[/yellow]",
            soft_wrap=True,
        )
        t = report["rebuilt"]["totals"]
        table = Table("rebuilt figure", "value", box=box.SIMPLE_HEAD)
        for name, entry in report["rebuilt"]["tables"].items():
            table.add_row(f"tables.{name}", f"{entry['entries']} entries, {entry['digest'][:12]}")
        for name in ("placed", "confirmed", "rejected", "cancelled", "refunded", "units"):
            table.add_row(name, str(t[name]))
        table.add_row("revenue", escape(orjson.dumps(t["revenue"]).decode()))
        table.add_row("windows (1 minute)", str(report["rebuilt"]["windows"]))
        table.add_row("low-stock alerts", str(len(report["rebuilt"]["low_stock"])))
        console.print(table)
        return
    if report["newer_than_rebuild"]:
        newer = sum(report["newer_than_rebuild"].values())
        console.print(
            f"the live service was {newer} events ahead of the rebuild's end offsets; the rebuild "
            "folded them too before comparing: "
            + ", ".join(
                f"{escape(k)} {v}" for k, v in sorted(report["newer_than_rebuild"].items())
            ),
            soft_wrap=True,
        )
    if report["live_behind"]:
        console.print(
            "[red]the live service has not folded everything the rebuild read "
            "(offsets behind, per partition): "
            + ", ".join(f"{escape(k)} {v}" for k, v in sorted(report["live_behind"].items()))
            + "[/red]",
            soft_wrap=True,
        )
        return
    assert comparison is not None
    table = Table("what", "live", "rebuilt", "", box=box.SIMPLE_HEAD, title="live vs rebuilt")
    for row in comparison.rows:
        mark = "[green]✓[/green]" if row.match else "[red]✗[/red]"
        table.add_row(escape(row.what), escape(row.live), escape(row.rebuilt), mark)
    console.print(table)
    if comparison.ok:
        console.print("[green]the rebuilt tables match the live ones[/green]")
        return
    shown = comparison.differences[:20]
    diffs = Table("difference", "live", "rebuilt", box=box.SIMPLE_HEAD)
    for d in shown:
        diffs.add_row(escape(d.what), escape(str(d.live)), escape(str(d.rebuilt)))
    console.print(diffs)
    if len(comparison.differences) > len(shown):
        console.print(f"... and {len(comparison.differences) - len(shown)} more")
    console.print(
        f"[red]the rebuilt tables differ from the live ones in: "
        f"{escape(', '.join(comparison.differing))}[/red]",
        soft_wrap=True,
    )


@rebuild_app.command("analytics")
def rebuild_analytics(
    app_id: Annotated[
        str | None,
        typer.Option(
            help="Application id to rebuild under [default: rebuild-<UTC time>-analytics]."
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="SHOP_ANALYTICS_URL",
            help=f"The live analytics service to compare with [default: {LIVE_ANALYTICS}].",
        ),
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the rebuilt changelog topics and group offsets.")
    ] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the live service to fold what was read.")
    ] = 30.0,
    bootstrap: Bootstrap = LOCAL_KAFKA,
    as_json: Json = False,
) -> None:
    """Rebuild the analytics tables from the whole log under a fresh application id and compare
    them with the live service: exit 0 when they match, 1 when they differ, 2 on errors."""
    live_url = url or LIVE_ANALYTICS
    target = app_id or rebuilding.default_app_id()

    async def work() -> tuple[dict[str, Any], rebuilding.Comparison | None]:
        live: dict[str, Any] | None = None
        live_error: str | None = None
        try:
            live = await rebuilding.fetch_live(live_url)
        except EventLogError as exc:
            if url is not None:
                raise
            live_error = str(exc)
        defaults = Settings()
        grace_s = int(live["grace_s"]) if live else defaults.grace_s
        retention_h = int(live["retention_h"]) if live else defaults.retention_h
        rebuilding.check_app_id(target, str(live["app_id"]) if live else None)
        await rebuilding.refuse_existing(bootstrap, target)
        bar = Progress(
            TextColumn("rebuilding analytics"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=as_json,
        )
        with bar:
            task = bar.add_task("rebuild", total=None)
            rebuilt = await rebuilding.fold_log(
                bootstrap,
                target,
                grace_s=grace_s,
                retention_h=retention_h,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        comparison: rebuilding.Comparison | None = None
        lag: dict[str, int] = {}
        if live is not None:
            live, positions, lag = await rebuilding.settled_live(
                bootstrap, live_url, rebuilt.fold.positions, wait
            )
            if not lag:
                await rebuilding.catch_up(bootstrap, rebuilt, positions)
                comparison = rebuilding.compare(live, rebuilt.fold.state())
        await rebuilding.write_changelogs(bootstrap, rebuilt)
        dropped = [] if keep else await rebuilding.drop(bootstrap, target)
        report = _rebuild_report(rebuilt, live, live_error, lag, comparison, dropped)
        return report, comparison

    try:
        report, comparison = asyncio.run(work())
    except EventLogError as exc:
        _rebuild_fail(str(exc))
    if as_json:
        _emit_json(report)
    else:
        _print_rebuild(report, comparison)
    if report["outcome"] in ("differ", "live behind"):
        raise typer.Exit(1)


@rebuild_app.command("drop")
def rebuild_drop(
    app_id: Annotated[str, typer.Argument(help="The application id a kept rebuild ran under.")],
    bootstrap: Bootstrap = LOCAL_KAFKA,
) -> None:
    """Delete a kept rebuild's changelog topics and consumer group."""
    try:
        rebuilding.check_app_id(app_id)
        dropped = asyncio.run(rebuilding.drop(bootstrap, app_id))
    except EventLogError as exc:
        _rebuild_fail(str(exc))
    console.print(f"deleted {', '.join(dropped) or 'no topics'} and the group {escape(app_id)}")


__all__ = ["events_app"]
