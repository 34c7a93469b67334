"""Judges: the named recognizers that read SR (and bicubic / HR) images for accuracy.

A judge is a recognizer with real weights, frozen, in eval mode; where judges come from
(the model's own recognizer, ``[eval.judges]``, ``--judge``) is tsrx/engine/judge_build.py.
Here: how a judge reads, and what it remembers of its readings.

How a judge reads: a head on a CTC recognizer gives ``head(encode(x))``, decoded by greedy
CTC; every other recognizer answers ``recognize(x)`` itself (its own input convention and
decoding). The evaluator never decodes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

OWN = "own"
MAX_READINGS = 1_000_000  # remembered readings per judge (a text each), then forgotten


@dataclass
class Judge:
    """One named reader. ``recognizer`` (and ``head``) are modules; ``own`` marks the
    model's own recognizer (whose parameters are the model's, not frozen here)."""

    name: str
    description: str
    recognizer: nn.Module
    head: nn.Module | None = None
    own: bool = False
    # (HR accuracy, images) once measured: the evaluator's sanity check (tsrx.engine.evaluator)
    hr_probe: tuple[float | None, int] | None = None
    hr_seen: tuple[int, int] = (0, 0)  # (read right, read) until the probe has enough images
    warned: bool = False
    # what this judge has read: (weights' state, image bytes' digest) -> text (read())
    readings: dict[tuple[Any, ...], str] = field(default_factory=dict, repr=False, compare=False)
    # its build table (type and options, not the weights' path): part of its identity in the
    # reading store (tsrx/engine/judge_identity.py)
    options: dict[str, Any] | None = None
    # images read by the recognizer, found in the reading store, remembered in this process;
    # new readings given to the store
    tally: dict[str, int] = field(
        default_factory=lambda: {"read": 0, "store": 0, "memory": 0, "kept": 0},
        repr=False,
        compare=False,
    )
    _identity: tuple[Any, Any] | None = field(default=None, repr=False, compare=False)
    # the arithmetic it reads in (``eval.judge_precision``, tsrx.engine.precision): part of
    # a reading's key, in memory and in the store, where it can change the reading
    precision: str = "fp32"

    @torch.no_grad()
    def read(self, images: torch.Tensor, persist: bool = False) -> list[str]:
        """The words in RGB images (B, C>=3, H, W) in [0, 1].

        Each distinct CPU image is read once per state of the judge's weights: the trainer's
        final evaluation re-reads the SR images its last validation read, and the judges
        are the cost of an evaluation (the quickstart: half its time in the ppocr judge,
        issue 25). The key is the image's bytes, dtype and shape (a 16-byte BLAKE2b digest)
        and the version counters of the judge's tensors (an optimizer step or load_state_dict
        moves them, so the model's own recognizer is re-read after training). Only the images
        not yet read are read, as one batch.

        Across processes: a frozen judge (not ``own``) first looks an image up in the reading
        store (tsrx/engine/reading_store.py); ``persist`` keeps what it reads there (the
        evaluator's bicubic and HR rows, the same in every evaluation of a test set; not the
        SR images, new with every checkpoint).
        """
        images = images[:, :3]
        if not len(images):
            return self._read(images)
        if images.device.type != "cpu":
            if not self.reads_on_host():
                return self._read(images)
            # a judge that computes on the host anyway (ppocr's onnxruntime in a GPU
            # evaluation): its images move there first, and its readings are remembered and
            # stored as a CPU evaluation's are (its bicubic and HR rows, two thirds of its
            # work, then come from the store in every later evaluation of the test set)
            images = images.detach().to("cpu")
        tensors = self._tensors()  # walked once a read: ASTER has hundreds of modules
        keys = self._reading_keys(images, tensors)
        texts = [self.readings.get(key) for key in keys]
        missing = [i for i, text in enumerate(texts) if text is None]
        self.tally["memory"] += len(keys) - len(missing)
        shelf = self._shelf(keys[0][0], tensors) if missing or persist else None
        if missing and shelf is not None:
            for i, text in zip(missing, shelf.lookup([keys[i][1] for i in missing])):
                texts[i] = text
            unread = [i for i in missing if texts[i] is None]
            self.tally["store"] += len(missing) - len(unread)
            missing = unread
        if missing:
            part = images if len(missing) == len(keys) else images[missing]
            self.tally["read"] += len(missing)
            for i, text in zip(missing, self._read(part)):
                texts[i] = text
        if len(self.readings) + len(keys) > MAX_READINGS:
            self.readings.clear()
        out = [str(text) for text in texts]
        for key, text in zip(keys, out):
            self.readings[key] = text
            if persist and shelf is not None:  # also what this process read without keeping
                self.tally["kept"] += shelf.add(key[1], text)
        return out

    def reads_on_host(self) -> bool:
        """Whether this judge computes on the CPU whatever device the evaluation uses: a
        frozen judge with no tensor on another device (no tensors at all: ppocr)."""
        return not self.own and all(t.device.type == "cpu" for t in self._tensors())

    def _modules(self) -> list[nn.Module]:
        return [m for m in (self.recognizer, self.head) if m is not None]

    def _tensors(self) -> list[torch.Tensor]:
        """Every parameter and buffer of the recognizer and head."""
        return [t for m in self._modules() for t in (*m.parameters(), *m.buffers())]

    def _reading_keys(
        self, images: torch.Tensor, tensors: list[torch.Tensor]
    ) -> list[tuple[Any, ...]]:
        state = (
            tuple(m.training for m in self._modules()),
            tuple(t._version for t in tensors),
            self._reading_precision(tensors),
        )
        # the image's dtype and shape are in its digest: the reading store's key too
        header = hashlib.blake2b(
            f"{images.dtype} {tuple(images.shape[1:])}".encode(), digest_size=16
        )
        raw = images.detach().contiguous().view(torch.uint8).reshape(len(images), -1).numpy()
        keys = []
        for row in raw:
            h = header.copy()
            h.update(row)
            keys.append((state, h.digest()))
        return keys

    def _shelf(self, state: tuple[Any, ...], tensors: list[torch.Tensor]) -> Any:
        """This judge's shelf in the reading store, or None (own, store off, no identity).
        The identity digest hashes every weight: computed once per state of the weights
        (version counters and storage addresses)."""
        from tsrx.engine import reading_store

        if self.own or reading_store.root() is None:
            return None
        where = (state, tuple(t.data_ptr() for t in tensors))
        if self._identity is None or self._identity[0] != where:
            from tsrx.engine.judge_identity import identity

            options = self.options
            precision = self._reading_precision(tensors)
            if precision != "fp32":  # fp32 keys stay those stored before
                options = {**(options or {}), "judge_precision": precision}
            self._identity = (where, identity(self.recognizer, self.head, options))
        found = self._identity[1]
        return reading_store.shelf(*found) if found is not None else None

    def _reading_precision(self, tensors: list[torch.Tensor]) -> str:
        """The precision its readings depend on: ``fp32`` for a judge without tensors (ppocr:
        onnxruntime computes whatever torch's autocast says), so its readings are shared."""
        return self.precision if tensors else "fp32"

    def _read(self, images: torch.Tensor) -> list[str]:
        from tsrx.engine.precision import autocast

        with autocast(self.precision, images.device, f"judge {self.name}: eval.judge_precision"):
            return self._read_words(images)

    def _read_words(self, images: torch.Tensor) -> list[str]:
        from tsrx.contracts import CTCRecognizer
        from tsrx.models.text import ctc_greedy_decode

        # checked when built (tsrx.contracts.check_recognizer): a head only replaces a CTC
        # recognizer's classifier, and a recognizer without recognize() is a CTC one
        ctc = cast(CTCRecognizer, self.recognizer)
        if self.head is not None:
            return ctc_greedy_decode(self.head(ctc.encode(images)), ctc.alphabet)
        recognize = getattr(self.recognizer, "recognize", None)
        if recognize is None:  # a CTC recognizer written before recognize() was the contract
            return ctc_greedy_decode(ctc(images), ctc.alphabet)
        return list(recognize(images).texts)

    def to(self, device: Any) -> Judge:
        if not self.own:
            self.recognizer.to(device)
            if self.head is not None:
                self.head.to(device)
        return self


def own_judge(model: nn.Module) -> Judge | None:
    """The model's own recognizer as a judge, or None without one."""
    rec = getattr(model, "recognizer", None)
    if rec is None:
        return None
    # the description older results and tables carry verbatim
    return Judge(OWN, "the model's own recognizer", rec, getattr(model, "head", None), own=True)


def describe(judges: list[Judge]) -> dict[str, str]:
    """Name -> description, in order: a result's ``judges`` and its records' meta."""
    return {j.name: j.description for j in judges}


__all__ = [
    "Judge",
    "OWN",
    "own_judge",
    "describe",
]
