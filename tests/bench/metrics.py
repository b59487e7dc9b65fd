"""The services' own account of a phase, from their Prometheus `/metrics`: events, time spent,
events published, and the database transactions and statements it took."""

import re
from collections.abc import Mapping

import httpx

from tests.support.infra import service_of

SAMPLE = re.compile(
    r'^esim_event_handling_seconds_(?P<what>sum|count)\{topic="(?P<topic>[^"]+)"\}'
    r" (?P<value>[-+0-9.eE]+|NaN)$"
)
#: Counters summed over their labels: name in /metrics -> name in the snapshot.
TOTALS = {
    "esim_outbox_published_total": "published",
    "esim_db_transactions_total": "transactions",
    "esim_db_statements_total": "statements",
}
TOTAL = re.compile(r"^(?P<name>" + "|".join(TOTALS) + r")(?:\{[^}]*\})? (?P<value>[-+0-9.eE]+)$")

#: Per service: topic -> (seconds handling, events handled), and the counters of TOTALS.
Figures = tuple[dict[str, tuple[float, float]], dict[str, float]]
Snapshot = dict[str, Figures]


def parse(text: str) -> Figures:
    """Handling seconds and counts per topic, and the TOTALS counters, from /metrics."""
    topics: dict[str, list[float]] = {}
    totals = dict.fromkeys(TOTALS.values(), 0.0)
    for line in text.splitlines():
        if match := SAMPLE.match(line):
            pair = topics.setdefault(match["topic"], [0.0, 0.0])
            pair[0 if match["what"] == "sum" else 1] = float(match["value"])
        elif match := TOTAL.match(line):
            totals[TOTALS[match["name"]]] += float(match["value"])
    return {topic: (pair[0], pair[1]) for topic, pair in topics.items()}, totals


def snapshot(urls: Mapping[str, str]) -> Snapshot:
    """Every service's figures now; a service that does not answer is left out."""
    found: Snapshot = {}
    for name, url in urls.items():
        try:
            answer = httpx.get(f"{url}/metrics", timeout=10)
        except httpx.HTTPError:
            continue
        if answer.status_code == 200:
            found[name] = parse(answer.text)
    return found


def difference(before: Snapshot, after: Snapshot, wall_s: float) -> dict[str, dict[str, float]]:
    """Per service over a phase: events handled, mean ms per event, share of the wall time
    its consumer spent in handlers (it handles one event at a time), outbox events published,
    database transactions begun and statements sent."""
    result = {}
    for name, (topics, totals) in after.items():
        old_topics, old_totals = before.get(name, ({}, {}))
        seconds = sum(s - old_topics.get(t, (0.0, 0.0))[0] for t, (s, _) in topics.items())
        events = sum(c - old_topics.get(t, (0.0, 0.0))[1] for t, (_, c) in topics.items())
        result[name] = {
            "events": round(events),
            "mean_ms": round(1000 * seconds / events, 2) if events else 0.0,
            "handler_busy": round(seconds / wall_s, 3) if wall_s > 0 else 0.0,
            **{key: round(value - old_totals.get(key, 0.0)) for key, value in totals.items()},
        }
    return result


def by_service(per_process: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """`difference` of each process, its replicas (`billing-2`) summed into their service:
    events and counters added, the mean time per event weighted by events, the handlers' busy
    share the replicas' mean (each consumer handles one event at a time)."""
    grouped: dict[str, list[Mapping[str, float]]] = {}
    for name, figures in per_process.items():
        grouped.setdefault(service_of(name), []).append(figures)
    result: dict[str, dict[str, float]] = {}
    for service, each in grouped.items():
        if len(each) == 1:
            result[service] = dict(each[0])
            continue
        events = sum(figures.get("events", 0.0) for figures in each)
        merged = {
            key: sum(figures.get(key, 0.0) for figures in each)
            for key in each[0]
            if key not in ("mean_ms", "handler_busy")
        }
        merged["mean_ms"] = (
            round(sum(f.get("mean_ms", 0.0) * f.get("events", 0.0) for f in each) / events, 2)
            if events
            else 0.0
        )
        merged["handler_busy"] = round(sum(f.get("handler_busy", 0.0) for f in each) / len(each), 3)
        result[service] = merged
    return result
