"""`shop token`: bearer tokens for local use, and the headers the CLI's own requests carry.

Tokens are signed with SHOP_AUTH_SIGNING_KEY when it is set (the supervisor hands the same key to
every service), otherwise with the development key the services use out of the box.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from events.kit.auth import ADMIN, CUSTOMER, mint_token
from events.kit.settings import DEV_SIGNING_KEY, ServiceSettings

KEY_ENV = "SHOP_AUTH_SIGNING_KEY"


def signing_key() -> str:
    return os.environ.get(KEY_ENV) or DEV_SIGNING_KEY


def token_for(subject: str, *, admin: bool = False, ttl_s: int = 3600) -> str:
    defaults = ServiceSettings()
    return mint_token(
        signing_key(),
        subject,
        [ADMIN] if admin else [CUSTOMER],
        ttl_s,
        issuer=defaults.auth_issuer,
        audience=defaults.auth_audience,
    )


def bearer(subject: str, *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(subject, admin=admin)}"}


def token(
    customer: Annotated[
        str | None, typer.Option(help="The customer the token speaks for (its subject).")
    ] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="An operator token with the admin role.")
    ] = False,
    ttl: Annotated[
        int, typer.Option(min=60, max=30 * 86400, help="Seconds it stays valid.")
    ] = 3600,
) -> None:
    """Mint a bearer token for the local platform: `--customer C` or `--admin`.

    curl -H "Authorization: Bearer $(shop token --customer alice)" localhost:8000/orders
    """
    if (customer is None) == (not admin):
        raise typer.BadParameter("give exactly one of --customer C or --admin")
    typer.echo(token_for(customer or "operator", admin=admin, ttl_s=ttl))
