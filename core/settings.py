"""The one settings object of vitrine: built once, validated at start-up, passed in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

STACK_FILE = "stack.json"


class Settings(BaseSettings):
    """Every knob of vitrine, read from `VITRINE_*` environment variables (or a `.env` file)."""

    model_config = SettingsConfigDict(env_prefix="VITRINE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".vitrine"), description="State of the embedded stack, model caches, exports")
    kafka_bootstrap: str = Field("", description="host:port[,host:port]; empty = the embedded broker of `vitrine up`")
    kafka_port: int = Field(
        0,
        description="Port of the embedded broker; 0 = the one recorded in DATA_DIR/broker/"
        "state.json (picked on the first start, kept across restarts)",
    )
    broker_storage: Literal["durable", "memory"] = Field(
        "durable",
        description="Storage of the embedded broker: durable (Tansu on an S3 server, SeaweedFS, under "
        "DATA_DIR/broker: acknowledged events survive restarts) or memory (lost when `vitrine up` stops)",
    )
    broker_retention_interval_s: float = Field(
        60.0,
        ge=0,
        description="How often `vitrine up` deletes, from the durable broker's storage, the batches that every "
        "consumer group of their topic has committed past (Tansu lists a partition's batches on each fetch); 0 = never",
    )
    broker_retention_min_age_s: float = Field(
        600.0,
        ge=0,
        description="A batch is deleted by that retention only once it is this old (room for a reader "
        "that has not committed yet); partitions no consumer group committed on keep everything",
    )
    database_url: str = Field("", description="postgresql+psycopg://...; empty = the embedded Postgres of `vitrine up`")
    topic_prefix: str = Field("", description="Prefix for every topic name (isolates tests or environments)")
    app_id: str = Field("vitrine", description="faust application id (consumer group)")
    topic_partitions: int = Field(4, ge=1, description="Partitions of the catalog and interaction topics")
    kafka_ack_timeout_s: float = Field(10.0, gt=0, description="How long the API waits for Kafka to acknowledge")
    exposure_linger_s: float = Field(
        1.0,
        ge=0,
        le=10,
        description="An API process gathers exposure events this long (off the request path) and sends them "
        "in one produce request: the durable broker stores one object per partition per request (at "
        "100 requests/s its S3 requests fell from ~277 to ~30 a second); 0 = send at once",
    )
    receipt_lease_s: float = Field(
        30.0,
        gt=0,
        description="A catalog event id claimed by an API request that never saw Kafka's acknowledgement "
        "(the API died in between) is accepted again after this; must exceed VITRINE_KAFKA_ACK_TIMEOUT_S",
    )

    api_host: str = Field("127.0.0.1", description="API bind address")
    api_port: int = Field(8000, description="API port")
    worker_web_port: int = Field(6066, description="faust worker web/metrics port")
    worker_web_host: str = Field(
        "127.0.0.1", description="faust worker web/metrics bind address (0.0.0.0 for a Prometheus in another container)"
    )
    worker_stop_timeout_s: float = Field(
        8.0,
        gt=0,
        description="After SIGTERM the worker exits within this even if the broker or database is down "
        "(uncommitted events are redelivered to the next worker: at-least-once)",
    )
    admin_key: SecretStr = Field(
        SecretStr(""),
        description="Operator secret that signs in to the dashboards for every tenant; empty = "
        "none (the admin API always takes each tenant's own admin key)",
    )
    dashboard_secret: SecretStr = Field(
        SecretStr(""),
        description="Server secret (32+ characters) that signs the dashboards' sign-in cookie (HMAC-SHA256); "
        "empty = a random one kept in DATA_DIR/dashboard/cookie-secret by `vitrine dashboard`",
    )
    dashboard_session_s: float = Field(
        8 * 3600.0,
        gt=0,
        le=30 * 86400,
        description="A dashboard sign-in (its cookie) stays valid this long; rotating the key or password "
        "it was made with ends it sooner",
    )
    dashboard_sign_in_limit: str = Field(
        "5/minute;20/hour",
        description="Sign-in attempts one client (IP address) may make on the dashboards, in the `limits` "
        "notation; over it the form refuses without checking the credential; empty = no limit",
    )

    embedder: str = Field(
        "efficientnet-lite0",
        description="Embedder backend: efficientnet-lite0 | clip | trained (VITRINE_EMBEDDER_ARTEFACT)",
    )
    embedder_artefact: str = Field(
        "", description="The trained model artefact (.vtm) the `trained` embedder loads (`vitrine model train`)"
    )
    detector: str = Field("whole-image", description="Detector backend: whole-image | yolo")
    clip_model: str = Field("ViT-B-32", description="open_clip model name")
    clip_pretrained: str = Field("laion2b_s34b_b79k", description="open_clip pretrained tag or a local checkpoint path")
    yolo_weights: str = Field("yolo11n.pt", description="YOLO hub name or local .pt/.onnx path")
    torch_threads: int = Field(0, ge=0, description="torch/onnxruntime intra-op threads; 0 = all cores")
    embed_batch_size: int = Field(32, ge=1, description="Images per embedder call")
    # --- vision (owned by vision/; add vision knobs in this block) ---
    use_onnx: bool = Field(True, description="Run embedders through an exported ONNX graph when onnxruntime is present")
    detect_min_score: float = Field(0.25, ge=0, le=1, description="Drop detections below this score")
    detect_min_area: float = Field(0.01, ge=0, le=1, description="Drop boxes smaller than this fraction of the image")
    detect_max_items: int = Field(8, ge=1, description="Most items kept per image (whole image included)")
    detect_iou_threshold: float = Field(
        0.7, gt=0, le=1, description="Boxes overlapping a kept box above this IoU are duplicates"
    )
    max_image_pixels: int = Field(40_000_000, gt=0, description="Largest decoded image accepted (width x height)")
    fashion_mnist_dir: Path = Field(
        Path("/usr/share/datasets/fashion-mnist"),
        description="Fashion-MNIST IDX files (Debian package dataset-fashion-mnist)",
    )
    # --- end vision ---

    fetch_allow_private: bool = Field(
        False, description="Allow image URLs on loopback/private addresses (tests and the demo only)"
    )
    fetch_allow_hosts: str = Field(
        "", description="Comma-separated host names/IPs exempt from the private-address check"
    )
    image_refetch_after_s: float = Field(
        6 * 3600,
        ge=0,
        description="A known image URL is downloaded again (to detect changed bytes) after this; 0 = on every event",
    )
    fetch_timeout_s: float = Field(10.0, gt=0, description="Image fetch connect+read timeout")
    fetch_deadline_s: float = Field(
        15.0,
        gt=0,
        description="Wall-clock limit of one image fetch as a whole (connection wait, redirects, "
        "retries, every read): past it the image is left pending (retried later) and its product indexed without it",
    )
    fetch_connections: int = Field(16, ge=1, description="Image downloads in flight at once, all hosts together")
    fetch_per_host: int = Field(
        8, ge=1, description="Image downloads in flight at once per host (one slow host cannot take every connection)"
    )
    fetch_host_cooldown_s: float = Field(
        60.0,
        ge=0,
        description="After a host ran past the fetch deadline, the same tenant's images there fail at once "
        "(pending, retried later) for this long: one slow host costs a batch one deadline, not one per image",
    )
    image_retry_after_s: float = Field(
        300.0,
        ge=0,
        description="An image that failed transiently (timeout, 5xx, refused connection) is fetched "
        "again by the worker after this (and on its product's next event); 0 = only on the next event",
    )
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest image accepted")
    hnsw_ef_search: int = Field(
        64,
        ge=10,
        le=1000,
        description="HNSW candidate list of the visual arm's kNN "
        "(recall vs latency; at least 4 x the result size is used)",
    )
    popularity_half_life_s: float = Field(
        3 * 86400, gt=0, description="Half-life of engagement in the baseline ranking"
    )
    lookup_cache_ttl_s: float = Field(
        2.0,
        ge=0,
        description="API processes keep a storefront key's tenant, a placement's running experiment and "
        "the exact-or-HNSW choice this long (changes made elsewhere show within it); 0 = no cache",
    )
    index_kind: Literal["halfvec", "binary", "codes"] = Field(
        "halfvec",
        description="Vector index the visual arm searches for the deployed embedder's model: halfvec HNSW, "
        "binary (Hamming IVFFlat over binary_quantize, re-ranked on the full vectors) or codes (a head's learned "
        "codes); a trained model's deployment names its own",
    )
    deployment_cache_ttl_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Workers re-read which trained models each tenant has deployed this often (their vectors "
        "are written for new products); a re-embed's final sweep waits this long plus 10 s",
    )
    reembed_page: int = Field(
        2000, ge=10, le=100_000, description="Source vectors a background re-embed maps and writes per transaction"
    )
    reembed_pause_s: float = Field(
        0.05,
        ge=0,
        le=60,
        description="Pause between two pages of a background re-embed, so live catalog events keep their latency",
    )
    reembed_image_page: int = Field(
        32, ge=1, le=10_000, description="Items a fine-tuned tower's re-embed fetches, crops and embeds per transaction"
    )
    reembed_image_duty: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of the time a tower's re-embed works: after a page it rests for the page's time x "
        "(1 - duty) / duty, so the worker's live events keep the rest of the CPU",
    )
    popularity_cache_ttl_s: float = Field(
        15.0,
        ge=0,
        description="The baseline arm's per-category popularity list is recomputed after this; 0 = per request",
    )
    serve_concurrency: int = Field(
        8,
        ge=1,
        le=40,
        description="Recommendation requests one API process runs against Postgres at once; "
        "the rest wait their turn (more only adds contention on a few cores)",
    )
    rate_limit_storefront: str = Field(
        "1000/second",
        description="Requests one storefront key (X-Vitrine-Key) may make to one API process, in the `limits` "
        "notation (`1000/second`, `50000 per minute`; `;` separates several); over it: 429 + Retry-After; "
        "empty = no limit. A key serves all of a retailer's shoppers: size it to their peak",
    )
    rate_limit_admin: str = Field(
        "20/second", description="Requests one admin key (X-Vitrine-Admin-Key) may make; same notation; empty = none"
    )
    rate_limit_storage: str = Field(
        "memory://",
        description="Where the rate-limit counters live (a `limits` storage URI): memory:// counts per API "
        "process; redis://HOST:6379 shares them between replicas (needs the redis client installed)",
    )
    webhook_tolerance_s: int = Field(300, gt=0, description="Accepted clock skew of signed webhooks")
    max_request_body_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="Largest JSON request body the API reads (storefront events, admin); a "
        "bigger one is answered 413 before it is read. Catalog webhooks allow 5 MiB, image search MAX_IMAGE_BYTES",
    )
    event_max_age_s: float = Field(
        7 * 86400,
        gt=0,
        le=3650 * 86400,
        description="Storefront events whose occurred_at is older than this are refused (422)",
    )
    event_max_future_s: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="Storefront events whose occurred_at is this far ahead of the API's clock "
        "are refused (422): the clock skew tolerated",
    )
    results_refresh_s: float = Field(
        300.0,
        ge=0,
        description="The worker recomputes running experiments' result snapshots this often "
        "(and stopped ones once after the stop); 0 = off",
    )
    results_max_age_s: float = Field(
        900.0,
        gt=0,
        description="Dashboards read an experiment's result snapshot up to this old; an older or "
        "missing one is recomputed live (slow at millions of events) and stored",
    )

    @field_validator("kafka_bootstrap", "database_url")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @field_validator("rate_limit_storefront", "rate_limit_admin", "dashboard_sign_in_limit")
    @classmethod
    def _rate_limit(cls, v: str) -> str:
        from limits import parse_many

        if v.strip():
            parse_many(v)  # ValueError names the bad part, at start-up rather than on the first request
        return v.strip()

    @field_validator("dashboard_secret")
    @classmethod
    def _long_secret(cls, v: SecretStr) -> SecretStr:
        # A short HMAC key can be brute-forced offline from one cookie.
        if v.get_secret_value() and len(v.get_secret_value()) < 32:
            raise ValueError("VITRINE_DASHBOARD_SECRET must be at least 32 characters (or empty for a generated one)")
        return v

    @model_validator(mode="after")
    def _lease_outlives_the_ack_wait(self) -> Settings:
        # A shorter lease would let a retry re-claim an event whose first request may still be acknowledged.
        if self.receipt_lease_s <= self.kafka_ack_timeout_s:
            raise ValueError(
                f"VITRINE_RECEIPT_LEASE_S ({self.receipt_lease_s:g}) must exceed "
                f"VITRINE_KAFKA_ACK_TIMEOUT_S ({self.kafka_ack_timeout_s:g})"
            )
        return self

    @property
    def stack_file(self) -> Path:
        return self.data_dir / STACK_FILE

    def uses_embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap

    def uses_embedded_postgres(self) -> bool:
        return not self.database_url

    def resolved(self) -> Settings:
        """Fill empty broker/database addresses from the running embedded stack (`vitrine up`)."""
        if self.kafka_bootstrap and self.database_url:
            return self
        if not self.stack_file.exists():
            missing = [
                n
                for n, v in (
                    ("VITRINE_KAFKA_BOOTSTRAP", self.kafka_bootstrap),
                    ("VITRINE_DATABASE_URL", self.database_url),
                )
                if not v
            ]
            raise StackNotRunning(
                f"no embedded stack is running under {self.data_dir.resolve()} "
                f"(start it with `vitrine up`) and {', '.join(missing)} not set"
            )
        stack = json.loads(self.stack_file.read_text())
        return self.model_copy(
            update={
                "kafka_bootstrap": self.kafka_bootstrap or stack["kafka_bootstrap"],
                "database_url": self.database_url or stack["database_url"],
            }
        )

    @property
    def fetch_allowed_hosts(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.fetch_allow_hosts.split(",") if h.strip())

    def topic(self, name: str) -> str:
        """The full topic name for a logical topic (prefix applied)."""
        return f"{self.topic_prefix}{name}"


class StackNotRunning(RuntimeError):
    """Raised when no broker/database address is configured and no embedded stack runs."""
