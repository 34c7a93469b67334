"""The core's layers import downward only, no two modules import each other, and every module
of ``tsrx/`` has its place.

Layers, lowest first (docs/architecture.md, "Layers"): errors/runfiles/process/writer/console;
config (load, schema, sections); plugins, registry, contracts (a registry runs its contract
check when it builds), checkpoint_components, config.experiment and config.needs; data, models
and checkpoint; engine; launch, report and viz; cli.
Function-level imports count too: a deferred import is still a dependency, so a circle through
one is still a circle. A new module is added to ``LAYERS`` by hand: the test fails until it is,
so no module escapes the check.
"""

from __future__ import annotations

import ast
from pathlib import Path

TSRX = Path(__file__).resolve().parents[1] / "tsrx"
LAYERS = {
    0: """tsrx errors runfiles records process writer console cache_dir openmp_wait memory_reuse env_switch""",
    1: """config config.load config.schema config.sections config.toml_write""",
    2: """plugins registry contracts checkpoint_components config.experiment config.needs""",
    3: """data data.cache data.config data.holdout data.inspect data.lmdb_io data.loader data.roots
          data.samples data.synth data.synth_words data.textzoom data.transforms
          models models.build models.config models.joint models.recognition
          models.text checkpoint published""",
    4: """engine engine.build engine.callbacks engine.config engine.data_stats engine.distributed
          engine.eval_batches engine.evaluator engine.grad_sync engine.judge_identity
          engine.judge_build engine.judges engine.loading engine.loss_module engine.metrics engine.precision
          engine.reading_store engine.result_cache engine.result_view engine.rng engine.run engine.runfiles
          engine.signals engine.threads engine.trainer""",
    5: """launch launch.config launch.control launch.job launch.rundir launch.status
          launch.study launch.submit
          report report.collect report.diff report.evaluate report.stats report.formats
          report.paired
          report.paper report.render report.run_facts report.tables
          viz viz.curves viz.inference viz.samples viz.sheets""",
    6: """cli cli.ckpt_cmd cli.config_cmd cli.console cli.data_cmd cli.eval_cmd cli.main cli.options
          cli.plugins_cmd cli.report_cmd cli.sr_cmd cli.submit_cmd cli.train_cmd cli.viz_cmd
          __main__""",
}
LAYER_OF = {
    ("tsrx" if name == "tsrx" else f"tsrx.{name}"): level
    for level, names in LAYERS.items()
    for name in names.split()
}


def modules() -> dict[str, Path]:
    out = {}
    for path in TSRX.rglob("*.py"):
        module = ".".join(path.relative_to(TSRX.parent).with_suffix("").parts)
        out[module.removesuffix(".__init__")] = path
    return out


def imports() -> dict[str, list[tuple[str, bool]]]:
    """module -> [(imported tsrx module, at module level?)]; ``from tsrx import contracts``
    is an import of tsrx.contracts."""
    known = modules()
    out: dict[str, list[tuple[str, bool]]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        found = out.setdefault(module, [])
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                    for a in node.names
                ]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [(n, id(node) in top) for n in names if n.split(".")[0] == "tsrx"]
    return out


def layer(module: str) -> int:
    while module not in LAYER_OF and "." in module:
        module = module.rsplit(".", 1)[0]  # tsrx.x.name (a name inside module tsrx.x)
    return LAYER_OF[module]


def test_every_module_has_a_layer():
    found = set(modules())
    unknown = sorted(found - set(LAYER_OF))
    assert unknown == [], f"modules without a layer (add them to LAYERS): {unknown}"
    gone = sorted(set(LAYER_OF) - found)
    assert gone == [], f"LAYERS names modules that do not exist: {gone}"


def test_layers_import_downward_only():
    # the package root is the public facade: ``tsrx.load_model`` defers to the engine inside
    # the function, so importing tsrx stays light
    upward = [
        f"{m} (layer {layer(m)}) imports {n} (layer {layer(n)})"
        for m, found in imports().items()
        for n, top in found
        if layer(n) > layer(m) and not (m == "tsrx" and not top)
    ]
    assert upward == []


def circles(
    graph: dict[str, list[tuple[str, bool]]], at_module_level_only: bool
) -> list[list[str]]:
    known = set(graph)

    def owner(name: str) -> str:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    edges = {
        m: {owner(n) for n, top in found if top or not at_module_level_only} - {m}
        for m, found in graph.items()
    }
    found_circles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                found_circles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    return found_circles


def test_no_import_cycles_at_module_level():
    assert circles(imports(), at_module_level_only=True) == []


def test_no_import_circles_through_deferred_imports():
    # the package root's load_model defers to the engine, whose modules import tsrx.<x>
    # submodules, never the root's names: not a circle (resolved by ``imports``)
    assert circles(imports(), at_module_level_only=False) == []


def test_the_check_sees_a_circle_through_a_deferred_import():
    """The circles issue 24 removed (plugins -> registry inside a function, registry ->
    plugins at load time; config.experiment <-> config.needs, both deferred) are found again
    if they come back."""
    for a, b in (
        ("tsrx.plugins", "tsrx.registry"),
        ("tsrx.config.needs", "tsrx.config.experiment"),
    ):
        graph = imports()
        graph[a].append((b, False))
        assert {a, b} in [set(c) for c in circles(graph, False)]
        assert circles(graph, True) == []
