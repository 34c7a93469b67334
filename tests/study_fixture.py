"""A three-stage study of stand-in runs for the study tests (local and Slurm).

The stand-in trainer has the engine's contract (``run_training(run_dir)``), no torch, and
writes what a dependant loads (``best_psnr_model.pth``, ``best_acc_model.pth``). It fails
when its experiment is named in STUDY_FAIL, and appends ``{"run", "start", "end", env}``
to ``$STUDY_LOG`` so a test can check the order the runs ran in.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

STUDY_STANDIN = textwrap.dedent("""
    import json, os, time, tomllib
    from pathlib import Path

    def _write(path, obj):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)

    def run_training(run_dir, env=None):
        run_dir = Path(run_dir)
        cfg = tomllib.loads((run_dir / "config.toml").read_text())
        start = time.time()
        if int(os.environ.get("RANK", "0")) != 0:
            return {"state": "completed"}
        _write(run_dir / "status.json", {"state": "running", "step": 0,
                                         "total_steps": cfg["train"]["steps"], "updated": start})
        for p in cfg["model"]["init"].values():  # what a real run loads must be there
            if not Path(p).is_file():
                raise FileNotFoundError(p)
        time.sleep(float(os.environ.get("STUDY_STEP_S", "0.3")))
        record = {"run": f"{cfg['name']}/{run_dir.name}", "start": start, "end": time.time(),
                  **{k: os.environ.get(k) for k in ("TSRX_THREADS", "OMP_NUM_THREADS",
                                                    "WORLD_SIZE", "SLURM_JOB_ID")}}
        with open(os.environ["STUDY_LOG"], "a") as f:
            f.write(json.dumps(record) + "\\n")
        if cfg["name"] in os.environ.get("STUDY_FAIL", "").split(","):
            raise RuntimeError(f"{cfg['name']} fails on purpose")
        for sel in cfg["train"]["selectors"]:
            (run_dir / f"{sel}_model.pth").write_bytes(b"stand-in")
        (run_dir / "last.pth").write_bytes(b"stand-in")
        _write(run_dir / "status.json", {"state": "completed", "step": cfg["train"]["steps"],
                                         "total_steps": cfg["train"]["steps"], "updated": time.time()})
        return {"state": "completed"}
""")


@pytest.fixture
def study_standin(tmp_path, monkeypatch):
    """``tsrx_study_standin:run_training`` on PYTHONPATH; STUDY_LOG set."""
    folder = tmp_path / "study_standin"
    folder.mkdir()
    (folder / "tsrx_study_standin.py").write_text(STUDY_STANDIN)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("STUDY_LOG", str(tmp_path / "study_log.jsonl"))
    monkeypatch.delenv("STUDY_FAIL", raising=False)
    return "tsrx_study_standin:run_training"


def study_log(tmp_path: Path) -> list[dict]:
    path = tmp_path / "study_log.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def write_study(
    folder: Path,
    entry: str | None = None,
    launcher: str = "local",
    launcher_extra: str = "",
    sr_extra: str = "",
) -> Path:
    """sr.toml (stage 1), rec.toml (stage 2, a grid over two heads), joint.toml (stage 3,
    two heads x two combiners, each loading stage 1 and its head's stage-2 run)."""
    # a table to train on: a stage without one is refused before any run directory exists
    lau = (
        '[data]\ntrain = { type = "textzoom", roots = ["train1"] }\n'
        f'[launcher]\ntype = "{launcher}"\n'
        + (f'entry = "{entry}"\n' if entry else "")
        + launcher_extra
    )
    (folder / "sr.toml").write_text(
        textwrap.dedent("""
        name = "sr"
        [model]
        sr = { type = "tsrn", blocks = 1, hidden_units = 8, stn = false }
        [train]
        steps = 4
        selectors = ["best_psnr"]
    """)
        + sr_extra
        + "\n"
        + lau
    )
    (folder / "rec.toml").write_text(
        textwrap.dedent("""
        name = "rec"
        [model]
        recognizer = { type = "crnn", cnn_width = 4, hidden_units = 8 }
        head = { type = "dense" }
        [train]
        steps = 4
        selectors = ["best_acc"]
        [grid]
        "model.head.type" = ["dense", "mlp"]
    """)
        + lau
    )
    path = folder / "joint.toml"
    path.write_text(
        textwrap.dedent("""
        name = "joint"
        needs = { sr = "sr.toml:best_psnr", rec = "rec.toml:best_acc" }
        [model]
        sr = { type = "tsrn", blocks = 1, hidden_units = 8, stn = false }
        recognizer = { type = "crnn", cnn_width = 4, hidden_units = 8 }
        head = { type = "dense" }
        init = { sr = "@sr", recognizer = "@rec", head = "@rec" }
        [train]
        steps = 4
        selectors = ["best_acc", "best_psnr"]
        [grid]
        "model.head.type" = ["dense", "mlp"]
        "loss.combiner.type" = ["avg", "uncertainty"]
    """)
        + lau
    )
    return path
