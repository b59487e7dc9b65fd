"""The running services' /metrics: scrape-time gauges, outside-call latency, and every metric the
alert rules and the dashboard in deploy/ use."""

import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import Traveller
from tests.support.infra import SERVICES, Platform

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import check_observability

pytestmark = pytest.mark.integration


def scrape(platform: Platform, service: str) -> str:
    answer = httpx.get(f"{platform.url(service)}/metrics", timeout=30)
    assert answer.status_code == 200
    return answer.text


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def scrape_errors(text: str) -> float:
    return sum(value for _, value in samples(text, "esim_scrape_errors_total"))


def complete_scrape(platform: Platform, service: str, within_s: float = 60) -> str:
    """A scrape of `service` in which every gauge source was read.

    A source that does not answer within its bound is counted in `esim_scrape_errors_total`
    and its gauges are left out of that answer, which is what a loaded machine (the tests run
    five platforms side by side) does now and then to the Kafka gauges: they open two clients
    per scrape. So this scrapes again, as Prometheus would at its next interval, until one
    answer adds no error and carries the consumer lag. A source that always fails never gets
    there, and the wait ends in a failure naming the service.
    """
    deadline = time.monotonic() + within_s
    errors = None
    while True:
        text = scrape(platform, service)
        complete = errors == scrape_errors(text) or (errors is None and not scrape_errors(text))
        if complete and samples(text, "esim_consumer_lag"):
            return text
        assert time.monotonic() < deadline, f"{service}: no scrape read every gauge source"
        errors = scrape_errors(text)
        time.sleep(1)


@pytest.fixture(scope="module")
def scraped(platform: Platform) -> dict[str, str]:
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid).json()["renewal_id"]
    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)
    return {service: complete_scrape(platform, service) for service in SERVICES}


def test_every_metric_of_the_rules_and_dashboard_is_exposed(scraped: dict[str, str]) -> None:
    exposed = set().union(*(check_observability.exposed_names(text) for text in scraped.values()))
    assert check_observability.used_names() - exposed == set()


def test_each_service_reports_its_outbox_lag_and_dead_letters(
    platform: Platform, scraped: dict[str, str]
) -> None:
    for service, text in scraped.items():
        assert [labels for labels, _ in samples(text, "esim_outbox_unpublished")] == [
            {"service": service}
        ]
        lag_topics = {labels["topic"] for labels, _ in samples(text, "esim_consumer_lag")}
        assert lag_topics, f"{service} reports no consumer lag"
        assert all(value >= 0 for _, value in samples(text, "esim_consumer_lag"))
        waiting = {labels["topic"] for labels, _ in samples(text, "esim_dead_letters_waiting")}
        assert waiting == lag_topics
    billing_topics = {
        labels["topic"] for labels, _ in samples(scraped["billing"], "esim_consumer_lag")
    }
    assert billing_topics == {
        platform.topic("esim.payment.requested"),
        platform.topic("esim.refund.requested"),
        # The capture after activation (or the void after a failed one).
        platform.topic("esim.profile.activated"),
    }


def test_accounts_reports_sagas_by_state(scraped: dict[str, str]) -> None:
    by_state = {
        labels["state"]: value for labels, value in samples(scraped["accounts"], "esim_sagas")
    }
    assert by_state["ACTIVATED"] >= 1
    assert {"REQUESTED", "PAID", "REFUNDED", "TIMED_OUT", "CANCELLING", "CANCELLED"} <= set(
        by_state
    )
    [(_, stuck)] = samples(scraped["accounts"], "esim_sagas_stuck")
    assert stuck == 0
    assert samples(scraped["accounts"], "esim_saga_oldest_open_age_seconds")


def test_gateway_and_platform_calls_are_timed(scraped: dict[str, str]) -> None:
    # The renewal of `scraped` pays by card: Stripe's calls (PayPal's and Alipay's are `paypal`
    # and `alipay`).
    for service, system in (("billing", "stripe"), ("provisioning", "esim_platform")):
        counts = [
            (labels, value)
            for labels, value in samples(scraped[service], "esim_outside_call_seconds_count")
            if labels["system"] == system
        ]
        assert sum(value for _, value in counts) >= 1, f"{service}: no {system} call timed"
        assert all(labels["operation"].count("/") <= 2 for labels, _ in counts)


def purged_kinds(text: str) -> set[str]:
    return {labels["kind"] for labels, _ in samples(text, "esim_rows_purged_total")}


def test_every_service_ran_a_purge_pass_of_each_kind_without_an_error(
    platform: Platform, scraped: dict[str, str]
) -> None:
    """A kind's counter has a sample once a pass has purged it (by nothing, this young), so a
    sample per kind says the pass ran against the real database under its Redis lease.

    Waits up to a minute per service: a replica killed by an earlier test on this platform may
    hold the purge lease for its 30 s, and a pass comes every 5 s (tests/support/infra.py).
    """
    extra = {"billing": {"webhook inbox"}, "provisioning": {"callback"}}
    for service, text in scraped.items():
        wanted = {"outbox", "inbox", *extra.get(service, set())}
        deadline = time.monotonic() + 60
        while purged_kinds(text) != wanted and time.monotonic() < deadline:
            time.sleep(1)
            text = scrape(platform, service)
        assert purged_kinds(text) == wanted, service
        errors = [
            value
            for labels, value in samples(text, "esim_worker_errors_total")
            if labels.get("worker") == "purge"
        ]
        assert sum(errors) == 0, f"{service}: a purge pass failed"
