"""Prometheus metrics of the API process (served at /metrics)."""

from prometheus_client import Counter, Histogram

CATALOG_EVENTS = Counter(
    "vitrine_api_catalog_events_total", "Catalog events received, by source and outcome", ["source", "outcome"]
)
REJECTED = Counter("vitrine_api_rejected_requests_total", "Webhook requests refused, by reason", ["reason"])
REQUEST_LATENCY = Histogram(
    "vitrine_api_request_seconds",
    "API request latency by route, method and response status (error rates: the status label of _count)",
    ["route", "method", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CACHE_LOOKUPS = Counter(
    "vitrine_serving_cache_lookups_total", "Storefront lookup-cache reads, by cache and outcome", ["cache", "outcome"]
)
INVALID_REQUESTS = Counter(
    "vitrine_api_invalid_requests_total",
    "Requests refused with 422, by route and the first error's type",
    ["route", "type"],
)
UNAVAILABLE = Counter(
    "vitrine_api_unavailable_total",
    "Requests answered 503 because a dependency was down, by dependency",
    ["dependency"],
)
RECOMMENDATIONS = Counter(
    "vitrine_api_recommendations_total",
    "Recommendation responses, by assigned arm, the arm that answered and the embedding model it queried",
    ["arm", "served_by", "model"],
)
FALLBACKS = Counter(
    "vitrine_api_fallbacks_total",
    "Recommendations another arm answered (e.g. visual -> baseline: no vectors yet), by assigned arm and reason",
    ["arm", "reason"],
)
