"""The bench's arithmetic and reports, without a broker: what a reader of its table relies on."""

import json
import math
import os
from pathlib import Path
from typing import cast

import pytest

from tests.bench.metrics import difference
from tests.bench.metrics import parse as parse_metrics
from tests.bench.procstat import parse_stat, tree
from tests.bench.profile import summary, top_functions
from tests.bench.report import (
    HOP_NAMES,
    PhaseResult,
    Quantile,
    history_line,
    quantiles,
    ratios,
    render_table,
)
from tests.bench.run import Config, hop_latencies
from tests.support.load import LatencyStats, Outcome, Outcomes, Sent, payment_of, percentile


def phase(
    name: str, kind: str, sent: int, done_in_window: int, p50: float, **extra: object
) -> PhaseResult:
    latency = quantiles([p50] * done_in_window, [])
    values: dict[str, object] = {
        "name": name,
        "kind": kind,
        "via": "relay" if kind == "baseline" else "kafka",
        "rate": 50.0,
        "seconds": 10.0,
        "sent": sent,
        "load_window_s": 10.0,
        "completed_in_window": done_in_window,
        "activations_in_window": done_in_window,
        "completed": done_in_window,
        "other_outcomes": {},
        "not_completed": sent - done_in_window,
        "drain_s": 5.0,
        "latency": latency,
        "latency_done": LatencyStats.of([p50]).as_dict(),
        "resources": {"accounts": {"cpu_s": 4.0, "peak_rss_mb": 130.0}, "other": {"cpu_s": 1.5}},
    }
    values.update(extra)
    return PhaseResult(**values)  # type: ignore[arg-type]


def test_percentiles_interpolate_between_ranks() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 50) == pytest.approx(50.5)
    assert percentile(samples, 99) == pytest.approx(99.01)
    assert percentile(samples, 100) == 100.0
    assert percentile([3.0], 95) == 3.0
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile(samples, 101)


def test_latency_stats_summarize_and_have_none_for_no_samples() -> None:
    stats = LatencyStats.of([0.3, 0.1, 0.2])
    assert (stats.count, stats.p50, stats.max) == (3, 0.2, 0.3)
    assert stats.mean == pytest.approx(0.2)
    empty = LatencyStats.of([])
    assert empty.count == 0 and math.isnan(empty.p99)
    assert empty.as_dict() == {
        "count": 0,
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
        "mean": None,
    }


def test_quantiles_are_exact_while_every_renewal_at_or_below_the_rank_finished() -> None:
    found = quantiles([1.0, 2.0, 3.0, 4.0], [])
    assert found["p50"] == Quantile(2.0, False)
    assert found["max"] == Quantile(4.0, False)


def test_unfinished_renewals_make_the_quantiles_above_them_lower_bounds() -> None:
    # 8 finished within 9 s; 2 still waiting after 6.5 s: the median (5th of 10, 6 s) is
    # exact, p95 is at least 9 s (either waiting one may end up above it).
    found = quantiles([1.0, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0], [6.5, 6.5])
    assert found["p50"] == Quantile(6.0, False)
    assert found["p95"].lower_bound and found["p95"].value == 9.0
    assert found["p95"].text() == ">9.000"
    # Nothing finished: every quantile is a bound.
    waiting = quantiles([], [12.0, 13.0])
    assert all(q.lower_bound for q in waiting.values())
    assert waiting["p50"].text() == ">12.0"


def test_ratios_compare_each_platform_phase_with_its_baseline() -> None:
    phases = [
        phase("baseline-50", "baseline", 500, 500, 0.02),
        phase("kafka-50", "platform", 500, 100, 8.0),
        phase("http-50", "platform", 500, 50, 10.0),
        # Nothing of its own done in its window, but 30/s of an earlier backlog: throughput 30/s.
        phase("http-60", "platform", 500, 0, 10.0, activations_in_window=300),
        phase("baseline-60", "baseline", 600, 600, 0.02),
    ]
    found = ratios(phases)
    assert found["http-60"]["throughput"] == pytest.approx(0.5)
    assert found["kafka-50"]["baseline"] == "baseline-50"
    assert found["kafka-50"]["throughput"] == pytest.approx(0.2)
    assert found["kafka-50"]["p50"] == pytest.approx(400.0)
    assert found["http-50"]["throughput"] == pytest.approx(0.1)
    assert "baseline-50" not in found


def test_a_platform_phase_without_its_baseline_has_no_ratio() -> None:
    assert ratios([phase("kafka-flat", "platform", 100, 10, 3.0)]) == {}


def test_the_table_shows_each_phase_its_ratios_and_what_each_process_used() -> None:
    phases = [
        phase("baseline-50", "baseline", 500, 500, 0.02),
        phase("kafka-50", "platform", 500, 100, 8.0, notes=["400 of 500 renewals not activated"]),
    ]
    table = render_table(phases, ["accounts", "billing", "other"])
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["phase", "via", "offered/s"]
    platform_row = next(line for line in lines if line.startswith("kafka-50"))
    assert "10.0" in platform_row.split()  # 100 done over a 10 s window
    assert "0.20x" in platform_row and "400x" in platform_row
    assert "4.0/130" in table  # accounts CPU seconds / peak RSS
    assert "billing" not in table  # no process of that name was measured
    assert "kafka-50: 400 of 500 renewals not activated" in table


def test_per_renewal_figures_divide_by_every_renewal_of_the_phase_that_ended() -> None:
    # 100 activated and 60 ended otherwise: 160 renewals shared 4 s of accounts' CPU and its
    # 800 transactions and 4,000 statements.
    handling = {
        "accounts": {
            "events": 400,
            "mean_ms": 2.0,
            "handler_busy": 0.05,
            "published": 300,
            "transactions": 800,
            "statements": 4000,
        }
    }
    kafka = phase(
        "kafka-50",
        "platform",
        500,
        100,
        8.0,
        other_outcomes={"payment_failed": 60},
        handling=handling,
    )
    assert kafka.ended == 160
    assert kafka.per_renewal() == {
        "accounts": {"cpu_ms": 25.0, "transactions": 5.0, "statements": 25.0},
        "other": {"cpu_ms": 9.38},
    }
    assert kafka.as_dict()["per_renewal"] == kafka.per_renewal()
    table = render_table([kafka], ["accounts", "other"])
    row = next(line for line in table.splitlines() if line.startswith("kafka-50") and "160" in line)
    assert row.split()[1:] == ["160", "25.0", "5.0+25", "9.4"]
    assert phase("kafka-60", "platform", 10, 0, 1.0).per_renewal() == {}  # nothing ended


def test_the_history_line_is_one_json_object_with_the_headline_figures() -> None:
    phases = [
        phase("baseline-50", "baseline", 500, 500, 0.02),
        phase("kafka-50", "platform", 500, 100, 8.0),
    ]
    meta = {"commit": "abc123", "date": "2026-11-24T10:00:00Z", "db": "sqlite", "cores": 2}
    line = json.dumps(history_line(phases, meta))
    assert "\n" not in line
    back = json.loads(line)
    assert back["commit"] == "abc123" and back["db"] == "sqlite" and back["cores"] == 2
    assert back["phases"]["kafka-50"]["done_per_s"] == 10.0
    assert back["phases"]["kafka-50"]["not_completed"] == 400
    assert back["ratios"]["kafka-50"]["throughput"] == pytest.approx(0.2)


def test_top_functions_count_the_leaf_as_own_time_and_every_frame_as_total() -> None:
    raw = [
        "main (app.py:1);handle (handlers.py:10);commit (sqlalchemy/orm/session.py:5) 6",
        "main (app.py:1);handle (handlers.py:12);dumps (json/encoder.py:3) 3",
        "main (app.py:1);poll (kafka.py:9) 1",
        "_bootstrap (threading.py:1);Condition.wait (threading.py:327) 5",
        "main (app.py:1);Runner.run (/usr/lib/python3.11/asyncio/runners.py:118) 2",
        "",
    ]
    found = top_functions(raw)
    assert found.samples == 17
    assert found.kinds == {"work": 10, "wait": 5, "loop": 2}
    first = found.hot[0]
    assert (first.name, first.own, first.total) == ("commit (sqlalchemy/orm/session.py)", 6, 6)
    handle = next(h for h in found.hot if h.name.startswith("handle"))
    assert (handle.own, handle.total) == (0, 9)  # two lines of one function merge
    assert not any(h.name.startswith("Condition.wait") for h in found.hot)
    text = summary("accounts", raw, seconds=1)
    assert "accounts: 17 thread samples" in text
    assert "threads working 0.10, blocked on a queue 0.05" in text
    assert " 60.0%" in text.splitlines()[5]
    assert "database 60%, events (pydantic, JSON) 30%, other 10%" in text.splitlines()[1]


def test_a_sample_counts_to_the_innermost_library_and_sqlite_to_the_database() -> None:
    from tests.bench.profile import part_of

    # As py-spy names frames: files relative to the import path they were found on.
    inline = "InlineSqliteConnection._execute (esim_core/persistence/db.py:140)"
    session = "Session.execute (sqlalchemy/orm/session.py:10)"
    handler = "on_renewal_requested (accounts/handlers.py:170)"
    log = "Logger.info (logging/__init__.py:1489)"
    assert part_of([handler, session, inline]) == "database"
    assert part_of([handler, session]) == "database"
    assert part_of([session, handler, log]) == "logs"  # a log line written inside a query
    assert part_of([handler]) == "services' own code"
    uuid4 = "uuid4 (uuid.py:723)"
    assert part_of(["Runner.run (asyncio/runners.py:118)", handler, uuid4]) == "services' own code"
    assert part_of(["main (app.py:1)"]) == "other"


def test_proc_stat_is_parsed_even_when_the_command_name_has_spaces_and_parentheses() -> None:
    fields = ["S", "41"] + ["0"] * 9 + ["250", "50"] + ["0"] * 8 + ["1000"] + ["0"] * 20
    sample = parse_stat(42, "42 (python (worker) 1) " + " ".join(fields))
    assert sample.ppid == 41
    assert sample.cpu_s > 0
    assert sample.rss_bytes > 0
    parent_fields = ["S", "1", *fields[2:]]
    family = tree(41, {42: sample, 41: parse_stat(41, "41 (sh) " + " ".join(parent_fields))})
    assert {s.pid for s in family} == {41, 42}


def test_the_default_phases_run_the_baselines_first_and_flat_out_last() -> None:
    names = [spec.name for spec in Config().specs()]
    assert names == [
        "baseline-1",
        "baseline-50",
        "baseline-flat",
        "kafka-1",
        "kafka-50",
        "http-50",
        "kafka-flat",
    ]
    quick = Config().quick_version()
    assert quick.quick and quick.seconds < Config().seconds
    with pytest.raises(ValueError, match="unknown phases"):
        Config(phases=("kafka", "warp")).specs()


def test_service_metrics_give_events_mean_handling_time_and_consumer_busy_share() -> None:
    before = parse_metrics(
        'esim_event_handling_seconds_sum{topic="esim.payment.requested"} 1.0\n'
        'esim_event_handling_seconds_count{topic="esim.payment.requested"} 10.0\n'
        "esim_outbox_published_total 10.0\n"
        "esim_db_transactions_total 40.0\n"
        'esim_db_statements_total{verb="select"} 70.0\n'
    )
    after = parse_metrics(
        "# HELP esim_event_handling_seconds Time spent handling one event\n"
        'esim_event_handling_seconds_bucket{le="0.005",topic="esim.payment.requested"} 3.0\n'
        'esim_event_handling_seconds_sum{topic="esim.payment.requested"} 6.0\n'
        'esim_event_handling_seconds_count{topic="esim.payment.requested"} 110.0\n'
        'esim_event_handling_seconds_sum{topic="esim.refund.requested"} 1.0\n'
        'esim_event_handling_seconds_count{topic="esim.refund.requested"} 10.0\n'
        "esim_outbox_published_total 130.0\n"
        "# TYPE esim_db_transactions_total counter\n"
        "esim_db_transactions_total 440.0\n"
        'esim_db_statements_total{verb="select"} 370.0\n'
        'esim_db_statements_total{verb="update"} 200.0\n'
        "esim_db_statements_created 1.7e9\n"
    )
    found = difference({"billing": before}, {"billing": after}, wall_s=20)["billing"]
    assert found == {
        "events": 110,
        "mean_ms": 54.55,
        "handler_busy": 0.3,
        "published": 120,
        "transactions": 400,
        "statements": 500,
    }


def test_a_second_bench_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    from tests.bench.run import one_bench_at_a_time

    refused = pytest.raises(SystemExit, match=f"pid {os.getpid()}")
    with one_bench_at_a_time(tmp_path), refused, one_bench_at_a_time(tmp_path):
        pass
    with one_bench_at_a_time(tmp_path):  # free again once the first ended
        pass


@pytest.mark.parametrize(
    ("token", "method", "sent"),
    [
        ("card_action", "card", "card_action"),
        ("paypal", "paypal", None),
        ("alipay", "alipay", None),
    ],
)
def test_a_load_token_is_its_method_and_a_bare_method_name_sends_no_token(
    token: str, method: str, sent: str | None
) -> None:
    payment = payment_of(token)

    assert (payment.method, payment.token) == (method, sent)


class _Seen:
    """Events seen, as `Outcomes.first_of` answers for them."""

    def __init__(self, **at: float) -> None:
        self.at = at

    def first_of(self, renewal: str, kind: str) -> Outcome | None:
        when = self.at.get(kind)
        return None if when is None else Outcome(renewal, kind, "topic", when, {})


def test_the_payment_hop_ends_at_the_hold_or_at_the_payment_whichever_comes_first() -> None:
    sent = [Sent("r1", "8944", "pm_card_visa", 0.0)]
    # A hold: authorized at 1.0, activated at 3.0, captured after that (5.0).
    stages = _Seen(payment_requested=0.5, payment_authorized=1.0, payment_settled=5.0)
    hops = hop_latencies(
        sent, cast(Outcomes, stages), cast(Outcomes, _Seen(activated=3.0)), cutoff=10.0
    )

    assert [hops[name]["p50"] for name in HOP_NAMES] == [0.5, 0.5, 2.0]


def test_the_headline_cost_is_the_four_services_cpu_per_renewal_against_the_relays() -> None:
    # 100 renewals ended in each phase: the platform's four services took 1 + 2 + 3 + 4 s
    # (100 ms a renewal), the sandboxes' and the broker's CPU left out; the relays took 0.2 s.
    services = {
        name: {"cpu_s": float(n), "peak_rss_mb": 100.0}
        for n, name in enumerate(("accounts", "billing", "provisioning", "notifier"), start=1)
    }
    platform = phase(
        "kafka-1",
        "platform",
        100,
        100,
        0.09,
        resources={**services, "esim-sandbox": {"cpu_s": 9.0}, "kafka": {"cpu_s": 9.0}},
    )
    baseline = phase(
        "baseline-1",
        "baseline",
        100,
        100,
        0.004,
        resources={"relays": {"cpu_s": 0.2}, "kafka": {"cpu_s": 9.0}},
    )
    assert platform.cpu_ms_per_renewal() == pytest.approx(100.0)
    assert baseline.cpu_ms_per_renewal() == pytest.approx(2.0)
    assert ratios([baseline, platform])["kafka-1"]["cpu"] == pytest.approx(50.0)
    row = next(
        line
        for line in render_table([baseline, platform], ["accounts"]).splitlines()
        if line.startswith("kafka-1 ")
    )
    assert row.split()[-2:] == ["100.0", "50.00x"]
    line = history_line([baseline, platform], {})
    assert line["phases"]["kafka-1"]["cpu_ms_per_renewal"] == pytest.approx(100.0)
    assert line["ratios"]["kafka-1"]["cpu"] == pytest.approx(50.0)


def test_the_default_run_has_an_idle_phase_at_one_renewal_a_second_with_its_baseline() -> None:
    specs = {spec.name: spec for spec in Config().specs()}
    assert (specs["kafka-1"].via, specs["kafka-1"].rate) == ("kafka", 1)
    assert (specs["baseline-1"].kind, specs["baseline-1"].rate) == ("baseline", 1)
