"""The broker's security as derived from the code: who may write and read what, the broker settings
that deny everything else, and the one function that gives clients their options."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import SecretStr

from deploy.local.kafka import KafkaBroker
from deploy.local.kafka_security import (
    ADMIN_USER,
    SCRAM,
    acl_table,
    documented_acls,
    generate,
    platform_acls,
    service_access,
)
from deploy.local.services import BY_NAME
from events.kit.kafkaconf import client_options
from events.kit.settings import ServiceSettings
from events.topics import (
    CATALOG_PRODUCTS,
    INVENTORY_COMMANDS,
    INVENTORY_EVENTS,
    ORDER_EVENTS,
    PAYMENT_COMMANDS,
    PAYMENT_EVENTS,
)

DOCS = Path(__file__).parents[2] / "docs" / "security.md"


def test_payment_writes_only_its_events_and_the_dead_letters_of_its_commands() -> None:
    access = service_access(BY_NAME["payment"])
    assert access.writes == {PAYMENT_EVENTS, f"{PAYMENT_COMMANDS}.dlq"}
    assert access.reads == {PAYMENT_COMMANDS}
    assert access.groups == {"payment"}


def test_the_order_saga_writes_its_events_and_the_commands_it_sends() -> None:
    access = service_access(BY_NAME["order"], group_prefix="e2e-")
    assert {ORDER_EVENTS, INVENTORY_COMMANDS, PAYMENT_COMMANDS} <= access.writes
    assert access.reads == {CATALOG_PRODUCTS, INVENTORY_EVENTS, PAYMENT_EVENTS}
    assert access.groups == {"e2e-order-catalog-view", "e2e-order-saga"}


def test_no_service_but_its_owner_writes_an_event_topic() -> None:
    owners = {
        ORDER_EVENTS: "order",
        INVENTORY_EVENTS: "inventory",
        PAYMENT_EVENTS: "payment",
        CATALOG_PRODUCTS: "catalog",
    }
    for acl in platform_acls():
        if acl.operation == "WRITE" and acl.name in owners:
            assert acl.principal == f"User:{owners[acl.name]}", acl


def test_analytics_writes_only_under_its_own_prefix() -> None:
    access = service_access(BY_NAME["analytics"])
    assert access.writes == set()
    assert access.owned_prefixes == {"analytics-"}
    assert access.groups == {"analytics"}


def test_the_broker_denies_what_no_acl_allows_and_has_no_plaintext_listener(
    tmp_path: Path,
) -> None:
    broker = KafkaBroker(data_dir=tmp_path, port=19390, controller_port=19391, security=generate())
    config = broker.config()
    assert config["allow.everyone.if.no.acl.found"] == "false"
    assert config["super.users"] == f"User:{ADMIN_USER}"
    assert config["listeners"].startswith("SASL_PLAINTEXT://127.0.0.1:19390")
    assert not re.search(r"(?<![A-Z_])PLAINTEXT://", config["listeners"])
    assert config["sasl.enabled.mechanisms"] == SCRAM
    assert "authorizer.class.name" not in KafkaBroker(data_dir=tmp_path).config()


def test_plaintext_settings_give_no_client_options_and_sasl_settings_give_a_scram_user() -> None:
    assert client_options(ServiceSettings()) == {}
    options = client_options(
        ServiceSettings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_username="payment",
            kafka_password=SecretStr("pw"),
        )
    )
    assert options == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": SCRAM,
        "sasl_plain_username": "payment",
        "sasl_plain_password": "pw",
    }


def test_docs_list_the_acls_the_code_derives() -> None:
    text = DOCS.read_text()
    block = text.split("<!-- acl-table:start -->\n", 1)[1].split("\n<!-- acl-table:end -->", 1)[0]
    assert block == acl_table(documented_acls()), (
        "docs/security.md is stale: python -m deploy.local.kafka_security prints the table"
    )
