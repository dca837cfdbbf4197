"""Simulated shoppers: a seeded behaviour model over the catalog as shoppers perceive it, driven through
the real storefront API (GET /v1/recommendations, POST /v1/events). The model is written out in
docs/shoppers.md.

The model never sees the arm, the model key, the experiment or the scores of a response: a decision
depends on the shopper, the viewed product and which products are shown in which order, nothing
else, so any lift between arms comes from the recommendations themselves. The labels are kept for
the report only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from pydantic import ValidationError

from recommender.schemas import Recommendations

log = logging.getLogger(__name__)

KEY_HEADER = "X-Vitrine-Key"
MAX_EVENTS_PER_CALL = 500  # POST /v1/events takes at most this many (recommender/routes/events.py)
Progress = Callable[[int, int], None]


# --- the catalog as a shopper perceives it -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PerceivedProduct:
    """What a shopper notices of a product: its category, its price and its attribute values."""

    id: str
    category: str | None = None
    price: float | None = None
    features: frozenset[tuple[str, str]] = frozenset()  # (attribute, value), e.g. ("colour", "red")


def perceive(
    product_id: str, category: str | None, price, attributes: dict | None, keys: Collection[str] | None = None
) -> PerceivedProduct:
    """A product as perceived: categorical attribute values (text, integers, booleans) become features.

    `keys`: the attributes a shopper can see (None: all); a feed's bookkeeping (a source path, a hue
    shift in degrees) is not something a shopper perceives as "the same"."""
    features = frozenset(
        (str(k), str(v).strip().lower())
        for k, v in (attributes or {}).items()
        # A float (a weight, a rating) is not a value two products visibly share; None is no value.
        if isinstance(v, str | int | bool) and str(v).strip() and (keys is None or k in keys)
    )
    return PerceivedProduct(str(product_id), category or None, None if price is None else float(price), features)


class ShopperCatalog:
    """The products shoppers can meet, in a fixed order (by id) so a seed means the same draws."""

    def __init__(self, products: Iterable[PerceivedProduct]):
        unique = {p.id: p for p in products}
        if not unique:
            raise ValueError("the catalog has no products")
        self.products: tuple[PerceivedProduct, ...] = tuple(unique[i] for i in sorted(unique))
        self.by_id = {p.id: p for p in self.products}
        self.categories: tuple[str, ...] = tuple(sorted({p.category or "" for p in self.products}))
        self.features: tuple[tuple[str, str], ...] = tuple(sorted({f for p in self.products for f in p.features}))
        prices = [p.price for p in self.products if p.price is not None and p.price > 0]
        self.reference_price = float(np.median(prices)) if prices else 1.0
        # The same facts as arrays, so a shopper's taste for every product is a few vector operations.
        self.category_index = {c: i for i, c in enumerate(self.categories)}
        self.feature_index = {f: i for i, f in enumerate(self.features)}
        self.product_category = np.array([self.category_index[p.category or ""] for p in self.products])
        self.log_price_ratio = np.array([self.log_price_ratio_of(p) for p in self.products])
        self.feature_owner = np.array([i for i, p in enumerate(self.products) for _ in p.features], dtype=np.int64)
        self.feature_of = np.array([self.feature_index[f] for p in self.products for f in p.features], dtype=np.int64)
        self.feature_count = np.array([len(p.features) for p in self.products], dtype=float)

    def __len__(self) -> int:
        return len(self.products)

    def log_price_ratio_of(self, product: PerceivedProduct) -> float:
        """log(price / median catalog price); 0 without a price."""
        if product.price is None or product.price <= 0:
            return 0.0
        return math.log(product.price / self.reference_price)

    def get(self, product_id: str) -> PerceivedProduct:
        """The product, or an unknown one (no category, price or features) for an id outside the catalog."""
        return self.by_id.get(product_id) or PerceivedProduct(product_id)


def catalog_from_products(products: Iterable[dict], keys: Collection[str] | None = None) -> ShopperCatalog:
    """The in-stock products among feed dicts (`id`, `category`, `price`, `attributes`, `in_stock`)."""
    return ShopperCatalog(
        perceive(p["id"], p.get("category"), p.get("price"), p.get("attributes"), keys)
        for p in products
        if p.get("in_stock", True)
    )


def read_feed(path: Path, tenant_id: str, keys: Collection[str] | None = None) -> tuple[ShopperCatalog, list[str]]:
    """In-stock products of a JSONL or CSV feed (optionally .gz), and one line per rejected line.

    ValueError (one clear line) for an unreadable file or a feed without a usable product."""
    import gzip

    from streams.feed import FeedFormatError, feed_format, parse_feed

    try:
        fmt = feed_format(path)
        opener = gzip.open if path.suffix.lower() == ".gz" else open
        with opener(path, "rb") as f:
            records = list(parse_feed(f, tenant_id, fmt))
    except (OSError, FeedFormatError, EOFError) as exc:
        raise ValueError(f"cannot read the feed {path}: {exc}") from exc
    problems = [f"line {r.line}: {r.error}" for r in records if not r.ok]
    products = [
        perceive(e.product.id, e.product.category, e.product.price, e.product.attributes, keys)
        for e in (r.event for r in records if r.ok)
        if e.type == "product.upserted" and e.product.in_stock
    ]
    if not products:
        raise ValueError(f"the feed {path} has no usable in-stock product ({len(problems)} bad lines)")
    return ShopperCatalog(products), problems


def load_catalog(session, tenant_id: str, keys: Collection[str] | None = None) -> ShopperCatalog:
    """The tenant's live, in-stock products from Postgres; ValueError when it has none."""
    from sqlalchemy import select

    from db.models import Product

    rows = session.execute(
        select(Product.external_id, Product.category, Product.price, Product.attributes).where(
            Product.tenant_id == tenant_id, Product.deleted.is_(False), Product.in_stock.is_(True)
        )
    ).all()
    if not rows:
        raise ValueError(f"tenant {tenant_id!r} has no in-stock products in the database")
    return ShopperCatalog(perceive(r.external_id, r.category, r.price, r.attributes, keys) for r in rows)


# --- the behaviour model ------------------------------------------------------------------------


@dataclass(frozen=True)
class ShopperParams:
    """The behaviour model's parameters (docs/shoppers.md); the defaults are the documented ones."""

    limit: int = 8  # recommendations asked for per view
    category_concentration: float = 0.5  # Dirichlet alpha of the category affinities
    category_clip: float = 3.0  # |log(C * w_c)| is clipped here
    attribute_sd: float = 1.0  # affinity per attribute value ~ Normal(0, sd)
    price_sensitivity_median: float = 0.5  # lambda ~ LogNormal(log(median), sigma)
    price_sensitivity_sigma: float = 0.5
    intercept: float = -3.5
    taste_weight: float = 1.0
    same_category_weight: float = 0.5
    shared_attribute_weight: float = 2.5
    position_decay: float = 0.7  # examination probability of rank r: r ** -decay
    cart_offset: float = 0.0  # P(cart | click) = sigmoid(u + cart_offset)
    purchase_offset: float = 0.5  # P(purchase | cart) = sigmoid(u + purchase_offset)
    continue_probability: float = 0.7  # after a click, view the clicked product
    max_views: int = 8  # recommendation requests per session at most
    extra_sessions_mean: float = 1.0  # sessions per shopper = 1 + min(Poisson(mean), max_sessions - 1)
    max_sessions: int = 4


def sigmoid(x: float) -> float:
    """The logistic function."""
    return 1.0 / (1.0 + math.exp(-x))


def position_bias(rank: int, decay: float) -> float:
    """Probability that the shopper looks at the item at `rank` (1-based)."""
    return float(rank) ** -decay


@dataclass(frozen=True)
class Taste:
    """A shopper's latent taste: log-affinity per category and per attribute value (aligned with the
    catalog's `categories` and `features`), and price sensitivity."""

    category: np.ndarray
    attribute: np.ndarray
    price_sensitivity: float


def draw_taste(catalog: ShopperCatalog, rng: np.random.Generator, params: ShopperParams) -> Taste:
    """A taste drawn from `rng` (always the same number of draws for a given catalog)."""
    n = len(catalog.categories)
    weights = rng.dirichlet(np.full(n, params.category_concentration))
    category = np.clip(np.log(n * weights + 1e-12), -params.category_clip, params.category_clip)
    attribute = rng.normal(0.0, params.attribute_sd, size=len(catalog.features))
    sensitivity = float(rng.lognormal(math.log(params.price_sensitivity_median), params.price_sensitivity_sigma))
    return Taste(category, attribute, sensitivity)


@dataclass(frozen=True)
class Reaction:
    """What a shopper did with one list: (rank, product id) clicked, carted, bought; the next view."""

    clicks: tuple[tuple[int, str], ...] = ()
    carts: tuple[tuple[int, str], ...] = ()
    purchases: tuple[tuple[int, str], ...] = ()
    next_view: str | None = None


class Shopper:
    """One simulated shopper: a taste and its own RNG; decisions see product ids and their order only."""

    def __init__(self, user_id: str, catalog: ShopperCatalog, rng: np.random.Generator, params: ShopperParams):
        self.user_id = user_id
        self.catalog = catalog
        self.params = params
        self.rng = rng
        self.taste = draw_taste(catalog, rng, params)
        self._appeal_all: np.ndarray | None = None

    @classmethod
    def create(cls, seed: int, n: int, catalog: ShopperCatalog, params: ShopperParams | None = None) -> Shopper:
        """Shopper `n` of the population of `seed`: user id `sim-<seed>-<n>`, its own RNG stream."""
        return cls(f"sim-{seed}-{n}", catalog, np.random.default_rng([seed, n]), params or ShopperParams())

    def appeal(self, product: PerceivedProduct) -> float:
        """Taste for a product alone: category + mean attribute affinity - price sensitivity x log price ratio."""
        t, c = self.taste, self.catalog
        # an id outside the catalog is perceived as blank: no category affinity, even if "" (uncategorised) is one
        category = c.category_index.get(product.category or "") if product.id in c.by_id else None
        score = 0.0 if category is None else float(t.category[category])
        known = [c.feature_index[f] for f in product.features if f in c.feature_index]
        if product.features:
            score += float(t.attribute[known].sum()) / len(product.features)
        return score - t.price_sensitivity * c.log_price_ratio_of(product)

    def appeal_all(self) -> np.ndarray:
        """`appeal` of every catalog product, in catalog order (computed once per shopper)."""
        if self._appeal_all is None:
            t, c = self.taste, self.catalog
            attribute = np.bincount(c.feature_owner, weights=t.attribute[c.feature_of], minlength=len(c))
            self._appeal_all = (
                t.category[c.product_category]
                + attribute / np.maximum(c.feature_count, 1.0)
                - t.price_sensitivity * c.log_price_ratio
            )
        return self._appeal_all

    def resemblance(self, shown: PerceivedProduct, viewed: PerceivedProduct) -> float:
        """How alike the shopper finds the shown and the viewed product: same category, shared values."""
        p = self.params
        same = p.same_category_weight if shown.category is not None and shown.category == viewed.category else 0.0
        shared = len(shown.features & viewed.features) / len(viewed.features) if viewed.features else 0.0
        return same + p.shared_attribute_weight * shared

    def utility(self, shown: PerceivedProduct, viewed: PerceivedProduct) -> float:
        """u = intercept + taste_weight * appeal(shown) + resemblance(shown, viewed)."""
        p = self.params
        return p.intercept + p.taste_weight * self.appeal(shown) + self.resemblance(shown, viewed)

    def sessions(self) -> int:
        """How many sessions this shopper has (drawn once)."""
        p = self.params
        return 1 + min(int(self.rng.poisson(p.extra_sessions_mean)), p.max_sessions - 1)

    def first_view(self) -> str:
        """A session's first product, drawn with probability proportional to exp(appeal)."""
        appeal = self.appeal_all()
        weights = np.exp(appeal - appeal.max())
        return self.catalog.products[int(self.rng.choice(len(weights), p=weights / weights.sum()))].id

    def react(self, viewed_id: str, shown_ids: Sequence[str]) -> Reaction:
        """At most one click per list (a cascade: the shopper scans from the top and follows the first item
        it clicks), then cart and purchase; three uniforms per shown item and one to continue, always drawn."""
        p = self.params
        viewed = self.catalog.get(viewed_id)
        draws = self.rng.random((len(shown_ids), 3))
        go_on = self.rng.random()
        clicks, carts, purchases = [], [], []
        for rank, (pid, (u_click, u_cart, u_buy)) in enumerate(zip(shown_ids, draws), start=1):
            u = self.utility(self.catalog.get(pid), viewed)
            if u_click >= position_bias(rank, p.position_decay) * sigmoid(u):
                continue
            clicks.append((rank, pid))
            if u_cart < sigmoid(u + p.cart_offset):
                carts.append((rank, pid))
                if u_buy < sigmoid(u + p.purchase_offset):
                    purchases.append((rank, pid))
            break  # the shopper went to the clicked product: the items below it are not examined
        next_view = clicks[0][1] if clicks and go_on < p.continue_probability else None
        return Reaction(tuple(clicks), tuple(carts), tuple(purchases), next_view)


# --- the runner ----------------------------------------------------------------------------------


class RateLimiter:
    """At most `rate` acquisitions per second over all tasks (0: no limit); `defer` pauses everyone."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def defer(self, seconds: float) -> None:
        """A 429/503 asked to wait: no request leaves before then."""
        self._next = max(self._next, time.monotonic() + seconds)


@dataclass
class ArmFigures:
    """Per arm as the responses labelled it: exposures (responses), what shoppers did with them."""

    exposures: int = 0
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    revenue: float = 0.0


@dataclass
class ShopperSummary:
    """What a run did, as the CLI prints it (and as its --json object)."""

    tenant: str | None
    api: str
    users: int
    rate: float
    seed: int
    concurrency: int
    catalog_products: int
    expected_experiment: str | None = None
    sessions: int = 0
    requests: int = 0  # recommendation responses that were used (200 with a valid body)
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    revenue: float = 0.0
    events_accepted: int = 0
    events_duplicates: int = 0
    events_failed: int = 0
    retries: int = 0
    unknown_shown: int = 0  # shown products the simulator's catalog did not know (perceived as blank)
    errors_by_kind: dict[str, int] = field(default_factory=dict)  # "recommendations 404", "events 503", ...
    experiments: dict[str, int] = field(default_factory=dict)  # responses per experiment label ("-": none)
    by_arm: dict[str, ArmFigures] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    achieved_rps: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None

    @property
    def errors(self) -> int:
        """Failed requests and calls, all kinds together."""
        return sum(self.errors_by_kind.values())

    def as_dict(self) -> dict:
        """A JSON-ready dict of every figure; `errors` is the total, `errors_by_kind` the detail."""
        return {**asdict(self), "errors": self.errors}


@dataclass(frozen=True)
class RunOptions:
    """How the runner talks to the API."""

    placement: str = "similar"
    # The storefront's widget setting, the same for every arm: "similar items in this category" asks the
    # visual arms for neighbours within the viewed product's category (the baseline always stays in it).
    same_category: bool = False
    timeout_s: float = 10.0
    max_retries: int = 3  # per request, on 429/503
    max_retry_wait_s: float = 30.0
    default_retry_wait_s: float = 1.0


class _Run:
    def __init__(self, http, limiter, summary: ShopperSummary, options: RunOptions, params: ShopperParams):
        self.http, self.limiter, self.summary, self.options, self.params = http, limiter, summary, options, params
        self.latencies: list[float] = []

    def error(self, what: str) -> None:
        self.summary.errors_by_kind[what] = self.summary.errors_by_kind.get(what, 0) + 1

    def _retry_wait(self, response: httpx.Response) -> float:
        o = self.options
        try:
            wait = float(response.headers.get("Retry-After", o.default_retry_wait_s))
        except ValueError:  # an HTTP date: not worth parsing, wait the default
            wait = o.default_retry_wait_s
        return min(max(wait, 0.0), o.max_retry_wait_s)

    async def _send(self, kind: str, call) -> httpx.Response | None:
        """One request with polite retries on 429/503; None (error counted) on a transport failure."""
        for attempt in range(self.options.max_retries + 1):
            if kind == "recommendations":
                await self.limiter.wait()
            started = time.perf_counter()
            try:
                response = await call()
            except httpx.HTTPError as exc:
                log.debug("%s: %s", kind, exc)
                self.error(f"{kind} transport ({type(exc).__name__})")
                return None
            if response.status_code in (429, 503) and attempt < self.options.max_retries:
                self.summary.retries += 1
                wait = self._retry_wait(response)
                if kind == "recommendations":
                    self.limiter.defer(wait)
                else:
                    await asyncio.sleep(wait)
                continue
            if kind == "recommendations" and response.status_code == 200:
                self.latencies.append(time.perf_counter() - started)
            return response
        return None  # unreachable: the last attempt returns

    async def recommendations(self, product_id: str, user_id: str) -> Recommendations | None:
        """The API's answer for one view, or None with the error counted."""
        params = {
            "product_id": product_id,
            "user_id": user_id,
            "limit": self.params.limit,
            "placement": self.options.placement,
        }
        if self.options.same_category:
            params["same_category"] = "true"
        response = await self._send("recommendations", lambda: self.http.get("/v1/recommendations", params=params))
        if response is None:
            return None
        if response.status_code != 200:
            self.error(f"recommendations {response.status_code}")
            return None
        try:
            return Recommendations.model_validate_json(response.content)
        except ValidationError:
            self.error("recommendations invalid body")
            return None

    async def post_events(self, events: list[dict]) -> None:
        """Send the events in calls of at most 500; count accepted, duplicates and failures."""
        s = self.summary
        for start in range(0, len(events), MAX_EVENTS_PER_CALL):
            chunk = events[start : start + MAX_EVENTS_PER_CALL]
            response = await self._send("events", lambda chunk=chunk: self.http.post("/v1/events", json=chunk))
            if response is None or response.status_code != 202:
                if response is not None:
                    self.error(f"events {response.status_code}")
                s.events_failed += len(chunk)
                continue
            try:
                body = response.json()
                s.events_accepted += len(body.get("accepted", []))
                s.events_duplicates += len(body.get("duplicates", []))
            except (ValueError, AttributeError):
                self.error("events invalid body")

    async def shopper(self, shopper: Shopper) -> None:
        """Every session of one shopper, its events sent at the end of each session."""
        s = self.summary
        for _ in range(shopper.sessions()):
            s.sessions += 1
            events: list[dict] = []
            viewed = shopper.first_view()
            for _ in range(self.params.max_views):
                answer = await self.recommendations(viewed, shopper.user_id)
                if answer is None:
                    break
                shown = [item.product_id for item in answer.items]
                reaction = shopper.react(viewed, shown)  # ids and order only: no arm, model or score
                self.tally(answer, shown, reaction, shopper)
                events += interaction_events(shopper, answer.request_id, reaction)
                if reaction.next_view is None:
                    break
                viewed = reaction.next_view
            if events:
                await self.post_events(events)

    def tally(self, answer: Recommendations, shown: list[str], reaction: Reaction, shopper: Shopper) -> None:
        """Count one response and the shopper's reaction, per arm label (for the report only)."""
        s = self.summary
        s.requests += 1
        s.unknown_shown += sum(pid not in shopper.catalog.by_id for pid in shown)
        label = answer.experiment or "-"
        s.experiments[label] = s.experiments.get(label, 0) + 1
        arm = s.by_arm.setdefault(answer.arm, ArmFigures())
        revenue = sum(shopper.catalog.get(pid).price or 0.0 for _, pid in reaction.purchases)
        for figures in (s, arm):
            figures.clicks += len(reaction.clicks)
            figures.carts += len(reaction.carts)
            figures.purchases += len(reaction.purchases)
            figures.revenue += revenue
        arm.exposures += 1


def interaction_events(shopper: Shopper, request_id: str, reaction: Reaction) -> list[dict]:
    """The storefront events of one reaction; ids `sim-<request id>-<rank>-<type>` (unique, repeatable)."""
    out = []
    for kind, entries in (
        ("click", reaction.clicks),
        ("add_to_cart", reaction.carts),
        ("purchase", reaction.purchases),
    ):
        for rank, pid in entries:
            event = {
                "event_id": f"sim-{request_id}-{rank}-{kind}",
                "type": kind,
                "user_id": shopper.user_id,
                "product_id": pid,
                "request_id": request_id,
            }
            price = shopper.catalog.get(pid).price
            if kind == "purchase" and price is not None:
                event["value"] = price
            out.append(event)
    return out


async def simulate_shoppers(
    catalog: ShopperCatalog | Iterable[dict],
    *,
    api: str,
    storefront_key: str,
    tenant: str | None = None,
    users: int,
    rate: float,
    seed: int = 0,
    experiment: str | None = None,
    concurrency: int = 16,
    params: ShopperParams | None = None,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ShopperSummary:
    """Run `users` shoppers (`sim-<seed>-0` ...) against the API at `api`; never raises on a bad response.

    `catalog`: a ShopperCatalog, or feed dicts (the demo's products); `tenant` labels the summary only
    (the storefront key decides the tenant). `progress(done_users, total_users)` after each shopper."""
    if not isinstance(catalog, ShopperCatalog):
        catalog = catalog_from_products(catalog)
    if users < 0 or rate < 0 or concurrency < 1:
        raise ValueError("users and rate must be >= 0 and concurrency >= 1")
    params, options = params or ShopperParams(), options or RunOptions()
    summary = ShopperSummary(tenant, api, users, rate, seed, concurrency, len(catalog), experiment)
    next_user, done = iter(range(users)), 0
    started = time.perf_counter()
    async with httpx.AsyncClient(
        base_url=api,
        headers={KEY_HEADER: storefront_key},
        timeout=options.timeout_s,
        transport=transport,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    ) as http:
        run = _Run(http, RateLimiter(rate), summary, options, params)

        async def worker() -> None:
            nonlocal done
            for n in next_user:  # one shared iterator: each user is taken by one worker
                await run.shopper(Shopper.create(seed, n, catalog, params))
                done += 1
                if progress is not None:
                    progress(done, users)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, max(users, 1)))))
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    summary.achieved_rps = round(summary.requests / summary.elapsed_s, 1) if summary.elapsed_s > 0 else 0.0
    if run.latencies:
        p50, p99 = np.percentile(np.array(run.latencies) * 1000, [50, 99])
        summary.latency_p50_ms, summary.latency_p99_ms = round(float(p50), 1), round(float(p99), 1)
    summary.revenue = round(summary.revenue, 2)
    for arm in summary.by_arm.values():
        arm.revenue = round(arm.revenue, 2)
    summary.warnings = experiment_warnings(summary.experiments, experiment)
    return summary


def experiment_warnings(experiments: dict[str, int], expected: str | None) -> list[str]:
    """One line per experiment label that is not the expected one ("-": the response named none)."""
    if expected is None:
        return []
    total = sum(experiments.values())
    return [
        f"{n} of {total} responses "
        + ("named no experiment" if label == "-" else f"named experiment {label!r}")
        + f", not {expected!r}"
        for label, n in sorted(experiments.items())
        if label != expected
    ]


def run_shoppers(catalog: ShopperCatalog | Iterable[dict], **kwargs) -> ShopperSummary:
    """`simulate_shoppers` from synchronous code (the demo, the CLI): same arguments, same summary."""
    return asyncio.run(simulate_shoppers(catalog, **kwargs))


__all__ = [
    "ArmFigures",
    "PerceivedProduct",
    "Reaction",
    "RunOptions",
    "Shopper",
    "ShopperCatalog",
    "ShopperParams",
    "ShopperSummary",
    "catalog_from_products",
    "load_catalog",
    "perceive",
    "read_feed",
    "run_shoppers",
    "simulate_shoppers",
]
