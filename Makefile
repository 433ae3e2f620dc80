# The common verbs. Everything installs itself on first use: `make test` on a fresh clone works.

# The interpreter the venv is made from (PY=... overrides): see deploy/python3.
PY ?= $(shell sh deploy/python3)
VENV := .venv
BIN := $(VENV)/bin
KAFKA_LIBS := deploy/kafka-libs
PACKAGES := events deploy bench order_service inventory_service payment_service catalog_service \
	analytics_service
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install kafka-jars test lint schemas bench chaos chaos-short run infra-up infra-down \
	clean distclean audit

help:
	@echo "make run         start the whole platform locally, seeded (data in .var/); Ctrl-C stops it"
	@echo "make test        run the whole test suite (starts its own stack on test ports)"
	@echo "make lint        ruff check, ruff format --check, mypy --strict, schema compatibility"
	@echo "make audit       pip-audit: known vulnerabilities in the pinned requirements.lock"
	@echo "make schemas     regenerate events/schemas and events/asyncapi.yaml"
	@echo "make bench       the platform under load vs a monolith and raw Kafka (bench/results/)"
	@echo "make bench-scaling  throughput at 1, 2, 3 replicas of the busiest service"
	@echo "make test-cluster   a broker of a 3-node Kafka cluster killed under load (CI runs it)"
	@echo "make chaos-short faults injected under load, then the invariants (~3 min; in make test)"
	@echo "make chaos       the long fault run: 10+ minutes, 50+ faults (docs/reliability.md)"
	@echo "make infra-up / infra-down   start / stop the local stack"
	@echo "make install     create .venv and fetch the Kafka jars"
	@echo "make clean       remove caches; make distclean also .venv, jars and .var data"

# The venv is rebuilt when the lock file or the package metadata change.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(KAFKA_LIBS)/.fetched: deploy/pom.xml
	@command -v mvn >/dev/null || { echo "mvn is not on PATH: install Maven (apt-get install maven)"; exit 1; }
	rm -rf $(KAFKA_LIBS)
	mvn -q -B -f deploy/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	touch $@

kafka-jars: $(KAFKA_LIBS)/.fetched

install: $(VENV)/.installed kafka-jars

test: install
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict $(PACKAGES) tests
	$(BIN)/python -m events.schema_tools check

# A three-broker KRaft cluster (its own ports and PostgreSQL): a broker SIGKILLed under load loses
# no acknowledged order, then catches up. Minutes long, so not in `make test`; CI runs it too.
.PHONY: test-cluster bench-scaling
test-cluster: install
	$(BIN)/pytest -q tests/cluster $(PYTEST_ARGS)

# Throughput at 1, 2 and 3 replicas of the busiest service, e.g.
# SCALING_ARGS="--replicas 1,2,3 --rate 60 --step-s 30" (into bench/results/latest.json, `scaling`).
SCALING_ARGS ?=
bench-scaling: install
	$(BIN)/python -m bench.scaling $(SCALING_ARGS)

# BENCH_ARGS, e.g. BENCH_ARGS="--rates 100,200,400 --step-s 60" or "--find-max".
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# Known vulnerabilities (PyPI's advisory data) in every pin of requirements.lock. --strict: a
# package that cannot be looked up fails the audit instead of passing unchecked. AUDIT_ARGS adds
# options, e.g. --vulnerability-service osv, or --ignore-vuln ID for a documented exception.
AUDIT_ARGS ?=
audit: $(VENV)/.installed
	$(BIN)/pip-audit --requirement requirements.lock --no-deps --disable-pip --strict \
		--progress-spinner off --desc $(AUDIT_ARGS)

# Fault injection (tests/faults/): its own Kafka, PostgreSQL and services; SEED=n repeats a run.
SEED ?=
CHAOS_ARGS ?=
chaos-short: install
	$(BIN)/python -m tests.faults.chaos --profile short $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

chaos: install
	$(BIN)/python -m tests.faults.chaos --profile long $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

schemas: $(VENV)/.installed
	$(BIN)/python -m events.schema_tools export
	$(BIN)/python -m events.schema_tools asyncapi

# Kafka, PostgreSQL, the five services and the demo catalog; Ctrl-C stops them all.
run: install
	$(BIN)/shop run

infra-up: install
	$(BIN)/shop infra up

infra-down: $(VENV)/.installed
	$(BIN)/shop infra down

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also stops the local stack and deletes its data.
distclean: clean
	-[ -x $(BIN)/shop ] && $(BIN)/shop infra down
	rm -rf $(VENV) $(KAFKA_LIBS) .var
