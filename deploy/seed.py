"""`shop seed`: a deterministic demo catalog and its initial stock; running it again is a no-op.

Products go to the catalog admin API as PUTs (an identical PUT changes and publishes nothing).
Stock goes to inventory.commands as Restock commands whose envelopes have fixed event ids
(uuid5 of "seed:<sku>") and a fixed time, so the inventory inbox applies each SKU's initial stock
once however often the seed runs; a later run with another --stock does not change it.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from deploy import tokens
from deploy.local.common import InfraError, run_sync
from deploy.local.topics import ensure_topics
from events.contracts import Restock
from events.envelope import Envelope, encode, headers_for, wrap
from events.kit.producer import make_producer
from events.kit.settings import LOCAL_KAFKA
from events.topics import INVENTORY_COMMANDS, spec

DEFAULT_CATALOG_URL = "http://127.0.0.1:8001"
DEFAULT_PRODUCTS = 240
DEFAULT_STOCK = 100
MAX_PRODUCTS = 9999
LOW_STOCK = 5
LOW_STOCK_EVERY = 40
CURRENCY = "USD"
PRODUCER = "seed"
SEED_NAMESPACE = uuid.UUID("5eed0000-c0de-4a7a-9b1e-000000000001")
SEED_TIME = datetime(2026, 1, 1, tzinfo=UTC)
RATE_LIMITED_RETRIES = 30


@dataclass(frozen=True)
class _Category:
    name: str
    nouns: tuple[str, ...]
    dollars: tuple[int, int]


CATEGORIES: tuple[_Category, ...] = (
    _Category(
        "kitchen",
        ("Skillet", "Saucepan", "Chef's Knife", "Cutting Board", "Kettle", "Dutch Oven", "Whisk"),
        (8, 180),
    ),
    _Category(
        "outdoors",
        ("Tent", "Sleeping Bag", "Headlamp", "Camp Stove", "Water Filter", "Daypack", "Hammock"),
        (15, 350),
    ),
    _Category(
        "electronics",
        ("Headphones", "Speaker", "USB-C Charger", "Power Bank", "Webcam", "Keyboard", "Mouse"),
        (12, 300),
    ),
    _Category(
        "books",
        ("Atlas", "Handbook", "Field Guide", "Cookbook", "Novel", "Anthology", "Primer"),
        (9, 60),
    ),
    _Category(
        "apparel",
        ("T-Shirt", "Hoodie", "Rain Jacket", "Wool Socks", "Beanie", "Chinos", "Scarf"),
        (10, 200),
    ),
    _Category(
        "home",
        ("Throw Blanket", "Table Lamp", "Vase", "Cushion", "Wall Clock", "Candle", "Rug"),
        (10, 400),
    ),
    _Category(
        "toys",
        ("Puzzle", "Building Set", "Kite", "Board Game", "Plush Bear", "Yo-Yo", "Train Set"),
        (5, 120),
    ),
    _Category(
        "sports",
        ("Yoga Mat", "Dumbbells", "Jump Rope", "Basketball", "Tennis Racket", "Foam Roller"),
        (8, 250),
    ),
)
ADJECTIVES = (
    "Classic", "Compact", "Deluxe", "Everyday", "Heritage", "Lightweight", "Modern", "Nordic",
    "Pro", "Rustic", "Urban", "Vintage", "Essential", "Summit", "Coastal", "Midnight",
)  # fmt: skip
FINISHES = (
    "Oak", "Slate", "Copper", "Sage", "Graphite", "Ivory", "Indigo", "Ember", "Walnut", "Linen",
    "Cobalt", "Sand",
)  # fmt: skip
CENTS = (0, 49, 95, 99)


@dataclass(frozen=True)
class DemoProduct:
    sku: str
    name: str
    description: str
    category: str
    price: int
    currency: str = CURRENCY

    def put_body(self) -> dict[str, Any]:
        """The body of PUT /admin/products/{sku}."""
        return {
            "name": self.name,
            "description": self.description,
            "category": self.category,
            "price": self.price,
            "currency": self.currency,
            "active": True,
        }


def demo_product(i: int) -> DemoProduct:
    """The i-th demo product (0-based); it depends on i alone, so any catalog size agrees."""
    rng = random.Random(f"shop-demo-catalog:{i}")
    category = CATEGORIES[i % len(CATEGORIES)]
    adjective, finish, noun = (
        rng.choice(ADJECTIVES),
        rng.choice(FINISHES),
        rng.choice(category.nouns),
    )
    low, high = category.dollars
    return DemoProduct(
        sku=f"SKU-{i + 1:04d}",
        name=f"{adjective} {finish} {noun}",
        description=f"{adjective} {noun.lower()} in {finish.lower()} ({category.name}).",
        category=category.name,
        price=rng.randint(low, high) * 100 + rng.choice(CENTS),
    )


def demo_catalog(n: int = DEFAULT_PRODUCTS) -> list[DemoProduct]:
    """n deterministic demo products over all categories; a larger catalog extends a smaller one."""
    if not 0 <= n <= MAX_PRODUCTS:
        raise ValueError(f"the demo catalog has 0 to {MAX_PRODUCTS} products, not {n}")
    return [demo_product(i) for i in range(n)]


def initial_stock(products: Sequence[DemoProduct], per_sku: int) -> dict[str, int]:
    """Units per SKU; every LOW_STOCK_EVERY-th SKU starts low, for low-stock demos."""
    if per_sku <= 0:
        return {}
    low = min(LOW_STOCK, per_sku)
    return {
        p.sku: low if i % LOW_STOCK_EVERY == LOW_STOCK_EVERY - 1 else per_sku
        for i, p in enumerate(products)
    }


def seed_event_id(sku: str) -> uuid.UUID:
    return uuid.uuid5(SEED_NAMESPACE, f"seed:{sku}")


def restock_command(sku: str, quantity: int) -> tuple[Restock, Envelope]:
    """The seed's Restock for a SKU, in an envelope with a fixed id and time."""
    command = Restock(sku=sku, quantity=quantity, reason="seed")
    envelope = wrap(command, producer=PRODUCER, event_id=seed_event_id(sku), occurred_at=SEED_TIME)
    return command, envelope


@dataclass(frozen=True)
class SeedReport:
    products: int
    created: int
    categories: int
    stocked: int
    low_stock: int
    seconds: float

    def summary(self) -> str:
        return (
            f"seeded {self.products} products in {self.categories} categories "
            f"({self.created} new, {self.products - self.created} already there) and initial "
            f"stock for {self.stocked} SKUs ({self.low_stock} low) in {self.seconds:.1f}s"
        )


Advance = Callable[[int], None]


def _ignore(_: int) -> None:
    pass


async def put_products(
    catalog_url: str,
    products: Iterable[DemoProduct],
    *,
    concurrency: int = 16,
    advance: Advance = _ignore,
) -> int:
    """PUT each product to the catalog, `concurrency` at a time; returns how many were new."""
    pending = iter(products)
    created = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal created
        for product in pending:
            for _ in range(RATE_LIMITED_RETRIES):
                try:
                    r = await client.put(f"/admin/products/{product.sku}", json=product.put_body())
                except httpx.HTTPError as exc:
                    raise InfraError(f"catalog request for {product.sku} failed: {exc!r}") from None
                if r.status_code != 429:
                    break
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            if r.status_code not in (200, 201):
                raise InfraError(
                    f"the catalog refused {product.sku}: HTTP {r.status_code} {r.text[:500]}"
                )
            created += r.status_code == 201
            advance(1)

    async with httpx.AsyncClient(
        base_url=catalog_url, timeout=30.0, headers=tokens.bearer("seed", admin=True)
    ) as client:
        try:
            await client.get("/health/live")
        except httpx.TransportError as exc:
            raise InfraError(
                f"cannot reach the catalog at {catalog_url}: {exc!r}\n"
                "start it with `shop up` or `python -m catalog_service`"
            ) from None
        try:
            async with asyncio.TaskGroup() as workers:
                for _ in range(concurrency):
                    workers.create_task(worker(client))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
    return created


async def produce_stock(kafka: str, stock: dict[str, int], *, advance: Advance = _ignore) -> None:
    """Send one Restock per SKU to inventory.commands and wait for every acknowledgement."""
    if not stock:
        return
    topic = spec(INVENTORY_COMMANDS)
    await ensure_topics(kafka, [topic])
    producer = make_producer(kafka, client_id="shop-seed")
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise InfraError(f"cannot reach Kafka at {kafka}: {exc}") from None
    try:
        acks = []
        for sku, quantity in stock.items():
            command, envelope = restock_command(sku, quantity)
            acks.append(
                await producer.send(
                    topic.name,
                    value=encode(envelope),
                    key=command.partition_key().encode(),
                    headers=headers_for(envelope),
                )
            )
        for ack in asyncio.as_completed(acks):
            await ack
            advance(1)
    finally:
        await producer.stop()


async def seed_platform(
    *,
    catalog_url: str = DEFAULT_CATALOG_URL,
    kafka: str = LOCAL_KAFKA,
    products: int = DEFAULT_PRODUCTS,
    stock: int = DEFAULT_STOCK,
    concurrency: int = 16,
    progress: Progress | None = None,
) -> SeedReport:
    """Seed the catalog, then the stock; safe to run any number of times."""
    started = time.monotonic()
    catalog = demo_catalog(products)
    units = initial_stock(catalog, stock)

    def step(description: str, total: int) -> Advance:
        if (bar := progress) is None:
            return _ignore
        task = bar.add_task(description, total=total)
        return lambda n: bar.advance(task, n)

    created = await put_products(
        catalog_url,
        catalog,
        concurrency=concurrency,
        advance=step("catalog products", len(catalog)),
    )
    await produce_stock(kafka, units, advance=step("initial stock", len(units)))
    return SeedReport(
        products=len(catalog),
        created=created,
        categories=len({p.category for p in catalog}),
        stocked=len(units),
        low_stock=sum(1 for q in units.values() if q < stock),
        seconds=time.monotonic() - started,
    )


def run_seed(
    *,
    catalog_url: str = DEFAULT_CATALOG_URL,
    kafka: str = LOCAL_KAFKA,
    products: int = DEFAULT_PRODUCTS,
    stock: int = DEFAULT_STOCK,
    concurrency: int = 16,
    console: Console | None = None,
) -> SeedReport:
    """Seed with a progress bar on the console and print a one-line summary."""
    console = console or Console()
    progress = Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        report = run_sync(
            seed_platform(
                catalog_url=catalog_url,
                kafka=kafka,
                products=products,
                stock=stock,
                concurrency=concurrency,
                progress=progress,
            )
        )
    console.print(f"[green]✓[/green] {report.summary()}", soft_wrap=True)
    return report


def seed(
    catalog_url: Annotated[
        str, typer.Option("--catalog-url", envvar="SHOP_CATALOG_URL", help="Catalog service.")
    ] = DEFAULT_CATALOG_URL,
    kafka: Annotated[
        str,
        typer.Option(
            "--kafka", envvar="SHOP_KAFKA_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers."
        ),
    ] = LOCAL_KAFKA,
    products: Annotated[
        int, typer.Option("--products", min=1, max=MAX_PRODUCTS, help="Demo products to load.")
    ] = DEFAULT_PRODUCTS,
    stock: Annotated[
        int,
        typer.Option(
            "--stock",
            min=0,
            max=1_000_000,
            help=f"Initial units per SKU (a few start at {LOW_STOCK}); 0 sends no stock.",
        ),
    ] = DEFAULT_STOCK,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Catalog requests in flight.")
    ] = 16,
) -> None:
    """Load the demo catalog and initial stock; running it again changes nothing."""
    run_seed(
        catalog_url=catalog_url,
        kafka=kafka,
        products=products,
        stock=stock,
        concurrency=concurrency,
    )
