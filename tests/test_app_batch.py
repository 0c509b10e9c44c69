"""The Batch page driven headlessly with Streamlit's AppTest (tiny bundle, with and without an OOD gate), with
synthetic lesion photos (tests/synthetic.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import markdown_html, markdown_text
from skin_model.bundle import SPLIT_FILE

APP = str(Path(__file__).resolve().parent.parent / "app.py")
BATCH_PAGE = "pages/batch.py"
TIMEOUT = 180  # seconds: model load and several predictions on a busy 2-core machine


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def lesion_files(gated_bundle: Path, synthetic_ham: Path) -> list[Path]:
    """Two test-split synthetic originals (not used to fit the gate)."""
    split = pd.read_csv(gated_bundle / SPLIT_FILE)
    ids = split.loc[split["split"] == "test", "image_id"].tolist()[:2]
    return [synthetic_ham / "images_600x450" / f"{i}.jpg" for i in ids]


@pytest.fixture(scope="module")
def astronaut() -> bytes:
    import skimage.data

    return png_bytes(Image.fromarray(skimage.data.astronaut()))


def open_batch_page(monkeypatch, bundle: Path) -> AppTest:
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(bundle))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page(BATCH_PAGE).run()
    assert not at.exception, at.exception
    return at


def upload_all(at: AppTest, files: list[tuple[str, bytes, str]]) -> AppTest:
    at.file_uploader(key="batch_upload").set_value(files).run()
    assert not at.exception, at.exception
    return at


def result_table(at: AppTest) -> pd.DataFrame:
    assert len(at.dataframe) == 1
    return at.dataframe[0].value


def test_one_row_per_file_and_bad_files_named(monkeypatch, gated_bundle, lesion_files, astronaut):
    from skin_model.serving.service import ClassifierService

    files = [(lesion_files[0].name, lesion_files[0].read_bytes(), "image/jpeg"),
             ("scan_of_letter.jpg", b"%PDF-1.4 not an image", "image/jpeg"),
             ("astronaut.png", astronaut, "image/png"),
             ("empty.png", b"", "image/png"),
             (lesion_files[1].name, lesion_files[1].read_bytes(), "image/jpeg")]
    at = upload_all(open_batch_page(monkeypatch, gated_bundle), files)
    table = result_table(at)
    assert table["File"].tolist() == [name for name, _, _ in files]
    rows = table.set_index("File")
    for bad in ("scan_of_letter.jpg", "empty.png"):
        assert rows.loc[bad, "Status"].startswith("error:"), bad
        assert pd.isna(rows.loc[bad, "Probability"])
    assert "not a recognised image" in rows.loc["scan_of_letter.jpg", "Status"]
    assert "empty" in rows.loc["empty.png", "Status"]
    errors = " ".join(markdown_text(e.value) for e in at.error)
    assert "scan_of_letter.jpg" in errors and "empty.png" in errors and "2 of 5" in errors
    # Good files: the page shows what the library computes, and the astronaut is flagged.
    service = ClassifierService.from_dir(gated_bundle)
    for path in lesion_files:
        expected = service.analyse(path.read_bytes(), name=path.name)
        row = rows.loc[path.name]
        assert row["Status"] == "ok" and row["Top class"] == expected.prediction.top_code
        assert float(row["Probability"]) == pytest.approx(expected.prediction.top_probability, abs=1e-5)
        assert float(row["Malignant (mel+bcc+akiec)"]) == pytest.approx(expected.prediction.malignant_probability,
                                                                        abs=1e-5)
        assert bool(row["Unsure"]) is expected.prediction.unsure
        assert bool(row["Not dermatoscopic"]) is expected.flagged_ood
    assert bool(rows.loc["astronaut.png", "Not dermatoscopic"]) is True
    assert any("astronaut.png" in markdown_text(w.value) and "dermatoscopic" in w.value for w in at.warning)
    assert [b.label for b in at.download_button] == ["Download the table (CSV)"]


def test_what_matters_comes_first_and_failed_rows_are_blank(monkeypatch, gated_bundle, lesion_files):
    files = [(lesion_files[0].name, lesion_files[0].read_bytes(), "image/jpeg"),
             ("broken.jpg", b"not an image", "image/jpeg")]
    at = upload_all(open_batch_page(monkeypatch, gated_bundle), files)
    table = result_table(at)
    columns = list(table.columns)
    for column in ("Probability", "Malignant (mel+bcc+akiec)", "Refer", "Not dermatoscopic", "Unsure"):
        assert columns.index(column) < min(columns.index("Status"), columns.index("Top category")), column
    assert table.loc[0, "Image"].startswith("data:image/jpeg;base64,"), "a thumbnail of the upload"
    failed = table.iloc[1]
    assert failed["Top class"] == "" and failed["Top category"] == ""
    assert all(pd.isna(failed[c]) for c in ("Image", "Probability", "Refer", "Not dermatoscopic", "Unsure"))
    assert "None" not in table.astype(str).to_string().replace("<NA>", ""), "no 'None' text in any cell"


def test_csv_carries_model_version_tta_and_the_referral(monkeypatch, gated_bundle, lesion_files, tmp_path):
    """The CSV names the model and TTA setting; Refer follows the referral threshold in metadata.json."""
    import json
    import shutil

    from skin_model.serving.service import ClassifierService

    path = lesion_files[0]
    malignant = ClassifierService.from_dir(gated_bundle).analyse(path.read_bytes()).prediction.malignant_probability
    bundle = Path(shutil.copytree(gated_bundle, tmp_path / "bundle"))
    meta = json.loads((bundle / "metadata.json").read_text())
    (bundle / "metadata.json").write_text(json.dumps({**meta, "referral_threshold": round(malignant - 0.01, 3)}))
    at = upload_all(open_batch_page(monkeypatch, bundle),
                    [(path.name, path.read_bytes(), "image/jpeg"), ("bad.png", b"xx", "image/png")])
    assert bool(result_table(at).loc[0, "Refer"]) is True
    from pages.batch import csv_bytes

    csv = pd.read_csv(io.BytesIO(csv_bytes(result_table(at), meta["version"], tta=False)), keep_default_na=False)
    assert list(csv.columns[:2]) == ["Model version", "TTA"] and "Image" not in csv.columns
    assert set(csv["Model version"]) == {meta["version"]} and set(csv["TTA"]) == {"off"}
    assert csv.loc[1, "Probability"] == "" and csv.loc[1, "Refer"] == "", "blank cells for the failed file"
    assert csv.loc[0, "Refer"] == "True"


def test_gradcam_of_a_chosen_row(monkeypatch, gated_bundle, lesion_files):
    files = [(p.name, p.read_bytes(), "image/jpeg") for p in lesion_files] + [("bad.png", b"xx", "image/png")]
    at = upload_all(open_batch_page(monkeypatch, gated_bundle), files)
    picker = at.selectbox(key="batch_cam_file")
    assert picker.options == [f"1. {lesion_files[0].name}", f"2. {lesion_files[1].name}"], "bad files excluded"
    picker.set_value(f"2. {lesion_files[1].name}").run()
    assert not at.exception
    captions = [c for img in at.get("image") for c in img.captions]
    assert any(lesion_files[1].name in markdown_text(c or "") for c in captions)
    row = result_table(at).set_index("File").loc[lesion_files[1].name]
    assert [c for c in captions if (c or "").startswith("Grad-CAM overlay")] == \
        [f"Grad-CAM overlay for {row['Top class']} ({float(row['Probability']):.1%})"]


def test_without_a_gate_the_flag_column_is_empty(monkeypatch, tiny_bundle, lesion_files):
    at = upload_all(open_batch_page(monkeypatch, tiny_bundle),
                    [(lesion_files[0].name, lesion_files[0].read_bytes(), "image/jpeg")])
    table = result_table(at)
    assert len(table) == 1 and table["Not dermatoscopic"].isna().all()
    assert any("check is off" in w.value and "no ood.npz" in w.value for w in at.warning)


def test_tta_toggle_changes_the_probabilities_to_the_averaged_views(monkeypatch, tiny_bundle, lesion_files):
    from skin_model.data.imaging import load_image
    from skin_model.serving.inference import Predictor

    path = lesion_files[0]
    at = upload_all(open_batch_page(monkeypatch, tiny_bundle), [(path.name, path.read_bytes(), "image/jpeg")])
    at.toggle(key="batch_tta").set_value(True).run()
    assert not at.exception
    expected = Predictor.from_dir(tiny_bundle).predict_probabilities([load_image(path)], tta=True)[0]
    assert float(result_table(at)["Probability"].iloc[0]) == pytest.approx(expected.max(), abs=1e-5)



def test_file_names_are_data_not_markup_or_formulas(monkeypatch, tiny_bundle, lesion_files):
    import streamlit

    offered = {}
    original = streamlit.download_button

    def spy(label, data, *args, **kwargs):
        offered[label] = data
        return original(label, data, *args, **kwargs)

    monkeypatch.setattr(streamlit, "download_button", spy)
    lesion = lesion_files[0].read_bytes()
    markup = "![px](http://host/pixel.png) [site](http://host/).jpg"
    formulas = ['=HYPERLINK("http://host","open").jpg', "+1+1.jpg", "-2.jpg", "@SUM(A1).jpg"]
    files = [(markup, b"not an image", "image/jpeg"), (formulas[0], b"", "image/jpeg")]
    files += [(name, lesion, "image/jpeg") for name in formulas[1:]]
    at = upload_all(open_batch_page(monkeypatch, tiny_bundle), files)
    messages = [e.value for e in at.error] + [w.value for w in at.warning]
    for message in messages:
        assert "<img" not in markdown_html(message) and "<a " not in markdown_html(message), message
    shown = " ".join(markdown_text(e.value) for e in at.error)
    assert markup in shown and formulas[0] in shown, "the names are shown as given"
    assert result_table(at)["File"].tolist() == [name for name, _, _ in files], "the table shows them as given"
    csv = pd.read_csv(io.BytesIO(offered["Download the table (CSV)"]))
    assert csv["File"].tolist() == [markup] + ["'" + name for name in formulas]
    assert not any(str(cell).startswith(("=", "+", "-", "@")) for column in csv for cell in csv[column])


def test_a_withheld_result_is_blank_until_asked_for(monkeypatch, gated_bundle, lesion_files, astronaut):
    """The verdict withholds the result of an image that is not dermatoscopic, on Batch as on Classify."""
    from skin_model.serving.service import ClassifierService

    files = [("astronaut.png", astronaut, "image/png"),
             (lesion_files[0].name, lesion_files[0].read_bytes(), "image/jpeg")]
    at = upload_all(open_batch_page(monkeypatch, gated_bundle), files)
    row, lesion = result_table(at).iloc[0], result_table(at).iloc[1]
    assert bool(row["Not dermatoscopic"]) is True and "result withheld" in row["Note"]
    assert row["Top class"] == "" and pd.isna(row["Probability"]) and pd.isna(row["Refer"])
    assert lesion["Top class"] != "" and not pd.isna(lesion["Probability"]), "other rows are not affected"
    at.checkbox(key="batch_show_withheld").check().run()
    row = result_table(at).iloc[0]
    expected = ClassifierService.from_dir(gated_bundle).analyse(astronaut, name="astronaut.png").prediction
    assert row["Top class"] == expected.top_code and "shown on request" in row["Note"]
    assert float(row["Probability"]) == pytest.approx(expected.top_probability, abs=1e-5)
