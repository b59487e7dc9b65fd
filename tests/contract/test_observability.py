"""The alert rules and the dashboard in deploy/ parse and name only metrics the services expose."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import check_observability as check


def test_the_committed_rules_and_dashboards_pass() -> None:
    assert check.main() == 0


def test_metric_names_are_found_inside_functions_ranges_and_operators() -> None:
    expr = 'sum by (t) (rate(a_total{x="1"}[5m])) / on () max(b) > 0 and '
    expr += "histogram_quantile(0.9, c_bucket)"
    assert check.metric_names_in(expr) == {"a_total", "b", "c_bucket"}


def test_the_catalogue_holds_what_the_services_register() -> None:
    known = check.metric_catalogue()
    assert {
        "esim_events_consumed_total",
        "esim_event_handling_seconds_bucket",
        "esim_sagas",
        "esim_consumer_lag",
        "esim_outside_call_seconds_count",
    } <= known
    assert "esim_events_consumed" not in known  # a counter is scraped with its _total


def test_a_rule_with_an_unknown_metric_bad_promql_or_no_severity_fails(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        """
groups:
  - name: g
    rules:
      - alert: Unknown
        expr: max(esim_no_such_metric) > 0
        labels: {severity: page}
        annotations: {summary: s, description: d}
      - alert: Broken
        expr: sum(rate(esim_dead_letters_total[5m]) > 0
        labels: {severity: page}
        annotations: {summary: s, description: d}
      - alert: noSeverity
        expr: max(esim_sagas) > 0
        for: ten minutes
        annotations: {summary: s}
"""
    )
    problems = check.check_rules(rules, check.metric_catalogue())
    text = "\n".join(problems)
    assert "Unknown: no service exposes esim_no_such_metric" in text
    assert "Broken: not PromQL" in text
    assert "noSeverity: `alert` must be CamelCase" in text
    assert "noSeverity: `for` is not a duration" in text
    assert "noSeverity: labels.severity" in text
    assert "noSeverity: annotations.description is missing" in text


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda b: b["panels"].append(dict(b["panels"][0])), "repeated id"),
        (
            lambda b: b["panels"][0]["targets"][0].update(expr="max(nope)"),
            "no service exposes nope",
        ),
        (lambda b: b["templating"].update(list=[]), "no `datasource` template variable"),
        (lambda b: b["panels"][1]["gridPos"].update(x=20), "within 24 columns"),
    ],
)
def test_a_broken_dashboard_fails(tmp_path: Path, change: object, expected: str) -> None:
    board = json.loads(check.DASHBOARDS[0].read_text())
    change(board)  # type: ignore[operator]
    path = tmp_path / "board.json"
    path.write_text(json.dumps(board))
    assert any(
        expected in problem for problem in check.check_dashboard(path, check.metric_catalogue())
    )


def test_a_rule_grouping_by_job_fails(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        """
groups:
  - name: g
    rules:
      - alert: RelayFailing
        expr: sum by (job) (increase(esim_outbox_relay_errors_total[10m])) > 0
        labels: {severity: ticket}
        annotations: {summary: s, description: d}
"""
    )
    problems = check.check_rules(rules, check.metric_catalogue())
    assert any("RelayFailing: groups or matches on `job`" in p for p in problems), problems


def test_every_deployed_service_has_an_alert_for_no_healthy_pod(tmp_path: Path) -> None:
    assert check.deployed_services() == {"accounts", "billing", "provisioning", "notifier", "web"}
    assert check.check_availability(check.RULES, check.deployed_services()) == []
    text = check.RULES[0].read_text()
    dropped = 'absent(up{service="notifier"} == 1)'
    assert dropped in text
    rules = tmp_path / "rules.yaml"
    rules.write_text(text.replace(dropped, 'absent(up{service="notifier"})'))
    problems = check.check_availability([rules], check.deployed_services())
    assert problems == [
        'no alert fires when notifier has no healthy pod: add one on absent(up{service="notifier"}'
        " == 1)"
    ]
