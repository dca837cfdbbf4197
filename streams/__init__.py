"""Kafka side of vitrine: event schemas, topics, producer, the faust worker and its agents."""
