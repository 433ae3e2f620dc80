"""`shop`: one command for what an operator or developer does with the platform.

Sub-apps are plain Typer apps added to `app` at the bottom of this module; add yours the same way.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from analytics_service import cli as analytics_cli
from deploy import events_cli, platform_cli, seed, tokens
from deploy.local.common import DEFAULT_DATA_DIR, InfraError, run_sync
from deploy.local.kafka import DEFAULT_PORT as KAFKA_PORT
from deploy.local.postgres import DEFAULT_PORT as PG_PORT
from deploy.local.stack import SERVICE_DATABASES, LocalStack
from deploy.local.topics import TopicError, ensure_topics, list_topics
from events.kit import gcsettle
from events.kit.settings import LOCAL_KAFKA
from events.topics import all_topics, replication_for

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    help="Operate the shop platform.", no_args_is_help=True, pretty_exceptions_enable=False
)
infra_app = typer.Typer(help="Local Kafka and PostgreSQL, no Docker needed.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics declared in events/topics.py.", no_args_is_help=True)

DataDir = Annotated[
    Path,
    typer.Option(
        "--data", envvar="SHOP_DATA_DIR", help="Folder that keeps the Kafka log and the database."
    ),
]
Bootstrap = Annotated[
    str,
    typer.Option(
        "--bootstrap", envvar="SHOP_KAFKA_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers."
    ),
]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _show_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@infra_app.command("up")
def infra_up(
    kafka_port: Annotated[int, typer.Option(help="Kafka client port.")] = KAFKA_PORT,
    kafka_controller_port: Annotated[
        int | None, typer.Option(help="KRaft controller port [default: Kafka port + 1].")
    ] = None,
    pg_port: Annotated[int, typer.Option(help="PostgreSQL port.")] = PG_PORT,
    brokers: Annotated[
        int,
        typer.Option(
            min=1,
            max=9,
            help="Kafka nodes in one KRaft cluster, on consecutive ports (node i: Kafka port "
            "+ 2(i-1), its controller next to it); from 3 on, topics get 3 replicas and "
            "min.insync.replicas 2.",
        ),
    ] = 1,
    data: DataDir = DEFAULT_DATA_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 120,
) -> None:
    """Start Kafka and PostgreSQL (or find them running), then create databases and topics."""
    stack = LocalStack(data, kafka_port, kafka_controller_port, pg_port, brokers=brokers)
    with console.status("starting") as spinner:
        report = stack.up(timeout=timeout, step=lambda msg: spinner.update(f"{msg}…"))

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for node in stack.kafka.nodes:
        label = "Kafka" if brokers == 1 else f"Kafka node {node.node_id}"
        table.add_row(label, f"{node.bootstrap}  (log {_show_path(node.server_log)})")
    if brokers > 1:
        rf, min_isr = replication_for(brokers)
        table.add_row("Replication", f"{rf} replicas, min.insync.replicas {min_isr}")
    pg = stack.postgres
    table.add_row("PostgreSQL", f"{pg.admin_url}  (log {_show_path(pg.log_file)})")
    table.add_row("Databases", ", ".join(SERVICE_DATABASES))
    created = f"{len(report.created)} created" if report.created else "all present"
    table.add_row("Topics", f"{len(report.created) + len(report.existing)} declared, {created}")
    table.add_row("Data", _show_path(data))
    console.print("[green]infrastructure is up[/green]")
    console.print(table)
    console.print("Stop it with [bold]shop infra down[/bold].")


@infra_app.command("down")
def infra_down(data: DataDir = DEFAULT_DATA_DIR) -> None:
    """Stop Kafka and PostgreSQL; their data stays."""
    with console.status("stopping…"):
        stopped = LocalStack(data).down()
    for name, was_running in stopped.items():
        console.print(f"{name}: {'stopped' if was_running else 'was not running'}")


@infra_app.command("status")
def infra_status(data: DataDir = DEFAULT_DATA_DIR) -> None:
    """Show whether Kafka and PostgreSQL run and answer; exit code 1 when one does not."""
    statuses = LocalStack(data).status()
    table = Table("service", "pid", "address", "health", "detail")
    for s in statuses:
        health = "[green]healthy[/green]" if s.healthy else "[red]unhealthy[/red]"
        table.add_row(s.name, str(s.pid or "-"), s.address, health, s.detail)
    console.print(table)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(
    bootstrap: Bootstrap = LOCAL_KAFKA,
    replication_factor: Annotated[
        int | None,
        typer.Option(min=1, help="[default: min(3, brokers in the cluster)]", show_default=False),
    ] = None,
) -> None:
    """Create the declared topics that are missing; existing ones are left alone."""
    specs = all_topics()
    report = run_sync(ensure_topics(bootstrap, specs, replication_factor=replication_factor))
    for name in report.created:
        console.print(f"[green]created[/green] {name}")
    console.print(f"{len(report.created)} created, {len(report.existing)} already present")


@topics_app.command("list")
def topics_list(
    bootstrap: Bootstrap = LOCAL_KAFKA,
    internal: Annotated[bool, typer.Option(help="Include Kafka's internal topics.")] = False,
) -> None:
    """List the topics on the broker, and the declared ones it lacks."""
    declared = {s.name: s for s in all_topics()}
    present = run_sync(list_topics(bootstrap, internal=internal))
    table = Table("topic", "partitions", "replicas", "declared", "leaders")
    for t in present:
        spec = declared.get(t.name)
        replicas = str(t.replicas)
        if t.under_replicated:
            replicas += f" [yellow]({t.under_replicated} under-replicated)[/yellow]"
        table.add_row(
            t.name,
            str(t.partitions),
            replicas,
            f"{spec.kind}, {_plural(spec.partitions, 'partition')}"
            if spec
            else "[yellow]no[/yellow]",
            "ok" if t.leaders_ready else "[red]missing[/red]",
        )
    names = {t.name for t in present}
    for name in sorted(set(declared) - names):
        table.add_row(name, "-", "-", "[red]missing on broker[/red]", "-")
    console.print(table)


@app.command(
    "bench",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """The benchmark (`make bench`): every argument goes to `python -m bench` (try --help)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "__main__.py").exists():
        raise InfraError(
            f"shop bench runs from a source checkout; no bench/ next to {root / 'deploy'}"
        )
    done = subprocess.run([sys.executable, "-m", "bench", *ctx.args], cwd=root, check=False)
    raise typer.Exit(done.returncode)


app.add_typer(infra_app, name="infra")
app.add_typer(topics_app, name="topics")
app.add_typer(events_cli.events_app, name="events")
app.add_typer(analytics_cli.app, name="analytics")
app.command("seed")(seed.seed)
app.command("token")(tokens.token)
platform_cli.register(app)


def main() -> None:
    # Failures reach the user as one InfraError line; aiokafka's own connection logs are noise.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # As the services and the bench do (the bench measures `shop events export` and `rebuild`
    # in its own process, so the CLI runs as measured): startup's objects frozen, fewer young
    # collections. Export ran at 85-93k records/s so, 84k with CPython's defaults.
    gcsettle.settle(collect=False)
    try:
        app()
    except (InfraError, TopicError) as e:
        first, _, rest = str(e).partition("\n")
        err_console.print(f"[red]error: {escape(first)}[/red]", soft_wrap=True)
        if rest:
            err_console.print(escape(rest), style="dim")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
