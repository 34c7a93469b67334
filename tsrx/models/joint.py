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
Attention recognizers (``ctc = False``: ASTER, MORAN) take no head and no feature coupling;
in training, ``forward`` gives their own loss (``recognizer.loss(images, labels)``) as
``rec_loss`` instead of logits.
With a head, the recognizer's own ``classifier`` is unused and frozen (DDP would otherwise
wait for its gradients). ``freeze`` lists module-name prefixes (``"sr"``, ``"recognizer.cnn"``);
frozen parameters get ``requires_grad = False`` and frozen BatchNorm layers stay in eval mode.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tsrx.errors import TsrxError


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _module_names(module: nn.Module, max_depth: int = 2) -> list[str]:
    """Submodule names up to ``max_depth`` levels (``cnn``, ``cnn.conv0``), for error messages."""
    return [name for name, _ in module.named_modules() if name and name.count(".") < max_depth]


class JointModel(nn.Module):
    """See the module docstring. ``forward(batch) -> {"sr": (B,C,32,128) | None,
    "logits": (T,B,K) | None}`` where ``batch`` holds ``lr`` and/or ``hr``."""

    def __init__(self, sr: nn.Module | None = None, recognizer: nn.Module | None = None,
                 head: nn.Module | None = None, coupling: str = "image",
                 feature_layer: str = "rnn", freeze: Iterable[str] = (), rec_input: str = "auto"):
        super().__init__()
        if sr is None and recognizer is None:
            raise TsrxError("model: nothing to build; set [model.sr] and/or [model.recognizer]")
        if head is not None and recognizer is None:
            raise TsrxError("model.head: a head replaces a recognizer's classifier, so it needs "
                            "[model.recognizer]")
        if recognizer is not None and not getattr(recognizer, "ctc", True) and (
                head is not None or coupling == "feature"):
            raise TsrxError(
                f"model: {type(recognizer).__name__} is an attention recognizer (ctc = false); "
                "heads and the feature coupling replace a CTC recognizer's classifier (CRNN). "
                "Remove [model.head], use coupling = 'image'; it trains with its own loss")
        if coupling not in ("image", "feature"):
            raise TsrxError(f"model.coupling: expected 'image' or 'feature', got {coupling!r}")
        self.sr = sr
        self.recognizer = recognizer
        self.head = head
        self.coupling = coupling
        self.feature_layer = feature_layer
        self.rec_input = self._resolve_rec_input(rec_input)
        self.frozen = self._freeze(list(freeze))
        frozen_params = set(self.frozen)
        self._frozen_bn = [
            name for name, m in self.named_modules() if isinstance(m, _BatchNorm) and (
                any(_matches(name, p) for p in freeze) or (
                    any(True for _ in m.parameters(recurse=False)) and all(
                        f"{name}.{n}" in frozen_params for n, _ in m.named_parameters(recurse=False))))]
        self.train()

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
        if self.head is not None:
            classifier = {id(p) for p in self.recognizer.classifier.parameters()}
            frozen |= {f"recognizer.{n}" for n, p in self.recognizer.named_parameters()
                       if id(p) in classifier}
        if self.coupling == "feature" and self.recognizer is not None:
            rec = [n for n, _ in self.recognizer.named_parameters()]
            start = next((i for i, n in enumerate(rec) if _matches(n, self.feature_layer)), None)
            if start is None:
                raise TsrxError(
                    f"model.feature_layer: {self.feature_layer!r} names no layer of the "
                    f"recognizer; its layers: {', '.join(_module_names(self.recognizer))}")
            frozen |= {f"recognizer.{n}" for n in rec[:start]}
        for prefix in prefixes:
            hit = [n for n in names if _matches(n, prefix)]
            if not hit:
                tops = sorted({n.rsplit('.', 1)[0] for n in names if n.count(".") >= 1})[:20]
                raise TsrxError(f"model.freeze: {prefix!r} matches no parameter; module "
                                f"prefixes include sr, recognizer, head, {', '.join(tops)}")
            frozen |= set(hit)
        for n, p in self.named_parameters():
            if n in frozen:
                p.requires_grad_(False)
        return [n for n in names if n in frozen]

    def train(self, mode: bool = True) -> "JointModel":
        super().train(mode)
        for name in getattr(self, "_frozen_bn", ()):
            self.get_submodule(name).eval()  # frozen statistics must not drift either
        return self

    def forward(self, batch: dict) -> dict[str, torch.Tensor | None]:
        sr = self.sr(batch["lr"]) if self.sr is not None else None
        logits = None
        if self.recognizer is not None:
            images = sr if self.rec_input == "sr" else batch[self.rec_input]
            if not getattr(self.recognizer, "ctc", True):
                # attention recognizers give no logits; in training, their own loss
                return {"sr": sr, "logits": None, "rec_loss": self.recognizer.loss(
                    images, batch["label"]) if self.training and "label" in batch else None}
            if self.head is not None:
                logits = self.head(self.recognizer.encode(images))
            else:
                logits = self.recognizer(images)
        return {"sr": sr, "logits": logits}
