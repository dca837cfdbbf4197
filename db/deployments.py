"""Model deployments: re-embed a tenant's catalog with a trained head in the background, then serve it.

Repository functions (they take a session and never commit, except where a docstring says the function
is one transaction of its own). A deployment goes `embedding` -> `ready` | `failed`; only a `ready`
model serves (`servable_models`), so nothing is ever served from half-written vectors or a half-built
index. While embedding it moves through phases, each resumable:

- **scan**: the tenant's source items (the backbone's vectors) in id order, a page per transaction;
  each page writes the missing vectors of the model and moves the `cursor` in the same transaction,
  so a crash resumes at the last committed page and writes nothing twice.
- **sweep**: once `settle_s` has passed since the scan ended (longer than the worker's deployment cache),
  one more pass writes what a worker that did not know the deployment yet indexed without it.
- **index**: the model's vector index is built (`CREATE INDEX CONCURRENTLY`, so ingest keeps writing),
  checked valid, and the deployment becomes `ready`.

A fine-tuned ONNX tower (`needs_images`) has no stored input to map: its pages read the source items with
their image URLs (`read_image_page`), the runner re-fetches and crops the images outside any transaction,
and `write_image_page` writes the vectors and moves the cursor in one; an item whose image cannot be
fetched or has changed is counted in `items_failed` and left for the sweep.

A `ready` tower goes through one more phase, **repair**, when ingest could not embed some crops (the write
of those items marks `repair_from`, migration 0018: db/catalog.py): `claim_repair` takes it, the same tower
pages write what the items after the mark lack, and `end_repair` sets it `done` again; it serves throughout.

Live ingest writes every `embedding` or `ready` model's vectors in the same transaction as the
backbone's (db/catalog.py `DerivedModel`; a tower embeds the same crops). Both writers lock the product
rows first (ingest updates them; a page takes them FOR SHARE), and a page writes only the items that
have no vector of the model yet, so the two never write one item twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import func, select, text, true, update
from sqlalchemy.orm import Session

from db.catalog import code_texts, vector_text
from db.models import Item, ModelDeployment, Tenant
from db.trained_models import get_model
from db.vector_index import _MODEL_KEY, INDEX_KINDS, IVF_KINDS
from vision.model import VisionError
from vision.trained import read_card

STATUSES = ("embedding", "ready", "failed", "retiring")


class DeploymentError(ValueError):
    """A request the model or deployment state does not allow; `code` names the case, the message says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ServableModel:
    """A model that may serve a tenant: its key, vector dimension and index kind."""

    key: str
    dim: int
    index_kind: str = "halfvec"


@dataclass(frozen=True)
class Page:
    """What one page of a re-embed did."""

    read: int  # source items read
    written: int  # vectors written (items that had none of the model yet)
    finished: bool  # the pass reached the end


def request_deployment(
    session: Session,
    tenant_id: str,
    *,
    model_key: str,
    source_key: str,
    dim: int,
    bits: int | None,
    artefact_path: str,
    index_kind: str = "halfvec",
    needs_images: bool = False,
) -> tuple[ModelDeployment, bool]:
    """Start (or restart, if it failed) re-embedding `model_key` for the tenant; (deployment, started now).

    An `embedding` or `ready` deployment is returned unchanged (asking twice is harmless). A changed
    index kind on a ready model is a new index: the deployment goes back to its index phase.
    """
    if not _MODEL_KEY.match(model_key):
        raise DeploymentError("invalid_key", f"invalid model key {model_key!r}")
    dep = session.get(ModelDeployment, (tenant_id, model_key), with_for_update=True)
    now = datetime.now(UTC)
    if dep is not None and dep.status == "retiring":
        raise DeploymentError(
            "retiring", f"model {model_key!r} is being retired (its vectors are being deleted): deploy it again after"
        )
    if dep is not None and dep.status != "failed":
        if dep.index_kind != index_kind:
            dep.index_kind, dep.status, dep.phase, dep.updated_at = index_kind, "embedding", "index", now
            dep.lease_owner = dep.lease_until = None
            session.flush()
            return dep, True
        return dep, False
    total = _source_count(session, tenant_id, source_key)
    if dep is None:
        dep = ModelDeployment(tenant_id=tenant_id, model_key=model_key)
        session.add(dep)
    dep.source_key, dep.dim, dep.bits, dep.artefact_path, dep.index_kind = (
        source_key,
        dim,
        bits,
        artefact_path,
        index_kind,
    )
    dep.needs_images = needs_images
    dep.status, dep.phase, dep.reason, dep.cursor = "embedding", "scan", None, 0
    dep.items_done, dep.items_written, dep.items_failed, dep.items_total = 0, 0, 0, total
    dep.lease_owner = dep.lease_until = dep.scan_done_at = dep.ready_at = None
    dep.created_at = dep.updated_at = now
    session.flush()
    return dep, True


def deploy_trained(
    session: Session, tenant_id: str, ref: str, *, embedder_key: str, index_kind: str = "halfvec"
) -> tuple[ModelDeployment | None, bool]:
    """Deploy the tenant's trained model `ref` (key or job id): (deployment, started now).

    (None, False) for the deployed embedder's own key (it always serves). DeploymentError when the model is
    unknown to this tenant (another tenant's included), still training, failed, a detector, or a head of
    another backbone than the deployed one. A whole ONNX tower (a fine-tuned backbone, an autoencoder) is
    re-embedded from the images: it embeds the crops of the deployed embedder's items, whatever its backbone.
    """
    if index_kind not in INDEX_KINDS:
        raise DeploymentError("bad_index_kind", f"unknown index kind {index_kind!r}; known: {', '.join(INDEX_KINDS)}")
    if ref == embedder_key:
        return None, False
    job = get_model(session, tenant_id, ref)
    if job is None:
        raise DeploymentError("unknown_model", f"no training job or model {ref!r} for this tenant")
    if job.status != "ready":
        why = "is still training" if job.status == "training" else f"failed: {job.reason}"
        raise DeploymentError("not_ready", f"model {ref!r} {why}; only a ready model can be deployed")
    if job.method == "detector":
        raise DeploymentError(
            "detector", f"{ref!r} is a detector, not an embedding model: activate it with `vitrine detector activate`"
        )
    try:
        card = read_card(Path(job.artefact_path))  # the artefact's own card says what its weights are
    except VisionError as exc:
        raise DeploymentError("artefact_missing", f"model {job.model_key!r} cannot be read: {exc}") from None
    if card.get("weights") != "head.npz":
        if index_kind == "codes":
            raise DeploymentError("bad_index_kind", f"model {job.model_key!r} is a tower without a code layer")
        return request_deployment(
            session,
            tenant_id,
            model_key=job.model_key,
            source_key=embedder_key,  # its items' boxes are the crops the tower embeds
            dim=int(card["dim"]),
            bits=None,
            artefact_path=job.artefact_path,
            index_kind=index_kind,
            needs_images=True,
        )
    source = (card.get("backbone") or {}).get("model_key")
    if source != embedder_key:
        raise DeploymentError(
            "backbone_mismatch",
            f"model {job.model_key!r} maps {source!r} vectors, but this deployment stores {embedder_key!r} ones",
        )
    bits = card.get("bits")
    if index_kind == "codes" and not bits:
        raise DeploymentError("bad_index_kind", f"model {job.model_key!r} has no code layer for the codes index")
    return request_deployment(
        session,
        tenant_id,
        model_key=job.model_key,
        source_key=source,
        dim=int(card["dim"]),
        bits=int(bits) if bits else None,
        artefact_path=job.artefact_path,
        index_kind=index_kind,
    )


def _source_count(session: Session, tenant_id: str, source_key: str) -> int:
    return session.scalar(
        select(func.count()).select_from(Item).where(Item.tenant_id == tenant_id, Item.model == source_key)
    )


def get_deployment(session: Session, tenant_id: str, model_key: str) -> ModelDeployment | None:
    """The tenant's deployment of `model_key`, if any."""
    return session.get(ModelDeployment, (tenant_id, model_key))


def list_deployments(session: Session, tenant_id: str | None = None) -> list[ModelDeployment]:
    """The tenant's deployments, newest first (tenant_id None: every tenant's, for the operator CLI)."""
    stmt = select(ModelDeployment).order_by(ModelDeployment.created_at.desc())
    if tenant_id is not None:
        stmt = stmt.where(ModelDeployment.tenant_id == tenant_id)
    return list(session.scalars(stmt))


def writing_deployments(session: Session) -> list[ModelDeployment]:
    """Every tenant's `embedding` or `ready` deployment: new products get vectors of each (the ingest's list)."""
    return list(session.scalars(select(ModelDeployment).where(ModelDeployment.status.in_(("embedding", "ready")))))


def servable_models(session: Session, tenant_id: str) -> dict[str, ServableModel]:
    """The tenant's `ready` models by key (the deployed embedder is not listed: it is always servable)."""
    rows = session.execute(
        select(ModelDeployment.model_key, ModelDeployment.dim, ModelDeployment.index_kind).where(
            ModelDeployment.tenant_id == tenant_id, ModelDeployment.status == "ready"
        )
    ).all()
    return {key: ServableModel(key, dim, kind) for key, dim, kind in rows}


def serving_index(dep: ModelDeployment) -> tuple[str, int, str]:
    """(model key, indexed dimension, kind) of the index a deployment serves from: for codes, the code width."""
    return dep.model_key, dep.bits if dep.index_kind == "codes" else dep.dim, dep.index_kind


def ivf_indexes(session: Session) -> set[tuple[str, int, str]]:
    """`serving_index` of every ready deployment with an IVFFlat index, all tenants (the worker keeps them sized to
    their catalog: db/vector_index.py `refresh_ivf_index`)."""
    ready = select(ModelDeployment).where(ModelDeployment.status == "ready", ModelDeployment.index_kind.in_(IVF_KINDS))
    return {serving_index(dep) for dep in session.scalars(ready)}


def progress(dep: ModelDeployment) -> float:
    """The share done, 0..1: the scan counts for 90 %, the sweep and the index for the rest."""
    if dep.status == "ready":
        return 1.0
    scanned = min(dep.items_done / dep.items_total, 1.0) if dep.items_total else 1.0
    return round({"scan": 0.9 * scanned, "sweep": 0.9, "index": 0.95}.get(dep.phase, 1.0), 4)


def activate(session: Session, tenant_id: str, model_key: str, *, embedder_key: str) -> Tenant:
    """Make `model_key` the model of the tenant's plain `visual` arm; the active one becomes the rollback target.

    Only a `ready` deployment, or the deployed embedder itself, can be activated (DeploymentError otherwise).
    """
    tenant = session.get(Tenant, tenant_id, with_for_update=True)
    if model_key != embedder_key:
        dep = get_deployment(session, tenant_id, model_key)
        if dep is None:
            raise DeploymentError("not_deployed", f"model {model_key!r} is not deployed for tenant {tenant_id!r}")
        if dep.status != "ready":
            raise DeploymentError("not_ready", _not_ready(dep))
    current = tenant.active_model or embedder_key
    if current != model_key:
        tenant.previous_model, tenant.active_model = current, model_key
    session.flush()
    return tenant


def rollback(session: Session, tenant_id: str, *, embedder_key: str) -> Tenant:
    """Point the tenant's `visual` arm back at the previous model (which becomes the rollback target in turn)."""
    tenant = session.get(Tenant, tenant_id, with_for_update=True)
    if not tenant.previous_model:
        raise DeploymentError("no_previous", f"tenant {tenant_id!r} has no previous model to roll back to")
    previous = tenant.previous_model
    if previous != embedder_key:
        dep = get_deployment(session, tenant_id, previous)
        if dep is None or dep.status != "ready":
            raise DeploymentError("not_ready", f"the previous model {previous!r} is no longer ready to serve")
    tenant.previous_model, tenant.active_model = tenant.active_model or embedder_key, previous
    session.flush()
    return tenant


def _not_ready(dep: ModelDeployment) -> str:
    if dep.status == "retiring":
        return f"model {dep.model_key!r} is being retired"
    if dep.status == "failed":
        return f"model {dep.model_key!r} failed to deploy: {dep.reason}"
    return f"model {dep.model_key!r} is still re-embedding ({dep.phase}, {progress(dep):.0%})"


# --- the runner's steps (streams/reembed.py drives them) ---


def _lease_free(owner: str, now: datetime):
    """A deployment's lease is free, expired or already `owner`'s."""
    return (
        ModelDeployment.lease_until.is_(None)
        | (ModelDeployment.lease_until < now)
        | (ModelDeployment.lease_owner == owner)
    )


def _take(session: Session, dep: ModelDeployment, owner: str, now: datetime, lease_s: float) -> None:
    dep.lease_owner, dep.lease_until, dep.updated_at = owner, now + timedelta(seconds=lease_s), now
    session.flush()


def _held(dep: ModelDeployment, owner: str) -> tuple:
    """This deployment's row, while `owner` holds its lease."""
    return (
        ModelDeployment.tenant_id == dep.tenant_id,
        ModelDeployment.model_key == dep.model_key,
        ModelDeployment.lease_owner == owner,
    )


def claim(
    session: Session, owner: str, *, lease_s: float, images: bool = True, settle_s: float = 0.0
) -> ModelDeployment | None:
    """Take the oldest `embedding` deployment, or `retiring` one retired at least `settle_s` ago, whose lease is
    free, expired or already `owner`'s, for `lease_s` (without `images`, no tower still embedding: the caller
    cannot fetch images; retiring one needs none)."""
    now = datetime.now(UTC)
    dep = session.scalar(
        select(ModelDeployment)
        .where(
            (ModelDeployment.status == "embedding")
            | (
                (ModelDeployment.status == "retiring")
                & (ModelDeployment.retired_at <= now - timedelta(seconds=settle_s))
            ),
            _lease_free(owner, now),
            true() if images else ModelDeployment.needs_images.is_(False) | (ModelDeployment.status == "retiring"),
        )
        .order_by(ModelDeployment.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if dep is not None:
        _take(session, dep, owner, now, lease_s)
    return dep


_READ_PAGE = text("""
    SELECT s.id, s.product_id FROM items s
    WHERE s.tenant_id = :t AND s.model = :src AND s.id > :after
      AND NOT EXISTS (SELECT 1 FROM items x WHERE x.image_id = s.image_id AND x.model = :key
                      AND x.kind = s.kind AND x.box = s.box)
    ORDER BY s.id LIMIT :page
""")

# Products are locked before the vectors are read: every catalog writer locks them first, so an
# update or delete of a product either finished before this read or waits for this page's commit.
_LOCK_PRODUCTS = text("SELECT id FROM products WHERE id = ANY(:ids) ORDER BY id FOR SHARE")

_COPY_ITEMS = text("""
    INSERT INTO items (tenant_id, product_id, image_id, kind, box, label, score, model, dim, embedding, in_stock,
                       category, code)
    SELECT i.tenant_id, i.product_id, i.image_id, i.kind, i.box, i.label, i.score, CAST(:model AS varchar), :dim,
           k.emb, i.in_stock, i.category, k.code
    FROM unnest(CAST(:ids AS bigint[]), CAST(:emb AS vector[]), CAST(:code AS varbit[])) AS k(id, emb, code)
    JOIN items i ON i.id = k.id AND i.tenant_id = :t
    WHERE NOT EXISTS (SELECT 1 FROM items x WHERE x.image_id = i.image_id AND x.model = CAST(:model AS varchar)
                      AND x.kind = i.kind AND x.box = i.box)
""")


def reembed_page(
    session: Session,
    dep: ModelDeployment,
    owner: str,
    *,
    transform: Callable[[np.ndarray], np.ndarray],
    codes: Callable[[np.ndarray], np.ndarray] | None = None,
    page: int = 2000,
    lease_s: float = 60.0,
) -> Page:
    """One page of the current pass (scan or sweep), in the caller's transaction: commit it as a whole.

    Writes `transform(vectors)` (and, with `codes`, their codes on the same rows) for source items
    after the cursor that have no vector of the model yet, then moves the cursor and renews the lease.
    DeploymentError("lease_lost") if another process took the deployment over meanwhile.
    """
    params = {"t": dep.tenant_id, "src": dep.source_key, "key": dep.model_key, "after": dep.cursor, "page": page}
    candidates = session.execute(_READ_PAGE, params).all()
    if not candidates:
        _advance(session, dep, owner, lease_s=lease_s, read=0, written=0, cursor=dep.cursor)
        return Page(0, 0, True)
    session.execute(_LOCK_PRODUCTS, {"ids": sorted({r.product_id for r in candidates})})
    ids = [r.id for r in candidates]
    # Re-read after the locks: a product rewritten meanwhile has new items (and maybe this model's vectors).
    rows = read_vectors(session, dep.tenant_id, ids)
    written = 0
    if rows:
        live = [item_id for item_id, _ in rows]
        vectors = np.stack([vector for _, vector in rows])
        coded = codes(vectors) if codes is not None and dep.bits else None
        written = _copy_vectors(session, dep, live, transform(vectors), what="mapped vectors", codes=coded)
    _advance(session, dep, owner, lease_s=lease_s, read=len(candidates), written=written, cursor=ids[-1])
    return Page(len(candidates), written, False)


@dataclass(frozen=True)
class ImageItem:
    """A source item of a tower's page: where its pixels are (the image's URL and box) and what they were."""

    id: int
    product_id: int
    tenant_id: str
    url: str
    content_hash: str | None
    box: tuple[float, float, float, float]


_READ_IMAGE_PAGE = text("""
    SELECT s.id, s.product_id, s.tenant_id, pi.url, pi.content_hash, s.box FROM items s
    JOIN product_images pi ON pi.id = s.image_id
    WHERE s.tenant_id = :t AND s.model = :src AND s.id > :after
      AND NOT EXISTS (SELECT 1 FROM items x WHERE x.image_id = s.image_id AND x.model = :key
                      AND x.kind = s.kind AND x.box = s.box)
    ORDER BY s.id LIMIT :page
""")


def read_image_page(session: Session, dep: ModelDeployment, *, page: int = 64) -> list[ImageItem]:
    """The next source items of a tower's pass (after the cursor, without a vector of the model), with their image."""
    params = {"t": dep.tenant_id, "src": dep.source_key, "key": dep.model_key, "after": dep.cursor, "page": page}
    return [
        ImageItem(r.id, r.product_id, r.tenant_id, r.url, r.content_hash, tuple(r.box))
        for r in session.execute(_READ_IMAGE_PAGE, params)
    ]


def write_image_page(
    session: Session,
    dep: ModelDeployment,
    owner: str,
    *,
    read: list[ImageItem],
    vectors: dict[int, np.ndarray],
    lease_s: float = 60.0,
) -> Page:
    """Write a tower's vectors of a page read by `read_image_page` and move the cursor past it, in the caller's
    transaction (commit it as a whole). Items without a vector count as failed; an item rewritten or deleted
    since the read is skipped (its product's new items come from ingest or the sweep)."""
    if not read:
        _advance(session, dep, owner, lease_s=lease_s, read=0, written=0, cursor=dep.cursor)
        return Page(0, 0, True)
    written = 0
    if vectors:
        ids = sorted(vectors)
        products = sorted({item.product_id for item in read if item.id in vectors})
        session.execute(_LOCK_PRODUCTS, {"ids": products})
        written = _copy_vectors(session, dep, ids, np.stack([vectors[i] for i in ids]), what="embedded crops")
    failed = len(read) - len(vectors)
    _advance(session, dep, owner, lease_s=lease_s, read=len(read), written=written, cursor=read[-1].id, failed=failed)
    return Page(len(read), written, False)


def _copy_vectors(
    session: Session, dep: ModelDeployment, ids: list[int], mapped: np.ndarray, *, what: str, codes=None
) -> int:
    """Write the model's vectors `mapped` (and `codes`, 0/1 (n, bits), on the same rows) of the tenant's source
    items `ids` (those still there and without one); rows written. DeploymentError("bad_model") if the model's
    output does not have the model's shape."""
    if mapped.shape != (len(ids), dep.dim):
        raise DeploymentError("bad_model", f"the model {what} to {mapped.shape}, expected {(len(ids), dep.dim)}")
    if codes is not None and np.shape(codes) != (len(ids), dep.bits):
        raise DeploymentError("bad_model", f"the model coded to {np.shape(codes)}, expected {(len(ids), dep.bits)}")
    code = code_texts(codes) if codes is not None else [None] * len(ids)
    params = {"ids": ids, "t": dep.tenant_id, "emb": [vector_text(v) for v in mapped], "model": dep.model_key,
              "dim": dep.dim, "code": code}  # fmt: skip
    return session.execute(_COPY_ITEMS, params).rowcount


def read_vectors(session: Session, tenant_id: str, ids: list[int]) -> list[tuple[int, np.ndarray]]:
    """(id, float32 vector) of the tenant's items `ids`, in id order, in the session's transaction.

    Read in pgvector's binary form (int16 dim, int16 unused, dim big-endian float32): parsing 1280 floats of
    text per row was most of a re-embed's time and CPU. No loader is registered on the pooled connection,
    so what other code reads through it is unchanged.
    """
    raw = session.connection().connection.driver_connection
    with raw.cursor(binary=True) as cur:
        cur.execute(
            "SELECT id, embedding FROM items WHERE id = ANY(%s) AND tenant_id = %s ORDER BY id", (ids, tenant_id)
        )
        return [(item_id, np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32)) for item_id, data in cur]


def _advance(
    session: Session,
    dep: ModelDeployment,
    owner: str,
    *,
    lease_s: float,
    read: int,
    written: int,
    cursor: int,
    failed: int = 0,
) -> None:
    renew_lease(
        session,
        dep,
        owner,
        status=dep.status,  # `embedding`, or `ready` in a tower's repair pass
        lease_s=lease_s,
        cursor=cursor,
        items_done=ModelDeployment.items_done + (read if dep.phase == "scan" else 0),
        items_written=ModelDeployment.items_written + written,
        items_failed=ModelDeployment.items_failed + failed,
    )
    dep.cursor = cursor


def renew_lease(session: Session, dep: ModelDeployment, owner: str, *, status: str, lease_s: float, **values) -> None:
    """Extend `owner`'s lease of a deployment still in `status` by `lease_s`, setting `values` with it;
    DeploymentError("lease_lost") if another process took it over or its status changed (a retirement)."""
    now = datetime.now(UTC)
    held = session.execute(
        update(ModelDeployment)
        .where(*_held(dep, owner), ModelDeployment.status == status)
        .values(**values, lease_until=now + timedelta(seconds=lease_s), updated_at=now)
        .returning(ModelDeployment.model_key)
    ).first()
    if held is None:
        raise DeploymentError("lease_lost", f"deployment {dep.model_key!r} of {dep.tenant_id!r} was taken over")


def next_phase(session: Session, dep: ModelDeployment) -> str:
    """After a pass reached its end: scan -> sweep (cursor back to 0) -> index. Returns the new phase."""
    now = datetime.now(UTC)
    if dep.phase == "scan":
        # The sweep tries the scan's failed items again: what it cannot write either is what stays without.
        dep.phase, dep.cursor, dep.scan_done_at, dep.items_failed = "sweep", 0, now, 0
        # It also reads every item a repair mark committed so far points at; a later mark outlives it.
        dep.repair_from = None
    elif dep.phase == "sweep":
        dep.phase = "index"
    dep.updated_at = now
    session.flush()
    return dep.phase


def sweep_due(dep: ModelDeployment, *, settle_s: float) -> bool:
    """Whether the sweep may start: `settle_s` after the scan ended (every worker's cache knows the model by then)."""
    return dep.scan_done_at is not None and datetime.now(UTC) >= dep.scan_done_at + timedelta(seconds=settle_s)


def mark_ready(session: Session, dep: ModelDeployment, owner: str) -> None:
    """The vectors and the index are complete: the model may serve."""
    now = datetime.now(UTC)
    session.execute(
        update(ModelDeployment)
        .where(*_held(dep, owner), ModelDeployment.status == "embedding")  # retired meanwhile: it stays retiring
        .values(status="ready", phase="done", ready_at=now, updated_at=now, lease_owner=None, lease_until=None)
    )


def claim_repair(session: Session, owner: str, *, lease_s: float) -> ModelDeployment | None:
    """Take a `ready` tower with a repair mark, or with a repair pass a crashed process left (phase `repair`),
    whose lease is free, expired or already `owner`'s, for `lease_s`. Its cursor goes to the mark (the lower
    of it and a pass's cursor) and the mark is cleared: a failure while the pass runs marks it again."""
    now = datetime.now(UTC)
    dep = session.scalar(
        select(ModelDeployment)
        .where(
            ModelDeployment.status == "ready",
            ModelDeployment.needs_images.is_(True),
            ModelDeployment.repair_from.is_not(None) | (ModelDeployment.phase == "repair"),
            _lease_free(owner, now),
        )
        .order_by(ModelDeployment.updated_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if dep is None:
        return None
    if dep.repair_from is not None:
        dep.cursor = dep.repair_from if dep.phase != "repair" else min(dep.cursor, dep.repair_from)
    dep.phase, dep.repair_from = "repair", None
    _take(session, dep, owner, now, lease_s)
    return dep


def end_repair(session: Session, dep: ModelDeployment, owner: str) -> None:
    """The repair pass reached the end: phase `done`, lease released (a mark set meanwhile stays for the next)."""
    now = datetime.now(UTC)
    session.execute(
        update(ModelDeployment)
        .where(*_held(dep, owner), ModelDeployment.status == "ready", ModelDeployment.phase == "repair")
        .values(phase="done", updated_at=now, lease_owner=None, lease_until=None)
    )


def mark_failed(session: Session, tenant_id: str, model_key: str, reason: str) -> None:
    """The deployment cannot complete (the reason, one sentence); it never serves. Deploy again to retry.
    A deployment retired meanwhile stays retiring (its vectors are still to be deleted)."""
    now = datetime.now(UTC)
    session.execute(
        update(ModelDeployment)
        .where(
            ModelDeployment.tenant_id == tenant_id,
            ModelDeployment.model_key == model_key,
            ModelDeployment.status == "embedding",
        )
        .values(status="failed", reason=reason[:1000], updated_at=now, lease_owner=None, lease_until=None)
    )
