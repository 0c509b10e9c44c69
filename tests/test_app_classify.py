"""The Classify page driven headlessly with Streamlit's AppTest, serving the tiny bundle, with synthetic
lesion photos (tests/synthetic.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import markdown_html, markdown_text
from skin_model.labels import CODES, by_code

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 120  # seconds: model load and predictions on a busy 2-core machine


@pytest.fixture(scope="module")
def image_bytes(lesion_path: Path) -> bytes:
    return lesion_path.read_bytes()


@pytest.fixture()
def app(monkeypatch, tiny_bundle: Path, tmp_path: Path) -> AppTest:
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(tiny_bundle))
    monkeypatch.setenv("SKIN_SAMPLES_DIR", str(tmp_path / "no-samples"))  # sample picker hidden
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, name: str, data: bytes, mime: str = "image/jpeg") -> AppTest:
    at.file_uploader(key="upload").set_value((name, data, mime)).run()
    assert not at.exception, at.exception
    return at


def displayed_probabilities(at: AppTest) -> dict[str, float]:
    assert len(at.dataframe) == 1
    table = at.dataframe[0].value
    return dict(zip(table["Code"], table["Probability"].astype(float)))


def images_with_caption(at: AppTest, word: str) -> list:
    return [img for img in at.get("image") if any(word in (c or "") for c in img.captions)]


def test_sidebar_shows_version_and_disclaimer(app):
    sidebar_text = " ".join(str(getattr(el, "value", "")) for el in app.sidebar)
    assert "test (96 px" in sidebar_text, "model version from metadata.json"
    assert "not a medical device" in sidebar_text.lower()
    assert "education and research" in sidebar_text.lower()


def test_upload_shows_calibrated_prediction_and_gradcam(app, image_bytes, tiny_bundle, lesion_path):
    from skin_model.data.imaging import load_image
    from skin_model.serving.inference import Predictor

    upload(app, lesion_path.name, image_bytes)
    assert not app.error, [e.value for e in app.error]
    probs = displayed_probabilities(app)
    assert set(probs) == set(CODES)
    assert sum(probs.values()) == pytest.approx(1.0, abs=0.01)
    top = max(probs, key=probs.get)
    markdown = "\n".join(m.value for m in app.markdown)
    assert f"{by_code(top).name} (`{top}`)" in markdown
    assert f"{probs[top]:.1%}" in markdown
    # The page shows what the library computes for the same file.
    expected = Predictor.from_dir(tiny_bundle).predict(load_image(lesion_path))
    assert expected.top_code == top
    np.testing.assert_allclose([probs[c] for c in CODES], expected.probabilities, atol=1e-5)
    # Malignant roll-up is the sum of mel, bcc and akiec.
    metrics = {m.label: m.value for m in app.metric}
    malignant = next(v for k, v in metrics.items() if k.startswith("Malignant"))
    assert malignant == f"{probs['mel'] + probs['bcc'] + probs['akiec']:.1%}"
    # Top-3 differential in order.
    differential = next(m.value for m in app.markdown if m.value.startswith("1. "))
    ranked = sorted(probs, key=probs.get, reverse=True)[:3]
    assert [re.search(r"\(`(\w+)`\)", line).group(1) for line in differential.splitlines()] == ranked
    # Grad-CAM: the original, the heatmap (for the top class by default) and the overlay.
    assert images_with_caption(app, f"Grad-CAM heatmap for {top}")
    overlay = images_with_caption(app, "Overlay")
    assert overlay and overlay[0].value[0], "the overlay image has a URL"
    assert app.selectbox(key="cam_class").value == top


def test_gradcam_controls(app, image_bytes, lesion_path):
    upload(app, lesion_path.name, image_bytes)
    app.radio(key="cam_method").set_value("gradcam++").run()
    other = app.selectbox(key="cam_class").options[-1]
    code = re.search(r"\((\w+),", other).group(1)
    app.selectbox(key="cam_class").set_value(code).run()
    app.slider(key="cam_alpha").set_value(0.8).run()
    assert not app.exception and not app.error
    assert images_with_caption(app, f"Grad-CAM++ heatmap for {code}")
    assert images_with_caption(app, "Overlay (opacity 0.80)")


def test_bad_file_shows_error_then_good_upload_works(app, image_bytes, lesion_path):
    upload(app, "referral.jpg", b"%PDF-1.4 not an image", "image/jpeg")
    errors = [markdown_text(e.value) for e in app.error]
    assert len(errors) == 1 and "referral.jpg" in errors[0] and "not a recognised image" in errors[0]
    assert not images_with_caption(app, "Overlay")
    upload(app, "empty.png", b"", "image/png")
    assert "empty" in app.error[0].value
    upload(app, lesion_path.name, image_bytes)
    assert not app.error
    assert sum(displayed_probabilities(app).values()) == pytest.approx(1.0, abs=0.01)
    assert images_with_caption(app, "Overlay")


def _bundle_with_threshold(src: Path, dst: Path, threshold: float) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    meta["unsure_threshold"] = threshold
    (dst / "metadata.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize("threshold, unsure", [(0.999, True), (0.0, False)])
def test_unsure_warning_follows_the_model_threshold(monkeypatch, tiny_bundle, tmp_path, image_bytes,
                                                    lesion_path, threshold, unsure):
    bundle = _bundle_with_threshold(tiny_bundle, tmp_path / "bundle", threshold)
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(bundle))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    upload(at, lesion_path.name, image_bytes)
    warnings = [w.value for w in at.warning if "unsure" in w.value]
    assert bool(warnings) is unsure
    if unsure:
        assert "assessed by a clinician" in warnings[0]


def test_missing_bundle_shows_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "cannot be loaded" in at.error[0].value and "metadata.json" in at.error[0].value
    assert len(at.file_uploader) == 0


def test_tampered_bundle_fails_the_sha256_check(monkeypatch, tiny_bundle, tmp_path):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    with (bundle / "model.keras").open("ab") as handle:
        handle.write(b"tampered")
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(bundle))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "cannot be loaded" in at.error[0].value and "sha256" in at.error[0].value


def test_sample_picker_lists_images_and_classifies_one(monkeypatch, tiny_bundle, synthetic_ham):
    from skin_model import config

    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(tiny_bundle))
    monkeypatch.setenv("SKIN_SAMPLES_DIR", str(synthetic_ham / "images_600x450"))
    monkeypatch.setattr(config, "DEFAULT_DATA_DIR", synthetic_ham)  # where the page reads the references
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    import pandas as pd

    picker = at.selectbox(key="sample")
    split = pd.read_csv(tiny_bundle / "split.csv") if (tiny_bundle / "split.csv").exists() else None
    assert split is None, "the tiny bundle has no split.csv: the split is unknown"
    assert "ISIC_0024306.jpg (nv, split unknown)" in picker.options, "each sample names its reference"
    picker.set_value("ISIC_0024306.jpg").run()
    assert not at.exception and not at.error
    assert sum(displayed_probabilities(at).values()) == pytest.approx(1.0, abs=0.01)
    assert any("Reference diagnosis" in c.value and "`nv`" in c.value for c in at.caption)
    assert any("Classifying the HAM10000 sample **ISIC_0024306.jpg**" in c.value for c in at.caption)


def test_samples_name_their_split_and_an_upload_takes_over(monkeypatch, gated_bundle, synthetic_ham, image_bytes,
                                                           lesion_path):
    """With the bundle's split.csv each sample names its split, a training image says so, and an upload
    chosen after a sample is the one classified (the sample choice is cleared)."""
    import pandas as pd

    split = pd.read_csv(gated_bundle / "split.csv").set_index("image_id")
    available = {p.stem for p in (synthetic_ham / "images_600x450").glob("*.jpg")}
    train_id = next(i for i in split.index[split["split"] == "train"] if i in available)
    test_id = next(i for i in split.index[split["split"] == "test"] if i in available)
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(gated_bundle))
    monkeypatch.setenv("SKIN_SAMPLES_DIR", str(synthetic_ham / "images_600x450"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    options = at.selectbox(key="sample").options
    assert f"{train_id}.jpg ({split.loc[train_id, 'dx']}, training split)" in options
    assert f"{test_id}.jpg ({split.loc[test_id, 'dx']}, test split)" in options
    at.selectbox(key="sample").set_value(f"{train_id}.jpg").run()
    assert any("trained on this image" in c.value for c in at.caption)
    upload(at, lesion_path.name, image_bytes)
    assert any(f"Classifying the uploaded file **{lesion_path.name}**" in c.value for c in at.caption)
    assert at.selectbox(key="sample").value == "— none —", "the upload replaced the sample"


def test_sample_picker_hidden_without_a_folder(app):
    assert not [s for s in app.selectbox if s.key == "sample"]


# ---------------------------------------------------------------------------------------------- service
@pytest.fixture(scope="module")
def service(tiny_bundle):
    from skin_model.serving.service import ClassifierService

    return ClassifierService.from_dir(tiny_bundle)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_with_tta_the_heatmap_is_the_identity_views(service, image_bytes, method):
    """Test-time augmentation averages the prediction over 8 views; the heatmap stays that of the image as
    given (the identity view's feature map from the same LiteRT call). Closed form against tf-keras-vis:
    test_explain.py."""
    single = service.analyse(image_bytes, name="x.jpg", tta=False)
    averaged = service.analyse(image_bytes, name="x.jpg", tta=True)
    assert averaged.tta and not single.tta
    assert np.abs(np.subtract(averaged.prediction.probabilities, single.prediction.probabilities)).max() > 1e-4
    np.testing.assert_allclose(averaged.feature_map, single.feature_map, rtol=1e-5, atol=1e-5)
    for code in CODES:
        np.testing.assert_allclose(service.explain(averaged, code, method).heatmap,
                                   service.explain(single, code, method).heatmap, atol=1e-4)


def test_service_is_consistent_across_threads(service, image_bytes):
    from concurrent.futures import ThreadPoolExecutor

    analysis = service.analyse(image_bytes, name="x.jpg")
    expected = {code: service.explain(analysis, code).heatmap for code in ("mel", "nv", "bcc")}

    def work(code: str):
        return code, service.analyse(image_bytes).prediction, service.explain(analysis, code).heatmap

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(work, ["mel", "nv", "bcc"] * 4))
    for code, prediction, heatmap in results:
        assert prediction.probabilities == pytest.approx(analysis.prediction.probabilities, abs=1e-6)
        np.testing.assert_allclose(heatmap, expected[code], atol=1e-6)


def test_uploads_are_not_written_to_disk(service, image_bytes, tmp_path, monkeypatch):
    """Analysing and explaining an upload creates no file (checked in an empty working directory)."""
    monkeypatch.chdir(tmp_path)
    before = set(Path("/tmp").iterdir())
    analysis = service.analyse(image_bytes, name="private.jpg")
    service.explain(analysis, analysis.prediction.top_code).overlay(0.5)
    assert list(tmp_path.iterdir()) == []
    assert not [p for p in set(Path("/tmp").iterdir()) - before if "private" in p.name]


def test_new_upload_explains_its_own_top_class(app, image_bytes, lesion_path, synthetic_ham):
    upload(app, lesion_path.name, image_bytes)
    least_likely = app.selectbox(key="cam_class").options[-1]
    code = re.search(r"\((\w+),", least_likely).group(1)
    app.selectbox(key="cam_class").set_value(code).run()
    assert app.selectbox(key="cam_class").value == code
    other = sorted((synthetic_ham / "images_600x450").glob("*.jpg"))[5]
    upload(app, other.name, other.read_bytes())
    probs = displayed_probabilities(app)
    top = max(probs, key=probs.get)
    assert app.selectbox(key="cam_class").value == top
    assert images_with_caption(app, f"heatmap for {top}")


# ---------------------------------------------------------------------------------------------- safety features
OOD_WARNING = "does not look like a dermatoscopic image"


@pytest.fixture(scope="module")
def astronaut_png() -> bytes:
    import io

    import skimage.data
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buffer, format="PNG")
    return buffer.getvalue()


def gated_app(monkeypatch, bundle: Path, tmp_path: Path) -> AppTest:
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(bundle))
    monkeypatch.setenv("SKIN_SAMPLES_DIR", str(tmp_path / "no-samples"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def test_without_a_gate_the_check_is_said_to_be_off(app, image_bytes, lesion_path):
    upload(app, lesion_path.name, image_bytes)
    off = [w.value for w in app.warning if "check is off" in w.value]
    assert len(off) == 1 and "no ood.npz has been fitted" in off[0], "a visible warning naming the reason"
    assert not [w for w in app.warning if OOD_WARNING in w.value]
    assert len(app.dataframe) == 1, "the diagnosis is shown as before"


def test_flagged_image_warns_first_and_hides_the_diagnosis(monkeypatch, gated_bundle, tmp_path, astronaut_png):
    at = upload(gated_app(monkeypatch, gated_bundle, tmp_path), "holiday.png", astronaut_png, "image/png")
    warnings = [w.value for w in at.warning if OOD_WARNING in w.value]
    assert len(warnings) == 1 and "no result is shown" in warnings[0]
    assert not at.dataframe and not at.metric and not at.subheader
    assert not at.download_button, "no case report for a hidden result"
    at.checkbox(key="ood_show").check().run()
    assert not at.exception
    assert len(at.dataframe) == 1 and sum(displayed_probabilities(at).values()) == pytest.approx(1.0, abs=0.01)
    in_page_order = [str(getattr(node, "value", "")) for node in at.main]
    first_warning = next(i for i, text in enumerate(in_page_order) if OOD_WARNING in text)
    first_result = next(i for i, text in enumerate(in_page_order) if text in (
        "Model's top category", "Unsure - refer for assessment"))
    assert first_warning < first_result, "the warning comes before the result"
    warnings = [w.value for w in at.warning if OOD_WARNING in w.value]
    assert len(warnings) == 1 and "no result is shown" not in warnings[0], "the text matches what is shown"
    assert "marked unreliable" in warnings[0]
    assert any("Unreliable result" in e.value for e in at.error), "the shown result is marked unreliable"


def test_dermoscopic_image_passes_the_gate(monkeypatch, gated_bundle, tmp_path, synthetic_ham):
    import pandas as pd

    split = pd.read_csv(gated_bundle / "split.csv")
    held_out = split.loc[split["split"] == "test", "image_id"].iloc[0]
    path = synthetic_ham / "images_600x450" / f"{held_out}.jpg"
    at = upload(gated_app(monkeypatch, gated_bundle, tmp_path), path.name, path.read_bytes())
    assert not [w for w in at.warning if OOD_WARNING in w.value]
    assert any("Dermatoscopic-image check: passed" in c.value for c in at.caption)
    assert len(at.dataframe) == 1


def test_tta_toggle_shows_the_averaged_prediction(app, image_bytes, tiny_bundle, lesion_path):
    from skin_model.data.imaging import load_image
    from skin_model.serving.inference import Predictor

    upload(app, lesion_path.name, image_bytes)
    assert app.toggle(key="tta").value is False, "off by default for a model whose metadata says so"
    plain = displayed_probabilities(app)
    app.toggle(key="tta").set_value(True).run()
    assert not app.exception
    expected = Predictor.from_dir(tiny_bundle).predict_probabilities([load_image(lesion_path)], tta=True)[0]
    shown = displayed_probabilities(app)
    np.testing.assert_allclose([shown[c] for c in CODES], expected, atol=1e-5)
    assert not np.allclose([shown[c] for c in CODES], [plain[c] for c in CODES], atol=1e-4)


def test_tta_is_on_by_default_when_the_model_says_so(monkeypatch, tiny_bundle, tmp_path, image_bytes,
                                                    lesion_path):
    import json

    from skin_model.data.imaging import load_image
    from skin_model.serving.inference import Predictor

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    meta = json.loads((bundle / "metadata.json").read_text())
    (bundle / "metadata.json").write_text(json.dumps({**meta, "test_time_augmentation": True}))
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(bundle))
    monkeypatch.setenv("SKIN_SAMPLES_DIR", str(tmp_path / "no-samples"))
    at = upload(AppTest.from_file(APP, default_timeout=TIMEOUT).run(), lesion_path.name, image_bytes)
    assert at.toggle(key="tta").value is True
    expected = Predictor.from_dir(bundle).predict_probabilities([load_image(lesion_path)], tta=True)[0]
    shown = displayed_probabilities(at)
    np.testing.assert_allclose([shown[c] for c in CODES], expected, atol=1e-5)


def prepare_report(at: AppTest) -> AppTest:
    at.toggle(key="report_wanted").set_value(True).run()
    assert not at.exception, at.exception
    return at


def test_case_report_is_made_when_asked_for_then_kept_for_the_image(monkeypatch, app, image_bytes, lesion_path,
                                                                    synthetic_ham):
    """Rendering the PDF and PNG costs more than the prediction and heatmap: only once asked for, then for every
    change on the same image (class, method, opacity); a new image starts with the switch off."""
    import skin_model.serving.case_report as case_report

    rendered: list[str] = []
    original = case_report.render_png
    # Each run of the page imports render_png anew from the module.
    monkeypatch.setattr(case_report, "render_png", lambda report: rendered.append(report.explained_class)
                        or original(report))
    upload(app, lesion_path.name, image_bytes)
    assert not app.download_button and rendered == [], "nothing rendered before it is asked for"
    prepare_report(app)
    assert [b.label for b in app.download_button] == ["Download case report (PDF)", "Download case report (PNG)"]
    assert len(rendered) == 1
    other_class = app.selectbox(key="cam_class").options[1]
    app.selectbox(key="cam_class").set_value(re.search(r"\((\w+),", other_class).group(1)).run()
    assert len(app.download_button) == 2 and len(rendered) == 2, "kept up to date for this image"
    other = sorted((synthetic_ham / "images_600x450").glob("*.jpg"))[5]
    upload(app, other.name, other.read_bytes())
    assert not app.download_button and app.toggle(key="report_wanted").value is False and len(rendered) == 2


HOSTILE_NAME = "![px](http://host/pixel.png) [site](http://host/).jpg"


def test_file_names_are_shown_as_text_not_markup(app, image_bytes):
    """A name with Markdown image and link syntax made the browser fetch the image and render the link."""
    upload(app, HOSTILE_NAME, b"not an image", "image/jpeg")
    (error,) = app.error
    assert "<img" not in markdown_html(error.value) and "<a " not in markdown_html(error.value)
    assert HOSTILE_NAME in markdown_text(error.value)
    upload(app, HOSTILE_NAME, image_bytes)
    captions = [c for img in app.get("image") for c in img.captions if c and "as uploaded" in c]
    assert len(captions) == 1 and "<img" not in markdown_html(captions[0]) and "<a " not in markdown_html(captions[0])
    assert markdown_text(captions[0]).startswith(HOSTILE_NAME)


def test_method_radio_shows_the_method_in_use_after_a_new_upload(app, image_bytes, lesion_path, synthetic_ham):
    """With Grad-CAM++ chosen, a new upload showed "Grad-CAM" on the radio but a Grad-CAM++ heatmap (the
    browser had re-created the widget at its default). The browser is now sent the value on every run."""
    from skin_model.serving.explain import METHODS

    upload(app, lesion_path.name, image_bytes)
    app.radio(key="cam_method").set_value("gradcam++").run()
    other = sorted((synthetic_ham / "images_600x450").glob("*.jpg"))[5]
    upload(app, other.name, other.read_bytes())
    radio = app.radio(key="cam_method")
    assert radio.value == "gradcam++" and images_with_caption(app, "Grad-CAM++ heatmap")
    assert radio.proto.set_value and radio.proto.raw_value == METHODS["gradcam++"], \
        f"the browser is told which method is shown ({radio.proto})"
    radio.set_value("gradcam").run()
    assert images_with_caption(app, "Grad-CAM heatmap") and not images_with_caption(app, "Grad-CAM++ heatmap")


def test_case_report_is_offered_as_bytes_that_survive_a_rerun(monkeypatch, app, image_bytes, lesion_path):
    """A file generated on click vanished when the click came during a rerun ("Deferred file not found").
    The page now hands Streamlit the bytes, the same bytes (same URL) on every rerun for the same report."""
    from streamlit.delta_generator import DeltaGenerator

    offered: dict[str, list] = {}
    original = DeltaGenerator.download_button

    def spy(self, label, data, *args, **kwargs):  # the page calls it on its columns
        offered.setdefault(label, []).append(data)
        return original(self, label, data, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", spy)
    prepare_report(upload(app, lesion_path.name, image_bytes))
    app.run()
    for label in ("Download case report (PDF)", "Download case report (PNG)"):
        first, *rest = offered[label]
        assert isinstance(first, bytes) and len(first) > 10_000, "bytes, not a callable run on click"
        assert rest and all(data == first for data in rest), "identical on rerun"
    assert offered["Download case report (PDF)"][0].startswith(b"%PDF-")
# ---------------------------------------------------------------------------------------------- result layout
def _bundle_with(src: Path, dst: Path, **fields) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    (dst / "metadata.json").write_text(json.dumps({**meta, **fields}))
    return dst


def _main_texts(at: AppTest) -> list[str]:
    return [str(getattr(node, "value", "")) for node in at.main]


def test_unsure_result_leads_with_refer_then_the_top_category(monkeypatch, tiny_bundle, tmp_path, image_bytes,
                                                              lesion_path):
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(_bundle_with(tiny_bundle, tmp_path / "b", unsure_threshold=0.999)))
    at = upload(AppTest.from_file(APP, default_timeout=TIMEOUT).run(), lesion_path.name, image_bytes)
    subheaders = [s.value for s in at.subheader]
    assert subheaders[0] == "Unsure - refer for assessment" and "Model's top category" not in subheaders
    texts = _main_texts(at)
    top_line = next(i for i, t in enumerate(texts) if t.startswith("Model's top category (low confidence)"))
    assert texts.index("Unsure - refer for assessment") < top_line
    assert not any("diagnosis" in t.lower() for t in subheaders)


@pytest.mark.parametrize("offset, refer", [(-0.01, True), (0.01, False), (None, None)])
def test_referral_cue_follows_the_threshold_in_metadata(monkeypatch, tiny_bundle, tmp_path, image_bytes,
                                                        lesion_path, offset, refer):
    """The referral threshold is read from metadata.json: just below this image's malignant roll-up the
    page says refer, just above it says below, and a bundle without one shows no cue."""
    from skin_model.serving.inference import Predictor, format_probability
    from skin_model.data.imaging import load_image

    malignant = Predictor.from_dir(tiny_bundle).predict(load_image(lesion_path)).malignant_probability
    threshold = None if offset is None else round(malignant + offset, 3)
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(_bundle_with(tiny_bundle, tmp_path / "b",
                                                            referral_threshold=threshold)))
    at = upload(AppTest.from_file(APP, default_timeout=TIMEOUT).run(), lesion_path.name, image_bytes)
    cues = [e.value for e in at.error if "referral threshold" in e.value] + \
           [i.value for i in at.info if "referral threshold" in i.value]
    if refer is None:
        assert not cues
        return
    assert len(cues) == 1
    expected = (f"Malignant probability {format_probability(malignant)} is "
                f"{'above' if refer else 'below'} the referral threshold {format_probability(threshold)}")
    assert expected in cues[0]
    assert cues[0].startswith("**Refer.**") is refer


def test_disclaimer_and_how_to_read_are_in_the_main_column(app, image_bytes, lesion_path):
    upload(app, lesion_path.name, image_bytes)
    assert any("Not a medical device" in c.value for c in app.main.caption)
    guide = next(e for e in app.expander if e.label == "How to read this")
    text = " ".join(m.value for m in guide.markdown)
    assert "Calibrated probability" in text and "not a lesion outline" in text and "hair" in text
