"""The class list: one definition, HAM10000 codes in the model's output order, the malignant group."""

from __future__ import annotations

import pytest

from skin_model import labels
from skin_model.labels import CLASSES, CODES, MALIGNANT_CODES, MELANOMA, NUM_CLASSES, by_code, class_index


def test_seven_ham10000_codes_in_alphabetical_order():
    assert CODES == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert NUM_CLASSES == len(CLASSES) == 7
    assert len({c.name for c in CLASSES}) == 7, "every class has its own name"


def test_malignant_group_is_melanoma_bcc_and_akiec():
    assert set(MALIGNANT_CODES) == {"mel", "bcc", "akiec"}
    assert MELANOMA in MALIGNANT_CODES
    assert [c.code for c in CLASSES if c.malignant] == list(MALIGNANT_CODES)


@pytest.mark.parametrize("index", range(7))
def test_class_index_round_trip(index):
    code = CODES[index]
    assert class_index(code) == index
    assert class_index(f" {code.upper()} ") == index, "case and surrounding spaces are ignored"
    assert by_code(code) is CLASSES[index]


@pytest.mark.parametrize("code", ["scc", "melanoma", "", "ak"])
def test_unknown_code_is_named_in_the_error(code):
    with pytest.raises(ValueError, match="Unknown diagnosis code") as info:
        class_index(code)
    assert repr(code) in str(info.value) and "akiec" in str(info.value)


def test_no_other_module_writes_the_class_list():
    """The library, the pages and the CLIs import the codes instead of repeating them (a second list could
    drift): no list of codes, and no roll-up spelled out ("mel + bcc + akiec", "bkl, df, nv, vasc")."""
    import re
    from pathlib import Path

    project = Path(labels.__file__).parent.parent
    files = [*project.glob("skin_model/**/*.py"), *project.glob("pages/*.py"), project / "app.py", project / "train.py"]
    codes = "|".join(labels.CODES)
    # two or more codes joined by commas or plus signs, quoted or in prose
    joined = re.compile(rf"""["']?\b({codes})\b["']?\s*(,|\+)\s*["']?\b({codes})\b""")
    offenders = [str(p.relative_to(project)) for p in files
                 if p.name != "labels.py" and joined.search(p.read_text())]
    assert offenders == []
    assert labels.MALIGNANT_LABEL == "mel + bcc + akiec" and labels.BENIGN_LABEL == "bkl, df, nv, vasc"
