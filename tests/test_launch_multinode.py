"""The multi-node experiment file submits as on a real cluster (no Slurm needed: dry run)."""

from __future__ import annotations

from pathlib import Path

from tsrx.launch import submit as submit_mod

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "sr_pretrain_2nodes.toml"


def test_two_nodes_of_four_gpus_with_the_notebooks_batch():
    plan = submit_mod.plan(EXPERIMENT)
    (run,) = plan.runs
    assert (
        run.spec.config["train"]["batch_size"] == 1024 and run.spec.config["train"]["deterministic"]
    )
    script = submit_mod.sbatch_script(plan)
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in script
    # one srun over every task of both nodes: submitit starts each rank
    assert "srun --unbuffered" in script and "submitit.core._submit" in script


def test_the_documented_override_for_the_two_node_test_slurm():
    plan = submit_mod.plan(
        EXPERIMENT,
        sets=[
            "slurm.partition=multi",
            "launcher.tasks_per_node=2",
            "launcher.cpus_per_task=1",
            "train.steps=20",
        ],
    )
    script = submit_mod.sbatch_script(plan)
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --partition=multi",
        "#SBATCH --cpus-per-task=1",
    ):
        assert line in script
    assert "--set slurm.partition=multi" in EXPERIMENT.read_text()
