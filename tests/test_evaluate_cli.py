"""``python -m skin_model.cli.evaluate`` on a small labelled folder of synthetic HAM10000-like images (copied into
tmp_path), with both label formats, checked against scikit-learn on the report's own per-image probabilities;
and on real HAM10000 images with the real metadata file as it is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from skin_model.cli.evaluate import main
from skin_model.evaluation.evaluate import EvaluationError, evaluate_folder, read_label_table
from skin_model.data.imaging import load_image
from skin_model.labels import CODES

PER_CLASS = 2
ONE_HOT_ORDER = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")  # the ISIC 2018 column order


def choose(data_dir: Path) -> pd.DataFrame:
    """Two metadata rows per diagnosis (first image ids in sorted order)."""
    metadata = pd.read_csv(data_dir / "HAM10000_metadata.csv").sort_values("image_id")
    return metadata.groupby("dx").head(PER_CLASS).reset_index(drop=True)


def copy_chosen(data_dir: Path, chosen: pd.DataFrame, root: Path) -> Path:
    """The chosen images, copied from images_200x150 into nested folders of ``root``."""
    for i, image_id in enumerate(chosen["image_id"]):
        target = root / f"part_{i % 2}" / f"{image_id}.jpg"
        target.parent.mkdir(exist_ok=True)
        shutil.copy(data_dir / "images_200x150" / f"{image_id}.jpg", target)
    return root


@pytest.fixture(scope="module")
def chosen(synthetic_ham: Path) -> pd.DataFrame:
    """Two rows per diagnosis of the synthetic metadata."""
    return choose(synthetic_ham)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, synthetic_ham: Path, chosen: pd.DataFrame) -> Path:
    """The chosen synthetic images in nested folders of a temporary directory."""
    return copy_chosen(synthetic_ham, chosen, tmp_path_factory.mktemp("labelled"))


@pytest.fixture(scope="module")
def dx_csv(tmp_path_factory, chosen: pd.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels_dx.csv"
    chosen.to_csv(path, index=False)  # HAM10000 metadata columns, extra ones included
    return path


@pytest.fixture(scope="module")
def one_hot_csv(tmp_path_factory, chosen: pd.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("labels") / "GroundTruth.csv"
    rows = [{"image": row.image_id, **{c: 1.0 if c.lower() == row.dx else 0.0 for c in ONE_HOT_ORDER}}
            for row in chosen.itertuples()]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run(images: Path, labels: Path, weights: Path, out: Path, *extra: str) -> tuple[int, dict | None]:
    code = main(["--images", str(images), "--labels", str(labels), "--weights", str(weights),
                 "--out", str(out), *extra])
    return code, json.loads(out.read_text()) if out.is_file() else None


@pytest.fixture(scope="module")
def dx_report(folder, dx_csv, tiny_bundle, tmp_path_factory) -> dict:
    code, report = run(folder, dx_csv, tiny_bundle, tmp_path_factory.mktemp("out") / "dx.json", "--name", "toy")
    assert code == 0
    return report


def test_read_labels_both_formats_agree(dx_csv, one_hot_csv, chosen):
    expected = dict(zip(chosen["image_id"], chosen["dx"]))
    for labels_csv in (dx_csv, one_hot_csv):
        table = read_label_table(labels_csv)
        assert dict(zip(table["image_id"], table["dx"])) == expected
    assert len(set(expected.values())) == len(CODES)


def test_metrics_match_sklearn_on_the_reported_probabilities(dx_report, chosen):
    truth_by_id = dict(zip(chosen["image_id"], chosen["dx"]))
    rows = dx_report["predictions"]
    assert dx_report["n_images"] == len(rows) == len(chosen)
    assert {r["image_id"] for r in rows} == set(chosen["image_id"])
    truth = [CODES.index(truth_by_id[r["image_id"]]) for r in rows]
    predicted = [int(np.argmax(r["probs"])) for r in rows]
    assert dx_report["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, predicted))
    assert dx_report["confusion_matrix"] == confusion_matrix(truth, predicted, labels=range(7)).tolist()
    assert [sum(r) for r in dx_report["confusion_matrix"]] == [PER_CLASS] * len(CODES)


def test_probabilities_are_the_calibrated_serving_ones(dx_report, folder, tiny_bundle):
    from skin_model.serving.inference import Predictor

    row = dx_report["predictions"][0]
    path = next(folder.rglob(f"{row['image_id']}.jpg"))
    expected = Predictor.from_dir(tiny_bundle).predict_probabilities([load_image(path)])[0]
    np.testing.assert_allclose(row["probs"], expected, atol=1e-5)
    assert dx_report["model"]["temperature"] == pytest.approx(1.3)
    assert dx_report["ece_uncalibrated"] is not None


def test_tta_flag_reports_the_averaged_views(dx_report, folder, dx_csv, tiny_bundle, tmp_path):
    from skin_model.serving.inference import Predictor

    code, report = run(folder, dx_csv, tiny_bundle, tmp_path / "tta.json", "--tta")
    assert code == 0 and report["model"]["tta"] is True and dx_report["model"]["tta"] is False
    row = report["predictions"][0]
    path = next(folder.rglob(f"{row['image_id']}.jpg"))
    expected = Predictor.from_dir(tiny_bundle).predict_probabilities([load_image(path)], tta=True)[0]
    np.testing.assert_allclose(row["probs"], expected, atol=1e-5)
    plain = dx_report["predictions"][0]["probs"]
    assert not np.allclose(row["probs"], plain, atol=1e-4)  # the views really changed the output


def test_dataset_description(dx_report, folder, dx_csv, chosen):
    dataset = dx_report["dataset"]
    assert dataset["name"] == "toy"
    # the folders are named, not given as the machine's absolute paths (the report may be committed)
    assert dataset["images_dir"].endswith(folder.name) and dataset["labels_file"].endswith(dx_csv.name)
    assert str(folder.parent) not in dataset["images_dir"] and not dataset["labels_file"].startswith("/")
    assert dataset["split_method"] == "as provided by the labels file"
    assert dataset["n_lesions"] == chosen["lesion_id"].nunique()
    assert dx_report["extras"]["n_missing"] == 0 and dx_report["extras"]["n_unreadable"] == 0


def test_one_hot_labels_give_the_same_report(dx_report, folder, one_hot_csv, tiny_bundle, tmp_path):
    code, report = run(folder, one_hot_csv, tiny_bundle, tmp_path / "onehot.json", "--name", "toy")
    assert code == 0
    for key in ("n_images", "balanced_accuracy", "accuracy", "macro_auc", "confusion_matrix",
                "melanoma_sensitivity", "per_class"):
        assert report[key] == dx_report[key], key
    by_id = {r["image_id"]: r for r in report["predictions"]}
    for row in dx_report["predictions"]:
        assert by_id[row["image_id"]]["label"] == row["label"]
        np.testing.assert_allclose(by_id[row["image_id"]]["probs"], row["probs"], atol=1e-6)
    assert "n_lesions" not in report["dataset"], "the one-hot format has no lesion ids"


def test_missing_and_unreadable_images_are_named(folder, chosen, tiny_bundle, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(folder, images)
    (images / "ISIC_9999990.jpg").write_text("this is a text file, not a photo")
    labels = pd.concat([chosen, pd.DataFrame([{"lesion_id": "HAM_X", "image_id": "ISIC_9999990", "dx": "mel"},
                                              {"lesion_id": "HAM_Y", "image_id": "ISIC_9999991", "dx": "nv"}])])
    labels.to_csv(tmp_path / "labels.csv", index=False)
    code, report = run(images, tmp_path / "labels.csv", tiny_bundle, tmp_path / "r.json")
    assert code == 0
    extras = report["extras"]
    assert extras["n_missing"] == 1 and extras["missing"] == ["ISIC_9999991"]
    assert extras["n_unreadable"] == 1 and extras["unreadable"][0].startswith("ISIC_9999990.jpg: ")
    assert "not a recognised image" in extras["unreadable"][0]
    assert report["n_images"] == len(chosen)
    assert "ISIC_9999990" not in {r["image_id"] for r in report["predictions"]}
    printed = capsys.readouterr().out
    assert "ISIC_9999991" in printed and "ISIC_9999990.jpg" in printed


def test_unlabelled_images_are_ignored(folder, chosen, dx_csv, dx_report, tiny_bundle, tmp_path, synthetic_ham):
    images = tmp_path / "images"
    shutil.copytree(folder, images)
    unlabelled = sorted(set(p.stem for p in (synthetic_ham / "images_200x150").glob("*.jpg")) - set(chosen["image_id"]))[0]
    shutil.copy(synthetic_ham / "images_200x150" / f"{unlabelled}.jpg", images)
    (images / "notes.txt").write_text("not an image and not labelled")
    code, report = run(images, dx_csv, tiny_bundle, tmp_path / "r.json")
    assert code == 0
    assert report["n_images"] == len(chosen) and report["extras"]["n_unlabelled_ignored"] == 1
    assert report["confusion_matrix"] == dx_report["confusion_matrix"]


@pytest.mark.real_data("HAM10000", reason="checks the real HAM10000_metadata.csv (10,015 rows) as a labels file")
def test_ham10000_metadata_works_as_it_is(ham_dir, tiny_bundle, tmp_path):
    chosen = choose(ham_dir)
    folder = copy_chosen(ham_dir, chosen, tmp_path)
    report = evaluate_folder(folder, ham_dir / "HAM10000_metadata.csv", tiny_bundle, name="HAM subset")
    assert report.n_images == len(chosen)
    assert report.extras["n_missing"] == 10015 - len(chosen)
    assert report.dataset["n_lesions"] == chosen["lesion_id"].nunique()


def test_default_output_file_in_the_current_directory(folder, dx_csv, tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--images", str(folder), "--labels", str(dx_csv), "--weights", str(tiny_bundle),
                 "--name", "my clinic 2026"]) == 0
    written = tmp_path / "evaluation_my_clinic_2026.json"
    assert json.loads(written.read_text())["dataset"]["name"] == "my clinic 2026"


@pytest.mark.parametrize("content, expected", [
    ("filename,diagnosis\nISIC_0024306,nv\n", "expected `image_id,dx`"),
    ("image,MEL,NV\nISIC_0024306,0,1\n", "expected `image_id,dx`"),
    ("image_id,dx\nISIC_0024306,melanoma\n", "unknown or empty diagnosis codes ['melanoma']"),
    ("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_0024306,1,1,0,0,0,0,0\n", "ISIC_0024306"),
    ("", "not a readable CSV"),
])
def test_bad_labels_file_exits_2_with_a_clear_message(content, expected, folder, tiny_bundle, tmp_path, capsys):
    labels = tmp_path / "bad.csv"
    labels.write_text(content)
    code, report = run(folder, labels, tiny_bundle, tmp_path / "r.json")
    err = capsys.readouterr().err
    assert code == 2 and report is None
    assert err.startswith("error: bad.csv") and expected in err and "Traceback" not in err


def test_missing_folder_or_model_exits_2(folder, dx_csv, tiny_bundle, tmp_path, capsys):
    assert run(tmp_path / "nowhere", dx_csv, tiny_bundle, tmp_path / "r.json")[0] == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert run(folder, dx_csv, tmp_path, tmp_path / "r.json")[0] == 2
    assert "cannot load the model" in capsys.readouterr().err


def test_nothing_to_evaluate_is_an_error(folder, tiny_bundle, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,dx\nISIC_9999991,nv\n")
    with pytest.raises(EvaluationError, match="None of the 1 image.*labels.csv is in"):
        evaluate_folder(folder, labels, tiny_bundle)


def test_only_unreadable_images_is_an_error(tiny_bundle, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "ISIC_9999990.png").write_bytes(b"")
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,dx\nISIC_9999990,nv\n")
    with pytest.raises(EvaluationError, match=r"could be evaluated \(0 missing, 1 unreadable\)"):
        evaluate_folder(images, labels, tiny_bundle)


def test_split_filter_keeps_only_that_split(folder, chosen, tiny_bundle, tmp_path, capsys):
    labels = chosen.assign(split=["test" if i % 2 else "train" for i in range(len(chosen))])
    csv = tmp_path / "split.csv"
    labels.to_csv(csv, index=False)
    code, report = run(folder, csv, tiny_bundle, tmp_path / "test.json", "--split", "test")
    assert code == 0
    expected = sorted(labels.loc[labels["split"] == "test", "image_id"])
    assert sorted(p["image_id"] for p in report["predictions"]) == expected
    assert report["dataset"]["split"] == "test"
    assert run(folder, csv, tiny_bundle, tmp_path / "none.json", "--split", "val")[0] == 2
    assert "no row in split 'val'" in capsys.readouterr().err


def test_model_tta_setting_is_the_default_and_no_tta_overrides_it(dx_report, folder, dx_csv, tiny_bundle,
                                                                   tmp_path):
    """A bundle whose metadata says test_time_augmentation is evaluated as the app serves it; the report
    names the bundle's referral threshold, so it can be judged at it later."""
    import json
    import shutil

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    meta = json.loads((bundle / "metadata.json").read_text())
    (bundle / "metadata.json").write_text(json.dumps({**meta, "test_time_augmentation": True,
                                                      "referral_threshold": 0.42}))
    code, default = run(folder, dx_csv, bundle, tmp_path / "default.json")
    assert code == 0 and default["model"]["tta"] is True
    assert default["model"]["referral_threshold"] == 0.42 and dx_report["model"]["referral_threshold"] is None
    code_tta, explicit = run(folder, dx_csv, tiny_bundle, tmp_path / "explicit.json", "--tta")
    assert code_tta == 0
    np.testing.assert_allclose(default["predictions"][0]["probs"], explicit["predictions"][0]["probs"], atol=1e-9)
    code, plain = run(folder, dx_csv, bundle, tmp_path / "plain.json", "--no-tta")
    assert code == 0 and plain["model"]["tta"] is False
    np.testing.assert_allclose(plain["predictions"][0]["probs"], dx_report["predictions"][0]["probs"], atol=1e-9)


def test_corrupt_metadata_exits_2_with_a_message(folder, dx_csv, tiny_bundle, tmp_path, capsys):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    (bundle / "metadata.json").write_text('{"version": "1.0", "temperature": 1.')
    code, report = run(folder, dx_csv, bundle, tmp_path / "r.json")
    err = capsys.readouterr().err
    assert code == 2 and report is None
    assert "cannot load the model" in err and "metadata.json is damaged" in err and "Traceback" not in err


def test_duplicate_ids_with_the_same_label_are_reported(folder, chosen, tiny_bundle, tmp_path, capsys):
    rows = chosen[["image_id", "dx"]]
    repeated = rows.iloc[:2]
    labels = tmp_path / "labels.csv"
    pd.concat([rows, repeated]).to_csv(labels, index=False)  # 14 rows, 12 images
    code, report = run(folder, labels, tiny_bundle, tmp_path / "r.json")
    assert code == 0
    assert report["n_images"] == len(rows)
    assert report["extras"]["n_duplicate_ids"] == 2
    assert report["extras"]["duplicate_ids"] == sorted(repeated["image_id"])
    out = capsys.readouterr().out
    assert "2 image id(s) listed more than once" in out and repeated["image_id"].iloc[0] in out


def test_empty_diagnosis_names_its_row(folder, tiny_bundle, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,dx\nISIC_0024306,nv\nISIC_0024307,\nISIC_0024308,mel\n")
    code, _ = run(folder, labels, tiny_bundle, tmp_path / "r.json")
    err = capsys.readouterr().err
    assert code == 2 and "line 3 (ISIC_0024307)" in err


def test_the_apps_verdicts_are_counted(dx_report):
    """evaluate counts what the app would say of each image (verdict.Verdict): unsure, referred, flagged."""
    verdicts = dx_report["extras"]["verdicts"]
    probs = np.array([r["probs"] for r in dx_report["predictions"]])
    assert verdicts["n_unsure"] == int((probs.max(axis=1) < 0.5).sum()), "the tiny bundle's threshold is 0.5"
    assert verdicts["ood_check"].startswith("no ood.npz") and verdicts["n_not_dermoscopic"] is None
    assert verdicts["n_referred"] is None, "the tiny bundle has no referral threshold"
