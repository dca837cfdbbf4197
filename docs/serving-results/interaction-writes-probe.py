"""Probe: the caller's CPU and the wall time of writing 100 exposures, before (multi-row VALUES) and after (unnest).

One-off. Start the data dir's Postgres (db.embedded.EmbeddedPostgres(<data dir>/postgres, shared_buffers="2GB")),
then: PROBE_PG=<data dir>/postgres python interaction-writes-probe.py. Each batch is rolled back."""

import os
import time
import uuid

from sqlalchemy.dialects.postgresql import insert

from core.contracts import InteractionEvent
from db.interactions import record_interactions
from db.models import InteractionEvent as Row
from db.popularity import add_engagement
from db.session import create_db_engine, session_factory

URL = "postgresql+psycopg://postgres:@/vitrine?host=" + os.environ["PROBE_PG"]
S = session_factory(create_db_engine(URL))
TENANT = os.environ.get("PROBE_TENANT", "bench-index")


def before(session, events, *, half_life_s):
    """record_interactions as it was before commit 055aede."""
    stmt = insert(Row).values([_row(e) for e in events])
    new = session.execute(
        stmt.on_conflict_do_nothing(constraint="uq_interaction_events_tenant_event").returning(
            Row.tenant_id, Row.product_id, Row.type, Row.occurred_at
        )
    ).all()
    add_engagement(session, [(r.tenant_id, r.product_id, r.type, r.occurred_at) for r in new], half_life_s)
    return len(new)


def _row(e):
    names = ("tenant_id", "event_id", "type", "user_id", "request_id", "product_id", "experiment", "arm", "value")
    return {n: getattr(e, n) for n in names} | {"payload": e.payload, "occurred_at": e.occurred_at}


def exposures(n):
    shown = [f"p{j}" for j in range(10)]
    return [
        InteractionEvent(
            event_id=f"exposure:{uuid.uuid4().hex}",
            tenant_id=TENANT,
            type="exposure",
            user_id=f"u{i}",
            request_id=uuid.uuid4().hex,
            product_id=f"p{i}",
            arm="visual",
            payload={"placement": "similar", "shown": shown, "positions": list(range(1, 11)), "fallback": None},
        )
        for i in range(n)
    ]


for name, write in (("before", before), ("after", record_interactions)) * 2:
    batches = [exposures(100) for _ in range(30)]
    cpu0, wall0, new = time.process_time(), time.perf_counter(), 0
    for events in batches:
        with S() as s:
            new += write(s, events, half_life_s=3 * 86400)
            s.rollback()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(f"{name}: {new} new, CPU {1000 * cpu / 30:.2f} ms, wall {1000 * wall / 30:.2f} ms a batch", flush=True)
