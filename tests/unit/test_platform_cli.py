"""`shop run` / `shop up`: what it tells a newcomer to try, and how it stops."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploy import platform_cli
from deploy.local.services import ServiceSupervisor
from order_service.api import OrderIn


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """up() installs handlers for SIGTERM and SIGHUP: give pytest its own back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_the_printed_order_is_one_the_api_accepts(tmp_path: Path) -> None:
    sup = ServiceSupervisor(kafka_bootstrap="127.0.0.1:1", database_url=str, data_dir=tmp_path)
    text = platform_cli._try_it(sup)
    body = re.search(r"-d '([^']+)'", text)
    assert body is not None, text
    order = OrderIn.model_validate_json(body.group(1))  # the API's own model: 422 otherwise
    assert order.payment_token == "tok_approve"
    # the customer comes from a bearer token, never from the body
    assert re.search(r"TOKEN=\$\(\S*shop token --customer \w+\)", text), text
    assert '-H "Authorization: Bearer $TOKEN"' in text
    assert f"{sup.url('order')}/orders" in text


class FakeStack:
    def __init__(self, on_up: Callable[[], None]) -> None:
        self.on_up = on_up
        self.calls: list[str] = []

    def up(self, step: Callable[[str], None]) -> None:
        self.calls.append("up")
        self.on_up()

    def down(self) -> dict[str, bool]:
        self.calls.append("down")
        return {}


class FakeSupervisor:
    def __init__(self, stack: FakeStack) -> None:
        self.calls = stack.calls

    def start_all(self, step: Callable[[str], None]) -> None:
        self.calls.append("start services")

    def stop_all(self) -> list[str]:
        self.calls.append("stop services")
        return []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_termination_signal_while_starting_stops_what_started(
    sig: signal.Signals,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signal_handlers: None,
) -> None:
    """Before, SIGTERM (`timeout make run`, a process manager) or SIGHUP (a closed terminal) ended
    `shop run` at once and left Kafka, PostgreSQL and the services running."""
    stack = FakeStack(on_up=lambda: os.kill(os.getpid(), sig))
    monkeypatch.setattr(platform_cli, "LocalStack", lambda data: stack)
    monkeypatch.setattr(platform_cli, "supervisor", lambda *a, **k: FakeSupervisor(stack))

    platform_cli.up(data=tmp_path, detach=False, seed=False, replicas="")

    assert stack.calls == ["up", "stop services", "down"]
    # while stopping, another one is ignored rather than cutting the stop short
    assert signal.getsignal(sig) == signal.SIG_IGN


def test_a_termination_signal_while_running_stops_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signal_handlers: None
) -> None:
    stack = FakeStack(on_up=lambda: None)
    monkeypatch.setattr(platform_cli, "LocalStack", lambda data: stack)
    monkeypatch.setattr(platform_cli, "supervisor", lambda *a, **k: FakeSupervisor(stack))
    monkeypatch.setattr(platform_cli, "_status_table", lambda *a: "")
    monkeypatch.setattr(platform_cli, "_where_to_look", lambda sup: "")
    monkeypatch.setattr(platform_cli, "_try_it", lambda sup: "")

    def sleep(seconds: Any) -> None:  # the status loop's first pause: the signal arrives
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(platform_cli, "time", SimpleNamespace(sleep=sleep))
    platform_cli.up(data=tmp_path, detach=False, seed=False, replicas="")
    assert stack.calls == ["up", "start services", "stop services", "down"]
