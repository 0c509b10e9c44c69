"""The library's shape: no import circle among ``skin_model`` modules (counting imports inside functions,
which still tie two modules together), and the CLIs are the only modules with a ``main``."""

from __future__ import annotations

import ast
from pathlib import Path

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
    assert {"skin_model.model", "skin_model.lite", "skin_model.inference", "skin_model.ood"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_serving_does_not_import_the_builders():
    """Loading the served model never builds it: ``lite.LitePredictor.from_dir`` has no path to ``build_lite``
    (the model file does not import ``lite``), so building is an explicit step."""
    graph = internal_imports()
    assert "skin_model.lite" not in graph["skin_model.model"]
    assert "skin_model.inference" not in graph["skin_model.bundle.metadata"]


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
