"""Text conventions shared by recognizers, losses and metrics.

TextZoom's accuracy protocol compares lower-cased labels and predictions keeping
only ``0-9a-z`` (the reference code's ``str_filt(s, 'lower')``). CTC class 0 is
the blank; class ``i`` (1-based) is ``alphabet[i-1]``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are made: data tools stay light
    import torch

    from tsrx.models.recognition import Recognition

VOCABULARIES = {
    "digit": string.digits,
    "lower": string.digits + string.ascii_lowercase,
    "upper": string.digits + string.ascii_letters,
    "all": string.digits + string.ascii_letters + string.punctuation,
}


def filter_text(text: str, voc_type: str = "lower") -> str:
    """TextZoom's ``str_filt``: lower-case for 'lower', then keep the vocabulary's characters."""
    if voc_type == "lower":
        text = text.lower()
    alphabet = VOCABULARIES[voc_type]
    return "".join(c for c in text if c in alphabet)


def normalize_for_accuracy(text: str) -> str:
    return filter_text(text, "lower")


def encode_labels(
    labels: list[str], alphabet: str, lower: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated CTC targets and their lengths; characters outside ``alphabet`` are dropped."""
    import torch

    index = {c: i + 1 for i, c in enumerate(alphabet)}
    targets: list[int] = []
    lengths: list[int] = []
    for label in labels:
        if lower:
            label = label.lower()
        ids = [index[c] for c in label if c in index]
        targets.extend(ids)
        lengths.append(len(ids))
    return torch.tensor(targets, dtype=torch.long), torch.tensor(lengths, dtype=torch.long)


def ctc_greedy_decode(logits: torch.Tensor, alphabet: str) -> list[str]:
    """Best path decoding of (T, B, classes) logits: argmax, merge repeats, drop blanks."""
    import torch

    best = logits.argmax(dim=2).transpose(0, 1).cpu()  # (B, T)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != 0
    out = []
    for row, mask in zip(best.tolist(), keep.tolist()):
        out.append("".join(alphabet[i - 1] for i, k in zip(row, mask) if k))
    return out


def ctc_greedy_recognize(logits: torch.Tensor, alphabet: str) -> Recognition:
    """Best path decoding with each kept character's softmax probability as its score.

    Returns a :class:`tsrx.models.recognition.Recognition`; the texts equal
    :func:`ctc_greedy_decode`'s. A merged run of repeats keeps its first frame's score.
    """
    import torch

    probs = torch.softmax(logits.float(), dim=2).transpose(0, 1).cpu()  # (B, T, K)
    return ctc_best_path(probs, alphabet)


def ctc_best_path(probs: torch.Tensor, symbols: Sequence[str]) -> Recognition:
    """Best path decoding of per-step class probabilities (B, T, K) on the CPU: class 0 is
    the blank, class i the symbol ``symbols[i - 1]`` (a character or a longer string); each
    kept symbol's probability is its score, a merged run of repeats keeping its first's."""
    import torch

    from tsrx.models.recognition import Recognition

    conf, best = probs.max(dim=2)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != 0
    texts, scores = [], []
    for row, mask, row_conf in zip(best.tolist(), keep.tolist(), conf.tolist()):
        kept = [(symbols[i - 1], float(c)) for i, k, c in zip(row, mask, row_conf) if k]
        texts.append("".join(ch for ch, _ in kept))
        scores.append([c for _, c in kept])
    return Recognition(texts, scores)
