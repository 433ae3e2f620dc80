"""Profile the services while a bench runs: py-spy on each process, then where the time goes.

    python -m bench.profile record --seconds 40 --out /tmp/prof   # every running *_service
    python -m bench.profile summary /tmp/prof/order_service.txt   # top frames, inclusive and self

`record` samples each service process (found by its command line, `python -m <service>`) with
`py-spy record --format raw` (collapsed stacks; idle samples excluded, so a sample is time on the
CPU or holding the GIL) for the same window, in parallel. `summary` reads those files and prints
the share of samples spent under each frame (inclusive) and in each leaf frame (self), with the
event loop's own frames left out of the inclusive list, and samples waiting in the selector
(idle, or woken but waiting for a CPU on a loaded machine) left out altogether. Under uvloop the
loop's C code (socket writes included) has no frame of its own and is left out with them.

    python -m bench.profile cpu --seconds 30                      # the whole machine, by perf

py-spy samples a process whenever it is not idle, so on a saturated machine a process waiting for
a CPU is counted where it stopped (at 500 orders/s, 19 % of the order service's samples were in
`write`, mostly a process preempted by the one its write woke). `cpu` asks the kernel instead:
`perf record -a` samples what each CPU is running, and the report gives every process's share of
the machine (services by name, PostgreSQL's processes together, the broker's JVM) and, within
it, which code: the Python interpreter, the kernel, a C extension, PostgreSQL's own binary.
Needs `perf` (Debian: linux-perf) and root or `kernel.perf_event_paranoid` <= 0.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import psutil  # type: ignore[import-untyped]

SERVICES = (
    "order_service",
    "inventory_service",
    "payment_service",
    "analytics_service",
    "catalog_service",
)
# Frames every stack passes through: they say nothing about where the time goes.
PLUMBING = (
    "runpy",
    "asyncio/",
    "__main__.py",
    "uvloop",
    "<module>",
    "threading.py",
    "run_service",
)
# Leaf frames of a thread waiting for events: asyncio's selector, or uvloop's loop (its C code,
# socket writes included, has no Python frame of its own and shows as Runner.run).
WAITING = ("select (selectors.py", "Runner.run (asyncio/runners.py")


def service_pids(match: str | None = None) -> dict[str, int]:
    """The newest process of each service whose command line contains `match` (if given)."""
    found: dict[str, tuple[float, int]] = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline", "create_time"]):
        name = label(proc.info["name"] or "?", proc.info["cmdline"] or [])
        if (
            name in SERVICES
            and (match is None or match in _environ(proc))
            and (name not in found or proc.info["create_time"] > found[name][0])
        ):
            found[name] = (proc.info["create_time"], proc.info["pid"])
    return {name: pid for name, (_, pid) in found.items()}


def _environ(proc: psutil.Process) -> str:
    try:
        return " ".join(f"{k}={v}" for k, v in proc.environ().items())
    except psutil.Error:
        return ""


def record(out: Path, seconds: int, rate: int, match: str | None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    pids = service_pids(match)
    procs = []
    for name, pid in pids.items():
        target = out / f"{name}.txt"
        cmd = [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "-o",
            str(target),
        ]
        log = (out / f"{name}.log").open("w")
        procs.append((target, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
    for _, p in procs:
        p.wait()
    return [t for t, _ in procs]


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames:
            stacks.append((frames.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (file.py)`: one entry per function, not per line."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({path})"


def summarize(path: Path, top: int = 25) -> str:
    # A thread woken in epoll_wait but still waiting for a CPU is sampled as active: on a loaded
    # machine that is most samples. Leave those out, so the shares are of work done.
    stacks = [(f, c) for f, c in load(path) if f and not any(w in f[-1] for w in WAITING)]
    total = sum(c for _, c in stacks) or 1
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, count in stacks:
        seen = set()
        for f in frames:
            s = short(f)
            if s in seen or any(p in s for p in PLUMBING):
                continue
            seen.add(s)
            inclusive[s] += count
        if frames:
            leaf[short(frames[-1])] += count
    lines = [f"{path.name}: {total} busy samples", "  inclusive (share of samples under it):"]
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    lines.append("  self (leaf frames):")
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in leaf.most_common(top)]
    return "\n".join(lines)


LOAD_GENERATOR = "bench (load generator)"
IDLE = "idle"


def label(name: str, cmdline: Sequence[str]) -> str:
    """What a process is, for the CPU split: a service by its package, the bench's load
    generator (`python -m bench`), PostgreSQL (the server and every backend), the broker (a JVM
    whose command line names Kafka), else its own name."""
    if "-m" in cmdline[:-1]:
        module = cmdline[cmdline.index("-m") + 1]
        if module in SERVICES:
            return module
        if module == "bench":
            return LOAD_GENERATOR
    if name == "postgres" or name.startswith("postgres:"):
        return "postgres"
    if name == "java" and any("kafka" in part.lower() for part in cmdline):
        return "kafka"
    return name


def process_labels() -> dict[int, str]:
    """`label` of every process now running, by pid."""
    labels = {0: IDLE}
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        labels[proc.info["pid"]] = label(proc.info["name"] or "?", proc.info["cmdline"] or [])
    return labels


_EXTENSION = re.compile(r"\.cpython-\d+[^.]*\.so$|\.abi3\.so$")


def code_of(dso: str) -> str:
    """Which code a sample ran, from perf's DSO: the Python interpreter (libpython, or a python
    binary with it linked in), the kernel, a JVM's compiled code, else the library's name."""
    base = dso.rsplit("/", 1)[-1]
    if base.startswith("libpython") or re.fullmatch(r"python3(\.\d+)?", base):
        return "interpreter"
    if base == "[kernel.kallsyms]":
        return "kernel"
    if re.fullmatch(r"perf-\d+\.map", base):
        return "JIT-compiled code"
    return _EXTENSION.sub("", base)


_SAMPLE = re.compile(r"^\s*(\d+)\s+\S+\s+\((.*)\)\s*$")


def cpu_shares(samples: Iterable[str], labels: dict[int, str]) -> dict[str, Counter[str]]:
    """Samples of `perf script -F pid,ip,dso` counted by process label and by code."""
    shares: dict[str, Counter[str]] = {}
    for line in samples:
        found = _SAMPLE.match(line)
        if found is None:
            continue
        pid, dso = int(found.group(1)), found.group(2)
        who = labels.get(pid, "other (exited)")
        shares.setdefault(who, Counter())[code_of(dso)] += 1
    return shares


def report_cpu(shares: dict[str, Counter[str]], seconds: float, cpus: int, top: int = 5) -> str:
    total = sum(sum(c.values()) for c in shares.values()) or 1
    ranked = sorted(shares.items(), key=lambda kv: -sum(kv[1].values()))
    lines = [f"CPU over {seconds:g} s on {cpus} CPUs ({total} samples), share of the machine:"]
    for who, codes in ranked:
        n = sum(codes.values())
        parts = ", ".join(f"{code} {100 * c / total:.1f}" for code, c in codes.most_common(top))
        lines.append(f"  {who:<28} {100 * n / total:5.1f} %   {parts}")
    return "\n".join(lines)


def record_cpu(seconds: float, rate: int, data: Path) -> dict[str, Counter[str]]:
    """`perf record -a` for `seconds`, then the split of its samples (`cpu_shares`). Processes
    are labelled from what runs at the start and at the end of the window."""
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("perf is not on PATH (Debian: apt-get install linux-perf)")
    labels = process_labels()
    cmd = [perf, "record", "-q", "-a", "-F", str(rate), "-o", str(data)]
    cmd += ["--", "sleep", str(seconds)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"perf record failed ({done.returncode}): {done.stderr.strip()}")
    labels = {**labels, **process_labels()}
    script = subprocess.run(
        [perf, "script", "-i", str(data), "-F", "pid,ip,dso"],
        capture_output=True,
        text=True,
        check=False,
    )
    if script.returncode != 0:
        raise SystemExit(f"perf script failed ({script.returncode}): {script.stderr.strip()}")
    return cpu_shares(script.stdout.splitlines(), labels)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="py-spy every running service for the same window")
    rec.add_argument("--seconds", type=int, default=30)
    rec.add_argument("--rate", type=int, default=50, help="samples per second")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--match", help="only processes whose environment contains this text")
    summ = sub.add_parser("summary", help="top frames of raw py-spy files")
    summ.add_argument("files", type=Path, nargs="+")
    summ.add_argument("--top", type=int, default=25)
    cpu = sub.add_parser("cpu", help="every process's share of the machine, by perf")
    cpu.add_argument("--seconds", type=float, default=30)
    cpu.add_argument("--rate", type=int, default=250, help="samples per second per CPU")
    cpu.add_argument("--data", type=Path, help="keep perf's data file here (default: a temp one)")
    args = parser.parse_args()
    if args.command == "cpu":
        with tempfile.TemporaryDirectory() as tmp:
            shares = record_cpu(args.seconds, args.rate, args.data or Path(tmp) / "perf.data")
        print(report_cpu(shares, args.seconds, os.cpu_count() or 1))
        return
    if args.command == "record":
        files = record(args.out, args.seconds, args.rate, args.match)
    else:
        files = args.files
    for f in files:
        if f.exists():
            print(summarize(f, args.top if args.command == "summary" else 25))


if __name__ == "__main__":
    main()
