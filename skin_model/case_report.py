"""One-page case report of a classification, as PDF (fpdf2) and PNG (Pillow) bytes built in memory.

The report shows what the model saw, the Grad-CAM overlay, the calibrated probabilities, the malignant
roll-up with its referral cue, the unsure and out-of-distribution flags, the model version, the date and the disclaimer.
Nothing is written to disk.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from skin_model.inference import Prediction, format_probability
from skin_model.labels import MALIGNANT_CODES, by_code

DISCLAIMER = ("Demo for education and research only. Not a medical device. It must not be used to diagnose, "
              "treat or rule out any condition; every lesion of concern needs assessment by a clinician.")
TITLE = "Skin lesion classifier (demo) - case report"
PNG_SIZE = (1240, 900)
PNG_IMAGE_SIDE = 400


@dataclass(frozen=True)
class CaseReport:
    """Everything one report shows; ``view`` and ``overlay`` are uint8 RGB arrays (the model's square)."""

    file_name: str
    view: np.ndarray
    overlay: np.ndarray
    explained_class: str
    method_name: str
    prediction: Prediction
    model_version: str
    created: datetime
    ood_note: str  # e.g. "passed", "FLAGGED: ...", "off (no gate fitted)"
    tta: bool = False
    disclaimer: str = DISCLAIMER

    @property
    def date_text(self) -> str:
        return self.created.strftime("%Y-%m-%d %H:%M %Z").strip()

    def summary_lines(self) -> list[str]:
        """The prediction in plain sentences, shared by both formats."""
        p = self.prediction
        top = by_code(p.top_code)
        lines = []
        if p.unsure:
            lines.append(f"UNSURE - refer for assessment: top probability {format_probability(p.top_probability)} "
                         f"is below the model's {format_probability(p.unsure_threshold)} threshold.")
        lines += [f"Model's top category: {top.name} ({top.code}) - {format_probability(p.top_probability)}"
                  + (" - malignant category" if top.malignant else ""),
                  f"Malignant ({' + '.join(MALIGNANT_CODES)}): {format_probability(p.malignant_probability)}; "
                  f"benign: {format_probability(1.0 - p.malignant_probability)}"]
        if p.referral_sentence:
            lines.append(f"Referral cue: {p.referral_sentence}.")
        lines.append(f"Dermatoscopic-image check: {self.ood_note}")
        lines.append("Test-time augmentation: " + ("on (8 flips/rotations averaged)" if self.tta else "off"))
        lines.append(f"Heatmap: {self.method_name} for {self.explained_class}")
        return lines

    def header_lines(self) -> list[str]:
        return [f"File: {self.file_name}", f"Date: {self.date_text}", f"Model version: {self.model_version}"]


def short_name(code: str) -> str:
    return by_code(code).name.split(" (")[0]


def _latin1(text: str) -> str:
    """fpdf2's core fonts are Latin-1: replace anything else (e.g. in a file name) with '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


# ---------------------------------------------------------------------------------------------- PDF
def render_pdf(report: CaseReport) -> bytes:
    """An A4 one-page PDF."""
    from fpdf import FPDF

    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_margins(15, 15, 15)
    pdf.add_page()
    pdf.set_title(TITLE)
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(0, 9, TITLE, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9.5)
    pdf.cell(0, 5, _latin1("   |   ".join(report.header_lines())), new_x="LMARGIN", new_y="NEXT")
    top = pdf.get_y() + 3
    side = 82
    pdf.image(Image.fromarray(report.view), x=15, y=top, w=side, h=side)
    pdf.image(Image.fromarray(report.overlay), x=15 + side + 6, y=top, w=side, h=side)
    pdf.set_xy(15, top + side + 1)
    pdf.set_font("Helvetica", "I", 8.5)
    pdf.cell(side + 6, 5, "What the model saw (centre square)")
    pdf.cell(side, 5, _latin1(f"{report.method_name} overlay for {report.explained_class} (red = high attention)"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("Helvetica", "", 10.5)
    for line in report.summary_lines():
        pdf.multi_cell(0, 5.5, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    _pdf_probability_table(pdf, report.prediction)
    pdf.set_xy(15, 297 - 15 - 20)
    pdf.set_font("Helvetica", "B", 9)
    pdf.set_fill_color(255, 243, 205)
    pdf.multi_cell(0, 5, _latin1(report.disclaimer), border=1, fill=True, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _pdf_probability_table(pdf, prediction: Prediction) -> None:
    pdf.set_font("Helvetica", "B", 10)
    widths = (16, 92, 22, 50)
    for text, width in zip(("Code", "Diagnosis", "Malignant", "Calibrated probability"), widths):
        pdf.cell(width, 6.5, text, border="B")
    pdf.ln()
    pdf.set_font("Helvetica", "", 10)
    for code, prob in prediction.ranked:
        lesion = by_code(code)
        pdf.cell(widths[0], 6.5, code)
        pdf.cell(widths[1], 6.5, _latin1(short_name(code)))
        pdf.cell(widths[2], 6.5, "yes" if lesion.malignant else "no")
        x, y = pdf.get_x(), pdf.get_y()
        pdf.set_fill_color(200, 40, 40) if lesion.malignant else pdf.set_fill_color(40, 100, 200)
        pdf.rect(x, y + 1.5, max(0.2, 30 * prob), 3.5, style="F")
        pdf.set_x(x + 32)
        pdf.cell(widths[3] - 32, 6.5, format_probability(prob), new_x="LMARGIN", new_y="NEXT")


# ---------------------------------------------------------------------------------------------- PNG
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans when the system has it, else Pillow's built-in font at ``size``."""
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def render_png(report: CaseReport) -> bytes:
    """A PNG page (``PNG_SIZE``) with the same content as the PDF."""
    page = Image.new("RGB", PNG_SIZE, "white")
    draw = ImageDraw.Draw(page)
    margin = 30
    draw.text((margin, 20), TITLE, fill="black", font=_font(30, bold=True))
    draw.text((margin, 64), "   |   ".join(report.header_lines()), fill=(60, 60, 60), font=_font(18))
    top, side = 100, PNG_IMAGE_SIDE
    for i, array in enumerate((report.view, report.overlay)):
        page.paste(Image.fromarray(array).resize((side, side), Image.Resampling.BICUBIC), (margin + i * (side + 20), top))
    small = _font(16)
    draw.text((margin, top + side + 6), "What the model saw (centre square)", fill=(80, 80, 80), font=small)
    draw.text((margin + side + 20, top + side + 6), f"{report.method_name} overlay for {report.explained_class}",
              fill=(80, 80, 80), font=small)
    _png_probabilities(draw, report.prediction, x=margin + 2 * (side + 20) + 10, y=top)
    y = top + side + 44
    body = _font(20)
    for line in report.summary_lines():
        for wrapped in textwrap.wrap(line, 100):
            draw.text((margin, y), wrapped, fill="black", font=body)
            y += 28
    box_top = PNG_SIZE[1] - 110
    draw.rectangle((margin, box_top, PNG_SIZE[0] - margin, PNG_SIZE[1] - margin), fill=(255, 243, 205),
                   outline=(180, 140, 40))
    for i, wrapped in enumerate(textwrap.wrap(report.disclaimer, 105)):
        draw.text((margin + 12, box_top + 12 + 26 * i), wrapped, fill="black", font=_font(18, bold=True))
    buffer = io.BytesIO()
    page.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _png_probabilities(draw: ImageDraw.ImageDraw, prediction: Prediction, x: int, y: int) -> None:
    draw.text((x, y), "Calibrated probabilities", fill="black", font=_font(20, bold=True))
    font = _font(17)
    bar_width = PNG_SIZE[0] - x - 110
    for i, (code, prob) in enumerate(prediction.ranked):
        row = y + 40 + i * 52
        lesion = by_code(code)
        draw.text((x, row), textwrap.shorten(f"{code}  {short_name(code)}", 34, placeholder="..."), fill="black",
                  font=font)
        colour = (200, 40, 40) if lesion.malignant else (40, 100, 200)
        draw.rectangle((x, row + 24, x + max(1, int(bar_width * prob)), row + 40), fill=colour)
        draw.text((x + bar_width + 8, row + 22), format_probability(prob), fill="black", font=font)


def file_stem(report: CaseReport) -> str:
    """A download name: case-report_<file stem>_<date>."""
    stem = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "_"
                   for c in report.file_name.rsplit(".", 1)[0])[:60]
    return f"case-report_{stem}_{report.created.strftime('%Y%m%d-%H%M')}"

