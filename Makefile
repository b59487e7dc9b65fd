# eSIM plan renewal platform. `make help` lists the targets.
# uv comes from scripts/ensure-uv.sh (uv on PATH, or a pinned copy installed from PyPI into .tools/).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTEST_ARGS ?=
TEST_PATHS := shared services sandboxes tools frontends tests
# What `make test` and `make test-unit` run: a service's tests or one file, e.g.
# make test TESTS=services/billing, make test TESTS=services/billing/tests/unit/test_billing_payments.py
TESTS ?= $(TEST_PATHS)
# pytest-xdist workers (0: none, in one process). With --dist loadgroup (tests/conftest.py) the
# integration tests of each database are a few groups, handed out first, each run in order by one
# worker on a platform of its own; the workers that are free take the unit tests. An integration
# worker mostly waits (on renewals, restarts, leads), so there are more workers than the two cores:
# one a platform group. On a machine that ran the SQLite suite in 4 minutes, 4 workers left its
# cores a quarter idle (245 s); 5 took 220 s; 6 or 7, with the groups cut finer to match, 230 s
# for a fifth more CPU (more platforms side by side, each test's polling longer).
WORKERS ?= 5
comma := ,
# Where the integration tests run: SQLite; with CI=true on PostgreSQL as well, each its own platform.
TEST_DATABASES ?= $(if $(filter true,$(CI)),sqlite$(comma)postgres,sqlite)
MYPY_PATHS := shared/schemas/src shared/core/src services/*/src sandboxes/src tools/*/src frontends/*/src \
  tests/support tests/bench tests/bench_unit tests/chaos tests/browser
# make bench: DB=postgres, PROFILE=1 (py-spy), TRACE=1 (each renewal's path, step by step),
# BENCH_QUICK=1 (about 2 minutes),
# BENCH_STACK=running (the stack `make run` started), BENCH_ARGS for the rest (--help lists it).
# make chaos: CHAOS_SECONDS of load with crashes, on DB (sqlite or postgres).
DB ?= sqlite
PROFILE ?=
TRACE ?=
BENCH_QUICK ?=
BENCH_STACK ?=
BENCH_ARGS ?=
# make bench SOAK_MINUTES=30: the long run alone (20 renewals/s; memory, tables, latency over time).
SOAK_MINUTES ?=
# make bench / make chaos DB=postgres REPLICAS=2: two processes of every service (PostgreSQL only).
REPLICAS ?= 1
CHAOS_SECONDS ?= 300

# Resolve uv once per make invocation, and only for targets that need it.
ifneq ($(filter-out help clean,$(or $(MAKECMDGOALS),$(.DEFAULT_GOAL))),)
UV := $(shell scripts/ensure-uv.sh)
ifeq ($(UV),)
$(error uv is not available and scripts/ensure-uv.sh could not install it; see the message above)
endif
endif
RUN := $(UV) run --frozen
# pytest rewrites the asserts of every test module as it imports it, and caches the result as
# bytecode unless PYTHONDONTWRITEBYTECODE is set (as on CI machines): then each xdist worker
# rewrote all of them again, 13 s of CPU to collect the suite instead of 6.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(RUN) pytest

.PHONY: help run test test-unit bench chaos fuzz lint format schemas migration clean sync kafka-jars redis chromium deploy-tools

help: ## list the targets
	@echo "Targets:"
	@grep -E '^[a-z][a-z-]*:.*## ' $(firstword $(MAKEFILE_LIST)) \
	  | awk 'BEGIN {FS = ":.*## "} {printf "  make %-11s %s\n", $$1, $$2}'

run: ## run the whole platform locally (Kafka, Redis, sandboxes, services); Ctrl-C stops it
	@UV="$(UV)" scripts/run-local.sh

sync: ## install the workspace into .venv exactly as uv.lock says, its bytecode compiled (scripts/sync.sh)
	@echo "==> uv sync --frozen --compile-bytecode"
	@UV="$(UV)" scripts/sync.sh

kafka-jars: ## Java 17+ and Maven if missing, then the Kafka broker jars into deploy/kafka/lib (once)
	@echo "==> Kafka jars (deploy/kafka/lib)"
	scripts/ensure-java-maven.sh
	deploy/kafka/fetch.sh

redis: ## install redis-server if it is missing
	@echo "==> redis-server"
	deploy/redis/ensure.sh

deploy-tools: ## promtool, kustomize, kubeconform and KEDA's CRDs, pinned, into .tools/ (built once from the Go module proxy)
	@echo "==> promtool, kustomize, kubeconform and KEDA's CRDs, pinned, into .tools/"
	scripts/ensure-promtool.sh >/dev/null
	scripts/ensure-k8s-tools.sh >/dev/null

chromium: ## install Debian's chromium and chromium-driver (the browser tests) if missing
	@echo "==> chromium and chromedriver"
	deploy/chromium/ensure.sh

# With CI=true the integration tests run on PostgreSQL too, beside the SQLite ones (another worker,
# another platform; deploy/postgres/ensure.sh installs it if missing, tests/support/infra.py runs it).
# `--durations=25` ends the output with the slowest tests: where the minutes of a run went.
test: sync kafka-jars redis chromium deploy-tools ## unit, contract, integration and browser tests (real Kafka, Redis, sandboxes, Chromium; CI=true: integration on PostgreSQL too)
	@if [[ ",$(TEST_DATABASES)," == *,postgres,* ]]; then \
	  echo "==> PostgreSQL (deploy/postgres/ensure.sh)"; \
	  deploy/postgres/ensure.sh || { \
	    status=$$?; echo "==> make test: FAILED (PostgreSQL is not available)" >&2; exit $$status; }; \
	fi
	@echo "==> pytest $(TESTS) (integration on $(TEST_DATABASES), $(WORKERS) workers)"
	@ESIM_TEST_DATABASE="$(TEST_DATABASES)" $(PYTEST) -p no:cacheprovider -q \
	  -n $(WORKERS) --dist loadgroup --durations=25 $(PYTEST_ARGS) $(TESTS) || { \
	  status=$$?; echo "==> make test: FAILED (pytest exit status $$status)" >&2; exit $$status; }
	@echo "==> make test: PASSED"

test-unit: sync ## the tests that need no broker (pytest -m "not integration")
	@echo "==> pytest -m 'not integration' $(TESTS)"
	@if $(PYTEST) -p no:cacheprovider -q -m "not integration" -n $(WORKERS) --dist loadgroup \
	  $(PYTEST_ARGS) $(TESTS); then \
	  echo "==> make test-unit: PASSED"; \
	else \
	  status=$$?; echo "==> make test-unit: FAILED (pytest exit status $$status)" >&2; exit $$status; \
	fi

bench: sync kafka-jars redis ## throughput and latency vs a bare Kafka relay baseline (DB=postgres PROFILE=1 TRACE=1 BENCH_QUICK=1 BENCH_STACK=running SOAK_MINUTES=30 REPLICAS=2)
	@DB="$(DB)" PROFILE="$(PROFILE)" TRACE="$(TRACE)" BENCH_QUICK="$(BENCH_QUICK)" BENCH_STACK="$(BENCH_STACK)" \
	  SOAK_MINUTES="$(SOAK_MINUTES)" REPLICAS="$(REPLICAS)" \
	  $(RUN) python -m tests.bench $(BENCH_ARGS)

# The run starts its own platform (so it can kill it); CHAOS_RATE, CHAOS_SEED, ... in tests/chaos/config.py.
chaos: sync kafka-jars redis ## load while services, broker and Redis crash, then check every renewal (CHAOS_SECONDS=300 DB=sqlite|postgres REPLICAS=2)
	@echo "==> python -m tests.chaos ($(CHAOS_SECONDS) s, $(DB))"
	@CHAOS_SECONDS="$(CHAOS_SECONDS)" CHAOS_DB="$(DB)" CHAOS_REPLICAS="$(REPLICAS)" $(RUN) python -m tests.chaos || { \
	  status=$$?; echo "==> make chaos: FAILED (exit status $$status; report in var/chaos/latest.json)" >&2; \
	  exit $$status; }
	@echo "==> make chaos: PASSED"

# Against the stack `make run` started (addresses as there; FUZZ_EXAMPLES, FUZZ_SEED).
fuzz: sync ## schemathesis against the four running services, signed in (make run first)
	@$(RUN) python scripts/fuzz.py

lint: sync deploy-tools ## ruff, mypy --strict, alert rules (promtool check + test), dashboards, deploy files (kustomize + kubeconform)
	@echo "==> ruff check"
	$(RUN) ruff check .
	@echo "==> ruff format --check"
	$(RUN) ruff format --check .
	@echo "==> mypy"
	$(RUN) mypy $(MYPY_PATHS)
	@echo "==> alert rules (promtool check rules, promtool test rules) and dashboards (scripts/check_observability.py)"
	$(RUN) python scripts/check_observability.py
	@echo "==> Dockerfile, compose.yaml; every k8s overlay rendered, kubeconform -strict, cross-checks (scripts/check_deploy.py)"
	$(RUN) python scripts/check_deploy.py

format: sync ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

schemas: sync ## regenerate the committed JSON Schemas / AsyncAPI from shared/schemas
	$(RUN) python -m esim_schemas.generate
	$(RUN) python scripts/generate_asyncapi.py

migration: sync ## autogenerate a schema revision: make migration SERVICE=billing MESSAGE="add refund note"
	@if [ -z "$${SERVICE:-}" ] || [ -z "$${MESSAGE:-}" ]; then \
	  echo 'usage: make migration SERVICE=<accounts|billing|provisioning|notifier> MESSAGE="..."' >&2; \
	  exit 2; fi
	$(RUN) python scripts/new_migration.py "$(SERVICE)" "$(MESSAGE)"
	$(RUN) ruff check --fix -q services/$(SERVICE)/migrations
	$(RUN) ruff format -q services/$(SERVICE)/migrations

clean: ## remove var/ (logs, databases, mail, Kafka and Redis data)
	rm -rf var/
