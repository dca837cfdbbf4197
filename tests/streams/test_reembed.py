"""Background re-embedding on the real Postgres: the vectors it writes, resuming after a crash without
writing anything twice, live ingest beside it, the final sweep, and what may serve when."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select, text

from db import deployments as repo
from db import retirement
from db.deployments import DeploymentError
from db.models import Item, ModelDeployment, Product, Tenant
from db.tenants import create_tenant
from db.vector_index import drop_vector_index, index_lists, index_ready, read_tuning
from db.vector_queries import similar_products
from streams.reembed import DeployedHeads, ModelCache, Reembedder, transforms
from tests.streams.deployment_helpers import BACKBONE, BITS, DIM_IN, DIM_OUT, head_weights, products, ready_model
from vision.trained import apply_head, l2_normalize

pytestmark = pytest.mark.integration

N = 240


@pytest.fixture
def catalog_and_model(sessions, tmp_path):
    """Tenant acme with N products and a ready head; globex with a few products of its own."""
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
        create_tenant(s, "Globex", "globex")
    with sessions.begin() as s:
        products(s, "acme", range(N))
        products(s, "globex", range(7), seed=1)
        key = ready_model(s, "acme", tmp_path / "models")
    return key


def runner(db_engine, sessions, tmp_path, **kw) -> Reembedder:
    kw = {"page": 50, "pause_s": 0, "settle_s": 0, "lease_s": 30} | kw
    return Reembedder(db_engine, sessions, ModelCache(tmp_path / "cache"), **kw)


def deploy(sessions, key, **kw):
    with sessions.begin() as s:
        dep, started = repo.deploy_trained(s, "acme", key, embedder_key=BACKBONE, **kw)
    return dep, started


def counts(sessions, key) -> dict[str, int]:
    with sessions() as s:
        rows = s.execute(
            text("SELECT tenant_id, count(*), count(code) FROM items WHERE model = :k GROUP BY tenant_id"), {"k": key}
        ).all()
        dupes = s.scalar(
            text(
                "SELECT count(*) FROM (SELECT 1 FROM items WHERE model = :k "
                "GROUP BY image_id, kind, box HAVING count(*) > 1) d"
            ),
            {"k": key},
        )
    out = {f"{key}/{t}": n for t, n, _ in rows} | {f"coded/{t}": c for t, _, c in rows if c}
    out["duplicates"] = dupes
    return out


def test_a_deployment_writes_the_heads_vectors_and_codes_then_serves(db_engine, sessions, tmp_path, catalog_and_model):
    key = catalog_and_model
    dep, started = deploy(sessions, key)
    assert started and dep.status == "embedding" and dep.items_total == N and dep.bits == BITS
    with sessions() as s:
        assert repo.servable_models(s, "acme") == {}  # nothing serves before the vectors and index are complete
        with pytest.raises(DeploymentError) as refused:
            repo.activate(s, "acme", key, embedder_key=BACKBONE)
        assert refused.value.code == "not_ready" and "still re-embedding" in str(refused.value)

    runner(db_engine, sessions, tmp_path).run_until_idle()

    assert counts(sessions, key) == {f"{key}/acme": N, "coded/acme": N, "duplicates": 0}  # not globex's
    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
        assert (dep.status, dep.phase, dep.items_done, dep.items_written) == ("ready", "done", N, N)
        assert repo.progress(dep) == 1.0
        assert repo.servable_models(s, "acme")[key].dim == DIM_OUT

        # The stored vectors are the head applied to the stored backbone vectors, and the codes their signs.
        def stored(model: str, column=Item.embedding):
            return s.execute(
                select(column)
                .join(Product, Product.id == Item.product_id)
                .where(Product.tenant_id == "acme", Product.external_id == "p17", Item.model == model)
            ).scalar_one()

        src, dst = np.asarray(stored(BACKBONE), np.float32), np.asarray(stored(key), np.float32)
        code = np.array([b == "1" for b in stored(key, Item.code)])
        assert stored(BACKBONE, Item.code) is None
        head = head_weights()
        expected = l2_normalize(apply_head(head, src[None]))[0]
        np.testing.assert_allclose(dst, expected, atol=1e-6)
        np.testing.assert_array_equal(code, (expected @ head["w3"] + head["b3"]) > 0)
    with db_engine.connect() as conn:
        assert index_ready(conn, key, "halfvec")


def test_a_crashed_run_resumes_at_its_last_page_and_writes_nothing_twice(
    db_engine, sessions, tmp_path, catalog_and_model
):
    key = catalog_and_model
    deploy(sessions, key)
    first = runner(db_engine, sessions, tmp_path, owner="worker-1")
    calls = {"n": 0}
    real = first.models.get

    def dying_get(path):  # the third page's transaction dies half-way (after reading, before commit)
        model = real(path)

        class Dying:
            def __getattr__(self, name):
                return getattr(model, name)

            def embed_features(self, x):
                calls["n"] += 1
                if calls["n"] == 3:
                    raise KeyboardInterrupt("killed")
                return model.embed_features(x)

        return Dying()

    first.models.get = dying_get
    with pytest.raises(KeyboardInterrupt):
        first.run_once()
    assert counts(sessions, key)[f"{key}/acme"] == 100  # two committed pages of 50
    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
        assert dep.items_done == 100 and dep.lease_owner == "worker-1"

    second = runner(db_engine, sessions, tmp_path, owner="worker-2")
    assert second.run_once() is None  # worker-1's lease still holds
    with sessions.begin() as s:
        s.execute(text("UPDATE model_deployments SET lease_until = now() - interval '1 second'"))
    second.run_until_idle()
    assert counts(sessions, key) == {f"{key}/acme": N, "coded/acme": N, "duplicates": 0}

    # The crashed worker comes back: it lost the lease, so it writes nothing.
    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
    dep.status, dep.phase, dep.cursor = "embedding", "scan", 0
    with pytest.raises(DeploymentError) as lost, sessions.begin() as s:
        s.add(dep)
        repo.reembed_page(s, dep, "worker-1", transform=lambda x: x, page=10)
    assert lost.value.code == "lease_lost"


def test_live_ingest_writes_deployed_heads_and_the_sweep_catches_what_a_stale_worker_missed(
    db_engine, sessions, tmp_path, catalog_and_model
):
    key = catalog_and_model
    deploy(sessions, key)
    reembed = runner(db_engine, sessions, tmp_path, settle_s=3600)
    heads = DeployedHeads(sessions, reembed.models, BACKBONE, ttl_s=60)
    assert [m.key for m in heads.get()["acme"]] == [key] and "globex" not in heads.get()

    with sessions.begin() as s:  # a worker that knows the deployment: vectors in the same transaction
        products(s, "acme", range(N, N + 20), derived=heads.get())
        products(s, "acme", range(0, 10), version=2, derived=heads.get())  # updated products: new items
    assert counts(sessions, key)[f"{key}/acme"] == 30
    reembed.run_once()  # the scan ends, the sweep waits for every worker's cache (settle_s)
    with sessions.begin() as s:  # a worker whose cache did not know the model yet
        products(s, "acme", range(N + 20, N + 25))
    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
        assert (dep.status, dep.phase) == ("embedding", "sweep")
        assert repo.servable_models(s, "acme") == {}

    reembed.settle_s = 0
    reembed.run_until_idle()
    total = N + 25
    assert counts(sessions, key) == {f"{key}/acme": total, "coded/acme": total, "duplicates": 0}
    with sessions() as s:  # one vector per live backbone item, none left over from the replaced ones
        orphans = s.scalar(
            text(
                "SELECT count(*) FROM items t WHERE t.model = :k AND NOT EXISTS (SELECT 1 FROM items b "
                "WHERE b.image_id = t.image_id AND b.model = :b AND b.kind = t.kind AND b.box = t.box)"
            ),
            {"k": key, "b": BACKBONE},
        )
        assert orphans == 0


def test_activation_and_rollback_point_the_visual_arm_at_ready_models_only(
    db_engine, sessions, tmp_path, catalog_and_model
):
    key = catalog_and_model
    with sessions.begin() as s:
        with pytest.raises(DeploymentError) as none:
            repo.rollback(s, "acme", embedder_key=BACKBONE)
        assert none.value.code == "no_previous"
        with pytest.raises(DeploymentError) as unknown:
            repo.activate(s, "acme", "nope@000000000000", embedder_key=BACKBONE)
        assert unknown.value.code == "not_deployed"
    deploy(sessions, key)
    runner(db_engine, sessions, tmp_path).run_until_idle()
    with sessions.begin() as s:
        t = repo.activate(s, "acme", key, embedder_key=BACKBONE)
        assert (t.active_model, t.previous_model) == (key, BACKBONE)
        t = repo.rollback(s, "acme", embedder_key=BACKBONE)
        assert (t.active_model, t.previous_model) == (BACKBONE, key)
        t = repo.rollback(s, "acme", embedder_key=BACKBONE)  # and forward again
        assert (t.active_model, t.previous_model) == (key, BACKBONE)
        with pytest.raises(DeploymentError) as other:  # globex never deployed it
            repo.activate(s, "globex", key, embedder_key=BACKBONE)
        assert other.value.code == "not_deployed"


def test_a_codes_deployment_serves_from_its_ivf_index_and_workers_rebuild_missing_ones(
    db_engine, sessions, tmp_path, catalog_and_model
):
    key = catalog_and_model
    deploy(sessions, key, index_kind="codes")
    run = runner(db_engine, sessions, tmp_path, embedder_index=(BACKBONE, DIM_IN, "binary"))
    run.run_until_idle()
    with db_engine.connect() as conn:
        assert index_ready(conn, key, "codes") and index_lists(conn, key, "codes") == 15  # 240 coded items: sqrt
        assert not index_ready(conn, key, "halfvec")  # the codes search, the full vectors only re-rank
    with sessions() as s:
        got = similar_products(
            s, tenant_id="acme", external_id="p3", model_key=key, dim=DIM_OUT, strategy="hnsw", index_kind="codes"
        )
    assert got.strategy == "hnsw" and len(got.neighbours) == 10
    # An index gone (as migration 0016 drops the old Hamming graphs) is built again by the workers' check,
    # with the deployed embedder's binary index when VITRINE_INDEX_KIND is binary; a second check does nothing.
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        drop_vector_index(conn, key, "codes")
    assert run.refresh_indexes() == {f"{BACKBONE}/binary": 15, f"{key}/codes": 15}
    with db_engine.connect() as conn:
        assert index_ready(conn, key, "codes") and index_ready(conn, BACKBONE, "binary")
    assert run.refresh_indexes() == {}
    # Tuned one index a check, once it holds tune_min_entries (the default, 50,000, leaves these untuned).
    assert run.tune_next_index() is None
    run.tune_min_entries, run.tune_options = 100, {"min_tenant_items": 100, "sample": 10, "factors": (4, 8)}
    assert run.tune_next_index() == f"{BACKBONE}/binary"
    assert run.tune_next_index() == f"{key}/codes"
    assert run.tune_next_index() is None
    with db_engine.connect() as conn:
        tunings = [read_tuning(conn, BACKBONE, "binary"), read_tuning(conn, key, "codes")]
    assert all(t is not None and t.sample == 10 and t.factor in (4, 8) for t in tunings), tunings


def _tuning_under_way(db_engine) -> bool:
    """A tuning holds its index's session advisory lock (db/ivf_tuning.py) for as long as it runs."""
    with db_engine.connect() as conn:
        return conn.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")) > 0


def test_a_deployment_is_re_embedded_while_the_workers_tune_an_index(db_engine, sessions, tmp_path, catalog_and_model):
    """The worker's index loop runs apart from its deployments: a tuning of minutes (slowed here, as one at 1M
    takes them) does not hold a deployment back, and a stop ends the tuning without recording it."""
    key = catalog_and_model
    run = runner(
        db_engine,
        sessions,
        tmp_path,
        embedder_index=(BACKBONE, DIM_IN, "binary"),
        index_check_s=3600,
        tune_min_entries=100,
        # Querying 0.1 % of the time: each query is followed by a rest of ~1,000 times its duration.
        tune_options={"min_tenant_items": 100, "sample": 10, "factors": (4, 8), "duty": 0.001},
    )
    stop = threading.Event()
    indexes = threading.Thread(target=run.maintain_indexes_forever, args=(stop,), daemon=True)
    indexes.start()
    deadline = time.monotonic() + 30
    while not _tuning_under_way(db_engine):  # the check built the backbone's binary index and tunes it
        assert indexes.is_alive() and time.monotonic() < deadline, "the index loop never started a tuning"
        time.sleep(0.05)
    deploy(sessions, key)
    deployments = threading.Thread(target=run.run_forever, args=(stop,), kwargs={"poll_s": 0.1}, daemon=True)
    deployments.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            with sessions() as s:
                status = s.get(ModelDeployment, ("acme", key)).status
            if status != "embedding" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == "ready"
        assert _tuning_under_way(db_engine)  # the deployment did not wait for the tuning to end
    finally:
        stop.set()
        indexes.join(15)
        deployments.join(15)
    assert not indexes.is_alive() and not deployments.is_alive()
    assert not _tuning_under_way(db_engine)
    with db_engine.connect() as conn:
        assert index_ready(conn, BACKBONE, "binary") and read_tuning(conn, BACKBONE, "binary") is None  # stopped


def test_deploying_refuses_what_cannot_be_re_embedded_from_stored_vectors(sessions, tmp_path, catalog_and_model):
    key = catalog_and_model
    with sessions.begin() as s:
        other = ready_model(s, "globex", tmp_path / "g", seed=3)
        foreign = ready_model(s, "acme", tmp_path / "f", seed=4, backbone="clip@x")
        plain = ready_model(s, "acme", tmp_path / "p", seed=5, bits=None)
        from db import trained_models as models_repo

        training = models_repo.start_job(s, "acme", method="triplet", finetune=False, params={}).job_id
    cases = {
        "nope@000000000000": "unknown_model",
        other: "unknown_model",  # another tenant's model does not exist for acme
        training: "not_ready",
        foreign: "backbone_mismatch",
    }
    for ref, code in cases.items():
        with sessions.begin() as s, pytest.raises(DeploymentError) as refused:
            repo.deploy_trained(s, "acme", ref, embedder_key=BACKBONE)
        assert refused.value.code == code, ref
    with sessions.begin() as s, pytest.raises(DeploymentError) as no_codes:
        repo.deploy_trained(s, "acme", plain, embedder_key=BACKBONE, index_kind="codes")
    assert no_codes.value.code == "bad_index_kind"
    with sessions.begin() as s:
        assert repo.deploy_trained(s, "acme", BACKBONE, embedder_key=BACKBONE) == (None, False)
        assert repo.deploy_trained(s, "acme", key, embedder_key=BACKBONE)[1] is True
        assert repo.deploy_trained(s, "acme", key, embedder_key=BACKBONE)[1] is False  # asking twice is harmless
        assert repo.list_deployments(s, "globex") == []


def test_an_artefact_that_disappeared_fails_the_deployment_with_its_reason(
    db_engine, sessions, tmp_path, catalog_and_model
):
    key = catalog_and_model
    dep, _ = deploy(sessions, key)
    with sessions.begin() as s:
        s.execute(text("UPDATE model_deployments SET artefact_path = '/nonexistent/x.vtm'"))
    runner(db_engine, sessions, tmp_path).run_until_idle()
    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
        assert dep.status == "failed" and "cannot load the model" in dep.reason
        assert repo.servable_models(s, "acme") == {}
    assert deploy(sessions, key)[1] is True  # a failed deployment may be asked again


def test_the_sweep_waits_for_the_settle_time(db_engine, sessions, tmp_path, catalog_and_model):
    key = catalog_and_model
    deploy(sessions, key)
    reembed = runner(db_engine, sessions, tmp_path, settle_s=60)
    reembed.run_once()
    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
    assert dep.phase == "sweep" and not repo.sweep_due(dep, settle_s=60)
    dep.scan_done_at = datetime.now(UTC) - timedelta(seconds=61)
    assert repo.sweep_due(dep, settle_s=60)


def test_a_model_whose_output_does_not_fit_fails_its_deployment_once(db_engine, sessions, tmp_path, catalog_and_model):
    from db import trained_models as models_repo
    from tests.streams.deployment_helpers import head_card
    from vision.trained import write_artefact

    head = head_weights(bits=None)
    head["w2"], head["b2"] = head["w2"][:, :5], head["b2"][:5]  # 5 outputs, while its card says 6
    path = write_artefact(tmp_path / "bad", head_card(bits=None), head=head)
    with sessions.begin() as s:
        job = models_repo.start_job(s, "acme", method="triplet", finetune=False, params={})
        models_repo.finish_job(s, "acme", job.job_id, model_key=path.stem, artefact_path=str(path), card={})
    with sessions.begin() as s:
        repo.deploy_trained(s, "acme", path.stem, embedder_key=BACKBONE)
    dep = runner(db_engine, sessions, tmp_path).run_once()
    assert dep.status == "failed"
    with sessions() as s:
        stored = s.get(ModelDeployment, ("acme", path.stem))
        assert stored.status == "failed" and "expected (50, 6)" in stored.reason and stored.items_written == 0
        assert s.scalar(text("SELECT count(*) FROM items WHERE model = :k"), {"k": path.stem}) == 0


def test_a_retired_model_stops_serving_at_once_and_its_vectors_and_index_go_after_the_settle(
    db_engine, sessions, tmp_path, catalog_and_model
):
    from db.experiments import create_experiment, start_experiment, stop_experiment

    key = catalog_and_model
    deploy(sessions, key)
    runner(db_engine, sessions, tmp_path).run_until_idle()
    with sessions.begin() as s:
        repo.activate(s, "acme", key, embedder_key=BACKBONE)
    with sessions.begin() as s, pytest.raises(DeploymentError, match="active model") as active:
        retirement.retire(s, "acme", key)
    assert active.value.code == "in_use"
    with sessions.begin() as s:
        repo.activate(s, "acme", BACKBONE, embedder_key=BACKBONE)  # key is the rollback target now
        arms = [{"name": "baseline", "weight": 0.5}, {"name": f"visual@{key}", "weight": 0.5}]
        create_experiment(s, "acme", "models", arms=arms, allowed_arms=[a["name"] for a in arms])
        start_experiment(s, "acme", "models")
    with sessions.begin() as s, pytest.raises(DeploymentError, match="experiment.*models") as in_test:
        retirement.retire(s, "acme", key)
    assert in_test.value.code == "in_use"
    with sessions.begin() as s, pytest.raises(DeploymentError) as unknown:
        retirement.retire(s, "globex", key)  # another tenant cannot retire it
    assert unknown.value.code == "not_deployed"

    with sessions.begin() as s:
        stop_experiment(s, "acme", "models")
        dep = retirement.retire(s, "acme", key)
        assert dep.status == "retiring" and retirement.retire(s, "acme", key).status == "retiring"  # twice is harmless
    with sessions.begin() as s:
        assert s.get(Tenant, "acme").previous_model is None  # no rollback to a retired model
        assert repo.servable_models(s, "acme") == {} and repo.writing_deployments(s) == []  # at once
        with pytest.raises(DeploymentError) as again:
            repo.deploy_trained(s, "acme", key, embedder_key=BACKBONE)
        assert again.value.code == "retiring"

    # Within the workers' cache time one may still write it: nothing is deleted yet.
    assert runner(db_engine, sessions, tmp_path, retire_after_s=3600).run_once() is None
    assert counts(sessions, key)[f"{key}/acme"] == N
    done = runner(db_engine, sessions, tmp_path, page=70).run_once()
    assert done.status == "retired"
    assert counts(sessions, key) == {"duplicates": 0}  # its vectors and codes are gone
    with sessions() as s:
        assert s.get(ModelDeployment, ("acme", key)) is None
        backbone = s.scalar(text("SELECT count(*) FROM items WHERE model = :b"), {"b": BACKBONE})
    assert backbone == N + 7  # acme's and globex's backbone vectors are untouched
    with db_engine.connect() as conn:
        assert not index_ready(conn, key, "halfvec")
    assert deploy(sessions, key)[1] is True  # and it can be deployed again


def test_retiring_a_model_mid_re_embed_stops_its_runner_and_a_late_failure_does_not_undo_it(
    db_engine, sessions, tmp_path, catalog_and_model
):
    key = catalog_and_model
    deploy(sessions, key)
    with sessions.begin() as s:
        dep = repo.claim(s, "runner-a", lease_s=1.0)  # runner a is embedding it
    transform, codes = transforms(ModelCache(tmp_path / "c").get(dep.artefact_path), dep)
    with sessions.begin() as s:
        s.add(dep)
        repo.reembed_page(s, dep, "runner-a", transform=transform, codes=codes, page=50, lease_s=1.0)
    with sessions.begin() as s:
        retirement.retire(s, "acme", key)
    with pytest.raises(DeploymentError) as stopped, sessions.begin() as s:  # the page's transaction rolls back
        s.add(dep)
        repo.reembed_page(s, dep, "runner-a", transform=transform, codes=codes, page=50, lease_s=1.0)
    assert stopped.value.code == "lease_lost"  # its next page is refused: it stops
    with sessions.begin() as s:
        repo.mark_failed(s, "acme", key, "runner a hit an error afterwards")  # must not undo the retirement
    with sessions() as s:
        assert s.get(ModelDeployment, ("acme", key)).status == "retiring"
    # Nobody deletes under runner a's lease; once it has run out, the vectors of its committed page go.
    assert runner(db_engine, sessions, tmp_path, retire_after_s=0).run_once() is None
    assert counts(sessions, key)[f"{key}/acme"] == 50
    time.sleep(1.1)
    assert runner(db_engine, sessions, tmp_path, retire_after_s=0).run_once().status == "retired"
    assert counts(sessions, key) == {"duplicates": 0}
