"""Case report: a one-page PDF and a PNG built in memory from a real analysis of the tiny bundle."""

from __future__ import annotations

import io
import re
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skin_model.case_report import DISCLAIMER, PNG_SIZE, CaseReport, file_stem, render_pdf, render_png
from skin_model.labels import by_code

CREATED = datetime(2026, 3, 4, 5, 6, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def report(tiny_bundle: Path, real_image_path: Path) -> CaseReport:
    from skin_model.service import ClassifierService

    service = ClassifierService.from_dir(tiny_bundle)
    analysis = service.analyse(real_image_path.read_bytes(), name="naevus été 😀.jpg")
    explanation = service.explain(analysis, "mel", "gradcam")
    return CaseReport(file_name=analysis.name, view=explanation.view, overlay=explanation.overlay(0.5),
                      explained_class="mel", method_name="Grad-CAM", prediction=analysis.prediction,
                      model_version=service.metadata.version, created=CREATED, ood_note="off (no gate)")


def page_count(pdf: bytes) -> int:
    """Page objects in a PDF (pypdf is not installed): '/Type /Page' but not '/Type /Pages'."""
    try:
        from pypdf import PdfReader
    except ImportError:
        return len(re.findall(rb"/Type\s*/Page(?!s)\b", pdf))
    return len(PdfReader(io.BytesIO(pdf)).pages)


def pdf_text(pdf: bytes) -> str:
    """The text drawing operators of every (Flate-compressed or plain) content stream."""
    chunks = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, flags=re.S):
        try:
            chunks.append(zlib.decompress(stream))
        except zlib.error:
            chunks.append(stream)
    return b"\n".join(chunks).decode("latin-1")


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
    assert "naevus été ?.jpg" in text, "characters outside Latin-1 are replaced, the rest kept"
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


@pytest.mark.parametrize("unsure_threshold, referral_threshold", [(0.999, 0.0), (0.0, 1.0)])
def test_unsure_leads_and_the_referral_cue_is_stated(report, unsure_threshold, referral_threshold):
    """An unsure result opens with the referral advice; the malignant referral cue is stated either way."""
    import dataclasses

    from skin_model.inference import Prediction

    prediction = Prediction(report.prediction.probabilities, unsure_threshold, referral_threshold)
    lines = dataclasses.replace(report, prediction=prediction).summary_lines()
    assert lines[0].startswith("UNSURE - refer for assessment") is prediction.unsure
    assert any(line.startswith("Model's top category:") for line in lines)
    cue = next(line for line in lines if line.startswith("Referral cue:"))
    assert cue.endswith(": refer.") is (referral_threshold == 0.0)
    assert "Referral cue" in pdf_text(render_pdf(dataclasses.replace(report, prediction=prediction)))
