"""The Kubernetes manifests under deploy/k8s, checked offline.

Built-in kinds are validated against the Kubernetes JSON schemas that `kubernetes-validate` ships
(strict: unknown fields are errors). No package ships the Strimzi or CloudNativePG CRD schemas, so
their resources are checked for the structure and values this platform relies on, not against the
operators' full schemas.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from deploy.k8s import generate
from deploy.local.services import SERVICES, ServiceDef
from events.topics import SAGA_PARTITIONS, all_topics

K8S = Path(generate.__file__).resolve().parent
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
CUSTOM_GROUPS = ("kafka.strimzi.io/", "postgresql.cnpg.io/")
BY_PACKAGE = {s.package: s for s in SERVICES}

Doc = dict[str, Any]


def load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def yaml_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def base_resources() -> list[Doc]:
    kustomization = load(BASE / "kustomization.yaml")[0]
    return [doc for rel in kustomization["resources"] for doc in load(BASE / rel)]


def overlay_merge_patches() -> list[Doc]:
    """The overlay's strategic-merge patches (JSON patches, with a target, are lists of ops)."""
    kustomization = load(OVERLAY / "kustomization.yaml")[0]
    patches = [p for p in kustomization["patches"] if "target" not in p]
    return [doc for p in patches for doc in load(OVERLAY / p["path"])]


def of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def builtin(docs: list[Doc]) -> Iterator[Doc]:
    return (d for d in docs if not d["apiVersion"].startswith(CUSTOM_GROUPS))


def settings_fields(svc: ServiceDef) -> set[str]:
    cls: type[BaseSettings] = importlib.import_module(f"{svc.package}.settings").Settings
    return set(cls.model_fields)


def service_of(deployment: Doc) -> ServiceDef:
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-m"], command
    return BY_PACKAGE[command[2]]


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_parses(path: Path) -> None:
    assert load(path), f"{path} holds no document"


def test_committed_manifests_equal_what_the_generator_writes() -> None:
    for rel, text in generate.files().items():
        path = BASE / rel
        assert path.exists(), f"{rel} is missing: run python -m deploy.k8s.generate"
        assert path.read_text() == text, f"{rel} is stale: run python -m deploy.k8s.generate"


def test_the_base_kustomization_lists_every_generated_file() -> None:
    listed = {Path(p) for p in load(BASE / "kustomization.yaml")[0]["resources"]}
    assert listed == set(generate.files())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_resources_validate_against_the_kubernetes_schemas(version: str) -> None:
    docs = [*builtin(base_resources()), *load(OVERLAY / "namespace.yaml")]
    assert len(docs) > 20
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")


def test_overlay_patches_target_resources_of_the_base() -> None:
    base = base_resources()
    kustomization = load(OVERLAY / "kustomization.yaml")[0]
    assert "../../base" in kustomization["resources"]
    for patch in kustomization["patches"]:
        if "target" in patch:
            target = patch["target"]
            assert target["name"] in of_kind(base, target["kind"]), patch
            ops: list[Doc] = yaml.safe_load((OVERLAY / patch["path"]).read_text())
            assert all(op["op"] in ("add", "replace", "remove") for op in ops), ops
        else:
            (doc,) = load(OVERLAY / patch["path"])
            assert doc["metadata"]["name"] in of_kind(base, doc["kind"]), patch["path"]


def test_each_service_has_a_deployment_service_and_autoscaler() -> None:
    docs = base_resources()
    deployments, services = of_kind(docs, "Deployment"), of_kind(docs, "Service")
    autoscalers = of_kind(docs, "HorizontalPodAutoscaler")
    assert {service_of(d).package for d in deployments.values()} == set(BY_PACKAGE)
    for name, deployment in deployments.items():
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert services[name]["spec"]["selector"].items() <= pod_labels.items()
        target = autoscalers[name]["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        # A consumer group uses at most one member per partition: more replicas would idle.
        assert autoscalers[name]["spec"]["maxReplicas"] <= SAGA_PARTITIONS


def test_containers_run_as_non_root_with_probes_and_resource_requests() -> None:
    for deployment in of_kind(base_resources(), "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        (container,) = pod["containers"]
        port = container["ports"][0]["containerPort"]
        assert port == service_of(deployment).port
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        for c in [*pod["initContainers"], container]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])


def test_config_and_secrets_are_kept_apart() -> None:
    docs = base_resources()
    for name, config in of_kind(docs, "ConfigMap").items():
        assert not any("DATABASE_URL" in key for key in config["data"]), name
    for deployment in of_kind(docs, "Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert "env" not in container, "values go in the ConfigMap or the Secret"
        secrets = [r["secretRef"]["name"] for r in container["envFrom"] if "secretRef" in r]
        for secret in secrets:
            keys = of_kind(docs, "Secret")[secret]["stringData"]
            assert all(key.endswith(("DATABASE_URL", "AUTH_SIGNING_KEY")) for key in keys), secret
    for name, config in of_kind(docs, "ConfigMap").items():
        assert not any("SIGNING_KEY" in key for key in config["data"]), name


def test_every_env_var_is_a_setting_of_the_service_it_is_given_to() -> None:
    docs = base_resources()
    sources: dict[tuple[str, str], set[str]] = {}
    for kind, field in (("ConfigMap", "data"), ("Secret", "stringData")):
        for name, doc in of_kind(docs, kind).items():
            sources[kind, name] = set(doc.get(field, {})) | set(doc.get("data", {}))
    for patch in overlay_merge_patches():
        if patch["kind"] == "ConfigMap":
            sources["ConfigMap", patch["metadata"]["name"]] |= set(patch["data"])
    checked = 0
    for deployment in of_kind(docs, "Deployment").values():
        svc = service_of(deployment)
        fields = settings_fields(svc)
        pod = deployment["spec"]["template"]["spec"]
        for container in [*pod["initContainers"], *pod["containers"]]:
            names = {e["name"] for e in container.get("env", [])}
            for ref in container.get("envFrom", []):
                kind = "ConfigMap" if "configMapRef" in ref else "Secret"
                names |= sources[kind, ref.get("configMapRef", ref.get("secretRef"))["name"]]
            for name in names:
                assert name.startswith(svc.prefix), f"{name} given to {svc.package}"
                assert name.removeprefix(svc.prefix).lower() in fields, f"{name}: no such setting"
                checked += 1
    assert checked >= 5 * len(SERVICES)


def test_service_database_urls_name_the_cnpg_cluster_and_a_declared_database() -> None:
    docs = base_resources()
    (cluster,) = of_kind(docs, "Cluster").values()
    databases = {d["spec"]["name"]: d for d in of_kind(docs, "Database").values()}
    assert set(databases) == {s.database for s in SERVICES}
    for db in databases.values():
        assert db["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
        assert db["spec"]["owner"] == cluster["spec"]["bootstrap"]["initdb"]["owner"]
    for svc in SERVICES:
        (url,) = of_kind(docs, "Secret")[f"{svc.database}-database"]["stringData"].values()
        assert url.startswith("postgresql://")
        assert f"@{cluster['metadata']['name']}-rw:5432/{svc.database}" in url
    credentials = of_kind(docs, "Secret")[cluster["spec"]["bootstrap"]["initdb"]["secret"]["name"]]
    assert credentials["type"] == "kubernetes.io/basic-auth"
    assert {"username", "password"} <= set(credentials["stringData"])


def test_cnpg_cluster_has_the_fields_the_operator_requires() -> None:
    (cluster,) = of_kind(base_resources(), "Cluster").values()
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert isinstance(spec["instances"], int)
    assert spec["instances"] >= 2
    assert spec["imageName"].endswith(":18")
    assert isinstance(spec["storage"]["size"], str)
    assert all(isinstance(v, str) for v in spec["postgresql"]["parameters"].values())


def test_strimzi_kafka_is_kraft_with_three_replicas_in_node_pools() -> None:
    docs = base_resources()
    (kafka,) = of_kind(docs, "Kafka").values()
    pools = of_kind(docs, "KafkaNodePool").values()
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert kafka["metadata"]["annotations"]["strimzi.io/node-pools"] == "enabled"
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert "zookeeper" not in kafka["spec"]
    assert kafka["spec"]["kafka"]["version"] == "4.1.1"
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    assert config["transaction.state.log.min.isr"] == 2
    assert "topicOperator" in kafka["spec"]["entityOperator"]
    for pool in pools:
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert set(pool["spec"]["roles"]) <= {"controller", "broker"}
        assert pool["spec"]["storage"]["type"] in ("jbod", "persistent-claim", "ephemeral")
    roles = {role for pool in pools for role in pool["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    assert brokers == 3
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap:9092"
    for config_map in of_kind(docs, "ConfigMap").values():
        servers = [v for k, v in config_map["data"].items() if k.endswith("BOOTSTRAP_SERVERS")]
        assert servers == [bootstrap]


def test_kafka_topics_match_the_declared_topics_exactly() -> None:
    docs = base_resources()
    (kafka,) = of_kind(docs, "Kafka").values()
    topics = {t["spec"]["topicName"]: t for t in of_kind(docs, "KafkaTopic").values()}
    declared = {t.name: t for t in all_topics()}
    assert set(topics) == set(declared)
    for name, spec in declared.items():
        topic = topics[name]
        assert topic["metadata"]["name"] == name
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert topic["spec"]["partitions"] == spec.partitions
        assert topic["spec"]["replicas"] == 3
        config = topic["spec"]["config"]
        assert config["cleanup.policy"] == spec.cleanup_policy
        assert int(config["retention.ms"]) == spec.retention_ms
        assert int(config["min.insync.replicas"]) == 2
        assert {k: str(v) for k, v in config.items()} == spec.config() | {
            "min.insync.replicas": "2"
        }
