"""Shared fixtures: paths into ../shared and a small, quickly built model bundle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from skin_model.config import DEFAULT_BACKBONE_WEIGHTS, DEFAULT_DATA_DIR, DEFAULT_WEIGHTS_DIR  # noqa: E402

TINY_SIZE = 96


@pytest.fixture(scope="session")
def ham_dir() -> Path:
    """The real HAM10000 folder in ../shared (tests that need it are skipped without it)."""
    if not (DEFAULT_DATA_DIR / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"HAM10000 not found at {DEFAULT_DATA_DIR}")
    return DEFAULT_DATA_DIR


@pytest.fixture(scope="session")
def backbone_weights() -> Path:
    if not DEFAULT_BACKBONE_WEIGHTS.is_file():
        pytest.skip(f"ImageNet weights not found at {DEFAULT_BACKBONE_WEIGHTS}")
    return DEFAULT_BACKBONE_WEIGHTS


@pytest.fixture(scope="session")
def real_image_path(ham_dir: Path) -> Path:
    """A real 600x450 HAM10000 original (a melanocytic naevus)."""
    return ham_dir / "images_600x450" / "ISIC_0024306.jpg"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, backbone_weights: Path) -> Path:
    """An untrained-head model bundle at 96 px with the real ImageNet backbone (fast to build and run)."""
    from skin_model.bundle import ModelMetadata
    from skin_model.lite import build_lite
    from skin_model.model import build_classifier, save_bundle

    import keras

    out = tmp_path_factory.mktemp("tiny_bundle")
    keras.utils.set_random_seed(0)  # the same untrained head in every run
    model = build_classifier(TINY_SIZE, backbone_weights)
    save_bundle(model, ModelMetadata(version="test", created="2026-01-01", input_size=TINY_SIZE,
                                     temperature=1.3, unsure_threshold=0.5), out)
    build_lite(out)
    return out


@pytest.fixture(scope="session")
def shipped_bundle() -> Path:
    """The trained model in weights/ (skipped when it has not been trained yet)."""
    if not (DEFAULT_WEIGHTS_DIR / "metadata.json").is_file():
        pytest.skip("No trained model in weights/ yet")
    return DEFAULT_WEIGHTS_DIR


@pytest.fixture(scope="session")
def gated_bundle(tiny_bundle: Path, ham_dir: Path, tmp_path_factory) -> Path:
    """The tiny bundle plus an OOD gate fitted on 60 HAM10000 originals (the first 20 lesions held out as
    "test", the next 30 as "val", in the bundle's split.csv)."""
    import shutil

    import pandas as pd

    from skin_model import ood
    from skin_model.bundle import SPLIT_FILE

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("gated") / "bundle"))
    meta = pd.read_csv(ham_dir / "HAM10000_metadata.csv")
    originals = sorted(p.stem for p in (ham_dir / "images_600x450").glob("*.jpg"))
    frame = meta[meta["image_id"].isin(originals)].copy()
    order = {lesion: i for i, lesion in enumerate(frame["lesion_id"].drop_duplicates())}
    frame["split"] = ["test" if order[l] < 20 else "val" if order[l] < 50 else "train" for l in frame["lesion_id"]]
    frame.to_csv(bundle / SPLIT_FILE, index=False)
    ood.fit_bundle_gate(bundle, ham_dir, limit=60, components=32, percentile=99.5, target_pass=0.98)
    return bundle


def markdown_html(source: str) -> str:
    """``source`` rendered as CommonMark (what the browser shows for st.markdown / st.error text)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").render(source)


def markdown_text(source: str) -> str:
    """The visible text of rendered Markdown (tags removed, entities decoded)."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", markdown_html(source)))
