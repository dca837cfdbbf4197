"""The background re-embed: run the tenants' pending model deployments page by page (db/deployments.py).

Every worker runs `Reembedder.run_forever` beside its agents, and `maintain_indexes_forever` in a thread of its
own (an IVF tuning takes minutes at 1M: a deployment does not wait behind it); `vitrine model reembed` runs
`run_until_idle` in the foreground. A deployment is leased to one process at a time; a process that dies loses its lease
after `lease_s` and the next one resumes at the last committed page. Pages are short transactions with a
pause between them (`reembed_pause_s`), so catalog events and storefront queries keep their latency.

A head maps the stored backbone vectors. A fine-tuned tower needs the pixels: its pages are smaller
(`reembed_image_page` items), their images are fetched again and cropped outside any transaction
(streams/tower_images.py), the tower runs on one thread, and after each page the runner rests for as long
as the page took times (1 - duty) / duty (`reembed_image_duty`), so the worker's own events keep the rest.

`DeployedHeads` is the ingest's side: per tenant, the heads whose vectors new products get in the same
transaction as the backbone's, re-read every `deployment_cache_ttl_s`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from core.pace import rest_after
from db import deployments as repo
from db import retirement
from db.catalog import DerivedModel
from db.ivf_tuning import TUNE_MIN_ENTRIES, needs_tuning, tune_ivf_index
from db.models import ModelDeployment
from db.vector_index import (
    INDEX_KINDS,
    drop_vector_index,
    ensure_vector_index,
    index_ready,
    refresh_ivf_index,
    set_build_memory,
)
from streams.tower_images import ImageCrops, embed_each
from vision.model import VisionError
from vision.trained import TrainedEmbedder

log = logging.getLogger(__name__)

SETTLE_MARGIN_S = 10.0  # added to the workers' cache TTL before the sweep: ingest transactions end well within it


def owner_name() -> str:
    """This process, as a lease holder: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ModelCache:
    """Loaded trained models by artefact path (one load per process, shared by the runner and the ingest).

    A head loads only its weights (the stored backbone vectors are its input); a tower loads its ONNX graph,
    run on `tower_threads` threads (one by default: the worker's own embedder keeps the other cores).
    """

    def __init__(self, cache_dir: Path, *, tower_threads: int = 1):
        self.cache_dir, self.tower_threads = cache_dir, tower_threads
        self._models: dict[str, TrainedEmbedder] = {}
        self._lock = threading.Lock()

    def get(self, artefact_path: str) -> TrainedEmbedder:
        """The loaded model; VisionError (with the reason) if the artefact is missing or broken."""
        with self._lock:
            model = self._models.get(artefact_path)
            if model is None:
                model = TrainedEmbedder(artefact=artefact_path, cache_dir=self.cache_dir, threads=self.tower_threads)
                if model.is_tower:
                    model.load()
                else:
                    model.head_weights()
                self._models[artefact_path] = model
            return model


def transforms(model: TrainedEmbedder, dep: ModelDeployment):
    """(vectors -> model vectors, vectors -> 0/1 codes or None) for a head deployment."""
    codes = None
    if dep.bits:

        def codes(features):
            return model.codes(features, from_features=True)

    return model.embed_features, codes


class Reembedder:
    """Runs pending deployments; one instance per process."""

    def __init__(
        self,
        engine: Engine,
        sessions: sessionmaker[Session],
        models: ModelCache,
        *,
        page: int = 2000,
        pause_s: float = 0.05,
        lease_s: float = 60.0,
        settle_s: float = 20.0,
        owner: str | None = None,
        index_memory: str = "512MB",
        images: ImageCrops | None = None,
        image_page: int = 32,
        image_duty: float = 0.5,
        retire_after_s: float | None = None,
        embedder_index: tuple[str, int, str] | None = None,
        index_check_s: float = 300.0,
        tune_min_entries: int = TUNE_MIN_ENTRIES,
        tune_options: Mapping[str, object] | None = None,
    ):
        self.engine, self.sessions, self.models = engine, sessions, models
        # IVFFlat indexes are re-sized to their catalog every index_check_s, and tuned to it (db/ivf_tuning.py)
        # once they hold tune_min_entries: every ready deployment's, and the deployed embedder's (key, dim, kind)
        # when VITRINE_INDEX_KIND makes it serve from one.
        self.embedder_index, self.index_check_s = embedder_index, index_check_s
        # tune_ivf_index's options: beside live traffic, querying at most half the time, each query on one core.
        self.tune_min_entries = tune_min_entries
        self.tune_options = {"duty": 0.5, "parallel": False} | dict(tune_options or {})
        self.index_memory = index_memory
        self.images, self.image_page, self.image_duty = images, image_page, image_duty
        self.page, self.pause_s, self.lease_s, self.settle_s = page, pause_s, lease_s, settle_s
        self.owner = owner or owner_name()
        # A retired model's vectors are deleted only once no worker's deployment cache can still write them.
        self.retire_after_s = settle_s if retire_after_s is None else retire_after_s

    def run_once(self, stop: threading.Event | None = None) -> ModelDeployment | None:
        """Claim one deployment and advance it as far as it can go now; returns it (None: nothing to do).

        It stops when the deployment is ready or failed, when its sweep must wait for `settle_s`, or
        when `stop` is set. Database errors propagate (the caller waits and tries again; the lease
        keeps the deployment this process's until it expires).
        """
        with self.sessions.begin() as s:
            dep = repo.claim(
                s, self.owner, lease_s=self.lease_s, images=self.images is not None, settle_s=self.retire_after_s
            )
        if dep is None:
            return self._repair(stop) if self.images is not None else None
        if dep.status == "retiring":
            return self._retire(dep, stop)
        try:
            model = self.models.get(dep.artefact_path)
            if model.dim != dep.dim or model.model_key != dep.model_key:
                raise VisionError(f"{dep.artefact_path} is not the {dep.dim}-d model {dep.model_key}")
        except VisionError as exc:
            with self.sessions.begin() as s:
                repo.mark_failed(s, dep.tenant_id, dep.model_key, f"cannot load the model: {exc}")
            log.error("deployment %s of %s failed: %s", dep.model_key, dep.tenant_id, exc)
            return dep
        if dep.needs_images:

            def next_page() -> repo.Page:
                return self._tower_page(dep, model)

        else:
            transform, codes = transforms(model, dep)

            def next_page() -> repo.Page:
                with self.sessions.begin() as s:
                    s.add(dep)
                    return repo.reembed_page(
                        s, dep, self.owner, transform=transform, codes=codes, page=self.page, lease_s=self.lease_s
                    )

        tenant, key = dep.tenant_id, dep.model_key  # readable after a rolled-back page expired `dep`
        while not (stop and stop.is_set()):
            if dep.phase == "sweep" and not repo.sweep_due(dep, settle_s=self.settle_s):
                return dep  # every worker's cache must know the model first; claimed again later
            if dep.phase in ("scan", "sweep"):
                try:
                    page = next_page()
                except (repo.DeploymentError, VisionError) as exc:
                    if isinstance(exc, repo.DeploymentError) and exc.code == "lease_lost":
                        raise
                    # The model itself is at fault (its output does not fit): retrying would fail forever.
                    with self.sessions.begin() as s:
                        repo.mark_failed(s, tenant, key, str(exc))
                    log.error("deployment %s of %s failed: %s", key, tenant, exc)
                    with self.sessions() as s:
                        return s.get(ModelDeployment, (tenant, key))
                if page.finished:  # a crash before this commit finds the pass finished again: idempotent
                    with self.sessions.begin() as s:
                        s.add(dep)
                        repo.next_phase(s, dep)
                    log.info("deployment %s of %s: now %s", dep.model_key, dep.tenant_id, dep.phase)
                elif self.pause_s and not dep.needs_images:  # a tower's page rests in _tower_page
                    time.sleep(self.pause_s)
                continue
            if dep.phase == "index":
                self._build_indexes(dep)
                with self.sessions.begin() as s:
                    repo.mark_ready(s, dep, self.owner)
                dep.status, dep.phase = "ready", "done"
                log.info("deployment %s of %s is ready", dep.model_key, dep.tenant_id)
            return dep
        return dep

    def _retire(self, dep: ModelDeployment, stop: threading.Event | None) -> ModelDeployment:
        """Drop a retired model's indexes (unless another tenant still has vectors of it: an index covers a key),
        delete its vectors page by page, then its row. Claimed only `retire_after_s` after the retirement."""
        with self.sessions() as s:
            shared = retirement.model_in_use_elsewhere(s, dep)
        if not shared:  # first: deleting rows from an index nothing searches any more is wasted work
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for kind in INDEX_KINDS:  # whichever it had (codes included); one it never had is a no-op
                    drop_vector_index(conn, dep.model_key, kind, concurrently=True)
        while not (stop and stop.is_set()):
            with self.sessions.begin() as s:
                deleted = retirement.retire_page(s, dep, self.owner, page=self.page, lease_s=self.lease_s)
            if not deleted:
                break
            if self.pause_s:
                time.sleep(self.pause_s)
        else:
            return dep
        with self.sessions.begin() as s:
            gone = retirement.forget(s, dep, self.owner)
        if not gone:
            raise repo.DeploymentError("lease_lost", f"retiring {dep.model_key!r} of {dep.tenant_id!r} was taken over")
        log.info("deployment %s of %s retired: vectors and index deleted", dep.model_key, dep.tenant_id)
        dep.status = "retired"
        return dep

    def _repair(self, stop: threading.Event | None) -> ModelDeployment | None:
        """Claim a ready tower marked for repair (ingest could not embed some crops) and write the vectors its
        items lack, from the images, in pages as a scan's; it serves throughout. None: nothing to repair."""
        with self.sessions.begin() as s:
            dep = repo.claim_repair(s, self.owner, lease_s=self.lease_s)
        if dep is None:
            return None
        log.info("repairing %s of %s from item %d", dep.model_key, dep.tenant_id, dep.cursor)
        try:
            model = self.models.get(dep.artefact_path)
        except VisionError as exc:  # the artefact is gone: nothing can write its vectors, say so once
            log.error("cannot repair %s of %s, its items stay without vectors: %s", dep.model_key, dep.tenant_id, exc)
        else:
            while not self._tower_page(dep, model, strict=False).finished:
                if stop and stop.is_set():
                    return dep  # the lease expires; the next claim resumes at the cursor
        with self.sessions.begin() as s:
            repo.end_repair(s, dep, self.owner)
        dep.phase = "done"
        return dep

    def _tower_page(self, dep: ModelDeployment, model: TrainedEmbedder, *, strict: bool = True) -> repo.Page:
        """Read a page of items, fetch and crop their images and run the tower (no transaction open meanwhile),
        write the vectors and move the cursor in one transaction, then rest for the duty cycle.

        A tower that fails on the page runs again crop by crop; the crops it cannot take count as failed. If it
        takes none, the graph itself is at fault: with `strict` (a deployment) that fails the deployment."""
        started = time.perf_counter()
        with self.sessions() as s:
            read = repo.read_image_page(s, dep, page=self.image_page)
        vectors = {}
        if read:
            crops, failures = self.images.crops(read)
            if failures:
                log.warning("deployment %s of %s: %d item(s) without a usable image: %s", dep.model_key,
                            dep.tenant_id, sum(failures.values()), dict(failures))  # fmt: skip
            if crops:
                ids = list(crops)
                embedded, errors = embed_each(model.embed, [crops[i] for i in ids])
                vectors = {i: v for i, v in zip(ids, embedded, strict=True) if v is not None}
                if errors and not vectors and strict:  # the graph itself: retrying would fail forever
                    raise repo.DeploymentError("bad_model", f"the tower did not run: {errors[0]}") from errors[0]
                if errors:
                    log.warning("deployment %s of %s: the tower did not run on %d of %d crop(s): %s", dep.model_key,
                                dep.tenant_id, len(errors), len(ids), errors[0])  # fmt: skip
        with self.sessions.begin() as s:
            s.add(dep)
            page = repo.write_image_page(s, dep, self.owner, read=read, vectors=vectors, lease_s=self.lease_s)
        if not page.finished:
            busy = time.perf_counter() - started
            time.sleep(max(self.pause_s, rest_after(busy, self.image_duty)))
        return page

    def _build_indexes(self, dep: ModelDeployment) -> None:
        """The serving index (for codes: the codes' one; the model's full vectors only re-rank), built without
        blocking writes."""
        key, dim, kind = repo.serving_index(dep)
        with self._index_connection() as conn:
            ensure_vector_index(conn, key, dim, kind=kind, concurrently=True)
            if not index_ready(conn, key, kind):
                raise RuntimeError(f"the {kind} index of {key} is not valid after its build")

    def _ivf_indexes(self) -> list[tuple[str, int, str]]:
        """(model key, dim, kind) of the IVFFlat indexes this worker keeps: every ready deployment's, the embedder's."""
        with self.sessions() as s:
            wanted = repo.ivf_indexes(s)
        if self.embedder_index and self.embedder_index[2] != "halfvec":
            wanted.add(self.embedder_index)
        return sorted(wanted)

    def refresh_indexes(self) -> dict[str, int]:
        """Rebuild (or build) the IVFFlat indexes whose catalog outgrew their lists; {model key/kind: new lists}."""
        wanted = self._ivf_indexes()
        rebuilt = {}
        with self._index_connection() as conn:
            for key, dim, kind in wanted:
                lists = refresh_ivf_index(conn, key, dim, kind)
                if lists is not None:
                    log.info("%s index of %s rebuilt with %d lists for its catalog", kind, key, lists)
                    rebuilt[f"{key}/{kind}"] = lists
        return rebuilt

    def tune_next_index(self, stop: threading.Event | None = None) -> str | None:
        """Tune one IVFFlat index that is large enough and untuned, or tuned at a catalog RETUNE_GROWTH x smaller or
        larger (db/ivf_tuning.py; minutes of queries at 1M, so one per check); the index tuned, or None (also when
        `stop` ended the tuning)."""
        for key, _dim, kind in self._ivf_indexes():
            if stop is not None and stop.is_set():
                return None
            with self.sessions() as s:
                due = needs_tuning(s, key, kind, min_entries=self.tune_min_entries)
            if due and tune_ivf_index(self.sessions, key, kind, stop=stop, **self.tune_options) is not None:
                return f"{key}/{kind}"
        return None

    @contextmanager
    def _index_connection(self) -> Iterator[Connection]:
        """An autocommit connection (CREATE INDEX CONCURRENTLY) with the index builds' memory."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # The build's memory: with the 64 MB default an HNSW build takes ~2.5x longer (PLATFORM.md).
            set_build_memory(conn, self.index_memory, local=False)
            try:
                yield conn
            finally:
                conn.execute(text("RESET maintenance_work_mem"))  # the connection goes back to the pool

    def run_until_idle(self, stop: threading.Event | None = None, *, poll_s: float = 1.0) -> None:
        """Run deployments until none is left embedding (a sweep waiting for `settle_s` is waited for)."""
        while not (stop and stop.is_set()):
            dep = self.run_once(stop)
            if dep is None:
                return
            if dep.status == "embedding":
                time.sleep(poll_s)

    def run_forever(self, stop: threading.Event, *, poll_s: float = 2.0) -> None:
        """The worker's deployment loop (in a thread of its own): run what is pending, wait, again; survives outages."""
        while not stop.is_set():
            try:
                dep = self.run_once(stop)
            except (DBAPIError, OSError) as exc:  # Postgres restarting: the lease keeps our place
                log.warning("re-embed paused, the database is unavailable: %s", str(exc).splitlines()[0])
                dep = None
            except repo.DeploymentError as exc:
                log.warning("re-embed step refused: %s", exc)
                dep = None
            except Exception:
                log.exception("re-embed step failed; retrying")
                dep = None
            if dep is None or dep.status != "embedding":
                stop.wait(poll_s)

    def maintain_indexes_forever(self, stop: threading.Event) -> None:
        """The worker's index loop (in another thread): every `index_check_s`, rebuild the IVFFlat indexes whose
        catalog outgrew their lists and tune one that is due; survives outages. Apart from `run_forever`, so a
        deployment's re-embed and its index build go on while an index is tuned (minutes at 1M)."""
        while not stop.is_set():
            try:
                self.refresh_indexes()
                self.tune_next_index(stop)
            except (DBAPIError, OSError) as exc:
                log.warning("index check skipped, the database is unavailable: %s", str(exc).splitlines()[0])
            except Exception:
                log.exception("index check failed; trying again at the next")
            stop.wait(self.index_check_s)


class DeployedHeads:
    """Per tenant, the deployed heads (and towers) of `backbone_key` that new products get vectors of (a TTL cache)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        models: ModelCache,
        backbone_key: str,
        *,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.sessions, self.models, self.backbone_key, self.ttl_s, self.clock = (
            sessions,
            models,
            backbone_key,
            ttl_s,
            clock,
        )
        self._at, self._heads = -float("inf"), {}
        self._lock = threading.Lock()

    def get(self) -> Mapping[str, Sequence[DerivedModel]]:
        """{tenant: [DerivedModel, ...]}, re-read when older than the TTL; a model that fails to load is skipped."""
        with self._lock:
            if self.clock() - self._at >= self.ttl_s:
                self._heads, self._at = self._load(), self.clock()
            return self._heads

    def _load(self) -> dict[str, list[DerivedModel]]:
        with self.sessions() as s:
            deps = repo.writing_deployments(s)
        heads: dict[str, list[DerivedModel]] = {}
        for dep in deps:
            if dep.source_key != self.backbone_key:
                continue
            try:
                model = self.models.get(dep.artefact_path)
            except VisionError as exc:
                log.error("deployed model %s of %s cannot load: %s", dep.model_key, dep.tenant_id, exc)
                continue
            if dep.needs_images:  # a tower embeds the same crops as the backbone (streams/ingest.py)
                heads.setdefault(dep.tenant_id, []).append(DerivedModel(dep.model_key, dep.dim, embed=model.embed))
                continue
            transform, codes = transforms(model, dep)
            heads.setdefault(dep.tenant_id, []).append(DerivedModel(dep.model_key, dep.dim, transform, codes, dep.bits))
        return heads
