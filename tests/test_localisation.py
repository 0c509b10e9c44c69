"""Grad-CAM localisation: crop-to-frame geometry, the peak-in-box rule, the CLI on synthetic lesion images (with
their drawn boxes) and the real box file; the served closed form and the tf-keras-vis reference give the same
figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skin_model.labels import CODES
from skin_model.bundle import localisation_file, read_localisation
from skin_model.cli.localisation import main
from skin_model.evaluation.localisation import Box, CentreCrop, heatmap_peak, peak_inside_box, read_boxes, split_images
from skin_model.evaluation.metrics import evaluate_probabilities

CROP_SCALE_96 = 150 / 96  # full-frame pixels per model-input pixel for a 96-px model on a 200x150 frame


# ---------------------------------------------------------------------------------------------- geometry
def test_crop_of_a_200x150_frame_is_its_centre_150_square():
    crop = CentreCrop()
    assert crop.box == Box(top=0.0, bottom=150.0, left=25.0, right=175.0)
    assert CentreCrop(150, 200).box == Box(top=25.0, bottom=175.0, left=0.0, right=150.0), "portrait frame"


@pytest.mark.parametrize("row, col, size, expected", [
    (0, 0, 224, (25 + 0.5 * 150 / 224, 0.5 * 150 / 224)),          # top-left pixel centre
    (223, 223, 224, (175 - 0.5 * 150 / 224, 150 - 0.5 * 150 / 224)),  # bottom-right pixel centre
    (47.5, 47.5, 96, (100.0, 75.0)),                                  # middle of a 96-px input = frame centre
    (10, 80, 96, (25 + 80.5 * CROP_SCALE_96, 10.5 * CROP_SCALE_96)),
])
def test_model_pixel_to_full_frame(row, col, size, expected):
    x, y = CentreCrop().to_frame(row, col, size)
    assert (x, y) == pytest.approx(expected)


def test_box_share_of_the_crop():
    crop = CentreCrop()
    assert crop.box_share(Box(0, 150, 0, 200)) == pytest.approx(1.0), "a whole-frame box covers the crop"
    assert crop.box_share(Box(0, 150, 0, 100)) == pytest.approx(75 * 150 / 150 ** 2), "left half of the frame"
    assert crop.box_share(Box(0, 150, 0, 20)) == 0.0, "entirely outside the crop"
    assert crop.box_share(Box(30, 60, 50, 80)) == pytest.approx(30 * 30 / 150 ** 2)


def test_peak_in_box_for_a_synthetic_heatmap():
    heatmap = np.zeros((96, 96), np.float32)
    heatmap[10, 80] = 1.0
    heatmap[50, 50] = 0.9
    assert heatmap_peak(heatmap) == (10, 80)
    # Hand computation: x = 25 + 80.5 * 150/96 = 150.78, y = 10.5 * 150/96 = 16.41.
    inside, (x, y) = peak_inside_box(heatmap, Box(top=16, bottom=17, left=150, right=151))
    assert inside and (x, y) == pytest.approx((150.78125, 16.40625))
    assert not peak_inside_box(heatmap, Box(top=17, bottom=40, left=150, right=151))[0], "box just below"
    assert not peak_inside_box(heatmap, Box(top=0, bottom=150, left=151, right=200))[0], "box just right"
    with pytest.raises(ValueError, match="square 2-D heatmap"):
        peak_inside_box(np.zeros((96, 64)), Box(0, 1, 0, 1))


def test_read_boxes_and_split_errors(tmp_path):
    (tmp_path / "boxes.csv").write_text("image_id,top,left\nI1,1,2\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['bottom', 'right'\]"):
        read_boxes(tmp_path / "boxes.csv")
    (tmp_path / "split.csv").write_text("image_id,lesion_id,dx,split\nI1,L1,mel,train\n")
    with pytest.raises(ValueError, match="no image in split 'test'"):
        split_images(tmp_path / "split.csv", "test")


@pytest.mark.real_data("HAM10000", reason="checks the real lesion_bboxes_200x150.csv")
def test_real_boxes_file(ham_dir):
    boxes = read_boxes(ham_dir / "lesion_bboxes_200x150.csv")
    assert len(boxes) == 10015
    assert boxes["ISIC_0024306"] == Box(top=2, bottom=140, left=59, right=170)


# ---------------------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def test_set(synthetic_ham, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Six synthetic 200x150 images (one per class for six classes) copied to a temporary data folder."""
    meta = pd.read_csv(synthetic_ham / "HAM10000_metadata.csv")
    chosen = meta.groupby("dx").head(1).iloc[:6].reset_index(drop=True)
    data_dir = tmp_path_factory.mktemp("data")
    for image_id in chosen["image_id"]:
        shutil.copy(synthetic_ham / "images_200x150" / f"{image_id}.jpg", data_dir / f"{image_id}.jpg")
    return data_dir, chosen


def bundle_with_split(tiny_bundle: Path, chosen: pd.DataFrame, dst: Path, report_split: str = "test") -> Path:
    """tiny_bundle plus a split.csv putting ``chosen`` in the test split and an evaluation_test.json."""
    shutil.copytree(tiny_bundle, dst)
    split = chosen[["image_id", "lesion_id", "dx"]].assign(split="test")
    split = pd.concat([split, pd.DataFrame([{"image_id": "ISIC_X", "lesion_id": "L", "dx": "nv", "split": "train"}])])
    split.to_csv(dst / "split.csv", index=False)
    labels = np.array([CODES.index(dx) for dx in chosen["dx"]])
    probs = np.full((len(labels), len(CODES)), 0.1)
    probs[np.arange(len(labels)), labels] = 0.4
    evaluate_probabilities(labels, probs / probs.sum(axis=1, keepdims=True), list(chosen["image_id"]),
                           dataset={"name": "test", "split": report_split}, model={"version": "test"}
                           ).to_json(dst / "evaluation_test.json")
    return dst


def test_cli_saves_localisation_matching_a_hand_computation(tiny_bundle, test_set, synthetic_ham, tmp_path):
    """The CLI computes the maps as the app serves them (closed form); the hand computation uses the reference,
    tf-keras-vis on the Keras model."""
    from skin_model.data.imaging import load_image
    from skin_model.serving.explain_reference import ReferenceExplainer
    from skin_model.serving.inference import Predictor

    data_dir, chosen = test_set
    weights = bundle_with_split(tiny_bundle, chosen, tmp_path / "weights")
    before = (weights / "evaluation_test.json").read_text()
    bboxes = synthetic_ham / "lesion_bboxes_200x150.csv"
    assert main(["--weights", str(weights), "--data-dir", str(data_dir), "--limit", "4", "--bboxes", str(bboxes)]) == 0
    assert (weights / "evaluation_test.json").read_text() == before, "the evaluation report is not rewritten"
    stored = json.loads((weights / localisation_file("test")).read_text())
    assert read_localisation(weights).to_dict() == stored, "the page reads what the CLI wrote"

    assert stored["n_images"] == 4 and stored["split"] == "test" and len(stored["images"]) == 4
    assert set(stored["share_inside"]) == {"predicted", "true"}
    assert all(0.0 <= share <= 1.0 for share in stored["share_inside"].values())
    assert 0.0 < stored["chance_rate"] <= 1.0
    assert "Grad-CAM (closed form from the served LiteRT model)" in stored["method"]
    assert "lesion_bboxes_200x150.csv" in stored["box_source"]
    assert stored["seconds_per_image"] > 0

    # Redo the rule by hand for each stored image: the peak of the heatmap of a 96-px input, mapped to
    # x = 25 + (col + 0.5) * 150 / 96, y = (row + 0.5) * 150 / 96, tested against the CSV box.
    boxes = pd.read_csv(bboxes).set_index("image_id")
    predictor = Predictor.from_dir(weights)
    explainer = ReferenceExplainer(predictor.model)
    inside_predicted, box_shares = [], []
    for row in stored["images"]:
        image = load_image(data_dir / f"{row['image_id']}.jpg")
        predicted = int(np.argmax(predictor.predict_probabilities([image])[0]))
        assert row["predicted"] == CODES[predicted]
        heatmap = explainer.heatmap(predictor.model_input([image]), predicted)
        r, c = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        x, y = 25 + (c + 0.5) * CROP_SCALE_96, (r + 0.5) * CROP_SCALE_96
        box = boxes.loc[row["image_id"]]
        inside = bool(box.left <= x <= box.right and box.top <= y <= box.bottom)
        assert row["inside_predicted"] is inside, row
        assert row["peak_predicted"] == pytest.approx([x, y], abs=0.01)
        inside_predicted.append(inside)
        width = min(box.right, 175) - max(box.left, 25)
        height = min(box.bottom, 150) - max(box.top, 0)
        box_shares.append(max(width, 0) * max(height, 0) / 150 ** 2)
    assert stored["share_inside"]["predicted"] == pytest.approx(np.mean(inside_predicted))
    assert stored["chance_rate"] == pytest.approx(np.mean(box_shares), abs=1e-4)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_served_and_reference_maps_give_the_same_figures(tiny_bundle, test_set, synthetic_ham, tmp_path, method):
    """`--reference` (tf-keras-vis on the Keras model) and the default (closed form from the LiteRT model) agree
    image by image: predicted class, peak position and inside/outside for both targets."""
    data_dir, chosen = test_set
    bboxes = synthetic_ham / "lesion_bboxes_200x150.csv"
    figures = {}
    for name, extra in (("served", []), ("reference", ["--reference"])):
        weights = bundle_with_split(tiny_bundle, chosen, tmp_path / name)
        assert main(["--weights", str(weights), "--data-dir", str(data_dir), "--bboxes", str(bboxes),
                     "--method", method, *extra]) == 0
        figures[name] = read_localisation(weights)
    served, reference = figures["served"], figures["reference"]
    assert "tf-keras-vis on the Keras model" in reference.method and "served LiteRT" in served.method
    assert served.n_images == reference.n_images == len(chosen)
    assert served.share_inside == reference.share_inside and served.chance_rate == reference.chance_rate
    assert served.images == reference.images
    assert len({tuple(row["peak_true"]) for row in served.images}) > 1, "the peaks differ between images"


def test_cli_needs_no_evaluation_report_and_names_a_missing_split(tiny_bundle, test_set, synthetic_ham, tmp_path,
                                                                   capsys):
    """Localisation has its own file, so it runs before or after any evaluation."""
    data_dir, chosen = test_set
    weights = bundle_with_split(tiny_bundle, chosen, tmp_path / "weights")
    (weights / "evaluation_test.json").unlink()
    bboxes = synthetic_ham / "lesion_bboxes_200x150.csv"
    assert main(["--weights", str(weights), "--data-dir", str(data_dir), "--limit", "1", "--bboxes", str(bboxes)]) == 0
    assert read_localisation(weights).n_images == 1 and not (weights / "evaluation_test.json").exists()
    assert main(["--weights", str(tmp_path), "--data-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "split.csv" in error and "does not exist" in error




def test_cli_without_a_served_copy_names_the_build_command(tiny_bundle, test_set, synthetic_ham, tmp_path, capsys):
    data_dir, chosen = test_set
    weights = bundle_with_split(tiny_bundle, chosen, tmp_path / "weights")
    (weights / "model.tflite").unlink()
    bboxes = synthetic_ham / "lesion_bboxes_200x150.csv"
    assert main(["--weights", str(weights), "--data-dir", str(data_dir), "--bboxes", str(bboxes)]) == 2
    error = capsys.readouterr().err
    assert "model.tflite is missing" in error and "python -m skin_model.cli.lite" in error
    assert read_localisation(weights) is None
