"""Every third-party module that the app, the pages and the library import (at the top or inside a
function) belongs to a distribution named in requirements.txt, so `make app` installs all the features need."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = {"skin_model", "pages"}


def imported_modules(paths: list[Path]) -> dict[str, set[str]]:
    """Top-level module name -> files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                     else [])
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def requirement_names(path: Path) -> set[str]:
    """Normalised distribution names of a requirements file (following ``-r`` includes)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r"):
            names |= requirement_names(path.parent / line[2:].strip())
        elif line:
            names.add(normalise(re.split(r"[\[<>=!~; ]", line, maxsplit=1)[0]))
    return names


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_runtime_imports_are_in_requirements_txt():
    sources = [ROOT / "app.py", *sorted((ROOT / "skin_model").rglob("*.py")), *sorted((ROOT / "pages").rglob("*.py"))]
    third_party = {m: files for m, files in imported_modules(sources).items()
                   if m not in sys.stdlib_module_names and m not in LOCAL and m != "__future__"}
    assert {"numpy", "streamlit", "keras", "PIL"} <= set(third_party), "the scan finds the known imports"
    runtime = requirement_names(ROOT / "requirements.txt")
    providers = packages_distributions()
    missing = {m: sorted(files) for m, files in third_party.items()
               if not {normalise(d) for d in providers.get(m, [])} & runtime}
    assert not missing, f"imported but not installed by requirements.txt: {missing}"


def test_the_scan_would_catch_a_dev_only_package():
    """fpdf2 and pytest are installed here; only the first is a runtime need and in requirements.txt."""
    runtime = requirement_names(ROOT / "requirements.txt")
    assert normalise(packages_distributions()["pytest"][0]) not in runtime
    assert "pytest" in requirement_names(ROOT / "requirements-dev.txt")
