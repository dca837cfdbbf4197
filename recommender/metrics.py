"""Prometheus metrics of the API process (served at /metrics)."""

from prometheus_client import Counter, Histogram

CATALOG_EVENTS = Counter("vitrine_api_catalog_events_total", "Catalog events received, by source and outcome",
                         ["source", "outcome"])
REJECTED = Counter("vitrine_api_rejected_requests_total", "Webhook requests refused, by reason", ["reason"])
REQUEST_LATENCY = Histogram("vitrine_api_request_seconds", "API request latency by route", ["route", "method"],
                            buckets=(.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
CACHE_LOOKUPS = Counter("vitrine_serving_cache_lookups_total", "Storefront lookup-cache reads, by cache and outcome",
                        ["cache", "outcome"])
