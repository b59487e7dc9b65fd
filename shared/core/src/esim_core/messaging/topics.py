"""Creating the platform's topics (and their dead-letter topics) before first use."""

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from esim_core.messaging.kafka import client_options
from esim_core.settings import KafkaSettings, Topics

logger = logging.getLogger(__name__)


async def ensure_topics(
    kafka: KafkaSettings, topics: Topics, *, partitions: int = 3, replication: int = 1
) -> list[str]:
    """Create every contract topic and its `.dlq` that the cluster does not have yet.

    Returns:
        The names of the topics that were created.
    """
    wanted = set()
    for name in topics.model_dump().values():
        wanted.update({name, f"{name}.dlq"})
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        missing = sorted(wanted - set(await admin.list_topics()))
        if missing:
            await admin.create_topics(
                [NewTopic(name, partitions, replication) for name in missing],
                validate_only=False,
            )
            logger.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()
