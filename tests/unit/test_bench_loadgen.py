"""The open-loop load generator: every request counted, a done request's task let go."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from bench.loadgen import OrderRequest, open_loop


def body() -> OrderRequest:
    return {"lines": [{"sku": "SKU-1", "quantity": 1}]}, {}


async def test_a_done_request_is_not_kept_while_the_step_goes_on() -> None:
    first: list[weakref.ref[asyncio.Task[object]]] = []
    alive_later: list[bool] = []
    calls = 0

    async def post(_: dict[str, object], __: dict[str, str]) -> tuple[int, bytes]:
        nonlocal calls
        calls += 1
        task = asyncio.current_task()
        assert task is not None
        if calls == 1:
            first.append(weakref.ref(task))
        elif calls == 200:
            gc.collect()
            alive_later.append(first[0]() is not None)
        return 202, b'{"order_id": "o-%d", "status": "PENDING"}' % calls

    # one request on the wire at a time: the 200th starts long after the first's done callbacks
    result = await open_loop(post, rate=2_000, seconds=0.15, make_body=body, in_flight=1)
    assert calls == len(result.sent) == 300
    assert all(s.status == 202 and s.order_id for s in result.sent)
    assert alive_later == [False], "the first request's task was still referenced"


async def test_an_unexpected_error_in_a_request_fails_the_step() -> None:
    async def post(_: dict[str, object], __: dict[str, str]) -> tuple[int, bytes]:
        raise ValueError("not a client error")

    with pytest.raises(ValueError, match="not a client error"):
        await open_loop(post, rate=1_000, seconds=0.02, make_body=body)
