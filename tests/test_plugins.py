"""Plugin discovery as a user meets it: a real package installed with pip, local files,
the autoload switch, and a broken plugin. The README's worked example is run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from side_by_side import side_by_side

REPO = Path(__file__).resolve().parents[1]


def readme_blocks() -> dict[str, str]:
    """Fenced blocks of the README's 'Writing a plugin' section whose first line names a file."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Writing a plugin", 1)[1].split("\n## ", 1)[0]
    files = {}
    for body in re.findall(r"```[a-z]*\n(.*?)```", section, flags=re.S):
        first, _, rest = body.partition("\n")
        m = re.match(r"# (\S+\.(?:py|toml))$", first.strip())
        if m:
            files[m.group(1)] = rest
    return files


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Writing a plugin", 1)[1].split("\n## ", 1)[0]
    cmds = []
    for body in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        cmds += [line.split("#")[0].strip() for line in body.splitlines() if line.strip()]
    return cmds


def tsrx_env(site: Path | None = None, **extra: str) -> dict:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def installed_readme_plugin(tmp_path_factory) -> tuple[Path, Path]:
    """The README's package, written from the README and installed with the README's pip command
    (into a private target folder so the test environment stays clean)."""
    root = tmp_path_factory.mktemp("readme")
    for name, body in readme_blocks().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    pip_cmd = next(c for c in readme_commands() if c.startswith("pip install"))
    site = root / "site"
    args = pip_cmd.split()[2:]  # after "pip install"
    proc = run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-build-isolation",
            "--target",
            str(site),
            *args,
        ],
        root,
        tsrx_env(),
    )
    assert proc.returncode == 0, proc.stderr
    return root, site


def test_readme_example_files_are_complete():
    files = readme_blocks()
    assert set(files) == {
        "tsrx-gated-head/gated_head.py",
        "tsrx-gated-head/pyproject.toml",
        "experiments/my_gated.toml",
        "experiments/my_sr.py",
        "experiments/my_sr.toml",
    }


@pytest.mark.slow
def test_readme_plugin_package_is_discovered_and_used(installed_readme_plugin):
    root, site = installed_readme_plugin
    env = tsrx_env(site)
    listing = run([sys.executable, "-m", "tsrx", "plugins", "list", "gated", "--json"], root, env)
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)["components"]
    assert [(r["registry"], r["name"], r["package"], r["version"]) for r in rows] == [
        ("head", "gated", "tsrx-gated-head", "0.1.0")
    ]
    for cmd in readme_commands():
        if cmd.startswith("tsrx "):
            proc = run([sys.executable, "-m", "tsrx", *cmd.split()[1:]], root, env)
            assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
    # the head really builds and runs with the sizes tsrx passes
    code = (
        "from tsrx.registry import HEADS; import torch; "
        "h = HEADS.build({'type': 'gated', 'hidden_units': 8}, in_features=512, num_classes=37); "
        "print(tuple(h(torch.zeros(26, 2, 512)).shape))"
    )
    out = run([sys.executable, "-c", code], root, env)
    assert out.stdout.strip() == "(26, 2, 37)", out.stderr


@pytest.mark.slow
def test_autoload_switch_disables_third_party_but_keeps_builtins(installed_readme_plugin):
    root, site = installed_readme_plugin
    env = tsrx_env(site, TSRX_NO_PLUGIN_AUTOLOAD="1")
    listing, bad = side_by_side(
        partial(run, [sys.executable, "-m", "tsrx", "plugins", "list", "--json"], root, env),
        partial(
            run,
            [sys.executable, "-m", "tsrx", "config", "validate", "experiments/my_gated.toml"],
            root,
            env,
        ),
    )
    names = {(r["registry"], r["name"]) for r in json.loads(listing.stdout)["components"]}
    assert ("head", "gated") not in names and ("head", "mlp") in names
    assert bad.returncode == 2 and "unknown head 'gated'" in bad.stderr


@pytest.mark.slow
def test_broken_plugin_is_reported_and_skipped(tmp_path):
    pkg = tmp_path / "broken"
    pkg.mkdir()
    (pkg / "broken_plugin.py").write_text("raise RuntimeError('missing CUDA extension')\n")
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tsrx-broken"\nversion = "2.0"\n[tool.setuptools]\npy-modules = ["broken_plugin"]\n'
        '[project.entry-points."tsrx.plugins"]\nbroken = "broken_plugin"\n'
    )
    site = tmp_path / "site"
    proc = run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(pkg),
        ],
        tmp_path,
        tsrx_env(),
    )
    assert proc.returncode == 0, proc.stderr
    # an experiment naming an unknown component sees the failure in its error (beside the list)
    (tmp_path / "e.toml").write_text('[model.head]\ntype = "broken_head"\n')
    listing, bad = side_by_side(
        partial(
            run,
            [sys.executable, "-m", "tsrx", "plugins", "list", "--json"],
            tmp_path,
            tsrx_env(site),
        ),
        partial(
            run,
            [sys.executable, "-m", "tsrx", "config", "validate", "e.toml"],
            tmp_path,
            tsrx_env(site),
        ),
    )
    assert listing.returncode == 0
    data = json.loads(listing.stdout)
    failed = [f for f in data["failed"] if f["plugin"] == "broken"]
    assert failed and failed[0]["package"] == "tsrx-broken"
    assert "missing CUDA extension" in failed[0]["error"]
    assert any(r["name"] == "mlp" for r in data["components"])
    assert bad.returncode == 2 and "missing CUDA extension" in bad.stderr


def test_local_file_and_module_plugins(tmp_path, monkeypatch):
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "my_head.py").write_text(
        "from tsrx.registry import HEADS\n"
        "@HEADS.register('local_head_for_test')\n"
        "class H:\n"
        "    def __init__(self, in_features: int, num_classes: int, width: int = 3):\n"
        "        self.width = width\n"
    )
    (tmp_path / "my_lab_mod_for_test.py").write_text(
        "from tsrx.registry import SELECTORS\n"
        "@SELECTORS.register('module_selector_for_test')\n"
        "class S:\n"
        "    name = 'x'\n"
        "    filename = 'x.pth'\n"
        "    def score(self, result): return 0.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    exp = tmp_path / "lab" / "e.toml"
    exp.write_text(
        'plugins = ["my_head.py", "my_lab_mod_for_test"]\n'
        '[model.head]\ntype = "local_head_for_test"\nwidth = 5\n'
        '[train]\nselectors = ["module_selector_for_test"]\n'
    )
    from tsrx.config.experiment import load_experiment

    (run_,) = load_experiment(exp).runs
    assert run_.config["model"]["head"] == {"type": "local_head_for_test", "width": 5}
    # loading twice (a job re-reading its config) does not register twice
    load_experiment(exp)
    exp.write_text('plugins = ["missing_file.py"]\n')
    from tsrx.errors import TsrxError

    with pytest.raises(TsrxError, match="missing_file.py' not found"):
        load_experiment(exp)
    # a path that is a file but no Python module (found by mypy: it was an AttributeError
    # on None)
    (exp.parent / "notes").mkdir()
    (exp.parent / "notes" / "heads.txt").write_text("not python\n")
    exp.write_text('plugins = ["notes/heads.txt"]\n')
    with pytest.raises(TsrxError, match=r"notes/heads.txt is not a Python module: expected a .py"):
        load_experiment(exp)


def _broken_site(tmp_path: Path) -> Path:
    """An installed-looking distribution whose entry point fails to import (no pip needed)."""
    site = tmp_path / "site"
    info = site / "tsrx_broken-2.0.dist-info"
    info.mkdir(parents=True)
    (site / "broken_plugin.py").write_text("raise RuntimeError('missing CUDA extension')\n")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tsrx-broken\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text("[tsrx.plugins]\nbroken = broken_plugin\n")
    return site


def test_skipped_plugin_warning_prints_once_per_command(tmp_path):
    site = _broken_site(tmp_path)
    env = {k: v for k, v in tsrx_env(site).items() if k != "TSRX_PLUGIN_WARNED"}
    # the command, then a child process (a spawned rank) that loads the plugins again
    code = (
        "import subprocess, sys\nfrom tsrx.plugins import load_plugins\nload_plugins()\n"
        "subprocess.run([sys.executable, '-c', 'from tsrx.plugins import load_plugins; "
        "load_plugins()'], check=True)\n"
    )
    # beside it, `plugins list`, which reports the failure in its own words, once
    proc, listing = side_by_side(
        partial(run, [sys.executable, "-c", code], tmp_path, env),
        partial(run, [sys.executable, "-m", "tsrx", "plugins", "list", "head"], tmp_path, env),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("skipped plugin 'broken'") == 1, proc.stderr
    assert (listing.stdout + listing.stderr).count("missing CUDA extension") == 1


def test_the_same_file_loaded_twice_is_not_told_to_rename(tmp_path, monkeypatch):
    from tsrx.errors import TsrxError
    from tsrx.plugins import load_named_plugins
    from tsrx.registry import HEADS

    (tmp_path / "twice_head_for_test.py").write_text(
        "from tsrx.registry import HEADS\n"
        "@HEADS.register('twice_head_for_test')\n"
        "class H:\n"
        "    def __init__(self, in_features: int, num_classes: int):\n"
        "        pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        load_named_plugins([str(tmp_path / "twice_head_for_test.py")])
        with pytest.raises(TsrxError) as err:
            load_named_plugins(["twice_head_for_test"])
        msg = str(err.value)
        assert "registered twice by the same code" in msg and "imported twice" in msg
        assert "twice_head_for_test.py" in msg and "Rename" not in msg
    finally:
        HEADS.unregister("twice_head_for_test")
        sys.modules.pop("twice_head_for_test", None)
