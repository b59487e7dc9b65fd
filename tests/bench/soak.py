"""The long run (`make bench SOAK_MINUTES=30`): does anything grow while renewals go on?

A soak phase offers renewals at a modest rate (20/s) for half an hour and, every minute, takes a
sample: each process tree's resident memory, every table's row count in each service's
database, and the latency of the renewals that ended since the last sample. Then it says, per
series, whether it stayed flat after the warm-up minutes.

Two kinds of table grow differently and are judged apart:
- **bounded** ones exist to deduplicate or to relay (`inbox`, per consumer; `outbox`;
  `provisioning_callback`): each keeps its rows for a window and the services' purger deletes
  what is older. Their defaults are days (a redelivery can come that late), which no half hour
  can show, so the soak's own stack shortens them (`SOAK_ENV`): a purge that keeps pace holds
  such a table near rate x window, whatever the run's length;
- **records** are what a renewal leaves for people (sagas, payments, activations, messages):
  they grow with the renewals by design, and the report gives their rows per renewal.

Billing's webhook ids keep at least an hour (`BILLING_WEBHOOK_RETENTION_S`, ge 3600: providers
retry that long): in a soak shorter than that, their consumer rows grow, and are reported as
such (the bench's card payments settle at once, so the sandbox sends few of them).
"""

import math
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.procstat import all_processes, tree
from tests.support.infra import SERVICES
from tests.support.load import LatencyStats, Outcomes, Sent

#: How long the soak's own stack keeps the rows that exist to deduplicate or to relay, and how
#: often it purges them: a window of two minutes reached within the first minutes of the run.
SOAK_WINDOW_S = 120
SOAK_PURGE_S = 20
SOAK_ENV = {
    **{f"{name.upper()}_INBOX_RETENTION_S": str(SOAK_WINDOW_S) for name in SERVICES},
    **{f"{name.upper()}_OUTBOX_RETENTION_S": str(SOAK_WINDOW_S) for name in SERVICES},
    **{f"{name.upper()}_PURGE_INTERVAL_S": str(SOAK_PURGE_S) for name in SERVICES},
    # A callback id must outlive twice the tolerance of its signed timestamp.
    "PROVISIONING_CALLBACK_TOLERANCE_S": str(SOAK_WINDOW_S // 4),
    "PROVISIONING_CALLBACK_RETENTION_S": str(SOAK_WINDOW_S),
}
#: Tables whose rows are kept for a window and purged (the rest are records).
BOUNDED = ("inbox", "outbox", "provisioning_callback")
#: The sandboxes stand for the providers, which keep every payment and bundle: in memory.
OUTSIDE = ("payment-sandbox", "esim-sandbox", "sms-sandbox", "smtp")
#: A bounded table holds about (renewals per second) x (window) rows: it is judged only where
#: the renewals ended per second late in the run are within this share of those early on.
STEADY_SHARE = 0.2
#: A bounded series or a process's memory is flat when its last value is within this share
#: (or, for small values, this many units) of its value once warmed up.
FLAT_SHARE = 0.15
FLAT_ROWS = 200
FLAT_RSS_MB = 15.0


@dataclass
class Sample:
    """What the soak saw at one moment (`at`: seconds since the phase began)."""

    at: float
    ended: int
    rss_mb: dict[str, float]
    rows: dict[str, int]
    latency: dict[str, float | int | None] = field(default_factory=dict)


def count_rows(databases: Mapping[str, str]) -> dict[str, int]:
    """Rows per table of each service's database, as `service/table`; the inbox per consumer
    (`service/inbox[consumer]`). SQLite files are opened read-only; other URLs are skipped
    (PostgreSQL: `count_rows_postgres`)."""
    found: dict[str, int] = {}
    for service, url in databases.items():
        if not url.startswith("sqlite"):
            continue
        path = Path(url.split(":///", 1)[1])
        if not path.exists():
            continue
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as connection:
            tables = [
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version'"
                )
            ]
            found.update(_counts(service, tables, connection.execute))
    return found


async def count_rows_postgres(databases: Mapping[str, str]) -> dict[str, int]:
    """`count_rows` for PostgreSQL databases (each service's own), through asyncpg."""
    import asyncpg

    found: dict[str, int] = {}
    for service, url in databases.items():
        if not url.startswith("postgresql"):
            continue
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            tables = [
                row["tablename"]
                for row in await connection.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    " AND tablename != 'alembic_version'"
                )
            ]
            for table in tables:
                if table == "inbox":
                    for row in await connection.fetch(
                        "SELECT consumer, count(*) AS n FROM inbox GROUP BY consumer"
                    ):
                        found[f"{service}/inbox[{row['consumer']}]"] = row["n"]
                else:
                    found[f"{service}/{table}"] = await connection.fetchval(
                        f'SELECT count(*) FROM "{table}"'  # names from pg_tables
                    )
        finally:
            await connection.close()
    return found


def _counts(service: str, tables: Sequence[str], execute: Any) -> dict[str, int]:
    found: dict[str, int] = {}
    for table in tables:
        if table == "inbox":
            for consumer, rows in execute(
                "SELECT consumer, count(*) FROM inbox GROUP BY consumer"
            ).fetchall():
                found[f"{service}/inbox[{consumer}]"] = rows
        else:
            found[f"{service}/{table}"] = execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    return found


def rss_mb(roots: Mapping[str, tuple[int, ...]]) -> dict[str, float]:
    """Resident memory of each named process tree now, in MB."""
    processes = all_processes()
    return {
        name: round(
            sum(member.rss_bytes for pid in pids for member in tree(pid, processes)) / 2**20, 1
        )
        for name, pids in roots.items()
    }


def latency_between(
    sent: Sequence[Sent], outcomes: Outcomes, since: float, until: float
) -> dict[str, float | int | None]:
    """Latency of the renewals whose outcome came in (since, until] (monotonic seconds)."""
    values = []
    for request in sent:
        outcome = outcomes.first(request.renewal_id)
        if outcome is not None and outcome.kind == "activated" and since < outcome.at <= until:
            values.append(outcome.at - request.at)
    return LatencyStats.of(values).as_dict()


def is_bounded(series: str) -> bool:
    """Whether a `service/table` series is a table kept for a window (not a record)."""
    table = series.split("/", 1)[1].split("[", 1)[0]
    return table in BOUNDED


@dataclass(frozen=True)
class Verdict:
    """One series over the soak: its value once warmed up, its highest after, its last."""

    series: str
    kind: str  # "memory", "bounded", "record" or "latency"
    warm: float
    peak: float
    last: float
    flat: bool | None  # None: not judged (`note` says why)
    per_renewal: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return asdict(self)


def within(warm: float, last: float, share: float, slack: float) -> bool:
    """Whether `last` is at most `warm` grown by `share`, or by `slack` units."""
    return last <= max(warm * (1 + share), warm + slack)


def judge(samples: Sequence[Sample], warm_up_s: float, rate: float) -> list[Verdict]:
    """Each series' verdict, from the first sample at or after `warm_up_s` to the last; `rate`
    is the renewals per second offered."""
    steady = [s for s in samples if s.at >= warm_up_s]
    if len(steady) < 2:
        return []
    first, last = steady[0], steady[-1]
    renewals = last.ended - first.ended
    early, late = ended_rates(steady)
    steady_rate = early > 0 and abs(late / early - 1) <= STEADY_SHARE
    unsteady = "" if steady_rate else "not judged: the renewals ended per second changed"
    verdicts: list[Verdict] = [
        Verdict(
            "renewals ended per second",
            "rate",
            round(early, 2),
            round(max(early, late), 2),
            round(late, 2),
            late >= rate * (1 - STEADY_SHARE),
            note=f"of {rate:g} offered",
        )
    ]
    for name in sorted(last.rss_mb):
        values = [s.rss_mb.get(name, 0.0) for s in steady]
        outside = name in OUTSIDE
        verdicts.append(
            Verdict(
                name,
                "memory",
                values[0],
                max(values),
                values[-1],
                None if outside else within(values[0], values[-1], FLAT_SHARE, FLAT_RSS_MB),
                note="a provider's stand-in: it keeps what it was sent, in memory"
                if outside
                else "",
            )
        )
    for name in sorted(set(first.rows) | set(last.rows)):
        counts = [float(s.rows.get(name, 0)) for s in steady]
        bounded = is_bounded(name)
        verdicts.append(
            Verdict(
                name,
                "bounded" if bounded else "record",
                counts[0],
                max(counts),
                counts[-1],
                within(counts[0], counts[-1], FLAT_SHARE, FLAT_ROWS)
                if bounded and steady_rate
                else None,
                round((counts[-1] - counts[0]) / renewals, 3) if renewals > 0 else None,
                note=unsteady if bounded else "",
            )
        )
    p50s = [s.latency.get("p50") for s in steady]
    known = [float(v) for v in p50s if isinstance(v, int | float) and not math.isnan(v)]
    if len(known) >= 2:
        # The latency is flat when the last windows are no slower than the first ones: the
        # median of the last third against that of the first third of the steady windows.
        third = max(1, len(known) // 3)
        first_p50, last_p50 = _median(known[:third]), _median(known[-third:])
        verdicts.append(
            Verdict(
                "p50 latency (s)",
                "latency",
                round(first_p50, 3),
                round(max(known), 3),
                round(last_p50, 3),
                last_p50 <= first_p50 * 1.5,
            )
        )
    return verdicts


def ended_rates(steady: Sequence[Sample]) -> tuple[float, float]:
    """Renewals ended per second over the first and the last third of the steady samples."""
    third = max(1, (len(steady) - 1) // 3)

    def rate(a: Sample, b: Sample) -> float:
        return (b.ended - a.ended) / (b.at - a.at) if b.at > a.at else 0.0

    return rate(steady[0], steady[third]), rate(steady[-1 - third], steady[-1])


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def render(samples: Sequence[Sample], verdicts: Sequence[Verdict], warm_up_s: float) -> str:
    """The soak's timeline (memory of the services, bounded tables, latency) and verdicts."""
    if not samples:
        return "soak: no samples"
    bounded = sorted({name for s in samples for name in s.rows if is_bounded(name)})
    head = ["t s", "ended", *SERVICES, "p50 s", "p99 s", *bounded]
    rows = [head]
    for s in samples:
        rows.append(
            [
                f"{s.at:.0f}",
                str(s.ended),
                *(f"{s.rss_mb.get(name, 0.0):.0f}" for name in SERVICES),
                _number(s.latency.get("p50")),
                _number(s.latency.get("p99")),
                *(str(s.rows.get(name, 0)) for name in bounded),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        f"soak timeline (memory in MB; bounded tables in rows; warm-up {warm_up_s:.0f} s):",
        *("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in rows),
        "",
        "soak verdicts (after the warm-up): warm -> peak -> last",
    ]
    for v in verdicts:
        words = {True: "flat", False: "GROWS", None: v.note or "grows with renewals"}
        if v.kind == "rate":
            words = {True: f"keeps up ({v.note})", False: f"FALLS BEHIND ({v.note})"}
        word = words[v.flat]
        extra = f", {v.per_renewal} rows per renewal" if v.per_renewal else ""
        if v.warm == v.last and v.flat is None:
            word, extra = "unchanged", ""
        lines.append(
            f"  {v.kind:8} {v.series}: {v.warm:g} -> {v.peak:g} -> {v.last:g}: {word}{extra}"
        )
    return "\n".join(lines)


def _number(value: object) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "-"
    return f"{value:.3f}"


class Watch:
    """Takes a `Sample` every `every_s` seconds of a soak phase (call `tick` from its loop)."""

    def __init__(
        self,
        databases: Mapping[str, str],
        roots: Mapping[str, tuple[int, ...]],
        every_s: float,
    ) -> None:
        self.databases = dict(databases)
        self.roots = dict(roots)
        self.every_s = every_s
        self.samples: list[Sample] = []
        self.began = time.monotonic()
        self._last = self.began

    async def sample(
        self, sent: Sequence[Sent], outcomes: Outcomes, *, force: bool = False
    ) -> None:
        """Take a sample if one is due (or `force`)."""
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        rows = count_rows(self.databases)
        rows.update(await count_rows_postgres(self.databases))
        ended = sum(1 for s in sent if outcomes.first(s.renewal_id) is not None)
        self.samples.append(
            Sample(
                at=round(now - self.began, 1),
                ended=ended,
                rss_mb=rss_mb(self.roots),
                rows=rows,
                latency=latency_between(sent, outcomes, self._last, now),
            )
        )
        self._last = now
