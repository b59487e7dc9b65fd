"""Prometheus metrics that every service exposes on `GET /metrics`."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "esim_events_consumed_total", "Events handled, by topic and outcome", ["topic", "outcome"]
)
EVENT_HANDLING_SECONDS = Histogram(
    "esim_event_handling_seconds", "Time spent handling one event", ["topic"]
)
DEAD_LETTERS = Counter(
    "esim_dead_letters_total", "Messages sent to a dead-letter topic", ["topic", "error_type"]
)
OUTBOX_PUBLISHED = Counter("esim_outbox_published_total", "Outbox events published to Kafka")
EVENTS_PUBLISHED = Counter(
    "esim_events_published_total", "Events the outbox relay published, by topic", ["topic"]
)
OUTBOX_RELAY_ERRORS = Counter("esim_outbox_relay_errors_total", "Failed outbox relay rounds")
WORKER_ERRORS = Counter(
    "esim_worker_errors_total", "Failed rounds of a background worker", ["worker"]
)
ROWS_PURGED = Counter(
    "esim_rows_purged_total",
    "Rows deleted past their window from a table that only deduplicates or relays "
    "(esim_core.duework.purge), by kind",
    ["kind"],
)
DB_TRANSACTIONS = Counter(
    "esim_db_transactions_total", "Database transactions begun by this process"
)
DB_STATEMENTS = Counter(
    "esim_db_statements_total",
    "SQL statements this process sent to its database, by verb",
    ["verb"],
)
INTAKE_HELD = Gauge(
    "esim_intake_held",
    "1 while the consumer holds back new work because the work in flight is at its limit",
)
INTAKE_IN_FLIGHT = Gauge(
    "esim_intake_in_flight",
    "Work in flight at the intake's last count (esim_core.messaging.intake)",
)
OUTSIDE_CALL_SECONDS = Histogram(
    "esim_outside_call_seconds",
    "Time to the answer of one call to an outside system (payment gateway, eSIM platform)",
    ["system", "operation", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
