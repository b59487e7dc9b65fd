"""Session fixtures: the whole platform against the real broker, Redis and the sandboxes."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.infra import Platform, kafka, new_suffix, redis

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Kafka, Redis, the sandboxes, the SMTP sink and the four services, for the session."""
    workdir: Path = tmp_path_factory.mktemp("platform")
    with kafka(workdir) as bootstrap, redis(workdir) as redis_url:
        shared_cluster = bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
        running = Platform(
            workdir, bootstrap, redis_url, topic_suffix=new_suffix() if shared_cluster else ""
        )
        try:
            running.start()
            yield running
        finally:
            running.stop()
