"""RunLog (tsrx/engine/runfiles.py): what a run writes as it trains, rank 0 only."""

from __future__ import annotations

import json

from tsrx.engine.runfiles import RunLog


class _Scalars:
    """Records add_scalar calls, as TensorBoard's SummaryWriter would receive them."""

    def __init__(self):
        self.seen: dict[str, list] = {}
        self.closed = False

    def add_scalar(self, tag, value, step):
        self.seen.setdefault(tag, []).append((step, value))

    def close(self):
        self.closed = True


def _train_line(step: int) -> dict:
    return {
        "kind": "train",
        "step": step,
        "epoch": 0,
        "loss": 1.0 / step,
        "terms": {"sr": 1.0 / step},
        "lr": 1e-3,
        "samples_per_s": 10.0,
        "combiner": {"type": "uncertainty", "s_sr": 0.5},
        "skipped_steps": 0,
    }


RESULT = {
    "splits": {"easy": {"acc": 0.5, "psnr": 20.0, "ssim": 0.7, "acc_by_judge": {"crnn": 0.5}}},
    "average": {"acc": None, "psnr": 20.0, "ssim": 0.7, "acc_by_judge": {"crnn": 0.5}},
}


def _lines(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_rank0_writes_lines_status_scalars_and_resume_forgets_later_steps(tmp_path, caplog):
    log = RunLog(tmp_path, main=True, total_steps=4)
    log._tb = scalars = _Scalars()
    log.start_progress(0)
    with caplog.at_level("INFO", logger="tsrx.train"):
        for step in (1, 2, 3):
            log.train(_train_line(step))
        log.validation(3, RESULT)
    log.stop_progress()
    assert [x["step"] for x in _lines(tmp_path)] == [1, 2, 3, 3]
    assert _lines(tmp_path)[-1] == {"kind": "val", "step": 3, "result": RESULT}
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "running" and status["step"] == 3 and status["total_steps"] == 4
    assert "step 3/4 loss 0.33333 sr 0.33333 s_sr 0.5" in caplog.text
    assert "validation at step 3: acc[crnn] 0.5000, psnr 20.0000, ssim 0.7000" in caplog.text
    assert scalars.seen["train/loss"] == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]
    assert scalars.seen["train/s_sr"][0] == (1, 0.5) and "train/type" not in scalars.seen
    assert scalars.seen["val_easy/psnr"] == [(3, 20.0)]
    assert scalars.seen["val_average/acc_crnn"] == [(3, 0.5)]
    assert "val_average/acc" not in scalars.seen  # None is not a scalar
    log.forget_after(1)  # resumed from step 1's checkpoint
    assert [x["step"] for x in _lines(tmp_path)] == [1]
    log.close()
    assert scalars.closed


def test_other_ranks_write_nothing(tmp_path):
    log = RunLog(tmp_path, main=False, total_steps=4)
    log.start_progress(0)
    log.train(_train_line(1))
    log.validation(1, RESULT)
    log.status("completed", 4)
    log.forget_after(0)
    log.stop_progress()
    log.close()
    assert list(tmp_path.iterdir()) == []
