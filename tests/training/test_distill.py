"""Class -> student end to end (tiny): an open-vocabulary teacher's boxes on every photo of its class, lifestyle
photos included, train beside the catalog teacher's scenes; the held-out test stays scenes of unseen products."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from training.distill import DistillError, teach_class, train_detector
from training.labelsets import read_boxes, read_card
from training.student import StudentConfig
from vision.detector import Detection
from vision.teachers import Teacher


def photo(kind: str, k: int, *, busy: bool = False) -> Image.Image:
    rng = np.random.default_rng(k)
    im = (
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
        if busy
        else Image.new("RGB", (96, 96), "white")
    )
    colour = (200, 30, 30) if kind == "ball" else (30, 60, 200)
    r = int(rng.integers(20, 35))
    ImageDraw.Draw(im).ellipse((48 - r, 48 - r, 48 + r, 48 + r), fill=colour)
    return im


class CentreTeacher(Teacher):
    """The process edge: a teacher that boxes the centre disc (no open-vocabulary weights offline)."""

    name = "centre"
    model = "centre (test)"

    def __init__(self, *, cache_dir=None, **options):
        super().__init__()

    def _load(self):
        pass

    def label(self, images, prompt, label):
        return [[Detection((13, 13, 83, 83), label, 0.9)] for _ in images]


def test_a_teacher_labelled_class_trains_beside_the_scenes_and_is_evaluated_on_held_out_scenes(tmp_path, monkeypatch):
    ball = teach_class("ball", "balls", [(f"b{k}", photo("ball", k)) for k in range(8)], tmp_path / "classes" / "ball")
    # The second class has lifestyle photos too: the cut-out refuses them, the teacher labels them.
    photos = [(f"d{k}", photo("disc", k)) for k in range(8)] + [
        (f"d{k}", photo("disc", 50 + k, busy=True)) for k in range(8)
    ]
    import vision.teachers

    monkeypatch.setitem(vision.teachers.TEACHERS, "centre", "tests.training.test_distill:CentreTeacher")
    disc = teach_class("disc", "discs", photos, tmp_path / "classes" / "disc", teacher="centre")
    card = read_card(disc)
    assert card["teacher"] == "centre" and card["photos"] == 16 and card["usable_products"] == 8
    assert card["rejected"] == {"no_plain_background": 8}
    labelled = {**read_boxes(disc, "train"), **read_boxes(disc, "val")}
    assert len(labelled) == 16  # every photo, lifestyle ones included

    run = train_detector(
        [ball, disc], [], tmp_path / "students", config=StudentConfig(epochs=1, imgsz=64, batch=8),
        scenes={"train": 12, "val": 4, "test": 6}, onnx=False,
    )  # fmt: skip
    assert run.card["classes"] == ["ball", "disc"]
    assert run.card["train_images"]["teacher_labelled"] == sum(1 for s in read_boxes(disc, "train"))
    assert run.card["train_images"]["scenes"] == 12
    assert run.card["heldout"]["images"] == 6  # the test: held-out scenes only


def test_a_class_whose_photos_do_not_cut_out_is_refused_with_the_reasons(tmp_path):
    busy = [(f"x{k}", photo("ball", k, busy=True)) for k in range(8)]
    with pytest.raises(DistillError, match="0 products whose photos cut out.*8 no_plain_background"):
        teach_class("ball", "balls", busy, tmp_path / "ball")
    assert not (tmp_path / "ball").exists()


def scene_set(root, label="0 0.5 0.5 0.2 0.2\n"):
    """A one-image train and test scene set on disk (bytes only: what the digests read)."""
    for split in ("train", "test"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        (root / "images" / split / "a.jpg").write_bytes(b"pixels " + split.encode())
        (root / "labels" / split / "a.txt").write_text(label)
    (root / "card.json").write_text(json.dumps({"names": ["ball"], "products": {"test": ["p1"]}}))
    return root


def test_a_student_is_reused_only_for_the_same_training_inputs_and_test_scenes(tmp_path):
    from training.distill import _files_digest, _trained_on

    scenes = scene_set(tmp_path / "scenes")
    trained, tested = _files_digest(scenes, ["train", "val"]), _files_digest(scenes, ["test"])
    art = tmp_path / "students" / "detector-x"
    art.mkdir(parents=True)
    (art / "card.json").write_text(json.dumps({"training_inputs": trained, "test_scenes": tested}))
    assert _trained_on(tmp_path / "students", trained, tested) == art
    (scenes / "labels" / "test" / "a.txt").write_text("0 0.4 0.5 0.2 0.2\n")  # other test scenes: evaluate anew
    assert _trained_on(tmp_path / "students", trained, _files_digest(scenes, ["test"])) is None
    (scenes / "images" / "train" / "a.jpg").write_bytes(b"other pixels")  # other training scenes: train anew
    assert _trained_on(tmp_path / "students", _files_digest(scenes, ["train", "val"]), tested) is None


def test_the_same_weights_trained_again_are_evaluated_on_this_runs_test_scenes(tmp_path):
    from training.distill import _adopt_test_scenes, _files_digest

    art = tmp_path / "detector-x"
    stored = scene_set(art / "scenes", "0 0.5 0.5 0.2 0.2\n")
    card = {"key": "detector-x", "heldout": {"map50": 0.1}, "test_scenes": _files_digest(stored, ["test"])}
    (art / "card.json").write_text(json.dumps(card))

    same = scene_set(tmp_path / "same", "0 0.5 0.5 0.2 0.2\n")
    assert _adopt_test_scenes(art, same, _files_digest(same, ["test"]), {"map50": 0.9}, ["ball"]) == card
    assert same.is_dir()  # the same scenes: nothing moved, the stored figures kept

    other = scene_set(tmp_path / "other", "0 0.4 0.4 0.2 0.2\n")
    tested = _files_digest(other, ["test"])
    new = _adopt_test_scenes(art, other, tested, {"map50": 0.9}, ["ball"])
    assert new["test_scenes"] == tested and new["heldout"] == {"map50": 0.9}
    assert json.loads((art / "card.json").read_text()) == new and "products" not in new["scenes"]
    assert (art / "scenes" / "labels" / "test" / "a.txt").read_text() == "0 0.4 0.4 0.2 0.2\n"
    assert f"path: {json.dumps(str((art / 'scenes').resolve()))}" in (art / "scenes" / "data.yaml").read_text()
