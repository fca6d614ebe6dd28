"""The package's layers (docs/ARCHITECTURE.md), checked rather than hoped for.

Low → high: ``errors`` < ``rules`` < {``sources``, ``crm``, ``store``} < ``pipeline`` < ``__main__``.
A module may import its own layer and the layers below it; the three adapters must not import
each other; the CLI (``__main__``) may import ``rules`` (and ``errors``) only. ``rules`` stays pure:
importing any of it loads no network, database, Arrow or Airflow library. The Airflow operators
in ``plugins/operators`` reach client libraries only through ``email_sync``'s adapters.

Everything is found by walking the folders (a new module is covered without touching this file).
Static checks read every import statement anywhere in a file: module level, inside functions,
under ``if TYPE_CHECKING:``, and ``importlib.import_module("…")`` with a literal name.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "email_sync"
PACKAGE_DIR = PROJECT_ROOT / PACKAGE
RULES_DIR = PACKAGE_DIR / "rules"
OPERATORS_DIR = PROJECT_ROOT / "plugins" / "operators"

BANNED_IN_RULES = frozenset({
    "requests", "httpx", "exchangelib", "msal", "simple_salesforce", "sqlalchemy", "pyarrow",
    "airflow", "urllib3", "lxml",
})
BANNED_IN_OPERATORS = frozenset({"simple_salesforce", "requests", "exchangelib"})

# Layer of each part of the package (by the first name under ``email_sync``; "" is the package's
# own ``__init__``), and which layers each may import. Sibling adapters are absent from each
# other's sets on purpose.
BOTTOM = frozenset({"", "errors"})
RULES = BOTTOM | {"rules"}
ALLOWED: dict[str, frozenset[str]] = {
    "": BOTTOM,
    "errors": BOTTOM,
    "rules": RULES,
    "sources": RULES | {"sources"},
    "crm": RULES | {"crm"},
    "store": RULES | {"store"},
    "pipeline": RULES | {"sources", "crm", "store", "pipeline"},
    "__main__": RULES | {"__main__"},
}


# -- reading the code ---------------------------------------------------------------------------
def module_name(path: Path, root: Path = PROJECT_ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def package_modules() -> dict[str, Path]:
    """Every module and package under ``email_sync/``: dotted name → file."""
    return {module_name(p): p for p in python_files(PACKAGE_DIR)}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # dotted name, resolved (relative imports made absolute)
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(PROJECT_ROOT)}:{self.line}"


def _literal_import_call(node: ast.Call) -> str | None:
    """``importlib.import_module("x.y")`` / ``import_module("x.y")`` / ``__import__("x.y")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in {"import_module", "__import__"} or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and not first.value.startswith("."):
        return first.value
    return None


def imports_in(path: Path, name: str, known: set[str] | frozenset[str] = frozenset()) -> Iterator[Import]:
    """Every import in ``path`` (module ``name``), wherever it sits in the file.

    ``from X import n`` is an import of ``X.n`` when that is a known module (``from . import
    schedule``), else of ``X`` (``from X import SomeClass``).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                up = node.level - 1
                if up > len(package) - 1:
                    raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top package")
                base_parts = package[: len(package) - up] if up else package
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield Import(name, candidate if alias.name != "*" and candidate in known else base,
                             path, node.lineno)
        elif isinstance(node, ast.Call):
            target = _literal_import_call(node)
            if target:
                yield Import(name, target, path, node.lineno)


def layer_of(dotted: str) -> str | None:
    """The layer of a name in the package (by its folder), or None when it belongs to none."""
    parts = dotted.split(".")
    assert parts[0] == PACKAGE, dotted
    if len(parts) == 1:
        return ""
    return parts[1] if parts[1] in ALLOWED else None


def project_imports() -> list[Import]:
    modules = package_modules()
    known = set(modules)
    return [
        imp
        for name, path in modules.items()
        for imp in imports_in(path, name, known)
        if imp.target == PACKAGE or imp.target.startswith(PACKAGE + ".")
    ]


# -- 1. rules/ loads no I/O library -------------------------------------------------------------
_PROBE = r"""
import importlib, json, sys

BANNED = frozenset(json.loads(sys.argv[1]))
target = sys.argv[2]
first_seen = {}


class _Watch:
    # Notes who first asks for a banned package; finds nothing itself.
    @staticmethod
    def find_spec(fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in BANNED and top not in first_seen:
            frame, where = sys._getframe(1), None
            while frame is not None:
                mod = frame.f_globals.get("__name__", "")
                if mod == "email_sync" or mod.startswith("email_sync."):
                    where = f"{mod} line {frame.f_lineno}"
                    break
                frame = frame.f_back
            first_seen[top] = where
        return None


def loaded():
    return sorted({m.partition(".")[0] for m in sys.modules} & BANNED)


baseline = loaded()
sys.meta_path.insert(0, _Watch)
importlib.import_module(target)
print(json.dumps({"baseline": baseline, "loaded": loaded(), "first_seen": first_seen}))
"""


def rules_modules() -> list[str]:
    return sorted(module_name(p) for p in python_files(RULES_DIR))


def _probe(module: str) -> tuple[str, str | None]:
    """Import ``module`` alone in a fresh interpreter; a problem description, or None."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(sorted(BANNED_IN_RULES)), module],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        return module, f"{module}: import failed:\n{result.stderr.strip()}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if report["baseline"]:
        return module, (f"{module}: a bare interpreter already has {report['baseline']} loaded "
                        "(a .pth or sitecustomize?), so this check cannot see what the module loads")
    if report["loaded"]:
        via = ", ".join(f"{top} (first requested by {report['first_seen'].get(top) or 'a dependency'})"
                        for top in report["loaded"])
        return module, f"{module} imports banned {via}"
    return module, None


def test_rules_modules_import_no_io_libraries() -> None:
    modules = rules_modules()
    assert f"{PACKAGE}.rules" in modules and len(modules) > 5, modules
    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = [problem for _, problem in pool.map(_probe, modules) if problem]
    assert not problems, "rules/ must stay pure:\n" + "\n".join(problems)


# -- 2. imports point only downwards ------------------------------------------------------------
def test_imports_respect_layers() -> None:
    modules = package_modules()
    offending: list[str] = []
    for name in modules:
        if layer_of(name) is None:
            offending.append(f"{name}: belongs to no layer (one of: {', '.join(sorted(ALLOWED)[1:])})")
    edges = project_imports()
    assert edges, "no email_sync imports found: the scanner is broken"
    for imp in edges:
        source, target = layer_of(imp.importer), layer_of(imp.target)
        if source is None:
            continue  # reported above
        if target is None or target not in ALLOWED[source]:
            offending.append(f"{imp.importer} -> {imp.target}  ({imp.where()})")
    assert not offending, "imports against the layers:\n" + "\n".join(sorted(set(offending)))


# -- 3. no import circles -----------------------------------------------------------------------
def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's SCCs, iteratively (no recursion limit to hit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = []
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work.append((root, iter(sorted(graph[root]))))
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(sorted(component))
    return found


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """Module → the package's modules it imports (every import statement counts)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    where: dict[tuple[str, str], str] = {}
    for imp in project_imports():
        if imp.target in graph:
            graph[imp.importer].add(imp.target)
            where.setdefault((imp.importer, imp.target), imp.where())
    return graph, where


def test_strongly_connected_finds_circles() -> None:
    """The cycle finder itself: it must see a circle, a self-import, and nothing in a chain."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d", "a"}, "e": {"d"}}
    components = [c for c in strongly_connected(graph) if len(c) > 1]
    assert components == [["a", "b", "c"]]
    assert [c for c in strongly_connected({"x": {"y"}, "y": set()}) if len(c) > 1] == []


def test_no_import_circles() -> None:
    graph, where = import_graph()
    assert sum(map(len, graph.values())), "no edges between email_sync modules: the scanner is broken"
    circles = []
    for node in sorted(graph):
        if node in graph[node]:
            circles.append(f"{node} imports itself ({where[node, node]})")
    for component in strongly_connected(graph):
        if len(component) > 1:
            members = set(component)
            edges = [f"    {a} -> {b}  ({where[a, b]})"
                     for a in component for b in sorted(graph[a] & members)]
            circles.append("circle among " + ", ".join(component) + ":\n" + "\n".join(edges))
    assert not circles, "import circles:\n" + "\n".join(circles)


# -- 4. the operators use adapters, not client libraries ----------------------------------------
def operator_files() -> list[Path]:
    return sorted(p for p in OPERATORS_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def test_operators_do_not_touch_client_libraries() -> None:
    files = operator_files()
    assert any(p.suffix == ".py" and p.name != "__init__.py" for p in files), files
    problems = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if "exchangelib" in line:
                problems.append(f"{path.relative_to(PROJECT_ROOT)}:{number}: mentions exchangelib: {line.strip()}")
    for path in (p for p in files if p.suffix == ".py"):
        name = module_name(path, OPERATORS_DIR.parent)
        for imp in imports_in(path, name):
            top = imp.target.partition(".")[0]
            if top in BANNED_IN_OPERATORS:
                problems.append(f"{name} -> {imp.target}  ({imp.where()})")
    assert not problems, "plugins/operators must go through email_sync's adapters:\n" + "\n".join(problems)


# -- the scanner on its own (so a silent resolver bug cannot hide a violation) -------------------
def test_imports_in_resolves_every_form(tmp_path: Path) -> None:
    pkg = tmp_path / "email_sync" / "crm"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .base import Crm\nfrom . import http\n")
    source = pkg / "salesforce.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from .. import errors\n"
        "from ..rules import schedule\n"
        "from .base import Crm\n"
        "import email_sync.store.state_store as ss\n"
        "if TYPE_CHECKING:\n"
        "    from email_sync.pipeline import staging\n"
        "def later():\n"
        "    from email_sync.sources.ews import EwsMailSource\n"
        "    importlib.import_module('email_sync.steps')\n"
    )
    known = {"email_sync", "email_sync.errors", "email_sync.rules", "email_sync.rules.schedule",
             "email_sync.crm", "email_sync.crm.base", "email_sync.crm.http",
             "email_sync.pipeline", "email_sync.pipeline.staging"}
    got = sorted(i.target for i in imports_in(source, "email_sync.crm.salesforce", known))
    assert got == sorted([
        "typing", "email_sync.errors", "email_sync.rules.schedule", "email_sync.crm.base",
        "email_sync.store.state_store", "email_sync.pipeline.staging", "email_sync.sources.ews",
        "email_sync.steps",
    ]), got
    init = [i.target for i in imports_in(pkg / "__init__.py", "email_sync.crm", known)]
    assert sorted(init) == ["email_sync.crm.base", "email_sync.crm.http"], init
    assert [layer_of(t) for t in ("email_sync", "email_sync.rules", "email_sync.crm.base", "email_sync.steps")] \
        == ["", "rules", "crm", None]
