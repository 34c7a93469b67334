"""tsrx submit without a Slurm: dry-run, resources, refused run directories, local runs."""

from __future__ import annotations

import json
import textwrap

import pytest
from slurm_fixture import cli, standin, standin_value, tiny_real_experiment, tsrx  # noqa: F401

from tsrx.engine.distributed import PORT_RANGE
from tsrx.errors import TsrxError
from tsrx.launch import submit as submit_mod


def grid_file(tmp_path, extra=""):
    path = tmp_path / "grid.toml"
    path.write_text(
        textwrap.dedent("""
        name = "grid"
        [model]
        sr = { type = "tsrn", blocks = 1, hidden_units = 8 }
        [data]
        train = { type = "textzoom", roots = ["train1"] }
        [launcher]
        type = "slurm"
        timeout_min = 30
        [slurm]
        partition = "gpu"
        account = "lab"
        setup = ["module load cuda"]
        extra = { exclusive = true }
        [grid]
        "loss.combiner.type" = ["avg", "uncertainty"]
    """)
        + textwrap.dedent(extra)
    )
    return path


def test_dry_run_prints_runs_differences_and_sbatch_script(workdir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = cli(capsys, "submit", str(grid_file(workdir)), "--dry-run")
    assert code == 0, err
    assert "2 run(s)" in out and "one job array via slurm" in out
    assert "combiner=avg-" in out and "combiner=uncertainty-" in out
    assert "loss.combiner.type" in out  # the differences table
    for line in (
        "#SBATCH --array=0-1%2",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --nodes=1",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --time=30",
        "#SBATCH --signal=USR2@90",
        "#SBATCH --exclusive",
        "module load cuda",
        "srun --unbuffered",
    ):
        assert line in out, line
    assert not (workdir / "runs").exists()  # nothing submitted, nothing created


def test_points_with_different_resources_become_separate_jobs(workdir):
    path = grid_file(workdir, '"launcher.timeout_min" = [10, 20]\n')
    plan = submit_mod.plan(path)
    assert len(plan.runs) == 4 and not plan.as_array
    assert sorted({r.params["time"] for r in plan.runs}) == [10, 20]
    assert len({r.params["job_name"] for r in plan.runs}) == 4  # one job per point
    script = submit_mod.sbatch_script(plan)
    assert "--array" not in script and "#SBATCH --time=10" in script


def test_no_sbatch_suggests_local_launcher(workdir, monkeypatch):
    plan = submit_mod.plan(grid_file(workdir))
    monkeypatch.setattr(submit_mod.shutil, "which", lambda name: None)
    with pytest.raises(TsrxError, match="--launcher local") as exc:
        submit_mod.submit(plan)
    assert "sbatch" in str(exc.value)
    assert not (workdir / "runs").exists()


def test_run_dir_with_other_config_is_refused_before_anything_runs(workdir, capsys):
    path = grid_file(workdir)
    from tsrx.launch.rundir import prepare_run_dir

    plan = submit_mod.plan(path)
    for r in plan.runs:
        prepare_run_dir(r.spec, plan.runs_dir)
    changed = submit_mod.plan(path, sets=["train.steps=7"])
    assert all(r.action.startswith("refused: config differs in train.steps") for r in changed.runs)
    code, _, err = cli(capsys, "submit", str(path), "--set", "train.steps=7", "--launcher", "local")
    err = " ".join(err.split())  # rich wraps long messages
    assert code == 2
    assert "belongs to a different config" in err and "train.steps" in err
    assert err.count("belongs to a different config") == 2  # every run, at once
    assert "--force" in err and "--new" in err
    assert "steps = 1000" in (plan.runs[0].run_dir / "config.toml").read_text()


def test_local_launcher_rejects_several_nodes(workdir):
    with pytest.raises(TsrxError, match="launcher.nodes"):
        submit_mod.plan(grid_file(workdir), launcher="local", sets=["launcher.nodes=2"])


def local_file(tmp_path, entry, steps=6, ranks=2, extra=""):
    path = tmp_path / "local.toml"
    path.write_text(
        textwrap.dedent(f'''
        name = "loc"
        [train]
        steps = {steps}
        ckpt_every = 2
        [launcher]
        type = "local"
        gpus_per_node = 0
        tasks_per_node = {ranks}
        entry = "{entry}"
    ''')
        + textwrap.dedent(extra)
    )
    return path


@pytest.mark.slow
def test_local_launcher_runs_all_ranks_to_completion(workdir, standin):
    res = tsrx("submit", str(local_file(workdir, standin)), cwd=workdir, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    run = workdir / "runs" / "loc" / "main"
    ranks = [json.loads(x) for x in (run / "ranks.jsonl").read_text().splitlines()]
    assert sorted(r["RANK"] for r in ranks) == ["0", "1"]
    assert {r["WORLD_SIZE"] for r in ranks} == {"2"} and {r["MASTER_ADDR"] for r in ranks} == {
        "127.0.0.1"
    }
    port = {r["MASTER_PORT"] for r in ranks}
    assert len(port) == 1 and PORT_RANGE[0] <= int(port.pop()) <= PORT_RANGE[1]
    assert json.loads((run / "summary.json").read_text())["final"]["value"] == standin_value(6)
    meta = json.loads((run / "meta.json").read_text())
    assert [j["event"] for j in meta["jobs"]] == ["submit", "start"]
    assert (run / "logs" / "rank1.log").exists()
    rows = json.loads(tsrx("status", "runs", "--json", cwd=workdir).stdout)
    assert rows[0]["state"] == "completed" and rows[0]["step"] == 6
    # same config again: resumes (already done) in the same directory, no new run dir
    again = tsrx("submit", str(local_file(workdir, standin)), cwd=workdir, timeout=120)
    assert again.returncode == 0 and sorted(
        p.name for p in (workdir / "runs" / "loc").iterdir()
    ) == ["main", "submitit"]


@pytest.mark.slow
def test_local_time_limit_saves_requeues_and_finishes_like_uninterrupted(
    workdir, standin, monkeypatch
):
    # timeout 1 min, signal 50 s before: every attempt gets SIGUSR2 ~10 s after it starts
    # (its start-up included, which a loaded machine stretches), so 30 steps of 0.4 s need
    # at least two attempts, each resuming from last.json.
    monkeypatch.setenv("STANDIN_STEP_S", "0.4")
    path = local_file(
        workdir,
        standin,
        steps=30,
        extra="""
        timeout_min = 1
        signal_delay_s = 50
        max_requeues = 8
    """,
    )
    res = tsrx("submit", str(path), cwd=workdir, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    run = workdir / "runs" / "loc" / "main"
    meta = json.loads((run / "meta.json").read_text())
    starts = [j for j in meta["jobs"] if j["event"] == "start"]
    assert len(starts) >= 2  # it was interrupted and started again
    assert json.loads((run / "summary.json").read_text())["final"]["value"] == standin_value(30)
    rows = json.loads(tsrx("status", str(run), "--json", cwd=workdir).stdout)
    assert rows[0]["state"] == "completed" and rows[0]["requeues"] == len(starts) - 1


@pytest.mark.slow
def test_local_launcher_with_the_real_trainer(workdir):
    path = tiny_real_experiment(
        workdir / "real.toml", workdir / "data" / "synth", "real", "local", ranks=2, steps=4
    )
    res = tsrx("submit", str(path), cwd=workdir, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    run = workdir / "runs" / "real" / "main"
    assert (run / "last.pth").exists() and (run / "summary.json").exists()
    assert "rank 1 of 2" in (run / "logs" / "rank1.log").read_text()
    rows = json.loads(tsrx("status", str(run), "--json", cwd=workdir).stdout)
    assert rows[0]["state"] == "completed" and rows[0]["step"] == 4 and "psnr" in rows[0]["metrics"]


@pytest.mark.parametrize("profile", ["example_cluster", "local_test"])
def test_cluster_profiles_extend_an_experiment(workdir, profile):
    from slurm_fixture import SLURM_DIR

    path = workdir / "exp.toml"
    path.write_text(
        f'extends = ["{SLURM_DIR / "profiles" / (profile + ".toml")}"]\n'
        '[model]\nsr = { type = "tsrn", blocks = 1, hidden_units = 8 }\n'
        '[data]\ntrain = { type = "textzoom", roots = ["train1"] }\n'
        "[launcher]\ntimeout_min = 7\n"
    )
    plan = submit_mod.plan(path)
    params = plan.runs[0].params
    assert plan.launcher == "slurm" and params["time"] == 7  # the experiment wins
    assert params["gpus_per_node"] == 4 and params["ntasks_per_node"] == 4
    assert params["partition"] == {"example_cluster": "gpu", "local_test": "debug"}[profile]
    script = submit_mod.sbatch_script(plan)
    assert f"#SBATCH --partition={params['partition']}" in script


def test_uncertainty_grid_is_eight_four_gpu_runs_in_one_array(workdir):
    from slurm_fixture import REPO

    plan = submit_mod.plan(REPO / "experiments" / "uncertainty_grid.toml")
    assert len(plan.runs) == 8 and plan.as_array and plan.launcher == "slurm"
    heads = {r.spec.config["model"]["head"]["type"] for r in plan.runs}
    combiners = {r.spec.config["loss"]["combiner"]["type"] for r in plan.runs}
    assert heads == {"dense", "mlp", "sidernn", "sidernn+mlp"} and combiners == {
        "avg",
        "uncertainty",
    }
    assert plan.runs[0].params["gpus_per_node"] == 4 and plan.runs[0].params["ntasks_per_node"] == 4
    assert "#SBATCH --array=0-7%8" in submit_mod.sbatch_script(plan)


def test_submitted_callable_is_a_tiny_pickle_without_torch(tmp_path):
    import cloudpickle

    from tsrx.launch.job import TrainJob

    job = TrainJob(tmp_path / "runs" / "exp" / "main", "slurm")
    data = cloudpickle.dumps(job)
    assert len(data) < 1000 and b"torch" not in data
    again = cloudpickle.loads(data).checkpoint().function  # what a requeue resubmits
    assert again.run_dir == job.run_dir and again.config_path.endswith("main/config.toml")
