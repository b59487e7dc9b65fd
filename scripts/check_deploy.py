"""Offline checks of the deploy files (`make lint`): the Dockerfile, compose and Kubernetes.

- `deploy/Dockerfile`: rules in the spirit of hadolint (pinned base images, no ADD, exec-form
  CMD/ENTRYPOINT, absolute WORKDIR, pinned apt/pip installs, a non-root USER, EXPOSE and a
  HEALTHCHECK in every runtime stage, more than one stage), every COPY source present, and every
  uv workspace member's pyproject.toml copied before the lock is synced.
- `deploy/compose.yaml`: a bundled subset of the Compose Specification's schema, then against the
  code: each service built from deploy/Dockerfile with its SERVICE and PORT, its published port
  and every environment name known to its settings class, depends_on and volumes declared;
  every port published on 127.0.0.1 only, each service's `stop_grace_period` past its stop
  bound (stop timeout + the watchdog's grace), `ESIM_ENV: local` declared, Kafka's log on a
  named volume.
- `deploy/k8s/`: every overlay (`overlays/*`) rendered by kustomize and validated by
  `kubeconform -strict` against Kubernetes' own schemas (the PyPI package kubernetes-validate)
  and KEDA's CRDs (its Go module), production's images by digest; then, on what the production
  overlay renders, each document against a bundled schema of the fields the project relies on,
  names, labels, selectors, ports, probes (the health endpoints the
  services serve), env names (the settings), config map and secret keys, Prometheus
  annotations, and each KEDA ScaledObject: its group and topics are what the service consumes
  (less the topics its intake holds on purpose, whose lag drives no replicas), its kafka
  triggers count lag as the consumers start (`offsetResetPolicy` = AUTO_OFFSET_RESET) with a
  `lagThreshold` of two fetch batches at least, one prometheus trigger per due-work loop on
  that loop's `esim_due_work_backlog{service,work}` (threshold two of its batches at least), a
  scale-down stabilization window, no inert `cooldownPeriod`, accounts' cpu trigger, two
  replicas and a PodDisruptionBudget over its pods, and its max replicas do not exceed the
  partitions the declaration (esim_core.messaging.topics) gives the topics it consumes; with a
  secured
  Kafka (`KAFKA_SECURITY_PROTOCOL` of esim-config other than PLAINTEXT) every trigger logs in
  through a TriggerAuthentication whose Secret keys exist and whose `sasl`/`tls` are given, and
  the Kafka files the settings name are mounted in each service's container; the values a
  pod gets pass the production settings check (esim_core.production; CHANGE-ME placeholders
  aside) and never say ESIM_ENV=local; the database pools at the most replicas fit the
  PostgreSQL limit esim-config states; accounts' Argon2 hashes at once fit its memory limit.

The travellers' website (`frontends/web`, SERVICE=web) is checked like a service, except that it
has no operator token, no topics and so no ScaledObject (it scales by a fixed replica count).

    python scripts/check_deploy.py        # exit status 1 and one line per problem
"""

import asyncio
import atexit
import glob
import json
import logging
import math
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from esim_core.persistence.db import POOL_OVERFLOW
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy/Dockerfile"
COMPOSE = ROOT / "deploy/compose.yaml"
K8S = ROOT / "deploy/k8s"
DEMO_CARDS = ROOT / "deploy/local/cards.csv"
SERVICES = ("accounts", "billing", "provisioning", "notifier")
HEALTH_PATHS = {"/health/live", "/health/ready"}
#: Read by every service outside its settings classes (`esim_core.web.server.serve`).
# Read by the process rather than a settings class (uvicorn reads FORWARDED_ALLOW_IPS).
PROCESS_ENV = frozenset({"LOG_LEVEL", "PYTHONUNBUFFERED", "FORWARDED_ALLOW_IPS"})
RUNTIME_STAGES = ("service", "sandboxes")


@dataclass
class ServiceFacts:
    """What the code says about one service: its env names, port, group and topics."""

    name: str
    prefix: str
    env: set[str]
    port: int
    #: Seconds a stop may take before the process ends itself (stop timeout + watchdog grace).
    stop_bound_s: float
    #: PostgreSQL connections one process keeps (its pool size; no overflow), 0 for none.
    pool_default: int = 0
    topics: list[str] = field(default_factory=list)
    #: A frontend (the website): HTTP only, no operator token, no consumer group to scale on.
    frontend: bool = False
    #: Its settings class, whose `local_defaults()` production refuses.
    model: type[BaseSettings] | None = None
    #: Its due-work loops: the `work` label of `esim_due_work_backlog` -> rows worked at once.
    works: dict[str, int] = field(default_factory=dict)
    #: Topics its consumer pauses on purpose (an intake at its limit): their lag is no signal.
    held_topics: frozenset[str] = frozenset()
    #: Most messages one fetch of its consumer takes (`<SERVICE>_CONSUMER_BATCH`'s default).
    consumer_batch: int = 0


def env_names(model: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads."""
    prefix = str(model.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add((prefix + name).upper())
    return names


def service_facts() -> dict[str, ServiceFacts]:
    """Each service's facts, from its settings class and its wired runtime."""
    # Their warnings about local development keys are not this check's business; the levels go
    # back afterwards, so a test process that runs this check still logs as configured.
    quiet = {name: logging.getLogger(name).level for name in ("accounts", "notifier")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return _facts()
    finally:
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


def _facts() -> dict[str, ServiceFacts]:
    from accounts import bootstrap as accounts
    from accounts.settings import AccountsSettings
    from billing import bootstrap as billing
    from billing.settings import BillingSettings
    from esim_core.production import RunSettings
    from esim_core.settings import Topics
    from esim_core.web.operator import OperatorSettings
    from esim_core.web.server import STOP_WATCHDOG_GRACE_S
    from notifier import bootstrap as notifier
    from notifier.settings import NotifierSettings
    from provisioning import bootstrap as provisioning
    from provisioning.settings import ProvisioningSettings

    run = env_names(RunSettings)
    shared = env_names(OperatorSettings) | env_names(Topics) | run | PROCESS_ENV
    wiring: dict[str, tuple[Any, type[BaseSettings]]] = {
        "accounts": (accounts, AccountsSettings),
        "billing": (billing, BillingSettings),
        "provisioning": (provisioning, ProvisioningSettings),
        "notifier": (notifier, NotifierSettings),
    }
    facts: dict[str, ServiceFacts] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (module, model) in wiring.items():
            extra: dict[str, Any] = {}
            if name == "billing":
                extra = _alipay_key_files(Path(scratch) / "alipay")
            if name == "accounts":
                # With a limit (as esim-config sets one), to learn which topics its intake holds.
                extra = {"max_sagas_in_flight": 1}
            settings = model(database_url=f"sqlite+aiosqlite:///{scratch}/{name}.sqlite", **extra)
            built = module.build(settings)
            consumer = built.runtime.subscribe()
            facts[name] = ServiceFacts(
                model=model,
                name=name,
                prefix=str(model.model_config.get("env_prefix", "")),
                env=env_names(model) | shared,
                port=settings.http_port,  # type: ignore[attr-defined]
                stop_bound_s=settings.stop_timeout_s + STOP_WATCHDOG_GRACE_S,  # type: ignore[attr-defined]
                pool_default=settings.database_pool_size,  # type: ignore[attr-defined]
                topics=list(consumer.topics) if consumer is not None else [],
                works={loop.what: loop.concurrency for loop in built.runtime.due_loops},
                held_topics=(
                    frozenset(consumer.intake.topics)
                    if consumer is not None and consumer.intake is not None
                    else frozenset()
                ),
                consumer_batch=settings.consumer_batch,  # type: ignore[attr-defined]
            )
            asyncio.run(_close(built))
    from web.settings import WebSettings

    web = WebSettings(secure_cookies=False)
    facts["web"] = ServiceFacts(
        model=WebSettings,
        name="web",
        prefix="WEB_",
        env=env_names(WebSettings) | run | PROCESS_ENV,
        port=web.http_port,
        stop_bound_s=web.stop_timeout_s + STOP_WATCHDOG_GRACE_S,
        frontend=True,
    )
    return facts


def _alipay_key_files(folder: Path) -> dict[str, Any]:
    """Billing needs Alipay's key pairs to build: a throwaway pair for reading its wiring."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import alipay_keys
    finally:
        sys.path.pop(0)
    for pair in alipay_keys.PAIRS:
        alipay_keys.ensure_pair(folder, pair)
    return {
        "alipay_app_private_key_file": folder / "app_private_key.pem",
        "alipay_public_key_file": folder / "alipay_public_key.pem",
    }


async def _close(built: Any) -> None:
    await built.runtime.redis.aclose()
    await built.runtime.database.close()
    for adapter in ("gateway", "platform"):
        client = getattr(built, adapter, None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()


# Dockerfile -------------------------------------------------------------------------------------


@dataclass
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    line: int
    keyword: str
    args: str


def dockerfile_instructions(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile (comments and the syntax directive left out)."""
    found: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, args = pending.partition(" ")
        found.append(Instruction(start, keyword.upper(), args.strip()))
        pending = ""
    return found


def check_dockerfile(path: Path, members: list[Path]) -> list[str]:
    """Problems with the Dockerfile (see the module's docstring)."""
    problems: list[str] = []
    instructions = dockerfile_instructions(path.read_text())
    args: dict[str, str] = {}
    stages: dict[str, list[Instruction]] = {}
    current: list[Instruction] | None = None
    for ins in instructions:
        where = f"{path.name}:{ins.line}"
        if ins.keyword == "ARG" and current is None:
            name, _, default = ins.args.partition("=")
            args[name] = default
        if ins.keyword == "FROM":
            words = ins.args.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), words[0])
            base = image.rsplit("/", 1)[-1]
            if words[0] not in stages and (":" not in base or base.endswith(":latest")):
                problems.append(f"{where}: FROM {words[0]} is not pinned to a tag (DL3006/DL3007)")
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"#{len(stages)}"
            current = stages.setdefault(name, [])
            continue
        if current is not None:
            current.append(ins)
        if ins.keyword == "ADD":
            problems.append(f"{where}: use COPY instead of ADD (DL3020)")
        if ins.keyword in {"CMD", "ENTRYPOINT"} and not ins.args.startswith("["):
            problems.append(f"{where}: {ins.keyword} in exec (JSON) form (DL3025)")
        if ins.keyword == "WORKDIR" and not ins.args.startswith(("/", "$")):
            problems.append(f"{where}: WORKDIR must be absolute (DL3000)")
        if ins.keyword == "RUN":
            problems += _check_run(where, ins.args)
        if ins.keyword == "COPY" and "--from=" not in ins.args:
            for source in shlex.split(ins.args)[:-1]:
                if source.startswith("--"):
                    continue
                pattern = re.sub(r"\$\{\w+\}", "*", source)
                if not glob.glob(str(ROOT / pattern)):
                    problems.append(f"{where}: COPY source {source} does not exist")
    if len(stages) < 2:
        problems.append(f"{path.name}: not a multi-stage build")
    for stage in RUNTIME_STAGES:
        body = stages.get(stage)
        if body is None:
            problems.append(f"{path.name}: no `{stage}` stage")
            continue
        users = [ins.args for ins in body if ins.keyword == "USER"]
        if not users or users[-1] in {"root", "0"}:
            problems.append(f"{path.name}: stage {stage} must end as a non-root USER (DL3002)")
        for keyword in ("HEALTHCHECK", "EXPOSE"):
            if not any(ins.keyword == keyword for ins in body):
                problems.append(f"{path.name}: stage {stage} has no {keyword}")
        if not any(ins.keyword in {"CMD", "ENTRYPOINT"} for ins in body):
            problems.append(f"{path.name}: stage {stage} has no CMD or ENTRYPOINT")
    if list(stages)[-1:] != ["service"]:
        problems.append(f"{path.name}: the last (default) stage must be `service`")
    copied = {
        shlex.split(ins.args)[0]
        for ins in stages.get("deps", [])
        if ins.keyword == "COPY" and ins.args.split()[0].endswith("pyproject.toml")
    }
    for member in members:
        wanted = str((member / "pyproject.toml").relative_to(ROOT))
        if wanted not in copied:
            problems.append(f"{path.name}: stage deps does not copy {wanted} (uv needs it)")
    return problems


def _check_run(where: str, command: str) -> list[str]:
    problems: list[str] = []
    for part in re.split(r"&&|;|\|\|", command):
        words = part.split()
        if words[:2] == ["apt-get", "install"] or words[:3] == ["apt-get", "-y", "install"]:
            packages = [w for w in words[2:] if not w.startswith("-") and w != "install"]
            if any("=" not in package for package in packages):
                problems.append(f"{where}: pin apt-get install versions (DL3008)")
            if "--no-install-recommends" not in words:
                problems.append(f"{where}: apt-get install --no-install-recommends (DL3015)")
        if words[:2] in (["pip", "install"], ["pip3", "install"]):
            packages = [w for w in words[2:] if not w.startswith("-")]
            if any("==" not in package for package in packages):
                problems.append(f"{where}: pin pip install versions (DL3013)")
    return problems


def workspace_members() -> list[Path]:
    """The uv workspace's member folders, as the root pyproject.toml's globs name them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[Path] = []
    for pattern in config["tool"]["uv"]["workspace"]["members"]:
        members += [Path(p) for p in sorted(glob.glob(str(ROOT / pattern)))]
    members.insert(0, ROOT)
    return [member for member in members if (member / "pyproject.toml").is_file()]


# compose ----------------------------------------------------------------------------------------

#: A compose duration (`30s`, `1m30s`, `500ms`): the Compose Specification's units.
DURATION = r"^(\d+(\.\d+)?(us|ms|s|m|h))+$"
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(text: str) -> float:
    """Seconds of a compose duration such as `1m30s` (already matched against DURATION)."""
    return sum(
        float(number) * _DURATION_UNITS[unit]
        for number, unit in re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", text)
    )


#: The part of the Compose Specification's schema this project uses; unknown keys are errors.
COMPOSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["services"],
    "patternProperties": {"^x-": {}},
    "properties": {
        "name": {"type": "string"},
        "services": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "patternProperties": {"^x-": {}},
                "additionalProperties": False,
                "properties": {
                    "image": {"type": "string"},
                    "build": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["context"],
                        "properties": {
                            "context": {"type": "string"},
                            "dockerfile": {"type": "string"},
                            "target": {"type": "string"},
                            "args": {
                                "type": "object",
                                "additionalProperties": {"type": ["string", "number"]},
                            },
                        },
                    },
                    "hostname": {"type": "string"},
                    "stop_grace_period": {"type": "string", "pattern": DURATION},
                    "restart": {"enum": ["no", "always", "on-failure", "unless-stopped"]},
                    "command": {"type": "array", "items": {"type": "string"}},
                    "ports": {"type": "array", "items": {"type": "string"}},
                    "environment": {
                        "type": "object",
                        "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                    },
                    "volumes": {"type": "array", "items": {"type": "string"}},
                    "depends_on": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "required": ["condition"],
                            "properties": {
                                "condition": {
                                    "enum": [
                                        "service_started",
                                        "service_healthy",
                                        "service_completed_successfully",
                                    ]
                                }
                            },
                        },
                    },
                    "healthcheck": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "test": {"type": ["array", "string"]},
                            "interval": {"type": "string"},
                            "timeout": {"type": "string"},
                            "start_period": {"type": "string"},
                            "retries": {"type": "integer"},
                        },
                    },
                },
            },
        },
        "volumes": {"type": "object"},
        "networks": {"type": "object"},
    },
    "additionalProperties": False,
}


def check_compose(path: Path, facts: dict[str, ServiceFacts]) -> list[str]:
    """Problems with the compose file (see the module's docstring)."""
    document = yaml.safe_load(path.read_text())
    problems = [
        f"{path.name}: {'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft202012Validator(COMPOSE_SCHEMA).iter_errors(document)
    ]
    if problems:
        return problems
    services: dict[str, Any] = document["services"]
    volumes = set(document.get("volumes") or {})
    for name, spec in services.items():
        where = f"{path.name}: {name}"
        for port in spec.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                problems.append(
                    f"{where}: publishes {port} on every address; bind it to 127.0.0.1 "
                    "(e.g. 127.0.0.1:8000:8000)"
                )
        problems += _check_kafka_data(where, spec, volumes)
        build = spec.get("build")
        if build is not None:
            dockerfile = path.parent / build["context"] / build.get("dockerfile", "Dockerfile")
            if not dockerfile.resolve().is_file():
                problems.append(f"{where}: no Dockerfile at {dockerfile}")
        for dependency in spec.get("depends_on", {}):
            if dependency not in services:
                problems.append(f"{where}: depends on {dependency}, which is not a service")
            elif "healthcheck" not in services[dependency] and "build" not in services[dependency]:
                problems.append(f"{where}: waits for {dependency}, which has no health check")
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")) and source not in volumes:
                problems.append(f"{where}: volume {source} is not declared")
            if source.startswith(".") and not (path.parent / source).exists():
                problems.append(f"{where}: mounts {source}, which does not exist")
        if name not in facts:
            continue
        fact = facts[name]
        if build is None or build.get("target") != "service":
            problems.append(f"{where}: must build deploy/Dockerfile's `service` target")
        else:
            build_args = {key: str(value) for key, value in (build.get("args") or {}).items()}
            if build_args.get("SERVICE") != name or build_args.get("PORT") != str(fact.port):
                problems.append(f"{where}: build args must be SERVICE={name}, PORT={fact.port}")
            source = build_args.get("SOURCE", f"services/{name}")
            if not (ROOT / source / "pyproject.toml").is_file():
                problems.append(f"{where}: build arg SOURCE={source} is not a workspace package")
        published = [port.rsplit(":", 1)[-1] for port in spec.get("ports", [])]
        if published != [str(fact.port)]:
            problems.append(f"{where}: publishes {published}, the service listens on {fact.port}")
        environment = spec.get("environment") or {}
        for variable in environment:
            if variable not in fact.env:
                problems.append(f"{where}: {variable} is not a setting of {name}")
        if environment.get("ESIM_ENV") != "local":
            problems.append(
                f"{where}: no ESIM_ENV: local (compose is a local run: with its demo secrets "
                "and sandboxes the service would refuse to start)"
            )
        grace = spec.get("stop_grace_period")
        if grace is None or duration_s(grace) <= fact.stop_bound_s:
            problems.append(
                f"{where}: stop_grace_period {grace or '10s (the default)'} must exceed the "
                f"service's stop bound, {fact.stop_bound_s:g} s (STOP_TIMEOUT_S + the "
                "watchdog's grace), or Docker kills it mid-stop"
            )
        if not fact.frontend and "OPERATOR_TOKEN" not in (spec.get("environment") or {}):
            problems.append(f"{where}: no OPERATOR_TOKEN (the service would not start)")
    return problems


def _check_kafka_data(where: str, spec: dict[str, Any], volumes: set[str]) -> list[str]:
    """A Kafka broker's log folder must be on a named volume, or `down` loses every event."""
    log_dirs = (spec.get("environment") or {}).get("KAFKA_LOG_DIRS")
    if not str(spec.get("image", "")).startswith("apache/kafka"):
        return []
    mounted = {
        volume.split(":")[1]: volume.split(":")[0]
        for volume in spec.get("volumes", [])
        if volume.count(":") >= 1
    }
    if log_dirs is None or mounted.get(str(log_dirs)) not in volumes:
        return [f"{where}: KAFKA_LOG_DIRS must be set and mounted from a named volume"]
    return []


# Kubernetes -------------------------------------------------------------------------------------


def _closed(required: list[str], /, **properties: Any) -> dict[str, Any]:
    """The schema of an object with these `properties` and no other, `required` among them."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


_META = _closed(
    ["name"],
    name={"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    namespace={"type": "string"},
    labels={"type": "object", "additionalProperties": {"type": "string"}},
    annotations={"type": "object", "additionalProperties": {"type": "string"}},
)
_PROBE = _closed(
    ["httpGet"],
    httpGet={
        "type": "object",
        "required": ["path", "port"],
        "properties": {"path": {"type": "string"}, "port": {"type": ["string", "integer"]}},
    },
    periodSeconds={"type": "integer", "minimum": 1},
    timeoutSeconds={"type": "integer", "minimum": 1},
    failureThreshold={"type": "integer", "minimum": 1},
    initialDelaySeconds={"type": "integer", "minimum": 0},
)
_ENV_VAR = _closed(
    ["name"],
    name={"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$"},
    value={"type": "string"},
    valueFrom={"type": "object"},
)
_CONTAINER = _closed(
    ["name", "image", "ports", "readinessProbe", "livenessProbe", "resources"],
    name={"type": "string"},
    image={"type": "string"},
    imagePullPolicy={"enum": ["Always", "IfNotPresent", "Never"]},
    ports={
        "type": "array",
        "items": _closed(
            ["containerPort"],
            name={"type": "string"},
            containerPort={"type": "integer", "minimum": 1, "maximum": 65535},
        ),
    },
    env={"type": "array", "items": _ENV_VAR},
    envFrom={"type": "array"},
    startupProbe=_PROBE,
    livenessProbe=_PROBE,
    readinessProbe=_PROBE,
    resources={"type": "object", "required": ["requests"]},
    securityContext={"type": "object"},
    volumeMounts={"type": "array"},
)


def _with_spec(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes object's (or pod template's) schema: `metadata`, and a `spec` as given."""
    spec = {"type": "object", "required": required, "properties": properties}
    return {"type": "object", "required": ["metadata", "spec"], "properties": {"spec": spec}}


#: An HPA scaling rule (`behavior.scaleUp` / `scaleDown`), as autoscaling/v2 defines it.
_HPA_RULES = _closed(
    [],
    stabilizationWindowSeconds={"type": "integer", "minimum": 0, "maximum": 3600},
    selectPolicy={"enum": ["Max", "Min", "Disabled"]},
    policies={
        "type": "array",
        "items": _closed(
            ["type", "value", "periodSeconds"],
            type={"enum": ["Pods", "Percent"]},
            value={"type": "integer", "minimum": 1},
            periodSeconds={"type": "integer", "minimum": 1, "maximum": 1800},
        ),
    },
)
_AUTH_REF = _closed(
    ["name"],
    name={"type": "string", "minLength": 1},
    kind={"enum": ["TriggerAuthentication"]},
)


def _trigger(kind: str, required: list[str], metadata: dict[str, Any], **extra: Any) -> Any:
    """The schema of one KEDA trigger type: its metadata's known fields, nothing else."""
    return _closed(
        ["type", "metadata"],
        type={"const": kind},
        metadata=_closed(required, **metadata),
        name={"type": "string"},
        **extra,
    )


_NUMBER = {"type": "string", "pattern": r"^\d+(\.\d+)?$"}
#: The KEDA triggers this project uses: kafka (a group's lag), prometheus (a query's value: the
#: due-work backlog) and cpu (utilization of the pods' request).
_TRIGGER = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": ["kafka", "prometheus", "cpu"]}},
    "allOf": [
        {
            "if": {"properties": {"type": {"const": kind}}},
            "then": schema,
        }
        for kind, schema in {
            "kafka": _trigger(
                "kafka",
                ["consumerGroup", "topic", "lagThreshold", "offsetResetPolicy"],
                {
                    "bootstrapServers": {"type": "string"},
                    "bootstrapServersFromEnv": {"type": "string"},
                    "consumerGroup": {"type": "string"},
                    "topic": {"type": "string"},
                    "lagThreshold": _NUMBER,
                    "activationLagThreshold": _NUMBER,
                    "offsetResetPolicy": {"enum": ["earliest", "latest"]},
                    "allowIdleConsumers": {"enum": ["true", "false"]},
                    "version": {"type": "string"},
                },
                authenticationRef=_AUTH_REF,
            ),
            "prometheus": _trigger(
                "prometheus",
                ["serverAddress", "query", "threshold"],
                {
                    "serverAddress": {"type": "string", "pattern": "^https?://"},
                    "query": {"type": "string", "minLength": 1},
                    "threshold": _NUMBER,
                    "activationThreshold": _NUMBER,
                    "ignoreNullValues": {"enum": ["true", "false"]},
                    "unsafeSsl": {"enum": ["true", "false"]},
                },
                authenticationRef=_AUTH_REF,
            ),
            "cpu": _trigger(
                "cpu",
                ["value"],
                {"value": _NUMBER, "containerName": {"type": "string"}},
                metricType={"enum": ["Utilization", "AverageValue"]},
            ),
        }.items()
    ],
}


K8S_SCHEMAS: dict[str, dict[str, Any]] = {
    "Namespace": {"type": "object", "required": ["metadata"]},
    "ConfigMap": {
        "type": "object",
        "required": ["metadata", "data"],
        "properties": {"data": {"type": "object", "additionalProperties": {"type": "string"}}},
    },
    "Secret": {
        "type": "object",
        "required": ["metadata", "stringData"],
        "properties": {
            "stringData": {"type": "object", "additionalProperties": {"type": "string"}}
        },
    },
    "Deployment": _with_spec(
        ["selector", "template"],
        selector={"type": "object", "required": ["matchLabels"]},
        template=_with_spec(
            ["containers", "securityContext"],
            containers={"type": "array", "minItems": 1, "items": _CONTAINER},
        ),
    ),
    "Service": _with_spec(["selector", "ports"], ports={"type": "array", "minItems": 1}),
    "ScaledObject": _with_spec(
        ["scaleTargetRef", "maxReplicaCount", "triggers"],
        scaleTargetRef=_closed(
            ["name"],
            name={"type": "string"},
            envSourceContainerName={"type": "string"},
            kind={"type": "string"},
            apiVersion={"type": "string"},
        ),
        minReplicaCount={"type": "integer", "minimum": 0},
        maxReplicaCount={"type": "integer", "minimum": 1},
        pollingInterval={"type": "integer", "minimum": 1},
        cooldownPeriod={"type": "integer", "minimum": 0},
        advanced=_closed(
            [],
            restoreToOriginalReplicaCount={"type": "boolean"},
            horizontalPodAutoscalerConfig=_closed(
                [],
                name={"type": "string"},
                behavior=_closed([], scaleUp=_HPA_RULES, scaleDown=_HPA_RULES),
            ),
        ),
        triggers={"type": "array", "minItems": 1, "items": _TRIGGER},
    ),
    "PodDisruptionBudget": _with_spec(
        ["selector"],
        selector=_closed(
            ["matchLabels"],
            matchLabels={"type": "object", "additionalProperties": {"type": "string"}},
        ),
        minAvailable={"type": ["integer", "string"]},
        maxUnavailable={"type": ["integer", "string"]},
    ),
    "Job": _with_spec(
        ["template"],
        template=_with_spec(
            ["containers", "securityContext", "restartPolicy"],
            containers={
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "image", "command", "env", "resources"],
                    "properties": {"env": {"type": "array", "items": _ENV_VAR}},
                },
            },
        ),
    ),
    "TriggerAuthentication": _with_spec(
        ["secretTargetRef"],
        secretTargetRef={
            "type": "array",
            "minItems": 1,
            "items": _closed(
                ["parameter", "name", "key"],
                # What KEDA's Kafka scaler reads from a TriggerAuthentication.
                parameter={
                    "enum": [
                        "sasl",
                        "username",
                        "password",
                        "tls",
                        "ca",
                        "cert",
                        "key",
                        "keyPassword",
                    ]
                },
                name={"type": "string", "minLength": 1},
                key={"type": "string", "minLength": 1},
            ),
        },
    ),
}
API_VERSIONS = {
    "Namespace": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
    "PodDisruptionBudget": "policy/v1",
    "Job": "batch/v1",
}
#: KEDA's name (TriggerAuthentication `sasl`) of each `KAFKA_SASL_MECHANISM`.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
#: The settings naming files a Kafka client reads: each must be inside a mounted volume.
KAFKA_FILES = (
    "KAFKA_SASL_PASSWORD_FILE",
    "KAFKA_SSL_CA_FILE",
    "KAFKA_SSL_CERT_FILE",
    "KAFKA_SSL_KEY_FILE",
)


#: The overlays under deploy/k8s/overlays: each is rendered and validated; the production one
#: is what the cross-checks read.
PRODUCTION = "production"
#: What a production image must be: a name and a digest, no tag (a tag can move to another build).
IMAGE_BY_DIGEST = re.compile(r"[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}")
#: The Kubernetes release whose schemas kubeconform validates against (bundled by the PyPI
#: package kubernetes-validate, pinned in pyproject.toml).
KUBERNETES_VERSION = "1.33.0"
#: The generated objects of base/kustomization.yaml: their rendered names carry a hash.
GENERATED_FILES = {"esim-config": "config.env"}


class ToolMissing(RuntimeError):
    """A manifest tool (kustomize, kubeconform, KEDA's CRDs) could not be installed."""


#: libyaml's loader where PyYAML was built with it: a rendered overlay is some 1,500 lines, which
#: the pure-Python loader takes most of a second to read, and the checks read several.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_all(text: str) -> list[dict[str, Any]]:
    """The documents of a YAML stream (as yaml.safe_load_all reads them), empty ones left out."""
    return [document for document in yaml.load_all(text, Loader=_LOADER) if document]


#: The tools' paths once found: the script is run once per process (a test of many cases
#: checks many copies of the manifests).
_TOOLS: list[dict[str, Path]] = []


def k8s_tools() -> dict[str, Path]:
    """kustomize, kubeconform and KEDA's CRDs, installed by scripts/ensure-k8s-tools.sh.

    Raises:
        ToolMissing: the script failed (no Go, no network to the Go module proxy, ...).
    """
    if _TOOLS:
        return _TOOLS[0]
    done = subprocess.run(  # noqa: S603 (the project's own script)
        [str(ROOT / "scripts/ensure-k8s-tools.sh")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ToolMissing(
            f"scripts/ensure-k8s-tools.sh failed (exit status {done.returncode}): "
            f"{done.stderr.strip()}"
        )
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    _TOOLS.append({name: Path(path) for name, path in found.items()})
    return _TOOLS[0]


def render(kustomize: Path, overlay: Path) -> str:
    """`kustomize build` of an overlay: the YAML a `kubectl apply -k` would send.

    Raises:
        ValueError: kustomize refused the overlay (its message).
    """
    done = subprocess.run(  # noqa: S603 (a pinned tool, a folder of ours)
        [str(kustomize), "build", str(overlay)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ValueError(done.stderr.strip() or f"exit status {done.returncode}")
    return done.stdout


def _strict(schema: Any) -> Any:
    """A CRD's openAPIV3Schema made strict as kubeconform's own schemas are: an object that
    lists its properties and does not keep unknown fields takes no others (a typo fails)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def crd_schemas(crds: Path, into: Path) -> None:
    """Write each version of each CustomResourceDefinition in `crds` as a strict JSON schema,
    named as kubeconform's schema template `{{ .ResourceKind }}{{ .KindSuffix }}.json` asks
    (`scaledobject-keda-v1alpha1.json`)."""
    into.mkdir(parents=True, exist_ok=True)
    for path in sorted(crds.glob("*.yaml")):
        for crd in load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            kind = spec["names"]["kind"].lower()
            group = spec["group"].split(".")[0].lower()
            for version in spec["versions"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                target = into / f"{kind}-{group}-{version['name']}.json"
                target.write_text(json.dumps(schema))


def kubernetes_schemas() -> Path:
    """The folder of Kubernetes' own JSON schemas (strict: no unknown field) that the package
    kubernetes-validate ships for the release kubeconform validates against."""
    import kubernetes_validate

    package = Path(kubernetes_validate.__file__).parent
    return package / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"


def schema_file(api_version: str, kind: str) -> str:
    """The name kubeconform's template `{{ .ResourceKind }}{{ .KindSuffix }}.json` gives the
    schema of a kind: `deployment-apps-v1.json`, `service-v1.json`."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix.lower()}.json"


def standalone_schemas(documents: list[dict[str, Any]], into: Path) -> None:
    """Kubernetes' schema of each kind in `documents`, made standalone for kubeconform.

    kubernetes-validate's schemas refer to one shared `_definitions.json` by an absolute
    address on kubernetes.io, which kubeconform would try to download (and cannot here); each
    is written with those definitions inside it and its references pointed at them."""
    source = kubernetes_schemas()
    definitions: dict[str, Any] | None = None
    into.mkdir(parents=True, exist_ok=True)
    for document in documents:
        name = schema_file(str(document.get("apiVersion", "")), str(document.get("kind", "")))
        if (into / name).exists() or not (source / name).is_file():
            continue  # done, or not a Kubernetes kind (KEDA's come from its CRDs)
        if definitions is None:
            definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
        text = (source / name).read_text().replace('"/api/_definitions.json#/', '"#/')
        schema = json.loads(text)
        schema.pop("$id", None)
        # Only what it uses: kubeconform compiles every definition a schema carries.
        schema["$defs"] = _reachable(schema, definitions)
        (into / name).write_text(json.dumps(schema))


#: The part of kubeconform's message that says nothing about the manifest.
_KUBECONFORM_NOISE = re.compile(
    r"problem validating schema\. Check JSON formatting: jsonschema validation failed with "
    r"'[^']*' - "
)
#: Where the schemas are made, once per process (KEDA's converted CRDs, Kubernetes'
#: standalone schemas): a check of several overlays, or a test of many cases, reuses them.
_SCHEMA_FOLDER: list[Path] = []


def _schema_folder() -> Path:
    if not _SCHEMA_FOLDER:
        folder = Path(tempfile.mkdtemp(prefix="check-deploy-schemas-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _SCHEMA_FOLDER.append(folder)
    return _SCHEMA_FOLDER[0]


def _reachable(schema: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    """The definitions `schema` refers to, directly or through others (`#/$defs/<name>`)."""
    found: dict[str, Any] = {}
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = ref[len("#/$defs/") :]
                if name not in found:
                    found[name] = definitions[name]
                    pending.append(definitions[name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def kubeconform(
    tools: dict[str, Path],
    rendered: str,
    label: str,
    documents: list[dict[str, Any]] | None = None,
) -> list[str]:
    """`kubeconform -strict` of rendered manifests (and their `documents`, read from them when
    not given) against Kubernetes' schemas and KEDA's CRDs: one problem per invalid object
    (each field's error), or per object of no known schema."""
    schemas = _schema_folder()
    keda = schemas / f"keda-{tools['keda_crds'].name}"
    if not keda.is_dir():
        crd_schemas(tools["keda_crds"], keda)
    kubernetes = schemas / f"kubernetes-{KUBERNETES_VERSION}"
    standalone_schemas(load_all(rendered) if documents is None else documents, kubernetes)
    command = [
        str(tools["kubeconform"]),
        "-strict",
        "-summary=false",
        "-output",
        "json",
        "-kubernetes-version",
        KUBERNETES_VERSION,
        "-schema-location",
        str(kubernetes) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
        "-schema-location",
        str(keda) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
        "-",
    ]
    done = subprocess.run(  # noqa: S603 (a pinned tool, fixed flags)
        command, input=rendered, capture_output=True, text=True, check=False
    )
    try:
        report = json.loads(done.stdout or "{}")
    except json.JSONDecodeError:
        return [f"{label}: kubeconform: {done.stdout.strip()} {done.stderr.strip()}"]
    problems: list[str] = []
    for resource in report.get("resources", []):
        if resource.get("status") in ("statusValid", "statusEmpty"):
            continue
        where = f"{label}: {resource.get('kind')} {resource.get('name')} (kubeconform -strict)"
        # Its message names the field (its errors list only the outermost object that failed).
        problems.append(f"{where}: {_KUBECONFORM_NOISE.sub('', str(resource.get('msg')))}")
    if done.returncode != 0 and not problems:
        problems.append(f"{label}: kubeconform failed: {done.stderr.strip() or done.stdout}")
    return problems


def _source_files(base: Path) -> dict[tuple[str, str], str]:
    """(kind, name) -> the base file that declares it, for messages that name a file."""
    files: dict[tuple[str, str], str] = {
        ("ConfigMap", name): file for name, file in GENERATED_FILES.items()
    }
    for path in sorted(base.glob("*.yaml")):
        for document in load_all(path.read_text()):
            if "kind" in document:
                files[(document["kind"], document.get("metadata", {}).get("name", "?"))] = path.name
    return files


def _generated_name(kind: str, name: str) -> str:
    """A generated object's name without its hash suffix (`esim-config-5t9c7k2b6f`)."""
    if kind in ("ConfigMap", "Secret"):
        for generated in GENERATED_FILES:
            if re.fullmatch(re.escape(generated) + r"-[a-z0-9]{10}", name):
                return generated
    return name


def check_k8s(folder: Path, facts: dict[str, ServiceFacts], *, validate: bool = True) -> list[str]:
    """Problems with the Kubernetes manifests: every overlay rendered by kustomize and validated
    by `kubeconform -strict`, production's images by digest, then the cross-checks on what the
    production overlay renders (see the module's docstring).

    `validate=False` renders only the production overlay and runs no kubeconform: the project's
    own checks alone, for a test of one of them (a quarter of the time of the whole)."""
    try:
        tools = k8s_tools()
    except ToolMissing as error:
        return [str(error)]
    problems: list[str] = []
    production: list[dict[str, Any]] = []
    for overlay in sorted(p for p in (folder / "overlays").iterdir() if p.is_dir()):
        if not validate and overlay.name != PRODUCTION:
            continue
        label = f"overlays/{overlay.name}"
        try:
            rendered = render(tools["kustomize"], overlay)
        except ValueError as error:
            problems.append(f"{label}: kustomize build failed: {error}")
            continue
        documents = load_all(rendered)
        if validate:
            problems += kubeconform(tools, rendered, label, documents)
        if overlay.name == PRODUCTION:
            production = documents
            problems += _check_digests(label, documents)
    local_cards = folder / "overlays/local/cards.csv"
    if local_cards.is_file() and local_cards.read_text() != DEMO_CARDS.read_text():
        problems.append(
            "overlays/local/cards.csv differs from deploy/local/cards.csv: copy it again "
            "(kustomize reads no file outside an overlay's folder)"
        )
    if not production:
        return [*problems, f"no overlays/{PRODUCTION} rendered: nothing to cross-check"]
    files = _source_files(folder / "base")
    sourced = [
        (files.get((doc["kind"], _generated_name(doc["kind"], doc["metadata"]["name"])), "?"), doc)
        for doc in production
    ]
    sourced += [
        ("secret.example.yaml", doc)
        for doc in load_all((folder / "secret.example.yaml").read_text())
    ]
    return problems + check_manifests(folder, sourced, facts)


def _check_digests(label: str, documents: list[dict[str, Any]]) -> list[str]:
    """Every container of the production overlay runs an image named by its digest."""
    problems: list[str] = []
    for doc in documents:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            image = str(container.get("image", ""))
            if not IMAGE_BY_DIGEST.fullmatch(image):
                problems.append(
                    f"{label}: {doc['kind']} {doc['metadata']['name']}: image {image} is not "
                    "<registry>/<name>@sha256:<64 hex digits>: production runs images by digest "
                    "(set each in overlays/production/kustomization.yaml)"
                )
    return problems


def check_manifests(
    folder: Path, documents: list[tuple[str, dict[str, Any]]], facts: dict[str, ServiceFacts]
) -> list[str]:
    """The project's own checks of the rendered production manifests (the module's docstring)."""
    problems: list[str] = []
    by_kind: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {}
    config_names: set[str] = set()
    for file, document in documents:
        kind = document.get("kind", "?")
        rendered_name = document.get("metadata", {}).get("name", "?")
        name = _generated_name(kind, rendered_name)
        if kind == "ConfigMap":
            config_names.add(rendered_name)
        where = f"{file}: {kind} {name}"
        schema = K8S_SCHEMAS.get(kind)
        if schema is None:
            problems.append(f"{where}: no schema for kind {kind}")
            continue
        if document.get("apiVersion") != API_VERSIONS[kind]:
            problems.append(f"{where}: apiVersion must be {API_VERSIONS[kind]}")
        full = {**schema, "properties": {**schema.get("properties", {}), "metadata": _META}}
        problems += [
            f"{where}: {'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in jsonschema.Draft202012Validator(full).iter_errors(document)
        ]
        if kind not in {"Namespace"} and document.get("metadata", {}).get("namespace") != "esim":
            problems.append(f"{where}: not in namespace esim")
        by_kind.setdefault(kind, {})[name] = (file, document)
    if problems:
        return problems
    base = folder / "base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    for path in sorted(base.glob("*.yaml")):
        if path.name not in listed | {"kustomization.yaml"}:
            problems.append(f"base/kustomization.yaml: {path.name} is not among the resources")
    secret_values: dict[str, str] = {
        key: value
        for _, doc in by_kind.get("Secret", {}).values()
        for key, value in doc.get("stringData", {}).items()
    }
    secret_keys = set(secret_values)
    all_env = set().union(*(fact.env for fact in facts.values()))
    esim_config = by_kind.get("ConfigMap", {}).get("esim-config")
    for key in esim_config[1]["data"] if esim_config else {}:
        if key not in all_env:
            problems.append(f"config.env: {key} is not a setting of any service")
    config_data: dict[str, str] = esim_config[1]["data"] if esim_config else {}
    if config_data.get("ESIM_ENV", "production") != "production":
        problems.append("config.env: ESIM_ENV must be production (or unset) in the cluster")
    from esim_core.messaging.topics import declared_topics
    from esim_core.settings import Topics

    # The one declaration the services, `esimctl topics apply` and this check read.
    declared = {name: spec.partitions for name, spec in declared_topics(Topics()).items()}
    #: Per service with a database: (pods at the most, connections each).
    connections: dict[str, tuple[int, int]] = {}
    for name, fact in facts.items():
        deployment = by_kind.get("Deployment", {}).get(name)
        if deployment is None:
            problems.append(f"no Deployment {name}")
            continue
        file, doc = deployment
        problems += _check_deployment(file, doc, fact, config_names, secret_keys)
        env = {
            e["name"]: e.get("value")
            for e in doc["spec"]["template"]["spec"]["containers"][0].get("env", [])
        }
        if env.get("ESIM_ENV", "production") != "production":
            problems.append(f"{file}: Deployment {name}: ESIM_ENV must be production (or unset)")
        if name == "accounts":
            problems += _check_password_memory(file, doc, {**config_data, **env})
        problems += _check_production_values(file, doc, fact, config_data, secret_values)
        service = by_kind.get("Service", {}).get(name)
        if service is None:
            problems.append(f"no Service {name}")
        else:
            problems += _check_service(service[0], service[1], doc, fact)
        if fact.frontend:
            if name in by_kind.get("ScaledObject", {}):
                problems.append(f"ScaledObject {name}: {name} consumes no topic to scale on")
            continue
        problems += _check_migrations(by_kind, fact, doc, secret_keys)
        scaled = by_kind.get("ScaledObject", {}).get(name)
        if scaled is None:
            problems.append(f"no ScaledObject {name}")
        else:
            batch = env.get(f"{fact.prefix}CONSUMER_BATCH") or config_data.get(
                f"{fact.prefix}CONSUMER_BATCH"
            )
            problems += _check_scaled(
                scaled[0],
                scaled[1],
                fact,
                {topic: declared[topic] for topic in fact.topics if topic in declared},
                int(batch) if batch else fact.consumer_batch,
            )
            if name in API_SERVICES:
                problems += _check_disruption(by_kind, fact)
            requests = doc["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
            cpu_triggers = [t for t in scaled[1]["spec"]["triggers"] if t["type"] == "cpu"]
            if cpu_triggers and "cpu" not in requests:
                problems.append(
                    f"{file}: Deployment {name}: a cpu trigger scales it, but its container "
                    "requests no cpu (utilization is measured against the request)"
                )
            pool = env.get(f"{fact.prefix}DATABASE_POOL_SIZE") or config_data.get(
                f"{fact.prefix}DATABASE_POOL_SIZE"
            )
            most = int(scaled[1]["spec"]["maxReplicaCount"])
            connections[name] = (
                most + _surge(doc, most),
                (int(pool) if pool else fact.pool_default) + POOL_OVERFLOW,
            )
    config = esim_config[1]["data"] if esim_config else {}
    problems += _check_kafka_auth(by_kind, config, facts)
    if esim_config is not None:
        problems += _check_connections(esim_config[1], connections)
    return problems


#: The module a migrations Job runs (`python -m esim_core.persistence.migrate <service>`).
MIGRATE_MODULE = "esim_core.persistence.migrate"


def _check_migrations(
    by_kind: dict[str, dict[str, tuple[str, dict[str, Any]]]],
    fact: ServiceFacts,
    deployment: dict[str, Any],
    secret_keys: set[str],
) -> list[str]:
    """A service with a database has a Job `<service>-migrate` that migrates it with a role of
    its own (another secret key than the Deployment's database URL), from the same image."""
    if not fact.pool_default:
        return []
    job = by_kind.get("Job", {}).get(f"{fact.name}-migrate")
    if job is None:
        return [f"no Job {fact.name}-migrate (its database's migrations, with their own role)"]
    file, doc = job
    where = f"{file}: Job {fact.name}-migrate"
    problems: list[str] = []
    [container] = doc["spec"]["template"]["spec"]["containers"]
    if container["command"] != ["python", "-m", MIGRATE_MODULE, fact.name]:
        problems.append(f"{where}: command must be python -m {MIGRATE_MODULE} {fact.name}")
    [service_container] = deployment["spec"]["template"]["spec"]["containers"]
    if container["image"] != service_container["image"]:
        problems.append(f"{where}: image {container['image']} is not the Deployment's")
    variable = f"{fact.prefix}DATABASE_URL"
    env = {item["name"]: item for item in container["env"]}
    ref = env.get(variable, {}).get("valueFrom", {}).get("secretKeyRef", {})
    service_env = {item["name"]: item for item in service_container.get("env", [])}
    service_ref = service_env.get(variable, {}).get("valueFrom", {}).get("secretKeyRef", {})
    if not ref:
        problems.append(f"{where}: no {variable} from a Secret")
    elif ref.get("key") not in secret_keys:
        problems.append(f"{where}: secret key {ref.get('key')} is not in secret.example.yaml")
    elif ref.get("key") == service_ref.get("key"):
        problems.append(
            f"{where}: {variable} is the service's own ({ref.get('key')}): migrate with a role "
            "that owns the tables, run the service with one that only reads and writes rows"
        )
    pods = doc["spec"]["template"]["metadata"].get("labels", {})
    if pods.get("app.kubernetes.io/name") == fact.name:
        problems.append(
            f"{where}: its pods are labelled app.kubernetes.io/name={fact.name}: the Service "
            "and PodDisruptionBudget of the service would select them"
        )
    return problems


def _check_kafka_auth(
    by_kind: dict[str, dict[str, tuple[str, dict[str, Any]]]],
    config: dict[str, str],
    facts: dict[str, ServiceFacts],
) -> list[str]:
    """A secured Kafka reached by every client: KEDA's scalers and the services' containers."""
    problems: list[str] = []
    secrets = {
        name: set(doc.get("stringData", {})) for name, (_, doc) in by_kind.get("Secret", {}).items()
    }
    values = {
        (name, key): value
        for name, (_, doc) in by_kind.get("Secret", {}).items()
        for key, value in doc.get("stringData", {}).items()
    }
    auths = by_kind.get("TriggerAuthentication", {})
    for name, (file, doc) in auths.items():
        for ref in doc["spec"]["secretTargetRef"]:
            if ref["key"] not in secrets.get(ref["name"], set()):
                problems.append(
                    f"{file}: TriggerAuthentication {name}: {ref['parameter']} reads "
                    f"{ref['name']}/{ref['key']}, not in secret.example.yaml"
                )
    protocol = config.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    needed = {"sasl", "username", "password"} if protocol.startswith("SASL_") else set()
    if protocol in ("SSL", "SASL_SSL"):
        needed.add("tls")
    # What KEDA must be told for the services' own mechanism and protocol.
    expected = {
        "sasl": KEDA_SASL.get(config.get("KAFKA_SASL_MECHANISM", "").upper(), "none"),
        "tls": "enable" if protocol in ("SSL", "SASL_SSL") else "disable",
    }
    for name, (file, doc) in auths.items():
        for ref in doc["spec"]["secretTargetRef"]:
            given_value = values.get((ref["name"], ref["key"]))
            wanted = expected.get(ref["parameter"])
            if wanted is not None and given_value is not None and given_value != wanted:
                problems.append(
                    f"{file}: TriggerAuthentication {name}: {ref['parameter']} is "
                    f"{given_value!r} in {ref['name']}, but the services use "
                    f"KAFKA_SECURITY_PROTOCOL={protocol} and KAFKA_SASL_MECHANISM="
                    f"{config.get('KAFKA_SASL_MECHANISM', '(unset)')}: KEDA needs {wanted!r}"
                )
    for name, (file, doc) in by_kind.get("ScaledObject", {}).items():
        for trigger in doc["spec"]["triggers"]:
            if trigger["type"] != "kafka":
                continue
            where = f"{file}: ScaledObject {name}: trigger on {trigger['metadata']['topic']}"
            ref = trigger.get("authenticationRef", {}).get("name")
            if ref is None:
                if protocol != "PLAINTEXT":
                    problems.append(
                        f"{where}: no authenticationRef, but the services reach Kafka with "
                        f"KAFKA_SECURITY_PROTOCOL={protocol} (the scaler could not connect)"
                    )
                continue
            if ref not in auths:
                problems.append(f"{where}: authenticationRef names no TriggerAuthentication {ref}")
                continue
            given = {item["parameter"] for item in auths[ref][1]["spec"]["secretTargetRef"]}
            for parameter in sorted(needed - given):
                problems.append(
                    f"{where}: TriggerAuthentication {ref} gives no `{parameter}`, which "
                    f"KAFKA_SECURITY_PROTOCOL={protocol} needs"
                )
    files = {name: config[name] for name in KAFKA_FILES if config.get(name)}
    for name, fact in facts.items():
        if fact.frontend or name not in by_kind.get("Deployment", {}):
            continue
        file, doc = by_kind["Deployment"][name]
        [container] = doc["spec"]["template"]["spec"]["containers"]
        mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", [])]
        for setting, path in files.items():
            if not any(path.startswith(mount) for mount in mounts):
                problems.append(
                    f"{file}: Deployment {name}: {setting} is {path}, in no volume mounted "
                    "in the container"
                )
    return problems


#: A value the committed manifests leave for the operator to fill in.
PLACEHOLDER = "CHANGE-ME"


def _check_production_values(
    file: str,
    doc: dict[str, Any],
    fact: ServiceFacts,
    config_data: dict[str, str],
    secret_values: dict[str, str],
) -> list[str]:
    """The values a pod gets (esim-config, its env, the example Secret) must pass the production
    check at start (`esim_core.production`), placeholders left for the operator aside: a
    setting missing from the manifests would keep its local default and stop the pod."""
    from esim_core.production import NamesLocalDefaults, shared_local_defaults
    from esim_core.settings import ServiceSettings

    if fact.model is None:
        return []
    given: dict[str, str] = {**config_data}
    for item in doc["spec"]["template"]["spec"]["containers"][0].get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        value = secret_values.get(ref.get("key", "")) if ref is not None else item.get("value")
        if value is not None:
            given[item["name"]] = value
    aliases = {
        str(choice).upper()
        for info in fact.model.model_fields.values()
        if isinstance(info.validation_alias, AliasChoices)
        for choice in info.validation_alias.choices
    }
    # By field name (the prefix off), or by alias for the unprefixed ones (REDIS_URL, ...).
    values = {
        variable if variable in aliases else variable[len(fact.prefix) :].lower(): value
        for variable, value in given.items()
        if variable in env_names(fact.model)
    }
    # The Kafka files are mounted from the Secret in the pod, not present here (that they are
    # mounted is `_check_kafka_auth`'s part): stand-ins let the settings load.
    with tempfile.TemporaryDirectory() as mounted:
        for variable in KAFKA_FILES:
            key = variable if variable in aliases else variable[len(fact.prefix) :].lower()
            if key in values:
                stand_in = Path(mounted) / variable
                stand_in.write_text("stand-in\n")
                values[key] = str(stand_in)
        try:
            settings = fact.model.model_validate(values)
        except ValueError as error:
            return [f"{file}: Deployment {fact.name}: its settings do not load: {error}"]
    if not isinstance(settings, NamesLocalDefaults):
        return [f"{file}: Deployment {fact.name}: its settings name no local defaults"]
    found = list(settings.local_defaults())
    if isinstance(settings, ServiceSettings):
        found += shared_local_defaults(settings)
    return [
        f"{file}: Deployment {fact.name}: {item.setting}: {item.problem} (production refuses "
        "to start on it)"
        for item in found
        if PLACEHOLDER not in given.get(item.setting, "")
    ]


#: The esim-config ConfigMap's annotations stating the PostgreSQL server's limits.
MAX_CONNECTIONS = "esim-platform/postgres-max-connections"
RESERVED_CONNECTIONS = "esim-platform/postgres-reserved-connections"


def _surge(deployment: dict[str, Any], replicas: int) -> int:
    """Pods a rolling update adds on top of `replicas` (its maxSurge; Kubernetes' 25 % unset)."""
    strategy = deployment["spec"].get("strategy", {})
    surge = strategy.get("rollingUpdate", {}).get("maxSurge", "25%")
    if strategy.get("type") == "Recreate":
        return 0
    if isinstance(surge, str) and surge.endswith("%"):
        return math.ceil(replicas * int(surge[:-1]) / 100)
    return int(surge)


def _check_connections(
    config: dict[str, Any], connections: dict[str, tuple[int, int]]
) -> list[str]:
    """The services' pools at their most replicas (a rollout's surge included) must fit the
    PostgreSQL server's `max_connections` less what it keeps for others, as the config states."""
    annotations = config["metadata"].get("annotations", {})
    try:
        limit = int(annotations[MAX_CONNECTIONS])
        reserved = int(annotations.get(RESERVED_CONNECTIONS, "0"))
    except (KeyError, ValueError):
        return [
            "base/kustomization.yaml: esim-config must state the PostgreSQL server's "
            f"max_connections in the annotation {MAX_CONNECTIONS} (and what it keeps for others in "
            f"{RESERVED_CONNECTIONS})"
        ]
    total = sum(pods * pool for pods, pool in connections.values())
    if total <= limit - reserved:
        return []
    terms = " + ".join(
        f"{name} {pods} x {pool}" for name, (pods, pool) in sorted(connections.items())
    )
    return [
        f"PostgreSQL connections at the most replicas (pods incl. a rollout's surge x pool size "
        f"+ overflow): {terms} = {total}, over the {limit - reserved} the server has "
        f"(max_connections {limit} less {reserved} reserved); lower <SERVICE>_DATABASE_POOL_SIZE "
        "or maxReplicaCount, or raise max_connections"
    ]


_QUANTITY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}


def memory_bytes(quantity: str) -> int:
    """Bytes of a Kubernetes memory quantity (`512Mi`, `1Gi`, `800M`, `536870912`)."""
    found = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G)?", str(quantity))
    if found is None:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(found.group(1)) * _QUANTITY.get(found.group(2) or "", 1)


def _check_password_memory(file: str, doc: dict[str, Any], env: dict[str, str | None]) -> list[str]:
    """Accounts' Argon2 hashes at once, at their memory each, must fit its memory limit."""
    from accounts.identity.passwords import PROCESS_RESERVE_BYTES, hashes_within
    from accounts.settings import AccountsSettings

    where = f"{file}: Deployment accounts"
    limit = doc["spec"]["template"]["spec"]["containers"][0]["resources"].get("limits", {})
    if "memory" not in limit:
        return [f"{where}: no memory limit (Argon2's concurrency is sized from it)"]
    limit_bytes = memory_bytes(limit["memory"])
    defaults = AccountsSettings.model_fields
    memory_kib = int(
        env.get("ACCOUNTS_PASSWORD_MEMORY_KIB") or defaults["password_memory_kib"].default
    )
    at_once = int(
        env.get("ACCOUNTS_PASSWORD_HASHES_AT_ONCE") or hashes_within(limit_bytes, memory_kib)
    )
    needed = PROCESS_RESERVE_BYTES + at_once * memory_kib * 1024
    if needed > limit_bytes:
        return [
            f"{where}: {at_once} Argon2 hashes of {memory_kib // 1024} MiB beside the process's "
            f"{PROCESS_RESERVE_BYTES >> 20} MiB need {needed >> 20} MiB, over the memory limit "
            f"{limit['memory']}: raise the limit or lower ACCOUNTS_PASSWORD_HASHES_AT_ONCE"
        ]
    return []


def _check_deployment(
    file: str,
    doc: dict[str, Any],
    fact: ServiceFacts,
    config_names: set[str],
    secret_keys: set[str],
) -> list[str]:
    where = f"{file}: Deployment {fact.name}"
    problems: list[str] = []
    spec = doc["spec"]
    labels = doc["metadata"].get("labels", {})
    template = spec["template"]
    pod = template["spec"]
    selector = spec["selector"]["matchLabels"]
    if labels.get("app.kubernetes.io/name") != fact.name or selector != {
        "app.kubernetes.io/name": fact.name
    }:
        problems.append(f"{where}: labels and selector must name {fact.name}")
    if any(template["metadata"].get("labels", {}).get(k) != v for k, v in selector.items()):
        problems.append(f"{where}: the pod template's labels do not match the selector")
    if pod["securityContext"].get("runAsNonRoot") is not True:
        problems.append(f"{where}: securityContext.runAsNonRoot must be true")
    [container] = pod["containers"]
    if container["name"] != fact.name:
        problems.append(f"{where}: the container must be named {fact.name}")
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    if ports.get("http") != fact.port:
        problems.append(f"{where}: port `http` must be {fact.port}, the service's port")
    env = {item["name"]: item for item in container.get("env", [])}
    for name, item in env.items():
        if name not in fact.env:
            problems.append(f"{where}: {name} is not a setting of {fact.name}")
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None and ref.get("key") not in secret_keys:
            problems.append(f"{where}: secret key {ref.get('key')} is not in secret.example.yaml")
    if env.get(f"{fact.prefix}HTTP_PORT", {}).get("value") != str(fact.port):
        problems.append(f"{where}: {fact.prefix}HTTP_PORT must be {fact.port}")
    if env.get(f"{fact.prefix}HTTP_HOST", {}).get("value") != "0.0.0.0":
        problems.append(
            f"{where}: {fact.prefix}HTTP_HOST must be 0.0.0.0 (else no probe reaches it)"
        )
    if not fact.frontend and "OPERATOR_TOKEN" not in env:
        problems.append(f"{where}: no OPERATOR_TOKEN (the service would not start)")
    for source in container.get("envFrom", []):
        name = source.get("configMapRef", {}).get("name")
        if name is not None and name not in config_names:
            problems.append(f"{where}: envFrom names the missing config map {name}")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if probe not in container:
            continue
        get = container[probe]["httpGet"]
        if get["path"] not in HEALTH_PATHS:
            problems.append(f"{where}: {probe} asks {get['path']}, not a health endpoint")
        if get["port"] not in ("http", fact.port):
            problems.append(f"{where}: {probe} asks port {get['port']}")
    if container["readinessProbe"]["httpGet"]["path"] != "/health/ready":
        problems.append(f"{where}: readinessProbe must ask /health/ready")
    annotations = template["metadata"].get("annotations", {})
    if (
        annotations.get("prometheus.io/port") != str(fact.port)
        or annotations.get("prometheus.io/path") != "/metrics"
    ):
        problems.append(f"{where}: prometheus.io annotations must point at {fact.port}/metrics")
    return problems


def _check_service(
    file: str, doc: dict[str, Any], deployment: dict[str, Any], fact: ServiceFacts
) -> list[str]:
    where = f"{file}: Service {fact.name}"
    problems: list[str] = []
    if doc["spec"]["selector"] != deployment["spec"]["selector"]["matchLabels"]:
        problems.append(f"{where}: its selector does not select the Deployment's pods")
    for port in doc["spec"]["ports"]:
        if port.get("targetPort") not in ("http", fact.port) or port.get("port") != fact.port:
            problems.append(f"{where}: port must be {fact.port} to the container's `http`")
    return problems


#: Fewest fetch batches a kafka trigger's lagThreshold spans: under two, a single batch in
#: flight reads as "behind" and adds replicas that get nothing to do.
LAG_BATCHES = 2
#: Fewest of a due-work loop's batches a backlog trigger's threshold spans, for the same reason.
BACKLOG_BATCHES = 2
#: Shortest scale-down stabilization window: below, replicas follow every dip of a backlog.
SCALE_DOWN_WINDOW_S = 60
#: The services whose HTTP API does CPU-bound work (Argon2): a cpu trigger, two replicas at
#: least and a PodDisruptionBudget.
API_SERVICES = ("accounts",)


def backlog_works(query: str, service: str) -> set[str]:
    """The `work` labels of `esim_due_work_backlog{service=<service>}` a PromQL query selects.

    Raises:
        ValueError: not PromQL, or it reads the backlog of another service or of no one work.
    """
    import promql_parser

    works: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name == "esim_due_work_backlog":
            labels = {
                matcher.name: matcher.value
                for matcher in node.matchers.matchers
                if matcher.op == promql_parser.MatchOp.Equal
            }
            if labels.get("service") != service:
                raise ValueError(f'it must select service="{service}", its own backlog')
            if "work" not in labels:
                raise ValueError('it must name one loop: work="<the loop>"')
            works.add(labels["work"])
        return True

    promql_parser.walk(promql_parser.parse(query), visit)
    return works


def _check_scaled(
    file: str,
    doc: dict[str, Any],
    fact: ServiceFacts,
    partitions: dict[str, int],
    consumer_batch: int,
) -> list[str]:
    """A ScaledObject against the service: what it consumes (less the topics it holds on
    purpose), its due-work loops, the consumers' offset policy, thresholds of several batches,
    replicas within the partitions and a scale-down that does not flap."""
    from esim_core.messaging.consumer import AUTO_OFFSET_RESET

    where = f"{file}: ScaledObject {fact.name}"
    problems: list[str] = []
    spec = doc["spec"]
    if spec["scaleTargetRef"].get("name") != fact.name:
        problems.append(f"{where}: must scale the Deployment {fact.name}")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for trigger in spec["triggers"]:
        by_type.setdefault(trigger["type"], []).append(trigger["metadata"])
    kafka = by_type.get("kafka", [])
    if any(trigger["consumerGroup"] != fact.name for trigger in kafka):
        problems.append(f"{where}: consumerGroup must be {fact.name}, the service's group")
    topics = sorted(trigger["topic"] for trigger in kafka)
    for topic in sorted(set(topics) & fact.held_topics):
        problems.append(
            f"{where}: a kafka trigger on {topic}, which {fact.name} holds back on purpose at its "
            "intake limit: its lag grows by design and replicas cannot help; drop the trigger"
        )
    wanted = sorted(set(fact.topics) - fact.held_topics)
    if sorted(set(topics) - fact.held_topics) != wanted:
        problems.append(f"{where}: triggers on {topics}, but {fact.name} consumes {wanted}")
    for trigger in kafka:
        policy = trigger["offsetResetPolicy"]
        if policy != AUTO_OFFSET_RESET:
            problems.append(
                f"{where}: offsetResetPolicy {policy} on {trigger['topic']}, but the consumers "
                f"start at {AUTO_OFFSET_RESET} (esim_core.messaging.consumer): KEDA would "
                "count another lag than theirs"
            )
        if float(trigger["lagThreshold"]) < LAG_BATCHES * consumer_batch:
            problems.append(
                f"{where}: lagThreshold {trigger['lagThreshold']} on {trigger['topic']} is under "
                f"{LAG_BATCHES} fetch batches ({fact.prefix}CONSUMER_BATCH {consumer_batch}): "
                "one batch in flight would add replicas"
            )
    problems += _check_backlog_triggers(where, by_type.get("prometheus", []), fact)
    if fact.name in API_SERVICES and not by_type.get("cpu"):
        problems.append(f"{where}: no cpu trigger, but its HTTP API (Argon2 logins) is CPU-bound")
    fewest = min(partitions.items(), key=lambda item: (item[1], item[0]), default=None)
    if fewest is not None and spec["maxReplicaCount"] > fewest[1]:
        problems.append(
            f"{where}: maxReplicaCount {spec['maxReplicaCount']} exceeds the {fewest[1]} "
            f"partitions declared for {fewest[0]}, which it consumes (idle replicas); raise "
            "PARTITIONS in esim_core/messaging/topics.py (then `esimctl topics apply`) or lower it"
        )
    minimum = spec.get("minReplicaCount", 0)
    if minimum > spec["maxReplicaCount"]:
        problems.append(f"{where}: minReplicaCount is above maxReplicaCount")
    if "cooldownPeriod" in spec and minimum >= 1:
        problems.append(
            f"{where}: cooldownPeriod does nothing with minReplicaCount {minimum} (it only "
            "delays scaling to zero); set the HPA's scaleDown behaviour instead"
        )
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    window = (behavior or {}).get("scaleDown", {}).get("stabilizationWindowSeconds")
    if window is None or window < SCALE_DOWN_WINDOW_S:
        problems.append(
            f"{where}: advanced.horizontalPodAutoscalerConfig.behavior.scaleDown."
            f"stabilizationWindowSeconds must be at least {SCALE_DOWN_WINDOW_S} "
            f"(is {window}): replicas would follow every dip of the backlog"
        )
    return problems


def _check_backlog_triggers(
    where: str, triggers: list[dict[str, Any]], fact: ServiceFacts
) -> list[str]:
    """One prometheus trigger per due-work loop of the service, on its own backlog."""
    problems: list[str] = []
    covered: set[str] = set()
    for trigger in triggers:
        try:
            works = backlog_works(trigger["query"], fact.name)
        except ValueError as error:
            problems.append(f"{where}: prometheus query {trigger['query']!r}: {error}")
            continue
        if not works:
            problems.append(
                f"{where}: prometheus query {trigger['query']!r} reads no esim_due_work_backlog"
            )
        for work in sorted(works - set(fact.works)):
            problems.append(
                f"{where}: prometheus query on work {work!r}, but {fact.name}'s due-work loops "
                f"are {sorted(fact.works)}"
            )
        for work in sorted(works & set(fact.works)):
            if float(trigger["threshold"]) < BACKLOG_BATCHES * fact.works[work]:
                problems.append(
                    f"{where}: threshold {trigger['threshold']} on the {work!r} backlog is "
                    f"under {BACKLOG_BATCHES} of its batches ({fact.works[work]} rows at once)"
                )
        covered |= works
    for work in sorted(set(fact.works) - covered):
        problems.append(
            f"{where}: no prometheus trigger on esim_due_work_backlog{{service="
            f'"{fact.name}",work="{work}"}}: its work waits in the database, not in Kafka, '
            "so the group's lag never shows it"
        )
    return problems


def _check_disruption(
    by_kind: dict[str, dict[str, tuple[str, dict[str, Any]]]], fact: ServiceFacts
) -> list[str]:
    """An API service keeps two replicas at least and a PodDisruptionBudget over its pods."""
    problems: list[str] = []
    scaled = by_kind.get("ScaledObject", {}).get(fact.name)
    deployment = by_kind.get("Deployment", {}).get(fact.name)
    if scaled is None or deployment is None:
        return []
    where = f"{scaled[0]}: ScaledObject {fact.name}"
    if scaled[1]["spec"].get("minReplicaCount", 0) < 2:
        problems.append(
            f"{where}: minReplicaCount must be at least 2: one pod is an outage on every "
            "restart, rollout or node drain"
        )
    pods = deployment[1]["spec"]["template"]["metadata"].get("labels", {})
    budgets = [
        doc
        for _, doc in by_kind.get("PodDisruptionBudget", {}).values()
        if all(
            pods.get(key) == value for key, value in doc["spec"]["selector"]["matchLabels"].items()
        )
    ]
    if not budgets:
        problems.append(
            f"no PodDisruptionBudget selects the pods of {fact.name} ({pods}): a node drain "
            "may take every replica at once"
        )
    for budget in budgets:
        if "minAvailable" not in budget["spec"] and "maxUnavailable" not in budget["spec"]:
            problems.append(
                f"PodDisruptionBudget {budget['metadata']['name']}: neither minAvailable nor "
                "maxUnavailable"
            )
    return problems


def main() -> int:
    """Run every check; print the problems."""
    facts = service_facts()
    problems = check_dockerfile(DOCKERFILE, workspace_members())
    problems += check_compose(COMPOSE, facts)
    problems += check_k8s(K8S, facts)
    for problem in problems:
        print(f"check_deploy: {problem}", file=sys.stderr)
    if not problems:
        print("check_deploy: Dockerfile, compose.yaml and k8s/ ok")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
