"""catalog_service against the real broker and database: every change reaches catalog.products.

The service runs in-process (its ServiceRuntime with HTTP on a free port); a tail of the topic
collects what it publishes. "Nothing was published" is proven with a later marker change of the
same SKU: one SKU's events share a partition, so once the marker arrived everything before it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from catalog_service.app import build
from catalog_service.settings import Settings
from events.contracts import REGISTRY, ProductUpserted
from events.envelope import DecodeError, Header, decode
from events.kit.runtime import ServiceRuntime
from events.kit.settings import DEV_SIGNING_KEY
from events.messages import Money
from events.topics import CATALOG_PRODUCTS
from tests.integration.platform_support import admin_headers
from tests.ports import free_port as free_port
from tests.stack import Stack

pytestmark = pytest.mark.integration

T = TypeVar("T")


async def wait_until(
    condition: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0, interval: float = 0.05
) -> T:
    """Poll until the condition returns something truthy and return it; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class Published:
    key: bytes
    envelope: Header
    event: ProductUpserted


class CatalogTail:
    """Reads catalog.products from the beginning, in the background, grouped by record key."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(
            CATALOG_PRODUCTS,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        self._by_key: dict[bytes, list[Published]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CatalogTail:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for r in records:
                    # other tests dead-letter corrupt records they put on this shared topic
                    try:
                        envelope, event = decode(r.value, REGISTRY)
                    except DecodeError:
                        continue
                    if not isinstance(event, ProductUpserted):
                        continue
                    self._by_key.setdefault(r.key, []).append(Published(r.key, envelope, event))

    async def wait(
        self, sku: str, until: Callable[[list[ProductUpserted]], bool], timeout: float = 30.0
    ) -> list[Published]:
        """Every record of the SKU so far, once `until` holds for their events."""

        async def seen() -> list[Published] | None:
            published = list(self._by_key.get(sku.encode(), []))
            return published if until([p.event for p in published]) else None

        return await wait_until(seen, timeout=timeout)


@dataclass(frozen=True)
class RunningCatalog:
    runtime: ServiceRuntime
    http: httpx.AsyncClient

    @property
    def pool(self) -> asyncpg.Pool:
        return self.runtime.pool


@contextlib.asynccontextmanager
async def running_catalog(stack: Stack, database: str) -> AsyncIterator[RunningCatalog]:
    """catalog_service in this process, with its own database and a free HTTP port."""
    settings = Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap,
        database_url=SecretStr(stack.database_url(database)),
        http_port=free_port(),
        outbox_poll_ms=50,
        rate_limit="",  # many requests a second from one admin; rate limits have their own tests
    )
    runtime = build(settings)
    await runtime.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{settings.http_port}",
            timeout=10.0,
            headers=admin_headers(key=DEV_SIGNING_KEY),
        ) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/health/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready)
            yield RunningCatalog(runtime, http)
    finally:
        await runtime.stop()


@pytest.fixture(scope="module")
async def catalog(stack: Stack) -> AsyncIterator[RunningCatalog]:
    async with running_catalog(stack, f"catalog_it_{uuid.uuid4().hex[:8]}") as running:
        yield running


@pytest.fixture(scope="module")
async def tail(stack: Stack) -> AsyncIterator[CatalogTail]:
    async with CatalogTail(stack.kafka_bootstrap) as t:
        yield t


def new_sku() -> str:
    return f"T-{uuid.uuid4().hex[:12]}"


def kettle(**changes: Any) -> dict[str, Any]:
    body = {
        "name": "Copper Kettle",
        "description": "Whistles when ready.",
        "category": "kitchen",
        "price": 1999,
        "currency": "USD",
    }
    return body | changes


async def outbox_rows(catalog: RunningCatalog, sku: str) -> int:
    n: int = await catalog.pool.fetchval("SELECT count(*) FROM outbox WHERE key = $1", sku.encode())
    return n


async def test_creating_a_product_publishes_product_upserted_keyed_by_sku(
    catalog: RunningCatalog, tail: CatalogTail
) -> None:
    sku = new_sku()
    created = await catalog.http.post("/admin/products", json=kettle(sku=sku))
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/products/{sku}"
    product = created.json()
    assert product | {"updated_at": None} == kettle(sku=sku, active=True, updated_at=None)
    assert (await catalog.http.get(f"/products/{sku}")).json() == product

    [published] = await tail.wait(sku, lambda events: len(events) >= 1)
    assert published.key == sku.encode()
    assert published.envelope.type == "ProductUpserted"
    assert published.envelope.producer == "catalog"
    assert published.envelope.correlation_id == sku
    event = published.event
    assert event.sku == sku
    assert (event.name, event.description, event.category) == (
        "Copper Kettle",
        "Whistles when ready.",
        "kitchen",
    )
    assert event.price == Money(amount=1999, currency="USD")
    assert event.active is True
    assert event.updated_at.isoformat() == product["updated_at"].replace("Z", "+00:00")


async def test_an_identical_put_changes_nothing_and_publishes_nothing(
    catalog: RunningCatalog, tail: CatalogTail
) -> None:
    sku = new_sku()
    first = await catalog.http.put(f"/admin/products/{sku}", json=kettle())
    assert first.status_code == 201, first.text
    again = await catalog.http.put(f"/admin/products/{sku}", json=kettle())
    assert again.status_code == 200
    assert again.json() == first.json()

    marker = await catalog.http.patch(f"/admin/products/{sku}", json={"price": 2499})
    assert marker.status_code == 200
    published = await tail.wait(sku, lambda events: any(e.price.amount == 2499 for e in events))
    assert [p.event.price.amount for p in published] == [1999, 2499]

    async def all_published() -> bool:  # the relay deletes each row Kafka has acknowledged
        return await outbox_rows(catalog, sku) == 0

    await wait_until(all_published)


async def test_a_put_with_new_details_replaces_the_product_and_publishes_it(
    catalog: RunningCatalog, tail: CatalogTail
) -> None:
    sku = new_sku()
    await catalog.http.put(f"/admin/products/{sku}", json=kettle())
    replaced = await catalog.http.put(
        f"/admin/products/{sku}", json={"name": "Steel Kettle", "category": "kitchen",
                                        "price": 2999, "currency": "EUR"}
    )  # fmt: skip
    assert replaced.status_code == 200
    assert replaced.json()["description"] == ""

    published = await tail.wait(sku, lambda events: len(events) >= 2)
    first, second = (p.event for p in published)
    assert (second.name, second.price) == ("Steel Kettle", Money(amount=2999, currency="EUR"))
    assert second.updated_at > first.updated_at


async def test_deactivating_a_product_publishes_it_with_active_false(
    catalog: RunningCatalog, tail: CatalogTail
) -> None:
    sku = new_sku()
    await catalog.http.post("/admin/products", json=kettle(sku=sku))
    deactivated = await catalog.http.post(f"/admin/products/{sku}/deactivate")
    assert deactivated.status_code == 200
    assert deactivated.json()["active"] is False
    assert (await catalog.http.post(f"/admin/products/{sku}/deactivate")).status_code == 200
    assert (await catalog.http.get(f"/products/{sku}")).json()["active"] is False

    reactivated = await catalog.http.patch(f"/admin/products/{sku}", json={"active": True})
    assert reactivated.json()["active"] is True
    published = await tail.wait(sku, lambda events: len(events) >= 3)
    assert [p.event.active for p in published] == [True, False, True]


async def test_a_patch_changes_only_the_fields_it_names(catalog: RunningCatalog) -> None:
    sku = new_sku()
    await catalog.http.post("/admin/products", json=kettle(sku=sku))
    patched = await catalog.http.patch(f"/admin/products/{sku}", json={"name": "Big Kettle"})
    assert patched.status_code == 200
    assert patched.json() | {"updated_at": None} == kettle(
        sku=sku, name="Big Kettle", active=True, updated_at=None
    )


async def test_products_are_filtered_by_category_name_and_active_flag(
    catalog: RunningCatalog,
) -> None:
    category = f"cat-{uuid.uuid4().hex[:8]}"
    names = ["Desk Lamp", "Floor LAMP", "lampshade", "Rug", "Vase"]
    skus = [new_sku() for _ in names]
    for sku, name in zip(skus, names, strict=True):
        r = await catalog.http.post(
            "/admin/products", json=kettle(sku=sku, name=name, category=category)
        )
        assert r.status_code == 201
    await catalog.http.post(f"/admin/products/{skus[1]}/deactivate")

    async def listed(**params: Any) -> tuple[int, set[str]]:
        r = await catalog.http.get("/products", params={"category": category} | params)
        assert r.status_code == 200, r.text
        body = r.json()
        return body["total"], {p["name"] for p in body["items"]}

    assert await listed() == (5, set(names))
    assert await listed(search="lAmP") == (3, {"Desk Lamp", "Floor LAMP", "lampshade"})
    assert await listed(search="lamp", active="true") == (2, {"Desk Lamp", "lampshade"})
    assert await listed(active="false") == (1, {"Floor LAMP"})
    assert await listed(search="%") == (0, set())
    assert await listed(category="no-such-category") == (0, set())


async def test_products_are_listed_by_sku_one_page_at_a_time(catalog: RunningCatalog) -> None:
    category = f"cat-{uuid.uuid4().hex[:8]}"
    skus = sorted(new_sku() for _ in range(7))
    for sku in skus:
        await catalog.http.put(f"/admin/products/{sku}", json=kettle(category=category))

    pages = []
    for page in (1, 2, 3, 4):
        r = await catalog.http.get(
            "/products", params={"category": category, "page": page, "page_size": 3}
        )
        body = r.json()
        assert (body["total"], body["page"], body["page_size"]) == (7, page, 3)
        pages.append([p["sku"] for p in body["items"]])
    assert [len(p) for p in pages] == [3, 3, 1, 0]
    assert [sku for p in pages for sku in p] == skus


@pytest.mark.parametrize(
    "params",
    [{"page_size": 0}, {"page_size": 201}, {"page": 0}, {"active": "maybe"}, {"search": ""}],
)
async def test_out_of_range_list_parameters_are_422(
    catalog: RunningCatalog, params: dict[str, Any]
) -> None:
    r = await catalog.http.get("/products", params=params)
    assert r.status_code == 422, r.text


async def test_the_largest_page_is_200_products(catalog: RunningCatalog) -> None:
    r = await catalog.http.get("/products", params={"page_size": 200})
    assert r.status_code == 200


async def test_an_unknown_sku_is_404(catalog: RunningCatalog) -> None:
    sku = new_sku()
    for r in (
        await catalog.http.get(f"/products/{sku}"),
        await catalog.http.patch(f"/admin/products/{sku}", json={"price": 1}),
        await catalog.http.post(f"/admin/products/{sku}/deactivate"),
    ):
        assert r.status_code == 404
        assert r.json() == {"detail": f"no product with SKU {sku!r}"}


async def test_creating_a_product_that_exists_is_409_and_changes_nothing(
    catalog: RunningCatalog, tail: CatalogTail
) -> None:
    sku = new_sku()
    first = await catalog.http.post("/admin/products", json=kettle(sku=sku))
    again = await catalog.http.post("/admin/products", json=kettle(sku=sku, price=1))
    assert again.status_code == 409
    assert "already exists" in again.json()["detail"]
    assert (await catalog.http.get(f"/products/{sku}")).json() == first.json()

    marker = await catalog.http.patch(f"/admin/products/{sku}", json={"price": 2499})
    assert marker.status_code == 200
    published = await tail.wait(sku, lambda events: any(e.price.amount == 2499 for e in events))
    assert [p.event.price.amount for p in published] == [1999, 2499]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_a_float_price_is_refused_with_422_and_nothing_changes(
    catalog: RunningCatalog, method: str
) -> None:
    sku = new_sku()
    if method == "PATCH":
        await catalog.http.put(f"/admin/products/{sku}", json=kettle())
    url, body = {
        "POST": ("/admin/products", kettle(sku=sku, price=19.99)),
        "PUT": (f"/admin/products/{sku}", kettle(price=19.99)),
        "PATCH": (f"/admin/products/{sku}", {"price": 19.99}),
    }[method]
    r = await catalog.http.request(method, url, json=body)
    assert r.status_code == 422
    assert "not a float" in r.text
    after = await catalog.http.get(f"/products/{sku}")
    if method == "PATCH":
        assert after.json()["price"] == 1999
    else:
        assert after.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/admin/products", kettle(sku="has space")),
        ("POST", "/admin/products", kettle(sku="OK-1", colour="red")),
        ("PUT", "/admin/products/OK-1", kettle(price=-5)),
        ("PUT", "/admin/products/OK-1", kettle(currency="usd")),
        ("PUT", "/admin/products/OK-1", kettle(name="")),
        ("PUT", "/admin/products/-leading-dash", kettle()),
        ("PATCH", "/admin/products/OK-1", {"name": None}),
    ],
)
async def test_malformed_requests_are_422(
    catalog: RunningCatalog, method: str, path: str, body: dict[str, Any]
) -> None:
    r = await catalog.http.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
