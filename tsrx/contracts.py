"""The contracts of the extension points, in code (docs/architecture.md, "Tensors and batches").

The Protocols say what each kind of component offers; the ``check_*`` functions verify a
built component against them once, when its registry builds it (each ``Registry`` names its
check, so no call site can forget one): the attributes it must have, then one tiny dry
forward (batch 2, no gradients, eval mode, the RNG state and every module's train/eval mode
restored afterwards) whose output shape is compared with what the rest of tsrx will assume.
A violation is a :class:`ContractError` naming the component, the file it comes from, what
was expected and what came back, instead of a failure deep inside CTC or a convolution
later. Dry inputs are deterministic (no draw from the seeded RNG), so checking a part does
not change the weights of the parts built after it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from tsrx.errors import TsrxError, source_file

DOC = "docs/architecture.md, 'Tensors and batches'"
DRY_BATCH = 2  # 2, not 1: a (B, T, K) output differs from (T, B, K) only when B != T
DRY_STEPS = 5  # sequence length of a head's dry input (any value other than DRY_BATCH)


class ContractError(TsrxError):
    """A component does not do what its extension point promises the rest of tsrx."""


@runtime_checkable
class SRBackbone(Protocol):
    """``forward(lr (B,C,h,w)) -> sr (B,C,H,W)``, C = ``in_channels`` (3 RGB, 4 RGB + mask)."""

    in_channels: int

    def __call__(self, lr: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Recognizer(Protocol):
    """Reads RGB images in [0, 1] of any size; class 0 is the CTC blank for CTC recognizers.

    Every recognizer has ``alphabet`` and ``num_classes``. A CTC recognizer (``ctc = True``,
    the default when the attribute is absent) also has ``forward(images) -> logits (T,B,K)``,
    ``encode(images) -> features (T,B,feature_dim)`` and ``classifier`` ((T,B,C) -> (T,B,K)),
    which is what a head replaces.

    Optional: ``reading_identity() -> str``, what decides a judge's readings beyond its class,
    source files, torch tensors and options (an ONNX file's digest, a runtime's version): the
    reading store (tsrx/engine/reading_store.py) keys a frozen judge's readings on it. A
    recognizer with no torch tensors and no ``reading_identity`` is never stored.
    """

    alphabet: str
    num_classes: int


class CTCRecognizer(Recognizer, Protocol):
    """The typed view of a CTC recognizer that :func:`check_recognizer` accepted: what a head,
    the joint model and greedy decoding call on it."""

    classifier: nn.Module
    feature_dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...


class TextPriorBackbone(Protocol):
    """An SR backbone guided by a text prior (``needs_text_prior``): ``forward(lr, prior
    (B,K,1,T))`` returns the SR image, or a tuple whose first item is (a backbone may add its attention)."""

    def __call__(
        self, lr: torch.Tensor, prior: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, ...]: ...


class RotatingBackbone(TextPriorBackbone, Protocol):
    """A text-prior backbone that rotates its training pairs (``model.rotate_train``,
    tsrx.models.config.rotates): its training's own augmentation."""

    def random_rotation(
        self, n: int, max_degrees: float, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def rotate(
        self, images: torch.Tensor, angles: torch.Tensor, offsets: torch.Tensor
    ) -> torch.Tensor: ...


@runtime_checkable
class Head(Protocol):
    """``__init__(in_features, num_classes, **options)``; ``forward((T,B,C)) -> (T,B,K)``."""

    def __call__(self, features: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SRLoss(Protocol):
    """``forward(sr, hr) -> scalar tensor``."""

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class RecognitionLoss(Protocol):
    """``forward(logits (T,B,K), targets, target_lengths) -> scalar tensor``."""

    def __call__(
        self, logits: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
    ) -> torch.Tensor: ...


@runtime_checkable
class Combiner(Protocol):
    """``nn.Module``; ``forward({task: scalar}) -> (total scalar, {name: float})``."""

    def __call__(
        self, losses: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


@runtime_checkable
class Selector(Protocol):
    """``name`` (its key in summary.json), ``filename`` (its checkpoint), ``score(result)``."""

    name: str
    filename: str

    def score(self, result: dict[str, Any]) -> float: ...


# -- describing a component in an error ---------------------------------------------------
def describe(component: Any, kind: str, name: str | None = None) -> str:
    """``head 'gated' of plugin gated (gated_head.GatedHead in /path/gated_head.py)``.

    ``name`` is the component's label (``Registry.label``: its name and plugin) or None.
    """
    cls = type(component)
    label = f"{kind} {name}" if name else kind
    return f"{label} ({cls.__module__}.{cls.__qualname__} in {source_file(component)})"


def _fail(component: Any, kind: str, name: str | None, what: str) -> ContractError:
    return ContractError(
        f"{describe(component, kind, name)} breaks the {kind} contract: {what} (see {DOC})"
    )


def _shape(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}"
    return f"a {type(x).__name__}"


@contextlib.contextmanager
def dry_run(*modules: Any) -> Iterator[None]:
    """Eval mode and no gradients for a dry forward; modes and the CPU RNG are restored after."""
    mods = [m for m in modules if isinstance(m, nn.Module)]
    modes = [(sub, sub.training) for m in mods for sub in m.modules()]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for m in mods:
            m.eval()
        try:
            yield
        finally:
            for sub, mode in modes:
                sub.training = mode


def _call(component: Any, kind: str, name: str | None, call: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except TsrxError:
        raise
    except Exception as exc:
        raise _fail(
            component, kind, name, f"the dry call {call} raised {type(exc).__name__}: {exc}"
        ) from exc


def _images(channels: int, size: Sequence[int]) -> torch.Tensor:
    """Deterministic images in [0, 1] (a ramp, so interpolation and statistics are not trivial)."""
    n = DRY_BATCH * channels * size[0] * size[1]
    return torch.linspace(0.0, 1.0, n).reshape(DRY_BATCH, channels, *size)


def _device(module: Any) -> torch.device:
    if isinstance(module, nn.Module):
        for t in (*module.parameters(), *module.buffers()):
            return t.device
    return torch.device("cpu")


# -- the checks ---------------------------------------------------------------------------
def check_sr(
    sr: Any,
    name: str | None = None,
    *,
    lr_size: Sequence[int] = (16, 64),
    hr_size: Sequence[int] = (32, 128),
) -> None:
    """``in_channels`` in (3, 4); ``forward`` maps (B,C,lr_size) to (B,C,hr_size)."""
    kind = "sr backbone"
    ch = getattr(sr, "in_channels", None)
    if not isinstance(ch, int) or isinstance(ch, bool) or ch not in (3, 4):
        raise _fail(
            sr,
            kind,
            name,
            "it needs an attribute in_channels = 3 (RGB) or 4 (RGB + "
            f"mask) so tsrx can match it with data.mask; got {ch!r}",
        )
    lr = _images(ch, tuple(lr_size)).to(_device(sr))
    args: tuple[torch.Tensor, ...] = (lr,)
    call = f"forward(lr {tuple(lr.shape)})"
    if getattr(sr, "needs_text_prior", False):
        # text-prior backbones read class probabilities (B, K, 1, T) as well;
        # T = 26 frames, the CRNN generator's output length on a 32x100 image
        classes = int(getattr(sr, "prior_classes", 37))
        prior = torch.softmax(
            torch.linspace(-1.0, 1.0, DRY_BATCH * classes * 26).reshape(DRY_BATCH, classes, 1, 26),
            dim=1,
        ).to(lr.device)
        args, call = (lr, prior), f"forward(lr {tuple(lr.shape)}, prior {tuple(prior.shape)})"
    with dry_run(sr):
        out = _call(sr, kind, name, call, sr, *args)
    if isinstance(out, tuple) and getattr(sr, "needs_text_prior", False):
        out = out[0]  # a text-prior backbone may add more (attention); tsrx uses the image
    expected = (DRY_BATCH, ch, *hr_size)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        raise _fail(
            sr,
            kind,
            name,
            f"{call} must return the SR image (B, C, H, W) = {expected}, got {_shape(out)}",
        )


def check_recognizer(
    rec: Any, name: str | None = None, *, channels: int = 3, size: Sequence[int] = (32, 128)
) -> None:
    """``alphabet`` and ``num_classes``; for CTC recognizers also ``encode``, ``classifier``,
    ``feature_dim`` and the (T,B,K) shapes of a dry forward."""
    kind = "recognizer"
    missing = [a for a in ("alphabet", "num_classes") if not hasattr(rec, a)]
    ctc = getattr(rec, "ctc", True)
    if ctc:
        missing += [a for a in ("encode", "classifier", "feature_dim") if not hasattr(rec, a)]
    if missing:
        what = "a CTC recognizer (ctc = True, the default)" if ctc else "a recognizer"
        raise _fail(rec, kind, name, f"{what} needs the attribute(s) {', '.join(missing)}")
    k = rec.num_classes
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise _fail(rec, kind, name, f"num_classes must be an integer >= 2, got {k!r}")
    if not ctc:
        return  # attention recognizers decode themselves; their outputs have no fixed shape
    if k != len(rec.alphabet) + 1:
        raise _fail(
            rec,
            kind,
            name,
            f"num_classes must be len(alphabet) + 1 (class 0 is the "
            f"CTC blank): {len(rec.alphabet)} + 1, got {k}",
        )
    if not isinstance(rec.classifier, nn.Module):
        raise _fail(
            rec,
            kind,
            name,
            "classifier must be the nn.Module a head replaces, got "
            f"{type(rec.classifier).__name__}",
        )
    images = _images(channels, tuple(size)).to(_device(rec))
    call = f"(images {tuple(images.shape)})"
    with dry_run(rec):
        feats = _call(rec, kind, name, "encode" + call, rec.encode, images)
        logits = _call(rec, kind, name, "forward" + call, rec, images)
    if (
        not isinstance(feats, torch.Tensor)
        or feats.dim() != 3
        or feats.shape[1] != DRY_BATCH
        or feats.shape[2] != rec.feature_dim
    ):
        raise _fail(
            rec,
            kind,
            name,
            f"encode{call} must return features (T, B, feature_dim) = "
            f"(T, {DRY_BATCH}, {rec.feature_dim}), got {_shape(feats)}",
        )
    if (
        not isinstance(logits, torch.Tensor)
        or logits.dim() != 3
        or tuple(logits.shape[1:]) != (DRY_BATCH, k)
    ):
        raise _fail(
            rec,
            kind,
            name,
            f"forward{call} must return logits (T, B, num_classes) = "
            f"(T, {DRY_BATCH}, {k}), got {_shape(logits)}",
        )


def check_head(head: Any, name: str | None = None, *, in_features: int, num_classes: int) -> None:
    """``forward`` maps features (T,B,in_features) to logits (T,B,num_classes)."""
    kind = "head"
    feats = (
        torch.linspace(-1.0, 1.0, DRY_STEPS * DRY_BATCH * in_features)
        .reshape(DRY_STEPS, DRY_BATCH, in_features)
        .to(_device(head))
    )
    call = f"forward(features (T, B, C) = {tuple(feats.shape)})"
    with dry_run(head):
        out = _call(head, kind, name, call, head, feats)
    expected = (DRY_STEPS, DRY_BATCH, num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        hint = ""
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (
            DRY_BATCH,
            DRY_STEPS,
            num_classes,
        ):
            hint = "; it looks batch-first: return (T, B, K), e.g. out.transpose(0, 1)"
        raise _fail(
            head,
            kind,
            name,
            f"{call} must return logits (T, B, num_classes) = {expected}, got {_shape(out)}{hint}",
        )


def _scalar(out: Any) -> bool:
    return isinstance(out, torch.Tensor) and out.dim() == 0 and out.is_floating_point()


def _probabilities(steps: int, classes: int, shift: float = 0.0) -> torch.Tensor:
    """Deterministic per-frame class probabilities (T, B, K), every row summing to 1."""
    ramp = torch.linspace(-1.0 + shift, 1.0 + shift, steps * DRY_BATCH * classes)
    return torch.softmax(ramp.reshape(steps, DRY_BATCH, classes), dim=2)


def _loss_terms(loss: Any, kind: str, name: str | None) -> list[str] | None:
    """A loss's declared named sub-terms (``terms``), checked: None when it declares none."""
    terms = getattr(loss, "terms", None)
    if terms is None:
        return None
    ok = isinstance(terms, (tuple, list)) and terms and len(set(terms)) == len(terms)
    if not ok or not all(isinstance(t, str) and t and "." not in t for t in terms):
        raise _fail(
            loss,
            kind,
            name,
            "terms must be a non-empty tuple of distinct names without '.' (the sub-terms "
            f"its forward returns as a dict), got {terms!r}",
        )
    return list(terms)


def _check_scalar_loss(loss: Any, kind: str, name: str | None, call: str, *args: Any) -> None:
    """One dry call returns a finite scalar, or, for a loss declaring ``terms``, a dict with
    exactly those names, each a finite scalar (docs/engine.md, "Loss terms")."""
    terms = _loss_terms(loss, kind, name)
    with dry_run(loss):
        out = _call(loss, kind, name, call, loss, *args)
    parts = {f"{call} must return": out}
    if terms is not None:
        if not isinstance(out, dict) or set(out) != set(terms):
            got = f"a dict of {list(out)}" if isinstance(out, dict) else _shape(out)
            raise _fail(loss, kind, name, f"{call} must return a dict of {terms}, got {got}")
        parts = {f"{call}[{term!r}] must be": value for term, value in out.items()}
    for what, value in parts.items():
        if not _scalar(value) or not math.isfinite(float(value)):
            raise _fail(
                loss,
                kind,
                name,
                f"{what} a finite scalar (0-dim float tensor), got {_shape(value)}"
                + (f" = {float(value)}" if _scalar(value) else ""),
            )


def check_sr_loss(
    loss: Any, name: str | None = None, *, channels: int = 3, size: Sequence[int] = (32, 128)
) -> None:
    """``forward(sr, hr)`` returns a finite scalar tensor."""
    kind = "sr loss"
    hr = _images(channels, tuple(size)).to(_device(loss))
    sr = hr.flip(-1)
    call = f"forward(sr {tuple(sr.shape)}, hr {tuple(hr.shape)})"
    _check_scalar_loss(loss, kind, name, call, sr, hr)
    if getattr(loss, "needs_labels", False):  # a recognition-guided loss also reads labels
        labels = ["ab1", "c"][:DRY_BATCH]
        call = call[:-1] + f", labels={labels})"
        _check_scalar_loss(loss, kind, name, call, sr, hr, labels)


def check_rec_loss(loss: Any, name: str | None = None, *, num_classes: int = 37) -> None:
    """``forward(logits (T,B,K), targets, target_lengths)`` returns a finite scalar tensor.

    A loss with ``own = True`` passes on an attention recognizer's own objective
    (``recognizer.loss``) and takes no logits: nothing to check here.
    """
    kind = "recognition loss"
    if getattr(loss, "own", False):
        return
    logits = (
        torch.linspace(-1.0, 1.0, 8 * DRY_BATCH * num_classes)
        .reshape(8, DRY_BATCH, num_classes)
        .to(_device(loss))
    )
    lengths = torch.tensor([2, 1], dtype=torch.long)
    targets = (torch.arange(int(lengths.sum())) % (num_classes - 1) + 1).long()
    call = f"forward(logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, target_lengths (2,))"
    _check_scalar_loss(loss, kind, name, call, logits, targets, lengths)


def check_prior_loss(loss: Any, name: str | None = None, *, num_classes: int = 37) -> None:
    """``forward(prior_lr (T,B,K), prior_hr (T,B,K))``, class probabilities, returns a finite
    scalar tensor."""
    dev = _device(loss)
    prior_lr, prior_hr = (
        _probabilities(26, num_classes).to(dev),
        _probabilities(26, num_classes, 0.5).to(dev),
    )
    call = f"forward(prior_lr {tuple(prior_lr.shape)}, prior_hr {tuple(prior_hr.shape)})"
    _check_scalar_loss(loss, "text-prior loss", name, call, prior_lr, prior_hr)


def check_consistency_loss(
    loss: Any, name: str | None = None, *, channels: int = 3, size: Sequence[int] = (32, 128)
) -> None:
    """``forward(sr_transformed, sr, hr)``, three (B,C,H,W) images, returns a finite scalar."""
    hr = _images(channels, tuple(size)).to(_device(loss))
    sr, transformed = hr.flip(-1), hr.flip(-2)
    shape = tuple(hr.shape)
    call = f"forward(sr_transformed {shape}, sr {shape}, hr {shape})"
    _check_scalar_loss(loss, "consistency loss", name, call, transformed, sr, hr)


def check_combiner(combiner: Any, name: str | None = None, *, tasks: list[str]) -> None:
    """An ``nn.Module`` whose ``forward({task: scalar})`` returns (scalar, dict)."""
    kind = "loss combiner"
    if not isinstance(combiner, nn.Module):
        raise _fail(
            combiner,
            kind,
            name,
            "it must be an nn.Module (its learned weights are "
            f"saved with the model), got {type(combiner).__name__}",
        )
    dev = _device(combiner)
    losses = {t: torch.tensor(1.0 + i, device=dev) for i, t in enumerate(tasks)}
    call = f"forward({{{', '.join(repr(t) + ': scalar' for t in tasks)}}})"
    with dry_run(combiner):
        out = _call(combiner, kind, name, call, combiner, losses)
    if (
        not isinstance(out, tuple)
        or len(out) != 2
        or not _scalar(out[0])
        or not isinstance(out[1], dict)
    ):
        raise _fail(
            combiner,
            kind,
            name,
            f"{call} must return (total: 0-dim tensor, logs: dict of floats), got {_shape(out)}",
        )
    bad = [
        k
        for k, v in out[1].items()
        if not isinstance(k, str) or not isinstance(v, (int, float)) or isinstance(v, bool)
    ]
    if bad:
        raise _fail(
            combiner,
            kind,
            name,
            f"{call}'s logs must map names to floats (they go to "
            f"metrics.jsonl); bad entries: {bad[:5]}",
        )


def dry_result(splits: list[str]) -> dict[str, Any]:
    """An evaluation result of the documented shape, for a selector's dry ``score``."""
    values = {"n": 1, "acc": 0.5, "psnr": 20.0, "ssim": 0.5}
    return {"splits": {s: dict(values) for s in splits}, "average": dict(values)}


def check_selector(
    selector: Any, name: str | None = None, *, splits: Sequence[str] = ("easy", "medium", "hard")
) -> None:
    """``name`` and ``filename`` strings; ``score(result)`` returns a number."""
    kind = "selector"
    for attr in ("name", "filename"):
        if not isinstance(getattr(selector, attr, None), str) or not getattr(selector, attr):
            raise _fail(
                selector,
                kind,
                name,
                f"it needs a non-empty string attribute {attr}, "
                f"got {getattr(selector, attr, None)!r}",
            )
    if not callable(getattr(selector, "score", None)):
        raise _fail(selector, kind, name, "it needs a method score(result) -> float")
    out = _call(selector, kind, name, "score(result)", selector.score, dry_result(list(splits)))
    if not isinstance(out, (int, float)) or isinstance(out, bool):
        raise _fail(
            selector,
            kind,
            name,
            f"score(result) must return a float (higher is better), got {_shape(out)}",
        )


def check_dataset(
    dataset: Any,
    name: str | None = None,
    *,
    hr_size: Sequence[int] = (32, 128),
    lr_size: Sequence[int] = (16, 64),
    mask: bool = False,
) -> None:
    """``len(dataset)`` and ``dataset[i]`` -> ``{"lr": (C,h,w), "hr": (C,H,W), "label": str,
    "index": i}``, images uint8 (0-255) or float in [0, 1] (the loader's collate makes them
    float), C = 4 with ``mask`` else 3; the first sample is read."""
    kind = "dataset"
    for attr in ("__len__", "__getitem__"):
        if not callable(getattr(dataset, attr, None)):
            raise _fail(dataset, kind, name, f"it needs {attr} (a map-style dataset)")
    n = _call(dataset, kind, name, "len(dataset)", len, dataset)
    if not n:
        return  # an empty split is reported where it matters (nothing to train or evaluate)
    sample = _call(dataset, kind, name, "dataset[0]", dataset.__getitem__, 0)
    if not isinstance(sample, dict):
        raise _fail(dataset, kind, name, f"dataset[0] must be a dict, got {_shape(sample)}")
    channels = 4 if mask else 3
    expected = {"lr": (channels, *lr_size), "hr": (channels, *hr_size)}
    for key, shape in expected.items():
        value = sample.get(key)
        if (
            not isinstance(value, torch.Tensor)
            or not (value.is_floating_point() or value.dtype == torch.uint8)
            or tuple(value.shape) != tuple(shape)
        ):
            raise _fail(
                dataset,
                kind,
                name,
                f"dataset[0][{key!r}] must be a uint8 or float image (C, H, W) = {tuple(shape)}, "
                f"got {_shape(value)}"
                + (f" of {value.dtype}" if isinstance(value, torch.Tensor) else ""),
            )
    if not isinstance(sample.get("label"), str):
        raise _fail(
            dataset,
            kind,
            name,
            f"dataset[0]['label'] must be a str, got {_shape(sample.get('label'))}",
        )


def check_optimizer(optimizer: Any, name: str | None = None) -> None:
    """What the trainer and the schedulers call: ``param_groups`` (dicts holding ``lr``),
    ``zero_grad``, ``step``, ``state_dict`` and ``load_state_dict``."""
    kind = "optimizer"
    missing = [
        a
        for a in ("zero_grad", "step", "state_dict", "load_state_dict")
        if not callable(getattr(optimizer, a, None))
    ]
    if missing:
        raise _fail(optimizer, kind, name, f"it needs the method(s) {', '.join(missing)}")
    groups = getattr(optimizer, "param_groups", None)
    if (
        not isinstance(groups, list)
        or not groups
        or not all(isinstance(g, dict) and "lr" in g for g in groups)
    ):
        raise _fail(
            optimizer,
            kind,
            name,
            f"param_groups must be a non-empty list of dicts holding 'lr', got {_shape(groups)}",
        )


def check_scheduler(scheduler: Any, name: str | None = None) -> None:
    """``step()`` once per training step, ``state_dict`` / ``load_state_dict`` for resuming."""
    missing = [
        a
        for a in ("step", "state_dict", "load_state_dict")
        if not callable(getattr(scheduler, a, None))
    ]
    if missing:
        raise _fail(scheduler, "scheduler", name, f"it needs the method(s) {', '.join(missing)}")


def check_report_format(fmt: Any, name: str | None = None, *, sample: Any = None) -> None:
    """``render(report) -> str``; ``warnings_in_text`` says whether that text carries the
    report's warnings (``tsrx report`` prints them on stderr otherwise), and when it says so,
    the rendered ``sample`` report must hold each of its warnings: a paper table pasted from a
    file never loses what the report warned about."""
    kind = "report format"
    if not callable(getattr(fmt, "render", None)):
        raise _fail(fmt, kind, name, "it needs a method render(report) -> str")
    carries = getattr(fmt, "warnings_in_text", None)
    if not isinstance(carries, bool):
        raise _fail(
            fmt,
            kind,
            name,
            "it needs a bool attribute warnings_in_text (does render() write the report's "
            f"warnings?), got {carries!r}",
        )
    if sample is None:
        return
    text = _call(fmt, kind, name, "render(report)", fmt.render, sample)
    if not isinstance(text, str):
        raise _fail(fmt, kind, name, f"render(report) must return a str, got {_shape(text)}")
    lost = [w for w in getattr(sample, "warnings", []) if carries and w not in text]
    if lost:
        raise _fail(
            fmt,
            kind,
            name,
            f"warnings_in_text is True but render(report) dropped the warning {lost[0]!r}",
        )


# Training callbacks (tsrx/engine/callbacks.py): each hook and its arguments.
CALLBACK_HOOKS = {
    "setup": ("trainer",),
    "after_step": ("trainer", "out"),
    "evaluation_weights": ("trainer",),
    "on_validation": ("trainer", "result"),
    "on_checkpoint": ("trainer", "path"),
    "on_train_end": ("trainer", "result"),
}


def check_callback(callback: Any, name: str | None = None) -> None:
    """At least one hook of ``CALLBACK_HOOKS``, each callable with its arguments; no other
    ``on_`` / ``after_`` / ``before_`` method (a misspelt hook would never be called);
    ``state_dict`` together with ``load_state_dict``."""
    import inspect

    kind = "callback"
    known = ", ".join(CALLBACK_HOOKS)
    unknown = sorted(
        a
        for a in dir(callback)
        if a.startswith(("on_", "after_", "before_"))
        and a not in CALLBACK_HOOKS
        and callable(getattr(callback, a, None))
    )
    if unknown:
        raise _fail(
            callback,
            kind,
            name,
            f"{', '.join(unknown)}: not a hook, so tsrx would never call it; the hooks are {known}",
        )
    hooks = [h for h in CALLBACK_HOOKS if getattr(callback, h, None) is not None]
    if not hooks:
        raise _fail(callback, kind, name, f"it defines none of the hooks {known}")
    for hook in hooks:
        fn = getattr(callback, hook)
        expected = f"{hook}({', '.join(CALLBACK_HOOKS[hook])})"
        if not callable(fn):
            raise _fail(callback, kind, name, f"{hook} must be a method {expected}")
        try:
            signature = inspect.signature(fn)
        except ValueError:  # a builtin without a signature: nothing to check
            continue
        try:
            signature.bind(*CALLBACK_HOOKS[hook])
        except TypeError:
            raise _fail(
                callback, kind, name, f"{hook}{signature} cannot be called as {expected}"
            ) from None
    has_state = callable(getattr(callback, "state_dict", None))
    if has_state != callable(getattr(callback, "load_state_dict", None)):
        raise _fail(
            callback,
            kind,
            name,
            "state_dict and load_state_dict go together (last.pth saves one, a resume calls "
            "the other)",
        )
