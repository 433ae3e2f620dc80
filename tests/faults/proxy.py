"""A small TCP fault proxy on loopback: forwards one port to another and, on demand, delays the
bytes, stops forwarding them (a blackhole), or resets every connection.

It runs its own event loop in a daemon thread, so the harness's blocking calls (restarting a
broker, waiting for a service) never stall the traffic going through it; the control methods are
safe to call from any thread. Clients only go through it if they are told to: the Kafka broker's
advertised listener must name the proxy's port, or clients bypass it after their first metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 64 * 1024


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """Forwards host:listen_port to host:target_port; latency, blackhole and reset on demand."""

    def __init__(self, listen_port: int, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.listen_port = listen_port
        self.target_port = target_port
        self.latency_s = 0.0
        self.counts: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.listen_port}"

    # -- control (any thread) ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set_latency(self, ms: float) -> None:
        """Delay every chunk by `ms` in each direction, order kept."""
        self.latency_s = ms / 1000

    def blackhole(self) -> None:
        """Accept connections and take bytes, but forward nothing until heal()."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def reset(self) -> int:
        """Reset (RST) every open connection on both sides; returns how many were cut."""
        return self._call(self._reset())

    def heal(self) -> None:
        self.latency_s = 0.0
        self._loop.call_soon_threadsafe(self._flowing.set)

    @property
    def connections(self) -> int:
        return len(self._links)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # -- the loop's side -------------------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(
            self._accept, self.host, self.listen_port, reuse_address=True
        )

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset()

    async def _reset(self) -> int:
        links = list(self._links)
        for link in links:
            for writer in (link.client, link.upstream):
                _abort(writer)
            for task in link.tasks:
                task.cancel()
        self._links.clear()
        self.counts["reset connections"] += len(links)
        return len(links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts["accepted"] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            # The broker is down: the client sees its connection reset, as it would without us.
            _abort(writer)
            self.counts["upstream refused"] += 1
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, link)),
            asyncio.create_task(self._pipe(up_reader, writer, link)),
        ]
        for task in link.tasks:
            # The loop keeps only weak references to tasks: hold them until they end.
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=64)

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                wait = due + self.latency_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                try:
                    writer.write(data)
                    await writer.drain()
                except OSError:
                    self._drop(link)
                    return

        sender = asyncio.create_task(deliver())
        self._tasks.add(sender)
        sender.add_done_callback(self._tasks.discard)
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                await queue.put((time.monotonic(), data))
                if not data:
                    break
            await sender
            # One side closed: close both (Kafka's clients and broker never half-close).
            self._links.discard(link)
            for end in (link.client, link.upstream):
                end.close()
        except (OSError, asyncio.IncompleteReadError):
            self._drop(link)
        finally:
            sender.cancel()

    def _drop(self, link: _Link) -> None:
        if link in self._links:
            self._links.discard(link)
            for writer in (link.client, link.upstream):
                _abort(writer)
            current = asyncio.current_task()
            for task in link.tasks:
                if task is not current:
                    task.cancel()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer sees a reset rather than a clean end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
