"""`python -m bench.profile cpu`: perf's samples split by process and by code."""

from __future__ import annotations

import subprocess
import sys

from bench.profile import (
    IDLE,
    LOAD_GENERATOR,
    code_of,
    cpu_shares,
    label,
    report_cpu,
    service_pids,
)

# `perf script -F pid,ip,dso` lines, as perf 6.1 prints them
SAMPLES = """\
     624      7f1b77985537 (/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0)
     624      7f1b77985538 (/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0)
     624  ffffffff8170e6c5 ([kernel.kallsyms])
     625            5a1f00 (/usr/bin/python3.11)
     625      7f1b70000000 (/srv/.venv/lib/python3.11/site-packages/pydantic_core/_pydantic_core.cpython-311-x86_64-linux-gnu.so)
     651            4a2b10 (/opt/pg/bin/postgres)
     652  ffffffff8170e6c5 ([kernel.kallsyms])
     501      7f20709486c8 (/tmp/perf-501.map)
     501      7f2070000000 (/usr/lib/jvm/java-17/lib/server/libjvm.so)
       0  ffffffff81000130 ([kernel.kallsyms])
     999      7f0000000000 (/usr/lib/x86_64-linux-gnu/libc.so.6)

not a sample line
"""
LABELS = {
    0: IDLE,
    624: "order_service",
    625: "analytics_service",
    651: "postgres",
    652: "postgres",
    501: "kafka",
}


def test_processes_are_named_by_what_they_run() -> None:
    assert label("python", ["/srv/.venv/bin/python", "-m", "order_service"]) == "order_service"
    assert label("python", ["python", "-m", "bench", "--rates", "50"]) == LOAD_GENERATOR
    assert label("python", ["python", "-m", "bench.notify"]) == "python"
    assert label("python", ["python", "-m"]) == "python"  # a cut-short command line
    assert label("postgres", ["postgres: postgres order 127.0.0.1(5) idle"]) == "postgres"
    assert label("java", ["java", "-cp", "/x/kafka-libs/*", "kafka.Kafka", "s.props"]) == "kafka"
    assert label("java", ["java", "-jar", "other.jar"]) == "java"


def test_code_is_named_by_what_a_sample_ran() -> None:
    assert code_of("/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0") == "interpreter"
    assert code_of("/usr/bin/python3.11") == "interpreter"  # the interpreter linked in
    assert code_of("[kernel.kallsyms]") == "kernel"
    assert code_of("/tmp/perf-501.map") == "JIT-compiled code"
    assert code_of("/x/_pydantic_core.cpython-311-x86_64-linux-gnu.so") == "_pydantic_core"
    assert code_of("/x/_uuid_utils.abi3.so") == "_uuid_utils"
    assert code_of("/usr/lib/x86_64-linux-gnu/libc.so.6") == "libc.so.6"


def test_samples_add_up_by_process_and_code() -> None:
    shares = cpu_shares(SAMPLES.splitlines(), LABELS)
    assert shares["order_service"] == {"interpreter": 2, "kernel": 1}
    assert shares["analytics_service"] == {"interpreter": 1, "_pydantic_core": 1}
    assert shares["postgres"] == {"postgres": 1, "kernel": 1}  # every backend in one
    assert shares["kafka"] == {"JIT-compiled code": 1, "libjvm.so": 1}
    assert shares[IDLE] == {"kernel": 1}
    assert shares["other (exited)"] == {"libc.so.6": 1}  # a pid seen in neither listing
    assert sum(sum(c.values()) for c in shares.values()) == 11


def test_the_report_ranks_processes_by_their_share_of_the_machine() -> None:
    report = report_cpu(cpu_shares(SAMPLES.splitlines(), LABELS), seconds=30, cpus=2)
    lines = report.splitlines()
    assert lines[0] == "CPU over 30 s on 2 CPUs (11 samples), share of the machine:"
    assert lines[1].split()[:2] == ["order_service", "27.3"]  # 3 of 11
    assert "interpreter 18.2, kernel 9.1" in lines[1]
    assert [line.split()[0] for line in lines[2:5]] == ["analytics_service", "postgres", "kafka"]


def test_py_spy_s_record_finds_the_services_by_the_same_labels() -> None:
    # a stand-in whose command line ends as a service's does: `python ... -m order_service`
    code = "import time; time.sleep(30)"
    stand_in = subprocess.Popen([sys.executable, "-c", code, "-m", "order_service"])
    try:
        assert service_pids()["order_service"] == stand_in.pid  # the newest one
    finally:
        stand_in.kill()
        stand_in.wait()
