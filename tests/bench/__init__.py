"""`make bench`: the platform's throughput and latency as ratios to a bare Kafka relay baseline."""
