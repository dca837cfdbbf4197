"""Pipeline health: outages, events in, indexed, failed images, the models (active, rollback target, re-embed
progress of each deployment), dead letters, consumer lag, ingestion rate."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import data, model_data
from dashboards.ui import current_tenant, database_url_or_stop, outage_lines


def deployment_state(d: dict) -> str:
    """A deployment's state as `vitrine status` words it: re-embed progress, ready with its index, or why it failed."""
    if d["status"] == "failed":
        return f"failed: {d['reason'] or 'no reason recorded'}"
    if d["status"] == "retiring":
        return "retiring: its vectors and index are being deleted"
    source = " from the images" if d.get("from_images") else ""
    if d["status"] == "embedding":
        state = (
            f"re-embedding{source}, {d['phase']} {d['progress']:.0%} "
            f"({d['items_done']:,}/{d['items_total']:,} items read)"
        )
    else:
        state = f"ready, {d['index_kind']} index"
        if d.get("repairing"):
            state += ", writing the vectors ingest could not (repair)"
    if d.get("items_failed"):
        state += f", {d['items_failed']:,} item(s) without a vector (image unavailable or changed)"
    return state


tenant = current_tenant()
url = database_url_or_stop()
settings = data.get_settings()
st.title("Pipeline health")
st.caption(f"Tenant **{tenant}** · the same figures as `vitrine status` · refreshed every {data.HEALTH_TTL_S} s")

# First, and before any read that needs Postgres: during an outage this is what the page has to say.
health = data.outage_health(url, settings.kafka_bootstrap, settings.worker_web_port)
for level, line in outage_lines(health):
    getattr(st, level)(line)

try:
    catalog = data.catalog_health(url, tenant)
except RuntimeError as exc:
    st.error(f"Cannot read the catalog: {exc}.")
    st.stop()
counts = catalog[0] if catalog else {}
kafka = data.kafka_health(url, settings.kafka_bootstrap, settings.topic_prefix)
events = data.events_in(url, tenant)

st.subheader("Catalog")
c = st.columns(6)
c[0].metric("Catalog events in (API)", f"{events['catalog_events']:,}")
c[1].metric("Products indexed", f"{counts.get('products', 0):,}")
c[2].metric("Items (vectors)", f"{counts.get('items', 0):,}")
c[3].metric("Images ok", f"{counts.get('images_ok', 0):,}")
c[4].metric("Images pending", f"{counts.get('images_pending', 0):,}")
c[5].metric("Images failed", f"{counts.get('images_failed', 0):,}")
if counts.get("failure_reasons"):
    st.markdown("**Failed images by reason** (most frequent first)")
    st.dataframe(pd.DataFrame(counts["failure_reasons"]), hide_index=True, width="stretch")
elif not counts.get("products"):
    st.info(
        f"Nothing ingested yet for tenant {tenant}: push products with `POST /v1/catalog/events` or "
        f"`vitrine catalog import FEED --tenant {tenant}` and keep `vitrine worker` running."
    )

st.subheader("Models")
embedder_key, _ = data.embedder_identity(settings)
models = model_data.tenant_models(url, tenant)
active = models["active_model"] or embedder_key
ready = {m["model_key"] for m in models["ready"]}
deployments = counts.get("deployments", [])
previous = models["previous_model"]
st.markdown(
    f"The `visual` arm serves **`{active}`**"
    + (" (the deployed embedder)" if active == embedder_key else " (a trained model)")
    + (
        f" · rollback target **`{previous}`** (`vitrine model rollback --tenant {tenant}`)"
        if previous
        else " · no rollback target yet"
    )
)
if active != embedder_key and active not in ready:
    state = next((d for d in deployments if d["model_key"] == active), None)
    st.warning(
        f"The active model `{active}` is not ready to serve"
        + (f" ({deployment_state(state)})" if state else " (no deployment of it for this tenant)")
        + ": the `visual` arm answers with the baseline (fallback `model_not_ready`) until it is."
    )
mark = " · **active**"
st.markdown(
    f"`{embedder_key}`{mark if active == embedder_key else ''}: the deployed embedder, always ready, "
    f"{settings.index_kind} index"
)
for d in deployments:
    line = f"`{d['model_key']}`{mark if d['model_key'] == active else ''}: {deployment_state(d)}"
    if d["status"] == "embedding":
        st.progress(min(max(d["progress"], 0.0), 1.0), text=line)
    elif d["status"] == "failed":
        st.error(line + f" (deploy again to retry: `vitrine model deploy {d['model_key']} --tenant {tenant}`)")
    else:
        st.markdown(line)
if not deployments:
    st.caption(
        f"No trained model deployed for tenant {tenant}: `vitrine model deploy MODEL --tenant {tenant}` re-embeds "
        "the catalog with a trained head in the background, then `vitrine model activate` serves it."
    )

st.subheader("Kafka")
k = st.columns(3)
if not kafka["reachable"]:
    st.error(f"Kafka is unreachable: {kafka['error']}")
else:
    lag = kafka["lag"]
    k[0].metric(
        "Worker lag (catalog events)",
        "unavailable" if lag is None else f"{lag:,}",
        help=kafka["lag_error"] or f"group {kafka['group']} on {kafka['topic']}",
    )
    k[1].metric(
        "Dead letters (this tenant)",
        f"{kafka['dead_letters_by_tenant'].get(tenant, 0):,}",
        help="`vitrine catalog dead-letters` lists them; `vitrine catalog replay` re-sends them",
    )
    k[2].metric("Dead letters (all tenants)", f"{kafka['dead_letters'] or 0:,}")
    if kafka["lag_error"]:
        st.warning(f"Consumer lag unavailable: {kafka['lag_error']}")

st.subheader("Interaction events in")
inter = {k.removeprefix("interactions_"): v for k, v in events.items() if k.startswith("interactions_")}
if inter:
    i = st.columns(len(inter))
    for col, (kind, n) in zip(i, sorted(inter.items())):
        col.metric(kind, f"{n:,}")
else:
    st.info("No storefront interaction events yet (exposures arrive with the first `GET /v1/recommendations`).")

st.subheader("Ingestion rate, last 48 hours (per hour)")
rate = data.ingestion_rate(url, tenant)
if not rate:
    st.info("Nothing was indexed, failed or received in the last 48 hours.")
else:
    frame = pd.DataFrame(rate)
    frame["hour"] = pd.to_datetime(frame["hour"], utc=True)
    st.altair_chart(
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("hour:T", title="hour (UTC)"),
            y=alt.Y("n:Q", title="per hour"),
            color=alt.Color("series:N"),
            tooltip=["hour:T", "series:N", "n:Q"],
        )
        .properties(height=280),
        width="stretch",
    )

if st.session_state.get("allowed_tenants", []) is None:  # signed in as operator: every tenant at a glance
    st.subheader("All tenants")
    try:
        everyone = data.catalog_health(url, None)
    except RuntimeError as exc:
        st.error(f"Cannot read the catalog: {exc}.")
        everyone = []
    dead = kafka["dead_letters_by_tenant"] if kafka["reachable"] else {}
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "tenant": t["tenant_id"],
                    "products": t["products"],
                    "deleted": t["deleted"],
                    "images ok": t["images_ok"],
                    "pending": t["images_pending"],
                    "failed": t["images_failed"],
                    "items": t["items"],
                    "active model": t.get("active_model") or embedder_key,
                    "re-embedding": sum(d["status"] == "embedding" for d in t.get("deployments", [])),
                    "dead letters": dead.get(t["tenant_id"], 0) if kafka["reachable"] else None,
                }
                for t in everyone
            ]
        ),
        hide_index=True,
        width="stretch",
    )
