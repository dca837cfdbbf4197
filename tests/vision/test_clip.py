"""open_clip wiring with a seeded random ViT-B-32 (no CLIP weights can be fetched offline)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vision import clip as clip_module
from vision.embedder import create_embedder
from vision.model import ModelLoadError

TOL = 1e-4  # as in test_embedder: fp32 summation-order noise between runtimes


@pytest.fixture(scope="module")
def clip_torch(model_cache):
    emb = create_embedder("clip", cache_dir=model_cache, pretrained=None, use_onnx=False, batch_size=2)
    emb.load()
    return emb


def test_identity(clip_torch):
    assert clip_torch.dim == 512 and clip_torch.supports_text
    assert clip_torch.model_key == "clip@ViT-B-32-random-seed0"


def test_images_and_text_share_one_unit_space(clip_torch, photos):
    img = clip_torch.embed([photos["bus"], photos["zidane"], photos["hopper"]])
    txt = clip_torch.embed_text(["a red bus", "a football player", "an admiral"])
    for arr in (img, txt):
        assert arr.shape == (3, 512) and arr.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    assert np.abs(txt[0] - txt[1]).max() > 1e-3  # different texts, different vectors
    assert clip_torch.embed_text([]).shape == (0, 512)


def test_seeded_random_init_is_reproducible(clip_torch, model_cache, photos):
    again = create_embedder("clip", cache_dir=model_cache, pretrained=None, use_onnx=False)
    images = [photos["bus"], photos["hopper"]]
    assert np.abs(again.embed(images) - clip_torch.embed(images)).max() < TOL


def test_onnx_matches_torch(clip_torch, model_cache, photos):
    onnx = create_embedder("clip", cache_dir=model_cache, pretrained=None, use_onnx=True, batch_size=2)
    onnx.load()
    assert onnx.runtime == "onnxruntime"
    images = [photos["bus"], photos["zidane"], photos["hopper"]]
    assert np.abs(onnx.embed(images) - clip_torch.embed(images)).max() < TOL
    assert np.abs(onnx.embed_text(["a bag"]) - clip_torch.embed_text(["a bag"])).max() < TOL


def test_local_checkpoint_path(clip_torch, tmp_path, photos):
    import torch

    path = tmp_path / "clip-vitb32.pt"
    torch.save(clip_torch._model.state_dict(), path)
    local = create_embedder("clip", cache_dir=tmp_path, pretrained=str(path), use_onnx=False)
    assert local.version.startswith("ViT-B-32-file-")
    assert np.abs(local.embed([photos["bus"]]) - clip_torch.embed([photos["bus"]])).max() < TOL


def test_missing_local_checkpoint_fails_fast(tmp_path):
    emb = create_embedder("clip", cache_dir=tmp_path, pretrained=str(tmp_path / "missing.pt"))
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="missing.pt"):
        emb.load()
    assert time.monotonic() - started < 5


def test_unknown_tag_and_model_are_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="laion2b_s34b_b79k"):
        create_embedder("clip", cache_dir=tmp_path, pretrained="laion9b_made_up").load()
    with pytest.raises(ModelLoadError, match="ViT-Q-99"):
        create_embedder("clip", cache_dir=tmp_path, model_name="ViT-Q-99")


def test_hub_tag_offline_fails_fast_with_a_hint(tmp_path):
    if clip_module._check_reachable(clip_module.HUB_HOST, timeout=3) is None:
        pytest.skip("this machine reaches huggingface.co; the offline path cannot be observed")
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="VITRINE_CLIP_PRETRAINED"):
        create_embedder("clip", cache_dir=tmp_path).load()
    assert time.monotonic() - started < 60
