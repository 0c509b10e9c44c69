"""The documentation is short where it must be, complete, and true to the code (no TensorFlow import here).

README.md is the first screen of the project and points to the four documents in docs/; those name modules,
scripts and train.py options that must exist, and none of them is a work log.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ("docs/model.md", "docs/training.md", "docs/experiments.md", "docs/benchmarks.md")
MAX_README_LINES = 250
MAX_SCREENSHOT_BYTES = 500_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Words about who worked when: not the product's facts.
WORK_LOG_WORDS = ("session", "sessions", "next session", "this session", "yesterday", "tomorrow",
                  "our working day")


def documents() -> list[Path]:
    return [README, *(ROOT / d for d in DOCS)]


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_readme_fits_and_links_every_document():
    lines = text(README).splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    readme = text(README)
    for doc in DOCS:
        assert f"]({doc}" in readme, f"README.md does not link {doc}"
        assert (ROOT / doc).is_file(), f"{doc} is linked but missing"


def test_relative_links_resolve():
    """Every relative link or image in README and docs names a file that exists (anchors and URLs aside)."""
    pattern = re.compile(r"\]\(([^)\s]+)\)|src=\"([^\"]+)\"")
    broken = []
    for path in documents():
        for match in pattern.finditer(text(path)):
            target = (match.group(1) or match.group(2)).split("#")[0]
            if not target or "://" in target or target.startswith("mailto:"):
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, f"links to missing files: {broken}"


def referenced_screenshots() -> list[Path]:
    found = re.findall(r"(?:src=\"|\]\()([^\")\s]+\.png)", text(README))
    return [ROOT / name for name in found]


def test_readme_screenshot_is_a_real_png():
    shots = referenced_screenshots()
    assert shots, "README.md shows no screenshot (a docs/*.png)"
    for shot in shots:
        assert shot.is_file(), f"{shot.relative_to(ROOT)} is missing: run python3 scripts/screenshot.py"
        data = shot.read_bytes()
        assert data[:8] == PNG_SIGNATURE, f"{shot.name} is not a PNG"
        assert data[12:16] == b"IHDR", f"{shot.name} has no PNG header chunk"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 800 and height >= 600, f"{shot.name} is {width}x{height}: not a page screenshot"
        assert len(data) <= MAX_SCREENSHOT_BYTES, f"{shot.name} is {len(data)} bytes"


@pytest.mark.parametrize("phrase", WORK_LOG_WORDS)
def test_no_work_log_words(phrase):
    pattern = re.compile(r"\b" + r"\s+".join(map(re.escape, phrase.split())) + r"\b", re.IGNORECASE)
    hits = [f"{path.relative_to(ROOT)}:{n}" for path in documents()
            for n, line in enumerate(text(path).splitlines(), start=1) if pattern.search(line)]
    assert not hits, f"{phrase!r} in {hits}"


def test_named_scripts_tests_and_results_exist():
    """Paths of scripts, benchmarks, their results and tests named in the documents exist."""
    pattern = re.compile(r"(?<![\w/.])((?:scripts|benchmarks|tests)/[\w/.-]+\.(?:py|sh|json))")
    missing = sorted({f"{path.relative_to(ROOT)}: {name}" for path in documents()
                      for name in pattern.findall(text(path)) if not (ROOT / name).is_file()})
    assert not missing, f"named but missing: {missing}"


def test_named_modules_exist():
    """Every skin_model/...py path named in README and docs exists (the documents follow the package layout
    with serving/, evaluation/, training/ and data/ sub-packages)."""
    if not (ROOT / "skin_model" / "serving").is_dir():
        pytest.skip("skin_model/serving does not exist yet: the documents describe the package after its move")
    pattern = re.compile(r"(?<![\w/.])(skin_model/[\w/]+\.py)")
    missing = sorted({f"{path.relative_to(ROOT)}: {name}" for path in documents()
                      for name in pattern.findall(text(path)) if not (ROOT / name).is_file()})
    assert not missing, f"named but missing: {missing}"


def train_options() -> set[str]:
    source = text(ROOT / "train.py")
    options = set(re.findall(r"\.add_argument\(\s*[\"'](--[\w-]+)[\"']", source))
    assert len(options) > 20, "train.py's options were not found in its source"
    return options


#: Options of other commands that docs/training.md may name, on a line that names the command too.
OTHER_COMMANDS_OPTIONS = {"--nodes": "sbatch", "--ntasks-per-node": "sbatch",
                          "--no-restore-aspect": "skin_model.cli.evaluate"}


def test_training_doc_names_only_real_train_options():
    options = train_options() | {"--help"}
    unknown = []
    for n, line in enumerate(text(ROOT / "docs" / "training.md").splitlines(), start=1):
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", line):
            if flag in options or OTHER_COMMANDS_OPTIONS.get(flag, "\0") in line:
                continue
            unknown.append(f"line {n}: {flag}")
    assert not unknown, f"docs/training.md names options train.py does not define: {unknown}"


def test_training_doc_covers_every_train_option():
    doc = text(ROOT / "docs" / "training.md")
    undocumented = sorted(o for o in train_options() if not re.search(re.escape(o) + r"(?![\w-])", doc))
    assert not undocumented, f"train.py options missing from docs/training.md: {undocumented}"
