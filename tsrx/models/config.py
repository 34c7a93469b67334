"""The ``[model]`` table: which parts compose the model and how they couple."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

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
    """

    sr: Annotated[dict, Component("sr")] | None = None
    recognizer: Annotated[dict, Component("recognizer")] | None = None
    head: Annotated[dict, Component("head")] | None = None
    coupling: Literal["image", "feature"] = "image"
    feature_layer: str = "rnn"
    freeze: list[str] = field(default_factory=list)
    init: dict[str, Annotated[str, NON_EMPTY]] = field(default_factory=dict)
    allow_shape_mismatch: bool = False
    rec_input: Literal["auto", "hr", "lr", "sr"] = "auto"


section("model")(ModelSection)
