"""One writer per run directory on the real test Slurm (issue 14, point 2):
``tsrx submit S & tsrx submit S`` trains the run once; a submit while it trains is refused
naming the job; a job that bypasses tsrx submit is refused by the run directory's lock."""

from __future__ import annotations

import json
import subprocess

import pytest
from slurm_fixture import (  # noqa: F401
    TSRX,
    hold,
    hold_plugin,
    read_json,
    slurm_cluster,
    tiny_real_experiment,
    tsrx,
    wait_for,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_concurrent_submits_train_the_run_once(slurm_cluster, workdir):
    # the run holds at its first validation (step 60) until the test has seen both refusals
    held, release = workdir / "held", workdir / "release"
    path = tiny_real_experiment(
        workdir / "twice.toml",
        workdir / "data" / "synth",
        "twice",
        "slurm",
        ranks=1,
        steps=120,
        top=hold_plugin(workdir),
    )
    path.write_text(
        path.read_text()
        .replace('selectors = ["best_psnr"]', f"selectors = {hold(held, release=release)}")
        .replace("val_every = 4", "val_every = 60")
        .replace("ckpt_every = 4", "ckpt_every = 60")
        .replace("log_every = 1", "log_every = 5")
    )
    procs = [
        subprocess.Popen(
            [*TSRX, "submit", str(path)],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    refused = next(r for r in results if r[0] == 2)[2]
    assert "another tsrx submit of experiment twice" in refused or "already has job" in refused, (
        refused
    )
    run = workdir / "runs" / "twice" / "main"
    submits = [j for j in read_json(run / "meta.json")["jobs"] if j["event"] == "submit"]
    assert len(submits) == 1
    job_id = submits[0]["job_id"]

    wait_for(held.exists, 240, "the job to train (held at step 60)")
    again = tsrx("submit", str(path), cwd=workdir)
    assert again.returncode == 2, again.stderr
    assert f"is being written by job {job_id} (slurm)" in again.stderr, again.stderr

    # a job that bypasses tsrx submit (an older tsrx, a hand-made sbatch) meets the lock
    code = (
        "import sys\nfrom tsrx.launch.submit import plan, _executor\nfrom tsrx.launch.job import TrainJob\n"
        "p = plan(sys.argv[1])\nex = _executor(p, p.runs[0].params)\n"
        "job = ex.submit(TrainJob(sys.argv[2], 'slurm'))\nprint(job.job_id)\n"
    )
    res = subprocess.run(
        [TSRX[0], "-c", code, str(path), str(run)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    intruder = res.stdout.strip().splitlines()[-1]
    folder = workdir / "runs" / "twice" / "submitit" / intruder

    def refused():
        return (
            any(
                "is being written by job" in f.read_text(errors="replace")
                for f in folder.glob("*_log.*")
            )
            if folder.is_dir()
            else False
        )

    try:
        wait_for(refused, 240, "the second job to be refused")
    except BaseException:
        queue = subprocess.run(
            ["squeue", "-a", "-o", "%i %T %R"], capture_output=True, text=True
        ).stdout
        files = (
            {f.name: f.read_text(errors="replace")[-800:] for f in folder.glob("*")}
            if folder.is_dir()
            else {}
        )
        raise AssertionError(f"intruder {intruder}: squeue:\n{queue}\nfiles: {files}") from None
    log = next(f for f in folder.glob("*_log.*") if "is being written by job" in f.read_text())
    assert f"job {job_id} (slurm)" in log.read_text()

    release.touch()
    wait_for(
        lambda: read_json(run / "status.json").get("state") == "completed",
        400,
        "the run to complete",
        interval_s=3,
    )
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [x["step"] for x in lines if x["kind"] == "train"]
    assert steps == list(range(5, 121, 5))  # each step once: no duplicated, interleaved writer
    assert sum(1 for x in lines if x["kind"] == "run") == 1
    assert (run / "logs" / "rank0.log").resolve().parent.name == job_id  # log link not hijacked
