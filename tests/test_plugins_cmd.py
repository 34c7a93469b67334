"""`tsrx plugins list PATTERN` (names and kinds) and `tsrx plugins show NAME`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tsrx.cli.main import app
from tsrx.registry import HEADS

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_list_matches_a_kind_as_well_as_names():
    out = invoke("plugins", "list", "head", "--json")
    assert out.exit_code == 0, out.output
    names = {(r["registry"], r["name"]) for r in json.loads(out.output)["components"]}
    assert {
        ("head", "dense"),
        ("head", "mlp"),
        ("head", "sidernn"),
        ("head", "sidernn+mlp"),
    } <= names
    assert {r for r, _ in names} == {"head"}
    out = invoke("plugins", "list", "sr loss", "--json")
    assert {r["name"] for r in json.loads(out.output)["components"]} >= {"mse", "gpl", "textzoom"}
    out = invoke("plugins", "list", "side*", "--json")
    assert {r["name"] for r in json.loads(out.output)["components"]} == {"sidernn", "sidernn+mlp"}


def test_show_prints_options_types_defaults_doc_and_origin():
    out = invoke("plugins", "show", "sidernn", "--json")
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert (d["registry"], d["object"], d["plugin"].split(" ")[0]) == (
        "head",
        "tsrx_builtin.heads:SideRNNHead",
        "heads",
    )
    assert d["file"].endswith("plugins/heads.py") and "side bidirectional LSTM" in d["doc"]
    opts = {o["name"]: o for o in d["options"]}
    assert opts["rnn_hidden"]["type"] == "an integer > 0" and opts["rnn_hidden"]["default"] == 256
    assert opts["join"]["type"] == "one of 'concat', 'add'"
    assert opts["in_features"]["provided_by_tsrx"] and not opts["in_features"]["required"]
    text = invoke("plugins", "show", "sidernn").output
    assert "options of 'sidernn'" in text and "set by tsrx" in text
    # a name in two registries shows both; --kind picks one
    both = json.loads(invoke("plugins", "show", "textzoom", "--json").output)
    assert [d["registry"] for d in both] == ["sr_loss", "dataset"]
    one = json.loads(invoke("plugins", "show", "textzoom", "--kind", "sr_loss", "--json").output)
    assert one["options"][0]["name"] == "scale"


def test_show_with_config_loads_the_experiments_local_plugins(tmp_path):
    (tmp_path / "loose_head.py").write_text(
        "from tsrx.registry import HEADS\n"
        "@HEADS.register('test-show-loose')\n"
        "class Loose:\n"
        "    '''A head with an unannotated option.'''\n"
        "    def __init__(self, in_features: int, num_classes: int, width=3, *, gate: bool = True):\n"
        "        pass\n"
    )
    exp = tmp_path / "e.toml"
    exp.write_text('plugins = ["loose_head.py"]\n')
    try:
        out = invoke("plugins", "show", "test-show-loose", "--config", str(exp), "--json")
        assert out.exit_code == 0, out.output
        d = json.loads(out.output)
        assert d["file"] == str(tmp_path / "loose_head.py")
        opts = {o["name"]: o for o in d["options"]}
        assert opts["width"]["checked"] is False and opts["width"]["type"] == "any value"
        assert opts["gate"]["checked"] and opts["gate"]["default"] is True
    finally:
        HEADS.unregister("test-show-loose")


def test_show_unknown_name_suggests():
    out = invoke("plugins", "show", "sidrnn")
    assert out.exit_code != 0
    assert "no component 'sidrnn' in any registry (did you mean 'sidernn'" in str(out.exception)
