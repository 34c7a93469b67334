"""Loss combiners: hand-computed totals, learned weights that really learn."""

from __future__ import annotations

import math

import pytest
import torch

from tsrx.errors import TsrxError
from tsrx.registry import COMBINERS

TASKS = ["sr", "recognition"]


def build(table):
    return COMBINERS.build(table, "loss.combiner", tasks=list(TASKS))


def losses(sr=2.0, rec=0.5):
    return {"sr": torch.tensor(sr), "recognition": torch.tensor(rec)}


def test_avg_is_the_plain_mean_and_logs_each_task():
    total, logs = build({"type": "avg"})(losses())
    assert total.item() == pytest.approx(1.25)
    assert logs == {"sr": pytest.approx(2.0), "recognition": pytest.approx(0.5)}
    assert list(build({"type": "avg"}).parameters()) == []


def test_sum_is_the_plain_sum():
    total, logs = build({"type": "sum"})(losses())
    assert total.item() == pytest.approx(2.5)
    assert logs == {"sr": pytest.approx(2.0), "recognition": pytest.approx(0.5)}
    assert build({"type": "sum"}).describe() == {"type": "sum", "tasks": TASKS}


def test_uncertainty_default_form_by_hand():
    comb = build({"type": "uncertainty", "init": math.log(2.0)})
    total, logs = comb(losses())
    # exp(-s) * L + s with exp(-s) = 1/2 for both tasks
    assert total.item() == pytest.approx(
        0.5 * 2.0 + math.log(2) + 0.5 * 0.5 + math.log(2), rel=1e-6
    )
    assert logs["s_sr"] == pytest.approx(math.log(2.0))
    assert logs["sigma_sr"] == pytest.approx(math.sqrt(2.0))  # sigma^2 = exp(s)
    assert logs["sr"] == pytest.approx(2.0) and logs["recognition"] == pytest.approx(0.5)


def test_uncertainty_total_differs_from_avg_for_unequal_losses():
    avg_total, _ = build({"type": "avg"})(losses())
    unc_total, _ = build({"type": "uncertainty"})(losses())
    assert unc_total.item() == pytest.approx(2.5)  # s = 0: the sum, not the mean
    assert unc_total.item() != pytest.approx(avg_total.item())


def test_gradient_reaches_each_s_by_hand():
    comb = build({"type": "uncertainty"})
    total, _ = comb(losses())
    total.backward()
    # d/ds (exp(-s) L + s) = 1 - L at s = 0
    assert comb.log_var["sr"].grad.item() == pytest.approx(1 - 2.0)
    assert comb.log_var["recognition"].grad.item() == pytest.approx(1 - 0.5)


def test_half_regression_is_kendall_eq10():
    comb = build({"type": "uncertainty", "half_regression": True})
    total, _ = comb(losses())
    assert total.item() == pytest.approx(0.5 * 2.0 + 1.0 * 0.5)
    total.backward()
    # regression: 0.5 - 0.5 L; classification: 0.5 - L
    assert comb.log_var["sr"].grad.item() == pytest.approx(0.5 - 1.0)
    assert comb.log_var["recognition"].grad.item() == pytest.approx(0.5 - 0.5)


@pytest.mark.parametrize("half, rec_optimum", [(False, math.log(0.5)), (True, math.log(1.0))])
def test_optimising_s_converges_to_the_analytic_optimum(half, rec_optimum):
    comb = build({"type": "uncertainty", "half_regression": half})
    opt = torch.optim.Adam(comb.parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        comb(losses())[0].backward()
        opt.step()
    # minimum of a*exp(-s)*L + b*s is s = log(a L / b)
    assert comb.log_var["sr"].item() == pytest.approx(math.log(2.0), abs=1e-3)
    assert comb.log_var["recognition"].item() == pytest.approx(rec_optimum, abs=1e-3)


def test_learned_s_are_saved_and_restored_via_state_dict():
    comb = build({"type": "uncertainty", "init": 0.3})
    state = {f"combiner.{k}": v for k, v in comb.state_dict().items()}
    assert sorted(state) == ["combiner.log_var.recognition", "combiner.log_var.sr"]
    fresh = build({"type": "uncertainty"})
    fresh.load_state_dict({k.removeprefix("combiner."): v for k, v in state.items()})
    assert fresh.describe()["s"] == {"sr": pytest.approx(0.3), "recognition": pytest.approx(0.3)}


def test_describe_records_which_combiner_ran():
    assert build({"type": "avg"}).describe()["type"] == "avg"
    desc = build({"type": "uncertainty", "init": 1.0}).describe()
    assert desc["type"] == "uncertainty" and desc["sigma"]["sr"] == pytest.approx(math.exp(0.5))


def test_mismatched_tasks_are_named():
    with pytest.raises(TsrxError, match=r"built for tasks \['sr', 'recognition'\].*\['sr'\]"):
        build({"type": "avg"})({"sr": torch.tensor(1.0)})


def test_tasks_cannot_be_set_in_toml():
    with pytest.raises(TsrxError, match="tasks"):
        COMBINERS.build({"type": "avg", "tasks": ["sr"]}, "loss.combiner", tasks=TASKS)
