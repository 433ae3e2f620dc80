"""`shop up / run / status / down / demo`: the whole platform on the local stack."""

from __future__ import annotations

import asyncio
import random
import shlex
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deploy import tokens
from deploy.local.common import DEFAULT_DATA_DIR, InfraError
from deploy.local.services import ServiceSupervisor, parse_replicas
from deploy.local.stack import LocalStack

console = Console()

DataDir = Annotated[
    Path,
    typer.Option(
        "--data", envvar="SHOP_DATA_DIR", help="Folder of the Kafka log, databases, logs."
    ),
]
TOKENS = (
    ["tok_approve"] * 85
    + ["tok_decline"] * 7
    + ["tok_insufficient_funds"] * 5
    + ["tok_timeout"] * 3
)


def supervisor(
    stack: LocalStack, data: Path, replicas: dict[str, int] | None = None
) -> ServiceSupervisor:
    return ServiceSupervisor(
        kafka_bootstrap=stack.kafka.bootstrap,
        database_url=stack.postgres.database_url,
        data_dir=data,
        replicas=replicas or {},
    )


def _replicas(spec: str) -> dict[str, int]:
    try:
        return parse_replicas(spec)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--replicas") from None


def _status_table(stack: LocalStack, sup: ServiceSupervisor) -> Table:
    table = Table("process", "pid", "where", "health", title="shop platform")
    for s in stack.status():
        health = "[green]healthy[/green]" if s.healthy else "[red]down[/red]"
        table.add_row(s.name, str(s.pid or "-"), s.address, health)
    for state in sup.states():
        health = "[green]ready[/green]" if state.ready else "[red]down[/red]"
        table.add_row(state.name, str(state.pid or "-"), state.url, health)
    return table


def _where_to_look(sup: ServiceSupervisor) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Orders API", f"{sup.url('order')}/docs")
    table.add_row("Catalog API", f"{sup.url('catalog')}/products")
    table.add_row("Analytics", f"{sup.url('analytics')}/")
    table.add_row("Inventory", f"{sup.url('inventory')}/stock?below_threshold=true")
    table.add_row("Payments", f"{sup.url('payment')}/docs")
    table.add_row("Logs", str(sup.data_dir / "logs"))
    return table


def _shop_command() -> str:
    """How to call `shop` from the caller's shell: the running executable when it is `shop`."""
    argv0 = Path(sys.argv[0])
    return shlex.quote(str(argv0)) if argv0.name == "shop" else "shop"


def _try_it(sup: ServiceSupervisor) -> str:
    """Two commands that place an order, as a client does: mint a token, post with it."""
    body = orjson.dumps(
        {
            "lines": [{"sku": "SKU-0001", "quantity": 1}],
            "currency": "USD",
            "payment_token": "tok_approve",
        }
    ).decode()
    return (
        f"Try: TOKEN=$({_shop_command()} token --customer alice)\n"
        f'     curl -si -XPOST {sup.url("order")}/orders -H "Authorization: Bearer $TOKEN" '
        f"-H 'content-type: application/json' -d '{body}'"
    )


def _start(stack: LocalStack, sup: ServiceSupervisor, seed: bool) -> None:
    with console.status("starting") as spinner:
        stack.up(step=lambda msg: spinner.update(f"{msg}…"))
        sup.start_all(step=lambda msg: spinner.update(f"{msg}…"))
    if seed:
        from deploy import seed as seeding

        seeding.run_seed(
            catalog_url=sup.url("catalog"), kafka=stack.kafka.bootstrap, console=console
        )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_termination() -> None:
    """SIGTERM and SIGHUP (`timeout`, a process manager, a closed terminal) stop the platform the
    way Ctrl-C does. Python's default for them ends this process at once and leaves Kafka,
    PostgreSQL and the five services running."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)


def up(
    data: DataDir = DEFAULT_DATA_DIR,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Return once started.")] = False,
    seed: Annotated[bool, typer.Option(help="Load the demo catalog and stock.")] = True,
    replicas: Annotated[
        str,
        typer.Option(
            help="Processes per service, in one consumer group: inventory=3,order=2. "
            "Replica k listens on the service's port + 10k."
        ),
    ] = "",
) -> None:
    """Start Kafka, PostgreSQL and the five services, seed the catalog, show live status."""
    stack = LocalStack(data)
    sup = supervisor(stack, data, _replicas(replicas))
    stop_on_termination()
    try:
        _start(stack, sup, seed)
        console.print(_where_to_look(sup))
        console.print(_try_it(sup), soft_wrap=True, markup=False)
        if detach:
            console.print(
                "Running in the background; [bold]shop status[/bold], [bold]shop down[/bold]."
            )
            return
        console.print("Ctrl-C stops everything.")
        with Live(_status_table(stack, sup), console=console, refresh_per_second=1) as live:
            while True:
                time.sleep(2)
                live.update(_status_table(stack, sup))
    except KeyboardInterrupt:
        pass  # also when it comes while starting: what did start is stopped below
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # a second one must not cut the stop short
    with console.status("stopping…"):
        sup.stop_all()
        stack.down()
    console.print("stopped; data kept in " + str(data))


def status(data: DataDir = DEFAULT_DATA_DIR) -> None:
    """Every process of the platform, its pid, address and health; exit 1 if any is down."""
    stack = LocalStack(data)
    sup = supervisor(stack, data)
    console.print(_status_table(stack, sup))
    healthy = all(s.healthy for s in stack.status()) and all(s.ready for s in sup.states())
    if not healthy:
        raise typer.Exit(1)


def down(
    data: DataDir = DEFAULT_DATA_DIR,
    keep_infra: Annotated[bool, typer.Option(help="Stop only the services.")] = False,
) -> None:
    """Stop the services, then Kafka and PostgreSQL; data stays."""
    stack = LocalStack(data)
    with console.status("stopping…"):
        stopped = supervisor(stack, data).stop_all()
        infra = {} if keep_infra else stack.down()
    console.print(f"services stopped: {', '.join(stopped) or 'none were running'}")
    for name, was_running in infra.items():
        console.print(f"{name}: {'stopped' if was_running else 'was not running'}")


async def _demo(order_url: str, catalog_url: str, rate: float, duration: float, seed: int) -> None:
    rnd = random.Random(seed)
    async with httpx.AsyncClient(timeout=10.0) as client:
        skus = await _active_skus(client, catalog_url)
        if not skus:
            raise InfraError("the catalog has no active products: run `shop seed` first")
        weights = [1 / (rank + 1) for rank in range(len(skus))]
        customers = [tokens.bearer(f"demo-{n}") for n in range(1, 501)]
        total = int(rate * duration)
        outcomes: Counter[str] = Counter()
        order_ids: dict[str, dict[str, str]] = {}  # order id -> its customer's headers
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
        )
        in_flight: set[asyncio.Task[None]] = set()

        async def post_one(i: int) -> None:
            lines = {
                rnd.choices(skus, weights)[0]: rnd.randint(1, 3) for _ in range(rnd.randint(1, 3))
            }
            body = {
                "lines": [{"sku": s, "quantity": q} for s, q in lines.items()],
                "currency": "USD",
                "payment_token": rnd.choice(TOKENS),
            }
            customer = customers[rnd.randrange(len(customers))]
            try:
                r = await client.post(
                    f"{order_url}/orders",
                    json=body,
                    headers={"Idempotency-Key": f"demo-{seed}-{i}"} | customer,
                )
                outcomes[f"HTTP {r.status_code}"] += 1
                if r.status_code == 202:
                    order_ids[r.json()["order_id"]] = customer
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1

        with progress:
            task = progress.add_task("posting orders", total=total, detail="")
            start = time.monotonic()
            for i in range(total):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                t = asyncio.create_task(post_one(i))
                in_flight.add(t)
                t.add_done_callback(in_flight.discard)
                detail = " ".join(f"{k}:{v}" for k, v in sorted(outcomes.items()))
                progress.update(task, advance=1, detail=detail)
            await asyncio.gather(*in_flight)
        statuses = await _final_statuses(client, order_url, order_ids)
    table = Table("outcome", "orders")
    for name, n in sorted((outcomes | statuses).items()):
        table.add_row(name, str(n))
    console.print(table)


async def _active_skus(client: httpx.AsyncClient, catalog_url: str) -> list[str]:
    skus: list[str] = []
    page = 1
    while True:
        r = await client.get(
            f"{catalog_url}/products", params={"page": page, "page_size": 200, "active": True}
        )
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        skus += [p["sku"] for p in body["items"]]
        if len(skus) >= body["total"] or not body["items"]:
            return skus
        page += 1


async def _final_statuses(
    client: httpx.AsyncClient,
    order_url: str,
    order_ids: dict[str, dict[str, str]],
    wait_s: float = 30,
) -> Counter[str]:
    deadline = time.monotonic() + wait_s
    final: Counter[str] = Counter()
    pending = list(order_ids)
    with console.status("waiting for the sagas to finish…"):
        while pending and time.monotonic() < deadline:
            still = []
            for order_id in pending:
                r = await client.get(f"{order_url}/orders/{order_id}", headers=order_ids[order_id])
                body = r.json() if r.status_code == 200 else {"status": "?"}
                if body["status"] in ("CONFIRMED", "REJECTED", "CANCELLED"):
                    final[body["status"]] += 1
                else:
                    still.append(order_id)
            pending = still
            if pending:
                await asyncio.sleep(0.5)
    if pending:
        final["still running"] = len(pending)
    return final


def demo(
    rate: Annotated[float, typer.Option(min=0.1, help="Orders per second.")] = 20,
    duration: Annotated[float, typer.Option(min=1, help="Seconds to run.")] = 60,
    order_url: Annotated[str, typer.Option(help="Orders API.")] = "http://127.0.0.1:8000",
    catalog_url: Annotated[str, typer.Option(help="Catalog API.")] = "http://127.0.0.1:8001",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same orders).")] = 1,
) -> None:
    """Post realistic random orders (popular SKUs, a mix of payment tokens) and show progress."""
    asyncio.run(_demo(order_url, catalog_url, rate, duration, seed))


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("run", help="Same as `shop up` in the foreground (what `make run` calls).")(up)
    app.command("status")(status)
    app.command("down")(down)
    app.command("demo")(demo)


__all__ = ["register"]
