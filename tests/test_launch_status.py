"""tsrx status / cancel / logs from run directories alone (no scheduler), and without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from slurm_fixture import cli

from tsrx.config.experiment import RunSpec
from tsrx.errors import TsrxError
from tsrx.launch import status as st
from tsrx.launch.rundir import prepare_run_dir, record_job
from tsrx.runfiles import update_meta


def make_run(root, name, *, state=None, step=None, job=None, launcher="slurm", starts=0, val=None):
    spec = RunSpec("exp", name, {}, {"name": "exp", "train": {"steps": 10}})
    d = prepare_run_dir(spec, root / "runs", command=["tsrx"])
    if job:
        record_job(d, job, launcher, event="submit")
        for i in range(starts):
            record_job(
                d, job, launcher, event="start", restart=i, started="2026-01-01T00:00:00+00:00"
            )
    if state:
        (d / "status.json").write_text(
            json.dumps(
                {
                    "state": state,
                    "step": step,
                    "total_steps": 10,
                    "updated": "2026-01-01T00:01:05+00:00",
                }
            )
        )
    if val:
        with open(d / "metrics.jsonl", "w") as f:
            f.write(json.dumps({"kind": "train", "step": 4, "loss": 1.0}) + "\n")
            f.write(json.dumps({"kind": "val", "step": 5, "result": {"average": val}}) + "\n")
            f.write('{"kind": "train", "step": 6, "lo')  # a line being written right now
    return d


def test_states_from_files_when_the_scheduler_has_forgotten(workdir):
    make_run(
        workdir,
        "done",
        state="completed",
        step=10,
        job="9876511",
        starts=2,
        val={"n": 8, "acc": 0.5, "psnr": 21.5, "ssim": 0.7},
    )
    make_run(workdir, "crashed", state="failed", step=3, job="9876512", starts=1)
    cancelled = make_run(workdir, "stopped", state="running", step=2, job="9876513", starts=1)
    update_meta(cancelled, cancelled="2999-01-01T00:00:00+00:00")
    make_run(workdir, "fresh")
    make_run(workdir, "gone", job="99999999", launcher="local", starts=1)  # no such process
    rows = {r.run: r for r in st.collect(st.find_run_dirs(workdir / "runs"))}
    assert rows["done"].state == "completed" and rows["done"].requeues == 1
    assert rows["done"].label == "completed (requeued 1x)"
    assert rows["done"].metrics == {"acc": 0.5, "psnr": 21.5, "ssim": 0.7, "val_step": 5}
    assert rows["done"].elapsed_s == 65 and rows["done"].job_id == "9876511"
    assert rows["crashed"].state == "failed" and rows["crashed"].step == 3
    assert rows["stopped"].state == "cancelled"
    assert rows["fresh"].state == "not submitted" and rows["fresh"].total_steps == 10
    assert rows["gone"].state == "failed"


def test_slurm_states_map_to_rows(workdir):
    d = make_run(workdir, "r", state="running", step=4, job="7_1", starts=1)
    assert st.run_status(d, {"7_1": "PENDING"}).label == "pending (requeued 1x)"
    assert st.run_status(d, {"7_1": "RUNNING"}).state == "running"
    assert st.run_status(d, {"7_1": "TIMEOUT"}).state == "timeout"
    assert st.run_status(d, {"7_1": "CANCELLED"}).state == "cancelled"
    assert st.run_status(d, {"7_1": "OUT_OF_MEMORY"}).state == "failed"


def test_submitit_result_file_decides_when_nothing_else_does(workdir):
    d = make_run(workdir, "r", job="5", starts=1)
    folder = workdir / "submitit"
    update_meta(d, submitit_folder=str(folder))
    (folder / "5").mkdir(parents=True)
    import pickle

    (folder / "5" / "5_0_result.pkl").write_bytes(pickle.dumps(("error", "Traceback ...")))
    assert st.run_status(d, {}).state == "failed"
    (folder / "5" / "5_0_result.pkl").write_bytes(pickle.dumps(("success", {"state": "completed"})))
    assert st.run_status(d, {}).state == "completed"


def test_status_cli_table_and_json(workdir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    make_run(
        workdir,
        "done",
        state="completed",
        step=10,
        job="9876511",
        starts=1,
        val={"n": 8, "acc": 0.5, "psnr": 21.5, "ssim": 0.7},
    )
    code, out, _ = cli(capsys, "status")
    assert code == 0
    assert (
        "done" in out
        and "completed" in out
        and "10/10" in out
        and "21.50" in out
        and "0.5000" in out
    )
    code, out, _ = cli(capsys, "status", "runs/exp/done", "--json")
    assert json.loads(out)[0]["state"] == "completed"


def test_status_of_an_experiment_file_reads_its_runs_dir(workdir, capsys):
    make_run(workdir, "one", state="running", step=1, job="9876503", starts=1)
    (workdir / "exp.toml").write_text('name = "exp"\n')
    assert [p.name for p in st.find_run_dirs(workdir / "exp.toml")] == ["one"]
    with pytest.raises(TsrxError, match="no such run directory"):
        st.find_run_dirs(workdir / "nowhere")


def test_status_does_not_import_torch(workdir):
    make_run(workdir, "done", state="completed", step=10, job="9876511", starts=1)
    code = (
        "import sys\nfrom tsrx.cli.main import main\n"
        "try:\n    main(['status', 'runs'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr


def test_logs_and_cancel_of_a_local_run(workdir, capsys):
    d = make_run(workdir, "r", job="99999999", launcher="local", starts=1)
    (d / "logs").mkdir()
    (d / "logs" / "rank1.log").write_text("hello from rank 1\n")
    code, out, _ = cli(capsys, "logs", str(d), "--rank", "1")
    assert code == 0 and "hello from rank 1" in out
    code, _, err = cli(capsys, "logs", str(d), "--rank", "3")
    assert code == 2 and "no log for rank 3" in err
    code, out, _ = cli(capsys, "cancel", str(d))
    assert code == 0 and "not running" in out


def test_follow_returns_once_every_run_has_ended(workdir, capsys):
    make_run(workdir, "done", state="completed", step=10, job="9876511", starts=1)
    make_run(workdir, "crashed", state="failed", step=3, job="9876512", starts=1)
    code, out, _ = cli(capsys, "status", "runs", "--follow")
    assert code == 0 and "completed" in out and "failed" in out


def test_nodes_of_the_latest_attempt(workdir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    d = make_run(workdir, "multi", state="running", step=4, job="31")
    record_job(d, "31", "slurm", event="start", restart=0, host="login", nodes="gpu[01-02]")
    record_job(d, "31", "slurm", event="start", restart=1, host="login", nodes="gpu[07,09]")
    old = make_run(workdir, "old", state="completed", step=10, job="9876511")
    record_job(old, "9876511", "local", event="start", host="box7")  # before nodes were recorded
    make_run(workdir, "queued", job="32")
    rows = {r.run: r for r in st.collect(st.find_run_dirs(workdir / "runs"))}
    assert rows["multi"].nodes == "gpu[07,09]"  # the requeued attempt ran elsewhere
    assert rows["old"].nodes == "box7" and rows["queued"].nodes is None
    code, out, _ = cli(capsys, "status")
    assert code == 0 and "nodes" in out and "gpu[07,09]" in out and "box7" in out
    code, out, _ = cli(capsys, "status", "runs/exp/multi", "--json")
    assert json.loads(out)[0]["nodes"] == "gpu[07,09]"
