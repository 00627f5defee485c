"""src/ is layered by concern (docs/layout.md): a package imports only from its own layer and those below it, and
no modules import each other in a circle."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# bottom to top; the entry modules people type (src/*.py) and the stages sit above every package
LAYERS = ("core", "data", "video", "model", "training", "serving", "stages")
TOP = len(LAYERS)


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """src.<package>.x -> the package's rank; src.<entry> -> above every package."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else TOP


def imports(root: Path) -> dict[str, set[str]]:
    """Every src module -> the src modules it imports, anywhere in its body (lazy imports count)."""
    modules = {module_name(p, root): p for p in (root / "src").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name and m != "src"}
    return graph


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps
                  if layer(d) > layer(m))


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports, or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = 2
        stack.pop()
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_every_package_imports_only_its_own_layer_or_below_and_nothing_imports_in_a_circle():
    graph = imports(ROOT)
    assert {"src.core.paths", "src.model.network", "src.serving.pyfunc", "src.colorize"} <= set(graph)
    assert upward(graph) == []
    assert cycle(graph) == []


def test_the_check_fails_on_an_upward_import_and_on_a_circle(tmp_path):
    """The same check on a copy of src/ with one bad import added: the check sees it."""
    import shutil

    shutil.copytree(ROOT / "src", tmp_path / "src")
    colour = tmp_path / "src" / "data" / "colour.py"
    colour.write_text(colour.read_text() + "\n\ndef _late():\n    from src.training import fit  # noqa\n")
    graph = imports(tmp_path)
    assert upward(graph) == ["src.data.colour imports src.training.fit"]
    assert cycle(graph)  # fit imports colour, which now imports fit
