"""Built-in training callbacks: an EMA of the weights, and pictures of each validation.

Registered in the ``callback`` registry like a user's; the hooks and their order are in
tsrx/engine/callbacks.py.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import torch

from tsrx.config.schema import PositiveInt, Range
from tsrx.engine.callbacks import Callback
from tsrx.errors import TsrxError
from tsrx.registry import CALLBACKS

Decay = Annotated[float, Range(0, 1, high_open=True)]  # 1 would never move from the start


@CALLBACKS.register("ema")
class EMA(Callback):
    """Exponential moving average of a part's weights (the SR network by default).

    After every step, each floating parameter ``p`` of the part moves its average ``a`` by
    ``a = decay * a + (1 - decay) * p``; buffers (BatchNorm statistics) are copied, not
    averaged, as BasicSR's ``model_ema`` does. The average starts as the initial weights.

    ``evaluate``: validation (so the selectors and the best files), and the final evaluation
    read the averaged weights; training always updates the raw ones. ``save``: at every
    checkpoint, ``ema_model.pth`` beside ``last.pth``, the whole model with the averaged part:
    a tsrx checkpoint ``tsrx eval`` and ``tsrx.load_model`` read. The average is saved in
    ``last.pth`` (``callbacks``), so a resumed run continues it bit for bit.
    """

    def __init__(
        self, decay: Decay = 0.999, part: str = "sr", evaluate: bool = True, save: bool = True
    ):
        self.decay, self.part, self.evaluate, self.save = decay, part, evaluate, save
        self.average: dict[str, torch.Tensor] = {}
        self._averaged: set[str] = set()

    def _module(self, trainer: Any) -> torch.nn.Module:
        module = getattr(trainer.model, self.part, None)
        if not isinstance(module, torch.nn.Module):
            parts = [n for n, m in trainer.model.named_children() if m is not None]
            raise TsrxError(
                f"train.callbacks: ema part = {self.part!r}: the model has no such part "
                f"(it has {', '.join(parts)})"
            )
        return module

    def setup(self, trainer: Any) -> None:
        module = self._module(trainer)
        self.average = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self._averaged = {n for n, p in module.named_parameters() if p.is_floating_point()}

    @torch.no_grad()
    def after_step(self, trainer: Any, out: dict) -> None:
        for k, v in self._module(trainer).state_dict().items():
            if k in self._averaged:
                self.average[k].lerp_(v, 1.0 - self.decay)
            else:
                self.average[k].copy_(v)

    @contextlib.contextmanager
    def _swapped(self, trainer: Any) -> Iterator[None]:
        module = self._module(trainer)
        raw = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.average)
        try:
            yield
        finally:
            module.load_state_dict(raw)

    def evaluation_weights(self, trainer: Any) -> contextlib.AbstractContextManager | None:
        return self._swapped(trainer) if self.evaluate else None

    def on_checkpoint(self, trainer: Any, path: Path) -> None:
        if not (self.save and trainer.env.is_main):
            return
        from tsrx.checkpoint import make_checkpoint, save_checkpoint
        from tsrx.engine.runfiles import plugin_records

        # saved inside the swap: the state holds the model's own tensors, not copies
        with self._swapped(trainer):
            state = make_checkpoint(
                trainer.model_state(),
                step=trainer.step,
                epoch=trainer.epoch,
                config=trainer.config,
                plugins=plugin_records(),
                metrics={"ema": {"decay": self.decay, "part": self.part}},
            )
            save_checkpoint(Path(path).parent / "ema_model.pth", state)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "part": self.part, "average": dict(self.average)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("part") != self.part or set(state.get("average", {})) != set(self.average):
            raise TsrxError(
                f"ema: the saved average is of part {state.get('part')!r} with other keys; "
                f"this run averages part {self.part!r}"
            )
        for k, v in state["average"].items():
            self.average[k].copy_(v)


@CALLBACKS.register("val_pictures")
class ValidationPictures(Callback):
    """At each validation, ``pictures/val_step<N>.png`` in the run directory: rows of LR
    (bicubic-upscaled) | SR | HR with the label, for ``samples`` images spread evenly over
    a validation split (``split``, default the first). The SR images are those of the
    weights just evaluated (an ``ema`` before this callback: the averaged ones). Rank 0
    draws; the file is written atomically, so a reader never sees half a PNG.
    """

    def __init__(self, samples: PositiveInt = 8, split: str | None = None, scale: PositiveInt = 2):
        self.samples, self.split, self.scale = samples, split, scale

    def setup(self, trainer: Any) -> None:
        """Refuse what would fail at the first validation, before the first step."""
        if getattr(trainer.model, "sr", None) is None:
            raise TsrxError("train.callbacks: val_pictures needs a model with an SR part")
        sets = trainer.parts.val_sets
        if self.split is not None and self.split not in sets:
            raise TsrxError(
                f"train.callbacks: val_pictures split = {self.split!r} is not a validation "
                f"split (the run validates on {', '.join(sets) or 'nothing'})"
            )

    def on_validation(self, trainer: Any, result: dict) -> None:
        if not trainer.env.is_main:
            return
        sets = trainer.parts.val_sets
        split = self.split or next(iter(sets))
        path = trainer.run_dir / "pictures" / f"val_step{trainer.step:07d}.png"
        write_picture(
            trainer.model, sets[split], split, trainer.step, self.samples, self.scale, path
        )


def write_picture(
    model: torch.nn.Module,
    dataset: Any,
    split: str,
    step: int,
    samples: int,
    scale: int,
    path: Path,
) -> Path:
    """The LR | SR | HR sheet of ``samples`` images of ``dataset``, written atomically."""
    from tsrx.data.loader import collate_batch
    from tsrx.runfiles import atomic_write_bytes
    from tsrx.viz.inference import bicubic_up, to_uint8
    from tsrx.viz.samples import pick
    from tsrx.viz.sheets import Sample, contact_sheet

    items = [dataset[i] for i in pick(len(dataset), samples)]
    batch = collate_batch(items)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        # forked: a model that draws (an STN in eval mode does not, a plugin might) must not
        # shift the run's random streams
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            sr = model({"lr": batch["lr"].to(device)})["sr"]
    finally:
        model.train(was_training)
    hr_size = tuple(batch["hr"].shape[-2:])
    columns = {
        "lr": to_uint8(bicubic_up(batch["lr"], hr_size)),
        "sr": to_uint8(sr.cpu()),
        "hr": to_uint8(batch["hr"]),
    }
    rows = [
        Sample(int(batch["index"][i]) + 1, batch["label"][i], {c: v[i] for c, v in columns.items()})
        for i in range(len(items))
    ]
    sheet = contact_sheet([(f"{split}, step {step}", rows)], hr_size, scale)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path
