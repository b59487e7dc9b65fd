"""The soak's arithmetic (tests/bench/soak.py): row counts, and which series it calls flat."""

import sqlite3
from pathlib import Path

from tests.bench.soak import Sample, count_rows, judge, render


def sample(
    at: float, ended: int, rows: dict[str, int], rss: float = 150.0, p50: float = 0.1
) -> Sample:
    return Sample(
        at=at,
        ended=ended,
        rss_mb={"accounts": rss, "payment-sandbox": 100 + at},
        rows=rows,
        latency={"p50": p50},
    )


def steady_run(inbox: list[int], renewals_per_s: float = 20.0) -> list[Sample]:
    """Samples a minute apart at a steady rate, the inbox as given, records growing."""
    return [
        sample(
            60.0 * i,
            int(60 * i * renewals_per_s),
            {
                "accounts/inbox[accounts]": count,
                "accounts/accounts_renewal": int(60 * i * renewals_per_s),
            },
        )
        for i, count in enumerate(inbox)
    ]


def by_series(samples: list[Sample], warm_up_s: float = 120, rate: float = 20) -> dict[str, str]:
    return {
        v.series: {True: "flat", False: "grows", None: "not judged"}[v.flat]
        for v in judge(samples, warm_up_s, rate)
    }


def test_an_inbox_held_by_its_purge_is_flat_and_records_are_not_judged() -> None:
    found = by_series(steady_run([0, 2400, 4800, 5000, 4900, 5100, 5000]))
    assert found["accounts/inbox[accounts]"] == "flat"
    assert found["accounts/accounts_renewal"] == "not judged"
    assert found["accounts"] == "flat"
    assert found["renewals ended per second"] == "flat"
    assert found["p50 latency (s)"] == "flat"


def test_an_inbox_that_keeps_growing_at_a_steady_rate_grows() -> None:
    found = by_series(steady_run([0, 2400, 4800, 7200, 9600, 12000, 14400]))
    assert found["accounts/inbox[accounts]"] == "grows"


def test_a_rate_that_changed_leaves_the_windowed_tables_unjudged() -> None:
    samples = steady_run([0, 2400, 4800, 5000, 4900, 5100, 5000])
    # Late on, the platform ends twice as many renewals a second (it was catching up).
    for each in samples[4:]:
        each.ended += int((each.at - samples[3].at) * 20)
    found = by_series(samples)
    assert found["accounts/inbox[accounts]"] == "not judged"


def test_memory_that_climbs_grows_and_a_sandbox_s_is_not_judged() -> None:
    samples = steady_run([0, 2400, 4800, 5000, 4900, 5100, 5000])
    for i, each in enumerate(samples):
        each.rss_mb["accounts"] = 150.0 + 20 * i
    found = by_series(samples)
    assert found["accounts"] == "grows"
    assert found["payment-sandbox"] == "not judged"


def test_a_falling_behind_platform_is_said_to_and_its_latency_grows() -> None:
    samples = steady_run([0, 2400, 4800, 5000, 4900, 5100, 5000], renewals_per_s=12)
    for i, each in enumerate(samples):
        each.latency = {"p50": 0.1 * (i + 1) ** 2}
    found = by_series(samples, rate=20)
    assert found["renewals ended per second"] == "grows"  # rendered as FALLS BEHIND
    assert found["p50 latency (s)"] == "grows"
    text = render(samples, judge(samples, 120, 20), 120)
    assert "FALLS BEHIND (of 20 offered)" in text
    assert "p50 latency (s)" in text


def test_rows_are_counted_per_table_and_the_inbox_per_consumer(tmp_path: Path) -> None:
    database = tmp_path / "billing.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE inbox (consumer TEXT, event_id TEXT)")
        connection.execute("CREATE TABLE billing_payment (id TEXT)")
        connection.execute("CREATE TABLE alembic_version (version_num TEXT)")
        connection.executemany(
            "INSERT INTO inbox VALUES (?, ?)",
            [("billing", "a"), ("billing", "b"), ("webhook:stripe", "c")],
        )
        connection.execute("INSERT INTO billing_payment VALUES ('p')")
    found = count_rows(
        {
            "billing": f"sqlite+aiosqlite:///{database}",
            "accounts": f"sqlite+aiosqlite:///{tmp_path / 'missing.sqlite'}",
            "notifier": "postgresql+asyncpg://host/db",
        }
    )
    assert found == {
        "billing/inbox[billing]": 2,
        "billing/inbox[webhook:stripe]": 1,
        "billing/billing_payment": 1,
    }
