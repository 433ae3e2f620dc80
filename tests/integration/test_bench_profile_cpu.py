"""`python -m bench.profile cpu` on the real kernel: perf samples a busy process where it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import profile

pytestmark = pytest.mark.integration

BURN = "import time\nend = time.monotonic() + 6\nwhile time.monotonic() < end: pass\n"


def test_a_busy_process_gets_its_share_of_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    burner = subprocess.Popen([sys.executable, "-c", BURN])
    real = profile.process_labels
    monkeypatch.setattr(profile, "process_labels", lambda: {**real(), burner.pid: "burner"})
    try:
        shares = profile.record_cpu(1.5, 250, tmp_path / "perf.data")
    finally:
        burner.kill()
        burner.wait()
    total = sum(sum(codes.values()) for codes in shares.values())
    burned = shares["burner"]
    # one CPU of two the whole window: half the samples on an idle machine, less on a busy one
    assert sum(burned.values()) >= 0.15 * total, shares
    # a Python loop: the interpreter's code, the binary's or libpython's
    assert burned.most_common(1)[0][0] == "interpreter", burned
    assert (tmp_path / "perf.data").exists()


def test_the_command_prints_the_split(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.profile", "cpu", "--seconds", "0.5"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    first, *rows = done.stdout.splitlines()
    assert first.startswith("CPU over 0.5 s on ")
    assert first.endswith("share of the machine:")
    # one row per process, its share in percent: together the whole machine
    shares = [float(row.split("%")[0].split()[-1]) for row in rows]
    assert rows, done.stdout
    assert sum(shares) == pytest.approx(100, abs=0.1 * len(rows)), done.stdout
