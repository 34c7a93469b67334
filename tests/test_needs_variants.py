"""``needs`` into an experiment file with ``[[variants]]``: a need that only orders the
stages waits on every run of it, a need whose checkpoint is loaded (``@NAME``) names one
variant (``FILE:VARIANT:SELECTOR``), else it is an error that names the candidates."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from slurm_fixture import cli  # noqa: F401

from tsrx.config.experiment import load_experiment
from tsrx.errors import ConfigError
from tsrx.launch import submit as submit_mod
from tsrx.launch.study import dependency_ids, plan_study, study_rows, submit_study, with_dependency

COMMON = """
[data]
train = { type = "textzoom", roots = ["train1"] }
[launcher]
type = "LAUNCHER"
"""
SR = 'sr = { type = "tsrn", blocks = 1, hidden_units = 8, stn = false }'


def _write(folder: Path, name: str, text: str, launcher: str = "local") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(text) + COMMON.replace("LAUNCHER", launcher))
    return path


def _upstream(folder: Path, launcher: str = "local") -> Path:
    """up.toml: one SR recipe, two variants (one sets nothing, one another learning rate)."""
    return _write(
        folder,
        "up",
        f"""
        name = "up"
        [model]
        {SR}
        [train]
        steps = 4
        selectors = ["best_psnr"]
        [[variants]]
        name = "small"
        [[variants]]
        name = "lr"
        optim.lr = 5e-4
        """,
        launcher,
    )


def _downstream(folder: Path, need: str, loads: bool, launcher: str = "local") -> Path:
    init = 'init = { sr = "@sr" }' if loads else ""
    return _write(
        folder,
        "down",
        f"""
        name = "down"
        needs = {{ sr = "{need}" }}
        [model]
        {SR}
        {init}
        [train]
        steps = 4
        """,
        launcher,
    )


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load_experiment(path)
    return " ".join(str(exc.value).split())


# -- which upstream runs -------------------------------------------------------------
def test_a_need_that_only_orders_waits_on_every_variant(workdir):
    _upstream(workdir)
    exp = load_experiment(_downstream(workdir, "up.toml:best_psnr", loads=False))
    (run,) = exp.runs
    assert [u.spec.variant for u in run.waits] == ["small", "lr"]
    assert not any(u.loads for u in run.waits)
    assert run.upstream == {}  # no one run stands for @sr
    assert "init" not in run.config["model"] or not run.config["model"]["init"]


def test_a_loaded_need_into_variants_it_cannot_tell_apart_is_an_error(workdir):
    """It used to load the first variant's weights: the variant that sets nothing fit every
    run, and the other one was left out by its learning rate, a key unrelated to weights."""
    up = _upstream(workdir)
    msg = _error(_downstream(workdir, "up.toml:best_psnr", loads=True))
    assert "needs.sr" in msg and str(up) in msg
    assert "@sr loads the weights of one run" in msg
    assert "small-" in msg and "lr,lr=0.0005-" in msg
    assert "[[variants]] small, lr" in msg
    assert '"up.toml:VARIANT:best_psnr"' in msg and '"up.toml:small:best_psnr"' in msg


def test_file_variant_selector_loads_that_variant(workdir):
    _upstream(workdir)
    exp = load_experiment(_downstream(workdir, "up.toml:lr:best_psnr", loads=True))
    (run,) = exp.runs
    assert run.upstream["sr"].spec.variant == "lr"
    init = run.config["model"]["init"]["sr"]
    assert init.startswith("runs/up/lr,lr=0.0005-") and init.endswith("/best_psnr_model.pth")
    assert [u.run for u in run.waits] == [run.upstream["sr"].run]
    # an ordering-only need that names a variant waits on that variant only
    exp = load_experiment(_downstream(workdir, "up.toml:small:best_psnr", loads=False))
    assert [u.spec.variant for u in exp.runs[0].waits] == ["small"]


def test_a_variant_that_does_not_exist_is_an_error(workdir):
    _upstream(workdir)
    msg = _error(_downstream(workdir, "up.toml:lrr:best_psnr", loads=True))
    assert "needs.sr" in msg and "'lrr' names no variant of up.toml" in msg
    assert "did you mean 'lr'" in msg and "its variants: small, lr" in msg
    _write(workdir, "plain", f"name = 'plain'\n[model]\n{SR}\n[train]\nselectors = ['best_psnr']")
    msg = _error(_downstream(workdir, "plain.toml:small:best_psnr", loads=True))
    assert "'small' names no variant of plain.toml" in msg
    assert 'it has no [[variants]]; write "plain.toml:best_psnr"' in msg


def test_a_variant_name_is_not_taken_for_part_of_the_file_name(workdir):
    """FILE:SELECTOR still means what it did when the selector is a variant's name too."""
    _upstream(workdir)
    msg = _error(_downstream(workdir, "up.toml:small", loads=True))
    assert "unknown checkpoint selector 'small'" in msg
    assert "'small' is a variant of up.toml: write \"up.toml:small:SELECTOR\"" in msg


def test_grid_runs_of_the_variant_are_matched_as_before(workdir):
    """Within a variant, the upstream grid's keys still pick the run of this one's point."""
    _write(
        workdir,
        "heads",
        """
        name = "heads"
        [model]
        recognizer = { type = "crnn", cnn_width = 4, hidden_units = 8 }
        head = { type = "dense" }
        [train]
        selectors = ["best_acc"]
        [grid]
        "model.head.type" = ["dense", "mlp"]
        [[variants]]
        name = "a"
        [[variants]]
        name = "b"
        optim.lr = 5e-4
        """,
    )
    path = _write(
        workdir,
        "joint",
        """
        name = "joint"
        needs = { rec = "heads.toml:b:best_acc" }
        [model]
        recognizer = { type = "crnn", cnn_width = 4, hidden_units = 8 }
        head = { type = "dense" }
        init = { recognizer = "@rec", head = "@rec" }
        [grid]
        "model.head.type" = ["dense", "mlp"]
        """,
    )
    for run in load_experiment(path).runs:
        up = run.upstream["rec"].spec
        assert up.variant == "b"
        assert up.config["model"]["head"]["type"] == run.config["model"]["head"]["type"]


# -- the study: stages, Slurm dependencies, the local order -----------------------------
def test_the_study_submits_every_variant_and_slurm_waits_on_all_their_jobs(workdir):
    _upstream(workdir, "slurm")
    study = plan_study(_downstream(workdir, "up.toml:best_psnr", loads=False, launcher="slurm"))
    assert [s.experiment for s in study.stages] == ["up", "down"]
    ups = study.of(study.stages[0])
    assert [r.planned.spec.variant for r in ups] == ["small", "lr"]
    (down,) = study.of(study.stages[1])
    assert down.upstream == ups
    for i, u in enumerate(ups):  # as submit_study sets them, stage by stage
        u.job_id = f"10{i}"
    assert dependency_ids(down) == ["100", "101"]
    extra = with_dependency({"nodes": 1}, dependency_ids(down))["additional_parameters"]
    assert extra == {"dependency": "afterok:100:101", "kill_on_invalid_dep": "yes"}
    ups[0].todo = "done"  # a completed upstream is no longer waited on
    assert dependency_ids(down) == ["101"]


def test_dry_run_names_every_variant_in_the_dependency(workdir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    _upstream(workdir, "slurm")
    path = _downstream(workdir, "up.toml:best_psnr", loads=False, launcher="slurm")
    code, out, err = cli(capsys, "submit", str(path), "--dry-run")
    assert code == 0, err
    dep = next(line for line in out.splitlines() if line.startswith("#SBATCH --dependency="))
    assert "afterok:<job of up/small-" in dep and ":<job of up/lr,lr=0.0005-" in dep


def _fake_submit(order: list[str], fail: str | None = None):
    """submit() of the local launcher without a job: the run completes (or fails) at once."""

    def submit(p, **kw):
        out = []
        for r in p.runs:
            state = "failed" if fail and r.spec.name.startswith(fail) else "completed"
            (r.run_dir / "status.json").write_text(json.dumps({"state": state, "step": 4}))
            order.append(f"{p.experiment}/{r.spec.variant or r.spec.name}")
            out.append(submit_mod.Submitted(r, "4242"))
        return out

    return submit


def test_a_local_study_starts_the_dependant_after_every_variant(workdir, monkeypatch):
    _upstream(workdir)
    path = _downstream(workdir, "up.toml:best_psnr", loads=False)
    order: list[str] = []
    monkeypatch.setattr(submit_mod, "submit", _fake_submit(order))
    runs = submit_study(plan_study(path))
    assert order == ["up/small", "up/lr", "down/main"]
    (down,) = [r for r in runs if r.stage.experiment == "down"]
    needs = json.loads((down.run_dir / "meta.json").read_text())["needs"]
    assert sorted(needs) == sorted(f"sr:{u.planned.spec.name}" for u in down.upstream)
    rows = {f"{r.stage}/{r.status.run}": r for r in study_rows([down.run_dir])}
    assert len(rows) == 3 and rows[f"down/{down.planned.spec.name}"].needs == [
        str(u.run_dir.absolute()) for u in down.upstream
    ]


def test_a_failed_variant_blocks_the_dependant(workdir, monkeypatch):
    _upstream(workdir)
    path = _downstream(workdir, "up.toml:best_psnr", loads=False)
    order: list[str] = []
    monkeypatch.setattr(submit_mod, "submit", _fake_submit(order, fail="lr"))
    runs = submit_study(plan_study(path))
    assert order == ["up/small", "up/lr"]
    (down,) = [r for r in runs if r.stage.experiment == "down"]
    assert down.todo == "blocked"
