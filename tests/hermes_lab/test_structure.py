"""Structure the code keeps: small modules, and imports that never go round in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hermes_policy", "probes", "analysis", "dashboard", "hermes_lab")
MAX_LINES = 600


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for file in (ROOT / package).rglob("*.py"):
            parts = file.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return out


def imported(name: str, file: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its code (functions included: a lazy import is an
    import), leaving out ``if TYPE_CHECKING:`` blocks, which never run."""
    found: set[str] = set()
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in targets(node):
                    while target and target not in known:
                        target = target.rpartition(".")[0]
                    if target and target != name:
                        found.add(target)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.stmt, ast.excepthandler)):
                    visit(child.body if isinstance(child, ast.excepthandler) else [child])
    visit(ast.parse(file.read_text()).body)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_module_outside_the_tests_is_over_600_lines():
    long = {name: n for name, file in modules().items() if (n := len(file.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_no_import_cycle_between_modules():
    known = modules()
    graph = {name: imported(name, file, known) for name, file in known.items()}
    assert graph["hermes_policy.eval.report"] >= {"hermes_policy.eval.results"}  # the reader sees imports
    assert not cycles(graph), cycles(graph)


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
