"""The served LiteRT copy: same predictions and OOD features as the Keras model; serving refuses a copy that
is missing or stale (building is an explicit step: the lite CLI rebuilds it), never builds from an altered
model.keras, and runs without TensorFlow."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SIZE
from skin_model.data.imaging import load_image, to_model_input
from skin_model.bundle import LITE_FILE, LITE_INFO_FILE, ModelIntegrityError, read_metadata, sha256_of
from skin_model.cli.lite import main
from skin_model.serving.lite import LitePredictor, ensure_lite, is_current

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lesion_batch(lesion_path: Path, synthetic_ham: Path) -> np.ndarray:
    """Six synthetic lesion photos, a 600x450 original and five 200x150 copies."""
    paths = [lesion_path, *sorted((synthetic_ham / "images_200x150").glob("*.jpg"))[:5]]
    return to_model_input([load_image(p) for p in paths], TINY_SIZE)


def test_lite_model_matches_keras_on_lesion_images(tiny_bundle, lesion_batch):
    from skin_model.serving.inference import Predictor
    from skin_model.serving.ood import FeatureExtractor

    keras_predictor = Predictor.from_dir(tiny_bundle)
    lite = LitePredictor.from_dir(tiny_bundle)
    probabilities, features = lite.outputs(lesion_batch)
    expected = keras_predictor.probabilities_of(lesion_batch)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert len(set(expected.argmax(axis=1))) > 1 or expected.std() > 1e-3, "the images give different outputs"
    keras_features = FeatureExtractor(keras_predictor.model)(lesion_batch)
    np.testing.assert_allclose(features, keras_features, rtol=1e-4, atol=1e-4 * np.abs(keras_features).max())
    single = lite.probabilities_of(lesion_batch[:1])  # batch size changes between calls are handled
    np.testing.assert_allclose(single, expected[:1], atol=1e-5)


def test_missing_altered_or_stale_copy_is_refused_then_rebuilt(tiny_bundle, tmp_path, lesion_batch, caplog):
    """Serving names the problem and the command; the explicit build step (``ensure_lite``, which the lite
    CLI, train.py and ``make app`` run) rebuilds the copy from model.keras."""
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    reference = LitePredictor.from_dir(tiny_bundle).probabilities_of(lesion_batch)
    meta = read_metadata(bundle)
    assert is_current(bundle, meta)

    def rebuilt_and_equal(reason: str) -> None:
        assert not is_current(bundle, meta)
        with pytest.raises(ModelIntegrityError, match=f"{reason}.*python -m skin_model.cli.lite"):
            LitePredictor.from_dir(bundle)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="skin_model.serving.lite"):
            ensure_lite(bundle, meta)
        np.testing.assert_allclose(LitePredictor.from_dir(bundle).probabilities_of(lesion_batch), reference,
                                   atol=1e-6)
        assert is_current(bundle, meta)
        assert any("Rebuilding" in r.message and reason in r.message for r in caplog.records), \
            [r.message for r in caplog.records]

    (bundle / LITE_FILE).unlink()  # a fresh clone: the copy is not in git
    rebuilt_and_equal("is missing")
    with (bundle / LITE_FILE).open("r+b") as handle:  # one flipped byte in the middle
        handle.seek(handle.seek(0, 2) // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    rebuilt_and_equal("altered or damaged")
    info = json.loads((bundle / LITE_INFO_FILE).read_text())  # built from another model.keras
    (bundle / LITE_INFO_FILE).write_text(json.dumps({**info, "source_sha256": "0" * 64}))
    rebuilt_and_equal("built from another")
    assert json.loads((bundle / LITE_INFO_FILE).read_text())["source_sha256"] == meta.model_sha256


def test_cli_builds_the_copy_once(tiny_bundle, tmp_path):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    (bundle / LITE_FILE).unlink()
    assert main(["--weights", str(bundle)]) == 0
    built = (bundle / LITE_FILE).stat().st_mtime_ns
    assert json.loads((bundle / LITE_INFO_FILE).read_text())["sha256"] == sha256_of(bundle / LITE_FILE)
    assert main(["--weights", str(bundle)]) == 0
    assert (bundle / LITE_FILE).stat().st_mtime_ns == built, "an up-to-date copy is not rebuilt"


def test_tampered_model_keras_is_refused_before_building(tiny_bundle, tmp_path):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    (bundle / LITE_FILE).unlink()
    with (bundle / "model.keras").open("ab") as handle:
        handle.write(b"x")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        LitePredictor.from_dir(bundle)
    with pytest.raises(ModelIntegrityError, match="sha256"):
        ensure_lite(bundle, read_metadata(bundle))
    assert main(["--weights", str(bundle)]) == 1
    assert not (bundle / LITE_FILE).exists()


def test_altered_model_keras_is_refused_even_when_the_copy_is_current(tiny_bundle, tmp_path):
    """The app, predict and evaluate all load through LitePredictor.from_dir: none serves a model whose
    model.keras no longer matches metadata.json, even from an intact model.tflite."""
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    assert is_current(bundle, read_metadata(bundle))
    with (bundle / "model.keras").open("ab") as handle:
        handle.write(b"x")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        LitePredictor.from_dir(bundle)


def test_damaged_metadata_is_a_model_integrity_error(tiny_bundle, tmp_path):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    (bundle / "metadata.json").write_text('{"version": "1", "created": ')
    with pytest.raises(ModelIntegrityError, match="damaged"):
        LitePredictor.from_dir(bundle)
    (bundle / "metadata.json").write_text('{"version": "1", "no_such_field": 2}')
    with pytest.raises(ModelIntegrityError, match="damaged"):
        LitePredictor.from_dir(bundle)


def test_serving_path_does_not_import_tensorflow(tiny_bundle, lesion_path):
    """The point of the LiteRT model: a prediction without importing TensorFlow (the app's cold start)."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from skin_model.data.imaging import load_image\n"
        "from skin_model.serving.lite import LitePredictor\n"
        f"predictor = LitePredictor.from_dir(Path({str(tiny_bundle)!r}))\n"
        f"probs = predictor.predict_probabilities([load_image(Path({str(lesion_path)!r}))])\n"
        "assert abs(probs.sum() - 1) < 1e-6, probs\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras_vis') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
