"""Package layering: the core never imports the figure layer, the packages import each other without cycles.

The layers, bottom to top:

* the core: ``modeseek/*.py`` except ``cli.py``, ``modeseek.losses`` and
  ``modeseek.sequences``. ``modeseek.pieces``
  belongs to it: Claim, Piece, the saving helpers and the registry of pieces,
  which names the figure modules as strings and imports them on demand;
* the figure layer: ``modeseek.paper`` (the paper's figures, the token-sequence
  one included), ``modeseek.phase``, ``modeseek.atlas`` and ``modeseek.phenomena``, which import the core and ``modeseek.pieces``;
* ``modeseek.cli`` on top; ``experiments/`` outside the package.

Imports are read from the source with ``ast``, not by importing: module-level
and function-level ones alike, and ``importlib.import_module(...)`` or
``__import__(...)`` calls with a literal name. Imports under
``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIGURE_LAYER = ("modeseek.paper", "modeseek.phase", "modeseek.atlas", "modeseek.phenomena")
PACKAGES = ("modeseek.paper", "modeseek.phase", "modeseek.atlas", "modeseek.phenomena", "modeseek.sequences", "modeseek.losses")
# The registry's loaders import the figure modules by name: only these may call them.
REGISTRY = "modeseek.pieces"
REGISTRY_NAMES = frozenset({"PIECES", "load", "load_all"})
REGISTRY_USERS = ("modeseek.pieces", "modeseek.cli", "modeseek.paper.reproduce")
# Imports of a name computed at run time, which no static check can follow: the
# package's lazy attributes (``ms.run``, PEP 562) and the registry's loader.
DYNAMIC_IMPORTERS = ("modeseek", "modeseek.pieces")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((ROOT / "modeseek").rglob("*.py"))}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def is_core(module: str) -> bool:
    if module == "modeseek.cli" or any(_within(module, p) for p in FIGURE_LAYER):
        return False
    return _within(module, "modeseek")


@dataclasses.dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the submodule for ``from package import submodule``)
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.path.relative_to(ROOT)}:{self.line})"


@dataclasses.dataclass
class Found:
    imports: list[Import] = dataclasses.field(default_factory=list)
    dynamic: list[int] = dataclasses.field(default_factory=list)  # lines importing a computed name
    registry: list[int] = dataclasses.field(default_factory=list)  # lines using the registry's loaders


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _is_type_checking(test: ast.AST) -> bool:
    return (_dotted(test) or "").split(".")[-1] == "TYPE_CHECKING"


def scan(source: str, name: str, path: Path, *, is_package: bool = False, known: set[str] | frozenset = frozenset()) -> Found:
    """The imports of one module's source. ``known``: the modules ``from package import name`` may name."""
    found = Found()
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source, filename=str(path))
    # Names the registry module is bound to (import modeseek.pieces as x, from modeseek import pieces, ...).
    registry_aliases = {REGISTRY}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            registry_aliases |= {a.asname for a in node.names if a.name == REGISTRY and a.asname}
        elif isinstance(node, ast.ImportFrom) and node.module == "modeseek" and not node.level:
            registry_aliases |= {a.asname or a.name for a in node.names if a.name == "pieces"}

    def add(target: str, node: ast.AST) -> None:
        found.imports.append(Import(name, target, path, node.lineno))

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if _is_type_checking(node.test):
                for child in node.orelse:
                    self.visit(child)
            else:
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            for alias in node.names:
                add(alias.name, node)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else base, node)
                if base == REGISTRY and alias.name in REGISTRY_NAMES:
                    found.registry.append(node.lineno)

        def visit_Call(self, node: ast.Call) -> None:
            func = _dotted(node.func) or ""
            if func.split(".")[-1] in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    add(arg.value, node)
                else:
                    found.dynamic.append(node.lineno)
            self.generic_visit(node)

        def visit_Attribute(self, node: ast.Attribute) -> None:
            if node.attr in REGISTRY_NAMES and _dotted(node.value) in registry_aliases:
                found.registry.append(node.lineno)
            self.generic_visit(node)

    Visitor().visit(tree)
    return found


def _scan_file(path: Path) -> Found:
    return scan(path.read_text(), _module_name(path), path, is_package=path.name == "__init__.py", known=set(MODULES))


FOUND = {name: _scan_file(path) for name, path in MODULES.items()}
IMPORTS = [imp for found in FOUND.values() for imp in found.imports]


def _report(problems: list) -> str:
    return "\n  " + "\n  ".join(str(p) for p in problems)


def unit(module: str) -> str:
    """The node of the package graph: a subpackage, or one top-level module (the core's modules are not a package)."""
    for package in PACKAGES:
        if _within(module, package):
            return package
    return module


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_layers_exist():
    for name in ("modeseek.pieces", "modeseek.cli", "modeseek.paper.reproduce", *PACKAGES, *FIGURE_LAYER):
        assert name in MODULES, f"{name} not found under modeseek/"
    assert "modeseek.paper.common" not in MODULES, "the piece helpers live in modeseek.pieces"
    assert is_core("modeseek.pieces") and is_core("modeseek.engine") and is_core("modeseek.losses.on_policy")
    assert is_core("modeseek.sequences.model") and not is_core("modeseek.paper.fig_sequences")
    assert not is_core("modeseek.cli") and not is_core("modeseek.paper.reproduce") and not is_core("modeseek.phase")


def test_core_never_imports_the_figure_layer():
    bad = [i for i in IMPORTS if is_core(i.source) and any(_within(i.target, f) for f in FIGURE_LAYER)]
    assert not bad, "the core imports the figure layer:" + _report(bad)


def test_pieces_imports_only_the_core():
    bad = [i for i in FOUND[REGISTRY].imports if _within(i.target, "modeseek") and not is_core(i.target)]
    assert not bad, f"{REGISTRY} must import only the core (it names the piece modules as strings):" + _report(bad)


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for i in IMPORTS:
        if _within(i.target, "modeseek") and unit(i.source) != unit(i.target):
            graph.setdefault(unit(i.source), set()).add(unit(i.target))
    found = cycles(graph)
    if found:
        lines = []
        for component in found:
            members = set(component)
            edges = {str(i) for i in IMPORTS if unit(i.source) in members and unit(i.target) in members and unit(i.source) != unit(i.target)}
            lines.append(f"cycle between {', '.join(component)}:" + _report(sorted(edges)))
        raise AssertionError("\n".join(lines))


def test_only_the_registry_users_load_pieces_by_name():
    bad = [f"{name} ({MODULES[name].relative_to(ROOT)}:{line})" for name, found in FOUND.items() if name not in REGISTRY_USERS for line in found.registry]
    assert not bad, f"only {', '.join(REGISTRY_USERS)} may use the registry's loaders ({', '.join(sorted(REGISTRY_NAMES))}):" + _report(bad)
    bad = [f"{name} ({MODULES[name].relative_to(ROOT)}:{line})" for name, found in FOUND.items() if name not in DYNAMIC_IMPORTERS for line in found.dynamic]
    assert not bad, "an import of a name computed at run time escapes this test; use the registry or a literal name:" + _report(bad)


def test_the_library_never_imports_experiments():
    bad = [i for i in IMPORTS if _within(i.target, "experiments")]
    assert not bad, "modeseek imports experiments/:" + _report(bad)


def test_every_import_of_modeseek_names_an_existing_module():
    """Across the package, the tests, the experiments and the notebooks (no stale import of a moved module)."""
    paths = [p for folder in ("modeseek", "tests", "experiments", "notebooks") for p in sorted((ROOT / folder).rglob("*.py"))]
    bad = []
    for path in paths:
        found = _scan_file(path) if _within(_module_name(path), "modeseek") else scan(path.read_text(), _module_name(path), path, known=set(MODULES))
        bad += [i for i in found.imports if _within(i.target, "modeseek") and i.target not in MODULES]
    assert not bad, "imports of modules that do not exist:" + _report(bad)


def test_the_registry_names_every_piece():
    """Every module that defines a ``PIECE`` is registered under the piece's own name, and nothing else is."""
    from modeseek.pieces import PIECES

    defined = {}
    for name, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PIECE" for t in node.targets):
                call = node.value
                assert isinstance(call, ast.Call) and isinstance(call.args[0], ast.Constant), f"{name}.PIECE: Piece('<name>', ...) expected"
                defined[call.args[0].value] = name
    assert PIECES == {piece: defined[piece] for piece in PIECES}, f"registry {PIECES} vs modules defining PIECE {defined}"
    assert set(PIECES) == set(defined)


def test_the_checks_see_what_they_must():
    """The scanner and the cycle finder on made-up sources: the test above can fail."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "from modeseek import pieces as reg\n"
        "if TYPE_CHECKING:\n"
        "    from modeseek.phase import grid\n"
        "def f(name):\n"
        "    from modeseek.paper import reproduce\n"
        "    importlib.import_module('modeseek.sequences.figures')\n"
        "    __import__(name)\n"
        "    return reg.load_all()\n"
        "from . import sibling\n"
    )
    found = scan(source, "modeseek.engine", ROOT / "modeseek" / "engine.py", known={"modeseek.pieces", "modeseek.paper.reproduce", "modeseek.sibling"})
    assert [i.target for i in found.imports] == ["typing", "importlib", "modeseek.pieces", "modeseek.paper.reproduce", "modeseek.sequences.figures", "modeseek.sibling"]
    assert found.dynamic == [9] and found.registry == [10]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
