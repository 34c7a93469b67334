"""tsrx submit on a real single-node Slurm (slurm/start.sh): arrays of 4-rank DDP jobs,
preemption and requeue, cancel, failures and Slurm's own error messages.

Each wait is bounded. The node has 4 CPUs, so 4-rank jobs run one at a time.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap

import pytest
import torch
from slurm_fixture import (  # noqa: F401
    cli,
    hold,
    hold_plugin,
    read_json,
    slurm_cluster,
    standin,
    status_rows,
    tiny_real_experiment,
    train_losses,
    tsrx,
    wait_for,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_array_of_four_rank_jobs_and_a_preempted_run_ends_like_an_uninterrupted_one(
    slurm_cluster, workdir
):
    # Two identical points (variants a and b): a runs straight through (held at its first
    # validation until the test has seen b queued behind it), b gets Slurm's preemption
    # signal mid-run (held there until then), saves, is requeued and resumes from last.pth.
    a_held, a_release, b_held = (workdir / n for n in ("a-held", "a-release", "b-held"))
    path = tiny_real_experiment(
        workdir / "pair.toml",
        workdir / "data" / "synth",
        "pair",
        "slurm",
        ranks=4,
        steps=8,
        top=hold_plugin(workdir),
        extra=f"""
        [[variants]]
        name = "a"
        train = {{ selectors = {hold(a_held, release=a_release)} }}
        [[variants]]
        name = "b"
        train = {{ selectors = {hold(b_held)} }}
    """,
    )
    # per-tensor gradient sums (train.deterministic): a resumed 4-rank run must end bit-identical
    path.write_text(
        path.read_text().replace("log_every = 1", "log_every = 1\ndeterministic = true")
    )
    res = tsrx("submit", str(path), cwd=workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 job(s) submitted" in res.stdout
    runs = {
        re.split(r"[-,]", d.name)[0]: d
        for d in (workdir / "runs" / "pair").iterdir()
        if d.name != "submitit"
    }
    jobs = {k: read_json(d / "meta.json")["jobs"][0]["job_id"] for k, d in runs.items()}
    array = jobs["a"].split("_")[0]
    assert jobs == {"a": f"{array}_0", "b": f"{array}_1"}  # one array for the grid

    def a_running_b_pending():
        rows = status_rows(workdir / "runs" / "pair", workdir)
        states = {re.split(r"[-,]", k)[0]: r["state"] for k, r in rows.items()}
        return states.get("a") == "running" and states.get("b") == "pending"

    wait_for(a_held.exists, 180, "a held at its first validation")
    wait_for(a_running_b_pending, 90, "a running while b waits for the node")
    a_release.touch()

    wait_for(b_held.exists, 180, "b held at its first validation")
    subprocess.run(["scancel", "--signal=USR2", jobs["b"]], check=True, timeout=30)
    wait_for(
        lambda: sum(j["event"] == "start" for j in read_json(runs["b"] / "meta.json")["jobs"]) >= 2,
        150,
        "b requeued and started again",
    )

    def both_completed():
        # status.json says completed before the final evaluation: summary.json comes last
        rows = status_rows(workdir / "runs" / "pair", workdir)
        done = all(r["state"] == "completed" for r in rows.values())
        return (
            done
            and all((read_json(d / "summary.json") or {}).get("final") for d in runs.values())
            and rows
        )

    rows = wait_for(both_completed, 240, "both runs completed", interval_s=3)
    row_b = next(r for k, r in rows.items() if k.startswith("b"))
    assert row_b["requeues"] >= 1 and "requeued" in row_b["label"]
    resumed = re.search(
        r"resumed from \S+ at step (\d+)", (runs["b"] / "logs" / "rank0.log").read_text()
    )
    assert resumed, "b did not resume from last.pth"
    assert "rank 3 of 4" in (runs["a"] / "logs" / "rank3.log").read_text()
    # The step after the resume sees exactly the saved model, optimizer and data order.
    first = int(resumed.group(1)) + 1
    assert first == 6  # held at step 4's validation: stopped after step 5
    assert train_losses(runs["b"]) == train_losses(runs["a"])
    # and ends exactly where the uninterrupted run ends (tsrx/engine/grad_sync.py says why
    # this needs train.deterministic with more than two ranks)
    final_a = read_json(runs["a"] / "summary.json")["final"]["average"]
    final_b = read_json(runs["b"] / "summary.json")["final"]["average"]
    assert final_b == final_a
    wa = torch.load(runs["a"] / "last.pth", weights_only=True)["model"]
    wb = torch.load(runs["b"] / "last.pth", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    def array_states():
        return subprocess.run(
            ["squeue", "-h", "-r", "--states=all", "-o", "%i|%T", "-j", array],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()

    # a clean DDP shutdown ends the job COMPLETED, not FAILED
    wait_for(
        lambda: array_states() and all(s.endswith("|COMPLETED") for s in array_states()),
        60,
        "Slurm to record both array tasks COMPLETED",
    )


def standin_file(tmp_path, entry, name, steps=200):
    path = tmp_path / f"{name}.toml"
    path.write_text(
        textwrap.dedent(f'''
        name = "{name}"
        [train]
        steps = {steps}
        ckpt_every = 5
        [launcher]
        type = "slurm"
        gpus_per_node = 4
        cpus_per_task = 1
        timeout_min = 5
        entry = "{entry}"
    ''')
    )
    return path


def test_cancelled_job_shows_cancelled(slurm_cluster, workdir, standin, monkeypatch):
    monkeypatch.setenv("STANDIN_STEP_S", "0.5")
    path = standin_file(workdir, standin, "cancelme")
    res = tsrx("submit", str(path), cwd=workdir)
    assert res.returncode == 0, res.stderr
    run = workdir / "runs" / "cancelme" / "main"
    wait_for(
        lambda: read_json(run / "status.json").get("step", 0) >= 1, 90, "the job to start training"
    )
    res = tsrx("cancel", str(path), cwd=workdir)
    assert res.returncode == 0 and "scancel" in res.stdout
    wait_for(
        lambda: status_rows(run, workdir)["main"]["state"] == "cancelled", 90, "state cancelled"
    )
    ranks = [json.loads(x) for x in (run / "ranks.jsonl").read_text().splitlines()]
    assert sorted(r["RANK"] for r in ranks) == ["0", "1", "2", "3"]
    assert {r["CUDA_VISIBLE_DEVICES"] for r in ranks} == {"0,1,2,3"}  # the fake GPUs


def test_failing_job_shows_failed(slurm_cluster, workdir, standin):
    path = standin_file(workdir, "tsrx_standin:no_such_function", "broken", steps=3)
    assert tsrx("submit", str(path), cwd=workdir).returncode == 0
    run = workdir / "runs" / "broken" / "main"
    wait_for(lambda: status_rows(run, workdir)["main"]["state"] == "failed", 120, "state failed")
    assert "no_such_function" in (run / "logs" / "rank0.log").read_text()


def test_slurm_messages_for_bad_partition_and_bad_option(slurm_cluster, workdir, standin, capsys):
    path = standin_file(workdir, standin, "bad", steps=3)
    code, _, err = cli(capsys, "submit", str(path), "--set", "slurm.partition=nosuch")
    assert code == 2 and "sbatch refused" in err and "invalid partition" in err.lower()
    code, _, err = cli(capsys, "submit", str(path), "--set", "slurm.extra.bogus_flag=1")
    assert code == 2 and "bogus-flag" in err
