"""The bench's CPU count for a process tree keeps what exited children used (PostgreSQL's
backends come and go during a step)."""

from __future__ import annotations

import subprocess
import sys

from bench.__main__ import cpu_seconds

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_a_tree_keeps_the_cpu_of_children_that_exited() -> None:
    # A root that starts a child burning 0.3 s of CPU, waits for it, then lingers until told.
    root = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys\n"
            f"subprocess.run([sys.executable, '-c', {BURN!r}], check=True)\n"
            "print('done', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert root.stdout is not None
        assert root.stdout.readline().strip() == "done"  # the child has exited and been reaped
        as_tree = cpu_seconds({"postgres": [root.pid]})["postgres"]
        as_list = cpu_seconds({"other": [root.pid]})["other"]
        assert as_tree >= as_list + 0.25
    finally:
        assert root.stdin is not None
        root.stdin.close()
        root.wait(timeout=10)
