"""What every recognizer gives evaluation: text and per-character confidences.

CTC recognizers (CRNN) and attention decoders (ASTER, MORAN) decode differently, so the
evaluator never decodes itself: it asks the recognizer. The contract (checked when a
model is built):

- ``recognize(images) -> Recognition``: ``images`` are (B, 3, H, W) RGB in [0, 1] at any
  size; the recognizer applies its own input convention (size, gray or RGB, value range)
  and its eval-mode decoding (greedy CTC, beam search...). Called under ``torch.no_grad``.
- ``alphabet`` (the characters it can output) and ``num_classes``.
- ``ctc``: True when the recognizer gives CTC logits (T, B, K) with class 0 the blank.
  Only CTC recognizers offer what heads and the CTC loss need: ``forward(images) -> logits``,
  ``encode(images) -> features (T, B, C)``, ``classifier`` and ``feature_dim``.
- ``loss(images, labels) -> scalar`` where a recognizer trains with its own objective
  (attention decoders: teacher-forced cross-entropy); absent for judge-only recognizers.
- optional ``reading_identity() -> str``: what decides its readings beyond its class, source
  files, torch tensors and options (ppocr: its ONNX file's digest and onnxruntime's version);
  the reading store keys a frozen judge's readings on it (tsrx/engine/judge_identity.py). A
  recognizer with no torch tensors and no ``reading_identity`` has its readings never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Recognition:
    """Decoded words of one batch, in batch order.

    ``scores[i][j]`` is the confidence (probability in [0, 1]) of character ``j`` of
    ``texts[i]``; recognizers that give none leave ``scores`` empty.
    """

    texts: list[str]
    scores: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.scores and len(self.scores) != len(self.texts):
            raise ValueError(
                f"Recognition: {len(self.texts)} texts but {len(self.scores)} score lists"
            )

    def __len__(self) -> int:
        return len(self.texts)
