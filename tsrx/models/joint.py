"""The joint model: an SR backbone, a recognizer and a head composed by configuration.

Knows no concrete architecture, only the contracts of docs/architecture.md. Its submodules
are always named ``sr``, ``recognizer`` and ``head``, so state_dict keys are the same for
every composition and for DDP and non-DDP runs (save ``unwrap(model).state_dict()``).

- SR only: ``recognizer`` is None, ``logits`` is None.
- Recognizer fine-tuning: ``sr`` is None; the recognizer reads ``hr`` (``rec_input = "auto"``).
- ``image`` coupling: the recognizer reads the SR image; every part trains unless frozen,
  and recognition gradients reach the SR backbone through the recognizer.
- ``feature`` coupling: the head reads the recognizer's sequence features, and only the
  recognizer's parameters from ``feature_layer`` on (in the recognizer's parameter order)
  train; the earlier ones are frozen. They still pass gradients to the SR backbone, which
  trains unless ``freeze`` lists ``"sr"``.
- ``text_prior`` coupling (the backbones of plugins/text_prior.py): ``prior``, a CTC
  recognizer (the text-prior generator), reads the LR image; its per-frame class
  probabilities, in the official layout (B, K, 1, T), are the SR backbone's second input.
  ``prior_stages`` > 1 is a cascade (``stu_iter``): the generator reads the previous
  stage's SR image, the SR backbone always the LR image (both shared over stages). In
  training, the output also holds every stage's SR image and prior and, when the generator
  trains, ``prior_hr``, the probabilities of ``prior_teacher`` (a frozen copy of the
  generator's initial weights) on the HR image, for the text-prior loss; a frozen generator
  has no such loss, so it does not read the HR image (one recognizer forward fewer a step).
  ``rotate_train`` > 0: each training pair is first rotated by a random angle (``target_hr``
  is the rotated HR), and ``sr_transformed`` holds, per stage, the SR image of the LR rotated
  back, rotated again, for the ``consistency`` term.
The model says which training terms it produces and what each term's loss reads
(``loss_terms``, ``loss_inputs``): the engine builds one loss per term and sums and logs
whatever it gets, so it names no coupling's outputs (docs/engine.md, "Loss terms").
Attention recognizers (``ctc = False``: ASTER, MORAN) take no head and no feature coupling;
in training, ``forward`` gives their own loss (``recognizer.loss(images, labels)``) as
``rec_loss`` instead of logits.
With a head, the recognizer's own ``classifier`` is unused and frozen (DDP would otherwise
wait for its gradients). ``freeze`` lists module-name prefixes (``"sr"``, ``"recognizer.cnn"``);
frozen parameters get ``requires_grad = False`` and frozen BatchNorm layers stay in eval mode.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tsrx.errors import TsrxError
from tsrx.models.config import ModelSection, rotates, text_prior_backbones
from tsrx.models.text import encode_labels

if TYPE_CHECKING:
    from tsrx.checkpoint import LoadReport
    from tsrx.contracts import CTCRecognizer, RotatingBackbone, TextPriorBackbone

_DEFAULTS = ModelSection()  # [model]'s defaults, written once in tsrx.models.config


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _module_names(module: nn.Module, max_depth: int = 2) -> list[str]:
    """Submodule names up to ``max_depth`` levels (``cnn``, ``cnn.conv0``), for error messages."""
    return [name for name, _ in module.named_modules() if name and name.count(".") < max_depth]


@dataclass(frozen=True)
class LossTerm:
    """One training term a model produces: ``registry`` is the key of ``tsrx.registry.ALL``
    whose component its ``[loss] <term>`` table names; ``default`` the table used when
    ``[loss]`` names none (None: the run must name one); ``shapes`` what the model feeds the
    loss, for its contract's dry call (``REG.build(..., contract_args=shapes)``)."""

    registry: str
    default: dict[str, Any] | None
    shapes: dict[str, Any] = field(default_factory=dict)


class JointModel(nn.Module):
    """See the module docstring. ``forward(batch) -> {"sr": (B,C,32,128) | None,
    "logits": (T,B,K) | None}`` where ``batch`` holds ``lr`` and/or ``hr``."""

    prior_teacher: nn.Module | None
    load_report: LoadReport | None  # what model.init loaded (tsrx.models.build.build_model)

    def __init__(
        self,
        sr: nn.Module | None = None,
        recognizer: nn.Module | None = None,
        head: nn.Module | None = None,
        coupling: str = _DEFAULTS.coupling,
        feature_layer: str = _DEFAULTS.feature_layer,
        freeze: Iterable[str] = (),
        rec_input: str = _DEFAULTS.rec_input,
        prior: nn.Module | None = None,
        prior_stages: int = _DEFAULTS.prior_stages,
        prior_dropout: float | None = _DEFAULTS.prior_dropout,
        prior_detach: bool | None = _DEFAULTS.prior_detach,
        rotate_train: float = _DEFAULTS.rotate_train,
    ):
        super().__init__()
        if sr is None and recognizer is None:
            raise TsrxError("model: nothing to build; set [model.sr] and/or [model.recognizer]")
        if head is not None and recognizer is None:
            raise TsrxError(
                "model.head: a head replaces a recognizer's classifier, so it needs "
                "[model.recognizer]"
            )
        if (
            recognizer is not None
            and not getattr(recognizer, "ctc", True)
            and (head is not None or coupling == "feature")
        ):
            raise TsrxError(
                f"model: {type(recognizer).__name__} is an attention recognizer (ctc = false); "
                "heads and the feature coupling replace a CTC recognizer's classifier (CRNN). "
                "Remove [model.head], use coupling = 'image'; it trains with its own loss"
            )
        if coupling not in ("image", "feature", "text_prior"):
            raise TsrxError(
                f"model.coupling: expected 'image', 'feature' or 'text_prior', got {coupling!r}"
            )
        self._check_prior(sr, prior, coupling)
        self.sr = sr
        self.recognizer = recognizer
        self.head = head
        self.coupling = coupling
        self.prior = prior
        self.prior_stages = int(prior_stages)
        # None: the backbone's official training setting (its prior_dropout, prior_detach)
        self.prior_dropout = float(
            getattr(sr, "prior_dropout", 0.0) if prior_dropout is None else prior_dropout
        )
        self.prior_detach = bool(
            getattr(sr, "prior_detach", False) if prior_detach is None else prior_detach
        )
        self.rotate_train = float(rotate_train)
        if self.rotate_train and coupling != "text_prior":
            raise TsrxError('model.rotate_train needs coupling = "text_prior"')
        if self.rotate_train and not rotates(sr):
            raise TsrxError(
                f"model.rotate_train: {type(sr).__name__} does not rotate its training pairs "
                "(it defines no random_rotation and rotate); set rotate_train = 0"
            )
        self.feature_layer = feature_layer
        self.rec_input = self._resolve_rec_input(rec_input)
        self.frozen = self._freeze(list(freeze))
        frozen_params = set(self.frozen)
        self._frozen_bn = [
            name
            for name, m in self.named_modules()
            if isinstance(m, _BatchNorm)
            and (
                any(_matches(name, p) for p in freeze)
                or (
                    any(True for _ in m.parameters(recurse=False))
                    and all(
                        f"{name}.{n}" in frozen_params for n, _ in m.named_parameters(recurse=False)
                    )
                )
            )
        ]
        if prior is not None and any(p.requires_grad for p in prior.parameters()):
            # the HR prior comes from the generator's initial weights, frozen (official
            # text-prior training: a second copy of the generator's file in eval mode); see
            # sync_teacher
            self.prior_teacher = copy.deepcopy(prior).requires_grad_(False)
        else:
            self.prior_teacher = None
        self.train()

    @staticmethod
    def _check_prior(sr: nn.Module | None, prior: nn.Module | None, coupling: str) -> None:
        needs = bool(getattr(sr, "needs_text_prior", False))
        if coupling != "text_prior":
            if needs:
                raise TsrxError(
                    f"model.sr: {type(sr).__name__} is guided by a text prior; set "
                    'model.coupling = "text_prior" and a [model.prior] generator'
                )
            if prior is not None:
                raise TsrxError('model.prior: a prior generator needs coupling = "text_prior"')
            return
        if not needs:
            raise TsrxError(
                'model.coupling = "text_prior" needs a text-prior SR backbone '
                f"({text_prior_backbones()})"
            )
        if prior is None:
            raise TsrxError(
                'model.coupling = "text_prior" needs a [model.prior] generator (e.g. type = "crnn")'
            )
        if not getattr(prior, "ctc", False):
            raise TsrxError(
                f"model.prior: {type(prior).__name__} is not a CTC recognizer; the "
                "text prior is a CTC recognizer's per-frame class probabilities"
            )
        want = getattr(sr, "prior_classes", None)
        if want is not None and prior.num_classes != want:
            raise TsrxError(
                f"model.prior: the generator has {prior.num_classes} classes, the "
                f"SR backbone reads priors of {want} (set by the generator it was built with)"
            )

    def sync_teacher(self) -> None:
        """Copy the generator's current weights into ``prior_teacher`` (after loading them)."""
        if self.prior_teacher is not None and self.prior is not None:  # a teacher copies one
            self.prior_teacher.load_state_dict(self.prior.state_dict())

    def _resolve_rec_input(self, rec_input: str) -> str:
        if self.recognizer is None:
            return "none"
        if rec_input == "auto":
            return "sr" if self.sr is not None else "hr"
        if rec_input not in ("sr", "hr", "lr"):
            raise TsrxError(f"model.rec_input: expected auto, sr, hr or lr, got {rec_input!r}")
        if rec_input == "sr" and self.sr is None:
            raise TsrxError("model.rec_input = 'sr' needs [model.sr]; use 'hr' or 'auto'")
        return rec_input

    def _freeze(self, prefixes: list[str]) -> list[str]:
        names = [n for n, _ in self.named_parameters()]
        frozen: set[str] = set()
        if self.head is not None and self.recognizer is not None:  # __init__: no head alone
            classifier = {id(p) for p in self._ctc(self.recognizer).classifier.parameters()}
            frozen |= {
                f"recognizer.{n}"
                for n, p in self.recognizer.named_parameters()
                if id(p) in classifier
            }
        if self.coupling == "feature" and self.recognizer is not None:
            rec = [n for n, _ in self.recognizer.named_parameters()]
            start = next((i for i, n in enumerate(rec) if _matches(n, self.feature_layer)), None)
            if start is None:
                raise TsrxError(
                    f"model.feature_layer: {self.feature_layer!r} names no layer of the "
                    f"recognizer; its layers: {', '.join(_module_names(self.recognizer))}"
                )
            frozen |= {f"recognizer.{n}" for n in rec[:start]}
        for prefix in prefixes:
            hit = [n for n in names if _matches(n, prefix)]
            if not hit:
                tops = sorted({n.rsplit(".", 1)[0] for n in names if n.count(".") >= 1})[:20]
                raise TsrxError(
                    f"model.freeze: {prefix!r} matches no parameter; module "
                    f"prefixes include sr, recognizer, head, {', '.join(tops)}"
                )
            frozen |= set(hit)
        for n, p in self.named_parameters():
            if n in frozen:
                p.requires_grad_(False)
        return [n for n in names if n in frozen]

    def train(self, mode: bool = True) -> JointModel:
        super().train(mode)
        for name in getattr(self, "_frozen_bn", ()):
            self.get_submodule(name).eval()  # frozen statistics must not drift either
        teacher = getattr(self, "prior_teacher", None)  # None while __init__ runs
        if teacher is not None:
            teacher.eval()
        return self

    def _prior_trains(self) -> bool:
        return self.prior is not None and any(p.requires_grad for p in self.prior.parameters())

    def loss_terms(self, hr_size: Sequence[int] = (32, 128)) -> dict[str, LossTerm]:
        """The training terms of this composition, in the order they are logged: ``sr`` with
        an SR part, ``recognition`` with a recognizer, ``prior`` with a trainable text-prior
        generator, ``consistency`` with rotated training pairs. The SR backbone's
        ``default_losses`` (its official training) give the defaults of the last two."""
        own = dict(getattr(self.sr, "default_losses", None) or {})
        image = {"channels": getattr(self.sr, "in_channels", 3), "size": tuple(hr_size)}
        terms: dict[str, LossTerm] = {}
        if self.sr is not None:
            terms["sr"] = LossTerm("sr_loss", {"type": "textzoom"}, image)
        if self.recognizer is not None:
            ctc = getattr(self.recognizer, "ctc", True)
            terms["recognition"] = LossTerm(
                "rec_loss",
                {"type": "ctc" if ctc else "own"},
                {"num_classes": self._ctc(self.recognizer).num_classes},
            )
        if self.prior is not None and self._prior_trains():
            terms["prior"] = LossTerm(
                "prior_loss", own.get("prior"), {"num_classes": self._ctc(self.prior).num_classes}
            )
        if self.rotate_train > 0:
            terms["consistency"] = LossTerm("consistency_loss", own.get("consistency"), image)
        return terms

    def loss_inputs(
        self, out: dict[str, Any], batch: dict[str, Any]
    ) -> dict[str, list[tuple[Any, ...]]]:
        """Per term of ``loss_terms``, the positional arguments of each call of its loss on
        this training step's ``out`` (a cascade calls the SR, prior and consistency losses
        once per stage; the engine sums the calls)."""
        inputs: dict[str, list[tuple[Any, ...]]] = {}
        hr = out.get("target_hr", batch.get("hr"))  # the rotated pair, when rotate_train
        stages = out.get("sr_stages") or [out["sr"]]
        if self.sr is not None:
            inputs["sr"] = [(sr, hr) for sr in stages]
        if self.recognizer is not None and not getattr(self.recognizer, "ctc", True):
            inputs["recognition"] = [(out["rec_loss"],)]
        elif self.recognizer is not None:
            alphabet = self._ctc(self.recognizer).alphabet
            # a lower-case alphabet (CRNN's 0-9a-z) reads upper-case labels as lower-case
            targets, lengths = encode_labels(
                batch["label"], alphabet, lower=alphabet == alphabet.lower()
            )
            inputs["recognition"] = [(out["logits"], targets, lengths)]
        if self._prior_trains():  # each stage's LR prior against the teacher's HR prior
            inputs["prior"] = [(p, out["prior_hr"]) for p in out["prior"]]
        if self.rotate_train > 0:  # SR of the rotated-back LR, rotated again, vs SR
            inputs["consistency"] = [(t, sr, hr) for t, sr in zip(out["sr_transformed"], stages)]
        return inputs

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        sr: torch.Tensor | None
        if self.coupling == "text_prior":
            sr, extra = self._text_prior_sr(batch)
        else:
            sr = self.sr(batch["lr"]) if self.sr is not None else None
        logits: torch.Tensor | None = None
        if self.recognizer is not None:
            # rec_input = "sr" only with an SR part (_resolve_rec_input), so sr is set then
            images = sr if self.rec_input == "sr" and sr is not None else batch[self.rec_input]
            if not getattr(self.recognizer, "ctc", True):
                # attention recognizers give no logits; in training, their own loss
                return {
                    "sr": sr,
                    "logits": None,
                    # the attention recognizer's own objective (rec_loss "own"), not a contract
                    # attribute: a judge-only recognizer may have none
                    "rec_loss": self.recognizer.loss(images, batch["label"])  # type: ignore[operator]
                    if self.training and "label" in batch
                    else None,
                    **extra,
                }
            rec = self._ctc(self.recognizer)
            logits = self.head(rec.encode(images)) if self.head is not None else rec(images)
        return {"sr": sr, "logits": logits, **extra}

    @staticmethod
    def _ctc(recognizer: nn.Module) -> CTCRecognizer:
        """A recognizer or prior generator as the CTC view its contract checked
        (tsrx.contracts.check_recognizer); only called where it is a CTC one (``ctc``)."""
        return cast("CTCRecognizer", recognizer)

    @staticmethod
    def _probabilities(generator: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(JointModel._ctc(generator)(images).float(), -1)  # (T, B, K)

    def _text_prior_sr(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """The SR image of the last stage; in training also what the text-prior loss reads."""
        lr = batch["lr"]
        extra: dict[str, Any] = {}
        # the coupling's parts, as __init__ checked them (_check_prior, rotates)
        backbone = cast("TextPriorBackbone", self.sr)
        generator = cast(nn.Module, self.prior)
        rotating = self.training and self.rotate_train > 0 and "hr" in batch
        if rotating:  # rotate the pair; the counter-rotated LR gives the consistency term
            # the backbone's own rotation of its training pairs (checked in __init__)
            rotating_sr = cast("RotatingBackbone", self.sr)
            rotate = rotating_sr.rotate
            angles, offsets = rotating_sr.random_rotation(lr.shape[0], self.rotate_train, lr.device)
            lr = rotate(lr, angles, offsets)
            extra["target_hr"] = rotate(batch["hr"], angles, offsets)
            lr_back = rotate(lr, -angles, offsets)
            extra["sr_transformed"] = []
        image = lr
        stages: list[torch.Tensor] = []
        priors: list[torch.Tensor] = []
        for _ in range(self.prior_stages):
            probs = self._probabilities(generator, image)
            priors.append(probs)
            prior = probs.permute(1, 2, 0).unsqueeze(2).to(lr.dtype)  # (B, K, 1, T), official
            if self.prior_detach:
                prior = prior.detach()
            if self.training and self.prior_dropout > 0:
                # as the official training: the first part of each batch gets a zero prior
                keep = torch.ones(lr.shape[0], 1, 1, 1, dtype=prior.dtype, device=prior.device)
                keep[: int(lr.shape[0] * self.prior_dropout)] = 0
                prior = prior * keep
            out = backbone(lr, prior)
            image = out[0] if isinstance(out, tuple) else out  # a backbone may add more (attention)
            stages.append(image)
            if rotating:  # the SR of the rotated-back LR, with the same prior
                back = backbone(lr_back, prior.detach())
                back_sr = back[0] if isinstance(back, tuple) else back
                extra["sr_transformed"].append(rotate(back_sr, angles, offsets))
            if self.prior_detach:
                image = image.detach()
        if self.training:
            extra.update(sr_stages=stages, prior=priors)
            if "hr" in batch and self._prior_trains():  # only the text-prior loss reads it
                teacher = self.prior_teacher if self.prior_teacher is not None else generator
                with torch.no_grad():
                    extra["prior_hr"] = self._probabilities(
                        teacher, extra.get("target_hr", batch["hr"])
                    )
        return stages[-1], extra
