"""HAM10000 catalogue, highest-resolution copies, lesion-grouped split (on the real data) and error reporting by
file name (on synthetic files)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skin_model.data.dataset import SPLITS, DatasetError, load_arrays, load_catalogue, split_by_lesion
from skin_model.labels import CODES


def stems(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.jpg")}


@pytest.fixture(scope="module")
def catalogue(ham_dir: Path) -> pd.DataFrame:
    return load_catalogue(ham_dir)


@pytest.fixture(scope="module")
def split(catalogue: pd.DataFrame) -> pd.DataFrame:
    return split_by_lesion(catalogue, seed=42)


# ---------------------------------------------------------------------------------------------- catalogue
@pytest.mark.real_data("HAM10000", reason="checks the catalogue of all 10,015 real HAM10000 images")
def test_every_image_of_the_metadata_is_found(catalogue, ham_dir):
    metadata = pd.read_csv(ham_dir / "HAM10000_metadata.csv")
    assert len(catalogue) == len(metadata) == 10015
    assert catalogue["path"].notna().all()
    assert all(Path(p).is_file() and Path(p).stem == i for p, i in zip(catalogue["path"], catalogue["image_id"]))
    assert (catalogue["label"] == catalogue["dx"].map(CODES.index)).all()


@pytest.mark.real_data("HAM10000", reason="checks which copy of ../shared's real image folders the catalogue uses")
def test_highest_resolution_copy_is_preferred(catalogue, ham_dir):
    folder_of = dict(zip(catalogue["image_id"], catalogue["path"].map(lambda p: Path(p).parent.name)))
    originals = stems(ham_dir / "images_600x450")
    crops = stems(ham_dir / "images_crop224")
    small_only = stems(ham_dir / "images_200x150") - originals - crops
    assert originals and small_only and crops - originals
    assert {folder_of[i] for i in originals} == {"images_600x450"}
    assert {folder_of[i] for i in crops - originals} == {"images_crop224"}, "224x224 has more pixels than 200x150"
    assert {folder_of[i] for i in small_only} == {"images_200x150"}


# ---------------------------------------------------------------------------------------------- split
@pytest.mark.real_data("HAM10000", reason="checks the split of the real 10,015-image catalogue")
def test_no_lesion_in_two_splits(split):
    splits_per_lesion = split.groupby("lesion_id")["split"].nunique()
    assert (splits_per_lesion == 1).all(), splits_per_lesion[splits_per_lesion > 1].index[:5].tolist()
    assert set(split["split"]) == set(SPLITS)


@pytest.mark.real_data("HAM10000", reason="checks the split proportions on the real 10,015-image catalogue")
def test_split_proportions_are_about_70_15_15(split):
    share = split["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.70, abs=0.03)
    assert share["val"] == pytest.approx(0.15, abs=0.02)
    assert share["test"] == pytest.approx(0.15, abs=0.02)


@pytest.mark.real_data("HAM10000", reason="checks the stratification on the real 10,015-image catalogue")
def test_every_class_in_every_split_in_similar_proportions(split):
    overall = split["dx"].value_counts(normalize=True)
    for name, part in split.groupby("split"):
        counts = part["dx"].value_counts()
        assert set(counts.index) == set(CODES), f"{name} lacks {set(CODES) - set(counts.index)}"
        share = counts / counts.sum()
        for code in CODES:  # stratified: each class's share within a few points of the whole set's
            assert share[code] == pytest.approx(overall[code], abs=0.03), (name, code)


@pytest.mark.real_data("HAM10000", reason="checks the split of the real 10,015-image catalogue")
def test_split_is_deterministic_for_a_seed(catalogue, split):
    again = split_by_lesion(catalogue, seed=42)
    assert (again["split"] == split["split"]).all()
    other = split_by_lesion(catalogue, seed=7)
    assert (other["split"] != split["split"]).any(), "another seed gives another split"


# ---------------------------------------------------------------------------------------------- errors by name
@pytest.fixture()
def fake_data_dir(tmp_path: Path, synthetic_ham: Path) -> Path:
    """A tiny HAM-like folder: metadata for three images, two synthetic lesion JPEGs (copied into tmp_path)
    and one synthetic JPEG cut in half."""
    *good, source_of_bad = sorted((synthetic_ham / "images_200x150").glob("*.jpg"))[:3]
    images = tmp_path / "HAM10000_images_part_1"
    images.mkdir()
    for path in good:
        shutil.copy(path, images / path.name)
    data = source_of_bad.read_bytes()
    (images / "ISIC_9999990.jpg").write_bytes(data[: len(data) // 2])
    rows = [{"lesion_id": f"HAM_{i}", "image_id": p.stem, "dx": "nv"} for i, p in enumerate(good)]
    rows.append({"lesion_id": "HAM_9", "image_id": "ISIC_9999990", "dx": "mel"})
    pd.DataFrame(rows).to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    return tmp_path


def test_missing_image_is_named(fake_data_dir):
    metadata = fake_data_dir / "HAM10000_metadata.csv"
    frame = pd.read_csv(metadata)
    extra = pd.DataFrame([{"lesion_id": "HAM_8", "image_id": "ISIC_9999991", "dx": "bcc"}])
    pd.concat([frame, extra]).to_csv(metadata, index=False)
    with pytest.raises(DatasetError, match="1 image.*ISIC_9999991"):
        load_catalogue(fake_data_dir)


def test_corrupt_image_is_named_and_good_ones_load(fake_data_dir):
    catalogue = load_catalogue(fake_data_dir)
    assert len(catalogue) == 3
    good = catalogue[catalogue["image_id"] != "ISIC_9999990"]
    arrays = load_arrays(list(good["path"]), 64, progress=False)
    assert arrays.shape == (2, 64, 64, 3) and arrays.dtype == np.uint8
    with pytest.raises(DatasetError, match="1 image.*ISIC_9999990.jpg") as info:
        load_arrays(list(catalogue["path"]), 64, progress=False)
    assert good["image_id"].iloc[0] not in str(info.value), "only the bad file is named"


def test_unknown_diagnosis_code_is_named(fake_data_dir):
    metadata = fake_data_dir / "HAM10000_metadata.csv"
    frame = pd.read_csv(metadata)
    frame.loc[0, "dx"] = "scc"
    frame.to_csv(metadata, index=False)
    with pytest.raises(DatasetError, match="scc"):
        load_catalogue(fake_data_dir)


def test_jpeg_cut_inside_its_header_is_named(tmp_path):
    bad = tmp_path / "ISIC_9999992.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this JPEG stops here")
    with pytest.raises(DatasetError, match="ISIC_9999992.jpg"):
        load_arrays([bad], 64, progress=False)
