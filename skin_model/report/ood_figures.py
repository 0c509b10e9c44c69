"""The out-of-distribution gate's measured figures (``bundle.OodFigures``, the bundle's
``ood_figures.json``) as the page shows them.
"""

from __future__ import annotations

import pandas as pd

from skin_model.bundle import OodFigures
from skin_model.serving.ood import FIT_COMMAND, MEASURE_COMMAND  # noqa: F401  (the page names them)
#: How ``skin_model.data.ood_images.non_dermoscopic_images`` builds the set the gate must reject.
NON_DERMOSCOPIC_SET = (
    "generated in memory by `skin_model.data.ood_images`: photos, textures, graphics, documents and two other "
    "medical images (retina, histology) that ship with scikit-image, plus drawn screenshots, documents, blank "
    "frames, noise, colour gradients, plain skin-tone patches and imitations of a naked-eye close-up of a mole. "
    "It contains no real clinical photos, so it does not show how the gate treats real non-dermoscopic "
    "close-ups")


def ood_category_frame(summary: OodFigures) -> pd.DataFrame:
    """One row per non-dermoscopic category: category, images, rejected, reject rate (lowest rate first)."""
    frame = pd.DataFrame([{"Category": c.name.replace("_", " "), "Images": c.n, "Rejected": c.rejected,
                           "Reject rate": c.reject_rate} for c in summary.categories],
                         columns=["Category", "Images", "Rejected", "Reject rate"])
    return frame.sort_values(["Reject rate", "Category"], kind="stable").reset_index(drop=True)
