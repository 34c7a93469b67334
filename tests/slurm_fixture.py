"""Shared helpers for the launcher tests: the real test Slurm, a stand-in trainer, bounded waits.

``slurm_cluster`` starts the test Slurm from ``slurm/start.sh`` once per test session,
with two nodes (tsrx-n1, tsrx-n2 on this host), and stops it with ``slurm/stop.sh``. Its
default partition ``debug`` holds tsrx-n1 only, so single-node tests see the one-node
cluster (4 CPUs, 4-rank jobs queue one after another); multi-node jobs ask for
``MULTI_PARTITION``, which holds both. Without root it skips with the reason, unless
``CI=true``: there the Slurm tests must run, so it fails instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "slurm"
SLURM_ROOT = Path(os.environ.get("TSRX_SLURM_ROOT", "/tmp/tsrx-slurm"))
ON_CI = os.environ.get("CI", "").lower() == "true"
TSRX = [sys.executable, "-c", "from tsrx.cli.main import main; main()"]
SLURM_NODES = ("tsrx-n1", "tsrx-n2")
MULTI_PARTITION = "multi"  # every node; the default partition "debug" is the first node


def _unavailable(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"CI=true but the test Slurm cannot run: {reason}")
    pytest.skip(f"no test Slurm: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running two-node Slurm; yields the environment (SLURM_CONF, PATH with sacct stand-in)."""
    if os.geteuid() != 0:
        _unavailable("needs root to start slurmctld/slurmd (see slurm/README.md)")
    try:
        res = subprocess.run(
            [str(SLURM_DIR / "start.sh")],
            capture_output=True,
            text=True,
            timeout=300,
            env={
                **os.environ,
                "TSRX_SLURM_ROOT": str(SLURM_ROOT),
                "TSRX_SLURM_NODES": str(len(SLURM_NODES)),
            },
        )
    except subprocess.TimeoutExpired:
        _unavailable("slurm/start.sh did not finish within 300 s")
    if res.returncode != 0:
        _unavailable(f"slurm/start.sh failed ({res.returncode}): {res.stderr[-2000:]}")
    env = {
        "SLURM_CONF": str(SLURM_ROOT / "etc" / "slurm.conf"),
        "PATH": f"{SLURM_ROOT / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        subprocess.run(
            [str(SLURM_DIR / "stop.sh")],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TSRX_SLURM_ROOT": str(SLURM_ROOT)},
        )
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def read_json(path: Path) -> dict:
    """A run file's JSON, or {} while it is missing or being replaced."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def train_losses(run_dir: Path) -> dict[int, float]:
    """{step: loss} of the run's metrics.jsonl train lines."""
    lines = [
        json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()
    ]
    return {x["step"]: x["loss"] for x in lines if x.get("kind") == "train"}


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 1.0
) -> Any:
    """Poll until ``predicate()`` is truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def tsrx(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """The CLI as a user runs it."""
    return subprocess.run(
        [*TSRX, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (no second torch import): (exit code, stdout, stderr)."""
    from tsrx.cli.main import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def status_rows(target: Path | str, cwd: Path) -> dict[str, dict]:
    res = tsrx("status", str(target), "--json", cwd=cwd)
    assert res.returncode == 0, res.stderr
    return {r["run"]: r for r in json.loads(res.stdout)}


# A trainer with the engine's contract (run_training(run_dir) -> {"state": ...},
# stops at a step boundary on tsrx.engine.signals.request_stop) and no torch: each step
# takes STANDIN_STEP_S; rank 0 keeps {"step", "value"} in last.json; the final value
# depends only on the number of steps, so an interrupted run must end equal to an
# uninterrupted one. Every rank appends what it saw to ranks.jsonl.
STANDIN = textwrap.dedent("""
    import json, os, time, tomllib
    from pathlib import Path
    from tsrx.engine.signals import stop_requested

    def _write(path, obj):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)

    def run_training(run_dir, env=None):
        run_dir = Path(run_dir)
        cfg = tomllib.loads((run_dir / "config.toml").read_text())
        total, every = cfg["train"]["steps"], cfg["train"]["ckpt_every"]
        rank = int(os.environ["RANK"])
        with open(run_dir / "ranks.jsonl", "a") as f:
            f.write(json.dumps({k: os.environ.get(k) for k in (
                "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                "SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}) + "\\n")
        ckpt = run_dir / "last.json"
        state = json.loads(ckpt.read_text()) if ckpt.exists() else {"step": 0, "value": 1}
        delay = float(os.environ.get("STANDIN_STEP_S", "0.05"))
        while state["step"] < total:
            if stop_requested():
                if rank == 0:
                    _write(ckpt, state)
                return {"state": "preempted", "step": state["step"]}
            time.sleep(delay)
            state = {"step": state["step"] + 1, "value": (state["value"] * 31 + state["step"]) % 1000003}
            if rank == 0:
                _write(run_dir / "status.json", {"state": "running", "step": state["step"],
                                                 "total_steps": total, "updated": time.time()})
                if state["step"] % every == 0:
                    _write(ckpt, state)
        if rank == 0:
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"kind": "val", "step": total, "result": {"average": {
                    "n": 1, "acc": state["value"] / 1000003, "psnr": 20.0, "ssim": 0.5}}}) + "\\n")
            _write(run_dir / "summary.json", {"final": state})
            _write(run_dir / "status.json", {"state": "completed", "step": total,
                                             "total_steps": total, "updated": time.time()})
        return {"state": "completed", "value": state["value"]}
""")


def standin_value(steps: int) -> int:
    state = {"step": 0, "value": 1}
    while state["step"] < steps:
        state = {
            "step": state["step"] + 1,
            "value": (state["value"] * 31 + state["step"]) % 1000003,
        }
    return state["value"]


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """Puts the stand-in trainer module ``tsrx_standin`` on PYTHONPATH (jobs inherit it)."""
    folder = tmp_path / "standin"
    folder.mkdir()
    (folder / "tsrx_standin.py").write_text(STANDIN)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
    )
    monkeypatch.syspath_prepend(str(folder))
    return "tsrx_standin:run_training"


# A selector that holds rank 0 at a run's first validation until the run is asked to stop
# (or a release file appears), so that what a test looks for happens mid-run: a tiny run
# trains 8 steps in ~2 s, and on a loaded machine "signal once step 2 is logged" arrived
# after the last step (no requeue at all). It scores -inf (never the best) and holds once
# per marker file (written when the hold begins): a requeued attempt runs on.
HOLD_PLUGIN = textwrap.dedent("""
    import math, os, time
    from pathlib import Path
    from tsrx.engine.signals import stop_requested
    from tsrx.registry import SELECTORS

    @SELECTORS.register("hold")
    class Hold:
        name = "hold"
        filename = "hold_model.pth"

        def __init__(self, marker: str, release: str = "", timeout_s: float = 900.0):
            self.marker, self.timeout_s = Path(marker), float(timeout_s)
            self.release = Path(release) if release else None

        def released(self):
            return stop_requested() is not None or (self.release and self.release.exists())

        def score(self, result):
            # the contract check scores a dry result (no "protocol") when the run is built
            real = "protocol" in result
            if real and os.environ.get("RANK", "0") == "0" and not self.marker.exists():
                self.marker.write_text(str(os.getpid()))
                deadline = time.monotonic() + self.timeout_s
                while not self.released():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"held {self.timeout_s} s: no stop, no release")
                    time.sleep(0.05)
            return -math.inf
""")


def hold_plugin(folder: Path) -> str:
    """Writes the hold plugin into ``folder``; returns the experiment's ``plugins`` line."""
    plugin = folder / "hold_plugin.py"
    plugin.write_text(HOLD_PLUGIN)
    return f'plugins = ["{plugin}"]'


def hold(marker: Path, release: Path | None = None) -> str:
    """``train.selectors`` that hold at the first validation until stopped (or ``release``)."""
    extra = f', release = "{release}"' if release else ""
    return f'["best_psnr", {{ type = "hold", marker = "{marker}"{extra} }}]'


def tiny_real_experiment(
    path: Path,
    data_root: Path,
    name: str,
    launcher: str,
    ranks: int,
    steps: int = 8,
    extra: str = "",
    top: str = "",
) -> Path:
    """A real-trainer experiment that trains in seconds: tiny TSRN, 32 synthetic images.

    ``top`` goes before the tables (e.g. a ``plugins`` line), ``extra`` after them."""
    path.write_text(
        textwrap.dedent(f'''
        {top}
        name = "{name}"
        seed = 0
        [data]
        root = "{data_root}"
        synth = {{ train = 32, test = [8, 8, 8], seed = 0 }}
        train = {{ type = "textzoom", roots = ["train1"] }}
        val.easy = {{ type = "textzoom", roots = ["test/easy"] }}
        test.easy = {{ type = "textzoom", roots = ["test/easy"] }}
        num_workers = 0
        [model]
        sr = {{ type = "tsrn", blocks = 1, hidden_units = 8, stn = false }}
        [train]
        steps = {steps}
        batch_size = 8
        val_every = 4
        ckpt_every = 4
        log_every = 1
        selectors = ["best_psnr"]
        [eval]
        batch_size = 8
        [launcher]
        type = "{launcher}"
        gpus_per_node = {ranks if launcher == "slurm" else 0}
        tasks_per_node = {ranks}
        timeout_min = 10
        signal_delay_s = 30
    ''')
        + textwrap.dedent(extra)
    )
    return path
