"""The CLI as a user runs it: in-process through typer's runner and as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from functools import partial

from side_by_side import side_by_side
from typer.testing import CliRunner

from tsrx import __version__
from tsrx.cli.main import app


def tsrx(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tsrx", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_help_and_version_in_process():
    runner = CliRunner()
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0 and "config" in out.output and "plugins" in out.output
    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0 and out.output.strip() == f"tsrx {__version__}"


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom tsrx.cli.main import app\n"
        "try:\n    app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


def test_bad_input_is_one_paragraph_exit_2_and_debug_shows_traceback(tmp_path):
    (tmp_path / "e.toml").write_text("[train]\nstepz = 3\n")
    out, debug = side_by_side(
        partial(tsrx, "config", "validate", "e.toml", cwd=tmp_path),
        partial(tsrx, "--debug", "config", "validate", "e.toml", cwd=tmp_path),
    )
    assert out.returncode == 2
    assert "e.toml:train.stepz: unknown key (did you mean 'steps'?)" in out.stderr
    assert "Traceback" not in out.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_config_show_prints_resolved_toml_per_run(tmp_path):
    (tmp_path / "g.toml").write_text('[grid]\n"train.steps" = [3, 4]\n')
    out, nope = side_by_side(
        partial(tsrx, "config", "show", "g.toml", "--set", "train.batch_size=8", cwd=tmp_path),
        partial(tsrx, "config", "show", "g.toml", "--run", "nope", cwd=tmp_path),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("# run: steps=") == 2
    assert "batch_size = 8" in out.stdout and "steps = 4" in out.stdout
    import tomllib

    first = out.stdout.split("# run: ")[1].split("\n", 1)[1]
    assert tomllib.loads(first)["train"]["steps"] == 3
    assert nope.returncode == 2 and "names no run" in nope.stderr


def test_missing_file_and_malformed_toml(tmp_path):
    (tmp_path / "bad.toml").write_text("[train\n")
    out, bad = side_by_side(
        partial(tsrx, "config", "validate", "absent.toml", cwd=tmp_path),
        partial(tsrx, "config", "validate", "bad.toml", cwd=tmp_path),
    )
    assert out.returncode == 2 and "absent.toml: experiment file not found" in out.stderr
    assert bad.returncode == 2 and "bad.toml:1:" in bad.stderr and "malformed TOML" in bad.stderr
