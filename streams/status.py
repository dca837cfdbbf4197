"""The Kafka side of `vitrine status` and the pipeline page: worker lag and dead letters, probed without raising."""

from __future__ import annotations

from kafka.errors import KafkaError

from core.settings import Settings
from streams.dead_letters import iter_dead_letters
from streams.lag import consumer_lag
from streams.sync_producer import BrokerUnreachable
from streams.topics import PRODUCT_EVENTS


def kafka_status(settings: Settings) -> dict:
    """Worker lag and dead letters (total and per tenant); `reachable: false` with the reason instead of failing."""
    events = settings.topic(PRODUCT_EVENTS.name)
    out = {
        "reachable": False,
        "group": settings.app_id,
        "topic": events,
        "lag": None,
        "lag_error": None,
        "dead_letters": None,
        "dead_letters_by_tenant": {},
        "error": None,
    }
    try:
        # Counted by reading, not from offsets (Tansu's end offsets are not high watermarks). Reading
        # first also probes the broker with a short timeout: the lag helper's admin client waits 30 s.
        by_tenant: dict[str, int] = {}
        total = 0
        for record in iter_dead_letters(settings):
            total += 1
            by_tenant[record.tenant_id or "?"] = by_tenant.get(record.tenant_id or "?", 0) + 1
        out["dead_letters"], out["dead_letters_by_tenant"] = total, by_tenant
        out["reachable"] = True
        try:
            out["lag"] = consumer_lag(settings.kafka_bootstrap, settings.app_id, [events])[events]
        except Exception as exc:  # noqa: BLE001  the counts above are still worth printing
            out["lag_error"] = f"{type(exc).__name__}: {exc}"
    except BrokerUnreachable as exc:
        out["error"] = str(exc)
    except (KafkaError, OSError) as exc:
        out["error"] = f"Kafka at {settings.kafka_bootstrap} is unreachable: {exc}"
    return out
