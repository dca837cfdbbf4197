"""Prometheus metrics of the worker process (served by the faust web server at /metrics/)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("vitrine_worker_events_total", "Catalog events processed, by outcome", ["outcome"])
DEAD_LETTERS = Counter(
    "vitrine_worker_dead_letters_total", "Events sent to the dead-letter topic, by reason", ["reason"]
)
IMAGES = Counter("vitrine_worker_images_total", "Fetched images, by what happened to them", ["outcome"])
IMAGE_FAILURES = Counter("vitrine_worker_image_failures_total", "Images that could not be used, by reason", ["reason"])
ITEMS_EMBEDDED = Counter("vitrine_worker_items_embedded_total", "Item crops embedded")
TOWER_FAILURES = Counter(
    "vitrine_worker_tower_failures_total", "Item crops a deployed tower could not embed at ingest, by error", ["error"]
)
STAGE_SECONDS = Histogram(
    "vitrine_worker_stage_seconds",
    "Time per batch in each stage",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "vitrine_worker_batch_events", "Events per processed batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
LAG = Gauge("vitrine_worker_consumer_lag", "Messages not yet consumed by the worker group", ["topic"])
INTERACTIONS = Counter("vitrine_worker_interactions_total", "Interaction events written, new or duplicate", ["outcome"])
# The worker's view of Postgres (streams/outage.py): `vitrine status` reads these from /metrics/.
DATABASE_UP = Gauge("vitrine_worker_database_up", "1 once the worker reached Postgres, 0 while it waits for it")
DATABASE_DOWN_SINCE = Gauge(
    "vitrine_worker_database_down_since_seconds", "Unix time the current database outage began (0: no outage)"
)
OUTAGE_WAITS = Counter("vitrine_worker_outage_waits_total", "Retries of a batch that waited out a database outage")
