"""`vitrine detector add-class|train|eval|list|activate|rollback`: teach a tenant's student detector its classes.

Classes are label sets under DATA_DIR/detectors/<tenant>/classes/<label>/ (training/distill.py writes
them atomically: a refused class leaves nothing behind). A trained student is a `detector` row of the
model registry with its artefact under DATA_DIR/models/detectors/<key>/; activating it makes search by
image use it for the tenant.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import typer

from vitrine.cli.app import USAGE, app, database_engine, fail, load_settings
from vitrine.cli.vision import JSON, VERBOSE, quiet_logging

log = logging.getLogger(__name__)

detector_app = typer.Typer(
    help="Teach a tenant's detector new product classes (teacher -> student).", no_args_is_help=True
)
app.add_typer(detector_app, name="detector")

TEACHERS = ("catalog", "owlvit", "grounding-dino")
TENANT = typer.Option(..., "--tenant", help="The tenant whose catalog and detector this is")


def classes_dir(settings, tenant: str) -> Path:
    return settings.data_dir / "detectors" / tenant / "classes"


def artefacts_dir(settings, tenant: str) -> Path:
    return settings.data_dir / "models" / "detectors" / tenant


def _sessions():
    from db.session import session_factory

    return session_factory(database_engine())


def _tenant_or_fail(sessions, tenant: str) -> None:
    from db.models import Tenant

    with sessions() as s:
        if s.get(Tenant, tenant) is None:
            fail(f"no tenant {tenant!r}")


def _decode(thumbnail: bytes):
    """The thumbnail as RGB, or None when it does not decode (counted by the caller, never a traceback)."""
    from PIL import UnidentifiedImageError

    from vision.image import pil_open

    try:
        with pil_open(io.BytesIO(thumbnail)) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        log.warning("a stored thumbnail does not decode: %s", exc)
        return None


@detector_app.command("add-class")
def add_class(
    label: str = typer.Argument(..., help="The class name the detector will output, e.g. 'jumpsuit'"),
    tenant: str = TENANT,
    from_category: str = typer.Option(..., "--from-category", help="The catalog category whose photos teach it"),
    teacher: str = typer.Option("catalog", "--teacher", help="catalog (offline) | owlvit | grounding-dino"),
    teacher_model: str = typer.Option(
        None, "--teacher-model", help="owlvit/grounding-dino: a hub id or a local save_pretrained folder"
    ),
    prompt: str = typer.Option(None, "--prompt", help="Open-vocabulary teachers: the prompt (default: best variant)"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Label one class with a teacher on its category's photos; saved as a label set with its card."""
    quiet_logging(verbose)
    if teacher not in TEACHERS:
        fail(f"--teacher must be one of {', '.join(TEACHERS)}, not {teacher!r}", USAGE)
    settings = load_settings()
    from db.detectors import catalog_photos
    from training.distill import DistillError, class_slug, teach_class
    from vision.model import ModelLoadError

    try:
        target = classes_dir(settings, tenant) / class_slug(label)
    except DistillError as exc:
        fail(str(exc), USAGE)
    if target.exists():
        fail(f"class {label!r} is already present for tenant {tenant!r} ({target})")
    sessions = _sessions()
    _tenant_or_fail(sessions, tenant)
    with sessions() as s:
        rows = catalog_photos(s, tenant, categories=[from_category])
    decoded = [(r.product, _decode(r.thumbnail)) for r in rows]
    photos = [(p, im) for p, im in decoded if im is not None]
    if len(photos) < len(decoded):
        typer.echo(
            f"{len(decoded) - len(photos)} stored thumbnails of {from_category!r} do not decode: skipped", err=True
        )
    try:
        path = teach_class(
            label,
            from_category,
            photos,
            target,
            teacher=teacher,
            teacher_model=teacher_model,
            prompt=prompt,
            cache_dir=settings.data_dir / "models",
            seed=seed,
            card_extra={"tenant": tenant},
        )
    except (DistillError, ModelLoadError, ValueError, OSError) as exc:
        fail(str(exc))
    from training.labelsets import read_card

    card = read_card(path)
    card.pop("products", None)
    if as_json:
        typer.echo(json.dumps({"class": label, "path": str(path), "card": card}, indent=2, default=str))
        return
    counts = card.get("counts", {})
    typer.echo(
        f"class {label!r} added from category {from_category!r} by the {teacher} teacher: "
        f"{card.get('usable_products')} products ({card.get('photos')} photos, "
        f"rejected {card.get('rejected') or 'none'}); "
        f"images train/val {counts.get('train', {}).get('images', 0)}/{counts.get('val', {}).get('images', 0)}\n"
        f"label set: {path}\nnext: vitrine detector train --tenant {tenant}"
    )


@detector_app.command("train")
def train(
    tenant: str = TENANT,
    epochs: int = typer.Option(30, "--epochs", min=1, max=500),
    imgsz: int = typer.Option(320, "--imgsz", min=64, max=1280),
    batch: int = typer.Option(16, "--batch", min=1, max=256),
    train_scenes: int = typer.Option(600, "--train-scenes", min=10),
    test_scenes: int = typer.Option(200, "--test-scenes", min=10),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | 0"),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Do not fine-tune the tenant's latest student"),
    activate: bool = typer.Option(False, "--activate", help="Make the new student the tenant's active detector"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Train the student on every class's label set (composite scenes), evaluate on held-out products, register."""
    quiet_logging(verbose)
    settings = load_settings()
    from db import trained_models
    from db.detectors import DETECTOR_METHOD, activate_detector, catalog_photos, list_detectors
    from training.distill import DistillError, distractor_cutouts, train_detector
    from training.labelsets import LabelSetError, read_card
    from training.student import StudentConfig, StudentError
    from vision.components import build_embedder
    from vitrine.bench.training import device_info

    sessions = _sessions()
    _tenant_or_fail(sessions, tenant)
    found = sorted(p for p in classes_dir(settings, tenant).glob("*") if (p / "card.json").is_file())
    if not found:
        fail(f"tenant {tenant!r} has no classes; add one with `vitrine detector add-class LABEL --tenant {tenant} ...`")
    cards = {p: read_card(p) for p in found}
    with sessions() as s:
        previous = next((d for d in list_detectors(s, tenant) if d.status == "ready"), None)
    base, order = None, []
    if previous is not None and not from_scratch:
        old = list((previous.card or {}).get("classes") or [])
        by_label = {c["names"][0]: p for p, c in cards.items()}
        if set(old) <= set(by_label):  # fine-tune: old classes keep their ids, new ones follow
            base = Path(previous.artefact_path)
            order = [by_label[label] for label in old]
    order += sorted((p for p in found if p not in order), key=lambda p: cards[p].get("created_at", ""))
    labels = [cards[p]["names"][0] for p in order]
    with sessions() as s:
        categories = [cards[p].get("category") for p in order]
        others = catalog_photos(s, tenant, exclude=[c for c in categories if c], limit=400)
    decoded = [(r.product, r.category, _decode(r.thumbnail)) for r in others]
    distractors = distractor_cutouts([row for row in decoded if row[2] is not None], labels)
    config = StudentConfig(
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        seed=seed,
        device=device,
        base=base if base and base.is_file() else None,
    )
    with sessions.begin() as s:
        try:
            job = trained_models.start_job(
                s, tenant, method=DETECTOR_METHOD, finetune=config.base is not None,
                params={"classes": labels, "epochs": epochs, "imgsz": imgsz, "seed": seed,
                        "base": previous.model_key if config.base else None},
            )  # fmt: skip
        except trained_models.TrainingJobError as exc:
            fail(str(exc))
        trained_models.set_pid(s, tenant, job.job_id, os.getpid())
        job_id = job.job_id
    try:
        run = train_detector(
            order,
            distractors,
            artefacts_dir(settings, tenant),
            config=config,
            scenes={"train": train_scenes, "val": max(10, train_scenes // 6), "test": test_scenes},
            seed=seed,
            progress=_epoch_bar(),
            machine=device_info(),
            embedder=build_embedder(settings),
        )
    except (DistillError, LabelSetError, StudentError, ValueError, OSError) as exc:
        with sessions.begin() as s:
            trained_models.fail_job(s, tenant, job_id, str(exc)[:500])
        fail(str(exc))
    except BaseException as exc:
        with sessions.begin() as s:
            trained_models.fail_job(s, tenant, job_id, f"training crashed: {type(exc).__name__}: {exc}"[:500])
        raise
    with sessions.begin() as s:
        trained_models.finish_job(
            s, tenant, job_id, model_key=run.key, artefact_path=str(run.weights), card=_registry_card(run.card)
        )
        if activate:
            activate_detector(s, tenant, run.key)
    _print_run(run.key, run.card, as_json, activated=activate)


def _registry_card(card: dict) -> dict:
    """The card as stored in the registry: without the long per-scene details."""
    return {k: v for k, v in card.items() if k != "scenes"} | {"scene_counts": (card.get("scenes") or {}).get("counts")}


def _print_run(key: str, card: dict, as_json: bool, *, activated: bool = False) -> None:
    if as_json:
        typer.echo(json.dumps({"key": key, "activated": activated, "card": card}, indent=2, default=str))
        return
    typer.echo(format_heldout(key, card))
    if activated:
        typer.echo(f"{key} is now the tenant's active detector")


def format_heldout(key: str, card: dict) -> str:
    """The held-out table: AP50 per class of both students (the served one marked), time, device and machine."""
    held = card.get("heldout") or {}
    student = card.get("student") or {}
    same = card.get("heldout_same_rule") or {"yolo": held}
    serve = card.get("serve", "yolo")
    names = list(same)
    lines = [
        f"detector {key}: held-out composite scenes of products it never saw ({held.get('images')} images); "
        f"AP50, COCO 101-point; served: {serve}"
    ]
    lines.append(
        f"{'class':<24} " + " ".join(f"{n + ('*' if n == serve else ''):>10}" for n in names) + f" {'boxes':>6}"
    )
    for cls, row in (held.get("per_class") or {}).items():
        aps = [same[n]["per_class"].get(cls, {}).get("ap50") for n in names]
        cells = " ".join(f"{'-' if ap is None else f'{ap:.3f}':>10}" for ap in aps)
        lines.append(f"{cls:<24} {cells} {row.get('instances', 0):>6}")
    lines.append(f"{'all (mAP50)':<24} " + " ".join(f"{same[n].get('map50', 0):>10.3f}" for n in names))
    multi = card.get("heldout_labels_per_box")
    if multi:
        lines.append(
            f"(yolo+head scored for its {multi['labels_per_box']} most probable classes a box, the COCO protocol: "
            f"mAP50 {multi['yolo+head']['map50']:.3f}; serving names a box once)"
        )
    lines.append(
        f"(ultralytics' own val of the YOLO student: mAP50 {held.get('map50', 0):.3f}, "
        f"mAP50-95 {held.get('map50_95', 0):.3f})"
    )
    machine = card.get("machine") or {}
    lines.append(
        f"trained {student.get('epochs_run')} epochs in {student.get('seconds', 0):.0f} s on {student.get('device')} "
        f"({machine.get('cpu')}, {machine.get('cores')} cores{', ' + machine['gpu'] if machine.get('gpu') else ''}); "
        f"fine-tuned from {student.get('config', {}).get('base') or 'nothing (from scratch)'}"
    )
    return "\n".join(lines)


def _epoch_bar():
    from tqdm import tqdm

    bar = {}

    def update(epoch: int, epochs: int, seconds: float) -> None:
        if "t" not in bar:
            bar["t"] = tqdm(total=epochs, desc="student epochs", unit="epoch", leave=True)
        bar["t"].update(epoch - bar["t"].n)
        if epoch >= epochs:
            bar["t"].close()

    return update


@detector_app.command("eval")
def evaluate(
    key: str = typer.Argument(..., help="A detector key or job id of the tenant"),
    tenant: str = TENANT,
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Evaluate a registered student again on its held-out test scenes; per-class AP50."""
    quiet_logging(verbose)
    from db.detectors import DetectorError, ready_detector
    from training.student import StudentError, evaluate_student

    sessions = _sessions()
    with sessions() as s:
        try:
            job = ready_detector(s, tenant, key)
        except DetectorError as exc:
            fail(str(exc))
        weights, card = Path(job.artefact_path), dict(job.card or {})
    scenes = weights.parent / "scenes" / "data.yaml"
    try:
        card["heldout"] = evaluate_student(weights, scenes, "test", imgsz=int(card["student"]["config"]["imgsz"]))
    except (StudentError, KeyError, OSError) as exc:
        fail(f"cannot evaluate {key}: {exc}")
    _print_run(job.model_key, card, as_json)


@detector_app.command("list")
def list_(
    tenant: str = typer.Option(None, "--tenant", help="One tenant (default: every tenant)"),
    as_json: bool = JSON,
) -> None:
    """The tenant's classes (label sets) and its detectors, the active one marked."""
    settings = load_settings()
    from db.detectors import list_detectors, redetect_pending
    from db.models import Tenant
    from training.labelsets import read_card

    sessions = _sessions()
    with sessions() as s:
        jobs = list_detectors(s, tenant)
        active = {t.id: t.active_detector for t in s.query(Tenant).all()}
        redetecting = {t: redetect_pending(s, t) for t in active if tenant in (None, t)}
    tenants = (
        [tenant]
        if tenant
        else sorted({j.tenant_id for j in jobs} | {p.name for p in (settings.data_dir / "detectors").glob("*")})
    )
    out = {"classes": [], "detectors": [], "redetect_pending": {t: n for t, n in redetecting.items() if n}}
    for t in tenants:
        for p in sorted(classes_dir(settings, t).glob("*")):
            if (p / "card.json").is_file():
                c = read_card(p)
                out["classes"].append(
                    {"tenant": t, "label": c["names"][0], "category": c.get("category"), "teacher": c.get("teacher"),
                     "prompt": c.get("prompt"), "products": c.get("usable_products"), "path": str(p)}
                )  # fmt: skip
    for j in jobs:
        card = j.card or {}
        held = (card.get("heldout_same_rule") or {}).get(card.get("serve", "")) or card.get("heldout") or {}
        out["detectors"].append(
            {"tenant": j.tenant_id, "key": j.model_key, "job_id": j.job_id, "status": j.status, "reason": j.reason,
             "classes": (j.card or {}).get("classes") or (j.params or {}).get("classes"), "map50": held.get("map50"),
             "active": bool(j.model_key) and active.get(j.tenant_id) == j.model_key,
             "created_at": j.created_at.isoformat()}
        )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    typer.echo("classes:" if out["classes"] else "classes: none")
    for c in out["classes"]:
        typer.echo(
            f"  {c['tenant']:<12} {c['label']:<20} from {c['category']!r} by {c['teacher']}, {c['products']} products"
        )
    for t, n in out["redetect_pending"].items():
        typer.echo(
            f"tenant {t}: {n} images waiting to be detected again by {active.get(t) or 'the configured detector'}"
        )
    typer.echo("detectors:" if out["detectors"] else "detectors: none")
    for d in out["detectors"]:
        m = "-" if d["map50"] is None else f"{d['map50']:.3f}"
        star = "*" if d["active"] else " "
        typer.echo(
            f" {star}{d['tenant']:<12} {d['key'] or d['job_id']:<34} {d['status']:<8} mAP50 {m:>5}  "
            f"{', '.join(d['classes'] or [])}{'  ' + d['reason'] if d['reason'] else ''}"
        )


@detector_app.command("activate")
def activate_(key: str = typer.Argument(...), tenant: str = TENANT, as_json: bool = JSON) -> None:
    """Make a ready student the tenant's detector (search by image, ingest); the catalog is re-detected."""
    _switch(tenant, key, as_json)


@detector_app.command("rollback")
def rollback_(tenant: str = TENANT, as_json: bool = JSON) -> None:
    """Point the tenant back at its previous detector; the catalog is re-detected with it."""
    _switch(tenant, None, as_json)


def _switch(tenant: str, key: str | None, as_json: bool) -> None:
    from db.detectors import DetectorError, activate_detector, redetect_pending, rollback_detector

    sessions = _sessions()
    with sessions.begin() as s:
        try:
            t = rollback_detector(s, tenant) if key is None else activate_detector(s, tenant, key)
        except DetectorError as exc:
            fail(str(exc))
        out = {
            "tenant": tenant,
            "active_detector": t.active_detector,
            "previous_detector": t.previous_detector,
            "redetect_pending": redetect_pending(s, tenant),
        }
    if as_json:
        typer.echo(json.dumps(out))
        return
    typer.echo(
        f"tenant {tenant}: active detector {out['active_detector'] or 'the configured one'} "
        f"(rollback: {out['previous_detector'] or 'the configured one'}); "
        f"{out['redetect_pending']} images queued for the worker to detect again"
    )
