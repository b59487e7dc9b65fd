"""scripts/check_deploy.py passes on the committed deploy files and catches what it is for.

Each `*_fail` test plants one mistake in a copy of the deploy files and asserts the message
`make lint` would print for it: kubeconform's (an unknown field, a wrong type, in every rendered
overlay) and the project's cross-checks (settings, groups, topics, partitions, probes, local
values in production, scaling, the Kafka login, the database connections). The promtool ones
are in test_observability.py. Kubernetes' and KEDA's schemas are made once per process and the
tools found once; a cross-check case renders only the production overlay and skips kubeconform
(`check_k8s(..., validate=False)`), so each case takes a fraction of a second.
"""

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import check_deploy as check

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def facts() -> dict[str, check.ServiceFacts]:
    """Built once for the module: it wires each service (several seconds)."""
    return check.service_facts()


def test_the_committed_deploy_files_pass() -> None:
    """All of `make lint`'s deploy check: it wires the five services to learn their facts,
    renders both overlays and validates them, so it takes several seconds."""
    assert check.main() == 0


def test_the_facts_come_from_the_code(facts: dict[str, check.ServiceFacts]) -> None:
    assert facts["billing"].port == 8001
    assert sorted(facts["billing"].topics) == [
        "esim.payment.requested",
        "esim.profile.activated",
        "esim.refund.requested",
    ]
    assert {"BILLING_STRIPE_BASE_URL", "OPERATOR_TOKEN", "KAFKA_BOOTSTRAP_SERVERS"} <= (
        facts["billing"].env
    )
    assert "ACCOUNTS_JWT_SECRET" not in facts["billing"].env
    assert "ESIM_ENV" in facts["billing"].env and "ESIM_ENV" in facts["web"].env
    assert facts["billing"].stop_bound_s == 18.0  # 15 s stop timeout + the watchdog's 3 s
    assert facts["billing"].pool_default == 20


def test_a_memory_quantity_is_read_in_bytes() -> None:
    assert check.memory_bytes("512Mi") == 512 * 2**20
    assert check.memory_bytes("1Gi") == 2**30
    assert check.memory_bytes("800M") == 800 * 10**6
    with pytest.raises(ValueError, match="not a memory quantity"):
        check.memory_bytes("lots")


def test_a_compose_duration_is_read_in_seconds() -> None:
    assert check.duration_s("30s") == 30.0
    assert check.duration_s("1m30s") == 90.0
    assert check.duration_s("1500ms") == 1.5


def edited(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text, old
    target = tmp_path / source.name
    target.write_text(text.replace(old, new, 1))
    return target


def copied_k8s(tmp_path: Path) -> Path:
    """A copy of deploy/k8s to plant a mistake in."""
    folder = tmp_path / "k8s"
    shutil.copytree(check.K8S, folder)
    return folder


def edited_in(folder: Path, file: str, old: str, new: str) -> Path:
    """`file` of the k8s copy (a path under it, or a file of base/) with `old` made `new`."""
    source = folder / file if (folder / file).is_file() else folder / "base" / file
    return edited(source.parent, source, old, new)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("ARG PYTHON_IMAGE=python:3.11-slim", "ARG PYTHON_IMAGE=python", "not pinned"),
        ("COPY sandboxes sandboxes", "ADD sandboxes sandboxes", "COPY instead of ADD"),
        ('CMD ["python", "-m", "sandboxes.payment"]', "CMD python -m sandboxes.payment", "exec"),
        ("COPY tools/esimctl/pyproject.toml tools/esimctl/\n", "", "tools/esimctl/pyproject"),
        ("COPY deploy/docker/run-service.sh", "COPY deploy/docker/gone.sh", "does not exist"),
        ("USER esim\nENV SERVICE", "USER root\nENV SERVICE", "non-root USER"),
        (
            "RUN --mount=type=cache,target=/root/.cache/uv \\\n    uv sync --frozen --no-dev "
            "--package esim-sandboxes",
            "RUN pip install requests && uv sync --frozen --no-dev --package esim-sandboxes",
            "pin pip install",
        ),
    ],
)
def test_dockerfile_rules_fail(tmp_path: Path, old: str, new: str, expected: str) -> None:
    path = edited(tmp_path, check.DOCKERFILE, old, new)
    problems = check.check_dockerfile(path, check.workspace_members())
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("BILLING_STRIPE_BASE_URL:", "BILLING_STRIPE_BASE_ADDRESS:", "not a setting"),
        ('"127.0.0.1:8001:8001"', '"127.0.0.1:8001:8011"', "listens on 8001"),
        ('        PORT: "8002"', '        PORT: "8012"', "PORT=8002"),
        ("    restart: unless-stopped\n    command:", "    restrt: no\n    command:", "restrt"),
        ("- mail:/app/var/mail", "- letters:/app/var/mail", "not declared"),
        ('"127.0.0.1:8001:8001"', '"8001:8001"', "publishes 8001:8001 on every address"),
        ('"127.0.0.1:8010:8010"', '"0.0.0.0:8010:8010"', "on every address"),
        ("  stop_grace_period: 30s\n", "", "stop_grace_period 10s (the default) must exceed"),
        ("  stop_grace_period: 30s\n", "  stop_grace_period: 15s\n", "stop bound, 18 s"),
        ("  stop_grace_period: 30s\n", "  stop_grace_period: soon\n", "does not match"),
        ("  ESIM_ENV: local\n", "", "no ESIM_ENV: local"),
        ("- kafka-data:/var/lib/kafka/data", "- /tmp/kafka:/var/lib/kafka/data", "KAFKA_LOG_DIRS"),
    ],
)
def test_compose_rules_fail(
    tmp_path: Path, facts: dict[str, check.ServiceFacts], old: str, new: str, expected: str
) -> None:
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy", ignore=shutil.ignore_patterns("lib"))
    path = edited(tmp_path / "deploy", check.COMPOSE, old, new)
    problems = check.check_compose(path, facts)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        ("billing.yaml", "maxReplicaCount: 12", "maxReplicaCount: 24", "exceeds the 12 partitions"),
        ("billing.yaml", "topic: esim.refund.requested", "topic: esim.refunds", "consumes"),
        # A probe on a path the service does not serve.
        ("billing.yaml", "path: /health/ready", "path: /ready", "not a health endpoint"),
        (
            "notifier.yaml",
            "          startupProbe:\n            httpGet:\n              path: /health/live",
            "          startupProbe:\n            httpGet:\n              path: /healthz",
            "Deployment notifier: startupProbe asks /healthz, not a health endpoint",
        ),
        ("billing.yaml", "containerPort: 8001", 'containerPort: "8001"', "is not of type"),
        # A settings name that no service reads: in a Deployment's env, or in esim-config.
        ("billing.yaml", "- name: BILLING_HTTP_PORT", "- name: BILLING_PORT", "not a setting"),
        (
            "config.env",
            "ACCOUNTS_SEED_PROMOTIONS=false\n",
            "ACCOUNTS_SEED_PROMOTIONS=false\nACCOUNTS_SEED_PROMOTION=false\n",
            "config.env: ACCOUNTS_SEED_PROMOTION is not a setting of any service",
        ),
        ("billing.yaml", "key: operator-token", "key: op-token", "not in secret.example"),
        ("billing.yaml", "runAsNonRoot: true", "runAsNonRoot: false", "runAsNonRoot"),
        # Partitions are declared in code (esim_core.messaging.topics), no longer a setting.
        (
            "config.env",
            "ACCOUNTS_SEED_PROMOTIONS=false",
            "ACCOUNTS_SEED_PROMOTIONS=false\nBILLING_TOPIC_PARTITIONS=24",
            "BILLING_TOPIC_PARTITIONS is not a setting",
        ),
        ("notifier.yaml", "consumerGroup: notifier", "consumerGroup: notify", "consumerGroup"),
        # A secured Kafka: KEDA's scalers log in as the services do, with what the Secret has.
        (
            "notifier.yaml",
            "      authenticationRef:\n        name: esim-kafka\n",
            "",
            "no authenticationRef",
        ),
        (
            "billing.yaml",
            "        name: esim-kafka\n      metadata:",
            "        name: kafka\n      metadata:",
            "names no TriggerAuthentication kafka",
        ),
        ("kafka-auth.yaml", "key: password", "key: pasword", "esim-kafka/pasword"),
        ("kafka-auth.yaml", "parameter: ca", "parameter: caFile", "caFile"),
        (
            "kafka-auth.yaml",
            "    - parameter: tls\n      name: esim-kafka\n      key: tls\n",
            "",
            "gives no `tls`",
        ),
        (
            "config.env",
            "KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
            "KAFKA_SASL_MECHANISM=SCRAM-SHA-256",
            "KEDA needs 'scram_sha256'",
        ),
        (
            "config.env",
            "KAFKA_SSL_CA_FILE=/etc/esim/kafka/ca.crt",
            "KAFKA_SSL_CA_FILE=/etc/kafka/ca.crt",
            "in no volume mounted",
        ),
        (
            "config.env",
            "ACCOUNTS_DATABASE_POOL_SIZE=3",
            "ACCOUNTS_DATABASE_POOL_SIZE=20",
            "accounts 7 x 20 + billing 13 x 2 + notifier 7 x 2 + provisioning 13 x 2 = 206, "
            "over the 90",
        ),
        (
            "kustomization.yaml",
            '        esim-platform/postgres-max-connections: "100"\n',
            "",
            "must state the PostgreSQL server's max_connections",
        ),
        ("config.env", "ACCOUNTS_SEED_PROMOTIONS=false", "ESIM_ENV=local", "ESIM_ENV"),
        (
            "config.env",
            "NOTIFIER_RENEW_URL=https://www.example.invalid/cards/{iccid}\n",
            "",
            "Deployment notifier: NOTIFIER_RENEW_URL: points at this machine",
        ),
        (
            "config.env",
            "BILLING_PAYPAL_BASE_URL=https://api-m.paypal.com",
            "BILLING_PAYPAL_BASE_URL=https://api-m.sandbox.paypal.com",
            "BILLING_PAYPAL_BASE_URL: is a sandbox",
        ),
        ("config.env", "ACCOUNTS_SEED_PROMOTIONS=false\n", "", "ACCOUNTS_SEED_PROMOTIONS"),
        (
            "accounts.yaml",
            "            limits:\n              memory: 512Mi",
            "            limits:\n              memory: 384Mi",
            "need 512 MiB, over the memory limit 384Mi",
        ),
        (
            "accounts.yaml",
            'ACCOUNTS_PASSWORD_HASHES_AT_ONCE\n              value: "4"',
            'ACCOUNTS_PASSWORD_HASHES_AT_ONCE\n              value: "8"',
            "8 Argon2 hashes of 64 MiB",
        ),
    ],
)
def test_manifest_rules_fail(
    tmp_path: Path,
    facts: dict[str, check.ServiceFacts],
    file: str,
    old: str,
    new: str,
    expected: str,
) -> None:
    folder = copied_k8s(tmp_path)
    edited_in(folder, file, old, new)
    problems = check.check_k8s(folder, facts, validate=False)
    assert any(expected in problem for problem in problems), problems


REFUND_TRIGGER = """    - type: prometheus
      metadata:
        # The cluster's Prometheus (deploy/README.md, "Scaling"); every replica reports the
        # same count, so `max`.
        serverAddress: http://prometheus.monitoring.svc.cluster.local:9090
        query: max(esim_due_work_backlog{service="billing",work="refund"})
        threshold: "250"
"""
CPU_TRIGGER = """    - type: cpu
      metricType: Utilization
      metadata:
        value: "70"
"""
HELD_TRIGGER = """  triggers:
    - type: kafka
      authenticationRef:
        name: esim-kafka
      metadata:
        bootstrapServersFromEnv: KAFKA_BOOTSTRAP_SERVERS
        consumerGroup: accounts
        topic: esim.renewal.requested
        lagThreshold: "300"
        offsetResetPolicy: earliest
"""


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        # Due work scales on its backlog, each loop of the service on its own.
        (
            "billing.yaml",
            REFUND_TRIGGER,
            "",
            'no prometheus trigger on esim_due_work_backlog{service="billing",work="refund"}',
        ),
        (
            "provisioning.yaml",
            'service="provisioning",work="cancelling a bundle"',
            'service="billing",work="cancelling a bundle"',
            'it must select service="provisioning", its own backlog',
        ),
        (
            "notifier.yaml",
            'work="sending notification"',
            'work="sending notifications"',
            "due-work loops are ['sending notification']",
        ),
        ("notifier.yaml", 'work="sending notification"}', "}", "must name one loop"),
        ("billing.yaml", 'threshold: "250"', 'threshold: "60"', "under 2 of its batches (50"),
        # Kafka lag as the consumers count it, in batches.
        (
            "billing.yaml",
            "offsetResetPolicy: earliest",
            "offsetResetPolicy: latest",
            "offsetResetPolicy latest on esim.payment.requested, but the consumers start at "
            "earliest",
        ),
        ("billing.yaml", 'lagThreshold: "300"', 'lagThreshold: "50"', "under 2 fetch batches"),
        (
            "billing.yaml",
            "        offsetResetPolicy: earliest\n",
            "",
            "'offsetResetPolicy' is a required",
        ),
        # accounts: CPU, two replicas, a budget, and not the lag its intake holds on purpose.
        ("accounts.yaml", CPU_TRIGGER, "", "no cpu trigger"),
        ("accounts.yaml", "              cpu: 500m\n", "", "requests no cpu"),
        ("accounts.yaml", "minReplicaCount: 2", "minReplicaCount: 1", "at least 2"),
        (
            "accounts.yaml",
            "  minAvailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: acc",
            "  minAvailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: bill",
            "no PodDisruptionBudget selects the pods of accounts",
        ),
        ("accounts.yaml", "  triggers:\n", HELD_TRIGGER, "holds back on purpose"),
        # HPA behaviour that does not flap; no setting that does nothing.
        (
            "notifier.yaml",
            "  pollingInterval: 15\n",
            "  pollingInterval: 15\n  cooldownPeriod: 300\n",
            "cooldownPeriod does nothing with minReplicaCount 1",
        ),
        (
            "provisioning.yaml",
            "          stabilizationWindowSeconds: 300",
            "          stabilizationWindowSeconds: 10",
            "stabilizationWindowSeconds must be at least 60 (is 10)",
        ),
        # The schemas know the new fields, and so catch their typos.
        ("billing.yaml", "        scaleDown:", "        scaleDwn:", "'scaleDwn' was unexpected"),
        ("accounts.yaml", '        value: "70"', '        valu: "70"', "'valu' was unexpected"),
        ("accounts.yaml", "  minAvailable: 1", "  minAvailable: [1]", "is not of type"),
        # More replicas within the partitions still have to fit the database.
        (
            "notifier.yaml",
            "maxReplicaCount: 6",
            "maxReplicaCount: 12",
            "notifier 13 x 2 + provisioning 13 x 2 = 99, over the 90",
        ),
    ],
)
def test_scaling_rules_fail(
    tmp_path: Path,
    facts: dict[str, check.ServiceFacts],
    file: str,
    old: str,
    new: str,
    expected: str,
) -> None:
    folder = copied_k8s(tmp_path)
    edited_in(folder, file, old, new)
    problems = check.check_k8s(folder, facts, validate=False)
    assert any(expected in problem for problem in problems), problems


PRODUCTION_KUBECONFORM = "overlays/production: {kind} {name} (kubeconform -strict)"
#: A setting merged into esim-config by the production overlay (before its `images:`).
PRODUCTION_MERGE = """configMapGenerator:
  - name: esim-config
    behavior: merge
    literals:
      - {}
images:
"""


@pytest.mark.parametrize(
    ("file", "old", "new", "kind", "name", "expected"),
    [
        # A typo'd field of a Deployment, where the project's own schema lets anything through.
        (
            "billing.yaml",
            "      terminationGracePeriodSeconds: 45",
            "      terminationGracePeriodSecond: 45",
            "Deployment",
            "billing",
            "'terminationGracePeriodSecond'",
        ),
        # A wrong type: a string where Kubernetes wants an integer.
        (
            "billing.yaml",
            "  revisionHistoryLimit: 5",
            '  revisionHistoryLimit: "5"',
            "Deployment",
            "billing",
            "/spec/revisionHistoryLimit",
        ),
        ("web.yaml", "  replicas: 2", "  replicas: two", "Deployment", "web", "/spec/replicas"),
        # A typo in a KEDA object: its CRD's schema, made strict, knows every field.
        (
            "notifier.yaml",
            "  pollingInterval: 15",
            "  pollingIntervall: 15",
            "ScaledObject",
            "notifier",
            "'pollingIntervall'",
        ),
        (
            "kafka-auth.yaml",
            "  secretTargetRef:",
            "  secretTargetRefs:",
            "TriggerAuthentication",
            "esim-kafka",
            "'secretTargetRefs'",
        ),
        (
            "accounts.yaml",
            "  minAvailable: 1\n  selector:",
            "  minAvailable: 1\n  selectr:",
            "PodDisruptionBudget",
            "accounts",
            "'selectr'",
        ),
    ],
)
def test_kubeconform_strict_fails_a_planted_mistake(
    tmp_path: Path,
    facts: dict[str, check.ServiceFacts],
    file: str,
    old: str,
    new: str,
    kind: str,
    name: str,
    expected: str,
) -> None:
    folder = copied_k8s(tmp_path)
    edited_in(folder, file, old, new)
    problems = check.check_k8s(folder, facts)
    where = PRODUCTION_KUBECONFORM.format(kind=kind, name=name)
    assert any(where in problem and expected in problem for problem in problems), problems
    # The same base is in the local overlay, which is validated too.
    local = where.replace("overlays/production", "overlays/local")
    assert any(local in problem and expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        # Production runs images by digest: a tag, or a digest of the wrong form, is refused.
        (
            "overlays/production/kustomization.yaml",
            "    digest: sha256:" + "0" * 64,
            '    newTag: "1.4.2"',
            "image registry.example.invalid/esim/accounts:1.4.2 is not <registry>/<name>@sha256:",
        ),
        (
            "overlays/production/kustomization.yaml",
            "    digest: sha256:" + "0" * 64,
            "    digest: sha256:1234",
            "image registry.example.invalid/esim/accounts@sha256:1234 is not",
        ),
        # What kustomize itself refuses (a resource that is not there).
        ("kustomization.yaml", "  - web.yaml\n", "  - website.yaml\n", "kustomize build failed"),
        ("overlays/local/cards.csv", "iccid,activation_code\n", "iccid,code\n", "differs from"),
        # A manifest of the base left out of its kustomization is never applied.
        ("kustomization.yaml", "  - web.yaml\n", "", "web.yaml is not among the resources"),
        # A local run's value put in the production overlay itself (a merge into esim-config).
        (
            "overlays/production/kustomization.yaml",
            "images:\n",
            PRODUCTION_MERGE.format("NOTIFIER_RENEW_URL=http://127.0.0.1:8000/docs"),
            "Deployment notifier: NOTIFIER_RENEW_URL: points at this machine",
        ),
        (
            "overlays/production/kustomization.yaml",
            "images:\n",
            PRODUCTION_MERGE.format("NOTIFIER_MAIL_FROM=eSIM <no-reply@esim.local>"),
            "Deployment notifier: NOTIFIER_MAIL_FROM: sends from the local domain 'esim.local'",
        ),
        (
            "overlays/production/kustomization.yaml",
            "images:\n",
            PRODUCTION_MERGE.format("ESIM_ENV=local"),
            "config.env: ESIM_ENV must be production (or unset) in the cluster",
        ),
    ],
)
def test_overlay_rules_fail(
    tmp_path: Path,
    facts: dict[str, check.ServiceFacts],
    file: str,
    old: str,
    new: str,
    expected: str,
) -> None:
    folder = copied_k8s(tmp_path)
    edited_in(folder, file, old, new)
    problems = check.check_k8s(folder, facts, validate=False)
    assert any(expected in problem for problem in problems), problems


def rendered_production(folder: Path) -> list[dict[str, Any]]:
    tools = check.k8s_tools()
    text = check.render(tools["kustomize"], folder / "overlays/production")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def config_map_refs(documents: list[dict[str, Any]]) -> set[str]:
    return {
        source["configMapRef"]["name"]
        for doc in documents
        if doc["kind"] == "Deployment"
        for source in doc["spec"]["template"]["spec"]["containers"][0].get("envFrom", [])
    }


def test_a_config_change_renames_the_config_map_so_the_pods_roll(tmp_path: Path) -> None:
    folder = copied_k8s(tmp_path)
    before = config_map_refs(rendered_production(folder))
    [name] = before
    assert name.startswith("esim-config-") and name != "esim-config"
    edited_in(folder, "config.env", "NOTIFIER_SMTP_PORT=587", "NOTIFIER_SMTP_PORT=465")
    after = config_map_refs(rendered_production(folder))
    assert len(after) == 1 and after != before


def test_production_mounts_the_card_inventory_from_a_secret(tmp_path: Path) -> None:
    documents = rendered_production(copied_k8s(tmp_path))
    assert not [doc for doc in documents if doc["kind"] == "ConfigMap" and "inventory" in str(doc)]
    [accounts] = [
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "accounts"
    ]
    volumes = {v["name"]: v for v in accounts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["inventory"]["secret"]["secretName"] == "esim-card-inventory"
