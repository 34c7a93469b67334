"""Component contracts in code: a broken plugin is named at build time, with what was expected."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from tsrx import contracts
from tsrx.contracts import ContractError
from tsrx.models.build import build_model
from tsrx.plugins import load_named_plugins
from tsrx.registry import ALL, HEADS, SR_BACKBONES

BAD_HEAD = """
import torch
from torch import nn
from tsrx.registry import HEADS


@HEADS.register("test-batch-first")
class BatchFirst(nn.Module):
    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features):
        return self.fc(features).transpose(0, 1)  # (B, T, K): the mistake
"""


@pytest.fixture
def bad_head_file(tmp_path):
    path = tmp_path / "batch_first_head.py"
    path.write_text(BAD_HEAD)
    load_named_plugins([str(path)])
    yield path
    HEADS.unregister("test-batch-first")


def test_head_returning_batch_first_is_named_with_its_file(bad_head_file):
    cfg = {
        "model": {
            "recognizer": {"type": "crnn", "hidden_units": 8},
            "head": {"type": "test-batch-first"},
        }
    }
    with pytest.raises(ContractError) as err:
        build_model(cfg, load_init=False)
    msg = str(err.value)
    assert "head 'test-batch-first' of plugin " in msg and str(bad_head_file) in msg
    assert (
        "must return logits (T, B, num_classes) = (5, 2, 37), got a tensor of shape (2, 5, 37)"
        in msg
    )
    assert "batch-first" in msg


class NoChannels(nn.Module):
    def forward(self, lr):
        return nn.functional.interpolate(lr, scale_factor=2)


class WrongScale(NoChannels):
    in_channels = 3

    def forward(self, lr):
        return lr


def test_sr_backbone_needs_in_channels_and_the_hr_size():
    with pytest.raises(
        ContractError,
        match=r"sr backbone 'x' .*NoChannels in .*test_contracts.py"
        r"\) breaks the sr backbone contract: it needs an "
        r"attribute in_channels",
    ):
        contracts.check_sr(NoChannels(), "'x'")
    with pytest.raises(
        ContractError,
        match=r"\(B, C, H, W\) = \(2, 3, 32, 128\), got a tensor "
        r"of shape \(2, 3, 16, 64\)",
    ):
        contracts.check_sr(WrongScale(), "'x'")
    contracts.check_sr(WrongScale(), lr_size=(32, 128), hr_size=(32, 128))  # fits other sizes


class Attention(nn.Module):
    """An attention recognizer: no CTC parts, decodes itself."""

    ctc = False
    alphabet = "abc"
    num_classes = 5


class NoEncode(nn.Module):
    alphabet = "ab"
    num_classes = 3


def test_recognizer_ctc_parts_are_required_only_of_ctc_recognizers():
    contracts.check_recognizer(Attention())
    with pytest.raises(
        ContractError,
        match="a CTC recognizer .* needs the attribute\\(s\\) encode, classifier, feature_dim",
    ):
        contracts.check_recognizer(NoEncode())


def test_losses_combiner_and_selector_contracts():
    class VectorLoss(nn.Module):
        def forward(self, sr, hr):
            return (sr - hr).abs().mean(dim=(1, 2, 3))

    with pytest.raises(
        ContractError, match=r"must return a finite scalar .* got a tensor of shape \(2,\)"
    ):
        contracts.check_sr_loss(VectorLoss())

    class RecLoss(nn.Module):
        def forward(self, logits, targets, lengths):
            return nn.functional.ctc_loss(
                logits.log_softmax(2), targets, torch.full((2,), 8), lengths
            )

    contracts.check_rec_loss(RecLoss(), num_classes=37)

    class TotalOnly(nn.Module):
        def forward(self, losses):
            return sum(losses.values())

    with pytest.raises(
        ContractError,
        match=r"must return \(total: 0-dim tensor, logs: dict of "
        r"floats\), got a tensor",
    ):
        contracts.check_combiner(TotalOnly(), tasks=["sr", "recognition"])

    class NoFile:
        name = "best_x"

        def score(self, result):
            return 1.0

    with pytest.raises(ContractError, match="non-empty string attribute filename, got None"):
        contracts.check_selector(NoFile())


def test_every_builtin_keeps_its_contract():
    checked = 0
    for key, check, kwargs in (
        ("sr", contracts.check_sr, {}),
        ("recognizer", contracts.check_recognizer, {"channels": 4}),
        ("head", contracts.check_head, {"in_features": 16, "num_classes": 37}),
        ("sr_loss", contracts.check_sr_loss, {"channels": 4}),
        ("rec_loss", contracts.check_rec_loss, {"num_classes": 37}),
        ("prior_loss", contracts.check_prior_loss, {"num_classes": 37}),
        ("consistency_loss", contracts.check_consistency_loss, {"channels": 4}),
        ("combiner", contracts.check_combiner, {"tasks": ["sr", "recognition"]}),
        ("selector", contracts.check_selector, {}),
    ):
        for entry in ALL[key].entries():
            if not entry.plugin.startswith(
                (
                    "tsrn",
                    "bicubic",
                    "crnn",
                    "heads",
                    "losses",
                    "prior_losses",
                    "combiners",
                    "selectors",
                )
            ):
                continue  # another test's registration
            table = {"type": entry.name}
            if entry.name == "best":
                table["metric"] = "ssim"
            if entry.name == "tsrn":
                table.update(blocks=1, hidden_units=8)
            provided = {
                k: v for k, v in kwargs.items() if k in ("in_features", "num_classes", "tasks")
            }
            component = ALL[key].build(table, key, **provided)
            check(component, ALL[key].label(entry.name), **kwargs)
            checked += 1
    assert checked >= 16


BROKEN = """
import torch
from torch import nn
from tsrx.registry import ALL


class Broken(nn.Module):
    def forward(self, *args):
        return torch.zeros(2)  # a vector where a scalar or an image is due


@ALL["sr"].register("test-broken")
class NoChannels(Broken):
    pass


@ALL["recognizer"].register("test-broken")
class NoEncode(Broken):
    alphabet, num_classes = "ab", 3


@ALL["head"].register("test-broken")
class VectorHead(Broken):
    def __init__(self, in_features: int, num_classes: int):
        super().__init__()


for key in ("sr_loss", "rec_loss", "prior_loss", "consistency_loss"):
    ALL[key].register("test-broken", Broken)


@ALL["combiner"].register("test-broken")
class TotalOnly(Broken):
    def __init__(self, tasks: list):
        super().__init__()


@ALL["selector"].register("test-broken")
class NoFile:
    name = "best_x"


@ALL["dataset"].register("test-broken")
class Pairs:
    def __init__(self, root: str, hr_size: list, lr_size: list, mask: bool, voc_type: str,
                 max_len: int, skip_bad: bool):
        pass

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return torch.zeros(3, 16, 64), torch.zeros(3, 32, 128)  # a tuple, not the dict


@ALL["optimizer"].register("test-broken")
class NoGroups:
    def __init__(self, params: list):
        pass

    def zero_grad(self): ...
    def step(self): ...
    def state_dict(self): ...
    def load_state_dict(self, state): ...


@ALL["scheduler"].register("test-broken")
class NoStep:
    def __init__(self, optimizer: object, total_steps: int):
        pass


@ALL["report_format"].register("test-broken")
class NoWarnings:
    warnings_in_text = "yes"

    def render(self, report):
        return ""


@ALL["callback"].register("test-broken")
class MisspeltHook:
    def on_validate(self, trainer, result): ...
"""

CONTEXT = {
    "head": {"in_features": 4, "num_classes": 5},
    "combiner": {"tasks": ["sr"]},
    "dataset": {
        "root": ".",
        "hr_size": [32, 128],
        "lr_size": [16, 64],
        "mask": False,
        "voc_type": "all",
        "max_len": 100,
        "skip_bad": False,
    },
    "optimizer": {"params": []},
    "scheduler": {"optimizer": None, "total_steps": 1},
}
BREACH = {
    "sr": "needs an attribute in_channels",
    "recognizer": "needs the attribute(s) encode, classifier, feature_dim",
    "head": "must return logits (T, B, num_classes) = (5, 2, 5)",
    "sr_loss": "must return a finite scalar",
    "rec_loss": "must return a finite scalar",
    "prior_loss": "must return a finite scalar",
    "consistency_loss": "must return a finite scalar",
    "combiner": "must return (total: 0-dim tensor, logs: dict of floats)",
    "selector": "non-empty string attribute filename",
    "dataset": "dataset[0] must be a dict, got a tuple of 2",
    "optimizer": "param_groups must be a non-empty list of dicts holding 'lr'",
    "scheduler": "needs the method(s) step, state_dict, load_state_dict",
    "report_format": "it needs a bool attribute warnings_in_text",
    "callback": "on_validate: not a hook, so tsrx would never call it",
}


@pytest.fixture
def broken_plugin(tmp_path):
    path = tmp_path / "broken_parts.py"
    path.write_text(BROKEN)
    load_named_plugins([str(path)])
    yield path
    for registry in ALL.values():
        registry.unregister("test-broken")


def test_every_registry_checks_its_contract_when_it_builds(broken_plugin):
    # every kind of component, prior generators and losses included, is checked by the build
    # itself: no call site can forget it
    assert set(BREACH) == set(ALL)
    for key, registry in ALL.items():
        assert registry.contract is not None and callable(getattr(contracts, registry.contract))
        with pytest.raises(ContractError) as err:
            registry.build({"type": "test-broken"}, f"x.{key}", **CONTEXT.get(key, {}))
        msg = str(err.value)
        assert f"{registry.kind} 'test-broken' of plugin " in msg, msg
        assert str(broken_plugin) in msg and BREACH[key] in msg, msg


def test_a_broken_text_prior_generator_is_named_when_the_model_is_built(broken_plugin):
    cfg = {
        "model": {
            "coupling": "text_prior",
            "sr": {"type": "tsrn_tl_cascade", "blocks": 1, "hidden_units": 8, "stn": False},
            "prior": {"type": "test-broken"},
        }
    }
    with pytest.raises(ContractError, match=r"recognizer 'test-broken' of plugin .*broken_parts"):
        build_model(cfg, load_init=False)


def test_dry_forward_leaves_rng_and_modes_as_they_were():
    sr = SR_BACKBONES.build({"type": "tsrn", "blocks": 1, "hidden_units": 8}, "model.sr")
    sr.train()
    sr.stn_head.eval()  # a frozen part keeps its mode
    torch.manual_seed(3)
    contracts.check_sr(sr)
    after = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(3))
    assert sr.training and not sr.stn_head.training and sr.block1.training


def test_an_option_without_annotation_is_reported_once(caplog):
    class Loose(nn.Module):
        def __init__(self, in_features: int, num_classes: int, hidden=4):
            super().__init__()
            self.fc = nn.Linear(in_features, num_classes)

        def forward(self, x):
            return self.fc(x)

    HEADS.register("test-loose", Loose)
    try:
        with caplog.at_level(logging.WARNING, logger="tsrx"):
            for _ in range(2):
                HEADS.build(
                    {"type": "test-loose", "hidden": 3}, "model.head", in_features=2, num_classes=3
                )
        warned = [r.getMessage() for r in caplog.records if "test-loose" in r.getMessage()]
        assert len(warned) == 1
        assert "option(s) hidden have no type annotation" in warned[0]
    finally:
        HEADS.unregister("test-loose")
