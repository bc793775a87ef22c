"""The package's import structure, read from the source with ``ast`` (never imported).

Rules checked over every module of ``flask_tasks/`` (a package's ``__init__`` is a module):

(a) Counting every import that runs (module level, inside functions, classes, ``try``), but not
    those under ``if TYPE_CHECKING:``, the module import graph has no cycle.
(b) Counting the ``TYPE_CHECKING`` imports too, no cycle spans more than two modules.
(c) No module is longer than 400 lines.

How an import statement becomes edges of the graph:

* ``import a.b.c`` needs ``a.b.c``; ``from X import n`` needs ``X``, and ``X.n`` when that is
  a module (``from . import worker``, ``from .brokers import redis``), relative names resolved
  against the importing module's package.
* Importing ``a.b.c`` also executes the packages ``a`` and ``a.b`` (their ``__init__``), so
  those count as needed too -- except a package that is an ancestor of the importing module:
  Python has started that package's ``__init__`` before the importing module's first line ran,
  so implicitly passing through it orders nothing (counting it would make every package whose
  ``__init__`` re-exports a submodule "cyclic"). Asking an ancestor package for a name that is
  not a submodule (``from flask_tasks import Tasks`` inside ``flask_tasks.cli``) does need its
  ``__init__`` to have run that far, and counts.
* Literal ``importlib.import_module("flask_tasks.x")`` calls count like ``import``.

Standard library only, so it runs even while the package itself does not import.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "flask_tasks"
MAX_LINES = 400
MAX_TYPE_CHECKING_CYCLE = 2


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    type_checking: bool
    function_level: bool

    def describe(self, files: Mapping[str, Path]) -> str:
        where = _display(files[self.source])
        notes = [
            n
            for n, on in (
                ("function-level", self.function_level),
                ("TYPE_CHECKING", self.type_checking),
            )
            if on
        ]
        suffix = f" [{', '.join(notes)}]" if notes else ""
        return f"{self.source} -> {self.target}  ({where}:{self.line}){suffix}"


def _display(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


# --- discovering and parsing modules -------------------------------------------------------


def discover(root: Path, package: str) -> dict[str, Path]:
    """Every ``.py`` file under ``root/package`` as ``{dotted module name: path}``."""
    files: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _ImportCollector(ast.NodeVisitor):
    """Collects (node, line, under TYPE_CHECKING, inside a function) for every import."""

    def __init__(self) -> None:
        self.found: list[tuple[ast.AST, int, bool, bool]] = []
        self._tc = 0
        self._func = 0

    def _visit_body(self, nodes: Iterable[ast.AST], tc: bool) -> None:
        self._tc += tc
        for node in nodes:
            self.visit(node)
        self._tc -= tc

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        test, negated = node.test, False
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            test, negated = test.operand, True
        tc = _is_type_checking(test)
        self._visit_body(node.body, tc and not negated)
        self._visit_body(node.orelse, tc and negated)

    def _visit_function(self, node: ast.AST) -> None:
        self._func += 1
        self.generic_visit(node)
        self._func -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def _record(self, node: ast.AST) -> None:
        self.found.append((node, getattr(node, "lineno", 0), self._tc > 0, self._func > 0))

    visit_Import = visit_ImportFrom = _record

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if (
            name == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            self._record(node)
        self.generic_visit(node)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _absolute(own_package: str, level: int, name: str | None) -> str:
    """``from .{level dots}name`` seen from a module of ``own_package``, made absolute."""
    parts = own_package.split(".")
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, name] if name else parts)


def _named_from(
    own_package: str, node: ast.ImportFrom, modules: Mapping[str, Path]
) -> tuple[list[str], list[str]]:
    base = _absolute(own_package, node.level, node.module) if node.level else node.module or ""
    submodules = [f"{base}.{alias.name}" for alias in node.names]
    explicit = [name for name in submodules if name in modules]
    implied = _parents(base) + ([base] if explicit else [])
    if len(explicit) < len(submodules):  # an attribute of base's module (or "*")
        explicit.append(base)
    return explicit, implied


def _named(
    own_package: str, node: ast.AST, modules: Mapping[str, Path]
) -> tuple[list[str], list[str]]:
    """(modules the statement names, packages executed on the way to them)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return names, [parent for name in names for parent in _parents(name)]
    if isinstance(node, ast.ImportFrom):
        return _named_from(own_package, node, modules)
    argument = cast(ast.Call, node).args[0]
    target = str(cast(ast.Constant, argument).value)  # importlib.import_module("literal")
    if target.startswith("."):
        name = target.lstrip(".")
        target = _absolute(own_package, len(target) - len(name), name or None)
    return [target], _parents(target)


def _needed(module: str, is_package: bool, node: ast.AST, modules: Mapping[str, Path]) -> list[str]:
    """The modules of the package that ``node`` (an import in ``module``) needs executed."""
    own_package = module if is_package else module.rpartition(".")[0]
    ancestors = set(_parents(module)) | ({module} if is_package else set())
    explicit, implied = _named(own_package, node, modules)
    result = [name for name in explicit if name in modules and name != module]
    result += [name for name in implied if name in modules and name not in ancestors]
    return list(dict.fromkeys(name for name in result if name != module))


def build_edges(modules: Mapping[str, Path]) -> list[Edge]:
    edges: list[Edge] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        collector = _ImportCollector()
        collector.visit(tree)
        is_package = path.name == "__init__.py"
        for node, line, tc, func in collector.found:
            for target in _needed(module, is_package, node, modules):
                edges.append(Edge(module, target, line, tc, func))
    return edges


def graph_of(nodes: Iterable[str], edges: Iterable[Edge]) -> dict[str, list[str]]:
    graph: dict[str, list[str]] = {n: [] for n in nodes}
    for edge in edges:
        if edge.target not in graph[edge.source]:
            graph[edge.source].append(edge.target)
    return graph


# --- graph algorithms ----------------------------------------------------------------------


class _Tarjan:
    """Tarjan's strongly connected components (recursive: the graphs here are small)."""

    def __init__(self, graph: Mapping[str, Iterable[str]]) -> None:
        self.graph = {node: sorted(s for s in succ if s in graph) for node, succ in graph.items()}
        self.index: dict[str, int] = {}
        self.low: dict[str, int] = {}
        self.stack: list[str] = []
        self.on_stack: set[str] = set()
        self.components: list[list[str]] = []

    def visit(self, node: str) -> None:
        self.index[node] = self.low[node] = len(self.index)
        self.stack.append(node)
        self.on_stack.add(node)
        for succ in self.graph[node]:
            if succ not in self.index:
                self.visit(succ)
                self.low[node] = min(self.low[node], self.low[succ])
            elif succ in self.on_stack:
                self.low[node] = min(self.low[node], self.index[succ])
        if self.low[node] == self.index[node]:
            component: list[str] = []
            while not component or component[-1] != node:
                component.append(self.stack.pop())
                self.on_stack.discard(component[-1])
            self.components.append(sorted(component))


def strongly_connected_components(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Each component sorted, the components in a stable order."""
    tarjan = _Tarjan(graph)
    for node in sorted(tarjan.graph):
        if node not in tarjan.index:
            tarjan.visit(node)
    return sorted(tarjan.components)


def shortest_cycle(graph: Mapping[str, Iterable[str]], members: Iterable[str]) -> list[str]:
    """A shortest cycle through the first member, inside the component: [m, ..., m]."""
    inside = set(members)
    start = min(inside)
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph[node]):
            if succ not in inside:
                continue
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if succ not in previous:
                previous[succ] = node
                queue.append(succ)
    raise AssertionError(f"no cycle through {start} in {sorted(inside)}")


def cycle_report(
    graph: Mapping[str, Iterable[str]],
    edges: list[Edge],
    files: Mapping[str, Path],
    component: list[str],
) -> str:
    path = shortest_cycle(graph, component)
    lines = [f"  modules ({len(component)}): {', '.join(component)}", "  one cycle:"]
    for source, target in zip(path, path[1:]):
        edge = next(e for e in edges if e.source == source and e.target == target)
        lines.append(f"    {edge.describe(files)}")
    inside = set(component)
    internal = [e for e in edges if e.source in inside and e.target in inside]
    lines.append(f"  all {len(internal)} imports among these modules:")
    lines.extend(f"    {e.describe(files)}" for e in internal)
    return "\n".join(lines)


# --- the checks ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package() -> tuple[dict[str, Path], list[Edge]]:
    files = discover(ROOT, PACKAGE)
    assert PACKAGE in files and len(files) > 10, f"package not found under {ROOT}"
    return files, build_edges(files)


def _cycles(files: Mapping[str, Path], edges: list[Edge], limit: int) -> str:
    graph = graph_of(files, edges)
    bad = [c for c in strongly_connected_components(graph) if len(c) > limit]
    bad.sort(key=len, reverse=True)
    return "\n".join(cycle_report(graph, edges, files, c) for c in bad)


def test_no_runtime_import_cycle(package: tuple[dict[str, Path], list[Edge]]) -> None:
    files, edges = package
    runtime = [e for e in edges if not e.type_checking]
    report = _cycles(files, runtime, limit=1)
    assert not report, (
        "import cycles among flask_tasks modules (function-level imports counted, "
        "TYPE_CHECKING ignored):\n" + report
    )


def test_type_checking_cycles_span_at_most_two_modules(
    package: tuple[dict[str, Path], list[Edge]],
) -> None:
    files, edges = package
    report = _cycles(files, edges, limit=MAX_TYPE_CHECKING_CYCLE)
    assert not report, (
        f"counting TYPE_CHECKING imports, cycles over {MAX_TYPE_CHECKING_CYCLE} modules:\n" + report
    )


def test_no_module_over_400_lines(package: tuple[dict[str, Path], list[Edge]]) -> None:
    files, _ = package
    long = {
        _display(path): n
        for path in files.values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: " + ", ".join(
        f"{p} ({n})" for p, n in sorted(long.items(), key=lambda kv: -kv[1])
    )


# --- the checker checks itself ---------------------------------------------------------------


def test_cycle_finder_on_a_synthetic_graph() -> None:
    graph = {
        "a": ["b"],
        "b": ["c"],
        "c": ["a", "d"],
        "d": [],
        "e": ["f"],
        "f": ["e"],
        "g": ["g"],
        "h": ["a"],
    }
    components = strongly_connected_components(graph)
    assert ["a", "b", "c"] in components
    assert ["e", "f"] in components
    assert ["d"] in components and ["h"] in components
    assert sorted(m for c in components for m in c) == sorted(graph)
    assert shortest_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert shortest_cycle(graph, ["e", "f"]) == ["e", "f", "e"]


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_resolution_on_a_synthetic_package(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import A\nfrom . import sub\n",
            "pkg/a.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from .tc import T\n"
                "class A:\n    def f(self):\n        from . import b\n"
            ),
            "pkg/b.py": "from .a import A\n",  # a <-> b only through the function-level import
            "pkg/tc.py": "from .sub.deep import D\n",
            "pkg/sub/__init__.py": "X = 1\n",
            "pkg/sub/deep.py": "import pkg.a\n",
            "pkg/other.py": "from pkg import A\nimport importlib\nimportlib.import_module('pkg.b')\n",
        },
    )
    files = discover(tmp_path, "pkg")
    assert set(files) == {"pkg", "pkg.a", "pkg.b", "pkg.tc", "pkg.sub", "pkg.sub.deep", "pkg.other"}
    edges = build_edges(files)
    pairs = {(e.source, e.target, e.type_checking, e.function_level) for e in edges}
    assert ("pkg", "pkg.a", False, False) in pairs
    assert ("pkg", "pkg.sub", False, False) in pairs  # from . import <submodule>
    assert ("pkg.a", "pkg.b", False, True) in pairs  # function-level, relative
    assert ("pkg.a", "pkg.tc", True, False) in pairs  # TYPE_CHECKING
    assert ("pkg.tc", "pkg.sub.deep", False, False) in pairs
    assert ("pkg.tc", "pkg.sub", False, False) in pairs  # the package on the way
    assert ("pkg.other", "pkg", False, False) in pairs  # a name from an ancestor's __init__
    assert ("pkg.other", "pkg.b", False, False) in pairs  # import_module literal
    # passing through an ancestor package orders nothing
    assert not any(e.target == "pkg" for e in edges if e.source in {"pkg.b", "pkg.sub.deep"})

    runtime = graph_of(files, [e for e in edges if not e.type_checking])
    assert [c for c in strongly_connected_components(runtime) if len(c) > 1] == [["pkg.a", "pkg.b"]]
    everything = graph_of(files, edges)
    big = [c for c in strongly_connected_components(everything) if len(c) > 2]
    assert big == [["pkg.a", "pkg.b", "pkg.sub.deep", "pkg.tc"]]
    report = _cycles(files, edges, limit=2)
    assert "pkg.a -> pkg.tc" in report and "TYPE_CHECKING" in report
