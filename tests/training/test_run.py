"""One training run end to end on a tiny product folder with the real backbone: split, fit, evaluate, artefact.

Small on purpose (a few dozen 64-px images, 2-3 epochs): these check the plumbing and the honesty rules
(held-out products never trained on, the pretrained model and raw pixels scored on the same images, the
artefact reproducing the evaluated vectors); the quality targets are measured by `vitrine bench training`.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.helpers import write_product_folder
from training.data import TrainingError, image_folder
from training.run import TrainRequest, train_model
from vision.embedder import create_embedder
from vision.trained import TrainedEmbedder, read_card


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    embedder = create_embedder("efficientnet-lite0", cache_dir=tmp_path_factory.mktemp("models"), batch_size=64)
    embedder.load()
    return embedder


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    root = write_product_folder(tmp_path_factory.mktemp("set"), categories=3, products=6, photos=2)
    return image_folder(root)


def _train(products, backbone, tmp_path, held_out_images=None, **request):
    return train_model(
        products,
        TrainRequest(**{"epochs": 2, "batch_size": 16, **request}),
        backbone=backbone,
        out_dir=tmp_path / "models",
        held_out_images=held_out_images,
    )


def test_a_head_run_evaluates_on_held_out_products_beside_pretrained_and_pixels(products, backbone, tmp_path):
    result = _train(products, backbone, tmp_path, method="supervised", holdout=0.34, seed=3)
    card = read_card(result.path)
    assert card["key"] == result.key and result.path.name == f"{result.key}.vtm"
    data = card["data"]
    assert data["split"] == "by product" and data["seed"] == 3
    assert data["train"]["products"] + data["held_out"]["products"] == 18
    assert data["held_out"]["products"] == 6  # 2 of the 6 products of each category
    metrics = card["metrics"]
    assert metrics["relevance"] == "product" and metrics["queries"] == 12
    assert set(metrics["models"]) == {"trained", "pretrained", "raw pixels"}
    for row in metrics["models"].values():
        assert 0 <= row["mAP@5"] <= 1 and "category mAP@5" in row and "colour entropy" in row
    assert card["hyperparameters"]["positives"] == "product"
    assert card["backbone"]["model_key"] == backbone.model_key
    assert card["index_mb_per_10k"] == {"trained": 2.56, "pretrained": 25.6}
    assert card["embed_images_per_s"]["trained"] > 0 and card["training_seconds"]["total"] > 0
    # The artefact serves exactly what was evaluated: re-score its vectors of the held-out photos.
    trained = TrainedEmbedder(artefact=result.path, cache_dir=tmp_path)
    vectors = trained.embed(products.images)
    assert vectors.shape == (len(products), 128)


def test_triplet_with_codes_reports_the_codes_beside_the_float_vectors(products, backbone, tmp_path):
    result = _train(products, backbone, tmp_path, method="triplet", bits=32)
    models = result.card["metrics"]["models"]
    assert "trained 32-bit codes" in models
    assert result.card["index_mb_per_10k"]["32-bit codes"] == 0.04
    trained = TrainedEmbedder(artefact=result.path, cache_dir=tmp_path)
    assert trained.codes(trained.embed(products.images[:2])).shape == (2, 32)


def test_design_makes_colour_removing_views_and_reports_colour_entropy(products, backbone, tmp_path):
    result = _train(products, backbone, tmp_path, method="design", views=2)
    assert result.card["hyperparameters"]["views"] == 2
    assert "augmented views" in result.card["training_seconds"]
    assert all("colour entropy" in row for row in result.card["metrics"]["models"].values())


def test_the_autoencoder_learns_from_pixels_and_serves_its_encoder(products, backbone, tmp_path):
    result = _train(
        products, backbone, tmp_path, method="autoencoder", epochs=8, extra={"size": 32, "code": 64, "width": 8}
    )
    card = result.card
    assert card["depth"] == "pixels" and card["dim"] == 64 and card["input"] == {"size": 32, "preprocessing": "unit"}
    assert card["loss_per_epoch"][-1] < card["loss_per_epoch"][0]
    assert TrainedEmbedder(artefact=result.path, cache_dir=tmp_path).embed(products.images[:3]).shape == (3, 64)


def test_fine_tuning_runs_on_the_cpu_and_exports_backbone_and_head_as_one_graph(products, backbone, tmp_path):
    result = _train(
        products, backbone, tmp_path, method="supervised", finetune=True, epochs=1, extra={"trainable_blocks": 1}
    )
    card = result.card
    assert card["depth"] == "finetune" and card["hyperparameters"]["device"] in ("cpu", "cuda")
    trained = TrainedEmbedder(artefact=result.path, cache_dir=tmp_path)
    vectors = trained.embed(products.images[:4])
    assert vectors.shape == (4, 128) and trained.runtime == "onnxruntime"
    assert not np.allclose(vectors[0], vectors[1])


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"method": "supervised", "bits": 32}, "--bits is for the triplet method"),
        ({"method": "triplet", "bits": 32, "finetune": True}, "drop --finetune or --bits"),
        ({"method": "design", "finetune": True}, "--finetune supports the supervised and triplet"),
        ({"method": "nearest-neighbour"}, "unknown method"),
    ],
)
def test_contradictory_requests_are_refused_before_any_work(products, backbone, tmp_path, request_args, message):
    with pytest.raises(ValueError, match=message):
        _train(products, backbone, tmp_path, **request_args)
    assert not (tmp_path / "models").exists()


def test_a_held_out_set_sharing_products_with_training_is_refused(products, backbone, tmp_path):
    with pytest.raises(TrainingError, match="in both the training and the held-out set"):
        train_model(
            products,
            TrainRequest(method="supervised"),
            backbone=backbone,
            out_dir=tmp_path,
            heldout=products.subset([0]),
        )


def test_methods_that_learn_from_images_refuse_stored_vectors_only(backbone, tmp_path):
    from training.data import from_vectors

    rng = np.random.default_rng(0)
    catalog = from_vectors("tenant acme", [f"p{i}" for i in range(20)], ["a", "b"] * 10, rng.normal(size=(20, 1280)))
    with pytest.raises(TrainingError, match="learns from images, and this data has only stored vectors"):
        train_model(catalog, TrainRequest(method="design"), backbone=backbone, out_dir=tmp_path)
    with pytest.raises(TrainingError, match="needs several photos per product"):
        train_model(catalog, TrainRequest(method="triplet"), backbone=backbone, out_dir=tmp_path)


def _stored(products, backbone):
    """The product folder as a tenant's catalog: stored backbone vectors, keyed by entry number, no images."""
    from training.data import from_vectors

    vectors = backbone.embed(products.images)
    return from_vectors("tenant acme", products.products, products.labels, vectors, keys=range(len(products)))


def test_stored_vectors_are_scored_beside_raw_pixels_on_the_held_out_entries_whose_images_came_back(
    products, backbone, tmp_path
):
    catalog = _stored(products, backbone)
    asked = []

    def fetch(test):  # the catalog's image fetch, at the process edge: two held-out images are gone
        asked.append(test.keys.tolist())
        images = [products.images[k] for k in test.keys]
        return [None, None, *images[2:]], {"fetch_failed": 2}

    result = _train(catalog, backbone, tmp_path, fetch, method="supervised", holdout=0.34, seed=3)
    (keys,) = asked  # asked once, for the held-out entries only: none of them trained
    card = result.card
    assert len(keys) == 12 and card["data"]["held_out"]["images"] == 10
    assert card["data"]["held_out_images"] == {
        "fetched": 10,
        "of": 12,
        "failed": {"fetch_failed": 2},
        "scored_on": "the 10 held-out entries whose image came back, for every candidate",
    }
    metrics = card["metrics"]
    assert set(metrics["models"]) == {"trained", "pretrained", "raw pixels"} and metrics["queries"] == 10
    # The pretrained row is the stored vectors of exactly those 10 entries, ranked like the folder run ranks them.
    from training.evaluate import compare

    kept = keys[2:]
    expected = compare(
        {"pretrained": (catalog.features[kept], "cosine")}, catalog.products[kept], catalog.labels[kept]
    )["models"]["pretrained"]
    assert {k: metrics["models"]["pretrained"][k] for k in expected} == expected


def test_without_enough_held_out_images_the_card_says_why_pixels_were_not_scored(products, backbone, tmp_path):
    catalog = _stored(products, backbone)

    def fetch(test):
        return [None] * len(test), {"fetch_failed": len(test)}

    result = _train(catalog, backbone, tmp_path, fetch, method="supervised", epochs=1, holdout=0.34, seed=3)
    pixels = result.card["data"]["held_out_images"]
    assert pixels["fetched"] == 0 and pixels["raw_pixels"] == "not scored: 0 of 12 held-out images could be fetched"
    assert set(result.card["metrics"]["models"]) == {"trained", "pretrained"}
    assert result.card["metrics"]["queries"] == 12
