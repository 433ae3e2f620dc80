"""A secured broker of the security tests' own (SASL/SCRAM, StandardAuthorizer, the platform's
ACLs), and a PostgreSQL server of their own, started once for the module that asks for them.

Ports come from SHOP_TEST_SECURE_KAFKA_PORT (default 19300; its controller on the next port) and
SHOP_TEST_SECURE_PG_PORT (default 19310), so several sessions can run side by side.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.local.kafka import KafkaBroker
from deploy.local.kafka_security import BrokerSecurity, create_acls, generate, platform_acls
from deploy.local.postgres import LocalPostgres
from deploy.local.topics import ensure_topics

SECURE_KAFKA_PORT = int(os.environ.get("SHOP_TEST_SECURE_KAFKA_PORT", "19300"))
SECURE_PG_PORT = int(os.environ.get("SHOP_TEST_SECURE_PG_PORT", "19310"))


@dataclass(frozen=True)
class SecuredKafka:
    bootstrap: str
    security: BrokerSecurity
    # Consumer groups of the platform run against this broker are named with this prefix.
    group_prefix: str
    broker: KafkaBroker


@pytest.fixture(scope="module")
def secured_kafka() -> Iterator[SecuredKafka]:
    """A fresh broker whose only super user is `shop`, with the topics and the platform's ACLs."""
    data = Path(tempfile.gettempdir()) / f"shop-test-secured-{SECURE_KAFKA_PORT}"
    KafkaBroker(data_dir=data).stop()  # one a killed session left behind
    shutil.rmtree(data, ignore_errors=True)
    security = generate()
    broker = KafkaBroker(
        data_dir=data,
        port=SECURE_KAFKA_PORT,
        controller_port=SECURE_KAFKA_PORT + 1,
        security=security,
    )
    prefix = f"sec-{uuid.uuid4().hex[:6]}-"
    try:
        broker.start(timeout=180)
        asyncio.run(ensure_topics(broker.bootstrap, client=broker.client))
        asyncio.run(create_acls(broker.bootstrap, security, platform_acls(prefix)))
        yield SecuredKafka(broker.bootstrap, security, prefix, broker)
    finally:
        broker.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def secure_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server the tests may stop (to see how the services report a lost database)."""
    data = Path(tempfile.gettempdir()) / f"shop-test-secured-pg-{SECURE_PG_PORT}"
    LocalPostgres(data_dir=data).stop()
    shutil.rmtree(data, ignore_errors=True)
    pg = LocalPostgres(data_dir=data, port=SECURE_PG_PORT)
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)
