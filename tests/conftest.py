"""Shared fixtures: paths into ../shared, synthetic stand-ins for them and small, quickly built model bundles.

Most tests need *some* dermoscopy-like image, HAM10000-shaped table or model: they use ``synthetic_ham``,
``lesion_path`` and ``tiny_bundle`` (a randomly initialised backbone), which need nothing outside the
repository. The few that need the real data say so with ``@pytest.mark.real_data(..., reason=...)`` and
are skipped with that reason when ../shared (``SKIN_SHARED_DIR``) lacks it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from skin_model.config import DEFAULT_BACKBONE_WEIGHTS, DEFAULT_DATA_DIR, DEFAULT_WEIGHTS_DIR  # noqa: E402

TINY_SIZE = 96
#: Seed of the tiny bundle's random backbone and head. With it, the gates fitted on synthetic images here and
#: in test_ood.py score the everyday photos the tests show them (astronaut, coffee, a blank page) at 1.7x
#: their threshold or more and the synthetic lesions the tests expect to pass at 0.72x or less (measured when
#: the fixtures were written; other seeds do worse, e.g. on test_ood.py's held-out lesion).
TINY_SEED = 2
#: What ``@pytest.mark.real_data`` can ask for, and the file that shows it is there.
REAL_DATA = {"HAM10000": DEFAULT_DATA_DIR / "HAM10000_metadata.csv", "ImageNet": DEFAULT_BACKBONE_WEIGHTS}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "real_data(*needs, reason): the test needs ../shared's HAM10000 and/or ImageNet weights "
                   "(synthetic stand-ins would not test the same thing, as the reason says); skipped without them")


def pytest_collection_modifyitems(config, items):
    for item in items:
        for marker in item.iter_markers("real_data"):
            missing = [f"{need} ({REAL_DATA[need]})" for need in marker.args if not REAL_DATA[need].is_file()]
            if missing:
                item.add_marker(pytest.mark.skip(
                    reason=f"needs real data: {marker.kwargs['reason']}; not found: {', '.join(missing)}"))


# ---------------------------------------------------------------------------------------------- ../shared
@pytest.fixture(scope="session")
def ham_dir() -> Path:
    """The real HAM10000 folder in ../shared (tests that need it are skipped without it)."""
    if not REAL_DATA["HAM10000"].is_file():
        pytest.skip(f"HAM10000 not found at {DEFAULT_DATA_DIR}")
    return DEFAULT_DATA_DIR


@pytest.fixture(scope="session")
def backbone_weights() -> Path:
    if not REAL_DATA["ImageNet"].is_file():
        pytest.skip(f"ImageNet weights not found at {DEFAULT_BACKBONE_WEIGHTS}")
    return DEFAULT_BACKBONE_WEIGHTS


@pytest.fixture(scope="session")
def real_image_path(ham_dir: Path) -> Path:
    """A real 600x450 HAM10000 original (a melanocytic naevus)."""
    return ham_dir / "images_600x450" / "ISIC_0024306.jpg"


# ---------------------------------------------------------------------------------------------- synthetic
@pytest.fixture(scope="session")
def synthetic_ham(tmp_path_factory) -> Path:
    """A HAM10000-shaped folder of synthetic lesions (tests/synthetic.py): HAM10000_metadata.csv (173
    images of 147 lesions, all 7 classes and 4 sources), images_600x450/, images_200x150/ and
    lesion_bboxes_200x150.csv."""
    from synthetic import write_ham_folder

    return write_ham_folder(tmp_path_factory.mktemp("synthetic_ham"))


@pytest.fixture(scope="session")
def synthetic_isic(tmp_path_factory) -> Path:
    """An ISIC-Archive-shaped folder of synthetic lesions (tests/synthetic.py): metadata.csv (44 square images,
    sources isic2017 with nv/mel/bkl and isic_archive with mel/nv/df/akiec), images/."""
    from synthetic import write_isic_folder

    return write_isic_folder(tmp_path_factory.mktemp("isic_archive"))


@pytest.fixture(scope="session")
def lesion_path(synthetic_ham: Path) -> Path:
    """A synthetic 600x450 lesion photo, ISIC_0024306.jpg (a naevus in the synthetic metadata)."""
    return synthetic_ham / "images_600x450" / "ISIC_0024306.jpg"


@pytest.fixture(scope="session")
def random_backbone_weights(tmp_path_factory) -> Path:
    """A MobileNetV2 no-top .weights.h5 file with random (noise-calibrated) weights, for train.py's
    --backbone-weights in place of the ImageNet file."""
    from synthetic import write_random_backbone_weights

    return write_random_backbone_weights(tmp_path_factory.mktemp("backbone") / "random_notop.weights.h5")


# ---------------------------------------------------------------------------------------------- bundles
def _save_tiny_bundle(model, out: Path) -> Path:
    from skin_model.bundle import ModelMetadata
    from skin_model.serving.lite import build_lite
    from skin_model.model import save_bundle

    save_bundle(model, ModelMetadata(version="test", created="2026-01-01", input_size=TINY_SIZE,
                                     temperature=1.3, unsure_threshold=0.5), out)
    build_lite(out)  # the served LiteRT copy: an explicit step, as in train.py
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """An untrained-head model bundle at 96 px on a randomly initialised backbone (seeded, batch norm
    calibrated on noise: tests/synthetic.py), fast to build and run, needing no ImageNet file."""
    from synthetic import random_classifier

    return _save_tiny_bundle(random_classifier(TINY_SIZE, TINY_SEED), tmp_path_factory.mktemp("tiny_bundle"))


@pytest.fixture(scope="session")
def imagenet_bundle(tmp_path_factory, backbone_weights: Path) -> Path:
    """As tiny_bundle, with the real ImageNet backbone: only for tests that need ImageNet features."""
    import keras

    from skin_model.model import build_classifier

    keras.utils.set_random_seed(0)  # the same untrained head in every run
    model = build_classifier(TINY_SIZE, backbone_weights)
    return _save_tiny_bundle(model, tmp_path_factory.mktemp("imagenet_bundle"))


@pytest.fixture(scope="session")
def shipped_bundle() -> Path:
    """The trained model in weights/ (skipped when it has not been trained yet)."""
    if not (DEFAULT_WEIGHTS_DIR / "metadata.json").is_file():
        pytest.skip("No trained model in weights/ yet")
    return DEFAULT_WEIGHTS_DIR


def fit_test_gate(bundle: Path, data_dir: Path, target: Path) -> Path:
    """A copy of ``bundle`` in ``target`` plus an OOD gate fitted on 60 originals of ``data_dir`` (the first
    20 lesions held out as "test", the next 30 as "val", in the bundle's split.csv)."""
    import pandas as pd

    from skin_model.serving import ood
    from skin_model.bundle import SPLIT_FILE

    bundle = Path(shutil.copytree(bundle, target))
    meta = pd.read_csv(data_dir / "HAM10000_metadata.csv")
    originals = sorted(p.stem for p in (data_dir / "images_600x450").glob("*.jpg"))
    frame = meta[meta["image_id"].isin(originals)].copy()
    order = {lesion: i for i, lesion in enumerate(frame["lesion_id"].drop_duplicates())}
    frame["split"] = ["test" if order[l] < 20 else "val" if order[l] < 50 else "train" for l in frame["lesion_id"]]
    frame.to_csv(bundle / SPLIT_FILE, index=False)
    ood.fit_bundle_gate(bundle, data_dir, limit=60, components=32, percentile=99.5, target_pass=0.98)
    return bundle


@pytest.fixture(scope="session")
def gated_bundle(tiny_bundle: Path, synthetic_ham: Path, tmp_path_factory) -> Path:
    """The tiny bundle plus an OOD gate fitted on 60 synthetic originals (``fit_test_gate``)."""
    return fit_test_gate(tiny_bundle, synthetic_ham, tmp_path_factory.mktemp("gated") / "bundle")


@pytest.fixture(scope="session")
def imagenet_gated_bundle(imagenet_bundle: Path, ham_dir: Path, tmp_path_factory) -> Path:
    """The ImageNet bundle plus an OOD gate fitted on 60 real HAM10000 originals (``fit_test_gate``)."""
    return fit_test_gate(imagenet_bundle, ham_dir, tmp_path_factory.mktemp("imagenet_gated") / "bundle")


def markdown_html(source: str) -> str:
    """``source`` rendered as CommonMark (what the browser shows for st.markdown / st.error text)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").render(source)


def markdown_text(source: str) -> str:
    """The visible text of rendered Markdown (tags removed, entities decoded)."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", markdown_html(source)))
