"""Case report: a one-page PDF and a PNG built in memory from the tiny bundle's analysis of a synthetic lesion."""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skin_model.serving.case_report import DISCLAIMER, PNG_SIZE, CaseReport, file_stem, render_pdf, render_png
from skin_model.labels import by_code

CREATED = datetime(2026, 3, 4, 5, 6, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def report(tiny_bundle: Path, lesion_path: Path) -> CaseReport:
    from skin_model.serving.service import ClassifierService

    service = ClassifierService.from_dir(tiny_bundle)
    analysis = service.analyse(lesion_path.read_bytes(), name="naevus été 😀.jpg")
    explanation = service.explain(analysis, "mel", "gradcam")
    return CaseReport(file_name=analysis.name, view=explanation.view, overlay=explanation.overlay(0.5),
                      explained_class="mel", method_name="Grad-CAM", prediction=analysis.prediction,
                      model_version=service.metadata.version, created=CREATED, ood_note="off (no gate)")


def page_count(pdf: bytes) -> int:
    from pypdf import PdfReader

    return len(PdfReader(io.BytesIO(pdf)).pages)


def pdf_text(pdf: bytes) -> str:
    """The text of the page as a PDF reader extracts it (the font is embedded, so text is glyph ids)."""
    from pypdf import PdfReader

    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return re.sub(r" +", " ", text)  # justified lines come out with wider spaces


def with_name(report: CaseReport, name: str) -> CaseReport:
    from dataclasses import replace

    return replace(report, file_name=name)


def test_pdf_is_one_page_with_the_findings(report):
    pdf = render_pdf(report)
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert page_count(pdf) == 1
    text = pdf_text(pdf)
    top = report.prediction.top_code
    assert f"({top})" in text and f"{report.prediction.top_probability:.1%}" in text
    assert report.model_version in text and "2026-03-04" in text
    assert "Not a medical device" in text
    assert "naevus été 😀.jpg" in text, "the name prints as given (DejaVu Sans has these glyphs)"
    assert len(re.findall(rb"/Subtype\s*/Image", pdf)) == 2, "the model's view and the overlay are embedded"


def test_pdf_lists_every_class_probability(report):
    text = pdf_text(render_pdf(report))
    for code, prob in report.prediction.ranked:
        assert f"{prob:.1%}" in text, code


def test_png_decodes_and_shows_both_images(report):
    png = render_png(report)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == PNG_SIZE
    pixels = np.asarray(image.convert("RGB"))
    # The overlay is pasted at the second image slot: its pixels come from the Grad-CAM overlay, not white.
    assert pixels[100:500, 450:850].std() > 10
    assert not np.array_equal(pixels[100:500, 30:430], pixels[100:500, 450:850])


def test_unicode_file_name_and_download_name(report):
    assert file_stem(report) == "case-report_naevus__t____20260304-0506", "ASCII-only download name"


def test_summary_mentions_unsure_and_malignant_roll_up(report):
    lines = "\n".join(report.summary_lines())
    p = report.prediction
    assert f"{p.malignant_probability:.1%}" in lines
    assert ("UNSURE" in lines) is p.unsure
    assert by_code(p.top_code).name in lines
    assert DISCLAIMER == report.disclaimer


def test_nothing_is_written_to_disk(report, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    render_pdf(report)
    render_png(report)
    assert list(tmp_path.iterdir()) == []


def test_non_latin_names_print_as_given_and_missing_glyphs_as_question_marks(report):
    text = pdf_text(render_pdf(with_name(report, "Δέρμα_кожа_ğüş_ŧ.jpg")))
    assert "Δέρμα_кожа_ğüş_ŧ.jpg" in text
    assert "??.jpg" in pdf_text(render_pdf(with_name(report, "病変.jpg"))), "no CJK glyphs in DejaVu Sans"


@pytest.mark.parametrize("part, family", [("very_long_part_", "Helvetica"), ("очень_длинная_часть_", "DejaVu")])
def test_long_name_keeps_date_and_version_on_the_pdf_page(report, part, family):
    """Latin-1 reports use the core Helvetica, others embed DejaVu Sans: either way the name fits."""
    from fpdf import FPDF

    from skin_model.serving.case_report import PDF_TEXT_WIDTH_MM, font_file

    name = "lesion_" + part * 30 + "end.jpg"
    text = pdf_text(render_pdf(with_name(report, name)))
    lines = text.splitlines()
    file_line = next(line for line in lines if line.startswith("File: "))
    assert file_line.startswith("File: lesion_" + part[:4]) and file_line.endswith("end.jpg") and "..." in file_line
    assert any("Date: 2026-03-04" in line and f"Model version: {report.model_version}" in line for line in lines)
    pdf = FPDF()
    if family == "DejaVu":
        pdf.add_font("DejaVu", "", str(font_file("")))
    pdf.set_font(family, "", 9.5)
    assert pdf.get_string_width(file_line) <= PDF_TEXT_WIDTH_MM


def test_long_name_stays_inside_the_png(report):
    from skin_model.serving.case_report import PNG_MARGIN

    name = "lesion_" + "very_long_part_" * 30 + "end.jpg"
    pixels = np.asarray(Image.open(io.BytesIO(render_png(with_name(report, name)))).convert("L")).astype(int)
    header = pixels[55:110]
    assert (header[:, PNG_SIZE[0] - PNG_MARGIN + 2:] > 240).all(), "no text runs past the right margin"
    assert (header[24:50, PNG_MARGIN:PNG_MARGIN + 300] < 128).any(), "the date / version line is drawn"


def test_same_report_gives_the_same_bytes(report):
    """The page offers the files as bytes (not generated on click): a rerun must give the same file."""
    assert render_pdf(report) == render_pdf(report)
    assert render_png(report) == render_png(report)
@pytest.mark.parametrize("unsure_threshold, referral_threshold", [(0.999, 0.0), (0.0, 1.0)])
def test_unsure_leads_and_the_referral_cue_is_stated(report, unsure_threshold, referral_threshold):
    """An unsure result opens with the referral advice; the malignant referral cue is stated either way."""
    import dataclasses

    from skin_model.serving.inference import Prediction

    prediction = Prediction(report.prediction.probabilities, unsure_threshold, referral_threshold)
    lines = dataclasses.replace(report, prediction=prediction).summary_lines()
    assert lines[0].startswith("UNSURE - refer for assessment") is prediction.unsure
    assert any(line.startswith("Model's top category:") for line in lines)
    cue = next(line for line in lines if line.startswith("Referral cue:"))
    assert cue.endswith(": refer.") is (referral_threshold == 0.0)
    assert "Referral cue" in pdf_text(render_pdf(dataclasses.replace(report, prediction=prediction)))
