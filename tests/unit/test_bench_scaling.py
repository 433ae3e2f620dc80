"""bench.scaling's choice of the busiest service and its spreading of requests over replicas."""

from __future__ import annotations

import httpx

from bench.scaling import RoundRobin, busiest


def test_the_busiest_service_counts_the_cpu_of_all_its_replicas() -> None:
    cpu = {
        "kafka": 13.0,
        "order_service": 6.0,
        "order_service[1]": 5.0,
        "analytics_service": 9.0,
        "postgres": 3.0,
    }
    assert busiest(cpu) == "order_service"


async def test_round_robin_sends_each_request_to_the_next_port() -> None:
    seen: list[int | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.port)
        return httpx.Response(200)

    transport = RoundRobin([8001, 8002, 8003], httpx.Limits(), httpx.MockTransport(answer))
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(4):
            await client.get("http://127.0.0.1:8001/orders")
    assert seen == [8001, 8002, 8003, 8001]
