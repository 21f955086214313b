"""The import graph of tuning/, inventory/ and deploys/, read with ``ast`` (nothing is imported).

DESIGN.md's layers, enforced:

* no import cycle among module-level imports (an import inside a function or under
  ``if TYPE_CHECKING:`` runs later or never, so it cannot deadlock a module's start-up);
* ``pyinfra`` only under ``deploys/`` (tests may use it too; they are not walked here);
* no module imports another package's private ``_module``;
* ``tuning.core`` imports nothing of the project but the leaf ``tuning.errors`` (and the
  ``tuning`` package itself, which holds only ``__version__``); ``inventory`` imports only
  ``inventory``, ``tuning.core`` and ``tuning.errors``; nothing under ``tuning`` imports
  ``deploys``. These rules count lazy imports too.

Each violation is printed as ``importer -> imported (line N)``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tuning", "inventory", "deploys")
#: What ``tuning.core`` and ``inventory`` may import besides themselves (both are leaves).
LEAVES = frozenset({"tuning", "tuning.errors"})


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    top_level: bool  # at module level (not in a function, not under TYPE_CHECKING)

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} (line {self.line})"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


MODULES: dict[str, Path] = {
    _module_name(path): path
    for package in PACKAGES
    for path in sorted((ROOT / package).rglob("*.py"))
    if "__pycache__" not in path.parts
}


def _resolve(name: str) -> str:
    """The longest project module ``name`` names (``a.b.c`` may be a name inside ``a.b``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return name


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


#: Bodies that run after the module has loaded (or never): their imports are not top-level.
_DEFERRED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _imports(module: str, path: Path) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if _is_package(path) else module.rpartition(".")[0]

    def visit(node: ast.AST, top_level: bool) -> Iterator[Edge]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Edge(module, alias.name, child.lineno, top_level)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    source = ".".join([*base, child.module] if child.module else base)
                else:
                    source = child.module or ""
                for alias in child.names:
                    full = f"{source}.{alias.name}"
                    # ``from pkg import mod`` imports the module pkg.mod when there is one
                    target = full if full in MODULES else source
                    yield Edge(module, target, child.lineno, top_level)
            elif isinstance(child, _DEFERRED) or (
                isinstance(child, ast.If) and _type_checking(child)
            ):
                yield from visit(child, False)
            else:
                yield from visit(child, top_level)

    yield from visit(tree, True)


EDGES: list[Edge] = sorted(
    {edge for module, path in MODULES.items() for edge in _imports(module, path)},
    key=lambda e: (e.importer, e.line, e.imported),
)


def _project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_walk_sees_the_tree() -> None:
    """A walk that found nothing would pass every rule below."""
    assert {"tuning.core.power", "inventory.schema", "deploys.util"} <= MODULES.keys()
    assert any(e.importer == "deploys.util" and e.imported == "pyinfra" for e in EDGES)


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for edge in EDGES:
        target = _resolve(edge.imported)
        if edge.top_level and target in MODULES and target != edge.importer:
            graph[edge.importer].add(target)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_pyinfra_only_under_deploys() -> None:
    bad = [
        str(e)
        for e in EDGES
        if _within(e.imported, "pyinfra") and not _within(e.importer, "deploys")
    ]
    assert not bad, "pyinfra imported outside deploys/:\n" + "\n".join(bad)


def test_no_private_module_imported_across_packages() -> None:
    bad = []
    for edge in EDGES:
        target = _resolve(edge.imported)
        if target not in MODULES:
            continue
        owner, _, leaf = target.rpartition(".")
        importer_package = (
            edge.importer
            if _is_package(MODULES[edge.importer])
            else edge.importer.rpartition(".")[0]
        )
        if leaf.startswith("_") and not leaf.startswith("__") and importer_package != owner:
            bad.append(str(edge))
    assert not bad, "private modules imported from another package:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("layer", "allowed"),
    [
        ("tuning.core", ("tuning.core",)),
        # the config-file readers in tuning.errors use the safe YAML loader, itself a leaf
        # (it imports nothing of the project), so the edge cannot close a cycle
        ("tuning.errors", ("tuning.core.yamlsafe",)),
        ("inventory", ("inventory", "tuning.core")),
    ],
)
def test_lower_layers_import_only_what_lies_below(layer: str, allowed: tuple[str, ...]) -> None:
    bad = [
        str(e)
        for e in EDGES
        if _within(e.importer, layer)
        and _project(e.imported)
        and _resolve(e.imported) not in LEAVES - {layer}
        and not any(_within(_resolve(e.imported), ok) for ok in allowed)
    ]
    assert not bad, f"{layer} imports from a higher layer:\n" + "\n".join(bad)


def test_tuning_never_imports_deploys() -> None:
    bad = [
        str(e) for e in EDGES if _within(e.importer, "tuning") and _within(e.imported, "deploys")
    ]
    assert not bad, "tuning imports deploys:\n" + "\n".join(bad)


def _core_definitions() -> dict[str, str]:
    """``{name: module}`` for every public top-level class, function and constant that a
    ``tuning.core`` module defines itself (not what it imports)."""
    homes: dict[str, str] = {}
    for module, path in MODULES.items():
        if not _within(module, "tuning.core") or _is_package(path):
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                names = []
            homes.update({n: module for n in names if not n.startswith("_")})
    return homes


def test_core_types_come_from_tuning_core_not_through_the_backend_seam() -> None:
    """DESIGN.md's layers: core values (``PcieLink``, ``GpuInfo``, ``Psu``, ``normalize_bus_id``
    …) are imported from their ``tuning.core`` module; ``tuning.backends.base`` exports only
    the live interface, and no file (product, tests, bench) imports a core name through it."""
    core = _core_definitions()
    assert {"PcieLink", "GpuInfo", "Psu", "normalize_bus_id"} <= core.keys()
    base = MODULES["tuning.backends.base"]
    tree = ast.parse(base.read_text(encoding="utf-8"))
    exported = next(
        [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        and isinstance(node.value, ast.List | ast.Tuple)
    )
    assert exported, "base.py's __all__ lists the live interface"
    bad = [f"base.__all__ lists {n} (defined in {core[n]})" for n in exported if n in core]
    for folder in (*PACKAGES, "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module == "tuning.backends.base":
                    bad.extend(
                        f"{path.relative_to(ROOT)}:{node.lineno}: {a.name} is "
                        f"{core[a.name]}'s; import it from there"
                        for a in node.names
                        if a.name in core
                    )
    assert not bad, "core names through tuning.backends.base:\n" + "\n".join(bad)
