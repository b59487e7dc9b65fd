"""The alert rules and the dashboard in deploy/ parse and name only metrics the services expose."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import check_observability as check


def test_the_committed_rules_and_dashboards_pass() -> None:
    """All of `make lint`'s observability check, promtool's run of the alerts' unit tests
    included (some seconds: the tests simulate hours of samples, a day for one alert)."""
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


# promtool (make lint): each planted mistake fails with Prometheus' own message ------------------


#: The alerts' unit tests (all but the day-long ones).
ALERT_TESTS = check.ROOT / "deploy/prometheus/tests/alerts_test.yaml"


@pytest.fixture(scope="module")
def promtool() -> Path:
    """The pinned promtool `make lint` installs (scripts/ensure-promtool.sh builds it once)."""
    return check.promtool()


def planted(tmp_path: Path, source: Path, old: str, new: str, name: str | None = None) -> Path:
    """A copy of `source` in tmp_path with `old` (which must be there) made `new`."""
    text = source.read_text()
    assert old in text, old
    target = tmp_path / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text.replace(old, new, 1))
    return target


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # Bad PromQL: promtool names the rule and where its parser stopped.
        (
            "expr: max(esim_sagas_stuck) > 0",
            "expr: max(esim_sagas_stuck) >",
            '"EsimSagasStuck": could not parse expression: 1:24: parse error: unexpected end of '
            "input",
        ),
        (
            "expr: max(esim_payments_unknown) > 0",
            "expr: rate(esim_payments_unknown) > 0",
            '"EsimPaymentsUnknown": could not parse expression: 1:6: parse error: expected type '
            'range vector in call to function "rate", got instant vector',
        ),
        # An annotation's template Prometheus could not expand (the Python checks never read it).
        (
            'summary: "{{ $value }} renewal saga(s) stuck"',
            'summary: "{{ $value } renewal saga(s) stuck"',
            'annotation "summary": template: __alert_EsimSagasStuck:1: unexpected "}" in operand',
        ),
    ],
)
def test_promtool_check_rules_fails_a_planted_mistake(
    tmp_path: Path, promtool: Path, old: str, new: str, expected: str
) -> None:
    rules = planted(tmp_path, check.RULES[0], old, new)
    [problem] = check.promtool_check_rules(promtool, [rules])
    assert f"{rules.name}: promtool check rules failed:" in problem
    assert expected in problem, problem


def test_promtool_test_rules_fails_a_broken_expectation(tmp_path: Path, promtool: Path) -> None:
    """A unit test expecting another annotation than the alert gives: promtool says what it
    expected and what it got."""
    # The tests name their rules as ../alerts.yaml: the copy keeps that layout.
    planted(tmp_path, check.RULES[0], "", "", name=check.RULES[0].name)
    tests = planted(
        tmp_path,
        ALERT_TESTS,
        'summary: "2 renewal saga(s) stuck"',
        'summary: "3 renewal saga(s) stuck"',
        name="tests/alerts_test.yaml",
    )
    [problem] = check.promtool_test_rules(promtool, [tests], run="stuck sagas")
    assert "promtool test rules failed" in problem
    assert "alertname: EsimSagasStuck, time: 16m" in problem, problem
    assert 'summary="3 renewal saga(s) stuck"' in problem  # expected
    assert 'summary="2 renewal saga(s) stuck"' in problem  # got


def test_promtool_test_rules_fails_an_alert_that_no_longer_fires(
    tmp_path: Path, promtool: Path
) -> None:
    """The dead-letter alert as it was (increase() alone) misses a pod's first dead letter: its
    unit test fails on the rule, not on the test."""
    planted(
        tmp_path,
        check.RULES[0],
        "(increase(esim_dead_letters_total[15m]) > 0)\n"
        "            or (esim_dead_letters_total unless esim_dead_letters_total offset 15m)",
        "increase(esim_dead_letters_total[15m])",
    )
    tests = planted(tmp_path, ALERT_TESTS, "", "", name="tests/alerts_test.yaml")
    [problem] = check.promtool_test_rules(promtool, [tests], run="first dead letter")
    assert "alertname: EsimDeadLettersGrowing, time: 25m" in problem, problem


def test_an_alert_without_a_unit_test_firing_and_silent_fails(tmp_path: Path) -> None:
    rules = planted(
        tmp_path,
        check.RULES[0],
        "      - alert: EsimWebDown\n",
        "      - alert: EsimWebsiteDown\n",
    )
    assert check.untested_alerts([rules], check.RULE_TESTS) == [
        "EsimWebsiteDown: no unit test in deploy/prometheus/tests/ where it fires or where it "
        "stays silent (promtool test rules)"
    ]
    assert check.check_with_promtool(check.RULES, []) == [
        "deploy/prometheus/tests/*.yaml is missing: no unit test of the alert rules"
    ]
