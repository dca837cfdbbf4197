"""The HTTP API (FastAPI): catalog webhooks, storefront recommendations, interaction events."""
