"""The code's shape, checked: no import circles, layers that only point down, the option
table and settings free of click and torch, and front-end functions short enough to read."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vidsr"

#: Layers, top-down: a module imports only from its own layer or those below it.
LAYERS = [
    ("front-end", ["vidsr", "vidsr.cli", "vidsr.api", "vidsr.batch", "vidsr.bench", "vidsr.ops"]),
    ("run", ["vidsr.run"]),
    ("jobs", ["vidsr.jobs", "vidsr.training"]),
    ("pipeline", ["vidsr.pipeline"]),
    ("media/models", ["vidsr.media", "vidsr.models"]),
    ("base", ["vidsr.options", "vidsr.settings", "vidsr.home", "vidsr.files", "vidsr.errors"]),
]
FRONT_ENDS = ("vidsr.cli", "vidsr.api", "vidsr.batch", "vidsr.bench", "vidsr.ops")
MAX_FRONT_END_LINES = 80


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every vidsr module ``path`` imports, at module level or inside functions (the lazy
    imports count: they run), leaving out ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            # ``from vidsr import errors`` imports vidsr.errors (a package's __init__ runs for
            # every import below it anyway, so it is not counted as a dependency by itself)
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules and m != me}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {m: imports_of(p, modules) for m, p in paths.items()}


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} is in no layer: add it to LAYERS"
    return rank


def test_no_module_imports_one_that_imports_it_back(graph: dict[str, set[str]]) -> None:
    # Tarjan's strongly connected components: any component of two or more is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    assert not circles, f"import circles: {circles}"


def test_layers_only_point_down(graph: dict[str, set[str]]) -> None:
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})"
        for m, deps in sorted(graph.items())
        for dep in sorted(deps)
        if layer_of(dep) < layer_of(m)
    ]
    assert not upward, "\n".join(upward)
    importers = {m for m, deps in graph.items() if "vidsr.cli" in deps}
    assert importers <= {"vidsr.__main__"}, "nothing imports the CLI but python -m vidsr"


def test_click_lives_in_the_cli_only() -> None:
    users = [
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if "click" in {n.split(".")[0] for n in _all_imports(p)}
    ]
    assert users == ["vidsr.cli"]


def _all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_option_table_and_settings_import_neither_click_nor_torch() -> None:
    code = (
        "import sys, vidsr.options, vidsr.settings, vidsr.run.presets, vidsr.api; "
        "bad = [m for m in ('click', 'torch', 'av') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_front_end_functions_are_short() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if not (name in FRONT_ENDS or name.startswith("vidsr.run")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FRONT_END_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long
