"""The library's shape: its folders are the pipeline's stages and each imports only its own stage and those
below it; no import circle among ``skin_model`` modules (counting imports inside functions, which still tie
two modules together); and the CLIs are the only modules with a ``main``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import skin_model

PACKAGE = Path(skin_model.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports() -> dict[str, set[str]]:
    """module -> the skin_model modules it imports anywhere in its code (packages resolved to modules)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("skin_model"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("skin_model"))
        # a package's __init__ re-exporting its submodules is not a dependency of the submodules on it
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1  # on the current path
        stack.append(node)
        for target in sorted(graph.get(node, set())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2  # done, no cycle through it
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_in_the_library():
    graph = internal_imports()
    assert {"skin_model.model", "skin_model.serving.lite", "skin_model.serving.inference", "skin_model.serving.ood"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_serving_does_not_import_the_builders():
    """Loading the served model never builds it: ``lite.LitePredictor.from_dir`` has no path to ``build_lite``
    (the model file does not import ``lite``), so building is an explicit step."""
    graph = internal_imports()
    assert "skin_model.serving.lite" not in graph["skin_model.model"]
    assert "skin_model.serving.inference" not in graph["skin_model.bundle.metadata"]


def test_command_lines_live_in_the_cli_package():
    """Only ``skin_model/cli/`` modules define ``main`` or parse arguments."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(path.read_text())
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        if "main" in names or "argparse" in {a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                                             for a in n.names}:
            offenders.append(module_name(path))
    assert offenders == []


#: The pipeline's stages, lowest first: a module imports only modules of its own stage or of stages below it.
#: "base" is the package's top-level modules (config, labels, safe_text) and the bundle's files; "model" is the
#: network, which training and serving share.
STAGES = ("base", "data", "model", "serving", "evaluation", "training", "report", "cli")
BASE = ("config", "labels", "safe_text", "bundle")
#: At most this many modules at the top of the package besides its sub-packages.
MAX_TOP_LEVEL_MODULES = 6


def stage_of(module: str) -> str:
    """The stage of a ``skin_model`` module: its sub-package's name, or "base"/"model" at the top."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE:
        return "base"
    if parts[1] not in STAGES:
        raise ValueError(f"{module} belongs to no stage of {STAGES}: move it into one or add it to BASE")
    return parts[1]


def test_every_module_belongs_to_a_stage():
    assert {stage_of(m) for m in internal_imports()} == set(STAGES)


def test_stages_import_only_their_own_stage_or_lower_ones():
    """data below training and serving; serving never imports training or evaluation; report and cli on top."""
    upward = [f"{a} ({stage_of(a)}) -> {b} ({stage_of(b)})" for a, targets in internal_imports().items()
              for b in targets if STAGES.index(stage_of(b)) > STAGES.index(stage_of(a))]
    assert upward == []


def test_the_direction_check_finds_an_upward_import():
    assert STAGES.index(stage_of("skin_model.training.stages")) > STAGES.index(stage_of("skin_model.serving.lite"))
    assert stage_of("skin_model.bundle.files") == stage_of("skin_model.labels") == "base"
    with pytest.raises(ValueError, match="no stage"):
        stage_of("skin_model.misc.helpers")


def test_the_package_top_level_stays_small():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} >= {
        "data", "training", "serving", "evaluation", "report", "bundle", "cli"}
