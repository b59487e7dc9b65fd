"""Offline check of the alert rules and dashboards in deploy/ (`make lint`; promtool-like).

Every rule and panel expression must parse as PromQL (promql-parser, the Rust parser's Python
binding) and name only metrics the services expose: the catalogue is what the services'
modules register with prometheus_client, the same registry `/metrics` serves (an integration
test also checks the names against the running services). Rules need a CamelCase `alert`, a
duration `for`, a `severity` of page or ticket and a summary and description, and group by
`service`, never `job`; each service deployed in deploy/k8s needs an alert on having no healthy
pod (`absent(up{service="<name>"} == 1)`); dashboards need
a uid, a title, unique panel ids and the `${datasource}` variable on every query.

Then Prometheus' own promtool (pinned, built into .tools/ by scripts/ensure-promtool.sh):
`promtool check rules` on every rule file (what Prometheus would refuse to load: PromQL its own
parser rejects, bad templates, duplicate rules) and `promtool test rules` on the unit tests in
deploy/prometheus/tests/, which must test every alert both firing (its labels and annotations)
and silent.

    python scripts/check_observability.py        # exit status 1 and one line per problem
"""

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
RULES = sorted((ROOT / "deploy/prometheus").glob("*.yaml"))
#: promtool's unit tests of the rules (`promtool test rules`), beside them in tests/.
RULE_TESTS = sorted((ROOT / "deploy/prometheus/tests").glob("*.yaml"))
DASHBOARDS = sorted((ROOT / "deploy/grafana").glob("*.json"))
#: The modules that define the services' metrics (importing them registers the metrics).
METRIC_MODULES = (
    "esim_core.observability.metrics",
    "esim_core.observability.telemetry",
    "accounts.telemetry",
    "billing.metrics",
    "provisioning.activating",
    "notifier.sender",
)
#: Series Prometheus itself adds to every target.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_ALERT_NAME = re.compile(r"^[A-Z][A-Za-z0-9]+$")
#: Grouping or matching on `job`: on Kubernetes one scrape job covers every pod of every service.
_BY_JOB = re.compile(r"\b(by|without|on|ignoring)\s*\([^)]*\bjob\b")
#: An alert on a service having no healthy pod: `absent(up{service="<name>"} == 1)`.
_ABSENT_UP = re.compile(r"absent\(\s*up\s*\{[^}]*\bservice\s*=\s*\"([\w-]+)\"[^}]*\}\s*==\s*1\s*\)")
K8S = ROOT / "deploy/k8s/base"


def metric_catalogue() -> set[str]:
    """Every series name the services' metrics produce (`_total`, `_bucket`, ... included)."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    return series_names(REGISTRY.collect())


def series_names(families: Iterable[Any]) -> set[str]:
    """The series names of metric families (from a registry or a parsed `/metrics` text)."""
    names = set(PROMETHEUS_SERIES)
    for family in families:
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def exposed_names(metrics_text: str) -> set[str]:
    """The series names a `/metrics` answer declares (with or without samples yet)."""
    return series_names(text_string_to_metric_families(metrics_text))


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Raises:
        ValueError: it is not valid PromQL (the parser's message).
    """
    tree = promql_parser.parse(expr)
    found: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.add(node.name)
        return True

    promql_parser.walk(tree, visit)
    return found


def check_expr(where: str, expr: Any, known: set[str]) -> list[str]:
    """Problems with one expression: unparseable, or a metric no service exposes."""
    if not isinstance(expr, str) or not expr.strip():
        return [f"{where}: no expression"]
    try:
        names = metric_names_in(expr)
    except ValueError as error:
        return [f"{where}: not PromQL ({error}): {expr}"]
    if not names:
        return [f"{where}: selects no metric: {expr}"]
    return [f"{where}: no service exposes {name}" for name in sorted(names - known)]


def check_rules(path: Path, known: set[str]) -> list[str]:
    """Problems with a Prometheus rule file."""
    problems: list[str] = []
    document = yaml.safe_load(path.read_text())
    groups = document.get("groups") if isinstance(document, dict) else None
    if not isinstance(groups, list) or not groups:
        return [f"{path.name}: no `groups`"]
    seen: set[str] = set()
    for group in groups:
        name = group.get("name")
        if not name or name in seen:
            problems.append(f"{path.name}: a group without a name, or a repeated one ({name})")
        seen.add(name)
        for rule in group.get("rules") or [f"{path.name}: group {name} has no rules"]:
            if not isinstance(rule, dict):
                problems.append(str(rule))
                continue
            alert = str(rule.get("alert", ""))
            where = f"{path.name}: {alert or rule.get('record', '?')}"
            if not _ALERT_NAME.match(alert):
                problems.append(f"{where}: `alert` must be CamelCase")
            if not _DURATION.match(str(rule.get("for", "0m"))):
                problems.append(f"{where}: `for` is not a duration: {rule.get('for')}")
            if rule.get("labels", {}).get("severity") not in {"page", "ticket"}:
                problems.append(f"{where}: labels.severity must be page or ticket")
            annotations = rule.get("annotations", {})
            problems += [
                f"{where}: annotations.{key} is missing"
                for key in ("summary", "description")
                if not annotations.get(key)
            ]
            unknown = set(rule) - {"alert", "expr", "for", "labels", "annotations"}
            if unknown:
                problems.append(f"{where}: unknown keys {sorted(unknown)}")
            problems += check_expr(where, rule.get("expr"), known)
            if _BY_JOB.search(str(rule.get("expr", ""))):
                problems.append(
                    f"{where}: groups or matches on `job`, one scrape job for every pod on "
                    "Kubernetes: use `service`"
                )
    return problems


def deployed_services(folder: Path = K8S) -> set[str]:
    """The services the cluster runs: the Deployments of deploy/k8s/base (every overlay's)."""
    return {
        document["metadata"]["name"]
        for path in sorted(folder.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if isinstance(document, dict) and document.get("kind") == "Deployment"
    }


def check_availability(paths: Iterable[Path], services: set[str]) -> list[str]:
    """Each service needs an alert that fires when it has no healthy pod: with none, every
    other rule sees no series and stays silent."""
    covered: set[str] = set()
    for path in paths:
        document = yaml.safe_load(path.read_text())
        for group in (document or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                if isinstance(rule, dict):
                    covered.update(_ABSENT_UP.findall(str(rule.get("expr", ""))))
    return [
        f"no alert fires when {service} has no healthy pod: add one on "
        f'absent(up{{service="{service}"}} == 1)'
        for service in sorted(services - covered)
    ]


def _panels(panels: Iterable[Any]) -> Iterable[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows hold panels of their own


def check_dashboard(path: Path, known: set[str]) -> list[str]:
    """Problems with a Grafana dashboard JSON."""
    try:
        board = json.loads(path.read_text())
    except ValueError as error:
        return [f"{path.name}: not JSON ({error})"]
    problems = [
        f"{path.name}: `{key}` is missing"
        for key in ("uid", "title", "schemaVersion", "panels")
        if not board.get(key)
    ]
    variables = {v.get("name") for v in board.get("templating", {}).get("list", [])}
    if "datasource" not in variables:
        problems.append(f"{path.name}: no `datasource` template variable")
    ids: set[object] = set()
    for panel in _panels(board.get("panels", [])):
        where = f"{path.name}: panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("id") in ids:
            problems.append(f"{where}: repeated id")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")) or (
            grid.get("x", 0) + grid.get("w", 0) > 24
        ):
            problems.append(f"{where}: gridPos must be whole numbers within 24 columns")
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        for target in targets:
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{where}: target {target.get('refId')} not on ${{datasource}}")
            problems += check_expr(f"{where} {target.get('refId')}", target.get("expr"), known)
    return problems


def used_names() -> set[str]:
    """Every metric name the committed rules and dashboards select."""
    used: set[str] = set()
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                used |= metric_names_in(rule["expr"])
    for path in DASHBOARDS:
        for panel in _panels(json.loads(path.read_text())["panels"]):
            for target in panel.get("targets", []):
                used |= metric_names_in(target["expr"])
    return used


class ToolMissing(RuntimeError):
    """promtool could not be installed (scripts/ensure-promtool.sh failed)."""


def promtool() -> Path:
    """Prometheus' promtool, pinned, installed into .tools/ by scripts/ensure-promtool.sh.

    Raises:
        ToolMissing: the script failed (no Go, no network to the Go module proxy, ...).
    """
    done = subprocess.run(  # noqa: S603 (the project's own script)
        [str(ROOT / "scripts/ensure-promtool.sh")], capture_output=True, text=True, check=False
    )
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    if done.returncode != 0 or "promtool" not in found:
        raise ToolMissing(
            f"scripts/ensure-promtool.sh failed (exit status {done.returncode}): "
            f"{done.stderr.strip()}"
        )
    return Path(found["promtool"])


def _shown(path: Path) -> str:
    """A path as messages name it: from the repository's root where it is inside."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _run_promtool(tool: Path, *arguments: str) -> tuple[int, str]:
    """promtool's exit status and what it printed (both streams, blank lines dropped)."""
    done = subprocess.run(  # noqa: S603 (a pinned tool, our own files)
        [str(tool), *arguments], capture_output=True, text=True, check=False, cwd=ROOT
    )
    text = "\n".join(line for line in (done.stdout + done.stderr).splitlines() if line.strip())
    return done.returncode, text


def promtool_check_rules(tool: Path, paths: Iterable[Path]) -> list[str]:
    """`promtool check rules --lint-fatal`: what Prometheus would refuse to load, and duplicate
    rules; one problem per failing file with promtool's own message."""
    problems: list[str] = []
    for path in paths:
        status, text = _run_promtool(tool, "check", "rules", "--lint-fatal", _shown(path))
        if status != 0:
            problems.append(f"{path.name}: promtool check rules failed:\n{text}")
    return problems


def promtool_test_rules(tool: Path, paths: Iterable[Path], run: str | None = None) -> list[str]:
    """`promtool test rules` on each unit-test file (only the test groups whose names match the
    regular expression `run`, if given): one problem per failing file, with what promtool
    expected and got."""
    problems: list[str] = []
    selected = ["--run", run] if run else []
    for path in paths:
        status, text = _run_promtool(tool, "test", "rules", *selected, _shown(path))
        if status != 0:
            problems.append(f"{_shown(path)}: promtool test rules failed:\n{text}")
    return problems


def untested_alerts(rules: Iterable[Path], tests: Iterable[Path]) -> list[str]:
    """Every alert of the rule files needs a unit test where it fires (with its labels and
    annotations) and one where it stays silent (`exp_alerts: []`)."""
    alerts = [
        str(rule["alert"])
        for path in rules
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups") or []
        for rule in group.get("rules") or []
        if isinstance(rule, dict) and "alert" in rule
    ]
    firing: set[str] = set()
    silent: set[str] = set()
    for path in tests:
        for case in (yaml.safe_load(path.read_text()) or {}).get("tests") or []:
            for check in case.get("alert_rule_test") or []:
                name = str(check.get("alertname"))
                (firing if check.get("exp_alerts") else silent).add(name)
    problems: list[str] = []
    for alert in alerts:
        missing = [
            what
            for what, tested in (("fires", firing), ("stays silent", silent))
            if alert not in tested
        ]
        if missing:
            problems.append(
                f"{alert}: no unit test in deploy/prometheus/tests/ where it "
                f"{' or where it '.join(missing)} (promtool test rules)"
            )
    return problems


def check_with_promtool(rules: list[Path], tests: list[Path]) -> list[str]:
    """promtool's checks of the rule files and its run of their unit tests."""
    if not tests:
        return ["deploy/prometheus/tests/*.yaml is missing: no unit test of the alert rules"]
    try:
        tool = promtool()
    except ToolMissing as error:
        return [str(error)]
    return (
        promtool_check_rules(tool, rules)
        + untested_alerts(rules, tests)
        + promtool_test_rules(tool, tests)
    )


def main() -> int:
    """Check every rule file and dashboard; print the problems."""
    known = metric_catalogue()
    problems: list[str] = []
    if not RULES or not DASHBOARDS:
        problems.append("deploy/prometheus/*.yaml or deploy/grafana/*.json is missing")
    for path in RULES:
        problems += check_rules(path, known)
    problems += check_availability(RULES, deployed_services())
    for path in DASHBOARDS:
        problems += check_dashboard(path, known)
    problems += check_with_promtool(RULES, RULE_TESTS)
    for problem in problems:
        print(f"check_observability: {problem}", file=sys.stderr)
    if not problems:
        print(
            f"check_observability: {len(RULES)} rule file(s) (promtool check rules, "
            f"{len(RULE_TESTS)} unit-test file(s)), {len(DASHBOARDS)} dashboard(s) ok"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
