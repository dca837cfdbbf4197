"""Embedder contract: shapes, unit norm, determinism, batching, ONNX parity, real-photo ranking."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from vision.embedder import TextNotSupported, create_embedder
from vision.model import ModelLoadError, UnknownBackend

# Largest |a - b| between unit vectors that counts as "the same embedding": fp32 kernels that
# sum in a different order (batch sizes, onnxruntime vs torch) differ by ~1e-6..1e-5.
TOL = 1e-4


def _sample(photos) -> list[Image.Image]:
    bus = photos["bus"]
    return [bus, photos["zidane"], photos["hopper"], bus.crop((0, 200, 400, 900)), Image.new("RGB", (1, 1), (9, 9, 9))]


def test_identity_fields(effnet_torch):
    assert effnet_torch.name == "efficientnet-lite0"
    assert effnet_torch.dim == 1280
    assert effnet_torch.model_key == f"efficientnet-lite0@{effnet_torch.version}"
    assert effnet_torch.version.startswith("imagenet1k-")
    assert effnet_torch.runtime == "torch"
    assert effnet_torch.supports_text is False


def test_unit_norm_float32_and_deterministic(effnet_torch, photos):
    images = _sample(photos)
    first = effnet_torch.embed(images)
    assert first.shape == (len(images), 1280) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, effnet_torch.embed(images))


def test_batch_equals_one_by_one(effnet_torch, photos):
    images = _sample(photos)
    batched = effnet_torch.embed(images)  # batch_size 4: one full batch and a remainder of 1
    single = np.concatenate([effnet_torch.embed([im]) for im in images])
    assert np.abs(batched - single).max() < TOL


def test_empty_input_gives_empty_matrix(effnet_torch):
    assert effnet_torch.embed([]).shape == (0, 1280)


def test_onnx_matches_torch(effnet_onnx, effnet_torch, photos):
    assert effnet_onnx.runtime == "onnxruntime"
    assert effnet_onnx.onnx_path is not None and effnet_onnx.onnx_path.exists()
    assert effnet_onnx.model_key == effnet_torch.model_key
    images = _sample(photos)
    assert np.abs(effnet_onnx.embed(images) - effnet_torch.embed(images)).max() < TOL


def test_onnx_export_is_cached_and_reused(effnet_onnx, model_cache):
    path = effnet_onnx.onnx_path
    assert path.parent.parent == model_cache and "224px" in path.name and "opset" in path.name
    mtime = path.stat().st_mtime_ns
    again = create_embedder("efficientnet-lite0", cache_dir=model_cache, use_onnx=True)
    again.load()
    assert again.runtime == "onnxruntime" and again.onnx_path == path
    assert again._module is None  # served from the cache: no torch model was built
    assert path.stat().st_mtime_ns == mtime


def test_a_corrupt_cached_graph_is_exported_again(effnet_onnx, effnet_torch, tmp_path, photos):
    target = tmp_path / effnet_onnx.onnx_path.relative_to(effnet_onnx.cache_dir)
    target.parent.mkdir(parents=True)
    target.write_bytes(effnet_onnx.onnx_path.read_bytes()[:1000])  # a half-written file
    fresh = create_embedder("efficientnet-lite0", cache_dir=tmp_path, use_onnx=True)
    fresh.load()
    assert fresh.runtime == "onnxruntime" and target.stat().st_size > 1_000_000
    assert np.abs(fresh.embed([photos["bus"]]) - effnet_torch.embed([photos["bus"]])).max() < TOL


def test_pretrained_ranks_two_crops_of_one_object_above_an_unrelated_photo(effnet_onnx, photos):
    # bus.jpg is 810x1080; the bus spans roughly x 0..810, y 230..800. Two overlapping views of it.
    bus = photos["bus"]
    left, right = bus.crop((0, 230, 560, 800)), bus.crop((250, 230, 810, 800))
    a, b, other = effnet_onnx.embed([left, right, photos["zidane"]])
    same = float(a @ b)
    assert same > float(a @ other) + 0.05
    assert same > float(b @ other) + 0.05


def test_text_is_refused_with_a_typed_error(effnet_torch):
    with pytest.raises(TextNotSupported):
        effnet_torch.embed_text(["red dress"])


def test_unknown_backend():
    with pytest.raises(UnknownBackend, match="efficientnet-lite0"):
        create_embedder("resnet-9000", cache_dir=".")


def test_missing_local_weights_fail_fast(tmp_path):
    emb = create_embedder("efficientnet-lite0", cache_dir=tmp_path, weights=tmp_path / "nope.pth")
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="nope.pth"):
        emb.load()
    assert time.monotonic() - started < 5


def test_bad_batch_size():
    with pytest.raises(ValueError):
        create_embedder("efficientnet-lite0", cache_dir=".", batch_size=0)


def test_a_failed_export_falls_back_to_torch_and_is_not_retried(tmp_path, monkeypatch, photos, effnet_torch):
    import vision.embedder as embedder_module

    calls = []

    def broken_export(module, example, path):
        calls.append(path)
        raise RuntimeError("operator not supported")

    monkeypatch.setattr(embedder_module, "export_onnx", broken_export)
    for _ in range(2):
        emb = create_embedder("efficientnet-lite0", cache_dir=tmp_path, use_onnx=True)
        emb.load()
        assert emb.runtime == "torch" and emb.onnx_path is None
    assert len(calls) == 1
    assert np.abs(emb.embed([photos["bus"]]) - effnet_torch.embed([photos["bus"]])).max() < TOL


def test_imagenet_preprocess_reference_values():
    from vision.embedder import imagenet_preprocess

    # A flat image: every output pixel is (value / 255 - mean) / std (ImageNet mean/std per channel).
    out = imagenet_preprocess(Image.new("RGB", (300, 120), (255, 0, 128)), 224)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(out.reshape(3, -1).mean(axis=1), expected, atol=1e-5)
    # The centre square is kept: a red left strip outside it does not reach the output.
    im = Image.new("RGB", (300, 100), (0, 0, 0))
    im.paste((255, 0, 0), (0, 0, 90, 100))  # centre square spans x 100..200
    assert imagenet_preprocess(im, 64)[0].max() == pytest.approx((0 - 0.485) / 0.229, abs=1e-5)
