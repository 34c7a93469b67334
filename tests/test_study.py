"""Stage dependencies (``needs``): validation errors, the plan, the local launcher's sizing,
and whole studies run locally (stand-in trainer, and the real trainer at smoke size)."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from slurm_fixture import cli, tsrx  # noqa: F401
from study_fixture import study_log, study_standin, write_study  # noqa: F401

from tsrx.config.experiment import load_experiment
from tsrx.errors import ConfigError, TsrxError
from tsrx.launch import submit as submit_mod


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def _error(path, **kw) -> str:
    with pytest.raises((ConfigError, TsrxError)) as exc:
        load_experiment(path, **kw)
    return " ".join(str(exc.value).split())


# -- resolving needs ------------------------------------------------------------------
def test_each_run_loads_the_upstream_run_that_matches_its_grid_point(workdir):
    exp = load_experiment(write_study(workdir))
    assert len(exp.runs) == 4
    for run in exp.runs:
        head = run.config["model"]["head"]["type"]
        init = run.config["model"]["init"]
        assert init["sr"] == "runs/sr/main/best_psnr_model.pth"
        assert init["recognizer"] == init["head"]
        assert init["head"].startswith(f"runs/rec/head={head}-") and init["head"].endswith(
            "/best_acc_model.pth"
        )
        assert run.upstream["rec"].spec.config["model"]["head"]["type"] == head
        assert "needs" not in run.config  # config.toml stays self-contained
    assert set(exp.upstream) == {"sr", "rec"}


def test_launcher_type_and_data_sets_reach_the_upstream_stages(workdir):
    path = write_study(workdir)
    exp = load_experiment(path, ["launcher.type=slurm", "data.root=/elsewhere", "train.steps=9"])
    up = exp.upstream["sr"].runs[0].config
    assert up["launcher"]["type"] == "slurm" and up["data"]["root"] == "/elsewhere"
    assert up["train"]["steps"] == 4  # training keys are each stage's own
    assert exp.runs[0].config["train"]["steps"] == 9


def test_train_runs_dir_is_where_a_stage_finds_its_upstream_runs(workdir, capsys):
    """`tsrx train B --runs-dir X` looks for B's upstream checkpoints under X, as
    `--set launcher.runs_dir=X` does (it looked under ./runs before)."""
    path = write_study(workdir)
    code, _, err = cli(capsys, "train", str(path), "--runs-dir", "elsewhere", "--device", "cpu")
    assert code != 0
    assert "elsewhere/sr/main/best_psnr_model.pth: no such file" in " ".join(err.split())


def test_needs_cycle_is_an_error(workdir):
    _write(workdir / "a.toml", 'name = "a"\nneeds = { b = "b.toml:last" }\n')
    _write(workdir / "b.toml", 'name = "b"\nneeds = { a = "a.toml:last" }\n')
    msg = _error(workdir / "a.toml")
    assert "cycle" in msg and "a.toml -> " in msg and "b.toml" in msg


def test_needs_naming_a_missing_file_is_an_error(workdir):
    _write(workdir / "x.toml", 'name = "x"\nneeds = { sr = "nope.toml:best_psnr" }\n')
    msg = _error(workdir / "x.toml")
    assert "needs.sr" in msg and "'nope.toml' not found" in msg


def test_needs_without_a_selector_is_an_error(workdir):
    write_study(workdir)
    _write(workdir / "x.toml", 'name = "x"\nneeds = { sr = "sr.toml" }\n')
    msg = _error(workdir / "x.toml")
    assert "needs.sr" in msg and "FILE.toml:SELECTOR" in msg


def test_unknown_checkpoint_selector_is_an_error(workdir):
    write_study(workdir)
    _write(workdir / "x.toml", 'name = "x"\nneeds = { sr = "sr.toml:best_acc" }\n')
    msg = _error(workdir / "x.toml")
    assert "unknown checkpoint selector 'best_acc'" in msg and "best_psnr" in msg and "last" in msg


def test_reference_to_an_unknown_need_is_an_error(workdir):
    write_study(workdir)
    _write(
        workdir / "x.toml",
        """
        name = "x"
        needs = { sr = "sr.toml:best_psnr" }
        [model]
        sr = { type = "tsrn", blocks = 1, hidden_units = 8, stn = false }
        init = { sr = "@rsr" }
    """,
    )
    msg = _error(workdir / "x.toml")
    assert "model.init.sr" in msg and "@rsr names no entry of needs" in msg and "'sr'" in msg


def test_head_of_another_type_than_the_loaded_one_is_an_error(workdir):
    write_study(workdir)
    _write(
        workdir / "one.toml",
        """
        name = "one"
        [model]
        recognizer = { type = "crnn", cnn_width = 4, hidden_units = 8 }
        head = { type = "dense" }
        [train]
        selectors = ["best_acc"]
    """,
    )
    _write(
        workdir / "x.toml",
        """
        name = "x"
        needs = { rec = "one.toml:best_acc", sr = "sr.toml:best_psnr" }
        [model]
        sr = { type = "tsrn", blocks = 2, hidden_units = 8, stn = false }
        recognizer = { type = "crnn", cnn_width = 4, hidden_units = 8 }
        head = { type = "mlp" }
        init = { sr = "@sr", recognizer = "@rec", head = "@rec" }
    """,
    )
    msg = _error(workdir / "x.toml")
    assert (
        "model.init.head" in msg and "model.head.type is 'mlp' here but 'dense' in one/main" in msg
    )
    assert "model.init.sr" in msg and "model.sr.blocks is 2 here but 1 in sr/main" in msg


def test_an_upstream_grid_the_run_does_not_pin_is_ambiguous(workdir):
    write_study(workdir)
    _write(
        workdir / "x.toml",
        """
        name = "x"
        needs = { rec = "rec.toml:best_acc" }
        [model]
        recognizer = { type = "crnn", cnn_width = 4, hidden_units = 8 }
        init = { recognizer = "@rec" }
    """,
    )
    msg = _error(workdir / "x.toml")
    assert "needs.rec" in msg and "2 of its runs fit" in msg and "head=dense" in msg


def test_judge_weights_may_name_a_need_and_need_a_recognizer(workdir):
    write_study(workdir)
    _write(
        workdir / "x.toml",
        """
        name = "x"
        needs = { sr = "sr.toml:best_psnr" }
        [model]
        sr = { type = "tsrn", blocks = 1, hidden_units = 8, stn = false }
        [eval]
        judge_weights = "@sr"
    """,
    )
    assert "eval.judge_weights" in _error(workdir / "x.toml")
    assert "has no [model.recognizer] to judge with" in _error(workdir / "x.toml")


def test_new_is_refused_for_a_study(workdir, capsys):
    code, _, err = cli(capsys, "submit", str(write_study(workdir)), "--new")
    assert code == 2 and "--new cannot be used with needs" in " ".join(err.split())


# -- the plan ------------------------------------------------------------------------
def test_dry_run_prints_stages_in_order_with_dependencies_and_sbatch_scripts(
    workdir, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = cli(capsys, "submit", str(write_study(workdir, launcher="slurm")), "--dry-run")
    assert code == 0, err
    assert "3 stage(s), in this order" in out
    assert out.index("1: sr") < out.index("2: rec") < out.index("3: joint")
    dep = next(line for line in out.splitlines() if line.startswith("#SBATCH --dependency="))
    assert "afterok:<job of sr/main>:<job of rec/head=dense-" in dep  # ids come at submission
    assert "#SBATCH --kill-on-invalid-dep=yes" in out
    assert not (workdir / "runs").exists()


# -- the local launcher fits the machine -----------------------------------------------
def test_local_ranks_default_to_the_gpus_here_and_threads_share_the_cores(monkeypatch):
    monkeypatch.delenv("TSRX_THREADS", raising=False)
    cfg = {"launcher": {"gpus_per_node": 4, "tasks_per_node": None, "timeout_min": None}}
    cpu = submit_mod.local_parameters(cfg, gpus=0, cores=8)
    assert cpu["tasks_per_node"] == 1 and cpu["gpus_per_node"] == 0 and cpu["threads"] == 8
    gpu = submit_mod.local_parameters(cfg, gpus=2, cores=8)
    assert gpu["tasks_per_node"] == 2 and gpu["gpus_per_node"] == 2 and gpu["threads"] == 4
    cfg["launcher"]["tasks_per_node"] = 3  # explicit wins
    assert submit_mod.local_parameters(cfg, gpus=0, cores=2)["tasks_per_node"] == 3
    assert submit_mod.local_parameters(cfg, gpus=0, cores=2)["threads"] == 1
    # [launcher] threads chooses instead of cores // ranks (issue 26)
    cfg["launcher"]["threads"] = 5
    assert submit_mod.local_parameters(cfg, gpus=0, cores=2)["threads"] == 5
    # else the submitting shell's TSRX_THREADS (a shared machine), not cores // ranks
    monkeypatch.setenv("TSRX_THREADS", "2")
    assert submit_mod.local_parameters(cfg, gpus=0, cores=8)["threads"] == 5
    del cfg["launcher"]["threads"]
    assert submit_mod.local_parameters(cfg, gpus=0, cores=8)["threads"] == 2
    monkeypatch.setenv("TSRX_THREADS", "two")
    with pytest.raises(TsrxError, match="TSRX_THREADS='two': expected a positive integer"):
        submit_mod.local_parameters(cfg, gpus=0, cores=8)


def test_a_local_run_has_no_time_limit_unless_set():
    cfg = {"launcher": {"timeout_min": None}}
    assert submit_mod.local_parameters(cfg, gpus=0, cores=1)["timeout_min"] >= 60 * 24 * 365
    cfg["launcher"]["timeout_min"] = 15
    assert submit_mod.local_parameters(cfg, gpus=0, cores=1)["timeout_min"] == 15
    assert submit_mod.slurm_parameters({"launcher": {"timeout_min": None}}, "j")["time"] == 60


def test_rank_threads_are_exported_for_the_controller_and_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("TSRX_THREADS", raising=False)
    with submit_mod.rank_threads(3):
        assert os.environ["TSRX_THREADS"] == "3" and os.environ["OMP_NUM_THREADS"] == "3"
    assert os.environ["OMP_NUM_THREADS"] == "7" and "TSRX_THREADS" not in os.environ


# -- local studies -------------------------------------------------------------------
def _status(path, cwd):
    res = tsrx("status", str(path), "--json", cwd=cwd)
    assert res.returncode == 0, res.stderr
    return {f"{r['stage']}/{r['run']}": r for r in json.loads(res.stdout)}


@pytest.mark.slow
def test_local_study_runs_stages_in_order_and_blocks_dependants_of_a_failure(
    workdir, study_standin, monkeypatch
):
    path = write_study(workdir, study_standin)
    monkeypatch.setenv("STUDY_FAIL", "rec")
    monkeypatch.delenv("TSRX_THREADS", raising=False)  # the ranks then share the cores
    res = tsrx("submit", str(path), cwd=workdir, timeout=240)
    out = " ".join(res.stdout.split())
    assert res.returncode == 1, res.stdout + res.stderr
    ran = study_log(workdir)
    assert [r["run"].split("/")[0] for r in ran] == ["sr", "rec", "rec"]  # no joint run started
    assert {r["TSRX_THREADS"] for r in ran} == {str(len(os.sched_getaffinity(0)))}
    assert {r["OMP_NUM_THREADS"] for r in ran} == {str(len(os.sched_getaffinity(0)))}
    assert {r["WORLD_SIZE"] for r in ran} == {"1"}  # one rank on a CPU-only machine
    assert "not started: rec/head=dense-" in out and "failed" in out
    rows = _status(path, workdir)
    assert rows["sr/main"]["study_state"] == "done" and rows["sr/main"]["level"] == 1
    blocked = [r for k, r in rows.items() if k.startswith("joint/")]
    assert len(blocked) == 4 and all(r["study_state"] == "blocked" for r in blocked)
    assert all(
        "never started: upstream rec/head=" in r["why"] and "failed" in r["why"] for r in blocked
    )
    # the submitit folder of a local run is named by its job id
    sub = workdir / "runs" / "sr" / "submitit"
    job = json.loads((workdir / "runs" / "sr" / "main" / "meta.json").read_text())["jobs"][0][
        "job_id"
    ]
    assert (sub / job).is_dir() and not (sub / "%j").exists()

    # fixed: submitting again does only what is left, in order
    monkeypatch.delenv("STUDY_FAIL")
    res = tsrx("submit", str(path), cwd=workdir, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "sr/main: done already, not redone" in res.stdout
    again = study_log(workdir)[len(ran) :]
    assert [r["run"].split("/")[0] for r in again] == ["rec"] * 2 + ["joint"] * 4
    assert max(r["end"] for r in again[:2]) <= min(r["start"] for r in again[2:])
    rows = _status(path, workdir)
    assert all(r["study_state"] == "done" for r in rows.values()) and len(rows) == 7


@pytest.mark.slow
def test_smoke_study_with_the_real_trainer_prints_its_tables_with_accuracies(workdir):
    """The mini study's shape at smoke size: one command, three stages, tables with ACC."""
    data = workdir / "data"
    common = f'''
        [data]
        root = "{data}"
        synth = {{ train = 32, test = [8, 8, 8], seed = 0 }}
        train = {{ type = "textzoom", roots = ["train1"] }}
        val.easy = {{ type = "textzoom", roots = ["test/easy"] }}
        test.easy = {{ type = "textzoom", roots = ["test/easy"] }}
        test.medium = {{ type = "textzoom", roots = ["test/medium"] }}
        test.hard = {{ type = "textzoom", roots = ["test/hard"] }}
        voc_type = "lower"
        num_workers = 0
        [eval]
        batch_size = 8
        [launcher]
        type = "local"
    '''
    train = "[train]\nsteps = 2\nbatch_size = 8\nval_every = 1\nckpt_every = 2\nlog_every = 1\n"
    _write(
        workdir / "sr.toml",
        'name = "sr"\n[model]\nsr = { type = "tsrn", blocks = 1, '
        "hidden_units = 4, stn = false }\n" + train + 'selectors = ["best_psnr"]\n' + common,
    )
    _write(
        workdir / "rec.toml",
        'name = "rec"\n[model]\nrecognizer = { type = "crnn", '
        "cnn_width = 4, hidden_units = 8 }\n" + train + 'selectors = ["best_acc"]\n' + common,
    )
    path = _write(
        workdir / "joint.toml",
        """name = "joint"
        needs = { sr = "sr.toml:best_psnr", rec = "rec.toml:best_acc" }
        [model]
        sr = { type = "tsrn", blocks = 1, hidden_units = 4, stn = false }
        recognizer = { type = "crnn", cnn_width = 4, hidden_units = 8 }
        head = { type = "dense" }
        freeze = ["recognizer"]
        init = { sr = "@sr", recognizer = "@rec" }
        [grid]
        "loss.combiner.type" = ["avg", "uncertainty"]
    """
        + train
        + 'selectors = ["best_acc", "best_psnr"]\n'
        + common,
    )
    res = tsrx("submit", str(path), cwd=workdir, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "best_acc_model.pth" in out and "best_psnr_model.pth" in out  # the report's blocks
    assert "avg" in out and "uncertainty" in out
    assert "E-ACC" in out or "ACC" in out
    summary = json.loads(next((workdir / "runs" / "joint").glob("*avg*/summary.json")).read_text())
    acc = summary["final"]["average"]["acc"]
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0  # a real accuracy, not null
    assert "identical" in (out + res.stderr).lower()  # the identical-metrics check ran


def test_uncertainty_grid_is_the_notebooks_three_stage_study(workdir):
    from slurm_fixture import REPO

    from tsrx.launch.study import plan_study

    study = plan_study(REPO / "experiments" / "uncertainty_grid.toml")
    assert [s.experiment for s in study.stages] == [
        "sr_pretrain",
        "rec_finetune",
        "uncertainty_grid",
    ]
    assert [len(s.runs) for s in study.stages] == [1, 4, 8] and study.launcher == "slurm"
    for r in study.of(study.stages[-1]):
        cfg = r.planned.spec.config
        head = cfg["model"]["head"]["type"]
        assert cfg["model"]["init"]["sr"] == "runs/sr_pretrain/main/best_psnr_model.pth"
        assert f"rec_finetune/head={head}-" in cfg["model"]["init"]["head"]
        assert {u.label for u in r.upstream} == {
            "sr_pretrain/main",
            f"rec_finetune/{r.upstream[1].planned.spec.name}",
        }
        assert r.upstream[1].planned.spec.config["model"]["head"]["type"] == head
    assert all(r.todo == "submit" for r in study.runs)


def test_mini_study_runs_each_joint_configuration_with_three_seeds(workdir):
    """Issue 23: 4 heads x 2 combiners x 3 seeds = 24 joint runs; the upstream stages stay one
    run per configuration (a seed axis on the joint stage does not multiply them), and every
    seed of a head loads that head's stage-2 run."""
    from slurm_fixture import REPO

    from tsrx.launch.study import plan_study

    study = plan_study(REPO / "experiments" / "study_mini.toml")
    assert [s.experiment for s in study.stages][-1] == "mini_study"
    assert sorted(len(s.runs) for s in study.stages[:-1]) == [1, 1, 4]
    joint = study.of(study.stages[-1])
    assert len(joint) == 24 and study.launcher == "local"
    points = {}
    for r in joint:
        cfg = r.planned.spec.config
        key = (cfg["model"]["head"]["type"], cfg["loss"]["combiner"]["type"])
        points.setdefault(key, []).append(cfg["seed"])
        name = r.planned.spec.name
        assert name.startswith(f"head={key[0]},combiner={key[1]},seed={cfg['seed']}-"), name
        (rec,) = [u for u in r.upstream if "rec_finetune" in u.label]
        assert rec.planned.spec.config["model"]["head"]["type"] == key[0]
    assert len(points) == 8 and all(sorted(s) == [0, 1, 2] for s in points.values())


def test_a_narrow_crnn_keeps_the_recognizer_contract_and_the_default_keeps_meijierus_shapes():
    import torch

    from tsrx_builtin.crnn import CRNN

    small = CRNN(hidden_units=16, cnn_width=8)
    logits = small(torch.rand(2, 3, 32, 128))
    assert logits.shape == (26, 2, 37) and small.encode(torch.rand(2, 3, 32, 128)).shape == (
        26,
        2,
        32,
    )
    assert small.cnn.conv6.weight.shape[0] == 64
    full = CRNN().state_dict()
    assert (
        full["cnn.conv0.weight"].shape == (64, 1, 3, 3)
        and full["rnn.0.rnn.weight_ih_l0"].shape[1] == 512
    )


def test_a_completed_upstream_without_the_checkpoint_its_dependants_load_is_an_error(workdir):
    from tsrx.launch.rundir import prepare_run_dir
    from tsrx.launch.study import plan_study

    path = write_study(workdir)
    study = plan_study(path)
    sr = study.runs[0]
    prepare_run_dir(sr.planned.spec, sr.stage.runs_dir)
    (sr.run_dir / "status.json").write_text(json.dumps({"state": "completed", "step": 4}))
    with pytest.raises(TsrxError) as exc:
        plan_study(path)
    msg = " ".join(str(exc.value).split())
    assert (
        "runs/sr/main/best_psnr_model.pth" in msg and "sr/main completed without writing it" in msg
    )
    (sr.run_dir / "best_psnr_model.pth").write_bytes(b"x")
    assert plan_study(path).runs[0].todo == "done"
