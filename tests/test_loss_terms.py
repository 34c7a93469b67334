"""Loss terms: a loss plugin's named terms reach the combiner and metrics.jsonl, and the
model, not the engine, says what each term's loss reads (docs/engine.md, "Loss terms")."""

from __future__ import annotations

import pytest
import torch
from test_engine_helpers import metrics, prepare, tiny_data, tiny_plugin, write_experiment  # noqa: F401

from tsrx.contracts import ContractError

# a user's own plugin file, outside tsrx/, registered like the built-ins
USER_PLUGIN = '''
import torch.nn.functional as F
from torch import nn

from tsrx.registry import SR_LOSSES


@SR_LOSSES.register("pixel_and_edge")
class PixelAndEdge(nn.Module):
    """L1 on the pixels and on the horizontal differences, logged as two terms."""

    terms = ("pixel", "edge")

    def __init__(self, edge_weight: float = 2.0):
        super().__init__()
        self.edge_weight = edge_weight

    def forward(self, sr, hr):
        edge = F.l1_loss(sr.diff(dim=-1), hr.diff(dim=-1))
        return {"pixel": F.l1_loss(sr, hr), "edge": self.edge_weight * edge}


@SR_LOSSES.register("says_two_gives_one")
class SaysTwoGivesOne(nn.Module):
    terms = ("pixel", "edge")

    def forward(self, sr, hr):
        return {"pixel": F.l1_loss(sr, hr)}
'''

_made: dict[str, object] = {}


@pytest.fixture(scope="session")
def user_plugin(tmp_path_factory):
    if "plugin" not in _made:  # one file per process: a second would register twice
        path = tmp_path_factory.mktemp("user_loss") / "user_loss_terms.py"
        path.write_text(USER_PLUGIN)
        _made["plugin"] = path
    return _made["plugin"]


def test_a_user_loss_with_named_terms_is_summed_and_logged_by_the_trainer(
    tmp_path, tiny_data, tiny_plugin, user_plugin
):
    from tsrx.engine.run import run_training

    exp = write_experiment(tmp_path, tiny_data, tiny_plugin, "terms")
    text = exp.read_text().replace(
        f'plugins = ["{tiny_plugin}"]', f'plugins = ["{tiny_plugin}", "{user_plugin}"]'
    )
    text = "\n".join(line for line in text.splitlines() if not line.startswith("test."))
    exp.write_text(
        text + '\n[loss]\nsr = { type = "pixel_and_edge" }\ncombiner = { type = "sum" }\n'
    )
    overrides = [
        "train.steps=2",
        "train.val_every=100",
        "train.ckpt_every=100",
        "train.selectors=[]",
    ]
    run_dir = prepare(exp, tmp_path / "runs", overrides)
    torch.manual_seed(0)
    result = run_training(run_dir, device="cpu")
    assert result["state"] == "completed" and result["step"] == 2
    train = metrics(run_dir, "train")
    assert [m["step"] for m in train] == [1, 2]
    for m in train:
        assert set(m["terms"]) == {"sr_pixel", "sr_edge"}
        assert all(v > 0 for v in m["terms"].values())
        assert m["loss"] == pytest.approx(m["terms"]["sr_pixel"] + m["terms"]["sr_edge"])
    (run,) = metrics(run_dir, "run")
    assert run["losses"]["sr"] == {"type": "pixel_and_edge", "edge_weight": 2.0}


def test_a_loss_returning_other_terms_than_it_declares_is_refused_at_build(user_plugin):
    from tsrx.plugins import load_named_plugins
    from tsrx.registry import SR_LOSSES

    load_named_plugins([str(user_plugin)])
    with pytest.raises(
        ContractError,
        match=r"says_two_gives_one.*dict of \['pixel', 'edge'\], got a dict of \['pixel'\]",
    ):
        SR_LOSSES.build({"type": "says_two_gives_one"}, "loss.sr")


def test_a_two_term_loss_gets_one_learned_weight_per_term(
    tmp_path, tiny_data, tiny_plugin, user_plugin
):
    from tsrx.engine.run import run_training

    exp = write_experiment(tmp_path, tiny_data, tiny_plugin, "terms_uncertainty")
    text = exp.read_text().replace(
        f'plugins = ["{tiny_plugin}"]', f'plugins = ["{tiny_plugin}", "{user_plugin}"]'
    )
    text = "\n".join(line for line in text.splitlines() if not line.startswith("test."))
    exp.write_text(
        text + '\n[loss]\nsr = { type = "pixel_and_edge" }\ncombiner = { type = "uncertainty" }\n'
    )
    overrides = [
        "train.steps=1",
        "train.val_every=100",
        "train.ckpt_every=100",
        "train.selectors=[]",
    ]
    run_dir = prepare(exp, tmp_path / "runs", overrides)
    assert run_training(run_dir, device="cpu")["state"] == "completed"
    (step,) = metrics(run_dir, "train")
    assert {"s_sr_pixel", "s_sr_edge", "sigma_sr_pixel", "sigma_sr_edge"} <= set(step["combiner"])


def test_the_model_says_which_terms_it_trains_and_what_each_loss_reads():
    """A two-stage text-prior cascade: sr and prior terms, each called once per stage; the
    prior term's default comes from the backbone (default_losses), not from tsrx/."""
    from tsrx.engine.build import build_losses, model_tasks
    from tsrx.engine.loss_module import LossModule
    from tsrx.errors import TsrxError
    from tsrx.models.build import build_model
    from tsrx.registry import COMBINERS

    cfg = {
        "model": {
            "coupling": "text_prior",
            "sr": {"type": "tsrn_tl_cascade", "blocks": 1, "stn": False},
            "prior": {"type": "crnn"},
            "prior_stages": 2,
        }
    }
    torch.manual_seed(0)
    model = build_model(cfg, load_init=False)
    tasks = model_tasks(model)
    assert tasks == ["sr", "prior"]
    losses, tables, warnings = build_losses({"consistency": {"type": "tsc"}}, tasks, model)
    assert tables["prior"]["type"] == "tpgsr" and tables["sr"]["type"] == "textzoom"
    assert warnings == [
        "[loss] consistency = {'type': 'tsc'} has no effect: the model trains no 'consistency' "
        "term (its terms: sr, prior)"
    ]
    batch = {"lr": torch.rand(2, 4, 16, 64), "hr": torch.rand(2, 4, 32, 128), "label": ["ab", "c"]}
    model.train()
    out = model(batch)
    inputs = model.loss_inputs(out, batch)
    assert list(inputs) == ["sr", "prior"] and [len(c) for c in inputs.values()] == [2, 2]
    assert inputs["sr"][1][0] is out["sr"] and inputs["prior"][0][1] is out["prior_hr"]
    combiner = COMBINERS.build({"type": "sum"}, "loss.combiner", tasks=tasks)
    total, terms, _ = LossModule(model, losses, combiner)(batch)
    assert list(terms) == ["sr", "prior"] and torch.isfinite(total)

    model.sr.default_losses = {}  # a text-prior backbone that names no default for its terms
    with pytest.raises(TsrxError, match=r"\[loss\] prior: .*names no default.*tpgsr"):
        build_losses({}, tasks, model)
