"""Tables owned by the engine: ``[loss]``, ``[optim]``, ``[sched]``, ``[train]``, ``[eval]``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from tsrx.config.schema import NON_EMPTY, RENAMED, Component, NonNegative, Positive, Range
from tsrx.config.sections import register_section, section

# A billion steps is beyond any schedule tsrx serves (TSRN's is ~135k); a larger count is a
# typo that would never end (docs/guarantees.md, "Values are checked").
MAX_STEPS = 10**9
MaxSteps = Range(low=0, low_open=True, high=MAX_STEPS)

# The arithmetic a forward pass runs in, one meaning in [train], [eval] and the commands'
# --precision (tsrx/engine/precision.py): "fp32" exact (the default); "bf16" autocast (CPU or
# CUDA); "fp16" autocast on CUDA only (training adds a gradient scaler).
Precision = Literal["fp32", "bf16", "fp16"]
RENAMED["train.amp"] = (
    'renamed train.precision (values "fp32", "bf16", "fp16"; amp = "none" is precision = '
    '"fp32"); evaluation has its own eval.precision'
)


@dataclass
class LossSection:
    """``[loss]``: the loss of each training term and the combiner that merges them.

    The model says which terms it trains and each one's default (``model.loss_terms``,
    tsrx/models/joint.py): ``sr = {type = "textzoom"}`` (100 x (MSE + 1e-4 x
    gradient-profile loss)), ``recognition = {type = "ctc"}`` (``"own"`` for an attention
    recognizer); a trainable text-prior generator adds ``prior``, ``model.rotate_train``
    adds ``consistency``, both defaulting to the SR backbone's ``default_losses``.
    """

    sr: Annotated[dict[str, Any], Component("sr_loss")] | None = None
    recognition: Annotated[dict[str, Any], Component("rec_loss")] | None = None
    prior: Annotated[dict[str, Any], Component("prior_loss")] | None = None
    consistency: Annotated[dict[str, Any], Component("consistency_loss")] | None = None
    combiner: Annotated[dict[str, Any], Component("combiner")] = field(
        default_factory=lambda: {"type": "avg"}
    )


@dataclass
class TrainSection:
    """``[train]``: the training loop. ``batch_size`` is global (split over DDP ranks).

    ``deterministic``: deterministic kernels, and gradients all-reduced one tensor at a time
    so that a run resumed on more than two ranks stays bit-identical (tsrx/engine/grad_sync.py).
    ``callbacks``: training hooks, ``[[train.callbacks]]`` tables (``type = "ema"``...).
    ``precision``: the training step's forward pass; validation follows ``eval.precision``.
    """

    steps: Annotated[int, MaxSteps] = 1000
    batch_size: Annotated[int, Positive] = 64
    val_every: Annotated[int, Positive] = 500
    ckpt_every: Annotated[int, Positive] = 500
    log_every: Annotated[int, Positive] = 10
    selectors: Annotated[list[Any], Component("selector", many=True)] = field(
        default_factory=lambda: ["best_acc", "best_psnr"]
    )
    precision: Precision = "fp32"  # the training step's forward (tsrx/engine/precision.py)
    grad_clip: Annotated[float, NonNegative] | None = 0.25  # 0 or none: no clipping
    deterministic: bool = False
    on_nonfinite: Literal["stop", "skip"] = "stop"
    channels_last: bool = False
    compile: bool = False
    val_batch_size: Annotated[int, Positive] = 50
    # training hooks (tsrx/engine/callbacks.py): [[train.callbacks]] tables, called in order
    callbacks: Annotated[list[Any], Component("callback", many=True)] = field(default_factory=list)


@dataclass
class EvalSection:
    """``[eval]``: the evaluation protocol and the recognizers that judge accuracy.

    ``textzoom`` reproduces the reference code's numbers (PSNR/SSIM per batch, then
    averaged over batches); ``per-image`` averages per image. ``judges``: named judges,
    each a recognizer table with ``weights`` (``crnn = {type = "crnn", weights = "crnn.pth"}``,
    ``ppocr = {type = "ppocr", optional = true}``); see tsrx/engine/judge_build.py. The older
    ``judge`` + ``judge_weights`` (one judge) still work, but not next to ``judges``.
    ``precision``: the SR forward of every evaluation (validation, final, ``tsrx eval``;
    ``--precision`` overrides it); its output is compared and read in float32.
    ``judge_precision``: the arithmetic the judges read in (``--judge-precision``): ``fp32``
    (exact, the default) or ``bf16`` autocast, about twice as fast for the torch judges on a
    CPU with bf16 instructions, with readings that differ slightly (docs/performance.md,
    "Judges in bf16"); a judge that does not compute in torch (ppocr's onnxruntime) reads the
    same either way. ``val_judges``: the judges that read during training's
    validations (names of ``judges``, ``own`` for the model's recognizer; unset: all of them):
    a slow judge can then read the final test evaluation only, while checkpoints are selected
    by the judges named here. ``reading_store``: frozen judges keep what they read of the
    bicubic and HR images on disk and reuse it in any later evaluation (false: off for this
    config; ``TSRX_READING_STORE`` says where, or ``off``: tsrx/engine/reading_store.py).
    """

    protocol: Literal["textzoom", "per-image"] = "textzoom"
    batch_size: Annotated[int, Positive] = 50
    judge: Annotated[dict[str, Any], Component("recognizer")] | None = None
    judge_weights: Annotated[str, NON_EMPTY] | None = None
    judges: dict[str, dict[str, Any]] = field(default_factory=dict)
    baselines: bool = False
    precision: Precision = "fp32"
    judge_precision: Precision = "fp32"
    val_judges: list[str] | None = None
    # frozen judges' readings kept across evaluations and processes (tsrx/engine/reading_store.py)
    reading_store: bool = True


def eval_section(config: dict[str, Any], **overrides: object) -> EvalSection:
    """The typed ``[eval]`` of a resolved config, with the command line's ``overrides`` (None:
    the config's value): every evaluation reads its protocol, batch size and baselines here,
    so their defaults are written once, above."""
    table = config.get("eval") or {}
    known = {f.name for f in dataclasses.fields(EvalSection)}
    values = {k: v for k, v in table.items() if k in known}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return EvalSection(**values)


section("loss")(LossSection)
section("train")(TrainSection)
section("eval")(EvalSection)
register_section(
    "optim",
    Component("optimizer"),
    default={"type": "adam", "lr": 1e-3, "betas": [0.5, 0.999]},
    doc="[optim]: the optimizer (a component table); TSRN's reference uses Adam, "
    "lr 1e-3, beta1 0.5.",
)
register_section(
    "sched",
    Component("scheduler"),
    default={"type": "constant"},
    doc="[sched]: the learning-rate schedule (a component table).",
)
