"""The served LiteRT copy: same predictions, OOD features and Grad-CAM feature map as the Keras model, and the
head's weights beside it; serving refuses a copy or head that is missing, altered, stale or of an older format
(building is an explicit step: the lite CLI and `make app` rebuild it), never builds from an altered model.keras
or for a head the closed-form Grad-CAM does not hold for, and runs without TensorFlow."""

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
from skin_model.bundle import (HEAD_FILE, LITE_FILE, LITE_INFO_FILE, ModelIntegrityError, UnsupportedHeadError,
                               read_metadata, sha256_of)
from skin_model.cli.lite import main
from skin_model.serving.lite import LitePredictor, build_lite, ensure_lite, is_current

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
    import keras

    from skin_model.model import LAST_CONV_LAYER

    maps = lite.run(lesion_batch, tta=True, feature_maps=True).feature_maps  # the identity view's, with TTA
    keras_maps = keras.Model(keras_predictor.model.inputs,
                             keras_predictor.model.get_layer(LAST_CONV_LAYER).output).predict_on_batch(lesion_batch)
    assert maps.shape == keras_maps.shape == (len(lesion_batch), 3, 3, 1280)
    np.testing.assert_allclose(maps, keras_maps, rtol=1e-4, atol=1e-4 * np.abs(keras_maps).max())
    np.testing.assert_allclose(lite.run(lesion_batch, feature_maps=True).feature_maps, maps)
    assert lite.run(lesion_batch).feature_maps is None, "kept only when asked for"
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
    (bundle / HEAD_FILE).unlink()
    rebuilt_and_equal(f"{HEAD_FILE}, the head's weights for Grad-CAM, is missing")


def test_a_tampered_head_file_is_refused(tiny_bundle, tmp_path):
    """One changed weight in head.npz would silently change every heatmap: the app, predict and localisation
    refuse it by its sha256 in model.tflite.json."""
    from skin_model.serving.service import ClassifierService

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    with np.load(bundle / HEAD_FILE) as data:
        fields = {name: data[name] for name in data.files}
    fields["kernel"][0, 0] += 0.5
    np.savez(bundle / HEAD_FILE, **fields)
    for load in (LitePredictor.from_dir, ClassifierService.from_dir):
        with pytest.raises(ModelIntegrityError, match=f"{HEAD_FILE} has sha256 .* altered or damaged.*"
                                                      "python -m skin_model.cli.lite"):
            load(bundle)
    assert main(["--check", "--weights", str(bundle)]) == 1


def test_a_head_file_describing_another_head_is_refused_by_name(tiny_bundle, tmp_path):
    """Even with its sha256 recorded, a head.npz for layers other than pooling + dropout + dense is refused:
    the closed form would be wrong for it."""
    from skin_model.bundle import read_head

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    with np.load(bundle / HEAD_FILE) as data:
        fields = {name: data[name] for name in data.files}
    np.savez(bundle / HEAD_FILE, **{**fields, "layers": np.array(["GlobalMaxPooling2D", "Dense"])})
    info = json.loads((bundle / LITE_INFO_FILE).read_text())
    (bundle / LITE_INFO_FILE).write_text(json.dumps({**info, "head_sha256": sha256_of(bundle / HEAD_FILE)}))
    message = "GlobalMaxPooling2D \\+ Dense; closed-form Grad-CAM needs GlobalAveragePooling2D \\+ Dropout \\+ Dense"
    with pytest.raises(UnsupportedHeadError, match=message):
        read_head(bundle, sha256_of(bundle / HEAD_FILE))
    with pytest.raises(UnsupportedHeadError, match=message):
        LitePredictor.from_dir(bundle)


def test_a_model_with_another_head_is_refused_before_building(tmp_path, caplog):
    """No closed form for a head of two dense layers: the build names the layers and writes nothing."""
    import keras

    from skin_model.bundle import ModelMetadata
    from skin_model.model import LAST_CONV_LAYER, save_bundle
    from synthetic import random_classifier

    base = random_classifier(TINY_SIZE, 0)
    x = keras.layers.GlobalAveragePooling2D()(base.get_layer(LAST_CONV_LAYER).output)
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = keras.layers.Dense(7, activation="softmax")(x)
    save_bundle(keras.Model(base.inputs, outputs), ModelMetadata(version="other", created="2026-01-01",
                                                                 input_size=TINY_SIZE), tmp_path)
    message = "are GlobalAveragePooling2D \\+ Dense \\+ Dense; closed-form Grad-CAM needs"
    with pytest.raises(UnsupportedHeadError, match=message):
        build_lite(tmp_path)
    assert not (tmp_path / LITE_FILE).exists() and not (tmp_path / HEAD_FILE).exists()
    with caplog.at_level(logging.ERROR, logger="skin_model.cli.lite"):
        assert main(["--weights", str(tmp_path)]) == 1
    assert any("closed-form Grad-CAM needs GlobalAveragePooling2D + Dropout + Dense" in r.message
               for r in caplog.records)


def test_an_older_copy_without_the_feature_map_is_stale_and_rebuilt(tiny_bundle, tmp_path, lesion_batch):
    """A copy built before the feature-map output (two outputs, a record without a format) is refused with the
    rebuild command, reported by --check without TensorFlow, and rebuilt by the lite CLI."""
    import keras

    from skin_model.model import OOD_FEATURE_LAYER, load_bundle

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    (bundle / HEAD_FILE).unlink()
    model, meta = load_bundle(bundle)
    pooled = keras.layers.GlobalAveragePooling2D()(model.get_layer(OOD_FEATURE_LAYER).output)
    keras.Model(model.inputs, [model.outputs[0], pooled]).export(str(bundle / LITE_FILE), format="litert",
                                                                 verbose=False)
    (bundle / LITE_INFO_FILE).write_text(json.dumps({"source_file": "model.keras", "source_sha256": meta.model_sha256,
                                                     "sha256": sha256_of(bundle / LITE_FILE)}))
    with pytest.raises(ModelIntegrityError,
                       match="older format .* no feature-map output .*python -m skin_model.cli.lite"):
        LitePredictor.from_dir(bundle)
    with pytest.raises(ModelIntegrityError, match="does not have the expected outputs"):  # whatever its record says
        LitePredictor(bundle / LITE_FILE, meta)
    assert main(["--check", "--weights", str(bundle)]) == 1
    assert main(["--weights", str(bundle)]) == 0
    assert main(["--check", "--weights", str(bundle)]) == 0
    rebuilt = LitePredictor.from_dir(bundle)
    assert rebuilt.run(lesion_batch, feature_maps=True).feature_maps.shape == (len(lesion_batch), 3, 3, 1280)


def test_check_needs_no_tensorflow_and_make_builds_only_a_stale_copy(tiny_bundle, tmp_path):
    """`make app`'s build step: `cli.lite --check` (no TensorFlow) decides; requirements.txt and the build
    run only when the copy must be built. PIP="echo pip" stands in for the installs and says which ran."""
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    code = ("import sys\nfrom skin_model.cli.lite import main\nstatus = main(sys.argv[1:])\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras_vis') if m in sys.modules))\n"
            "sys.exit(status)\n")

    def check(weights: Path) -> tuple[int, str]:
        result = subprocess.run([sys.executable, "-c", code, "--check", "--weights", str(weights)], cwd=PROJECT,
                                capture_output=True, text=True, timeout=120)
        assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
        return result.returncode, result.stderr

    assert check(bundle)[0] == 0
    (bundle / LITE_FILE).unlink()
    status, log = check(bundle)
    assert status == 1 and "model.tflite is missing" in log
    assert check(tmp_path / "nowhere")[0] == 2

    def make() -> subprocess.CompletedProcess:
        return subprocess.run(["make", "serving-model", f"WEIGHTS={bundle}", "PIP=echo pip",
                               f"PYTHON={sys.executable}"], cwd=PROJECT, capture_output=True, text=True, timeout=600)

    built = make()
    assert built.returncode == 0, built.stdout + built.stderr
    assert "pip install -q -r requirements-serve.txt" in built.stdout
    assert "pip install -q -r requirements.txt" in built.stdout, "TensorFlow's requirements are installed to build"
    assert is_current(bundle, read_metadata(bundle))
    again = make()
    assert again.returncode == 0 and "requirements.txt" not in again.stdout, "an up-to-date copy needs no TensorFlow"
    with (bundle / "model.keras").open("ab") as handle:
        handle.write(b"x")
    refused = make()
    assert refused.returncode == 2 and "sha256" in refused.stderr and "requirements.txt" not in refused.stdout


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
