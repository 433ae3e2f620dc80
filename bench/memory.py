"""Resident memory of every process of the platform, sampled while the bench drives load.

Issue 8 asks that no process grow without bound over a ten-minute run: the sampler keeps every
process group's RSS every few seconds, and the report gives the peak, the median of the first and
of the last minute of load, and the growth between them. A process that leaks keeps climbing to
the last minute; one that only warms up (caches, pools, faust tables) levels off early.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

Groups = dict[str, list[int]]


def rss_mb(groups: Groups) -> dict[str, float]:
    """Memory of each group of processes, in MiB (a group: PostgreSQL and its backends).

    A group of several processes is summed by proportional set size (PSS): shared pages (the
    database's shared buffers, which every backend maps) count once across the group, where a
    sum of RSS would count them once per backend and grow with every backend that touches them.
    A single process is its RSS.
    """
    out = {}
    for name, pids in groups.items():
        total = 0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                if len(pids) > 1:
                    total += process.memory_full_info().pss
                else:
                    total += process.memory_info().rss
        out[name] = round(total / 2**20, 1)
    return out


class MemorySampler:
    """Samples `groups()` every `every_s` seconds in the background until stopped."""

    def __init__(self, groups: Callable[[], Groups], every_s: float = 5.0) -> None:
        self._groups = groups
        self._every_s = every_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()

    def sample(self) -> None:
        self.samples.append((time.time(), rss_mb(self._groups())))

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(self._every_s)

    def report(self) -> dict[str, Any]:
        """Per process: peak, first-minute and last-minute median, growth; and the run's length."""
        if not self.samples:
            return {}
        t0, t1 = self.samples[0][0], self.samples[-1][0]
        names = sorted({name for _, sample in self.samples for name in sample})
        processes: dict[str, Any] = {}
        for name in names:
            series = [(t, s[name]) for t, s in self.samples if s.get(name)]
            if not series:
                continue
            first = [mb for t, mb in series if t <= t0 + 60] or [series[0][1]]
            last = [mb for t, mb in series if t >= t1 - 60] or [series[-1][1]]
            start_mb, end_mb = statistics.median(first), statistics.median(last)
            processes[name] = {
                "peak_mb": max(mb for _, mb in series),
                "first_minute_mb": round(start_mb, 1),
                "last_minute_mb": round(end_mb, 1),
                "growth_mb": round(end_mb - start_mb, 1),
            }
        return {"seconds": round(t1 - t0), "samples": len(self.samples), "processes": processes}

    def chart(self, out: Path) -> str | None:
        """RSS over time, one line per process (memory.png), or None without matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        if not self.samples:
            return None
        t0 = self.samples[0][0]
        fig, ax = plt.subplots(figsize=(9, 4))
        for name in sorted({n for _, s in self.samples for n in s}):
            points = [(t - t0, s[name]) for t, s in self.samples if s.get(name)]
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
        ax.set(xlabel="seconds", ylabel="resident memory (MiB)", title="Memory")
        ax.legend(fontsize="small", ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / "memory.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return str(path)
