"""`vitrine demo`: the whole product on real parts, on one machine, with pictures.

embedded broker + Postgres -> api, worker and dashboard processes -> a demo tenant -> ~500 sample products
(openclipart drawings as studio shots, vitrine/demo_catalog.py) through the signed webhook -> the worker
fetches, embeds and indexes them (and stores thumbnails) -> a catalog-adapted model is trained through the
admin API and re-embeds the catalog in the background -> an experiment `baseline` vs `visual@<pretrained>` vs
`visual@<trained>` -> simulated shoppers (vitrine/shoppers.py, docs/shoppers.md) through the storefront API
-> the experiment report -> the dashboard stays up until Ctrl-C (`--exit` stops after the report).

Each phase is timed; the table at the end (and DATA_DIR/demo/summary.json, with every figure) is what the
README and docs/demo.md quote. Everything the shoppers did is simulated and labelled so: tenant name,
experiment key, user ids.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import typer
from sqlalchemy import func, select, text

from core.settings import Settings
from db.models import Product
from vitrine import procs
from vitrine.client import AdminClient, CatalogClient
from vitrine.image_server import ImageServer
from vitrine.local_system import LocalSystem, start_local_system

DEMO_TENANT = "demo"
TENANT_NAME = "Demo retailer (simulated shoppers)"
EXPERIMENT = "simulated-visual-vs-baseline"
BATCH = 100  # products per signed webhook call
# What simulated shoppers perceive of a product besides category and price (docs/shoppers.md): the demo
# catalog's ground truth; `hue_shift` and `source` are bookkeeping, not looks.
SHOPPER_ATTRIBUTES = ("design", "colour", "subject")


@dataclass
class DemoOptions:
    products: int = 520
    users: int = 1500
    rate: float = 120.0  # recommendation requests per second, all shoppers together
    seed: int = 0
    method: str = "triplet"
    same_category: bool = True  # the storefront widget: "similar items in this category" (every arm alike)
    exit_after_report: bool = False
    screenshots: Path | None = None
    dashboard_port: int = 8501
    timeout_s: float = 900.0  # per waiting phase


@dataclass
class Phases:
    """Wall-clock seconds of each phase, printed as a table and saved for the docs."""

    started: float = field(default_factory=time.monotonic)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(time.monotonic() - t0, 1)

    def table(self) -> str:
        width = max(map(len, self.seconds), default=5)
        rows = [f"  {name:<{width}}  {s:>7.1f} s" for name, s in self.seconds.items()]
        return "\n".join([*rows, f"  {'total':<{width}}  {time.monotonic() - self.started:>7.1f} s"])


def run_demo(settings: Settings, options: DemoOptions) -> dict:
    """Run the demo and print what happens; RuntimeError with a clear message on failure. Returns the summary."""
    from vision.datasets import DatasetError
    from vitrine.demo_catalog import build_demo_catalog, catalog_events

    phases = Phases()
    out_dir = settings.data_dir / "demo"
    _stop_on_signals()
    summary: dict = {"options": {k: str(v) for k, v in vars(options).items()}}
    with ExitStack() as stack:
        with phases.phase("sample catalog"):
            try:
                catalog = build_demo_catalog(
                    out_dir / "catalog", n_products=options.products, seed=options.seed, data_dir=settings.data_dir
                )
            except DatasetError as exc:  # no drawings, too few: the message says what to install or set
                raise RuntimeError(str(exc)) from None
        typer.echo(
            f"sample catalog: {len(catalog.products)} products in {len(catalog.categories)} categories "
            f"({', '.join(catalog.categories)}), openclipart drawings (public domain) as studio shots"
        )
        with phases.phase("stack, api, worker, dashboard"):
            system = start_local_system(settings, stack, name="demo")
            password_file, dashboard_url, dashboard = _start_dashboard(system, stack, out_dir, options.dashboard_port)
            images = stack.enter_context(ImageServer(catalog.images_dir))
            creds = system.fresh_tenant(DEMO_TENANT, TENANT_NAME)
        typer.echo(
            f"{'started the embedded stack' if system.started_stack else 'using the running stack'}: "
            f"kafka {system.settings.kafka_bootstrap}, postgres under {settings.data_dir.resolve()}; "
            f"api {system.base_url}, dashboard {dashboard_url}, logs under {system.logs}"
        )

        with phases.phase("ingest (webhook -> indexed)"):
            ingest_catalog(system, creds, catalog_events(catalog, creds.tenant_id, images.base_url), options.timeout_s)

        admin = AdminClient(system.base_url, creds.admin_key)
        stack.callback(admin.close)
        with phases.phase("train a catalog-adapted model"):
            model = _train(admin, system, options)
        summary["model"] = {"key": model["model_key"], "metrics": model.get("metrics")}
        _print_card(model)

        with phases.phase("re-embed the catalog (deploy)"):
            _deploy(admin, system, model["model_key"], options.timeout_s)

        pretrained = _json(admin.get("/v1/deployments"), "GET /v1/deployments")["pretrained_model"]
        arms = ["baseline", f"visual@{pretrained}", f"visual@{model['model_key']}"]
        summary["arms"] = arms
        _start_experiment(admin, arms, options.seed)
        typer.echo(f"\nexperiment {EXPERIMENT} running: {', '.join(arms)} (a third of the shoppers each)")

        with phases.phase("simulated shoppers"):
            shoppers = _shop(system, creds, catalog, options)
        summary["shoppers"] = shoppers

        with phases.phase("report"):
            _wait_loaded(system, shoppers, options.timeout_s)
            report = _report(system)
        summary["report"] = report["result"]
        typer.echo(f"\n{report['text']}")
        summary["shown"] = _shown_profile(system)
        typer.echo(_format_profile(summary["shown"]))

        (out_dir / "summary.json").write_text(json.dumps(summary | {"phases": phases.seconds}, indent=2, default=str))
        if options.screenshots:
            from vitrine.demo_screenshots import take_demo_screenshots
            from vitrine.screenshots import BrowserMissing

            with phases.phase("screenshots"):
                try:
                    password = password_file.read_text().strip()
                    shots = take_demo_screenshots(
                        dashboard_url, password, options.screenshots, catalog, model["model_key"]
                    )
                except (BrowserMissing, TimeoutError) as exc:  # the demo itself worked: say so, then carry on
                    shots = []
                    typer.secho(f"no screenshots: {exc}", err=True, fg=typer.colors.YELLOW)
            summary["screenshots"] = shots
            if shots:
                typer.echo("screenshots: " + ", ".join(s["path"] for s in shots))

        summary["phases"] = phases.seconds
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        typer.echo(f"\nphases (wall clock):\n{phases.table()}")
        typer.echo(
            f"\nopen the dashboard: {dashboard_url}  (sign in with the password in {password_file}; "
            f"tenant {DEMO_TENANT}: Experiments, Catalog explorer, Latent map)"
        )
        if not options.exit_after_report:
            typer.echo("api, worker and dashboard keep running; Ctrl-C stops them")
            watched = {"worker": system.worker, "api": system.api, "dashboard": dashboard}
            try:
                while not (gone := [n for n, p in watched.items() if p is not None and p.poll() is not None]):
                    time.sleep(1)
                for name in gone:
                    typer.secho(
                        f"the {name} exited with {watched[name].returncode}; see {system.logs / (name + '.log')}",
                        err=True,
                        fg=typer.colors.RED,
                    )
            except KeyboardInterrupt:
                pass
        typer.echo("stopping the dashboard, api, worker and the embedded stack...")
    return summary


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP (a closed terminal, a supervisor) unwind like Ctrl-C: every child is stopped."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def _json(resp, what: str) -> dict:
    """The body of a 2xx answer, else RuntimeError naming the call and the answer."""
    if not 200 <= resp.status_code < 300:
        raise RuntimeError(f"{what} answered {resp.status_code}: {resp.text[:300]}")
    try:
        return resp.json()
    except ValueError:
        raise RuntimeError(f"{what} answered {resp.status_code} with a body that is not JSON") from None


def _start_dashboard(system: LocalSystem, stack: ExitStack, out_dir: Path, port: int) -> tuple[Path, str, object]:
    """`vitrine dashboard` as a child; its operator password lives in a 0600 file, never on the console."""
    from streams.embedded_broker import free_port

    password_file = out_dir / "dashboard-password"
    out_dir.mkdir(parents=True, exist_ok=True)
    if not password_file.is_file():
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18))
    if not port or not _port_free(port):
        port = free_port()
    env = {
        "VITRINE_KAFKA_BOOTSTRAP": system.settings.kafka_bootstrap,
        "VITRINE_DATABASE_URL": system.settings.database_url,
        "VITRINE_DATA_DIR": str(system.settings.data_dir.resolve()),
        "VITRINE_DASHBOARD_PASSWORD": password_file.read_text().strip(),
    }
    proc = procs.spawn(["dashboard", "--port", str(port)], env, system.logs / "dashboard.log")
    stack.callback(procs.stop, proc)
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(f"{url}/_stcore/health", proc, timeout_s=120, log_path=system.logs / "dashboard.log")
    return password_file, url, proc


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _bar(total: int, desc: str, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stdout, mininterval=0.5, dynamic_ncols=True)


def ingest_catalog(system: LocalSystem, creds, events: list[dict], timeout_s: float) -> None:
    """Signed webhook batches, then a progress bar that follows what the worker indexed (not what was sent)."""
    catalog = CatalogClient(system.base_url, creds.tenant_id, creds.webhook_secret)
    try:
        for i in range(0, len(events), BATCH):
            resp = catalog.send(events[i : i + BATCH])
            if resp.status_code != 202:
                raise RuntimeError(f"webhook answered {resp.status_code}: {resp.text[:300]}")
    finally:
        catalog.close()
    typer.echo(f"posted {len(events)} signed product events in {-(-len(events) // BATCH)} webhook calls -> 202")
    n = len(events)
    with _bar(n, "indexed", "product") as bar:
        _wait_for(
            lambda: _indexed(system, creds.tenant_id),
            n,
            timeout_s,
            system,
            f"products indexed of {n}",
            lambda done: bar.update(done - bar.n),
        )


def _indexed(system: LocalSystem, tenant_id: str) -> int:
    with system.sessions() as s:
        return s.scalar(
            select(func.count())
            .select_from(Product)
            .where(Product.tenant_id == tenant_id, Product.indexed_at.is_not(None))
        )


def _wait_for(
    count: Callable[[], int], target: int, timeout_s: float, system: LocalSystem, what: str, progress=None
) -> int:
    deadline = time.monotonic() + timeout_s
    done = 0
    while time.monotonic() < deadline:
        if system.worker.poll() is not None:
            raise RuntimeError(f"worker exited with {system.worker.returncode}; see {system.logs / 'worker.log'}")
        done = count()
        if progress:
            progress(done)
        if done >= target:
            return done
        time.sleep(0.5)
    raise RuntimeError(f"only {done} {what} after {timeout_s:.0f} s; see {system.logs / 'worker.log'}")


def _train(admin: AdminClient, system: LocalSystem, options: DemoOptions) -> dict:
    """POST /v1/models (a training process of the api), polled until ready; the model card's figures."""
    resp = admin.post("/v1/models", {"method": options.method, "seed": options.seed})
    if resp.status_code != 202:
        raise RuntimeError(f"training did not start: {resp.status_code} {resp.text[:300]}")
    job = resp.json()["job_id"]
    typer.echo(f"\ntraining a {options.method} head on the catalog's stored features (job {job}; held-out products)")
    deadline, t0 = time.monotonic() + options.timeout_s, time.monotonic()
    while time.monotonic() < deadline:
        body = _json(admin.get(f"/v1/models/{job}"), f"GET /v1/models/{job}")
        if body["status"] == "ready":
            typer.echo(f"trained {body['model_key']} in {time.monotonic() - t0:.0f} s")
            return body
        if body["status"] == "failed":
            raise RuntimeError(f"training failed: {body['reason']}")
        time.sleep(1)
    raise RuntimeError(f"training did not finish in {options.timeout_s:.0f} s; see {system.logs / 'api.log'}")


def _print_card(model: dict) -> None:
    """The held-out comparison the model card carries: trained beside pretrained on the same products."""
    from vitrine.bench.training import METRIC_COLUMNS

    card = model.get("card") or {}
    metrics = card.get("metrics") or model.get("metrics") or {}
    rows = metrics.get("models") or {}
    if not rows:
        return
    held = card.get("data", {}).get("held_out")
    held = f"{held.get('products')} products, {held.get('images')} photos" if isinstance(held, dict) else held
    typer.echo(
        f"held out: {held} never trained on (seed {card.get('data', {}).get('seed')}); "
        f"a hit = same {metrics.get('relevance')}"
    )
    images = card.get("data", {}).get("held_out_images")
    if isinstance(images, dict) and images.get("fetched") != images.get("of"):
        from vitrine.cli.model_train import held_out_images_line

        typer.echo(f"held-out images fetched again for the raw-pixel baseline: {held_out_images_line(images)}")
    columns = [*METRIC_COLUMNS, *sorted({c for row in rows.values() for c in row} - set(METRIC_COLUMNS))]
    typer.echo(f"  {'':<12}" + "".join(f"{c:>16}" for c in columns))
    for name, row in rows.items():
        typer.echo(f"  {name:<12}" + "".join(f"{row.get(c, float('nan')):>16.3f}" for c in columns))


def _deploy(admin: AdminClient, system: LocalSystem, model_key: str, timeout_s: float) -> None:
    """POST /v1/models/{key}/deploy; the workers re-embed in the background; a bar follows /v1/deployments."""
    resp = admin.post(f"/v1/models/{model_key}/deploy")
    if resp.status_code not in (200, 202):
        raise RuntimeError(f"deploy answered {resp.status_code}: {resp.text[:300]}")

    def progress() -> tuple[str, float, str | None]:
        for d in _json(admin.get("/v1/deployments"), "GET /v1/deployments")["deployments"]:
            if d["model_key"] == model_key:
                return d["status"], d["progress"], d["reason"]
        return "embedding", 0.0, None

    deadline = time.monotonic() + timeout_s
    with _bar(100, "re-embedded", "%") as bar:
        while time.monotonic() < deadline:
            if system.worker.poll() is not None:
                raise RuntimeError(f"worker exited with {system.worker.returncode}; see {system.logs / 'worker.log'}")
            status, share, reason = progress()
            bar.update(int(share * 100) - bar.n)
            if status == "ready":
                bar.update(100 - bar.n)
                return
            if status == "failed":
                raise RuntimeError(f"re-embedding failed: {reason}")
            time.sleep(0.5)
    raise RuntimeError(f"re-embedding not ready after {timeout_s:.0f} s; see {system.logs / 'worker.log'}")


def _start_experiment(admin: AdminClient, arms: list[str], seed: int) -> None:
    weight = 1 / len(arms)
    body = {
        "key": EXPERIMENT,
        "arms": [{"name": a, "weight": weight} for a in arms],
        "primary_metric": "ctr",
        "guardrails": ["conversion"],
        "salt": f"simulated-demo-seed-{seed}",  # the same shoppers land in the same arms on every run of a seed
    }
    for path, payload in (("/v1/experiments", body), (f"/v1/experiments/{EXPERIMENT}/start", None)):
        resp = admin.post(path, payload)
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"{path} answered {resp.status_code}: {resp.text[:300]}")


def _shop(system: LocalSystem, creds, catalog, options: DemoOptions) -> dict:
    from vitrine.shoppers import RunOptions, catalog_from_products, run_shoppers

    typer.echo(
        f"\nsimulated shoppers: {options.users} users at up to {options.rate:.0f} recommendation requests/s "
        f"(seed {options.seed}; behaviour model in docs/shoppers.md: nothing in it knows the arms); the storefront "
        + (
            "asks for similar items in the viewed product's category"
            if options.same_category
            else "asks for similar items in any category"
        )
    )
    with _bar(options.users, "shoppers", "user") as bar:
        result = run_shoppers(
            catalog_from_products(catalog.products, keys=SHOPPER_ATTRIBUTES),
            api=system.base_url,
            storefront_key=creds.storefront_key,
            tenant=creds.tenant_id,
            users=options.users,
            rate=options.rate,
            seed=options.seed,
            experiment=EXPERIMENT,
            options=RunOptions(same_category=options.same_category),
            progress=lambda done, total: bar.update(done - bar.n),
        )
    out = result.as_dict()
    typer.echo(
        f"  {out['requests']} recommendation requests ({out['achieved_rps']} /s, p50 {out['latency_p50_ms']} ms, "
        f"p99 {out['latency_p99_ms']} ms), {out['clicks']} clicks, {out['carts']} add-to-carts, "
        f"{out['purchases']} purchases, {out['errors']} errors"
    )
    for warning in out["warnings"]:
        typer.secho(f"  warning: {warning}", fg=typer.colors.YELLOW)
    return out


def _wait_loaded(system: LocalSystem, shoppers: dict, timeout_s: float) -> None:
    """Until the worker has loaded every exposure, click, add-to-cart and purchase the shoppers caused (the
    tenant is new each run, so all its interactions are theirs)."""
    expected = shoppers["requests"] + shoppers["events_accepted"]

    def loaded() -> int:
        with system.sessions() as s:
            return s.scalar(text("SELECT count(*) FROM interaction_events WHERE tenant_id = :t"), {"t": DEMO_TENANT})

    _wait_for(loaded, max(expected, 1), min(timeout_s, 180), system, f"of {expected} interactions loaded")


# What each arm showed, measured against the catalog's ground truth after the fact: the explanation of a
# lift under the behaviour model (docs/shoppers.md), never an input to it.
SHOWN_SQL = """
WITH shown AS (
    SELECT e.arm, e.product_id AS viewed, s.pid AS shown
    FROM interaction_events e CROSS JOIN LATERAL jsonb_array_elements_text(e.payload -> 'shown') AS s(pid)
    WHERE e.tenant_id = :t AND e.type = 'exposure' AND e.experiment = :e
)
SELECT shown.arm,
       count(*) AS items,
       avg(p.price)::float AS mean_price,
       avg((p.category IS NOT DISTINCT FROM v.category)::int)::float AS same_category,
       avg((p.attributes ->> 'design' = v.attributes ->> 'design')::int)::float AS same_design,
       avg((p.attributes ->> 'colour' = v.attributes ->> 'colour')::int)::float AS same_colour
FROM shown
JOIN products p ON p.tenant_id = :t AND p.external_id = shown.shown
JOIN products v ON v.tenant_id = :t AND v.external_id = shown.viewed
GROUP BY shown.arm ORDER BY shown.arm
"""


def _shown_profile(system: LocalSystem) -> list[dict]:
    with system.sessions() as s:
        return [dict(r) for r in s.execute(text(SHOWN_SQL), {"t": DEMO_TENANT, "e": EXPERIMENT}).mappings()]


def _format_profile(rows: list[dict]) -> str:
    lines = [
        "what each arm showed (ground truth of the sample catalog, measured after the fact):",
        f"  {'arm':<44}{'items':>7}{'mean price':>12}{'same category':>15}{'same design':>13}{'same colour':>13}",
    ]
    for r in rows:
        lines.append(
            f"  {r['arm']:<44}{r['items']:>7}{r['mean_price']:>12.2f}{r['same_category']:>15.1%}"
            f"{r['same_design']:>13.1%}{r['same_colour']:>13.1%}"
        )
    return "\n".join(lines)


def _report(system: LocalSystem) -> dict:
    from db.experiment_stats import analyze
    from experiments.analysis import ReportOptions
    from experiments.report import render_text

    with system.engine.connect() as conn:
        result = analyze(conn, DEMO_TENANT, EXPERIMENT, ReportOptions())
    if result is None:
        raise RuntimeError(f"experiment {EXPERIMENT} has no exposures")
    return {"text": "SIMULATED SHOPPERS: " + render_text(result), "result": result}
