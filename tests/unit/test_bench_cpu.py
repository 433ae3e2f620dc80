"""The bench's CPU counts: a process tree keeps what exited children used (PostgreSQL's
backends come and go during a step), and a JVM's JIT compiler threads are counted apart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.__main__ import cpu_seconds, jit_compiler_seconds, jit_name

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


def fake_task(proc: Path, pid: int, tid: int, comm: str, utime: int, stime: int) -> None:
    task = proc / str(pid) / "task" / str(tid)
    task.mkdir(parents=True)
    (task / "comm").write_text(comm + "\n")
    # /proc/<pid>/task/<tid>/stat: fields after "(comm)" start at state; utime and stime are
    # the 12th and 13th of them. A comm may itself hold spaces and parentheses.
    rest = ["S"] + ["0"] * 10 + [str(utime), str(stime)] + ["0"] * 20
    (task / "stat").write_text(f"{tid} ({comm}) " + " ".join(rest) + "\n")


def test_a_jvms_jit_compiler_threads_are_counted_apart(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    fake_task(tmp_path, 42, 43, "C2 CompilerThre", 3 * tick, tick)
    fake_task(tmp_path, 42, 44, "C1 CompilerThre", tick, 0)
    fake_task(tmp_path, 42, 45, "data-plane-kafk", 7 * tick, 2 * tick)
    fake_task(tmp_path, 42, 46, "GC (Thread) 0", 5 * tick, 0)
    assert jit_compiler_seconds(42, proc=tmp_path) == 5.0
    assert jit_compiler_seconds(7, proc=tmp_path) == 0.0  # a process that has gone


def test_the_broker_group_reports_its_jit_apart_and_the_parts_add_up() -> None:
    me = os.getpid()
    split = cpu_seconds({"kafka": [me]})
    whole = cpu_seconds({"other": [me]})["other"]
    assert set(split) == {"kafka", jit_name("kafka")}
    assert split[jit_name("kafka")] == 0.0  # a Python process has no compiler threads
    assert whole - 0.05 <= split["kafka"] + split[jit_name("kafka")] <= whole + 0.05
