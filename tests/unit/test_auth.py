"""Bearer tokens, roles, rate limits and the refusal of placeholder secrets (no I/O)."""

from __future__ import annotations

import random
import time

import httpx
import jwt
import pytest
from fastapi import FastAPI
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from pydantic import ValidationError

from events.kit import auth
from events.kit.auth import ADMIN, AdminDep, AuthError, CustomerDep, TokenPolicy, mint_token
from events.kit.settings import DEV_SIGNING_KEY, ServiceSettings

KEY = "unit-test-signing-key-7f3a9c1e5b2d4f6a8c0e"
POLICY = TokenPolicy(KEY, issuer="shop", audience="shop-api")


def test_a_token_minted_with_the_key_names_its_subject_and_roles() -> None:
    principal = POLICY.verify(POLICY.mint("alice", ["customer"]))
    assert principal.subject == "alice"
    assert not principal.is_admin
    assert POLICY.verify(POLICY.mint("ops", [ADMIN])).is_admin


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ({"exp": -60}, "expired"),
        ({"iss": "someone-else"}, "InvalidIssuer"),
        ({"aud": "another-api"}, "InvalidAudience"),
        ({"sub": None}, "MissingRequiredClaim"),
    ],
)
def test_tokens_with_a_wrong_claim_are_refused(claims: dict[str, object], words: str) -> None:
    now = int(time.time())
    base: dict[str, object] = {
        "sub": "alice",
        "roles": ["customer"],
        "iss": "shop",
        "aud": "shop-api",
        "iat": now,
        "exp": now + 60,
    }
    base.update(
        {k: (now + v if k == "exp" and isinstance(v, int) else v) for k, v in claims.items()}
    )
    base = {k: v for k, v in base.items() if v is not None}
    with pytest.raises(AuthError, match=words):
        POLICY.verify(jwt.encode(base, KEY, algorithm="HS256"))


def test_tokens_signed_with_another_key_or_algorithm_are_refused() -> None:
    with pytest.raises(AuthError, match="InvalidSignature"):
        POLICY.verify(mint_token("some-other-key-that-is-long-enough-000", "eve", [ADMIN]))
    now = int(time.time())
    claims: dict[str, object] = {"sub": "eve", "roles": [ADMIN], "iss": "shop", "aud": "shop-api"}
    claims |= {"iat": now, "exp": now + 60}
    for algorithm in ("HS512", "none"):
        key = None if algorithm == "none" else KEY * 2
        with pytest.raises(AuthError, match="invalid token"):
            POLICY.verify(jwt.encode(claims, key, algorithm=algorithm))
    with pytest.raises(AuthError):
        POLICY.verify("not.a.token")


def test_a_verified_token_is_decoded_once_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = TokenPolicy(KEY, issuer="shop", audience="shop-api", leeway_s=30)
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: object, **kwargs: object) -> object:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting_decode)
    token = policy.mint("carol", ttl_s=600)
    assert [policy.verify(token).subject for _ in range(50)] == ["carol"] * 50
    assert len(decoded) == 1
    # a token that fails is never kept: every attempt is checked (and refused) again
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for _ in range(2):
        with pytest.raises(AuthError):
            policy.verify(forged)
    assert len(decoded) == 3
    # past its expiry (and the leeway) the kept answer is gone: the token is checked again
    expires = real_decode(token, options={"verify_signature": False})["exp"] + 30
    monkeypatch.setattr(time, "time", lambda: expires + 1.0)
    policy.verify(token)
    assert len(decoded) == 4


def test_production_refuses_the_development_key_and_short_keys() -> None:
    assert ServiceSettings().auth_signing_key.get_secret_value() == DEV_SIGNING_KEY
    for key in (DEV_SIGNING_KEY, "changeme", "x" * 31):
        with pytest.raises(ValidationError, match="placeholder") as info:
            ServiceSettings(environment="production", auth_signing_key=key)
        assert key not in str(info.value) or key == "changeme"
    strong = ServiceSettings(environment="production", auth_signing_key="k" * 48)
    assert strong.environment == "production"


def app_with(rate_limit: str) -> FastAPI:
    app = FastAPI()

    @app.get("/mine")
    async def mine(who: CustomerDep) -> dict[str, str]:
        return {"subject": who.subject}

    @app.get("/admin/thing")
    async def admin_thing(who: AdminDep) -> dict[str, str]:
        return {"subject": who.subject}

    @app.get("/public")
    async def public() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    settings = ServiceSettings(auth_signing_key=KEY, rate_limit=rate_limit)
    auth.install(app, settings)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def bearer(subject: str, roles: list[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {POLICY.mint(subject, roles)}"}


async def test_routes_answer_401_without_a_valid_token_and_403_without_the_role() -> None:
    async with client(app_with("")) as c:
        assert (await c.get("/public")).status_code == 200
        no_token = await c.get("/mine")
        assert no_token.status_code == 401
        assert no_token.headers["www-authenticate"].startswith("Bearer")
        assert (await c.get("/mine", headers={"Authorization": "Basic YTpi"})).status_code == 401
        bad = await c.get("/public", headers={"Authorization": "Bearer abc.def.ghi"})
        assert bad.status_code == 401
        assert "abc.def.ghi" not in bad.text
        customer = bearer("alice", ["customer"])
        assert (await c.get("/mine", headers=customer)).json() == {"subject": "alice"}
        assert (await c.get("/admin/thing", headers=customer)).status_code == 403
        admin = bearer("ops", [ADMIN])
        assert (await c.get("/admin/thing", headers=admin)).json() == {"subject": "ops"}


async def test_a_client_past_its_rate_limit_gets_429_with_retry_after_and_others_do_not() -> None:
    async with client(app_with("5/minute")) as c:
        alice, bob = bearer("alice", ["customer"]), bearer("bob", ["customer"])
        codes = [(await c.get("/mine", headers=alice)).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
        limited = await c.get("/mine", headers=alice)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 61
        assert (await c.get("/mine", headers=bob)).status_code == 200
        # probes are never limited
        assert all([(await c.get("/health/live")).status_code == 200 for _ in range(10)])
        anonymous = [(await c.get("/public")).status_code for _ in range(6)]
        assert anonymous == [200] * 5 + [429]


async def test_the_rate_limiter_answers_as_the_limits_library_does_hit_for_hit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The counting is ours, the algorithm the library's: the same hits at the same times get
    the same answers (let through, or the same Retry-After) as its own sliding window counter,
    the limiter this one replaced."""
    clock = [1_700_000_000.25]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    spec = "5/second;3/second;12/minute"
    ours = auth.RateLimit(spec, clock=lambda: clock[0])
    theirs = SlidingWindowCounterRateLimiter(MemoryStorage())

    async def library(client: str) -> int | None:
        for item in ours.items:
            if not await theirs.hit(item, client):
                stats = await theirs.get_window_stats(item, client)
                return max(1, int(stats.reset_time - time.time()) + 1)
        return None

    rnd = random.Random(7)
    answers = []
    for _ in range(3_000):
        steps, weights = (
            [0.0, 0.01, 0.05, 0.2, 0.7, 1.3, 4.0, 9.0, 61.0],
            [8, 8, 4, 3, 2, 2, 1, 1, 1],
        )
        clock[0] += rnd.choices(steps, weights)[0]
        client = f"c{rnd.randrange(2)}"
        answer = await ours.retry_after(client)
        assert answer == await library(client), (clock[0], client)
        answers.append(answer)
    # both kinds of answer, and refusals by each limit, were compared
    refusals = [a for a in answers if a is not None]
    assert len(refusals) > 300
    assert len(answers) - len(refusals) > 300
    assert min(refusals) == 1  # a second's limit
    assert max(refusals) > 5  # the minute's


async def test_the_rate_limiter_forgets_clients_whose_windows_have_passed() -> None:
    clock = [1000.0]
    limit = auth.RateLimit("3/second;100/minute", clock=lambda: clock[0])
    for i in range(400):
        assert await limit.retry_after(f"c{i}") is None
    assert len(limit) == 800
    clock[0] += 2.5  # both one-second windows passed; the minute's still counts
    assert await limit.retry_after("c0") is None
    assert len(limit) == 401  # the minute's counters, and c0's new second
    clock[0] += 120
    assert await limit.retry_after("c0") is None
    assert len(limit) == 2
    # a client past its limit is held back, and let through again once its windows have passed
    for _ in range(3):
        assert await limit.retry_after("busy") is None
    assert await limit.retry_after("busy") == 1
    clock[0] += 2.0
    assert await limit.retry_after("busy") is None
