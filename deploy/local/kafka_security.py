"""A secured local broker: SASL/SCRAM-SHA-512 users, the StandardAuthorizer and ACLs from code.

- One SCRAM user per service (named after its database: `order`, `payment`, ...) and `shop`, the
  operator and the broker's own principal (inter-broker and controller), which is the one super
  user. The users are written into the storage when it is formatted (`--add-scram`), so a broker
  that was formatted without them cannot be secured later: start it from a fresh data folder.
- The client listener speaks SASL_PLAINTEXT, or SASL_SSL when certificate files are given; the
  controller listener uses SASL/PLAIN (KRaft controllers cannot check SCRAM: the credentials live
  in the metadata log the controller serves) with `shop` as its only user.
- `allow.everyone.if.no.acl.found=false`: what no ACL allows is denied.
- The ACLs are derived from the code, never listed by hand: a service may WRITE the topics of the
  messages its package constructs plus the dead-letter topics of what it consumes, READ the topics
  of its ConsumerSpecs (faust's source topics for analytics) and use its own consumer groups;
  analytics also owns the topics under its faust application id (changelogs, the assignor's
  leader topic). Every service may DESCRIBE the declared topics: at start it checks that they
  exist (and would create the missing ones, which only the operator may do).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest
from pydantic import SecretStr

from deploy.local.common import REPO_ROOT, InfraError
from deploy.local.services import SERVICES, ServiceDef
from events.contracts import ALL_MESSAGES
from events.kit.kafkaconf import client_options
from events.topics import all_topics, dlq_name

SCRAM = "SCRAM-SHA-512"
ADMIN_USER = "shop"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
CREDENTIALS_FILE = "sasl-credentials.json"

ResourceType = Literal["TOPIC", "GROUP", "CLUSTER"]
Pattern = Literal["LITERAL", "PREFIXED"]
Operation = Literal[
    "READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "IDEMPOTENT_WRITE", "ALTER"
]
# The wire codes of Kafka's AclOperation, ResourceType, PatternType and AclPermissionType.
OPERATION_CODES = {
    "READ": 3,
    "WRITE": 4,
    "CREATE": 5,
    "ALTER": 7,
    "DESCRIBE": 8,
    "DESCRIBE_CONFIGS": 10,
    "IDEMPOTENT_WRITE": 12,
}
RESOURCE_CODES = {"TOPIC": 2, "GROUP": 3, "CLUSTER": 4}
PATTERN_CODES = {"LITERAL": 3, "PREFIXED": 4}
ALLOW = 3


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule: principal may do operation on the resource (any host)."""

    principal: str
    resource_type: ResourceType
    name: str
    operation: Operation
    pattern: Pattern = "LITERAL"

    def row(self) -> str:
        pattern = "" if self.pattern == "LITERAL" else f" ({self.pattern.lower()})"
        resource = f"{self.resource_type} `{self.name}`{pattern}"
        return f"| {self.principal} | {self.operation} | {resource} |"


@dataclass(frozen=True)
class TlsFiles:
    """The broker's certificate chain and unencrypted PKCS#8 key (PEM), and the CA clients trust."""

    certfile: Path
    keyfile: Path
    cafile: Path


@dataclass(frozen=True)
class ClientSecurity:
    """The fields events.kit.kafkaconf.client_options reads, for one user."""

    kafka_security_protocol: str
    kafka_username: str
    kafka_password: SecretStr
    kafka_ssl_cafile: Path | None
    kafka_sasl_mechanism: str = SCRAM


@dataclass(frozen=True)
class BrokerSecurity:
    """Who may connect and how: a password per SCRAM user (the admin user among them)."""

    passwords: Mapping[str, str]
    admin_user: str = ADMIN_USER
    tls: TlsFiles | None = None

    @property
    def protocol(self) -> str:
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"

    @property
    def admin_password(self) -> str:
        return self.passwords[self.admin_user]

    # -- the broker side -------------------------------------------------------------------

    def broker_config(self, config: Mapping[str, str], data_dir: Path) -> dict[str, str]:
        """The PLAINTEXT node config with its client listener switched to SASL and ACLs on."""
        proto, user, pw = self.protocol, self.admin_user, self.admin_password
        plain = re.compile(r"(?<![A-Z_])PLAINTEXT://")
        cfg = dict(config)
        cfg["listeners"] = plain.sub(f"{proto}://", config["listeners"])
        cfg["advertised.listeners"] = plain.sub(f"{proto}://", config["advertised.listeners"])
        scram_jaas = f'{_SCRAM_MODULE} required username="{user}" password="{pw}";'
        plain_jaas = (
            f'{_PLAIN_MODULE} required username="{user}" password="{pw}" user_{user}="{pw}";'
        )
        listener = proto.lower()
        cfg |= {
            "inter.broker.listener.name": proto,
            "listener.security.protocol.map": f"{proto}:{proto},CONTROLLER:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": SCRAM,
            "sasl.mechanism.inter.broker.protocol": SCRAM,
            f"listener.name.{listener}.sasl.enabled.mechanisms": SCRAM,
            f"listener.name.{listener}.scram-sha-512.sasl.jaas.config": scram_jaas,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": plain_jaas,
            "authorizer.class.name": AUTHORIZER,
            "super.users": f"User:{user}",
            "allow.everyone.if.no.acl.found": "false",
        }
        if self.tls is not None:
            keystore = data_dir / "broker-keystore.pem"
            keystore.write_text(self.tls.keyfile.read_text() + self.tls.certfile.read_text())
            keystore.chmod(0o600)
            cfg |= {
                f"listener.name.{listener}.ssl.keystore.type": "PEM",
                f"listener.name.{listener}.ssl.keystore.location": str(keystore),
                f"listener.name.{listener}.ssl.truststore.type": "PEM",
                f"listener.name.{listener}.ssl.truststore.location": str(self.tls.cafile),
            }
        return cfg

    def format_args(self) -> list[str]:
        """StorageTool arguments that create every SCRAM user in the new storage."""
        args: list[str] = []
        for name, password in sorted(self.passwords.items()):
            args += ["--add-scram", f"{SCRAM}=[name={name},password={password}]"]
        return args

    # -- the client side -------------------------------------------------------------------

    def client(self, user: str | None = None) -> ClientSecurity:
        name = user or self.admin_user
        return ClientSecurity(
            self.protocol,
            name,
            SecretStr(self.passwords[name]),
            self.tls.cafile if self.tls else None,
        )

    def client_options(self, user: str | None = None) -> dict[str, Any]:
        """aiokafka keyword arguments for `user` (the admin user by default)."""
        return client_options(self.client(user))

    def service_env(self, svc: ServiceDef) -> dict[str, str]:
        """The environment that gives one service process its own principal."""
        p = svc.prefix
        env = {
            f"{p}KAFKA_SECURITY_PROTOCOL": self.protocol,
            f"{p}KAFKA_SASL_MECHANISM": SCRAM,
            f"{p}KAFKA_USERNAME": svc.database,
            f"{p}KAFKA_PASSWORD": self.passwords[svc.database],
        }
        if self.tls is not None:
            env[f"{p}KAFKA_SSL_CAFILE"] = str(self.tls.cafile)
        return env

    def operator_env(self) -> dict[str, str]:
        """The environment `shop` reads for its own (admin) clients."""
        env = {
            "SHOP_KAFKA_SECURITY_PROTOCOL": self.protocol,
            "SHOP_KAFKA_USERNAME": self.admin_user,
            "SHOP_KAFKA_PASSWORD": self.admin_password,
        }
        if self.tls is not None:
            env["SHOP_KAFKA_SSL_CAFILE"] = str(self.tls.cafile)
        return env


_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


def generate(
    users: Iterable[str] | None = None, *, admin_user: str = ADMIN_USER, tls: TlsFiles | None = None
) -> BrokerSecurity:
    """Random passwords for the admin user and one user per service."""
    names = [admin_user, *(users if users is not None else (s.database for s in SERVICES))]
    return BrokerSecurity(
        {n: secrets.token_urlsafe(24) for n in names}, admin_user=admin_user, tls=tls
    )


def load_or_create(data_dir: Path, tls: TlsFiles | None = None) -> BrokerSecurity:
    """The credentials kept beside a secured local broker (mode 0600), made on first use."""
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        return BrokerSecurity(stored["passwords"], admin_user=stored["admin_user"], tls=tls)
    security = generate(tls=tls)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"admin_user": security.admin_user, "passwords": dict(security.passwords)}, out)
    return security


# -- ACLs derived from the code ---------------------------------------------------------------


@dataclass(frozen=True)
class ServiceAccess:
    """What one service does on the broker, as read from its code."""

    principal: str
    writes: frozenset[str]
    reads: frozenset[str]
    groups: frozenset[str]
    owned_prefixes: frozenset[str] = field(default_factory=frozenset)


def produced_topics(package: str, root: Path = REPO_ROOT) -> set[str]:
    """Topics of the message types the package's code constructs (calls `OrderPlaced(...)`)."""
    topic_of = {m.__name__: m.topic for m in ALL_MESSAGES}
    found: set[str] = set()
    for path in sorted((root / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", None)
                if name in topic_of:
                    found.add(topic_of[name])
    return found


def service_access(svc: ServiceDef, group_prefix: str = "") -> ServiceAccess:
    """Build the service (no I/O) and read its consumers; scan its package for what it sends."""
    settings_cls = importlib.import_module(f"{svc.package}.settings").Settings
    app = importlib.import_module(f"{svc.package}.app")
    settings = settings_cls(consumer_group_prefix=group_prefix)
    runtime = app.build(settings)
    consumed = {t for spec in runtime.consumer_specs for t in spec.topics}
    reads = set(consumed)
    groups = {settings.consumer_group_prefix + spec.name for spec in runtime.consumer_specs}
    owned: set[str] = set()
    if svc.package == "analytics_service":
        from analytics_service.stream import SOURCE_TOPICS

        reads |= set(SOURCE_TOPICS)
        groups.add(settings.app_id)
        owned.add(f"{settings.app_id}-")
    # The kit's consumers dead-letter what they cannot apply; faust's agent logs it instead.
    writes = produced_topics(svc.package) | {dlq_name(t) for t in consumed}
    return ServiceAccess(
        svc.database, frozenset(writes), frozenset(reads), frozenset(groups), frozenset(owned)
    )


def acls_for(access: ServiceAccess) -> list[Acl]:
    user = f"User:{access.principal}"
    acls: set[Acl] = {Acl(user, "TOPIC", t.name, "DESCRIBE") for t in all_topics()}
    acls |= {Acl(user, "TOPIC", t, "WRITE") for t in access.writes}
    acls |= {Acl(user, "TOPIC", t, "READ") for t in access.reads}
    acls |= {Acl(user, "GROUP", g, "READ") for g in access.groups}
    # Every runtime starts an idempotent producer (analytics' only writes go to its own prefix).
    acls.add(Acl(user, "CLUSTER", "kafka-cluster", "IDEMPOTENT_WRITE"))
    for prefix in access.owned_prefixes:
        for op in ("READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS"):
            acls.add(Acl(user, "TOPIC", prefix, op, "PREFIXED"))
    return sorted(acls)


def platform_acls(group_prefix: str = "") -> list[Acl]:
    """Every ACL the five services need, for consumer groups named with group_prefix."""
    return [acl for svc in SERVICES for acl in acls_for(service_access(svc, group_prefix))]


def acl_table(acls: Iterable[Acl]) -> str:
    """A markdown table of the ACLs (docs/security.md shows the one for the default prefix)."""
    lines = ["| principal | operation | resource |", "|---|---|---|"]
    return "\n".join(lines + [a.row() for a in acls])


@contextlib.asynccontextmanager
async def _admin(bootstrap: str, options: Mapping[str, Any]) -> AsyncIterator[Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000, **options)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def create_acls(bootstrap: str, security: BrokerSecurity, acls: Iterable[Acl]) -> int:
    """Create the ACLs as the admin user (an existing one is left as it is); returns the count.

    aiokafka's admin client has no ACL calls, so this sends Kafka's CreateAcls request itself.
    """
    count = 0
    async with _admin(bootstrap, security.client_options()) as admin:
        for acl in acls:
            request = CreateAclsRequest(
                RESOURCE_CODES[acl.resource_type],
                acl.name,
                PATTERN_CODES[acl.pattern],
                acl.principal,
                "*",
                OPERATION_CODES[acl.operation],
                ALLOW,
            )
            response = await admin._send_request(request)
            for code, message in response.creation_responses:
                if code != 0:
                    raise InfraError(f"the broker refused the ACL {acl}: {code} {message}")
            count += 1
    return count


def documented_acls(group_prefix: str = "") -> list[Acl]:
    """The ACLs docs/security.md lists: all but the DESCRIBE every service has on every topic."""
    return [
        a
        for a in platform_acls(group_prefix)
        if not (a.operation == "DESCRIBE" and a.pattern == "LITERAL")
    ]


if __name__ == "__main__":
    print(acl_table(documented_acls()))
