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
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
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
    for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        for name in SERVICES:
            if (
                cmd.endswith(f"-m {name}")
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
    args = parser.parse_args()
    if args.command == "record":
        files = record(args.out, args.seconds, args.rate, args.match)
    else:
        files = args.files
    for f in files:
        if f.exists():
            print(summarize(f, args.top if args.command == "summary" else 25))


if __name__ == "__main__":
    main()
