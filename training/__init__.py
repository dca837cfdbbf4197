"""Catalog-adapted embeddings: methods, data, held-out evaluation. Pure: torch, no Kafka, SQL or HTTP."""
