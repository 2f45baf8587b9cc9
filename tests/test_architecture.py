"""The package's shape: what each sub-package may import, no import cycles, each SDK imported
by its adapter only, modules of a readable size, and the README's tree matching the folders."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import glmrun

PACKAGE = Path(glmrun.__file__).resolve().parent
README = PACKAGE.parent / "README.md"
MAX_LINES = 500
# Modules still over MAX_LINES, each to be split (the list may only shrink; see the test).
OVERSIZE: set[str] = set()


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        name = ".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    return mods


MODULES = _modules()


def _owner(name: str) -> str:
    """The module a dotted import name lands in (`glmrun.a.b.Thing` -> `glmrun.a.b`)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(mod: str, path: Path) -> set[str]:
    """Every glmrun module `mod` imports, at the top or inside a function, typing-only too."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            out |= {_owner(a.name) for a in node.names if a.name.startswith("glmrun")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            if base.split(".")[0] != "glmrun":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in MODULES else _owner(base))
    out.discard(mod)
    return out


GRAPH = {mod: _imports(mod, path) for mod, path in MODULES.items()}


def _area(mod: str) -> str:
    """The sub-package (`glmrun.run`) or top-level module (`glmrun.errors`) a module is in."""
    parts = mod.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else mod


def _allowed(package: str) -> set[str]:
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text("utf-8"))) or ""
    found = re.search(r"^May import: (.*?)\.$", doc, re.M | re.S)
    assert found, f"{package}/__init__.py's docstring has no 'May import: ....' line"
    names = {n.strip() for n in found[1].replace("\n", " ").split(",")}
    return set() if names == {"nothing of glmrun's"} else {f"glmrun.{n}" for n in names}


def test_each_sub_package_imports_only_what_its_docstring_allows() -> None:
    packages = sorted({_area(m) for m in MODULES if MODULES[_area(m)].name == "__init__.py"}
                      - {"glmrun"})
    assert packages, "no sub-packages found"
    wrong = []
    for package in packages:
        allowed = _allowed(package) | {package, "glmrun"}
        for mod in (m for m in MODULES if _area(m) == package):
            wrong += [f"{mod} imports {t}" for t in sorted(GRAPH[mod]) if _area(t) not in allowed]
    assert not wrong, "\n".join(wrong)


def test_the_import_graph_has_no_cycles_lazy_imports_included() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(GRAPH[mod]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep):], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[mod] = 2

    for mod in sorted(MODULES):
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, "\n".join(cycles)
    # and the sub-packages among themselves: layers, not a web
    areas: dict[str, set[str]] = defaultdict(set)
    for mod, deps in GRAPH.items():
        areas[_area(mod)] |= {_area(d) for d in deps} - {_area(mod), "glmrun"}
    for a, deps in areas.items():
        for b in deps:
            assert a not in areas.get(b, set()), f"{a} and {b} import each other"


def test_the_base_modules_import_only_each_other() -> None:
    assert GRAPH["glmrun.errors"] == set()
    assert GRAPH["glmrun.types"] <= {"glmrun.errors"}
    assert GRAPH["glmrun.models"] <= {"glmrun.errors", "glmrun.types"}
    assert not any(_area(d) in {"glmrun.cli", "glmrun.pytest_plugin"}
                   for m, deps in GRAPH.items() if _area(m) not in {"glmrun.cli", "glmrun.__main__"}
                   for d in deps)


def _sdk_importers(sdk: str) -> set[str]:
    importers = set()
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == sdk or n.startswith(f"{sdk}.") for n in names):
                importers.add(mod)
    return importers


def test_each_sdk_is_imported_only_by_its_adapter() -> None:
    """zhipuai only in backends/zhipu*.py, zai only in backends/zai*.py."""
    for sdk, adapter in (("zhipuai", "glmrun.backends.zhipu"), ("zai", "glmrun.backends.zai")):
        importers = _sdk_importers(sdk)
        assert importers, f"no module imports {sdk}"
        assert all(m.startswith(adapter) for m in importers), sorted(importers)


def test_no_module_is_over_the_size_limit_and_the_oversize_list_only_shrinks() -> None:
    sizes = {m: len(p.read_text("utf-8").splitlines()) for m, p in MODULES.items()}
    over = {m for m, n in sizes.items() if n > MAX_LINES}
    assert over <= OVERSIZE, f"over {MAX_LINES} lines: {sorted(over - OVERSIZE)}"
    stale = OVERSIZE - over
    assert not stale, f"no longer oversize (take them off OVERSIZE): {sorted(stale)}"


def _readme_tree() -> list[str]:
    text = README.read_text("utf-8")
    block = text.split("## How it is built", 1)[1].split("```", 2)[1]
    names = []
    for line in block.splitlines():
        found = re.match(r"^( *)(\S+)", line)
        if found and found[2].rstrip(",").endswith(("/", ".py")):
            names.append((len(found[1]), found[2].rstrip(",")))
    paths, stack = [], []  # indentation -> folder
    for indent, name in names:
        stack = [(i, n) for i, n in stack if i < indent]
        paths.append("".join(n for _, n in stack) + name)
        if name.endswith("/"):
            stack.append((indent, name))
    return paths


def test_the_readme_tree_lists_every_folder_and_top_level_module_and_nothing_else() -> None:
    tree = set(_readme_tree())
    folders = {f"glmrun/{p.relative_to(PACKAGE)}/" for p in PACKAGE.rglob("*")
               if p.is_dir() and (p / "__init__.py").is_file()}
    top = {f"glmrun/{p.name}" for p in PACKAGE.glob("*.py")
           if p.name not in ("__main__.py", "__init__.py")}
    listed_folders = {p for p in tree if p.endswith("/") and p.startswith("glmrun/")} - {"glmrun/"}
    listed_top = {p for p in tree if p.count("/") == 1 and p.endswith(".py")}
    assert listed_folders == folders
    assert listed_top == top
    missing = [p for p in tree if p.startswith("glmrun/") and not (PACKAGE.parent / p).exists()]
    assert not missing, f"the README's tree names what isn't there: {missing}"
