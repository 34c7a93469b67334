"""The ``[model]`` table: which parts compose the model and how they couple."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from tsrx.config.schema import NON_EMPTY, Component
from tsrx.config.sections import section


@dataclass
class ModelSection:
    """``[model]``: ``[model.sr]``, ``[model.recognizer]``, ``[model.head]`` and their coupling.

    - SR alone (stage 1): only ``sr``.
    - Recognizer fine-tuning (stage 2): ``recognizer`` (+ ``head`` replacing its classifier).
    - Joint (stage 3): all three, ``coupling = "image"`` (the recognizer reads the SR image)
      or ``"feature"`` (the head reads a feature map inside the composed model).
    ``init`` maps a part (``sr``, ``recognizer``, ``head``, ``whole``) to a checkpoint
    (tsrx, TextZoom ``state_dict_G``, meijieru CRNN or a bare state_dict), merged with
    ``whole`` first and loaded in one shot into the whole model (strict=False, with a
    report). ``feature_layer`` (feature coupling): the first recognizer layer that trains;
    ``freeze``: module-name prefixes (``"sr"``, ``"recognizer.cnn"``). See docs/models.md.

    ``coupling = "text_prior"`` (plugins/text_prior.py): ``[model.prior]``, a CTC recognizer
    (the text prior generator), reads the LR image and its class probabilities guide a text-prior SR
    backbone. ``prior_weights``: the generator's checkpoint (meijieru crnn.pth or tsrx),
    loaded at build time; ``prior_stages``: the cascade (stages sharing the networks);
    ``prior_dropout`` (share of a training batch given a zero prior) and ``prior_detach``
    (the SR loss does not train the generator): None takes the backbone's official setting.
    ``rotate_train`` (degrees): rotate each training pair by a random angle up to that and
    train the ``consistency`` term; the SR backbone brings the rotation (``rotates``).
    """

    sr: Annotated[dict[str, Any], Component("sr")] | None = None
    recognizer: Annotated[dict[str, Any], Component("recognizer")] | None = None
    head: Annotated[dict[str, Any], Component("head")] | None = None
    coupling: Literal["image", "feature", "text_prior"] = "image"
    prior: Annotated[dict[str, Any], Component("recognizer")] | None = None
    prior_weights: str | None = None
    prior_stages: int = 1
    prior_dropout: float | None = None
    prior_detach: bool | None = None
    rotate_train: float = 0.0
    feature_layer: str = "rnn"
    freeze: list[str] = field(default_factory=list)
    init: dict[str, Annotated[str, NON_EMPTY]] = field(default_factory=dict)
    allow_shape_mismatch: bool = False
    rec_input: Literal["auto", "hr", "lr", "sr"] = "auto"

    def cross_check(self) -> list[tuple[str, str]]:
        """How coupling, SR backbone and prior generator fit together (config validation)."""
        issues = []
        sr_type = (self.sr or {}).get("type")
        needs_prior = False
        backbone: object = None
        if isinstance(sr_type, str):
            from tsrx.errors import TsrxError
            from tsrx.registry import SR_BACKBONES

            try:
                backbone = SR_BACKBONES.get(sr_type)
                needs_prior = bool(getattr(backbone, "needs_text_prior", False))
            except TsrxError:
                pass  # the unknown type is reported by the component check
        if needs_prior and (self.coupling != "text_prior" or not self.prior):
            issues.append(
                (
                    "model.prior",
                    f"model.sr.type = {sr_type!r} is guided by a text prior: "
                    'set model.coupling = "text_prior" and a [model.prior] generator '
                    '(e.g. type = "crnn" with model.prior_weights = "crnn.pth"); '
                    "for an official file of that backbone: tsrx eval --config FILE with "
                    "that [model]",
                )
            )
        if self.coupling == "text_prior":
            if not self.prior:
                if not needs_prior:
                    issues.append(
                        (
                            "model.prior",
                            'coupling = "text_prior" needs a [model.prior] '
                            "generator (a CTC recognizer such as crnn)",
                        )
                    )
            if self.sr and not needs_prior:
                issues.append(
                    (
                        "model.sr.type",
                        f"{sr_type!r} takes no text prior; coupling = "
                        '"text_prior" needs a text-prior backbone '
                        f"({text_prior_backbones()})",
                    )
                )
        elif self.prior:
            issues.append(
                (
                    "model.prior",
                    f"a prior generator is used only with coupling = "
                    f'"text_prior", not {self.coupling!r}',
                )
            )
        if self.rotate_train < 0 or self.rotate_train >= 90:
            issues.append(("model.rotate_train", f"degrees in [0, 90), got {self.rotate_train}"))
        elif self.rotate_train and self.coupling != "text_prior":
            issues.append(
                (
                    "model.rotate_train",
                    "rotated training pairs (the consistency term) are a "
                    'text-prior coupling option; set coupling = "text_prior"',
                )
            )
        elif self.rotate_train and backbone is not None and not rotates(backbone):
            issues.append(
                (
                    "model.rotate_train",
                    f"model.sr.type = {sr_type!r} does not rotate its training pairs (it "
                    "defines no random_rotation and rotate); set rotate_train = 0",
                )
            )
        if self.prior_stages < 1:
            issues.append(("model.prior_stages", f"must be >= 1, got {self.prior_stages}"))
        if self.prior_dropout is not None and not 0 <= self.prior_dropout < 1:
            issues.append(("model.prior_dropout", f"must be in [0, 1), got {self.prior_dropout}"))
        return issues


section("model")(ModelSection)


def rotates(sr: object) -> bool:
    """Whether an SR backbone (class or module) rotates its training pairs for
    ``rotate_train``: ``random_rotation(n, max_degrees, device) -> (angles, offsets)`` and
    ``rotate(images, angles, offsets)``, its training's own augmentation."""
    return callable(getattr(sr, "random_rotation", None)) and callable(getattr(sr, "rotate", None))


def text_prior_backbones() -> str:
    """The registered SR backbones guided by a text prior, for messages that suggest one."""
    from tsrx.registry import SR_BACKBONES

    names = [e.name for e in SR_BACKBONES.entries() if getattr(e.obj, "needs_text_prior", False)]
    return ", ".join(names) or "none registered"


def model_section(config: dict[str, Any]) -> ModelSection:
    """The typed ``[model]`` of a resolved config: what the builders read, so each default is
    written once, above (an older checkpoint's config may lack a key added since)."""
    table = config.get("model") or {}
    known = {f.name for f in dataclasses.fields(ModelSection)}
    return ModelSection(**{k: v for k, v in table.items() if k in known})
