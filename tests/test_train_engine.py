"""Training runs in one process: run-directory files, selectors, losses, combiners, NaN, stop."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_engine_helpers import metrics, prepare, tiny_data, tiny_plugin, weights, write_experiment  # noqa: F401

from tsrx.errors import TsrxError

JOINT = ['model.recognizer={type = "tiny_rec"}']


def _run(tmp_path, tiny_data, tiny_plugin, overrides=(), name="tiny", extra=""):
    from tsrx.engine.run import run_training

    exp = write_experiment(tmp_path, tiny_data, tiny_plugin, name, extra)
    run_dir = prepare(
        exp,
        tmp_path / "runs",
        ["train.steps=4", "train.val_every=2", "train.ckpt_every=2", *overrides],
    )
    return run_dir, run_training(run_dir, device="cpu")


def test_run_writes_the_documented_files(tmp_path, tiny_data, tiny_plugin):
    run_dir, result = _run(tmp_path, tiny_data, tiny_plugin)
    assert result["state"] == "completed" and result["step"] == 4
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == 4 and status["total_steps"] == 4
    train = metrics(run_dir, "train")
    assert [m["step"] for m in train] == [1, 2, 3, 4]
    assert set(train[0]) >= {"loss", "terms", "lr", "samples_per_s", "combiner"}
    assert train[0]["terms"]["sr"] == pytest.approx(train[0]["loss"])
    assert [m["step"] for m in metrics(run_dir, "val")] == [2, 4]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["losses"]["sr"]["type"] == "textzoom"  # the default, recorded
    assert summary["combiner"]["type"] == "avg"
    assert summary["final"]["splits"]["hard"]["n"] == 6
    assert summary["final"]["average"]["acc"] is None  # no judge: no accuracy, not a fake one
    best = summary["best"]["best_psnr"]
    assert best["step"] in (2, 4) and (run_dir / "best_psnr_model.pth").exists()
    assert all(k.startswith("sr.") for k in weights(run_dir / "last.pth"))
    assert (run_dir / "logs" / "rank0.log").read_text().count("validation at step") == 2


def test_selectors_write_their_files(tmp_path, tiny_data, tiny_plugin):
    run_dir, _ = _run(
        tmp_path,
        tiny_data,
        tiny_plugin,
        ['train.selectors=["best_psnr", {type = "best", metric = "ssim"}, "best_acc"]'],
    )
    val = metrics(run_dir, "val")
    best_ssim = max(val, key=lambda m: m["result"]["average"]["ssim"])
    ckpt = torch.load(run_dir / "best_ssim_model.pth", weights_only=True)
    assert ckpt["step"] == best_ssim["step"]
    assert ckpt["metrics"]["result"]["average"]["ssim"] == best_ssim["result"]["average"]["ssim"]
    assert ckpt["config"]["train"]["steps"] == 4
    # no recognizer and no judge weights: best_acc has nothing to select on, writes nothing
    assert not (run_dir / "best_acc_model.pth").exists()
    assert "best_acc" not in json.loads((run_dir / "summary.json").read_text())["best"]


def test_nonfinite_loss_stops_naming_step_and_terms(tmp_path, tiny_data, tiny_plugin):
    with pytest.raises(TsrxError, match=r"non-finite loss at step 2 .*sr=nan"):
        _run(tmp_path, tiny_data, tiny_plugin, ['loss.sr={type = "tiny_nan", at = 2}'])
    run_dir = tmp_path / "runs" / "tiny" / "main"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "step 2" in status["error"]


def test_nonfinite_loss_skip_counts_and_trains_on(tmp_path, tiny_data, tiny_plugin):
    run_dir, result = _run(
        tmp_path,
        tiny_data,
        tiny_plugin,
        ['loss.sr={type = "tiny_nan", at = 2}', 'train.on_nonfinite="skip"'],
    )
    assert result["state"] == "completed" and result["skipped_steps"] == 1
    assert json.loads((run_dir / "summary.json").read_text())["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in weights(run_dir / "last.pth").values())
    assert [m["skipped_steps"] for m in metrics(run_dir, "train")] == [0, 1, 1, 1]


# plain SGD without clipping: Adam and gradient clipping both ignore a common scale of the
# loss, which is all that separates the two combiners until the s_i drift apart
SGD = '\n[optim]\ntype = "sgd"\nlr = 0.01\n'
NO_CLIP = "train.grad_clip=0.0"


def test_changing_the_combiner_changes_the_trajectory(tmp_path, tiny_data, tiny_plugin):
    avg_dir, _ = _run(tmp_path / "a", tiny_data, tiny_plugin, [*JOINT, NO_CLIP], extra=SGD)
    unc_dir, _ = _run(
        tmp_path / "u",
        tiny_data,
        tiny_plugin,
        [*JOINT, NO_CLIP, 'loss.combiner={type = "uncertainty"}'],
        extra=SGD,
    )
    a, u = weights(avg_dir / "last.pth"), weights(unc_dir / "last.pth")
    assert "combiner.log_var.sr" in u and not any(k.startswith("combiner.") for k in a)
    assert max((a[k] - u[k]).abs().max().item() for k in a) > 1e-4
    losses_a = [m["terms"]["sr"] for m in metrics(avg_dir, "train")]
    losses_u = [m["terms"]["sr"] for m in metrics(unc_dir, "train")]
    assert losses_a[0] == pytest.approx(losses_u[0])  # same start, then they part
    assert all(x != pytest.approx(y, rel=1e-4) for x, y in zip(losses_a[1:], losses_u[1:]))
    # the run directory says which combiner ran, and the learned weights every step
    summary = json.loads((unc_dir / "summary.json").read_text())
    assert summary["combiner"]["type"] == "uncertainty"
    assert json.loads((avg_dir / "summary.json").read_text())["combiner"]["type"] == "avg"
    lines = metrics(unc_dir, "train")
    assert {"s_sr", "sigma_sr", "s_recognition", "sigma_recognition"} <= set(lines[-1]["combiner"])
    assert lines[-1]["combiner"]["type"] == "uncertainty"
    # gradients reached s_i: they moved away from their initial 0
    assert u["combiner.log_var.sr"].item() != 0.0
    assert summary["combiner"]["s"]["sr"] == pytest.approx(u["combiner.log_var.sr"].item())
    assert math.exp(0.5 * lines[-1]["combiner"]["s_sr"]) == pytest.approx(
        lines[-1]["combiner"]["sigma_sr"]
    )


def test_under_adam_uncertainty_starts_like_avg_unless_weights_differ(
    tmp_path, tiny_data, tiny_plugin
):
    """Adam ignores a common scale of the loss, and moves every s_i by about lr per step
    in the same direction while each exp(-s_i) L_i > 1: the relative task weights stay
    ~1 and the first steps track ``avg`` closely (docs/engine.md). The half-regression
    form weights SR 0.5 : recognition 1 from the first step, so it departs at once."""
    avg_dir, _ = _run(tmp_path / "a", tiny_data, tiny_plugin, JOINT)
    unc_dir, _ = _run(
        tmp_path / "u", tiny_data, tiny_plugin, [*JOINT, 'loss.combiner={type = "uncertainty"}']
    )
    half_dir, _ = _run(
        tmp_path / "h",
        tiny_data,
        tiny_plugin,
        [*JOINT, 'loss.combiner={type = "uncertainty", half_regression = true}'],
    )
    a, u, h = (weights(d / "last.pth") for d in (avg_dir, unc_dir, half_dir))
    close = max((a[k] - u[k]).abs().max().item() for k in a)
    apart = max((a[k] - h[k]).abs().max().item() for k in a)
    assert 0 < close < apart and apart > 1e-4
    assert u["combiner.log_var.sr"].item() == pytest.approx(
        u["combiner.log_var.recognition"].item(), abs=1e-3
    )


def test_default_losses_follow_the_model_parts(tmp_path, tiny_data, tiny_plugin):
    run_dir, _ = _run(tmp_path, tiny_data, tiny_plugin, JOINT)
    run = metrics(run_dir, "run")[0]
    assert run["tasks"] == ["sr", "recognition"]
    assert (
        run["losses"]["sr"]["type"] == "textzoom" and run["losses"]["recognition"]["type"] == "ctc"
    )
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    assert final["recognizer"] == "the model's own recognizer"
    assert 0.0 <= final["average"]["acc"] <= 1.0


def test_stop_request_saves_and_reports_preempted(tmp_path, tiny_data, tiny_plugin, monkeypatch):
    monkeypatch.setenv("TINY_STOP_AT", "3")
    run_dir, result = _run(tmp_path, tiny_data, tiny_plugin)
    assert result["state"] == "preempted" and result["step"] == 3
    assert torch.load(run_dir / "last.pth", weights_only=True)["step"] == 3
    assert json.loads((run_dir / "status.json").read_text())["state"] == "preempted"
    monkeypatch.delenv("TINY_STOP_AT")
    from tsrx.engine.run import run_training

    again = run_training(run_dir, device="cpu")  # resumes from last.pth
    assert again["state"] == "completed" and again["step"] == 4
    assert [m["step"] for m in metrics(run_dir, "train")] == [1, 2, 3, 4]


def test_global_batch_must_divide_over_processes():
    from tsrx.engine.build import per_rank_batch

    assert per_rank_batch(64, 4) == 16
    with pytest.raises(
        TsrxError, match=r"train.batch_size = 10 .* multiple of the number of processes \(3\)"
    ):
        per_rank_batch(10, 3)


def test_bf16_training_and_validation_run_on_cpu(tmp_path, tiny_data, tiny_plugin):
    # the same losses to bf16 rounding: the run's first loss against an fp32 run's
    overrides = ['train.precision="bf16"', 'eval.precision="bf16"']
    run_dir, result = _run(tmp_path / "bf16", tiny_data, tiny_plugin, overrides)
    exact_dir, _ = _run(tmp_path / "fp32", tiny_data, tiny_plugin)
    assert result["state"] == "completed" and result["step"] == 4
    bf16, fp32 = metrics(run_dir, "train")[0]["loss"], metrics(exact_dir, "train")[0]["loss"]
    assert math.isfinite(bf16) and abs(bf16 - fp32) <= 0.02 * abs(fp32)
    val = metrics(run_dir, "val")
    assert val and all(m["result"]["precision"] == "bf16" for m in val)
    assert all(m["result"]["average"]["psnr"] is not None for m in val)


def test_fp16_on_cpu_is_refused(tmp_path, tiny_data, tiny_plugin):
    with pytest.raises(TsrxError, match="fp16.*CUDA"):
        _run(tmp_path, tiny_data, tiny_plugin, ['train.precision="fp16"'])
    with pytest.raises(TsrxError, match="eval.precision 'fp16' needs a CUDA"):
        _run(tmp_path / "eval", tiny_data, tiny_plugin, ['eval.precision="fp16"'])


def test_tensorboard_events_when_installed(tmp_path, tiny_data, tiny_plugin):
    pytest.importorskip("tensorboard")
    run_dir, _ = _run(tmp_path, tiny_data, tiny_plugin)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_judge_weights_give_sr_validation_an_accuracy(tmp_path, tiny_data, tiny_plugin):
    from tsrx.registry import RECOGNIZERS

    crnn = tmp_path / "crnn.pth"
    torch.save(RECOGNIZERS.get("crnn")().state_dict(), crnn)  # meijieru's bare state_dict layout
    run_dir, _ = _run(
        tmp_path,
        tiny_data,
        tiny_plugin,
        [f"eval.judge_weights={crnn}", 'train.selectors=["best_acc", "best_psnr"]'],
    )
    val = metrics(run_dir, "val")[-1]["result"]
    assert val["recognizer"] == f"crnn ({crnn})"
    assert 0.0 <= val["average"]["acc"] <= 1.0
    assert (run_dir / "best_acc_model.pth").exists()  # a score exists, so the first one is best
    # per-image records of every validation and of the final evaluation, read by the report
    from tsrx.records import read_records
    from tsrx.report.collect import read_run

    steps = [line["step"] for line in metrics(run_dir, "val")]
    assert sorted(p.name for p in (run_dir / "records").glob("val-*.npz")) == [
        f"val-step{s:08d}.npz" for s in sorted(steps)
    ]
    rec = read_records(run_dir / "records" / f"val-step{steps[-1]:08d}.npz")
    assert rec.correct().mean() == pytest.approx(val["average"]["acc"])
    assert (run_dir / "records" / f"final-step{steps[-1]:08d}.npz").is_file()
    run = read_run(run_dir)
    (sel,) = [s for s in run.selectors() if s.name == "best_acc"]
    result, _ = run.result(sel)
    assert result is not None and result.records is not None and result.records.is_file()


def test_completed_only_after_the_final_evaluation_which_reuses_the_last_validation(
    tmp_path, tiny_data, tiny_plugin, monkeypatch
):
    import tsrx.engine.evaluator as evaluator
    from tsrx.engine.trainer import Trainer

    calls, seen = [], []
    real_eval, real_final = evaluator.evaluate_model, Trainer.final_evaluation

    def counting(*a, **k):
        calls.append(sorted(a[1]))
        return real_eval(*a, **k)

    def final(self):
        seen.append(json.loads((self.run_dir / "status.json").read_text())["state"])
        return real_final(self)

    monkeypatch.setattr(evaluator, "evaluate_model", counting)
    monkeypatch.setattr(Trainer, "final_evaluation", final)
    run_dir, result = _run(tmp_path, tiny_data, tiny_plugin)
    assert seen == ["running"]  # not "completed" while the final evaluation runs
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    # validations at steps 2 and 4; the final one is step 4's (same splits, batch size)
    assert len(calls) == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final"] == metrics(run_dir, "val")[-1]["result"]
    # different settings (baselines): evaluated again
    calls.clear()
    _run(tmp_path / "b", tiny_data, tiny_plugin, ["eval.baselines=true"])
    assert len(calls) == 3


def test_validation_with_named_judges_records_which_one_best_acc_follows(
    tmp_path, tiny_data, tiny_plugin
):
    from tsrx.registry import RECOGNIZERS

    torch.manual_seed(3)
    crnn = tmp_path / "crnn.pth"
    torch.save(RECOGNIZERS.get("crnn")().state_dict(), crnn)
    run_dir, _ = _run(
        tmp_path,
        tiny_data,
        tiny_plugin,
        [
            *JOINT,
            f'eval.judges.crnn={{type = "crnn", weights = "{crnn}"}}',
            'train.selectors=[{type = "best_acc", judge = "crnn"}, "best_psnr"]',
        ],
    )
    val = metrics(run_dir, "val")[-1]["result"]
    assert list(val["judges"]) == ["own", "crnn"] and val["primary_judge"] == "own"
    assert set(val["average"]["acc_by_judge"]) == {"own", "crnn"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best"]["best_acc"]["judge"] == "crnn"
    assert list(metrics(run_dir, "run")[0]["judges"]) == ["own", "crnn"]
    with pytest.raises(TsrxError, match="judge = 'ppocr' is not a judge of this run"):
        _run(
            tmp_path / "b",
            tiny_data,
            tiny_plugin,
            [*JOINT, 'train.selectors=[{type = "best_acc", judge = "ppocr"}]'],
        )


def test_val_judges_picks_who_reads_at_validation_and_the_final_table_has_them_all(
    tmp_path, tiny_data, tiny_plugin
):
    from tsrx.registry import RECOGNIZERS

    torch.manual_seed(3)
    crnn = tmp_path / "crnn.pth"
    torch.save(RECOGNIZERS.get("crnn")().state_dict(), crnn)
    judge = f'eval.judges.crnn={{type = "crnn", weights = "{crnn}"}}'
    both = 'train.selectors=["best_acc", "best_psnr"]'
    run_dir, _ = _run(
        tmp_path, tiny_data, tiny_plugin, [*JOINT, judge, both, 'eval.val_judges=["own"]']
    )
    assert all(list(m["result"]["judges"]) == ["own"] for m in metrics(run_dir, "val"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best"]["best_acc"]["judge"] == "own"
    assert list(summary["final"]["judges"]) == ["own", "crnn"]  # the test table: every judge
    # a selector following a judge that does not read at validation, and a name of no judge
    with pytest.raises(TsrxError, match="judge = 'crnn' is not a judge of this run"):
        _run(
            tmp_path / "b",
            tiny_data,
            tiny_plugin,
            [
                *JOINT,
                judge,
                'eval.val_judges=["own"]',
                'train.selectors=[{type = "best_acc", judge = "crnn"}]',
            ],
        )
    with pytest.raises(TsrxError, match=r"eval.val_judges\[0\]: 'ppocr' is not a judge"):
        _run(tmp_path / "c", tiny_data, tiny_plugin, [*JOINT, 'eval.val_judges=["ppocr"]'])


def test_a_best_checkpoint_of_the_last_step_gets_the_final_test_result_in_the_report_cache(
    tmp_path, tiny_data, tiny_plugin
):
    from tsrx.report.collect import Selected, read_run

    # two validations: best_psnr may come from step 2 or 4; last.pth is not a selector
    run_dir, result = _run(tmp_path, tiny_data, tiny_plugin)
    run = read_run(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    best = summary["best"]["best_psnr"]
    found, _ = run.result(Selected("best_psnr", best["file"]))
    assert found is not None
    if best["step"] == result["step"]:
        assert found.source == "test" and found.verified
        assert found.values["splits"] == summary["final"]["splits"]
        assert found.records is not None and found.records.is_file()
    else:  # an earlier step's weights: the report keeps its validation result
        assert found.source == "val"
    # a run that selects at its last validation only: every selector's file gets the result
    run_dir, _ = _run(tmp_path / "b", tiny_data, tiny_plugin, ["train.val_every=4"])
    found, _ = read_run(run_dir).result(Selected("best_psnr", "best_psnr_model.pth"))
    assert found is not None and found.source == "test" and found.verified


def test_final_evaluation_with_baselines_does_not_reread_the_last_validations_images(
    tmp_path, tiny_data, tiny_plugin, monkeypatch
):
    # issue 25: the quickstart's final table re-read the SR images its last validation read
    from tsrx.engine.judges import Judge
    from tsrx.registry import RECOGNIZERS

    crnn = tmp_path / "crnn.pth"
    torch.save(RECOGNIZERS.get("crnn")().state_dict(), crnn)
    read = []
    original = Judge._read
    monkeypatch.setattr(Judge, "_read", lambda self, x: read.append(len(x)) or original(self, x))
    from tsrx.engine.trainer import Trainer

    real_final, before_final = Trainer.final_evaluation, []

    def final_evaluation(self):
        before_final.append(sum(read))
        return real_final(self)

    monkeypatch.setattr(Trainer, "final_evaluation", final_evaluation)
    run_dir, _ = _run(
        tmp_path,
        tiny_data,
        tiny_plugin,
        [f'eval.judges.crnn={{type = "crnn", weights = "{crnn}"}}', "eval.baselines=true"],
    )
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    images = sum(s["n"] for s in final["splits"].values())
    # the final evaluation reads the bicubic images and at most the HR ones (the judge check
    # of the validations may have read some): the SR images were read at step 4
    assert images <= sum(read) - before_final[0] <= 2 * images
    assert final["baselines"]["bicubic"]["average"]["acc"] is not None
