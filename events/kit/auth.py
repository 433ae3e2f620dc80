"""Who is calling: bearer tokens (JWT) checked once per request, roles, and per-client rate limits.

Every service process installs `AuthMiddleware` (the runtime does it). It reads an
`Authorization: Bearer <jwt>` header if there is one and checks it with PyJWT against a fixed
list of algorithms, the issuer, the audience and the expiry; a bad token is refused with 401 on
any route. The caller it finds (a `Principal`) sits in the request scope for the route dependencies
`CustomerDep` (a token is required) and `AdminDep` (the admin role is required, 403 otherwise).

The same middleware limits requests per client (the token's subject, or the client address without
one) with the `limits` library's sliding window counter, counted in process (`RateLimit`): 429
with Retry-After past the limit.
Health and metrics routes are exempt, so probes and scrapes are never refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import floor, inf
from typing import Annotated, Any

import jwt
import orjson
from cachetools import TLRUCache
from fastapi import Depends, FastAPI, HTTPException, Request
from limits import parse_many
from starlette.types import ASGIApp, Receive, Scope, Send

from events.kit.logging import get_logger
from events.kit.settings import ServiceSettings

log = get_logger(__name__)

# HMAC only: a token signed with any other algorithm (or "none") is refused, whatever it claims.
ALGORITHMS = ("HS256",)
ADMIN = "admin"
CUSTOMER = "customer"
EXEMPT_PREFIXES = ("/health/", "/metrics")
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
VERIFIED_CACHE_SIZE = 20_000


class AuthError(Exception):
    """A token that cannot be trusted; the message is safe to show (it never quotes the token)."""


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles


@dataclass(frozen=True)
class TokenPolicy:
    key: str
    issuer: str
    audience: str
    leeway_s: int = 30

    def mint(self, subject: str, roles: Sequence[str] = (CUSTOMER,), ttl_s: int = 3600) -> str:
        return mint_token(
            self.key, subject, roles, ttl_s, issuer=self.issuer, audience=self.audience
        )

    # Tokens verified before, until they expire: a client sends the same token with every
    # request, and PyJWT's decode (base64, JSON, the claims) was 11 % of the order service's CPU
    # at 150 requests/s. Only tokens that passed every check are kept; bounded, least recently
    # used first out.
    _verified: TLRUCache[str, tuple[Principal, float]] = field(
        default_factory=lambda: TLRUCache(
            maxsize=VERIFIED_CACHE_SIZE,
            ttu=lambda _, value, now: value[1],
            timer=lambda: time.time(),
        ),
        init=False,
        repr=False,
        compare=False,
    )

    def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            return known[0]
        principal, expires = self._decode(token)
        self._verified[token] = (principal, expires)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {type(exc).__name__}") from None
        subject = claims["sub"]
        roles = claims.get("roles", [])
        if not isinstance(subject, str) or not 1 <= len(subject) <= 100:
            raise AuthError("invalid token: the subject must be a string of 1 to 100 characters")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthError("invalid token: roles must be a list of strings")
        return Principal(subject, frozenset(roles)), float(claims["exp"]) + self.leeway_s


def mint_token(
    key: str,
    subject: str,
    roles: Sequence[str] = (CUSTOMER,),
    ttl_s: int = 3600,
    *,
    issuer: str = "shop",
    audience: str = "shop-api",
) -> str:
    """A signed token for `subject` with `roles`, valid for `ttl_s` seconds."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "roles": list(roles),
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_s,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHMS[0])


class RateLimit:
    """Per-client sliding window counters, e.g. "50/second;1000/minute"; one instance per process.

    The `limits` library parses the spec, and its sliding window counter is the algorithm: a
    client is let through while its hits in the current window, plus those of the window before
    weighted by how much of it the sliding window still covers, stay under the limit; a refusal
    says when the count next drops (Retry-After). The counting is done here, in a dict and
    without awaits. The library's async in-memory storage wraps each of its calls in its error
    handling (twice over for the subclass that limited its sweep) and took 55-60 µs a request
    for the two default limits, as much as the rest of the order service's POST /orders
    (`python -m bench.ingress` with and without ORDER_RATE_LIMIT). tests/unit/test_auth.py checks
    these answers against the library's own limiter, hit for hit.

    A client's counters are dropped once both their windows have passed, at most once a second
    for all clients: a sweep after every hit, as the library did, cost 12.5 % of the order
    service's CPU at 130 requests/s from 2,000 clients. (The moving window, which keeps every
    hit, cost 8.3 ms a request at 25 requests/s; the counter keeps two numbers.)
    """

    SWEEP_INTERVAL_S = 1.0

    def __init__(self, spec: str, clock: Callable[[], float] = time.time) -> None:
        self.items = parse_many(spec) if spec.strip() else []
        self._limits = [(item.amount, item.get_expiry()) for item in self.items]
        self._clock = clock
        # (client, limit's index) -> [window number, hits in it, hits in the window before]
        self._counts: dict[tuple[str, int], list[int]] = {}
        self._swept_at = 0.0

    def __len__(self) -> int:
        """The counters held (two windows of a client for each limit)."""
        return len(self._counts)

    async def retry_after(self, client: str) -> int | None:
        """None when the request may go ahead (and it is counted), else the seconds to wait."""
        now = self._clock()
        if now - self._swept_at >= self.SWEEP_INTERVAL_S:
            self._sweep(now)
        for index, (amount, expiry) in enumerate(self._limits):
            wait = self._hit((client, index), amount, expiry, now)
            if wait is not None:
                return wait
        return None

    def _hit(self, key: tuple[str, int], amount: int, expiry: int, now: float) -> int | None:
        # the library's arithmetic, expression for expression, so that its answers are ours
        window = int(now / expiry)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [window, 0, 0]
        elif counts[0] != window:
            counts[2] = counts[1] if counts[0] == int((now - expiry) / expiry) else 0
            counts[1] = 0
            counts[0] = window
        _, current, previous = counts
        previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry if previous else 0.0
        if floor(previous * previous_ttl / expiry + current) + 1 <= amount:
            counts[1] += 1
            return None
        # when the weighted count next drops: a previous hit slides out, or the window turns
        reset_in = inf
        if previous:
            reset_in = previous_ttl % (expiry / previous)
        if current:
            reset_in = min(reset_in, ((1 - ((now / expiry) % 1)) * expiry + expiry) % expiry)
        return max(1, int(reset_in) + 1) if reset_in != inf else 1

    def _sweep(self, now: float) -> None:
        self._swept_at = now
        passed = [
            key
            for key, (window, _, _) in self._counts.items()
            if window < int(now / self._limits[key[1]][1]) - 1
        ]
        for key in passed:
            del self._counts[key]


class AuthMiddleware:
    """Puts the caller (or None) in scope["state"]["principal"]; 401 on a bad token, 429 past the
    rate limit. Pure ASGI, so streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp, policy: TokenPolicy, rate_limit: RateLimit) -> None:
        self.app = app
        self.policy = policy
        self.rate_limit = rate_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        principal: Principal | None = None
        header = dict(scope.get("headers") or []).get(b"authorization")
        if header is not None:
            scheme, _, token = header.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                await _answer(send, 401, "use an Authorization: Bearer <token> header")
                return
            try:
                principal = self.policy.verify(token.strip())
            except AuthError as exc:
                await _answer(send, 401, str(exc))
                return
        client = f"sub:{principal.subject}" if principal else f"ip:{_client_host(scope)}"
        wait = await self.rate_limit.retry_after(client)
        if wait is not None:
            log.info("rate limited", client=client, path=scope["path"], retry_after_s=wait)
            await _answer(send, 429, "too many requests", retry_after=wait)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _client_host(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _answer(send: Send, status: int, detail: str, *, retry_after: int | None = None) -> None:
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="shop"'))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps({"detail": detail})})


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker
# thread, a thread hop per request that showed as a seventh of the order service's CPU.
async def current_principal(request: Request) -> Principal:
    """The authenticated caller; 401 when the request carries no token."""
    principal: Principal | None = request.scope.get("state", {}).get("principal")
    if principal is None:
        raise HTTPException(
            401, "this route needs a bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


async def admin_principal(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    """The authenticated caller, who must hold the admin role (403 otherwise)."""
    if not principal.is_admin:
        raise HTTPException(403, "this route needs the admin role")
    return principal


CustomerDep = Annotated[Principal, Depends(current_principal)]
AdminDep = Annotated[Principal, Depends(admin_principal)]


def policy_of(settings: ServiceSettings) -> TokenPolicy:
    return TokenPolicy(
        key=settings.auth_signing_key.get_secret_value(),
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
    )


def install(app: FastAPI, settings: ServiceSettings) -> None:
    """Authentication and rate limiting on every route of `app` but health and metrics."""
    app.state.token_policy = policy_of(settings)
    app.add_middleware(
        AuthMiddleware, policy=app.state.token_policy, rate_limit=RateLimit(settings.rate_limit)
    )
