"""Simulated shoppers: the behaviour model (seeded, blind to arm labels, position bias, resemblance), the
runner's handling of bad answers, and one run through a real `vitrine api` + `vitrine worker`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from vitrine.shoppers import (
    RunOptions,
    Shopper,
    ShopperCatalog,
    experiment_warnings,
    perceive,
    read_feed,
    run_shoppers,
)

DESIGNS, COLOURS, SUBJECTS, CATEGORIES = ("stripe", "dots", "check", "plain"), ("red", "blue", "green"), "abc", "xy"


def demo_like_catalog(n: int = 48) -> ShopperCatalog:
    """Products with a category, a price and the demo catalog's kind of attributes (design, colour, subject)."""
    return ShopperCatalog(
        perceive(
            f"p{i:02d}",
            CATEGORIES[i % 2],
            10 + (i * 7) % 50,
            {"design": DESIGNS[i % 4], "colour": COLOURS[(i // 4) % 3], "subject": SUBJECTS[(i // 12) % 3]},
        )
        for i in range(n)
    )


CATALOG = demo_like_catalog()


# --- the behaviour model ------------------------------------------------------------------------


def test_a_seed_gives_the_same_shoppers_and_decisions():
    def trace(seed: int, n: int):
        s = Shopper.create(seed, n, CATALOG)
        out = [s.user_id, s.sessions(), s.first_view()]
        for first in ("p00", "p05", "p17"):
            out.append(s.react(first, [p.id for p in CATALOG.products[10:18]]))
        return out

    assert trace(7, 3) == trace(7, 3)
    assert trace(7, 3)[0] == "sim-7-3"
    assert trace(7, 3)[1:] != trace(8, 3)[1:] or trace(7, 4)[1:] != trace(7, 3)[1:]
    # Over a population, another seed draws other tastes.
    assert [Shopper.create(1, n, CATALOG).first_view() for n in range(30)] != [
        Shopper.create(2, n, CATALOG).first_view() for n in range(30)
    ]


def test_position_bias_rank_one_is_clicked_more_than_rank_eight():
    clicks = np.zeros(8)
    order = random.Random(0)
    ids = [p.id for p in CATALOG.products]
    for n in range(600):
        shopper = Shopper.create(11, n, CATALOG)
        shown = order.sample(ids, 9)  # every product as likely at every rank
        for rank, _ in shopper.react(shown[0], shown[1:]).clicks:
            clicks[rank - 1] += 1
    # Expected ratio rank 1 / rank 8 = 8 ** 0.7 = 4.3 (position_bias); at least 2 leaves room for noise.
    assert clicks[0] > 2 * clicks[7] and clicks[0] == clicks.max()


def test_items_sharing_design_and_colour_with_the_viewed_product_are_clicked_more():
    """Same category for all; half the list shares the viewed product's design and colour, half shares nothing."""
    rng = random.Random(1)
    shared = unrelated = 0
    for n in range(400):
        design, colour = rng.choice(DESIGNS), rng.choice(COLOURS)
        other_designs = [d for d in DESIGNS if d != design]
        other_colours = [c for c in COLOURS if c != colour]
        viewed = perceive("v", "x", 30, {"design": design, "colour": colour, "subject": "a"})
        alike = [perceive(f"s{k}", "x", 30, {"design": design, "colour": colour, "subject": "b"}) for k in range(4)]
        apart = [
            perceive(f"u{k}", "x", 30, {"design": rng.choice(other_designs), "colour": rng.choice(other_colours)})
            for k in range(4)
        ]
        catalog = ShopperCatalog([*CATALOG.products, viewed, *alike, *apart])
        shown = [p.id for p in alike + apart]
        rng.shuffle(shown)  # no kind gets the better ranks
        reaction = Shopper.create(3, n, catalog).react("v", shown)
        shared += sum(pid.startswith("s") for _, pid in reaction.clicks)
        unrelated += sum(pid.startswith("u") for _, pid in reaction.clicks)
    # Sharing 2 of the viewed product's 3 values adds 2.5 * 2/3 = 1.67 to the utility: about 3x the odds.
    assert shared > 1.8 * unrelated > 0


# --- the runner against a scripted API (the process edge): labels never change a decision ----------


def scripted_api(label, captured: list, *, fail_first: dict | None = None):
    """An API answering from the request alone: items depend on (user, product, nth request of the user).

    `label(user_id, items)` -> (experiment, arm, model, scores): the labels under test."""
    seen: dict[str, int] = {}
    ids = [p.id for p in CATALOG.products]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            body = json.loads(request.content)
            captured.extend(body)
            return httpx.Response(202, json={"accepted": [e["event_id"] for e in body], "duplicates": []})
        user, product = request.url.params["user_id"], request.url.params["product_id"]
        nth = seen[user] = seen.get(user, 0) + 1
        if fail_first and fail_first.get(user, 0) >= nth:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "busy"})
        digest = hashlib.sha256(f"{user}|{product}|{nth}".encode()).hexdigest()
        items = random.Random(digest).sample([i for i in ids if i != product], 8)
        experiment, arm, model, scores = label(user, items)
        return httpx.Response(
            200,
            json={
                "request_id": digest[:32],
                "experiment": experiment,
                "arm": arm,
                "model": model,
                "fallback": None,
                "items": [
                    {"product_id": i, "title": i, "image_url": None, "price": 1.0, "score": s}
                    for i, s in zip(items, scores)
                ],
            },
        )

    return httpx.MockTransport(handler)


def run_scripted(label, *, users: int = 30, seed: int = 5, concurrency: int = 4, **kwargs):
    captured: list = []
    summary = run_shoppers(
        CATALOG,
        api="http://shop.test",
        storefront_key="sk",
        tenant="acme",
        users=users,
        rate=0,
        seed=seed,
        concurrency=concurrency,
        transport=scripted_api(label, captured, **kwargs.pop("api", {})),
        **kwargs,
    )
    return summary, sorted(captured, key=lambda e: e["event_id"])


def decisions(summary) -> tuple:
    return summary.sessions, summary.requests, summary.clicks, summary.carts, summary.purchases, summary.revenue


def test_the_same_lists_under_other_arm_model_and_score_labels_get_identical_decisions():
    plain, events = run_scripted(lambda u, items: ("exp-a", "baseline", None, [0.0] * 8))
    noise = random.Random(9)
    relabelled, events_relabelled = run_scripted(
        lambda u, items: ("exp-b", "visual@m1", "m1", sorted((noise.random() for _ in items), reverse=True))
    )
    assert plain.clicks > 0 and plain.purchases > 0  # something was decided at all
    assert events_relabelled == events
    assert decisions(relabelled) == decisions(plain)
    assert set(plain.by_arm) == {"baseline"} and set(relabelled.by_arm) == {"visual@m1"}


def test_swapping_which_arm_produced_which_list_changes_only_the_labels():
    def arm_of(user: str) -> int:
        return int(hashlib.sha256(user.encode()).hexdigest(), 16) % 2

    names = ("baseline", "visual")
    first, events = run_scripted(lambda u, items: ("e", names[arm_of(u)], None, [1.0] * 8))
    swapped, events_swapped = run_scripted(lambda u, items: ("e", names[1 - arm_of(u)], None, [1.0] * 8))
    assert events_swapped == events and decisions(swapped) == decisions(first)
    assert swapped.by_arm["visual"] == first.by_arm["baseline"]
    assert swapped.by_arm["baseline"] == first.by_arm["visual"]


def test_a_seed_and_the_same_answers_give_the_same_run_whatever_the_concurrency():
    label = lambda u, items: ("e", "baseline", None, [0.5] * 8)  # noqa: E731
    one, events_one = run_scripted(label, concurrency=1)
    many, events_many = run_scripted(label, concurrency=8)
    assert events_one == events_many and decisions(one) == decisions(many)
    assert all(e["event_id"].startswith("sim-") and e["user_id"].startswith("sim-5-") for e in events_one)
    purchases = [e for e in events_one if e["type"] == "purchase"]
    assert purchases and all(e["value"] == CATALOG.by_id[e["product_id"]].price for e in purchases)


def test_busy_answers_are_retried_politely_and_counted():
    summary, _ = run_scripted(
        lambda u, items: (None, "baseline", None, [0.0] * 8), users=3, api={"fail_first": {"sim-5-0": 2}}
    )
    assert summary.retries == 2 and summary.errors == 0
    assert summary.warnings == []  # no --experiment expected: nothing to warn about


@pytest.mark.parametrize(
    ("response", "counted"),
    [
        (httpx.Response(500, json={"detail": "boom"}), "recommendations 500"),
        (httpx.Response(404, json={"detail": "unknown product"}), "recommendations 404"),
        (httpx.Response(200, content=b"<html>not json"), "recommendations invalid body"),
        (httpx.Response(200, json={"request_id": "r", "items": "nope"}), "recommendations invalid body"),
        (httpx.Response(503, headers={"Retry-After": "soon"}), "recommendations 503"),
    ],
)
def test_bad_answers_are_counted_never_raised(response, counted):
    transport = httpx.MockTransport(lambda request: response)
    summary = run_shoppers(
        CATALOG,
        api="http://shop.test",
        storefront_key="sk",
        tenant="acme",
        users=3,
        rate=0,
        options=RunOptions(max_retries=1, default_retry_wait_s=0.0),
        transport=transport,
    )
    assert summary.requests == 0 and summary.errors_by_kind == {counted: summary.sessions} and summary.sessions >= 3


def test_an_unreachable_api_is_an_error_count():
    def refuse(request):
        raise httpx.ConnectError("connection refused")

    summary = run_shoppers(
        CATALOG, api="http://shop.test", storefront_key="sk", tenant="acme", users=2, rate=0,
        transport=httpx.MockTransport(refuse),
    )  # fmt: skip
    assert summary.errors_by_kind == {"recommendations transport (ConnectError)": summary.sessions}


def test_the_rate_limit_spaces_the_requests():
    label = lambda u, items: ("e", "baseline", None, [0.0] * 8)  # noqa: E731
    captured: list = []
    started = time.perf_counter()
    summary = run_shoppers(
        CATALOG, api="http://shop.test", storefront_key="sk", tenant="acme", users=12, rate=40, concurrency=6,
        transport=scripted_api(label, captured),
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert summary.requests >= 12
    assert elapsed >= (summary.requests - 1) / 40 * 0.95  # one request per 25 ms at most
    assert summary.achieved_rps <= 40 * 1.1


def test_progress_is_reported_per_shopper():
    seen = []
    label = lambda u, items: ("e", "baseline", None, [0.0] * 8)  # noqa: E731
    run_shoppers(
        CATALOG, api="http://shop.test", storefront_key="sk", tenant="acme", users=5, rate=0,
        transport=scripted_api(label, []), progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert seen == [(i, 5) for i in range(1, 6)]


def test_experiment_warnings_name_other_and_missing_experiments():
    assert experiment_warnings({"a": 8, "-": 2}, "a") == ["2 of 10 responses named no experiment, not 'a'"]
    assert experiment_warnings({"b": 3}, "a") == ["3 of 3 responses named experiment 'b', not 'a'"]
    assert experiment_warnings({"a": 3}, "a") == [] and experiment_warnings({"b": 1}, None) == []


def test_feed_products_are_perceived_and_bad_lines_reported(tmp_path):
    feed = tmp_path / "feed.jsonl"
    lines = [
        {"id": "a", "version": 1, "category": "tops", "price": "19.90", "attributes": {"design": "Stripe", "w": 0.3}},
        {"id": "b", "version": 1, "in_stock": False},
        "not json",
        {"id": "c", "version": 1, "attributes": {"colour": "red", "new": True, "note": None}},
    ]
    feed.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    catalog, problems = read_feed(feed, "acme")
    assert [p.id for p in catalog.products] == ["a", "c"]  # b is out of stock
    assert catalog.by_id["a"].features == {("design", "stripe")} and catalog.by_id["a"].price == 19.9
    assert catalog.by_id["c"].features == {("colour", "red"), ("new", "true")}
    assert len(problems) == 1 and problems[0].startswith("line 3: invalid JSON")
    only_design, _ = read_feed(feed, "acme", keys={"design"})
    assert only_design.by_id["a"].features == {("design", "stripe")} and only_design.by_id["c"].features == set()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("not json\n")
    with pytest.raises(ValueError, match="no usable in-stock product"):
        read_feed(empty, "acme")


def test_cli_bad_input_is_one_clear_line(tmp_path, data_dir):
    from vitrine.cli import app

    runner = CliRunner()
    env = {"VITRINE_DATA_DIR": str(data_dir), "VITRINE_STOREFRONT_KEY": ""}
    no_key = runner.invoke(app, ["simulate", "shoppers", "--tenant", "acme"], env=env)
    assert no_key.exit_code == 2 and "no storefront key" in no_key.output
    missing = runner.invoke(
        app, ["simulate", "shoppers", "-t", "acme", "--catalog", str(tmp_path / "nope.jsonl"), "--storefront-key", "k"],
        env=env,
    )  # fmt: skip
    assert missing.exit_code == 1 and "cannot read the feed" in missing.output


# --- on real parts ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_shoppers_through_a_real_api_and_worker_land_in_postgres(settings, sessions, tmp_path):
    """10 shoppers via `vitrine simulate shoppers --json` against a `vitrine api` with a running experiment."""
    from sqlalchemy import text

    from core.contracts import CatalogEvent
    from db.catalog import ImageResult, ItemRow, upsert_products
    from db.experiments import create_experiment, start_experiment
    from db.tenants import create_tenant
    from streams.embedded_broker import free_port
    from tests.helpers import settings_env, wait_for
    from vision.components import build_embedder
    from vitrine import procs
    from vitrine.cli import app

    embedder = build_embedder(settings)  # not loaded: the key and dimension the api's visual arm serves
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(len(DESIGNS), embedder.dim))
    batch = []
    for i, p in enumerate(CATALOG.products[:24]):
        vector = centroids[i % 4] + 0.3 * rng.normal(size=embedder.dim)  # one visual cluster per design
        event = CatalogEvent.model_validate(
            {
                "event_id": f"e{i}",
                "tenant_id": "acme",
                "type": "product.upserted",
                "product": {
                    "id": p.id,
                    "version": 1,
                    "title": p.id,
                    "category": p.category,
                    "price": p.price,
                    "image_urls": [f"https://x.test/{p.id}.jpg"],
                    "attributes": dict(p.features),
                },
            }
        )
        item = ItemRow("whole", (0, 0, 1, 1), "whole", 1.0, vector / np.linalg.norm(vector))
        batch.append((event, [ImageResult(f"https://x.test/{p.id}.jpg", 0, "ok", content_hash=p.id, items=[item])]))
    with sessions.begin() as s:
        acme = create_tenant(s, "Acme", "acme")
        upsert_products(s, batch, model_key=embedder.model_key, dim=embedder.dim)
        s.execute(text("UPDATE products SET indexed_at = now()"))
        create_experiment(
            s, "acme", "sim-1", arms=[{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}]
        )
        start_experiment(s, "acme", "sim-1")

    env = {**settings_env(settings), "VITRINE_API_PORT": str(free_port())}
    worker = procs.spawn(["worker"], env, tmp_path / "worker.log")
    api = procs.spawn(["api"], env, tmp_path / "api.log")
    try:
        base = f"http://127.0.0.1:{env['VITRINE_API_PORT']}"
        procs.wait_http(f"{base}/healthz", api, timeout_s=90, log_path=tmp_path / "api.log")
        result = CliRunner().invoke(
            app,
            ["simulate", "shoppers", "-t", "acme", "-k", "sim-1", "--users", "10", "--rate", "50", "--seed", "3",
             "--attributes", "design, colour", "--json"],
            env={**env, "VITRINE_STOREFRONT_KEY": acme.storefront_key},
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert acme.storefront_key not in result.output
        report = json.loads(result.stdout)
        assert report["what"] == "simulated shoppers" and report["catalog"] == "postgres"
        assert report["perceived_attributes"] == ["colour", "design"]
        assert (
            report["catalog_products"] == 24
            and report["users"] == 10
            and report["errors"] == 0 == len(report["errors_by_kind"])
        )
        assert report["warnings"] == [] and report["experiments"] == {"sim-1": report["requests"]}
        assert set(report["by_arm"]) <= {"baseline", "visual"} and report["clicks"] > 0
        assert report["machine"]["usable_cpus"] >= 1 and report["latency_p50_ms"] > 0

        def count(kind: str) -> int:
            with sessions() as s:
                return s.scalar(
                    text("SELECT count(*) FROM interaction_events WHERE type = :k AND user_id LIKE 'sim-3-%'"),
                    {"k": kind},
                )

        wait_for(lambda: count("exposure") == report["requests"], 60, what=f"{report['requests']} exposures")
        wait_for(lambda: count("click") == report["clicks"], 30, what=f"{report['clicks']} clicks")
        wait_for(lambda: count("purchase") == report["purchases"], 30, what=f"{report['purchases']} purchases")
        assert count("add_to_cart") == report["carts"]
        with sessions() as s:
            revenue = s.scalar(text("SELECT coalesce(sum(value), 0) FROM interaction_events WHERE type = 'purchase'"))
            sim_ids = s.scalar(
                text("SELECT bool_and(event_id LIKE 'sim-%') FROM interaction_events WHERE type <> 'exposure'")
            )
        assert revenue == pytest.approx(report["revenue"], abs=0.01)
        assert sim_ids in (True, None)
        assert worker.poll() is None
    finally:
        procs.stop(api)
        procs.stop(worker)


def test_rate_limiter_defer_holds_everyone_back():
    from vitrine.shoppers import RateLimiter

    async def go():
        limiter = RateLimiter(0)
        limiter.defer(0.2)
        started = time.monotonic()
        await asyncio.gather(limiter.wait(), limiter.wait())
        return time.monotonic() - started

    assert asyncio.run(go()) >= 0.19


def test_the_vectorised_appeal_is_the_per_product_appeal():
    shopper = Shopper.create(4, 2, CATALOG)
    assert shopper.appeal_all() == pytest.approx([shopper.appeal(p) for p in CATALOG.products], abs=1e-12)


def test_feed_dicts_are_a_catalog_too():
    products = [
        {"id": "a", "category": "tops", "price": 12.5, "attributes": {"design": "d1", "colour": "red"}},
        {"id": "b", "category": "tops", "in_stock": False},
        {"id": "c", "price": None},
    ]
    label = lambda u, items: ("e", "baseline", None, [0.0] * 8)  # noqa: E731
    summary = run_shoppers(
        products, api="http://shop.test", storefront_key="sk", users=2, rate=0, transport=scripted_api(label, [])
    )
    assert summary.catalog_products == 2 and summary.tenant is None and summary.requests > 0
    assert summary.as_dict()["errors"] == 0


def test_same_category_is_a_storefront_setting_sent_with_every_request():
    from vitrine.shoppers import RunOptions

    asked: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            return httpx.Response(202, json={"accepted": [], "duplicates": []})
        asked.append(dict(request.url.params))
        return httpx.Response(200, json={"request_id": "r", "experiment": None, "arm": "baseline", "items": []})

    for same in (False, True):
        asked.clear()
        run_shoppers(
            CATALOG, api="http://shop.test", storefront_key="sk", users=3, rate=0, seed=1,
            options=RunOptions(same_category=same), transport=httpx.MockTransport(handler),
        )  # fmt: skip
        assert asked and all(("same_category" in p) == same for p in asked)
        assert all(p.get("same_category", "true") == "true" for p in asked)


def test_a_product_outside_the_catalog_is_perceived_blank_even_with_uncategorised_products():
    from vitrine.shoppers import PerceivedProduct, Shopper, catalog_from_products

    feed = [
        {"id": "a", "category": None, "price": 10, "attributes": {"colour": "red"}},
        {"id": "b", "category": "toys", "price": 10, "attributes": {"colour": "blue"}},
    ]
    catalog = catalog_from_products(feed)
    for n in range(20):
        shopper = Shopper.create(3, n, catalog)
        assert shopper.appeal(catalog.get("nosuch")) == 0.0  # no category, features or price to like
        assert shopper.appeal(catalog.get("a")) == shopper.appeal(catalog.by_id["a"])
        assert catalog.get("nosuch") == PerceivedProduct("nosuch")
