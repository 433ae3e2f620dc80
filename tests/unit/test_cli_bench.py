"""`shop bench` is `python -m bench` with the same arguments and exit code."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from deploy.cli import app


def test_shop_bench_passes_its_arguments_to_the_bench() -> None:
    # an argument the bench refuses: argparse's exit code 2 comes back through shop
    result = CliRunner().invoke(app, ["bench", "--only", "no-such-part"])
    assert result.exit_code == 2


def test_shop_bench_help_is_the_bench_s_own() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "bench", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--baseline-step-s" in done.stdout
    assert "--log-records" in done.stdout
