"""The layering of docs/architecture.md, enforced: no import cycle among core's modules, no Qt under
core, none of the "never imports" arrows of the page, light modules that load without torch,
registries whose module names exist, and ruff clean. An AST scan of the source (nothing is
imported), so it runs in about a second.

How imports are counted: every ``import`` and ``from ... import`` statement is an edge, at module
level or inside a function (a deferred import hides a dependency from import time, not from the
design); imports under ``if TYPE_CHECKING:`` are not (they never run). Registries that name a
module by string (``stylize/registry.py``, ``bench.BENCHMARK_MODULES``, ``cli.EXTERNAL_COMMANDS``)
are plug-in points, not edges: the test checks that each string names a module that exists.
The "loads without torch" rule follows module-level imports only, since that is what loading runs.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Installed package name -> folder of this repository (pyproject's package-dir).
PACKAGES = {"stylecam.core": REPO / "core", "stylecam.desktop": REPO / "desktop"}
ARCHITECTURE = REPO / "docs" / "architecture.md"


@dataclass
class Module:
    name: str
    path: Path
    imports: dict[str, int] = field(default_factory=dict)      # every import -> first line
    top_level: dict[str, int] = field(default_factory=dict)    # module-level imports only


def _module_name(root_name: str, root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([root_name, *parts])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    """Absolute dotted names an import statement loads (``from a import b`` -> ``a.b`` when that
    is a module of ours, else ``a``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    names = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        names.append(candidate if candidate in known else base)
    return names


def scan(packages: dict[str, Path]) -> dict[str, Module]:
    """Every module under ``packages`` with the absolute names it imports."""
    modules = {}
    for root_name, root in packages.items():
        for path in sorted(root.rglob("*.py")):
            name = _module_name(root_name, root, path)
            modules[name] = Module(name, path)
    known = set(modules)
    for mod in modules.values():
        tree = ast.parse(mod.path.read_text("utf-8"), str(mod.path))
        is_package = mod.path.name == "__init__.py"
        _collect(tree.body, mod, is_package, known, top=True)
    return modules


def _collect(body: list[ast.stmt], mod: Module, is_package: bool, known: set[str], top: bool) -> None:
    for node in body:
        if isinstance(node, ast.If) and _is_type_checking(node):
            _collect(node.orelse, mod, is_package, known, top)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for name in _imported_names(node, mod.name, is_package, known):
                mod.imports.setdefault(name, node.lineno)
                if top:
                    mod.top_level.setdefault(name, node.lineno)
            continue
        # Statements that run at import time keep ``top``; bodies of functions do not.
        nested_top = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child_body in _bodies(node):
            _collect(child_body, mod, is_package, known, nested_top)


def _bodies(node: ast.stmt) -> list[list[ast.stmt]]:
    out = []
    for name in ("body", "orelse", "finalbody", "handlers", "cases"):
        value = getattr(node, name, None)
        if isinstance(value, list) and value and all(isinstance(v, ast.AST) for v in value):
            if name in ("handlers", "cases"):
                out.extend(v.body for v in value)
            else:
                out.append(value)
    return out


def internal_edges(modules: dict[str, Module], prefix: str) -> dict[str, set[str]]:
    """Module -> the modules under ``prefix`` it imports (an import of a package counts as its
    ``__init__``)."""
    return {name: {t for t in mod.imports if t in modules and t != name and t.startswith(prefix)}
            for name, mod in modules.items() if name.startswith(prefix)}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return scan(PACKAGES)


# --------------------------------------------------------------------------------------------
# The scanner itself can fail (a check that cannot fail proves nothing)


def test_the_scan_sees_deferred_imports_and_cycles(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import thing\n    import PySide6.QtCore\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    found = scan({"x.pkg": pkg})
    assert find_cycle(internal_edges(found, "x.pkg")) == ["x.pkg.a", "x.pkg.b", "x.pkg.a"]
    assert "PySide6.QtCore" in found["x.pkg.b"].imports and "PySide6.QtCore" not in found["x.pkg.b"].top_level
    assert "x.pkg.a" not in found["x.pkg.c"].imports  # TYPE_CHECKING only


def test_the_scan_sees_the_real_layering(modules):
    assert "stylecam.core.sinks" in modules["stylecam.core.runner"].top_level
    assert "stylecam.core.stylize.bundle.load" in modules["stylecam.core.stylize.bundle"].imports
    assert len([m for m in modules if m.startswith("stylecam.core")]) >= 30


# --------------------------------------------------------------------------------------------
# The rules


def test_no_import_cycle_in_core(modules):
    cycle = find_cycle(internal_edges(modules, "stylecam.core"))
    assert cycle is None, ("import cycle: " + " -> ".join(cycle) + " (see the import rules in "
                           "docs/architecture.md: move the shared part into a leaf module or register by name)")


def test_core_never_imports_qt(modules):
    qt = ("PySide6", "PySide2", "shiboken6", "PyQt5", "PyQt6")
    found = [f"{m.path.relative_to(REPO)}:{line} imports {name}" for m in modules.values()
             if _under(m.name, "stylecam.core") for name, line in m.imports.items()
             if any(_under(name, q) for q in qt)]
    assert not found, "core/ must never import Qt (desktop/ wraps it): " + "; ".join(found)


def _table(heading: str) -> list[list[str]]:
    """The rows of the Markdown table under ``heading`` in docs/architecture.md, as cells."""
    text = ARCHITECTURE.read_text("utf-8")
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and "`" in line:
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _names(cell: str) -> list[str]:
    return re.findall(r"`([\w.]+)`", cell)


def never_rules() -> list[tuple[list[str], list[str], list[str]]]:
    """(importers, exceptions, forbidden) from the "never imports" table of the architecture page."""
    rules = []
    for cells in _table("### Never imports"):
        who, _, exceptions = cells[0].partition("except")
        rules.append((_names(who), _names(exceptions), _names(cells[1])))
    return rules


def test_the_architecture_page_states_the_rules():
    rules = never_rules()
    assert len(rules) >= 5 and all(who and forbidden for who, _, forbidden in rules)
    assert _table("### Load without torch")


@pytest.mark.parametrize("rule", never_rules(), ids=lambda r: ",".join(r[0]))
def test_never_imports(modules, rule):
    who, exceptions, forbidden = rule
    broken = []
    for mod in modules.values():
        if not any(_under(mod.name, w) for w in who) or any(_under(mod.name, e) for e in exceptions):
            continue
        for name, line in mod.imports.items():
            # A module's own package (``from . import x`` of its __init__) is not an arrow.
            if any(_under(name, f) for f in forbidden) and not _under(mod.name, name):
                broken.append(f"{mod.path.relative_to(REPO)}:{line} imports {name}")
    assert not broken, f"{', '.join(who)} must never import {', '.join(forbidden)}: " + "; ".join(broken)


def test_light_modules_load_without_torch(modules):
    heavy = ("torch", "diffusers", "transformers", "tokenizers", "safetensors")
    for cells in _table("### Load without torch"):
        for start in _names(cells[0]):
            assert start in modules, f"docs/architecture.md names {start}, which does not exist"
            seen, todo, path = {start}, [start], {start: [start]}
            while todo:
                current = todo.pop()
                for name in modules[current].top_level:
                    if any(_under(name, h) for h in heavy):
                        chain = " -> ".join(path[current] + [name])
                        pytest.fail(f"{start} must load without {name.split('.')[0]}: {chain} "
                                    f"(import it inside the function that needs it)")
                    # Importing a submodule runs its package's __init__ first.
                    parts = name.split(".")
                    for i in range(2, len(parts) + 1):
                        target = ".".join(parts[:i])
                        if target in modules and target not in seen:
                            seen.add(target)
                            path[target] = path[current] + [target]
                            todo.append(target)


def test_registries_name_modules_that_exist(modules):
    def exists(dotted: str) -> bool:
        return dotted.split(":")[0] in modules

    from stylecam.core import bench, cli  # light: these tables load without the backends
    from stylecam.core.stylize import registry as backends

    named = [e.backend for e in backends.BACKENDS.values()] + [e.params for e in backends.BACKENDS.values()]
    named += list(bench.BENCHMARK_MODULES.values()) + [m for m, _ in cli.EXTERNAL_COMMANDS.values()]
    missing = [n for n in named if not exists(n)]
    assert not missing, f"registered by name but not in the source tree: {missing}"


# --------------------------------------------------------------------------------------------
# ruff


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]' (make test does)")
    done = subprocess.run([ruff, "check", "--no-cache", "--quiet", "."], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
