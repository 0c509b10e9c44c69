"""Several labelled folders, one catalogue: HAM10000 pooled with an ISIC-Archive-shaped folder (synthetic), the
per-folder split, what metadata.json records of each source, the leave-source-out protocol on a pooled source,
``cli.evaluate --source`` and a training run on both folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from skin_model.data.dataset import (FOLDER_COLUMN, SOURCE_COLUMN, DatasetError, describe_sources, image_copies,
                                licence_text, load_catalogue, load_sources, split_by_lesion)
from skin_model.evaluation.holdout import (HELD_OUT, SPLIT_METHOD, hold_out_sources, held_out_rows, rows_frame,
                                trained_sources)
from skin_model.labels import CODES


@pytest.fixture(scope="module")
def pooled(synthetic_ham: Path, synthetic_isic: Path) -> pd.DataFrame:
    return load_sources([synthetic_ham, synthetic_isic])


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------------------------- catalogue
def test_folders_pool_into_one_catalogue_with_one_class_list(pooled, synthetic_ham, synthetic_isic):
    ham, isic = load_catalogue(synthetic_ham), pd.read_csv(synthetic_isic / "metadata.csv")
    assert len(pooled) == len(ham) + len(isic)
    assert set(pooled[FOLDER_COLUMN]) == {synthetic_ham.name, synthetic_isic.name}
    assert {"isic2017", "isic_archive", "rosendahl"} <= set(pooled[SOURCE_COLUMN])
    assert (pooled["label"] == pooled["dx"].map(CODES.index)).all()
    assert pooled["path"].map(lambda p: Path(p).is_file()).all()
    isic_rows = pooled[pooled[FOLDER_COLUMN] == synthetic_isic.name]
    assert set(isic_rows["dx"]) == {"nv", "mel", "bkl", "df", "akiec"}, "a folder may hold fewer classes"


def test_an_image_id_in_two_folders_is_named(synthetic_ham, synthetic_isic, tmp_path):
    other = copy_folder(synthetic_isic, tmp_path / "other")
    metadata = pd.read_csv(other / "metadata.csv")
    clash = pd.read_csv(synthetic_ham / "HAM10000_metadata.csv")["image_id"].iloc[3]
    shutil.copy(other / "images" / f"{metadata.at[0, 'image_id']}.jpg", other / "images" / f"{clash}.jpg")
    metadata.loc[0, ["image_id", "lesion_id"]] = clash, "ISIC_other_lesion"
    metadata.to_csv(other / "metadata.csv", index=False)
    with pytest.raises(DatasetError, match=f"image_id.*more than one folder.*{clash}"):
        load_sources([synthetic_ham, other])


def test_a_folder_named_twice_is_refused(synthetic_isic):
    with pytest.raises(DatasetError, match="given twice"):
        load_sources([synthetic_isic, synthetic_isic])


def test_a_folder_too_small_to_split_by_lesion_is_named(synthetic_ham, synthetic_isic):
    pooled = load_sources([synthetic_ham, synthetic_isic])
    tiny = pooled[(pooled[FOLDER_COLUMN] == synthetic_ham.name) | (pooled["image_id"].isin(
        pooled.loc[pooled[FOLDER_COLUMN] == synthetic_isic.name, "image_id"].iloc[:4]))]
    with pytest.raises(DatasetError, match=f"{synthetic_isic.name}: 4 lesion.*too few"):
        split_by_lesion(tiny.reset_index(drop=True))


def test_an_unknown_diagnosis_and_a_missing_file_are_named(synthetic_ham, synthetic_isic, tmp_path):
    bad = copy_folder(synthetic_isic, tmp_path / "bad")
    metadata = pd.read_csv(bad / "metadata.csv")
    metadata.loc[2, "dx"] = "scc"
    metadata.to_csv(bad / "metadata.csv", index=False)
    with pytest.raises(DatasetError, match="unknown diagnosis codes.*scc"):
        load_sources([synthetic_ham, bad])
    missing = copy_folder(synthetic_isic, tmp_path / "missing")
    gone = pd.read_csv(missing / "metadata.csv")["image_id"].iloc[5]
    (missing / "images" / f"{gone}.jpg").unlink()
    with pytest.raises(DatasetError, match=f"1 image.*no file.*{gone}"):
        load_sources([synthetic_ham, missing])


def test_a_folder_without_a_source_column_is_its_own_source(synthetic_isic, tmp_path):
    plain = copy_folder(synthetic_isic, tmp_path / "clinic_x")
    pd.read_csv(plain / "metadata.csv").drop(columns=[SOURCE_COLUMN]).to_csv(plain / "metadata.csv", index=False)
    assert set(load_catalogue(plain)[SOURCE_COLUMN]) == {"clinic_x"}


# ---------------------------------------------------------------------------------------------- split
def test_each_folder_is_split_on_its_own(pooled, synthetic_ham):
    split = split_by_lesion(pooled, seed=42)
    alone = split_by_lesion(load_sources([synthetic_ham]), seed=42)
    ham_part = split[split[FOLDER_COLUMN] == synthetic_ham.name]
    assert dict(zip(ham_part["image_id"], ham_part["split"])) == dict(zip(alone["image_id"], alone["split"])), \
        "adding a folder moves no HAM10000 image between splits"
    assert (split.groupby("lesion_id")["split"].nunique() == 1).all()
    for folder, part in split.groupby(FOLDER_COLUMN):
        assert set(part["split"]) == {"train", "val", "test"}, f"{folder} is in every split"


def test_metadata_records_every_source_with_its_credit(pooled, synthetic_ham, synthetic_isic):
    split = split_by_lesion(pooled, seed=42)
    records = describe_sources(split, [synthetic_ham, synthetic_isic])
    assert [r["folder"] for r in records] == [synthetic_ham.name, synthetic_isic.name]
    assert sum(r["images"] for r in records) == len(split)
    assert all(len(r["metadata_sha256"]) == 64 for r in records)
    by_source = {s["source"]: s for r in records for s in r["sources"]}
    assert by_source["isic2017"]["collection"] == "ISIC Archive" and "CC-0" in by_source["isic2017"]["licence"]
    assert by_source["rosendahl"]["collection"] == "HAM10000" and "CC BY-NC-SA" in by_source["rosendahl"]["licence"]
    counted = sum(n for s in by_source.values() for split_counts in s["counts"].values() for n in split_counts.values())
    assert counted == len(split)
    assert set(by_source["isic2017"]["counts"]["train"]) <= {"nv", "mel", "bkl"}
    assert "HAM10000 (CC BY-NC-SA 4.0) and ISIC Archive" in licence_text(["rosendahl", "isic2017"])


def test_image_copies_count_each_folders_images_by_their_short_side(tmp_path):
    from PIL import Image
    sizes = {"a/images_200x150": [(200, 150)] * 3, "b/images": [(256, 256)] * 2 + [(180, 180)]}
    paths = []
    for folder, shapes in sizes.items():
        (tmp_path / folder).mkdir(parents=True)
        for i, shape in enumerate(shapes):
            Image.new("RGB", shape).save(tmp_path / folder / f"ISIC_{i}.jpg")
            paths.append(tmp_path / folder / f"ISIC_{i}.jpg")
    (tmp_path / "b" / "images" / "broken.jpg").write_bytes(b"not an image")
    copies = image_copies(paths + [tmp_path / "b" / "images" / "broken.jpg"])
    assert copies == {"b/images": {"images": 4, "short_sides": {"256": 2, "180": 1, "unknown": 1}},
                      "a/images_200x150": {"images": 3, "short_sides": {"150": 3}}}


# ---------------------------------------------------------------------------------------------- protocol
def test_any_source_of_any_folder_can_be_held_out(pooled):
    holdout = hold_out_sources(pooled, ["isic2017"])
    assert set(holdout.held_out[SOURCE_COLUMN]) == {"isic2017"} and (holdout.held_out["split"] == HELD_OUT).all()
    assert "isic_archive" in holdout.kept_sources and "isic2017" not in holdout.kept_sources


def test_trained_sources_read_from_the_metadata():
    folders = [{"sources": [{"source": "rosendahl", "counts": {"train": {"nv": 3}}},
                            {"source": "isic2017", "counts": {"heldout": {"nv": 3}}}]}]
    assert trained_sources(SimpleNamespace(data={"folders": folders})) == ("rosendahl",)
    older = SimpleNamespace(data={"held_out_sources": ["vidir_modern"]})
    assert trained_sources(older) == ("rosendahl", "vidir_molemax", "vienna_dias")


def test_evaluate_a_source_the_model_never_saw_gives_a_held_out_row(tiny_bundle, synthetic_isic, tmp_path):
    from skin_model.cli.evaluate import main

    out = tmp_path / "heldout_isic2017_tiny.json"
    assert main(["--images", str(synthetic_isic), "--labels", str(synthetic_isic / "metadata.csv"),
                 "--weights", str(tiny_bundle), "--source", "isic2017", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dataset"]["split_method"] == SPLIT_METHOD and report["dataset"]["sources"] == ["isic2017"]
    assert "isic2017" not in report["dataset"]["trained_on"]
    assert len(report["predictions"]) == 30, "only isic2017's images"
    rows, problems = held_out_rows([out])
    assert not problems and rows[0].source == "isic2017" and rows[0].classes_present == 3
    assert rows_frame(rows)["trained on"].tolist() == ["HAM10000"]
    assert main(["--images", str(synthetic_isic), "--labels", str(synthetic_isic / "metadata.csv"),
                 "--weights", str(tiny_bundle), "--source", "nowhere", "--out", str(out)]) == 2


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def pooled_run(tmp_path_factory, synthetic_ham: Path, synthetic_isic: Path, random_backbone_weights: Path) -> Path:
    """train.py on the synthetic HAM10000 folder plus the ISIC-shaped one at 64 px, isic2017 held out."""
    from test_train_smoke import train_module

    out = tmp_path_factory.mktemp("pooled_run")
    assert train_module().main([
        "--extra-data", str(synthetic_isic), "--image-size", "64", "--head-epochs", "1",
        "--finetune-epochs", "1", "--batch-size", "16", "--holdout-source", "isic2017",
        "--data-dir", str(synthetic_ham), "--backbone-weights", str(random_backbone_weights),
        "--output-dir", str(out)]) == 0
    return out


def test_a_pooled_run_trains_on_both_folders_and_records_them(pooled_run, synthetic_ham, synthetic_isic):
    split = pd.read_csv(pooled_run / "split.csv")
    assert set(split.loc[split["split"] == HELD_OUT, SOURCE_COLUMN]) == {"isic2017"}
    assert "isic_archive" in set(split.loc[split["split"] == "train", SOURCE_COLUMN])
    metadata = json.loads((pooled_run / "metadata.json").read_text())
    assert [f["folder"] for f in metadata["data"]["folders"]] == [synthetic_ham.name, synthetic_isic.name]
    assert "ISIC Archive" in metadata["data"]["source"] and "ISIC Archive" in metadata["licence"]
    assert any(limit.startswith("Few clinics") for limit in metadata["known_limits"])
    held_out = json.loads((pooled_run / "evaluations" / "heldout_isic2017.json").read_text())
    assert "isic_archive" in held_out["dataset"]["trained_on"]
    assert "--extra-data" not in held_out["dataset"]["recipe"], "the data is recorded as trained_on, not as recipe"
    assert held_out["model"]["tta"] == metadata["test_time_augmentation"]
    copies = metadata["data"]["image_copies"]
    trained_or_evaluated = (split["split"] != HELD_OUT).sum()
    assert sum(c["images"] for c in copies.values()) == trained_or_evaluated, "held-out images are not counted"
    assert {key.split("/")[0] for key in copies} == {synthetic_ham.name, synthetic_isic.name}


def test_a_pooled_run_reports_each_folders_test_images(pooled_run, synthetic_ham, synthetic_isic):
    metadata = json.loads((pooled_run / "metadata.json").read_text())
    split = pd.read_csv(pooled_run / "split.csv")
    test = split[split["split"] == "test"]
    for folder in (synthetic_ham, synthetic_isic):
        report = json.loads((pooled_run / "evaluations" / f"test_{folder.name}.json").read_text())
        assert sorted(p["image_id"] for p in report["predictions"]) == sorted(test.loc[test["folder"] == folder.name,
                                                                                       "image_id"])
        assert report["model"]["tta"] == metadata["test_time_augmentation"], "predicted as served, and says how"


# ---------------------------------------------------------------------------------------------- squashed copies
def test_unsquash_stretches_a_squashed_photo_back_and_leaves_others():
    from PIL import Image

    from skin_model.data.imaging import unsquash

    square = Image.new("RGB", (256, 256))
    assert unsquash(square, 4 / 3).size == (341, 256)
    assert unsquash(square, None) is square
    landscape = Image.new("RGB", (600, 450))
    assert unsquash(landscape, 4 / 3) is landscape, "already at that aspect"


def test_restored_aspect_changes_only_the_squashed_sources(synthetic_isic, synthetic_ham):
    from skin_model.data.dataset import SQUASHED_SOURCES, load_arrays, source_aspects
    from skin_model.data.pipeline import ImageFiles

    pooled = load_sources([synthetic_ham, synthetic_isic])
    rows = pd.concat([pooled[pooled[SOURCE_COLUMN] == "rosendahl"].head(2),
                      pooled[pooled[SOURCE_COLUMN] == "isic2017"].head(2)])
    aspects = source_aspects(rows[SOURCE_COLUMN])
    assert aspects == (None, None, SQUASHED_SOURCES["isic2017"], SQUASHED_SOURCES["isic2017"])
    plain = load_arrays(list(rows["path"]), 64, progress=False)
    restored = load_arrays(list(rows["path"]), 64, progress=False, aspects=aspects)
    assert (plain[:2] == restored[:2]).all() and not (plain[2:] == restored[2:]).all()
    streamed = ImageFiles(tuple(rows["path"]), 64, aspects=aspects)[0:4]
    assert (streamed == restored).all(), "streaming and in-memory loading stretch the same way"


def test_evaluate_can_restore_the_aspect_of_squashed_sources(tiny_bundle, synthetic_isic, tmp_path):
    from skin_model.cli.evaluate import main
    from skin_model.evaluation.evaluate import evaluate_folder
    from skin_model.evaluation.metrics import EvaluationReport

    plain = evaluate_folder(synthetic_isic, synthetic_isic / "metadata.csv", tiny_bundle, source="isic2017")
    out = tmp_path / "restored.json"
    assert main(["--images", str(synthetic_isic), "--labels", str(synthetic_isic / "metadata.csv"), "--weights",
                 str(tiny_bundle), "--source", "isic2017", "--restore-aspect", "--out", str(out)]) == 0
    restored = EvaluationReport.from_json(out)
    assert restored.dataset["restore_aspect"] and "stretched back" in restored.dataset["recipe"]
    assert [p["image_id"] for p in plain.predictions] == [p["image_id"] for p in restored.predictions]
    assert any(a["probs"] != b["probs"] for a, b in zip(plain.predictions, restored.predictions))


def test_evaluate_sees_squashed_sources_as_the_model_was_trained_on_them(tiny_bundle, synthetic_isic, tmp_path):
    from skin_model.cli.evaluate import main
    from skin_model.evaluation.evaluate import evaluate_folder
    from skin_model.evaluation.metrics import EvaluationReport

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    metadata = json.loads((bundle / "metadata.json").read_text())
    metadata["training"] = {**(metadata.get("training") or {}), "restore_aspect": True}
    (bundle / "metadata.json").write_text(json.dumps(metadata))
    labels = synthetic_isic / "metadata.csv"
    by_default = evaluate_folder(synthetic_isic, labels, bundle, source="isic2017")
    stretched = evaluate_folder(synthetic_isic, labels, tiny_bundle, source="isic2017", restore_aspect=True)
    assert by_default.dataset.get("restore_aspect") is True
    assert [p["probs"] for p in by_default.predictions] == [p["probs"] for p in stretched.predictions]
    out = tmp_path / "published.json"
    assert main(["--images", str(synthetic_isic), "--labels", str(labels), "--weights", str(bundle),
                 "--source", "isic2017", "--no-restore-aspect", "--out", str(out)]) == 0
    published = EvaluationReport.from_json(out)
    assert "restore_aspect" not in published.dataset
    assert any(a["probs"] != b["probs"] for a, b in zip(published.predictions, by_default.predictions))
