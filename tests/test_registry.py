"""Registry semantics: names, duplicates, unknown names, building from tables."""

from __future__ import annotations

import pytest

from tsrx.errors import ConfigError, TsrxError
from tsrx.registry import HEADS, Registry


class Linear:
    def __init__(self, in_features: int, out: int = 4, scale: float = 1.0, act: str = "relu"):
        self.in_features, self.out, self.scale, self.act = in_features, out, scale, act


def make_registry() -> Registry:
    reg = Registry("widget", "test widgets", provided=("in_features",))
    reg._entries.clear()
    return reg


def test_names_with_plus_are_legal_and_build_checks_signature():
    reg = make_registry()
    reg.register("side+mlp", Linear)
    w = reg.build({"type": "side+mlp", "out": 7, "scale": 2}, "model.head", in_features=3)
    assert (w.in_features, w.out, w.scale) == (3, 7, 2.0)
    assert isinstance(w.scale, float)


def test_duplicate_name_names_both_modules():
    reg = make_registry()
    reg.register("a", Linear)

    class Other:
        pass

    with pytest.raises(TsrxError) as exc:
        reg.register("a", Other)
    msg = str(exc.value)
    assert "registered twice" in msg
    assert (
        f"{__name__}:Linear" in msg
        and "test_duplicate_name_names_both_modules.<locals>.Other" in msg
    )


def test_unknown_name_lists_close_matches_and_registered():
    reg = make_registry()
    reg.register("sidernn", Linear)
    reg.register("dense", Linear)
    with pytest.raises(TsrxError) as exc:
        reg.get("sidrnn")
    msg = str(exc.value)
    assert "did you mean 'sidernn'" in msg and "registered: dense, sidernn" in msg


def test_unknown_and_mistyped_arguments_are_reported_together():
    reg = make_registry()
    reg.register("lin", Linear)
    with pytest.raises(ConfigError) as exc:
        reg.build(
            {"type": "lin", "outt": 3, "scale": "big"}, "model.head", "exp.toml", in_features=1
        )
    issues = {i.key: i.message for i in exc.value.issues}
    assert "did you mean 'out'" in issues["model.head.outt"]
    assert "expected a number" in issues["model.head.scale"]
    assert all(i.file == "exp.toml" for i in exc.value.issues)


def test_provided_arguments_cannot_be_set_in_toml():
    reg = make_registry()
    reg.register("lin", Linear)
    issues = reg.check({"type": "lin", "in_features": 3}, "model.head")
    assert len(issues) == 1 and "set by tsrx" in issues[0].message


def test_missing_type_is_reported():
    reg = make_registry()
    issues = reg.check({"out": 3}, "model.head", "f.toml")
    assert issues[0].key == "model.head.type" and "is required" in issues[0].message


def test_a_type_is_a_registered_name_never_an_import_path():
    """`module:Name` was once an escape hatch; from a stored config it ran code (issue 27)."""
    import sys

    reg = make_registry()
    with pytest.raises(ConfigError, match="not an import path"):
        reg.build({"type": f"{__name__}:Linear", "out": 2}, "x", in_features=5)
    sys.modules.pop("json.tool", None)
    with pytest.raises(TsrxError, match="not an import path"):
        reg.get("json.tool:main")
    assert "json.tool" not in sys.modules
    with pytest.raises(TsrxError, match="expected a component name"):
        reg.get(["a list"])


def test_builtin_heads_are_discovered_without_importing_them():
    # nothing in this test module imports tsrx_builtin: the entry points do
    assert {"dense", "mlp", "sidernn", "sidernn+mlp"} <= set(HEADS.names())
