"""The import structure the package docstring states: layers in order, base modules, no cycles.

Imports are read with ``ast`` from the source, function-level ones included (an import inside a
function is still a dependency, and is how a cycle hides). Imports under ``if TYPE_CHECKING:``
never run, so they count for the layers but not for cycles.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import vo_ml

PACKAGE = Path(vo_ml.__file__).parent


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    runs: bool  # False under ``if TYPE_CHECKING:``


def declared_order(docstring: str) -> tuple[list[str], set[str]]:
    """The layers (lowest first) and base modules from the literal blocks of the docstring."""
    blocks = re.findall(r"::\n\n {4}(.+)$", docstring, re.MULTILINE)
    assert len(blocks) == 2, "vo_ml/__init__.py must state the layers and the base modules in two '::' blocks"
    return [name.strip() for name in blocks[0].split("->")], {name.strip() for name in blocks[1].split(",")}


def module_names(root: Path) -> dict[str, Path]:
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports(root: Path) -> list[Import]:
    """Every import of one vo_ml module by another."""
    modules = module_names(root)
    found = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, runs in _walk(tree, runs=True):
            for target in _targets(node, package, modules):
                found.append(Import(name, target, node.lineno, runs))
    return found


def _walk(node: ast.AST, runs: bool):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            for inner in child.body:
                yield from _walk_one(inner, False)
            for inner in child.orelse:
                yield from _walk_one(inner, runs)
        else:
            yield from _walk_one(child, runs)


def _walk_one(node: ast.AST, runs: bool):
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, runs
    yield from _walk(node, runs)


def _targets(node: ast.Import | ast.ImportFrom, package: str, modules: dict[str, Path]) -> list[str]:
    root = next(iter(modules)).split(".")[0]
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == root]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    if base.split(".")[0] != root:
        return []
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]


def layer_of(module: str, layers: list[str], base: set[str]) -> str | None:
    """The layer of a module, ``""`` for the package itself and its base modules, None when the
    docstring does not place it."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in base:
        return ""
    return parts[1] if parts[1] in layers else None


def layer_violations(root: Path) -> list[str]:
    layers, base = declared_order(ast.get_docstring(ast.parse((root / "__init__.py").read_text())) or "")
    rank = {name: number for number, name in enumerate(layers)}
    problems = [f"{root.name}.{name} is declared as a layer or base module but does not exist"
                for name in [*layers, *base] if not module_names(root).keys() & {
                    f"{root.name}.{name}"}]
    for found in imports(root):
        source, target = (layer_of(m, layers, base) for m in (found.source, found.target))
        where = f"{found.source} (line {found.line}) imports {found.target}"
        if source is None:
            problems.append(f"{found.source} is in no layer: place it in {root.name}/__init__.py")
        elif source == "" and target != "" and found.source != root.name:
            problems.append(f"{where}: a base module imports no layer")
        elif target is None:
            problems.append(f"{where}, which is in no layer: place it in {root.name}/__init__.py")
        elif source and target and rank[target] > rank[source]:
            problems.append(f"{where}: {source} comes before {target} in the layer order")
    return sorted(set(problems))


def import_cycles(root: Path) -> list[list[str]]:
    """The groups of modules that import each other, directly or not (imports that run only),
    each with the imports that close it, e.g. ``a (line 3) -> b``."""
    graph: dict[str, dict[str, int]] = {name: {} for name in module_names(root)}
    for found in imports(root):
        if found.runs and found.target != found.source:
            graph[found.source].setdefault(found.target, found.line)
    groups = []
    for group in _strongly_connected(graph):
        if len(group) > 1:
            groups.append(sorted(f"{source} (line {line}) -> {target}" for source in group
                                 for target, line in graph[source].items() if target in group))
    return sorted(groups)


def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """Tarjan's algorithm."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for target in graph[node]:
            if target not in order:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], order[target])
        if low[node] == order[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            groups.append(group)

    for node in graph:
        if node not in order:
            visit(node)
    return groups


def test_every_import_follows_the_layer_order_of_the_package_docstring():
    assert layer_violations(PACKAGE) == []


def test_no_module_imports_one_that_imports_it_back():
    assert import_cycles(PACKAGE) == []


def test_the_checks_find_a_cycle_and_an_import_against_the_order(tmp_path):
    """The checks themselves, on a package made to break both rules."""
    package = tmp_path / "pkg"
    for folder in ("low", "high"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text('"""Layers::\n\n    low -> high\n\nBase::\n\n    base\n"""\n')
    (package / "base.py").write_text("")
    (package / "low" / "a.py").write_text("def f():\n    from pkg.high import b\n")
    (package / "high" / "b.py").write_text("from pkg.low import a\nfrom . import c\nfrom pkg import base\n")
    (package / "high" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high import b\n")
    assert layer_violations(package) == [
        "pkg.low.a (line 2) imports pkg.high.b: low comes before high in the layer order"]
    assert import_cycles(package) == [["pkg.high.b (line 1) -> pkg.low.a",
                                       "pkg.low.a (line 2) -> pkg.high.b"]]
