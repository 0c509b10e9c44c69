"""Serving never imports TensorFlow, Keras or tf-keras-vis, and needs only requirements-serve.txt.

One fresh process does what a user of the app and of the serving CLIs does: classifies an upload and draws its
Grad-CAM and Grad-CAM++ through the service, builds the case report, runs ``cli.predict`` (with overlays), opens
every page of the app with Streamlit's AppTest (an upload on Classify, its heatmap shown) and runs
``cli.evaluate``. It then reports which modules were loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pandas as pd
import pytest

from test_requirements import imported_modules, normalise, requirement_names

ROOT = Path(__file__).resolve().parent.parent
TENSORFLOW = ("tensorflow", "keras", "tf_keras_vis")

SERVING_RUN = r"""
import json, sys
from datetime import datetime, timezone
from pathlib import Path

weights, image, images_dir, labels, out = map(Path, sys.argv[1:6])
from skin_model.serving.case_report import CaseReport, render_pdf, render_png
from skin_model.serving.service import ClassifierService

service = ClassifierService.from_dir(weights)
analysis = service.analyse(image.read_bytes(), name=image.name)
for method in ("gradcam", "gradcam++"):
    explanation = service.explain(analysis, analysis.prediction.top_code, method)
    assert explanation.heatmap.max() > 0.99 and explanation.heatmap.min() < 0.01, method
report = CaseReport(file_name=image.name, view=explanation.view, overlay=explanation.overlay(0.4),
                    explained_class=explanation.class_code, method_name="Grad-CAM++",
                    prediction=analysis.prediction, model_version=service.metadata.version,
                    created=datetime(2026, 1, 1, tzinfo=timezone.utc), ood_note="off")
assert render_pdf(report).startswith(b"%PDF") and render_png(report).startswith(b"\x89PNG")

from skin_model.cli import predict
assert predict.main([str(image), "--json", "--weights", str(weights), "--overlay", str(out / "overlays")]) == 0

from streamlit.testing.v1 import AppTest
app = AppTest.from_file("app.py", default_timeout=240).run()
app.file_uploader(key="upload").set_value((image.name, image.read_bytes(), "image/jpeg")).run()
assert not app.exception, app.exception
assert [i for i in app.get("image") if any("Grad-CAM heatmap for" in (c or "") for c in i.captions)]
classify_loaded_sklearn = "sklearn" in sys.modules
app.switch_page("pages/batch.py").run()
assert not app.exception, app.exception
classify_loaded_sklearn |= "sklearn" in sys.modules
for page in ("pages/report.py", "pages/model_card.py"):
    app.switch_page(page).run()
    assert not app.exception, (page, app.exception)

from skin_model.cli import evaluate
assert evaluate.main(["--images", str(images_dir), "--labels", str(labels), "--weights", str(weights),
                      "--out", str(out / "evaluation.json")]) == 0

print(json.dumps({"tensorflow": sorted(m for m in TENSORFLOW_NAMES if m in sys.modules),
                  "classify_and_batch_loaded_sklearn": classify_loaded_sklearn,
                  "modules": sorted({name.split(".")[0] for name in sys.modules})}))
""".replace("TENSORFLOW_NAMES", repr(TENSORFLOW))


@pytest.fixture(scope="module")
def serving_run(tiny_bundle: Path, synthetic_ham: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("serving_run")
    labels = pd.read_csv(synthetic_ham / "HAM10000_metadata.csv").groupby("dx").head(1)
    labels[["image_id", "dx"]].to_csv(out / "labels.csv", index=False)
    image = synthetic_ham / "images_600x450" / "ISIC_0024306.jpg"
    env = {"SKIN_WEIGHTS_DIR": str(tiny_bundle), "SKIN_SAMPLES_DIR": str(out / "no-samples"),
           "PATH": "/usr/bin:/bin", "HOME": str(out)}
    result = subprocess.run([sys.executable, "-c", SERVING_RUN, str(tiny_bundle), str(image),
                             str(synthetic_ham / "images_200x150"), str(out / "labels.csv"), str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert list((out / "overlays").glob("*.png")), "predict saved its overlay"
    assert json.loads((out / "evaluation.json").read_text())["n_images"] == len(labels)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_serving_loads_no_tensorflow(serving_run):
    assert serving_run["tensorflow"] == []
    assert not set(TENSORFLOW) & set(serving_run["modules"])


def test_classify_and_batch_do_not_load_scikit_learn(serving_run):
    """The evaluation code's scikit-learn costs ~0.6 s of the first result and ~60 MB; only the report pages and
    the evaluate CLI need it."""
    assert serving_run["classify_and_batch_loaded_sklearn"] is False
    assert "sklearn" in serving_run["modules"], "the report pages and evaluate load it: the check can see it"


def test_the_pages_referral_target_is_the_one_thresholds_are_chosen_for():
    from skin_model.evaluation import metrics
    from skin_model.serving import verdict

    assert verdict.REFERRAL_TARGET_SENSITIVITY == metrics.REFERRAL_TARGET_SENSITIVITY


def test_what_serving_imports_is_in_requirements_serve(serving_run):
    """Every third-party module our code imports and the run loaded comes from requirements-serve.txt."""
    sources = [ROOT / "app.py", *sorted((ROOT / "skin_model").rglob("*.py")), *sorted((ROOT / "pages").rglob("*.py"))]
    ours = set(imported_modules(sources)) - {"skin_model", "pages", "__future__"} - set(sys.stdlib_module_names)
    loaded = ours & set(serving_run["modules"])
    assert {"numpy", "streamlit", "ai_edge_litert", "cv2", "scipy", "PIL", "fpdf"} <= loaded, "the run loads them"
    serve = requirement_names(ROOT / "requirements-serve.txt")
    providers = packages_distributions()
    missing = sorted(m for m in loaded if not {normalise(d) for d in providers.get(m, [])} & serve)
    assert missing == [], f"loaded when serving but not in requirements-serve.txt: {missing}"


def test_requirements_serve_has_no_tensorflow_and_training_includes_it():
    serve = requirement_names(ROOT / "requirements-serve.txt")
    assert not {"tensorflow", "tensorflow-cpu", "keras", "tf-keras-vis"} & serve
    training = requirement_names(ROOT / "requirements.txt")
    assert serve < training and {"tensorflow-cpu", "keras", "tf-keras-vis"} <= training
    assert "-r requirements-serve.txt" in (ROOT / "requirements.txt").read_text()
