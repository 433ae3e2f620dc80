"""How the local supervisor reports a service process that died while starting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local import services
from deploy.local.common import InfraError
from deploy.local.services import ServiceSupervisor
from tests.ports import free_port


def supervisor(tmp_path: Path) -> ServiceSupervisor:
    # nothing listens on these ports: a service that reaches for its database dies at once
    dead = free_port()
    return ServiceSupervisor(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        database_url=lambda db: f"postgresql://postgres@127.0.0.1:{dead}/{db}",
        data_dir=tmp_path,
        ports={"catalog_service": free_port()},
    )


def test_a_service_that_exits_while_starting_is_reported_with_its_exit_code_and_log(
    tmp_path: Path,
) -> None:
    sup = supervisor(tmp_path)
    sup.start("catalog")
    try:
        with pytest.raises(InfraError) as raised:
            sup.wait_ready("catalog", timeout=60)
    finally:
        sup.stop_all()
    message = str(raised.value)
    assert "catalog_service (pid " in message
    assert "exited with code 1 during start" in message
    assert "ConnectionRefusedError" in message


def test_a_service_killed_by_a_signal_is_reported_with_the_signal(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    )
    proc.wait(30)
    sup._procs[("catalog_service", 0)] = proc
    assert sup.how_it_ended("catalog") == f"(pid {proc.pid}) was killed by SIGSEGV"
    assert sup.how_it_ended("inventory") == "exited"


def test_a_process_the_supervisor_stopped_itself_is_not_reported_as_having_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "EXIT_GRACE_S", 0.2)
    sup = supervisor(tmp_path)
    # its command line names the service, as the supervisor checks before it signals a pid
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "catalog_service"]
    )
    sup._procs[("catalog_service", 0)] = proc
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "catalog_service.pid").write_text(str(proc.pid))
    try:
        ended = sup.how_it_ended("catalog")
        assert f"yet is still running (the pid file names {proc.pid}: " in ended
        assert "'catalog_service']" in ended  # what the process's command line is now
        assert sup.stop("catalog") is True
        assert proc.poll() is not None
        assert sup.how_it_ended("catalog") == "exited"
    finally:
        proc.kill()
        proc.wait(10)


def test_a_process_the_supervisor_started_is_running_until_it_ends_whatever_its_pid_file_says(
    tmp_path: Path,
) -> None:
    """Its own child is the authority: a pid file that no longer names it (or a command line
    read badly) must not make a starting service look dead, nor a stop miss it."""
    sup = supervisor(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sup._procs[("catalog_service", 0)] = proc
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "catalog_service.pid").write_text("1")  # not it, not a service
    try:
        assert sup.pid("catalog") == proc.pid
        assert sup.stop("catalog") is True
        assert proc.poll() is not None
        assert sup.pid("catalog") is None
    finally:
        proc.kill()
        proc.wait(10)
