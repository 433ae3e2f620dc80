"""Hostile HTTP input to the order, catalog and inventory APIs: oversized bodies, deep JSON,
invalid UTF-8, absurd quantities and page sizes, wrong content types. Each gets a clear 4xx, never a
5xx, and the answer never echoes what was sent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fuzz.conftest import FuzzPlatform, auth_headers, place_order

pytestmark = pytest.mark.integration

MARKER = "ECHO-" + uuid.uuid4().hex  # must never come back in an answer
NEW_PRODUCT = {"name": "edge", "category": "edge", "price": 100, "currency": "USD"}


@pytest.fixture
async def clients(fuzz_platform: FuzzPlatform) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    made = {
        name: httpx.AsyncClient(base_url=fuzz_platform.url(name), timeout=15)
        for name in ("order", "catalog", "inventory")
    }
    try:
        yield made
    finally:
        for c in made.values():
            await c.aclose()


def refused(r: httpx.Response, *codes: int) -> None:
    assert r.status_code in codes, (r.status_code, r.text[:300])
    assert MARKER not in r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["detail"]


# (service, method, path, role) of every route that takes a JSON body.
BODY_ROUTES = [
    ("order", "POST", "/orders", "customer"),
    ("order", "POST", f"/orders/{uuid.uuid4()}/cancel", "customer"),
    ("catalog", "POST", "/admin/products", "admin"),
    ("catalog", "PUT", "/admin/products/EDGE-1", "admin"),
    ("catalog", "PATCH", "/admin/products/EDGE-1", "admin"),
    ("inventory", "POST", "/admin/stock/EDGE-1/restock", "admin"),
]
IDS = [f"{m} {s}{p}" for s, m, p, _ in BODY_ROUTES]


async def send(
    clients: dict[str, httpx.AsyncClient],
    route: tuple[str, str, str, str],
    content: bytes,
    content_type: str = "application/json",
) -> httpx.Response:
    service, method, path, role = route
    headers = {**auth_headers(role), "content-type": content_type}
    return await clients[service].request(method, path, content=content, headers=headers)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=IDS)
async def test_an_oversized_body_is_refused(
    clients: dict[str, httpx.AsyncClient], route: tuple[str, str, str, str]
) -> None:
    body = b'{"name":"' + MARKER.encode() + b"x" * (2 * 1024 * 1024) + b'"}'
    refused(await send(clients, route, body), 413, 422)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=IDS)
async def test_deeply_nested_json_is_refused(
    clients: dict[str, httpx.AsyncClient], route: tuple[str, str, str, str]
) -> None:
    depth = 5000
    body = b'{"a":' * depth + f'"{MARKER}"'.encode() + b"}" * depth
    refused(await send(clients, route, body), 400, 413, 422)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=IDS)
async def test_invalid_utf8_is_refused(
    clients: dict[str, httpx.AsyncClient], route: tuple[str, str, str, str]
) -> None:
    body = b'{"name":"' + MARKER.encode() + b'\xff\xfe"}'
    refused(await send(clients, route, body), 400, 422)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=IDS)
async def test_a_body_that_is_not_json_is_refused(
    clients: dict[str, httpx.AsyncClient], route: tuple[str, str, str, str]
) -> None:
    refused(await send(clients, route, f"name={MARKER}".encode(), "text/plain"), 400, 415, 422)
    refused(await send(clients, route, f"{{'{MARKER}'".encode()), 400, 422)


@pytest.mark.parametrize("quantity", [0, -1, 1001, 10**30, 1.5, "3", True, None])
async def test_an_absurd_quantity_is_refused(
    clients: dict[str, httpx.AsyncClient], quantity: object
) -> None:
    body = {
        "lines": [{"sku": "EDGE-1", "quantity": quantity}],
        "currency": "USD",
        "payment_token": "tok_approve",
    }
    r = await clients["order"].post("/orders", json=body, headers=auth_headers("customer"))
    refused(r, 422)


@pytest.mark.parametrize("quantity", [0, -5, 10**7, 10**30, 2.5, "9"])
async def test_an_absurd_restock_is_refused(
    clients: dict[str, httpx.AsyncClient], quantity: object
) -> None:
    r = await clients["inventory"].post(
        "/admin/stock/EDGE-1/restock", json={"quantity": quantity}, headers=auth_headers("admin")
    )
    refused(r, 422)


@pytest.mark.parametrize("price", [-1, 10**13, 10**40, 19.99, "1999"])
async def test_an_absurd_price_is_refused(
    clients: dict[str, httpx.AsyncClient], price: object
) -> None:
    r = await clients["catalog"].put(
        "/admin/products/EDGE-2",
        json={**NEW_PRODUCT, "price": price},
        headers=auth_headers("admin"),
    )
    refused(r, 422)


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("order", "/orders"),
        ("catalog", "/products"),
        ("inventory", "/stock"),
    ],
)
@pytest.mark.parametrize(
    "query",
    [
        {"page_size": "0"},
        {"page_size": "1000000"},
        {"page_size": str(10**30)},
        {"page": "0"},
        {"page": str(10**30)},
        {"page": "-1"},
        {"page_size": "ten"},
        {"page": "1e3"},
    ],
)
async def test_absurd_pages_are_refused(
    clients: dict[str, httpx.AsyncClient], service: str, path: str, query: dict[str, str]
) -> None:
    role = "customer" if service == "order" else "admin"
    r = await clients[service].get(path, params=query, headers=auth_headers(role))
    refused(r, 422)


async def test_a_nul_in_a_product_field_is_refused_not_a_server_error(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    r = await clients["catalog"].put(
        "/admin/products/EDGE-3",
        json={**NEW_PRODUCT, "category": "a\x00b"},
        headers=auth_headers("admin"),
    )
    refused(r, 422)
    r = await clients["catalog"].get("/products", params={"search": "a\x00"})
    refused(r, 422)


async def test_a_payment_token_with_a_trailing_newline_is_refused(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    r = await place_order(clients["order"], [("EDGE-1", 1)], token="tok_approve\n")
    refused(r, 422)
