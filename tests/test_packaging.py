"""What `pip install tsrx` puts into site-packages, and the experiment files it ships."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_has_no_generic_top_level_plugins_package(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("tsrx-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert "plugins" not in tops
    assert {"tsrx", "tsrx_builtin"} <= tops
    assert "tsrx_builtin/heads.py" in names and "tsrx/data/textzoom.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[tsrx.plugins]" in text and "heads = tsrx_builtin.heads" in text


def test_every_shipped_experiment_validates():
    from tsrx.config.experiment import load_experiment

    files = sorted((REPO / "experiments").glob("*.toml"))
    assert files, "experiments/ holds no TOML files"
    for f in files:
        exp = load_experiment(f)
        assert exp.runs, f


def test_uncertainty_grid_is_the_notebook_study():
    from tsrx.config.experiment import load_experiment

    f = REPO / "experiments" / "uncertainty_grid.toml"
    runs = load_experiment(f).runs
    points = {
        (r.config["model"]["head"]["type"], r.config["loss"]["combiner"]["type"]) for r in runs
    }
    assert points == {
        (h, c) for h in ("dense", "mlp", "sidernn", "sidernn+mlp") for c in ("avg", "uncertainty")
    }
    assert all(r.config["launcher"]["gpus_per_node"] == 4 for r in runs)
