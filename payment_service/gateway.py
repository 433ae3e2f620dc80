"""The payment gateway port, a simulator behind it, and the retry policy for transient failures.

Every call carries an idempotency key. A gateway, like Stripe, answers a repeated key with the
result it gave the first time and does not move money again; that is what makes a retry, or a
redelivery after a crash between the gateway call and our database commit, charge only once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import orjson

from events.kit.logging import get_logger
from events.messages import Money

log = get_logger(__name__)

T = TypeVar("T")


class GatewayError(Exception):
    """The gateway could not give an answer.

    Deliberately not a TimeoutError or OSError: the messaging kit retries those without limit,
    while a gateway that keeps failing should end in an answer or a dead letter.
    """


class GatewayUnavailable(GatewayError):
    """A transient failure (5xx, connection reset): retrying with the same key is safe."""


class GatewayTimeout(GatewayError):
    """No answer within the timeout; the call may or may not have taken effect."""


class IdempotencyKeyReused(GatewayError):
    """The key was already used for a different request."""


@dataclass(frozen=True)
class GatewayResult:
    """The gateway's answer: approved with its reference for the operation, or declined with a code.

    For an authorization the reference identifies it in later capture, void and refund calls.
    """

    approved: bool
    reference: str | None = None
    code: str | None = None


class PaymentGateway(Protocol):
    """What payment_service needs from a card gateway. Raises GatewayError subclasses."""

    async def authorize(self, token: str, amount: Money, idempotency_key: str) -> GatewayResult: ...

    async def capture(
        self, authorization: str, amount: Money, idempotency_key: str
    ) -> GatewayResult: ...

    async def void(self, authorization: str, idempotency_key: str) -> GatewayResult: ...

    async def refund(
        self, authorization: str, amount: Money, idempotency_key: str
    ) -> GatewayResult: ...


HoldState = Literal["authorized", "captured", "voided", "refunded"]

DECLINING_TOKENS = {"tok_decline": "declined", "tok_insufficient_funds": "insufficient_funds"}
SILENT_TOKEN = "tok_timeout"


@dataclass
class _Hold:
    amount: Money
    state: HoldState


@dataclass(frozen=True)
class _Answered:
    request: str  # the request's canonical JSON: a key reused for another request is refused
    result: GatewayResult


class _MemoryState:
    """The simulator's books in this process's memory: gone when the process ends."""

    def __init__(self) -> None:
        self._answered: dict[str, _Answered] = {}
        self._holds: dict[str, _Hold] = {}

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        yield  # one process, and no await inside a call's lookup and effect

    def answered(self, key: str) -> _Answered | None:
        return self._answered.get(key)

    def answer(self, key: str, answered: _Answered) -> None:
        self._answered[key] = answered

    def hold(self, reference: str) -> _Hold | None:
        hold = self._holds.get(reference)
        return _Hold(hold.amount, hold.state) if hold else None

    def put_hold(self, reference: str, hold: _Hold) -> None:
        self._holds[reference] = hold

    def close(self) -> None:
        pass


class _SqliteState:
    """The simulator's books in a SQLite file, as a real gateway keeps them on its side: they
    outlive the payment process, so after a crash or restart a capture, void or refund of an
    earlier authorization still finds it, and a retried key still gets its first answer. Several
    payment processes may share the file; each call is one immediate (write-locked) transaction,
    committed before the call answers."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS answered (key TEXT PRIMARY KEY, request TEXT NOT NULL,
        approved INTEGER NOT NULL, reference TEXT, code TEXT);
    CREATE TABLE IF NOT EXISTS holds (reference TEXT PRIMARY KEY, amount INTEGER NOT NULL,
        currency TEXT NOT NULL, state TEXT NOT NULL);
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode (isolation_level None): the transactions are the explicit ones below
        self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a killed process loses nothing committed
        self._db.executescript(self.SCHEMA)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def answered(self, key: str) -> _Answered | None:
        row = self._db.execute(
            "SELECT request, approved, reference, code FROM answered WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return _Answered(row[0], GatewayResult(bool(row[1]), row[2], row[3]))

    def answer(self, key: str, answered: _Answered) -> None:
        r = answered.result
        self._db.execute(
            "INSERT INTO answered VALUES (?, ?, ?, ?, ?)",
            (key, answered.request, int(r.approved), r.reference, r.code),
        )

    def hold(self, reference: str) -> _Hold | None:
        row = self._db.execute(
            "SELECT amount, currency, state FROM holds WHERE reference = ?", (reference,)
        ).fetchone()
        if row is None:
            return None
        return _Hold(Money(amount=row[0], currency=row[1]), row[2])

    def put_hold(self, reference: str, hold: _Hold) -> None:
        self._db.execute(
            "INSERT INTO holds VALUES (?, ?, ?, ?) ON CONFLICT (reference) DO UPDATE "
            "SET state = excluded.state",
            (reference, hold.amount.amount, hold.amount.currency, hold.state),
        )

    def close(self) -> None:
        self._db.close()


class SimulatedGateway:
    """A simulated gateway with deterministic test tokens.

    tok_approve (and any other tok_*) approves, tok_decline and tok_insufficient_funds decline,
    tok_timeout never answers (GatewayTimeout after timeout_ms). `latency_ms` and `failure_rate`
    (the share of calls failing with GatewayUnavailable before doing anything) can be changed at
    any time. `charges` counts the authorizations it really made, replays excluded. Its books
    (authorizations and answered keys) are in memory, or with `state_path` in a SQLite file that
    outlives the process, as a real gateway's do (the platform's local stack uses one).
    """

    def __init__(
        self,
        *,
        latency_ms: int = 0,
        failure_rate: float = 0.0,
        timeout_ms: int = 2000,
        seed: int | None = None,
        state_path: Path | None = None,
    ) -> None:
        self.latency_ms = latency_ms
        self.failure_rate = failure_rate
        self.timeout_ms = timeout_ms
        self._random = random.Random(seed)
        self._state: _MemoryState | _SqliteState = (
            _SqliteState(state_path) if state_path else _MemoryState()
        )
        # A restarted process with the same seed would draw the same references again: with
        # books that outlive it, references are unique whatever the seed.
        self._unique_references = state_path is not None
        self.calls: Counter[str] = Counter()
        self.effects: Counter[str] = Counter()

    @property
    def charges(self) -> int:
        return self.effects["authorize"]

    def state_of(self, authorization: str) -> HoldState | None:
        hold = self._state.hold(authorization)
        return hold.state if hold else None

    def close(self) -> None:
        self._state.close()

    async def authorize(self, token: str, amount: Money, idempotency_key: str) -> GatewayResult:
        self.calls["authorize"] += 1
        if token == SILENT_TOKEN:
            await self._never_answer()

        def effect() -> GatewayResult:
            if token in DECLINING_TOKENS:
                self.effects["decline"] += 1
                return GatewayResult(approved=False, code=DECLINING_TOKENS[token])
            reference = self._reference("auth")
            self._state.put_hold(reference, _Hold(amount, "authorized"))
            self.effects["authorize"] += 1
            return GatewayResult(approved=True, reference=reference)

        return await self._call(idempotency_key, ("authorize", token, amount), effect)

    async def capture(
        self, authorization: str, amount: Money, idempotency_key: str
    ) -> GatewayResult:
        self.calls["capture"] += 1

        def effect() -> GatewayResult:
            return self._move(authorization, "capture", "authorized", "captured", amount)

        return await self._call(idempotency_key, ("capture", authorization, amount), effect)

    async def void(self, authorization: str, idempotency_key: str) -> GatewayResult:
        self.calls["void"] += 1

        def effect() -> GatewayResult:
            return self._move(authorization, "void", "authorized", "voided", None)

        return await self._call(idempotency_key, ("void", authorization), effect)

    async def refund(
        self, authorization: str, amount: Money, idempotency_key: str
    ) -> GatewayResult:
        self.calls["refund"] += 1

        def effect() -> GatewayResult:
            return self._move(authorization, "refund", "captured", "refunded", amount)

        return await self._call(idempotency_key, ("refund", authorization, amount), effect)

    def _move(
        self,
        authorization: str,
        operation: str,
        source: HoldState,
        target: HoldState,
        amount: Money | None,
    ) -> GatewayResult:
        hold = self._state.hold(authorization)
        if hold is None:
            return GatewayResult(approved=False, code="no_such_authorization")
        if hold.state != source:
            return GatewayResult(approved=False, code=f"already_{hold.state}")
        if amount is not None and (
            amount.currency != hold.amount.currency or amount.amount > hold.amount.amount
        ):
            return GatewayResult(approved=False, code="amount_exceeds_authorization")
        hold.state = target
        self._state.put_hold(authorization, hold)
        self.effects[operation] += 1
        return GatewayResult(approved=True, reference=self._reference(operation[:3]))

    async def _call(
        self, key: str, request: tuple[object, ...], effect: Callable[[], GatewayResult]
    ) -> GatewayResult:
        await self._delay()
        if self.failure_rate and self._random.random() < self.failure_rate:
            raise GatewayUnavailable("simulated transient gateway failure")
        canonical = orjson.dumps(
            request, default=lambda m: m.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS
        ).decode()
        # No await from here on: a lookup and its effect cannot interleave with another call of
        # this process, and the transaction keeps other processes sharing the books out.
        with self._state.transaction():
            answered = self._state.answered(key)
            if answered is not None:
                if answered.request != canonical:
                    raise IdempotencyKeyReused(
                        f"idempotency key {key!r} reused for another request"
                    )
                return answered.result
            result = effect()
            self._state.answer(key, _Answered(canonical, result))
        return result

    async def _delay(self) -> None:
        if self.latency_ms >= self.timeout_ms:
            await self._never_answer()
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)

    async def _never_answer(self) -> None:
        await asyncio.sleep(self.timeout_ms / 1000)
        raise GatewayTimeout(f"no answer from the gateway within {self.timeout_ms} ms")

    def _reference(self, prefix: str) -> str:
        # 32 hex digits, as a real gateway's ids mix letters and digits: 16 of them could come
        # out all decimal and read as a card number (13 to 19 digits passing Luhn), which the
        # card-number scan of every table and log rightly flags; 32 digits in a row cannot.
        if self._unique_references:
            return f"{prefix}_{uuid.uuid4().hex}"
        return f"{prefix}_{self._random.getrandbits(128):032x}"


@dataclass(frozen=True)
class RetryPolicy:
    """How a handler retries transient gateway failures: attempts in all, doubling backoff."""

    max_attempts: int = 3
    backoff_ms: int = 50


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    """Run a gateway call, retrying GatewayUnavailable; the call must reuse its idempotency key."""
    attempt = 1
    while True:
        try:
            return await call()
        except GatewayUnavailable as exc:
            if attempt >= policy.max_attempts:
                raise
            log.warning("gateway unavailable; retrying", attempt=attempt, error=str(exc))
            await asyncio.sleep(policy.backoff_ms / 1000 * 2 ** (attempt - 1))
            attempt += 1
