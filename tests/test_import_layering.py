"""The package layering, read from the source: no two top-level folders import each other.

Every ``.py`` file under the top-level folders is parsed with ``ast`` (nothing is
imported), and every import it makes is collected: module-level and function-local
``import``/``from ... import`` (relative ones resolved against the file's package),
``importlib.import_module("...")`` with a literal name, and the lazy re-exports of
``alum.lazy_exports.lazy_getattr(__name__, {...})`` (a name served on first access
is an import of its module all the same). Each import is attributed to the folder
that holds its target:

    alum/       -> ``alum`` (the shared core; ``alum.<x>`` outside the mapped names)
    pretrain/   -> ``alum.pretrain``     finetune/ -> ``alum.finetune``
    tools/      -> ``alum.tools``        kernels/python/ -> ``alum.kernels``
    benchmarks/ -> scripts, run from their folder (``import memory_tracker``)

The rules (``python3 tests/test_import_layering.py`` prints the whole table):

* no cycle between folders: a folder never imports one that imports it back,
  directly or through others;
* the core imports none of the other folders (it is what they share), except the
  entries of ``ALLOWED_CORE_IMPORTS``, each with the reason it is needed;
* ``kernels`` imports only the core.
"""
from __future__ import annotations

import ast
import os
import sys
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FOLDERS: Dict[str, Optional[str]] = {
    "alum": "alum", "pretrain": "alum.pretrain", "finetune": "alum.finetune",
    "tools": "alum.tools", "kernels": "alum.kernels", "benchmarks": None,
}
"""Top-level folder -> the import name it installs as (None: scripts, not a package)."""

PACKAGE_ROOTS: Dict[str, str] = {"kernels": os.path.join("kernels", "python")}
"""Folders whose package is a subfolder: kernels/ itself is no package (setup.py says why),
its Python side is kernels/python/."""

CORE = "alum"

ALLOWED_CORE_IMPORTS: Dict[Tuple[str, str], str] = {}
"""(core file relative to the root, imported module) -> why the core needs it. Empty: the
core imports no other folder (``alum.lazy_exports`` serves each package its own
submodules, counted as that package's imports)."""

KERNELS_MAY_IMPORT = {CORE}

Edge = Tuple[str, str]
Site = Tuple[str, int, str]     # file, line, imported module


def _module_name(path: str) -> Optional[str]:
    """The import name of the file at ``path`` (relative to ROOT); None for scripts."""
    folder = path.split(os.sep)[0]
    package = FOLDERS[folder]
    if package is None:
        return None
    parts = os.path.relpath(path[:-3], PACKAGE_ROOTS.get(folder, folder)).split(os.sep)
    if parts[0] == os.pardir:
        return None   # beside the package (kernels/ outside kernels/python/): no module
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package] + parts)


def _is_package(path: str) -> bool:
    return os.path.basename(path) == "__init__.py"


def _resolve_relative(module: Optional[str], level: int, importer: Optional[str],
                      is_package: bool) -> Optional[str]:
    if level == 0:
        return module
    if importer is None:
        return None
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[:-(level - 1)]
    return ".".join(base + ([module] if module else []))


def _literal_dict_values(node: ast.AST, assignments: Dict[str, ast.AST]) -> List[str]:
    if isinstance(node, ast.Name) and node.id in assignments:
        node = assignments[node.id]
    if isinstance(node, ast.Dict):
        return [v.value for v in node.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return []


def imports_of(path: str) -> Iterator[Tuple[int, str]]:
    """(line, absolute module name) of every import in the file ``path`` (relative to ROOT)."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    importer = _module_name(path)
    package = importer if _is_package(path) else (importer.rsplit(".", 1)[0]
                                                   if importer else None)
    assignments = {t.id: node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                   for t in node.targets if isinstance(t, ast.Name)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(node.module, node.level, importer, _is_package(path))
            if base is None:
                continue
            for alias in node.names:
                # ``from pkg import sub`` may import the submodule pkg.sub.
                yield node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value
            elif name == "lazy_getattr" and len(node.args) == 2 and package is not None:
                target = node.args[0]
                if isinstance(target, ast.Name) and target.id == "__name__":
                    owner = importer
                elif isinstance(target, ast.Constant) and isinstance(target.value, str):
                    owner = target.value
                else:
                    continue
                for sub in _literal_dict_values(node.args[1], assignments):
                    yield node.lineno, f"{owner}.{sub}"


def folder_of(module: str, importer_folder: str) -> Optional[str]:
    """The top-level folder holding ``module``; None for third-party modules."""
    for folder, package in FOLDERS.items():
        if package is not None and folder != CORE and \
                (module == package or module.startswith(package + ".")):
            return folder
    if module == CORE or module.startswith(CORE + "."):
        return CORE
    top = module.split(".")[0]
    if importer_folder == "benchmarks" and os.path.isfile(
            os.path.join(ROOT, "benchmarks", top + ".py")):
        return "benchmarks"
    if top == "benchmarks":
        return "benchmarks"
    return None


def python_files() -> Iterator[str]:
    for folder in FOLDERS:
        for root, dirs, files in os.walk(os.path.join(ROOT, folder)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.relpath(os.path.join(root, name), ROOT)


def cross_folder_imports() -> Dict[Edge, List[Site]]:
    """(importing folder, imported folder) -> where, for every pair of distinct folders."""
    edges: Dict[Edge, List[Site]] = defaultdict(list)
    for path in python_files():
        source = path.split(os.sep)[0]
        for line, module in imports_of(path):
            target = folder_of(module, source)
            if target is not None and target != source:
                edges[(source, target)].append((path, line, module))
    return dict(edges)


def cycles(edges: Dict[Edge, List[Site]]) -> List[List[str]]:
    """The strongly connected groups of more than one folder (Tarjan)."""
    graph: Dict[str, Set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    groups: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(FOLDERS):
        if v not in index:
            visit(v)
    return groups


def report(edges: Dict[Edge, List[Site]]) -> str:
    lines = []
    for (a, b), sites in sorted(edges.items()):
        lines.append(f"{a} -> {b} ({len(sites)})")
        lines += [f"    {path}:{line} {module}" for path, line, module in sites]
    return "\n".join(lines)


def _sites(edges: Dict[Edge, List[Site]], a: str, b: str) -> str:
    return "\n".join(f"    {p}:{n} {m}" for p, n, m in edges.get((a, b), []))


# -- tests -------------------------------------------------------------------------
def test_no_two_folders_import_each_other():
    edges = cross_folder_imports()
    found = cycles(edges)
    messages = []
    for group in found:
        for a in group:
            for b in group:
                if (a, b) in edges:
                    messages.append(f"{a} -> {b}:\n{_sites(edges, a, b)}")
    assert not found, f"import cycles between folders {found}:\n" + "\n".join(messages)


def test_core_imports_no_other_folder():
    edges = cross_folder_imports()
    bad = [(p, n, m) for (a, _), sites in edges.items() if a == CORE for p, n, m in sites
           if (p, m) not in ALLOWED_CORE_IMPORTS]
    assert not bad, "the core (alum/) imports other folders:\n" + "\n".join(
        f"    {p}:{n} {m}" for p, n, m in bad)


def test_kernels_import_only_the_core():
    edges = cross_folder_imports()
    bad = {b: _sites(edges, a, b) for a, b in edges if a == "kernels"
           and b not in KERNELS_MAY_IMPORT}
    assert not bad, "kernels/ imports " + "\n".join(f"{b}:\n{s}" for b, s in bad.items())


def test_allow_list_entries_are_still_needed():
    """An allow-list entry whose import is gone is removed, so the list stays honest."""
    edges = cross_folder_imports()
    present = {(p, m) for (a, _), sites in edges.items() if a == CORE for p, _, m in sites}
    stale = sorted(set(ALLOWED_CORE_IMPORTS) - present)
    assert not stale, f"ALLOWED_CORE_IMPORTS entries with no such import: {stale}"


def test_the_scanner_sees_local_relative_and_lazy_imports(tmp_path, monkeypatch):
    """The parser itself: function-local, relative, importlib and lazy re-exports count."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    os.makedirs(tmp_path / "pretrain" / "sub")
    (tmp_path / "pretrain" / "__init__.py").write_text(
        "from alum.lazy_exports import lazy_getattr\n"
        "_EXPORTS = {'Thing': 'sub.thing'}\n"
        "__getattr__ = lazy_getattr(__name__, _EXPORTS)\n")
    (tmp_path / "pretrain" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pretrain" / "sub" / "mod.py").write_text(
        "import importlib\n"
        "def f():\n"
        "    from ..consolidate import x\n"
        "    from alum.tools.convert import name_map\n"
        "    return importlib.import_module('alum.finetune.cli')\n")
    assert sorted(imports_of(os.path.join("pretrain", "__init__.py"))) == [
        (1, "alum.lazy_exports.lazy_getattr"), (3, "alum.pretrain.sub.thing")]
    assert sorted(imports_of(os.path.join("pretrain", "sub", "mod.py"))) == [
        (1, "importlib"), (3, "alum.pretrain.consolidate.x"),
        (4, "alum.tools.convert.name_map"), (5, "alum.finetune.cli")]
    os.makedirs(tmp_path / "kernels" / "python")
    (tmp_path / "kernels" / "python" / "__init__.py").write_text("from .sym_kl import f\n")
    assert _module_name(os.path.join("kernels", "python", "sym_kl.py")) == "alum.kernels.sym_kl"
    assert list(imports_of(os.path.join("kernels", "python", "__init__.py"))) == [
        (1, "alum.kernels.sym_kl.f")]
    assert folder_of("alum.kernels.sym_kl", "pretrain") == "kernels"
    assert folder_of("alum.tools.convert.name_map", "pretrain") == "tools"
    assert folder_of("alum.models", "pretrain") == "alum"
    assert folder_of("torch.nn", "pretrain") is None
    edges = {("pretrain", "tools"): [], ("tools", "alum"): [], ("alum", "pretrain"): [],
             ("finetune", "alum"): []}
    assert cycles(edges) == [["alum", "pretrain", "tools"]]
    assert cycles({("finetune", "alum"): [], ("pretrain", "alum"): []}) == []


if __name__ == "__main__":
    table = cross_folder_imports()
    print(report(table))
    print("cycles:", cycles(table) or "none")
