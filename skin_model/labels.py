"""The seven HAM10000 diagnostic classes: the only place the class list is written down."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LesionClass:
    """One diagnostic class: HAM10000 code, full name and whether it is a malignant diagnosis."""

    code: str
    name: str
    malignant: bool


CLASSES: tuple[LesionClass, ...] = (
    LesionClass("akiec", "Actinic keratosis / intraepithelial carcinoma (Bowen's disease)", True),
    LesionClass("bcc", "Basal cell carcinoma", True),
    LesionClass("bkl", "Benign keratosis (solar lentigo, seborrhoeic keratosis, lichen planus-like keratosis)", False),
    LesionClass("df", "Dermatofibroma", False),
    LesionClass("mel", "Melanoma", True),
    LesionClass("nv", "Melanocytic naevus", False),
    LesionClass("vasc", "Vascular lesion", False),
)
CODES: tuple[str, ...] = tuple(c.code for c in CLASSES)
NUM_CLASSES = len(CLASSES)
MALIGNANT_CODES: tuple[str, ...] = tuple(c.code for c in CLASSES if c.malignant)
MELANOMA = "mel"
NAEVUS = "nv"
#: The malignant roll-up and the benign rest as the pages name them: "mel + bcc + akiec", "bkl, df, nv, vasc".
MALIGNANT_LABEL = " + ".join(reversed(MALIGNANT_CODES))
MALIGNANT_SHORT = MALIGNANT_LABEL.replace(" ", "")
BENIGN_LABEL = ", ".join(c.code for c in CLASSES if not c.malignant)


def class_index(code: str) -> int:
    """Index of a class code (case-insensitive) in the model's output vector."""
    try:
        return CODES.index(code.strip().lower())
    except ValueError:
        raise ValueError(f"Unknown diagnosis code {code!r}; expected one of {', '.join(CODES)}") from None


def by_code(code: str) -> LesionClass:
    """The LesionClass for a code."""
    return CLASSES[class_index(code)]
