"""Imports point one way (docs/ARCHITECTURE.md): every module of the package sits in a
layer, and an import may only go to its own layer or a lower one; and no modules import
each other in a loop.  Every import statement counts: at the top of a module, inside a
function (the lazy imports that keep start-up cheap) and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = "script_monitor"
SRC = ROOT / "src"

# Top to bottom.  An entry names a module or a package (then every module in it).
# "" is the package itself (``__version__``).
LAYERS: list[tuple[str, ...]] = [
    ("__main__", "cli"),
    ("commands",),
    # web, imported only by commands.serve (see ONLY_FROM): the app, its route groups,
    # what they share, then the rest of the package (pages, service, security ...)
    ("web.app",),
    ("web.routes_pages", "web.routes_auth", "web.routes_api", "web.grouprun", "web.statuspage"),
    ("web.context", "web.guard"),
    ("web",),
    ("scheduler", "distributed.worker", "distributed.guard"),
    ("engine", "watchdog", "housekeeping", "leadership", "statusreport"),
    ("distributed.executor", "distributed.lease"),
    ("executor", "notify", "redact", "pings"),
    (
        *("alerts", "planner", "serialize", "render", "logsource", "pager"),
        *("store", "distributed.app", "schedule_time", "heartbeat", "tokens", "grouprun"),
        *("check_time",),
    ),
    ("config", "masking", "logs", "results"),
    (
        *("cron", "proc", "startup", "errors", "states", "termsafe", "anomaly"),
        *("distributed", "supervise", ""),
    ),
]
# package -> the only modules outside it that may import it
ONLY_FROM = {"web": {"commands.serve"}, "commands": {"cli"}}


def module_files(src: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``src``, by dotted name without the package."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src / package).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports, from every import statement."""
    files = module_files(src, package)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = [package, *name.split(".")] if name else [package]
        if path.name != "__init__.py":
            here.pop()  # relative imports start from the module's package
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                # `from . import x` names module x; `from .a import f` names module a
                targets.update(f"{module}.{a.name}" for a in node.names)
        graph[name] = set()
        for target in targets:
            if target != package and not target.startswith(package + "."):
                continue
            inner = target.removeprefix(package).removeprefix(".")
            while inner not in files:
                inner = inner.rpartition(".")[0]
            if inner != name:
                graph[name].add(inner)
    return graph


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the entry, layer)
    for i, entries in enumerate(LAYERS):
        for entry in entries:
            matches = module == entry or (entry and module.startswith(entry + "."))
            if matches and (best is None or len(entry) > best[0]):
                best = (len(entry), i)
    return None if best is None else best[1]


def upward(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, deps in sorted(graph.items()):
        for dep in sorted(deps):
            a, b = layer_of(module), layer_of(dep)
            if a is not None and b is not None and b < a:
                found.append(f"{module or PACKAGE} imports {dep} (layer {b} above {a})")
            for package, allowed in ONLY_FROM.items():
                inside = dep == package or dep.startswith(package + ".")
                outside = not (module == package or module.startswith(package + "."))
                if inside and outside and module not in allowed:
                    found.append(f"{module} imports {dep}: only {sorted(allowed)} may")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer():
    graph = import_graph(SRC, PACKAGE)
    assert [m for m in graph if layer_of(m) is None] == []


def test_no_module_imports_upward():
    assert upward(import_graph(SRC, PACKAGE)) == []


def test_no_modules_import_each_other_in_a_loop():
    assert cycles(import_graph(SRC, PACKAGE)) == []


def test_nothing_imports_the_command_line():
    graph = import_graph(SRC, PACKAGE)
    assert sorted(m for m, deps in graph.items() if "cli" in deps) == ["__main__"]


def test_the_checks_see_lazy_upward_imports_and_loops(tmp_path: Path):
    """The contract on a small package of real files: a function-level import from the
    store up to the engine is upward, and it closes a loop."""
    pkg = tmp_path / PACKAGE
    (pkg / "commands").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "commands" / "__init__.py").write_text("from ..engine import run\n")
    (pkg / "engine.py").write_text("from .store import Store\n\ndef run():\n    pass\n")
    (pkg / "store.py").write_text(
        "from typing import TYPE_CHECKING\n\n"
        "if TYPE_CHECKING:\n    from . import states\n\n"
        "class Store:\n    def later(self):\n        from .engine import run\n"
    )
    (pkg / "states.py").write_text("")
    graph = import_graph(tmp_path, PACKAGE)
    assert graph == {
        "": set(),
        "commands": {"engine"},
        "engine": {"store"},
        "store": {"engine", "states"},
        "states": set(),
    }
    engine, store = layer_of("engine"), layer_of("store")
    assert upward(graph) == [f"store imports engine (layer {engine} above {store})"]
    assert cycles(graph) == [["engine", "store"]]
