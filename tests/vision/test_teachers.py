"""Teachers: the catalog cut-out on synthetic and real photos; open-vocabulary teachers on tiny random models."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vision.detector import Detection, trim_box
from vision.model import UnknownBackend
from vision.teachers import (
    TEACHERS,
    CatalogTeacher,
    NoCutout,
    OpenVocabTeacher,
    TeacherUnavailable,
    create_teacher,
    cut_out,
)
from vision.yolo import _check_reachable

CATALOG = Path(__file__).resolve().parents[2] / ".vitrine" / "demo" / "catalog"


def _noisy(array: np.ndarray, std: float, seed: int = 0) -> Image.Image:
    """An RGB image with JPEG-like noise on it."""
    noise = np.random.default_rng(seed).normal(0, std, array.shape)
    return Image.fromarray(np.clip(array + noise, 0, 255).astype(np.uint8), "RGB")


# --- cut_out on synthetic images: boxes known by construction ---


def test_alpha_channel_gives_the_exact_box():
    image = Image.new("RGBA", (100, 80), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle([20, 10, 59, 49], fill=(200, 30, 30, 255))  # pixels 20..59, 10..49
    cut = cut_out(image)
    assert cut.method == "alpha"
    assert cut.box == (20.0, 10.0, 60.0, 50.0)
    assert cut.rgba.mode == "RGBA" and cut.rgba.size == (40, 40)


def test_white_product_on_white_keeps_its_inside_and_drops_specks():
    canvas = np.full((120, 120, 3), 245.0)
    image = _noisy(canvas, std=3)
    draw = ImageDraw.Draw(image)
    draw.rectangle([30, 20, 89, 99], outline=(60, 60, 60), width=3)  # a white shirt: only its outline differs
    draw.point((5, 110), fill=(0, 0, 0))  # a speck of dust, not part of the product
    cut = cut_out(image)
    assert cut.method == "background"
    assert cut.box == (30.0, 20.0, 90.0, 100.0)
    alpha = np.asarray(cut.rgba.getchannel("A"))
    assert alpha[40, 30] == 255, "the white inside of the product must stay part of it (holes filled)"
    assert alpha.shape == (80, 60)


def test_opaque_rgba_falls_back_to_the_background():
    image = Image.new("RGBA", (64, 64), (250, 250, 250, 255))
    ImageDraw.Draw(image).ellipse([10, 12, 41, 51], fill=(20, 90, 200, 255))
    cut = cut_out(image)
    assert cut.method == "background"
    assert cut.box == (10.0, 12.0, 42.0, 52.0)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: _noisy(np.random.default_rng(1).uniform(0, 255, (96, 128, 3)), std=0), "no_plain_background"),
        (lambda: _noisy(np.full((80, 80, 3), 230.0), std=3), "empty"),
        (lambda: Image.new("RGBA", (50, 50), (0, 0, 0, 0)), "empty"),
        (lambda: _framed(200), "fills_frame"),
        (lambda: _dot(200), "too_small"),
        (lambda: Image.new("RGB", (2, 40), "white"), "too_small"),
    ],
    ids=["lifestyle", "blank", "transparent", "full-frame", "dot", "sliver"],
)
def test_photos_that_cannot_be_cut_out_say_why(make, reason):
    with pytest.raises(NoCutout) as info:
        cut_out(make())
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def _framed(side: int) -> Image.Image:
    image = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(image).rectangle([1, 1, side - 2, side - 2], fill=(180, 40, 40))  # 1 px of background
    return image


def _dot(side: int) -> Image.Image:
    image = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(image).rectangle([100, 100, 101, 101], fill=(0, 0, 0))
    return image


# --- the real demo catalog ---


@pytest.fixture(scope="module")
def catalog_photos(tmp_path_factory) -> list[Path]:
    """20 photos of the demo catalog: the one the demo built, else a small build from openclipart (CI)."""
    files = sorted((CATALOG / "images").glob("*.jpg"))
    if len(files) < 20:
        from training.multiview import OPENCLIPART_DIR
        from vitrine.demo_catalog import build_demo_catalog

        if not OPENCLIPART_DIR.is_dir():
            pytest.skip(f"no demo catalog at {CATALOG} and no openclipart at {OPENCLIPART_DIR} to build one")
        built = build_demo_catalog(tmp_path_factory.mktemp("demo") / "catalog", source=OPENCLIPART_DIR, n_products=40)
        files = sorted(built.images_dir.glob("*.jpg"))
    return random.Random(0).sample(files, 20)


def test_real_catalog_photos_cut_out_and_cover_the_trimmed_product(catalog_photos):
    reasons: dict[str, int] = {}
    coverage = []
    for path in catalog_photos:
        with Image.open(path) as raw:
            image = raw.convert("RGB")
        try:
            cut = cut_out(image)
        except NoCutout as exc:
            reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
            continue
        trimmed = trim_box(image, margin=0)
        assert trimmed is not None
        inter = np.prod(np.clip(np.minimum(cut.box[2:], trimmed[2:]) - np.maximum(cut.box[:2], trimmed[:2]), 0, None))
        coverage.append(inter / ((trimmed[2] - trimmed[0]) * (trimmed[3] - trimmed[1])))
    assert len(coverage) >= 18, f"fewer than 90% of 20 catalog photos cut out; failures: {reasons}"
    # Over all 827 demo photos the worst coverage is 0.91 (a compass rose whose tiny marks are specks).
    assert min(coverage) >= 0.85 and np.mean(coverage) >= 0.97


def test_catalog_teacher_boxes_products_and_skips_what_it_cannot_cut_out():
    product = Image.new("RGBA", (60, 60), (0, 0, 0, 0))
    ImageDraw.Draw(product).rectangle([5, 6, 24, 40], fill=(10, 200, 10, 255))
    lifestyle = _noisy(np.random.default_rng(2).uniform(0, 255, (60, 60, 3)), std=0)
    teacher = create_teacher("catalog", cache_dir=None)
    assert isinstance(teacher, CatalogTeacher) and teacher.name == "catalog"
    found = teacher.label([product, lifestyle], "a photo of a shirt", "shirt")
    assert found == [[Detection(box=(5.0, 6.0, 25.0, 41.0), label="shirt", score=1.0, kind="item")], []]
    assert teacher.label([], "shirt", "shirt") == []
    with pytest.raises(ValueError):
        teacher.label([product], "shirt", " ")


# --- open-vocabulary teachers, on tiny random models saved the way users save the real ones ---


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's byte -> printable character table (the alphabet of a byte-level BPE vocabulary)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


def _tiny_owlvit(directory: Path) -> Path:
    from transformers import (
        CLIPTokenizer,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessor,
        OwlViTProcessor,
    )

    # A byte-level vocabulary with no merges: every character is a token, which is all a random model needs.
    alphabet = list(_bytes_to_unicode().values())
    vocab = {tok: i for i, tok in enumerate(alphabet + [c + "</w>" for c in alphabet])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(directory, model_max_length=16)
    tiny = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
    text = {**tiny, "vocab_size": len(vocab), "max_position_embeddings": 16}
    text |= {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"], "pad_token_id": 0}
    config = OwlViTConfig(
        text_config=text, vision_config={**tiny, "image_size": 64, "patch_size": 16}, projection_dim=32
    )
    size = {"height": 64, "width": 64}
    processor = OwlViTProcessor(image_processor=OwlViTImageProcessor(size=size, crop_size=size), tokenizer=tokenizer)
    out = directory / "owlvit"
    OwlViTForObjectDetection(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _tiny_grounding_dino(directory: Path) -> Path:
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "photo", "of", "single", "piece", "shirt"]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer.from_pretrained(directory)
    backbone = SwinConfig(
        image_size=64, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=2,
        out_features=["stage1", "stage2"],
    )  # fmt: skip
    text = BertConfig(
        vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, use_timm_backbone=False, d_model=32, num_queries=10,
        encoder_layers=1, decoder_layers=2, encoder_ffn_dim=16, decoder_ffn_dim=16, encoder_attention_heads=2,
        decoder_attention_heads=2, num_feature_levels=2, encoder_n_points=1, decoder_n_points=1, max_text_len=32,
    )  # fmt: skip
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})
    out = directory / "grounding-dino"
    GroundingDinoForObjectDetection(config).save_pretrained(out)
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=["owlvit", "grounding-dino"])
def tiny_model(request, tmp_path_factory) -> tuple[str, Path]:
    pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp(f"tiny-{request.param}")
    build = _tiny_owlvit if request.param == "owlvit" else _tiny_grounding_dino
    return request.param, build(directory)


def _scenes() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [
        Image.fromarray(rng.integers(0, 255, (90, 140, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 255, (120, 70, 3), dtype=np.uint8)),
    ]


def test_open_vocab_teacher_loads_a_local_directory_and_labels(tiny_model, tmp_path):
    kind, directory = tiny_model
    teacher = create_teacher(kind, cache_dir=tmp_path, model=directory, threshold=0.0)
    assert isinstance(teacher, OpenVocabTeacher) and teacher.name == kind
    images = _scenes()
    found = teacher.label(images, "a photo of a shirt", "shirt")
    assert teacher.source == directory
    assert len(found) == 2 and sum(map(len, found)) > 0, "threshold 0 on a random model must give boxes"
    for image, dets in zip(images, found):
        assert len(dets) <= teacher.max_det
        assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
        for d in dets:
            assert isinstance(d, Detection) and d.kind == "item" and d.label == "shirt"
            assert 0.0 <= d.score <= 1.0
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
    # A prompt longer than the text tower's positions is truncated, not a crash.
    assert len(teacher.label(images[:1], "a single piece of a very long striped cotton shirt " * 4, "shirt")) == 1
    assert teacher.label([], "shirt", "shirt") == []
    with pytest.raises(ValueError):
        teacher.label(images, "  ", "shirt")


def test_open_vocab_threshold_keeps_only_boxes_scoring_above_it(tiny_model):
    kind, directory = tiny_model
    images = _scenes()
    every = [d.score for dets in OpenVocabTeacher(kind, model=directory, threshold=0.0).label(images, "shirt", "x")
             for d in dets]  # fmt: skip
    cut = float(np.median(every))
    kept = [d.score for dets in OpenVocabTeacher(kind, model=directory, threshold=cut).label(images, "shirt", "x")
            for d in dets]  # fmt: skip
    assert any(s < cut for s in every), "the median must split the scores for this check to mean anything"
    assert all(s >= cut for s in kept)
    assert sum(s > cut for s in every) <= len(kept) <= sum(s >= cut for s in every) < len(every)


def test_a_directory_that_is_not_a_model_is_a_clear_error(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(TeacherUnavailable, match="does not load"):
        OpenVocabTeacher("owlvit", model=tmp_path).load()
    with pytest.raises(TeacherUnavailable, match="neither a model directory nor a hub id"):
        OpenVocabTeacher("owlvit", model=tmp_path / "missing").load()


def test_hub_model_offline_fails_fast_with_the_way_out(tmp_path):
    pytest.importorskip("transformers")
    if _check_reachable("huggingface.co", timeout=3) is None:
        pytest.skip("huggingface.co is reachable: the offline path cannot be shown here")
    import transformers  # noqa: F401  imported first: on a loaded machine the import alone takes seconds

    started = time.perf_counter()
    with pytest.raises(TeacherUnavailable) as info:
        create_teacher("grounding-dino", cache_dir=tmp_path).load()
    assert time.perf_counter() - started < 15  # the reachability probe's timeout is 5 s: never a hang
    message = str(info.value)
    assert "IDEA-Research/grounding-dino-tiny" in message and "unreachable" in message
    assert "save_pretrained" in message and "--teacher-model DIR" in message


def test_unknown_teacher_names_the_choices():
    with pytest.raises(UnknownBackend, match="catalog, grounding-dino, owlvit"):
        create_teacher("yolo-world", cache_dir=None)
    with pytest.raises(UnknownBackend):
        OpenVocabTeacher("clip")
    assert set(TEACHERS) == {"catalog", "owlvit", "grounding-dino"}


def test_transformers_is_not_imported_with_the_module():
    code = "import sys, vision.teachers; assert 'transformers' not in sys.modules, 'imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2], timeout=120)
