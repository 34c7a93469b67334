"""The core's layers import downward only, and no two modules import each other at load time.

Layers, lowest first (docs/architecture.md, "Layers"): errors/runfiles/console; config (load,
schema, sections); plugins, registry, config.experiment and config.needs; data, models, checkpoint and
contracts; engine; launch, report and viz; cli. Function-level imports count too: a deferred
import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

TSRX = Path(__file__).resolve().parents[1] / "tsrx"
LAYERS = {
    "errors": 0,
    "runfiles": 0,
    "process": 0,
    "writer": 0,
    "console": 0,
    "config": 1,
    "plugins": 2,
    "registry": 2,
    "data": 3,
    "models": 3,
    "checkpoint": 3,
    "contracts": 3,
    "engine": 4,
    "launch": 5,
    "report": 5,
    "viz": 5,
    "cli": 6,
    "__main__": 6,
}


def layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "tsrx":
        return None
    if len(parts) == 1:
        return 0
    if module.startswith(("tsrx.config.experiment", "tsrx.config.needs")):
        return 2  # expands experiments (and their upstream stages) through the registries
    return LAYERS[parts[1]]


def imports() -> dict[str, list[tuple[str, bool]]]:
    """module -> [(imported tsrx module, at module level?)]."""
    out: dict[str, list[tuple[str, bool]]] = {}
    for path in TSRX.rglob("*.py"):
        module = ".".join(path.relative_to(TSRX.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        found = out.setdefault(module, [])
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [(n, id(node) in top) for n in names if n.split(".")[0] == "tsrx"]
    return out


def test_layers_import_downward_only():
    # the package root is the public facade: ``tsrx.load_model`` defers to the engine inside
    # the function, so importing tsrx stays light
    upward = [
        f"{m} imports {n}"
        for m, found in imports().items()
        for n, top in found
        if layer(n) > layer(m) and not (m == "tsrx" and not top)
    ]
    assert upward == []


def test_no_import_cycles_at_module_level():
    graph = imports()
    modules = set(graph)

    def owner(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    edges = {m: {owner(n) for n, top in found if top} - {m} for m, found in graph.items()}
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == []


# Import circles through deferred (function-level) imports that other work still has to
# remove (issue 24); a new circle anywhere else fails the test below.
KNOWN_DEFERRED_CIRCLES = [
    {"tsrx.plugins", "tsrx.registry"},
    {"tsrx", "tsrx.engine.loading", "tsrx.models.build"},
]


def test_no_import_circles_counting_deferred_imports():
    """Issue 24: ``config.experiment`` <-> ``config.needs`` imported each other inside
    functions; a deferred import is still a dependency, so a circle through one is a circle."""
    graph = imports()
    modules = set(graph)

    def owner(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    edges = {m: {owner(n) for n, _ in found} - {m} for m, found in graph.items()}

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            m = todo.pop()
            if m == b:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(edges.get(m, ()))
        return False

    circles: list[set[str]] = []
    for m in sorted(edges):
        if any(m in c for c in circles):
            continue
        circle = {n for n in edges if n != m and reaches(m, n) and reaches(n, m)}
        if circle:
            circles.append(circle | {m})
    new = [sorted(c) for c in circles if not any(c <= known for known in KNOWN_DEFERRED_CIRCLES)]
    assert new == []
    assert not reaches("tsrx.config.needs", "tsrx.config.experiment")
