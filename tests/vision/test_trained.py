"""Trained-model artefacts: content-addressed files that load like any embedder, and refuse clearly when broken."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from vision.embedder import create_embedder, l2_normalize
from vision.model import ModelLoadError
from vision.trained import TrainedEmbedder, apply_head, artefact_key, read_card, write_artefact

BACKBONE = "efficientnet-lite0"


def _head(in_dim: int = 1280, out: int = 16, seed: int = 0, bits: int | None = None) -> dict:
    rng = np.random.default_rng(seed)
    head = {
        "w1": rng.normal(size=(in_dim, 32)).astype(np.float32) / 30,
        "b1": np.zeros(32, np.float32),
        "w2": rng.normal(size=(32, out)).astype(np.float32),
        "b2": np.zeros(out, np.float32),
    }
    if bits:
        head |= {"w3": rng.normal(size=(out, bits)).astype(np.float32), "b3": np.zeros(bits, np.float32)}
    return head


def _card(backbone_key: str, dim: int = 16) -> dict:
    return {
        "name": "supervised-head",
        "method": "supervised",
        "dim": dim,
        "input": {"size": 224, "preprocessing": "imagenet"},
        "backbone": {"name": BACKBONE, "model_key": backbone_key},
    }


@pytest.fixture(scope="module")
def backbone(model_cache):
    embedder = create_embedder(BACKBONE, cache_dir=model_cache)
    embedder.load()
    return embedder


def test_identical_weights_and_card_give_the_same_file_and_key(tmp_path, backbone):
    a = write_artefact(tmp_path / "a", _card(backbone.model_key), head=_head())
    b = write_artefact(tmp_path / "b", _card(backbone.model_key), head=_head())
    c = write_artefact(tmp_path / "c", _card(backbone.model_key), head=_head(seed=1))
    assert a.read_bytes() == b.read_bytes() and a.name == b.name
    assert a.name != c.name
    key = artefact_key(a)
    assert a.name == f"{key}.vtm" and key.startswith("supervised-head@") and len(key.split("@")[1]) == 12
    card = read_card(a)
    assert card["key"] == key and card["backbone"]["model_key"] == backbone.model_key


def test_a_head_artefact_embeds_images_as_head_of_the_backbone_and_maps_stored_vectors(tmp_path, backbone, photos):
    path = write_artefact(tmp_path, _card(backbone.model_key), head=_head(bits=32))
    trained = create_embedder("trained", cache_dir=tmp_path, artefact=path)
    images = list(photos.values())
    vectors = trained.embed(images)
    stored = backbone.embed(images)  # what the worker already stored for these images
    assert vectors.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(vectors, trained.embed_features(stored), atol=1e-5)
    np.testing.assert_allclose(vectors, l2_normalize(apply_head(_head(bits=32), stored)), atol=1e-5)
    assert trained.model_key == artefact_key(path)
    codes = trained.codes(vectors)
    assert codes.shape == (3, 32) and set(np.unique(codes)) <= {0, 1}


def test_an_onnx_tower_artefact_embeds_like_its_torch_module(tmp_path, photos):
    import torch

    from vision.onnx_export import export_onnx

    torch.manual_seed(0)
    tower = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    graph = tmp_path / "tower.onnx"
    export_onnx(tower, torch.rand(2, 3, 64, 64), graph)
    card = {"name": "autoencoder", "method": "autoencoder", "dim": 8, "input": {"size": 64, "preprocessing": "unit"}}
    path = write_artefact(tmp_path / "out", card, onnx=graph.read_bytes())
    trained = TrainedEmbedder(artefact=path, cache_dir=tmp_path)
    image = photos["bus"]
    with torch.no_grad():
        expected = tower(torch.from_numpy(trained.preprocess(image)[None])).numpy()
    np.testing.assert_allclose(trained.embed([image]), l2_normalize(expected), atol=1e-5)
    assert trained.runtime == "onnxruntime"
    with pytest.raises(ModelLoadError, match="whole ONNX tower"):
        trained.embed_features(np.zeros((1, 1280), np.float32))


def test_a_head_refuses_a_backbone_other_than_the_one_it_was_trained_on(tmp_path, model_cache):
    path = write_artefact(tmp_path, _card("efficientnet-lite0@some-other-weights"), head=_head())
    trained = TrainedEmbedder(artefact=path, cache_dir=model_cache)
    with pytest.raises(ModelLoadError, match="was trained on efficientnet-lite0@some-other-weights but"):
        trained.load()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is not a vitrine model artefact"),
        (b"PK\x03\x04 truncated", "is not a vitrine model artefact"),
        (_zip({"head.npz": b"x"}), "is not a vitrine model artefact"),  # no card
        (_zip({"card.json": b"{nope"}), "is not a vitrine model artefact"),
        (_zip({"card.json": json.dumps({"format": "other"}).encode()}), "not a vitrine-model/1 card"),
        (
            _zip(
                {"card.json": json.dumps({**_card("k"), "format": "vitrine-model/1", "weights": "head.npz"}).encode()}
            ),
            "which it does not hold",
        ),
        (
            _zip({"card.json": json.dumps({"format": "vitrine-model/1", "name": "x", "method": "m"}).encode()}),
            "lacks 'dim'",
        ),
    ],
)
def test_a_corrupt_artefact_is_refused_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "model.vtm"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        read_card(path)
    with pytest.raises(ModelLoadError, match=message):
        TrainedEmbedder(artefact=path, cache_dir=tmp_path)


def test_a_missing_artefact_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="model artefact not found"):
        TrainedEmbedder(artefact=tmp_path / "nope.vtm", cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="needs an artefact path"):
        TrainedEmbedder(artefact="", cache_dir=tmp_path)


def test_a_flipped_byte_in_the_weights_fails_the_checksum(tmp_path, backbone):
    path = write_artefact(tmp_path, _card(backbone.model_key), head=_head())
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("head.npz")
    data[info.header_offset + 30 + len("head.npz") + 5] ^= 0xFF  # inside the compressed weights
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="(corrupt|not a vitrine model artefact)"):
        read_card(path)
