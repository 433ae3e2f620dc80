"""The fault proxy forwards bytes, and on demand delays them, holds them back, or resets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.faults.platform import free_port
from tests.faults.proxy import FaultProxy


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1000):
            writer.write(data)
            await writer.drain()
    except ConnectionResetError:
        pass
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    fault_proxy = FaultProxy(free_port(), port)
    fault_proxy.start()
    try:
        yield fault_proxy
    finally:
        fault_proxy.stop()
        upstream.close()


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.listen_port)


async def test_bytes_go_through_and_latency_delays_each_direction(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"ping")
    assert await reader.read(10) == b"ping"

    proxy.set_latency(200)
    started = time.monotonic()
    writer.write(b"slow")
    assert await reader.read(10) == b"slow"
    assert time.monotonic() - started >= 0.4  # 200 ms there and 200 ms back
    writer.close()


async def test_a_blackhole_holds_bytes_until_healed(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    proxy.blackhole()
    writer.write(b"held")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(10), 0.5)
    proxy.heal()
    assert await asyncio.wait_for(reader.read(10), 5) == b"held"
    writer.close()


async def test_a_reset_cuts_every_open_connection(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"hello")
    assert await reader.read(10) == b"hello"

    assert proxy.reset() == 1

    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(10), 5)
    reader, writer = await connect(proxy)
    writer.write(b"again")
    assert await reader.read(10) == b"again"
    writer.close()
