"""bench.scaling's choice of the busiest service, and the load generator's spreading of
requests over replicas."""

from __future__ import annotations

from aiohttp import web

from bench.loadgen import http_client, poster
from bench.scaling import busiest


def test_the_busiest_service_counts_the_cpu_of_all_its_replicas() -> None:
    cpu = {
        "kafka": 13.0,
        "order_service": 6.0,
        "order_service[1]": 5.0,
        "analytics_service": 9.0,
        "postgres": 3.0,
    }
    assert busiest(cpu) == "order_service"


async def test_the_poster_sends_each_order_to_the_next_replica_as_json() -> None:
    seen: list[tuple[int, str, dict[str, object]]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((request.url.port or 0, request.headers["x-who"], await request.json()))
        return web.json_response({"order_id": "o", "status": "PENDING"}, status=202)

    app = web.Application()
    app.router.add_post("/orders", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    sites = [web.TCPSite(runner, "127.0.0.1", 0) for _ in range(3)]
    for site in sites:
        await site.start()
    ports = [site._server.sockets[0].getsockname()[1] for site in sites]  # type: ignore[union-attr]
    try:
        async with http_client(in_flight=4) as session:
            post = poster(session, [f"http://127.0.0.1:{p}/orders" for p in ports])
            answers = [await post({"n": n}, {"x-who": f"c{n}"}) for n in range(4)]
    finally:
        await runner.cleanup()
    assert [port for port, _, _ in seen] == [*ports, ports[0]]
    assert [(who, body) for _, who, body in seen] == [(f"c{n}", {"n": n}) for n in range(4)]
    assert {status for status, _ in answers} == {202}
