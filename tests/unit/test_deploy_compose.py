"""deploy/docker-compose.yml and deploy/Dockerfile, checked offline (no Docker engine here).

The compose file is validated against the Compose Specification's JSON Schema (a copy in
tests/unit/schemas), then for what the schema cannot know: ordering, healthchecks, the broker's
single-node settings and that every environment variable is a real setting of its service.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic_settings import BaseSettings

from deploy.local.services import SERVICES, ServiceDef

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
BY_PACKAGE = {s.package: s for s in SERVICES}
IMAGE = "shop-platform:0.1.0"

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> Doc:
    doc: Doc = yaml.safe_load(COMPOSE.read_text())
    return doc


def app_services(compose: Doc) -> dict[str, tuple[ServiceDef, Doc]]:
    out = {}
    for name, svc in compose["services"].items():
        command = svc.get("command", [])
        if command[:2] == ["python", "-m"]:
            out[name] = (BY_PACKAGE[command[2]], svc)
    return out


def test_compose_file_validates_against_the_compose_specification(compose: Doc) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_compose_schema_rejects_a_misspelt_key(compose: Doc) -> None:
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["order"]["depends_onn"] = broken["services"]["order"].pop("depends_on")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_compose_uses_the_official_images(compose: Doc) -> None:
    assert compose["services"]["kafka"]["image"] == "apache/kafka:4.1.1"
    assert compose["services"]["postgres"]["image"] == "postgres:18"


def test_kafka_is_one_kraft_node_without_auto_creation(compose: Doc) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "1"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")


def test_every_depends_on_names_a_service_in_a_state_it_can_reach(compose: Doc) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, how in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy"
            elif how["condition"] == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} is not a one-shot job"
            else:
                pytest.fail(f"{name}: unexpected condition {how['condition']}")


def test_topic_job_creates_the_declared_topics_on_the_compose_broker(compose: Doc) -> None:
    job = compose["services"]["topics"]
    assert job["image"] == IMAGE
    assert job["command"] == ["shop", "topics", "create", "--bootstrap", "kafka:9092"]
    assert job["depends_on"] == {"kafka": {"condition": "service_healthy"}}


def test_the_five_services_run_from_the_one_image_after_the_infrastructure(compose: Doc) -> None:
    apps = app_services(compose)
    assert {svc.package for svc, _ in apps.values()} == set(BY_PACKAGE)
    for name, (_, svc) in apps.items():
        assert svc["image"] == IMAGE, name
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert svc["depends_on"] == {
            "kafka": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
            "topics": {"condition": "service_completed_successfully"},
        }


def test_each_service_listens_on_all_interfaces_at_its_published_port(compose: Doc) -> None:
    for name, (svc_def, svc) in app_services(compose).items():
        env = svc["environment"]
        p = svc_def.prefix
        assert env[f"{p}HTTP_HOST"] == "0.0.0.0", name
        port = int(env[f"{p}HTTP_PORT"])
        assert svc["ports"] == [f"127.0.0.1:{port}:{port}"]
        (probe,) = [arg for arg in svc["healthcheck"]["test"] if "/health/ready" in arg]
        assert f"http://127.0.0.1:{port}/health/ready" in probe
        assert env[f"{p}KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env[f"{p}DATABASE_URL"].endswith(f"@postgres:5432/{svc_def.database}")


def test_every_env_var_is_a_setting_of_the_service_it_is_given_to(compose: Doc) -> None:
    for name, (svc_def, svc) in app_services(compose).items():
        settings: type[BaseSettings] = importlib.import_module(
            f"{svc_def.package}.settings"
        ).Settings
        for var in svc["environment"]:
            assert var.startswith(svc_def.prefix), f"{var} given to {name}"
            assert var.removeprefix(svc_def.prefix).lower() in settings.model_fields, var
        # pydantic would refuse a value of the wrong type at start; build the settings here.
        env = {k.removeprefix(svc_def.prefix).lower(): v for k, v in svc["environment"].items()}
        settings.model_validate(env)


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split()[0].upper(), line.partition(" ")[2])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_builds_a_slim_image_that_runs_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    bases = [arg.split()[0] for op, arg in instructions if op == "FROM"]
    assert bases
    assert all(b.startswith("python:3.11-slim") for b in bases)
    users = [arg for op, arg in instructions if op == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("0", "root")
    final_stage = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    assert ("USER", users[-1]) in final_stage


def test_dockerfile_installs_the_lock_then_the_package_without_dependencies() -> None:
    runs = [arg for op, arg in dockerfile_instructions() if op == "RUN"]
    lock = next(i for i, r in enumerate(runs) if "pip install -r requirements.lock" in r)
    package = next(i for i, r in enumerate(runs) if "pip install --no-deps ." in r)
    assert lock < package
    copied = {arg.split()[0] for op, arg in dockerfile_instructions() if op == "COPY"}
    assert {"events", "deploy", *BY_PACKAGE} <= copied


def test_dockerfile_context_leaves_out_local_state() -> None:
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".var", ".git", "deploy/kafka-libs"} <= set(ignored)
