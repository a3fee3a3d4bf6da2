"""Kafka plumbing: producer, consumer loop with DLQ, topic admin."""
