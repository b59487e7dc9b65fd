"""`esimctl`: see a saga and move a stuck one on, read and replay dead letters, watch outboxes,
list payments still unknown or not captured in time, reconcile billing with the providers, make
the cluster's topics and carriers' access what the platform declares.

Sagas and outboxes go through the services' operator APIs with the operator token (see
`esimctl.client`); dead letters are Kafka topics no service owns, so `dlq` reads and writes the
broker itself (`KAFKA_BOOTSTRAP_SERVERS` and, for a secured cluster, the services' other
`KAFKA_...` settings: TLS and SASL; through `esim_core.messaging.dlq`); so does `topics`
(through `esim_core.messaging.topics`, the declaration of the topics). Every failure is one
sentence on stderr and a non-zero exit status: 1 for an error, 2 for a wrong argument.
"""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

import typer
from aiokafka.errors import KafkaError
from esim_core.messaging import dlq
from esim_core.messaging.kafka import KafkaAccessRefused, check_access, ssl_context
from esim_core.messaging.topics import (
    CarrierAccessSettings,
    Declaration,
    TopicsError,
    apply_declaration,
    check_principal,
    cluster_differences,
    declaration,
    declared_topics,
    describe_declaration,
)
from esim_core.settings import KafkaSettings, SettingsError, Topics, TopicSettings, load_settings

from esimctl.client import SERVICES, CtlError, Operator, operator_from_env

T = TypeVar("T")

app = typer.Typer(
    name="esimctl",
    help="Operator CLI of the eSIM renewal platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
sagas = typer.Typer(help="Renewal sagas (accounts).", no_args_is_help=True)
dead_letters = typer.Typer(help="Dead letters on <topic>.dlq (Kafka).", no_args_is_help=True)
outbox = typer.Typer(help="The services' outboxes.", no_args_is_help=True)
payments = typer.Typer(
    help="Payments at the providers (billing): unknown, overdue, reconciled.", no_args_is_help=True
)
app.add_typer(sagas, name="sagas")
app.add_typer(payments, name="payments")
app.add_typer(dead_letters, name="dlq")
app.add_typer(outbox, name="outbox")
topics = typer.Typer(
    help="The platform's topics and carriers' read-only access (Kafka).", no_args_is_help=True
)
app.add_typer(topics, name="topics")

#: Replaced by tests to point at a test platform or to use a fake transport.
make_operator: Callable[[], Operator] = operator_from_env

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]
RenewalArg = Annotated[str, typer.Argument(help="the renewal's id (a UUID)")]
TopicArg = Annotated[str, typer.Argument(help="the original topic, e.g. esim.payment.requested")]
#: Payment tokens, passwords and codes travel in some events; `dlq show` hides them by default.
SECRET_KEYS = frozenset({"token", "password", "code", "secret", "activation_code"})


def _fail(message: str, status: int = 1) -> typer.Exit:
    typer.echo(f"esimctl: {message}", err=True)
    return typer.Exit(status)


def _renewal_id(raw: str) -> str:
    try:
        return str(UUID(raw))
    except ValueError:
        raise _fail(f"{raw!r} is not a renewal id (a UUID such as 9f0c...-...)", 2) from None


def _operator() -> Operator:
    try:
        return make_operator()
    except CtlError as error:
        raise _fail(str(error)) from None


def _run(action: Callable[[], T]) -> T:
    try:
        return action()
    except CtlError as error:
        raise _fail(str(error)) from None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _short(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _print_list(
    found: list[dict[str, Any]],
    as_json: bool,
    *,
    none: str,
    line: Callable[[dict[str, Any]], str],
    summary: str,
) -> None:
    """A listing as every list command prints it: the JSON as it came (`--json`), or a line per
    item and a closing `summary`, or `none` when there is nothing."""
    if as_json:
        _print_json(found)
    elif not found:
        typer.echo(none)
    else:
        for item in found:
            typer.echo(line(item))
        typer.echo(summary)


# sagas ------------------------------------------------------------------------------------------


def _saga_report(operator: Operator, renewal_id: str) -> tuple[dict[str, Any], list[str]]:
    """The saga from accounts plus its payment, refund, activation and cancellation; and what was
    unreachable."""
    saga = operator.call("accounts", "GET", f"/v1/operator/sagas/{renewal_id}")
    report: dict[str, Any] = {"saga": saga}
    missing: list[str] = []
    for name, service, path in (
        ("payment", "billing", f"/v1/payments/{renewal_id}"),
        ("refund", "billing", f"/v1/refunds/{renewal_id}"),
        ("activation", "provisioning", f"/v1/activations/{renewal_id}"),
        ("cancellation", "provisioning", f"/v1/cancellations/{renewal_id}"),
    ):
        try:
            report[name] = operator.call(service, "GET", path, missing_ok=True)
        except CtlError as error:
            report[name] = {"error": str(error)}
            missing.append(str(error))
    return report, missing


def _print_saga(report: dict[str, Any]) -> None:
    saga = report["saga"]
    ended = "ended" if saga["terminal"] else "open"
    typer.echo(f"renewal {saga['renewal_id']}  {saga['status']}  ({ended})")
    price = saga.get("price") or {}
    typer.echo(
        f"  card {saga['iccid']}  plan {saga['plan_code']}  start {saga['start']}  "
        f"price {_short(price.get('amount'))} {price.get('currency', '')}  "
        f"method {saga['payment_method']}"
    )
    typer.echo(
        f"  user {saga['user_id']}  created {saga['created_at']}  updated {saga['updated_at']}"
    )
    for label in ("reason", "detail", "deadline_at", "activation_failure", "stuck"):
        if saga.get(label):
            typer.echo(f"  {label}: {saga[label]}")
    typer.echo("timeline:")
    for step in saga["timeline"]:
        detail = f"  {step['detail']}" if step.get("detail") else ""
        typer.echo(f"  {step['at']}  {step['step']:<28} {step['status']:<16}{detail}")
    typer.echo("events published by accounts:")
    for event in saga["events"] or []:
        sent = f"published {event['published_at']}" if event["published_at"] else "NOT YET SENT"
        typer.echo(f"  {event['type']:<32} {event['event_id']}  {sent}")
    if not saga["events"]:
        typer.echo("  (none kept)")
    _section(
        "payment (billing)",
        report.get("payment"),
        lambda p: (
            f"{p['state']}  {p['payment_id']}  attempts {p['attempts']}  "
            f"provider {_short(p['provider_reference'])}  "
            f"failure {_short(p['failure_reason'])}  "
            f"last error {_short(p['last_error'])}"
        ),
    )
    _section(
        "refund (billing)",
        report.get("refund"),
        lambda r: (
            f"{r['state']}  {r['refund_id']}  attempts {r['attempts']}  "
            f"provider {_short(r['provider_reference'])}  "
            f"last error {_short(r['last_error'])}"
        ),
        optional=True,
    )
    _section(
        "bundle (provisioning)",
        report.get("activation"),
        lambda a: (
            f"{a['state']}  order {_short(a['order_id'])}  "
            f"bundle {_short(a['bundle_state'])}  "
            f"valid {_short(a['valid_from'])} .. {_short(a['valid_until'])}  "
            f"rounds {a['attempts']}  last error {_short(a['last_error'])}"
        ),
    )
    _section(
        "cancellation (provisioning)",
        report.get("cancellation"),
        lambda c: (
            f"{c['state']}  {c['reason']}  "
            f"order {_short(c['order_id'])}  "
            f"platform said {_short(c['bundle_status'])}  "
            f"rounds {c['attempts']}  "
            f"last error {_short(c['last_error'])}"
        ),
        optional=True,
    )


def _section(
    title: str,
    item: dict[str, Any] | None,
    line: Callable[[dict[str, Any]], str],
    *,
    optional: bool = False,
) -> None:
    """One part of a saga's report: `none` (or nothing, if optional), why it is unknown, or it."""
    if item is None and optional:
        return
    typer.echo(f"{title}:")
    if item is None:
        typer.echo("  none")
    elif "error" in item:
        typer.echo(f"  unknown: {item['error']}")
    else:
        typer.echo(f"  {line(item)}")


@sagas.command("show")
def sagas_show(renewal_id: RenewalArg, as_json: JsonOption = False) -> None:
    """A saga: state, timeline, events; its payment, bundle and any cancellation of it."""
    wanted = _renewal_id(renewal_id)
    operator = _operator()
    report, missing = _run(lambda: _saga_report(operator, wanted))
    if as_json:
        _print_json(report)
    else:
        _print_saga(report)
    if missing:
        raise _fail("shown without what these did not tell: " + "; ".join(missing))


@sagas.command("stuck")
def sagas_stuck(
    older_than: Annotated[
        float,
        typer.Option(help="seconds without progress after which a saga without deadline counts"),
    ] = 900.0,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="at most this many")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Sagas past their deadline, or without progress for --older-than seconds."""
    if older_than <= 0:
        raise _fail("--older-than must be a positive number of seconds", 2)
    operator = _operator()
    found: list[dict[str, Any]] = _run(
        lambda: operator.call(
            "accounts",
            "GET",
            "/v1/operator/sagas",
            params={"stuck": "true", "stuck_after_s": older_than, "limit": limit},
        )
    )
    _print_list(
        found,
        as_json,
        none="no stuck sagas",
        line=lambda item: (
            f"{item['renewal_id']}  {item['status']:<16} card {item['iccid']}  {item['stuck']}"
        ),
        summary=f"{len(found)} stuck saga(s); esimctl sagas show|retry|compensate <renewal_id>",
    )


def _act(renewal_id: str, action: str, params: dict[str, str], as_json: bool) -> None:
    wanted = _renewal_id(renewal_id)
    operator = _operator()
    result = _run(
        lambda: operator.call(
            "accounts", "POST", f"/v1/operator/sagas/{wanted}/{action}", params=params
        )
    )
    if as_json:
        _print_json(result)
    else:
        typer.echo(f"{action} {result['renewal_id']}: {result['outcome']} (now {result['status']})")


@sagas.command("retry")
def sagas_retry(renewal_id: RenewalArg, as_json: JsonOption = False) -> None:
    """Send again the command a stuck saga waits on (same event id: safe to run twice)."""
    _act(renewal_id, "retry", {}, as_json)


@sagas.command("compensate")
def sagas_compensate(
    renewal_id: RenewalArg,
    reason: Annotated[str, typer.Option(help="why, for the saga's timeline")] = "stuck",
    as_json: JsonOption = False,
) -> None:
    """Give a stuck saga up: TIMED_OUT and its payment refunded (a second run changes nothing)."""
    _act(renewal_id, "compensate", {"reason": reason}, as_json)


# payments ---------------------------------------------------------------------------------------


def _payment_line(item: dict[str, Any]) -> str:
    step = f" ({item['unknown_step']})" if item.get("unknown_step") else ""
    price = item["price"]
    return (
        f"{item['renewal_id']}  {item['state']}{step}  {item['method']} "
        f"{price['amount']} {price['currency']}  since {_short(item.get('unknown_since'))}  "
        f"{_short(item.get('last_error'))}"
    )


@payments.command("unknown")
def payments_unknown(
    every: Annotated[
        bool, typer.Option("--all", help="also those billing is still asking about on schedule")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Payments whose call's answer is still unknown after billing's schedule of asking.

    Exits 1 when there is any: each needs an operator to look at the provider.
    """
    operator = _operator()
    params = {"every": "true"} if every else {}
    found: list[dict[str, Any]] = _run(
        lambda: operator.call("billing", "GET", "/v1/payments/unknown", params=params)
    )
    _print_list(
        found,
        as_json,
        none="no payments unknown",
        line=_payment_line,
        summary=f"{len(found)} payment(s) unknown; look each up at its provider, then "
        "esimctl sagas show <renewal_id>",
    )
    if found:
        raise typer.Exit(1)


def _overdue_line(item: dict[str, Any]) -> str:
    return (
        f"{item['renewal_id']}  {item['method']}  {item['price']['amount']} "
        f"{item['price']['currency']}  capture before {_short(item['capture_before'])}  "
        f"overdue since {_short(item['capture_overdue_at'])}  "
        f"{_short(item.get('last_error'))}"
    )


@payments.command("overdue")
def payments_overdue(as_json: JsonOption = False) -> None:
    """Active plans whose capture billing could not make in time (the money was not taken).

    Exits 1 when there is any.
    """
    operator = _operator()
    found: list[dict[str, Any]] = _run(
        lambda: operator.call("billing", "GET", "/v1/payments/overdue")
    )
    _print_list(
        found,
        as_json,
        none="no captures overdue",
        line=_overdue_line,
        summary=f"{len(found)} capture(s) overdue",
    )
    if found:
        raise typer.Exit(1)


@payments.command("reconcile")
def payments_reconcile(
    since: Annotated[
        str | None,
        typer.Option(help="RFC 3339 with an offset, e.g. 2026-12-01T00:00:00Z; default 24 h ago"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Billing's payments against each provider's own list: every difference.

    Exits 1 when there is any difference.
    """
    if since is not None:
        try:
            moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise _fail(f"--since {since!r} is not an RFC 3339 time", 2) from None
        if moment.tzinfo is None:
            raise _fail("--since needs an offset (Z or +00:00)", 2)
    operator = _operator()
    params = {"since": since} if since is not None else {}
    report: dict[str, Any] = _run(
        lambda: operator.call("billing", "GET", "/v1/payments/reconciliation", params=params)
    )
    differences: list[dict[str, Any]] = report["differences"]
    if as_json:
        _print_json(report)
    else:
        for item in differences:
            typer.echo(
                f"{item['kind']:<16} {_short(item['method']):<7} {_short(item['reference'])}  "
                f"billing: {_short(item['billing'])}  provider: {_short(item['provider'])}  "
                f"({_short(item['provider_reference'])})"
            )
        typer.echo(
            f"{len(differences)} difference(s) since {report['since']}: "
            f"{report['provider_payments']} provider payment(s), "
            f"{report['billing_payments']} billing payment(s)"
        )
    if differences:
        raise typer.Exit(1)


# dlq --------------------------------------------------------------------------------------------


def _kafka_settings() -> KafkaSettings:
    """The `KAFKA_...` settings, as the services read them; a wrong one is one sentence."""
    try:
        settings = load_settings(KafkaSettings)
        ssl_context(settings)  # a CA or client certificate that cannot be loaded is said now
    except SettingsError as error:
        raise _fail(str(error).replace("\n", " ").replace("   ", " ")) from None
    return settings


def _kafka(action: Callable[[KafkaSettings], Awaitable[T]], timeout_s: float = 60.0) -> T:
    settings = _kafka_settings()
    bootstrap = settings.kafka_bootstrap_servers

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            # A wrong login or an untrusted certificate is named, not retried until the timeout.
            await check_access(settings, timeout_s=min(10.0, timeout_s))
            return await action(settings)

    try:
        return asyncio.run(bounded())
    except KafkaAccessRefused as error:
        raise _fail(str(error)) from None
    except TimeoutError:
        raise _fail(
            f"Kafka at {bootstrap} did not answer within {timeout_s:g} s (is "
            f"KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} what it speaks?)"
        ) from None
    except (KafkaError, OSError) as error:
        raise _fail(
            f"Kafka is not reachable at {bootstrap} ({error}); set KAFKA_BOOTSTRAP_SERVERS"
        ) from None


def _topic(topic: str) -> str:
    if topic.endswith(".dlq"):
        raise _fail(f"name the original topic, not its dead-letter topic: {topic[:-4]}", 2)
    known = set(Topics().model_dump().values())
    if topic not in known and not _kafka(lambda kafka: dlq.topic_exists(kafka, topic)):
        raise _fail(f"no topic {topic!r} (the contract's are: {', '.join(sorted(known))})", 2)
    return topic


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: "***" if key in SECRET_KEYS and isinstance(item, str) else _redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact(item) for item in value]
    return value


@dead_letters.command("list")
def dlq_list(topic: TopicArg, as_json: JsonOption = False) -> None:
    """The dead letters of a topic, oldest first, with the error that put each there."""
    name = _topic(topic)
    found = _kafka(lambda kafka: dlq.list_dead_letters(kafka, name))
    _print_list(
        found,
        as_json,
        none=f"no dead letters on {name}.dlq",
        line=_dead_letter_line,
        summary=f"{len(found)} dead letter(s); esimctl dlq show {name} <partition>:<offset>",
    )


def _dead_letter_line(item: dict[str, Any]) -> str:
    headers = item["headers"]
    return (
        f"{item['partition']}:{item['offset']}  key {_short(item['key'])}  "
        f"{headers.get('x-error-type', '?')}: {headers.get('x-error', '')[:160]}"
    )


@dead_letters.command("show")
def dlq_show(
    topic: TopicArg,
    position: Annotated[str, typer.Argument(help="<partition>:<offset>, as `dlq list` prints")],
    raw: Annotated[bool, typer.Option(help="show tokens and codes in the value too")] = False,
) -> None:
    """One dead letter: its headers and its value (tokens and codes hidden unless --raw)."""
    name = _topic(topic)
    try:
        partition, offset = (int(part) for part in position.split(":", 1))
    except ValueError:
        raise _fail(f"{position!r} is not <partition>:<offset> (e.g. 0:12)", 2) from None
    found = _kafka(lambda kafka: dlq.read_dead_letter(kafka, name, partition, offset))
    if found is None:
        raise _fail(f"no dead letter at {position} on {name}.dlq")
    value: Any
    try:
        value = json.loads(found["value"])
    except ValueError:
        value = found["value"].decode("utf-8", "replace")
    found["value"] = value if raw else _redact(value)
    _print_json(found)


@dead_letters.command("replay")
def dlq_replay(
    topic: TopicArg,
    limit: Annotated[int | None, typer.Option(min=1, help="replay at most this many")] = None,
) -> None:
    """Publish dead letters back to their topic, each once (consumer group `dlq-replay`)."""
    name = _topic(topic)
    count = _kafka(lambda kafka: dlq.replay(kafka, name, limit), timeout_s=300)
    typer.echo(f"replayed {count} dead letter(s) from {name}.dlq to {name}")


# outbox -----------------------------------------------------------------------------------------


@outbox.command("status")
def outbox_status(as_json: JsonOption = False) -> None:
    """Each service's outbox: events not yet published, and how old the oldest is."""
    operator = _operator()
    rows: dict[str, Any] = {}
    failed: list[str] = []
    for service in SERVICES:
        try:
            rows[service] = operator.call(service, "GET", "/v1/operator/outbox")
        except CtlError as error:
            rows[service] = {"error": str(error)}
            failed.append(service)
    if as_json:
        _print_json(rows)
    else:
        for service, row in rows.items():
            if "error" in row:
                typer.echo(f"{service:<13} unknown: {row['error']}")
                continue
            age = row["oldest_unpublished_age_s"]
            oldest = f"oldest {age:.1f} s" if age is not None else "nothing waiting"
            typer.echo(
                f"{service:<13} unpublished {row['unpublished']:<6} {oldest:<22} "
                f"published kept {row['published_kept']}  last {_short(row['last_published_at'])}"
            )
    if failed:
        raise _fail(f"no outbox status from {', '.join(failed)}")


# topics -----------------------------------------------------------------------------------------

CarrierOption = Annotated[
    list[str] | None,
    typer.Option(
        "--carrier",
        help="a carrier's Kafka principal (User:<name>) to grant read-only access; repeatable, "
        "added to KAFKA_CARRIER_PRINCIPALS",
    ),
]


def _declaration(given: list[str] | None) -> tuple[Declaration, list[str]]:
    """The declaration from the topic settings, with the ACLs of the carriers' principals
    (setting and options) and their groups' prefix; and those principals. A wrong setting or
    option is one sentence."""
    try:
        settings = load_settings(TopicSettings)
        access = load_settings(CarrierAccessSettings)
    except SettingsError as error:
        raise _fail(str(error).replace("\n", " ").replace("   ", " ")) from None
    principals = list(access.kafka_carrier_principals)
    for principal in given or []:
        try:
            check_principal(principal)
        except ValueError as error:
            raise _fail(f"--carrier {error}", 2) from None
        if principal not in principals:
            principals.append(principal)
    wanted = declaration(settings, Topics(), principals, access.kafka_carrier_group_prefix)
    return wanted, principals


def _topics_action(action: Callable[[KafkaSettings], Awaitable[T]]) -> T:
    async def guarded(kafka: KafkaSettings) -> T:
        try:
            return await action(kafka)
        except TopicsError as error:
            raise CtlError(str(error)) from None

    return _run(lambda: _kafka(guarded, timeout_s=300))


@topics.command("show")
def topics_show() -> None:
    """The declaration: each topic with its partitions, replication and retention."""
    try:
        settings = load_settings(TopicSettings)
    except SettingsError as error:
        raise _fail(str(error).replace("\n", " ").replace("   ", " ")) from None
    for line in describe_declaration(
        declared_topics(Topics(), replication=settings.kafka_topic_replication)
    ):
        typer.echo(line)


@topics.command("check")
def topics_check(carrier: CarrierOption = None) -> None:
    """Compare the cluster with the declaration (and carriers' ACLs); exit 1 listing each
    difference."""
    wanted, principals = _declaration(carrier)
    differences = _topics_action(lambda kafka: cluster_differences(kafka, wanted))
    if not differences:
        acls = f", and the ACLs of {len(principals)} carrier(s)" if principals else ""
        typer.echo(f"the topics are as declared{acls}")
        return
    for difference in differences:
        typer.echo(str(difference))
    raise _fail(f"{len(differences)} difference(s) from the declaration; esimctl topics apply")


@topics.command("apply")
def topics_apply(carrier: CarrierOption = None) -> None:
    """Create the missing topics, grow the short ones, set their declared configs, and grant
    carriers READ and DESCRIBE on the topics they read and READ on their groups' prefix.
    Running it again changes nothing."""
    wanted, _ = _declaration(carrier)
    report = _topics_action(lambda kafka: apply_declaration(kafka, wanted))
    for line in report.done:
        typer.echo(line)
    if not report.done:
        typer.echo("nothing to change: the topics are as declared")
    if report.left:
        for difference in report.left:
            typer.echo(str(difference))
        raise _fail(
            f"{len(report.left)} topic(s) have fewer copies than declared, which no topic "
            "request changes: reassign their partitions (kafka-reassign-partitions), or set "
            "KAFKA_TOPIC_REPLICATION to the cluster's"
        )


def main() -> None:
    """The `esimctl` entry point."""
    # aiokafka logs each failed connection itself; the command says it once, in a sentence.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("esim_core.messaging.kafka").setLevel(logging.CRITICAL)
    app()
