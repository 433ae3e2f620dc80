"""`make chaos-short` inside `make test`: the platform under every kind of fault for about a minute,
then healed, settled and checked (tests/faults/chaos.py). Its own Kafka and PostgreSQL on free
ports, never the session test stack. CHAOS_SEED repeats a run's random choices.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

REPO = Path(__file__).resolve().parents[2]


def test_platform_keeps_every_invariant_under_injected_faults(tmp_path: Path) -> None:
    seed = os.environ.get("CHAOS_SEED")
    output = tmp_path / "chaos.out"
    args = [sys.executable, "-m", "tests.faults.chaos", "--profile", "short"]
    args += ["--data", str(tmp_path / "run"), "--report", str(tmp_path / "figures.json")]
    if seed:
        args += ["--seed", seed]
    with output.open("wb") as out:
        run = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = run.wait(timeout=1800)
        except subprocess.TimeoutExpired:
            # SIGTERM, not SIGKILL: the harness then stops the broker, database and services.
            run.terminate()
            run.wait(timeout=600)
            pytest.fail(f"the chaos run took over 30 minutes:\n{output.read_text()[-12000:]}")
    text = output.read_text(errors="replace")
    lines = text.strip().splitlines()
    assert lines[-1] == "violations: 0", text[-12000:]
    assert code == 0, text[-12000:]
