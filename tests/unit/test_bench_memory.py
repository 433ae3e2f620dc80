"""bench.memory: the report tells a process that levels off from one that keeps growing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.memory import MemorySampler, rss_mb


def sampler_with(series: dict[str, list[float]], every_s: float = 5.0) -> MemorySampler:
    sampler = MemorySampler(dict)
    n = len(next(iter(series.values())))
    sampler.samples = [(1000 + i * every_s, {k: v[i] for k, v in series.items()}) for i in range(n)]
    return sampler


def test_a_process_that_levels_off_grows_less_than_one_that_leaks() -> None:
    minutes = 10
    n = minutes * 12 + 1  # a sample every 5 s
    warm = [float(min(100 + i, 130)) for i in range(n)]  # warms up in the first 30 samples
    leak = [100 + i * 0.5 for i in range(n)]  # 6 MiB a minute, to the end
    report = sampler_with({"warm": warm, "leak": leak}).report()
    assert report["seconds"] == minutes * 60
    assert report["samples"] == n
    assert report["processes"]["warm"]["peak_mb"] == 130
    assert report["processes"]["warm"]["last_minute_mb"] == 130
    assert report["processes"]["leak"]["peak_mb"] == leak[-1]
    assert report["processes"]["leak"]["growth_mb"] == pytest.approx(54, abs=1)
    assert report["processes"]["warm"]["growth_mb"] < report["processes"]["leak"]["growth_mb"]


def test_no_samples_no_report() -> None:
    assert MemorySampler(dict).report() == {}


async def test_the_sampler_reads_real_processes_and_charts_them(tmp_path: Path) -> None:
    sampler = MemorySampler(lambda: {"me": [os.getpid()], "gone": [2**22 + 1]}, every_s=0.01)
    sampler.start()
    await sampler.stop()
    report = sampler.report()
    assert report["processes"]["me"]["peak_mb"] > 10
    assert "gone" not in report["processes"]  # a process that is not there counts as nothing
    assert rss_mb({"me": [os.getpid()]})["me"] > 10
    assert sampler.chart(tmp_path) == str(tmp_path / "memory.png")


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    sampler = sampler_with({"a": [1.0, 2.0, 3.0], "b": [3.0, 2.0, 1.0]})
    chart = sampler.chart(tmp_path)
    assert chart is not None
    assert Path(chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
