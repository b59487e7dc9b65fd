"""Events in and out: broker, producer, consumer and inbox, outbox, dead letters, intake."""
