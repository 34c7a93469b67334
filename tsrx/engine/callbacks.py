"""Training callbacks: components of the ``callback`` registry that the Trainer calls at fixed
points of its loop, so a method that needs more than a loss (an EMA of the weights, pictures
of each validation) is a plugin, not an edit of the loop.

A callback is built from ``[[train.callbacks]]`` (``type`` plus its options) and checked
against its contract at build (``tsrx.contracts.check_callback``: known hook names only, each
hook callable with its arguments, ``state_dict`` with ``load_state_dict``). The hooks, each
optional, called on every rank in this order (write files on ``trainer.env.is_main`` only):

- ``setup(trainer)``: once, after the run is built and before a resume loads ``last.pth``.
- ``after_step(trainer, out)``: after every optimisation step (``trainer.step`` counts it;
  ``out`` holds the rank-averaged ``loss`` and ``terms``, and ``skipped``).
- ``evaluation_weights(trainer)``: a context manager (or None) around every validation and
  the final evaluation: the weights it puts in the model are the ones evaluated, selected and
  written to the best files. Callbacks' contexts nest in config order.
- ``on_validation(trainer, result)``: after each validation, still inside those contexts,
  with its result (the evaluation result of docs/architecture.md).
- ``on_checkpoint(trainer, path)``: after ``last.pth`` is written (every ``ckpt_every``
  steps, at the end, on a stop request).
- ``on_train_end(trainer, result)``: once the loop ends (completed or preempted).
- ``state_dict()`` / ``load_state_dict(state)``: saved in ``last.pth`` under ``callbacks``
  and restored on resume, so a resumed run stays bit-identical.

A callback must not draw from the random generators outside a forked RNG
(``torch.random.fork_rng``): the run's random streams would shift, and with them the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tsrx.errors import TsrxError


class Callback:
    """Optional base class: every hook does nothing. Subclass it and override what you need."""

    def setup(self, trainer: Any) -> None:
        pass

    def after_step(self, trainer: Any, out: dict[str, Any]) -> None:
        pass

    def evaluation_weights(self, trainer: Any) -> contextlib.AbstractContextManager[None] | None:
        return None

    def on_validation(self, trainer: Any, result: dict[str, Any]) -> None:
        pass

    def on_checkpoint(self, trainer: Any, path: Path) -> None:
        pass

    def on_train_end(self, trainer: Any, result: dict[str, Any]) -> None:
        pass


class Callbacks:
    """The run's callbacks in config order; each hook is called on each callback that has it."""

    def __init__(self, items: list[tuple[str, Any]]):
        self.items = items  # (key in last.pth, callback): "0.ema", "1.val_pictures"

    def _call(self, hook: str, *args: Any) -> None:
        for _, cb in self.items:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(*args)

    def setup(self, trainer: Any) -> None:
        self._call("setup", trainer)

    def after_step(self, trainer: Any, out: dict[str, Any]) -> None:
        self._call("after_step", trainer, out)

    @contextlib.contextmanager
    def evaluation_weights(self, trainer: Any) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for _, cb in self.items:
                fn = getattr(cb, "evaluation_weights", None)
                ctx = fn(trainer) if fn is not None else None
                if ctx is not None:
                    stack.enter_context(ctx)
            yield

    def on_validation(self, trainer: Any, result: dict[str, Any]) -> None:
        self._call("on_validation", trainer, result)

    def on_checkpoint(self, trainer: Any, path: Path) -> None:
        self._call("on_checkpoint", trainer, path)

    def on_train_end(self, trainer: Any, result: dict[str, Any]) -> None:
        self._call("on_train_end", trainer, result)

    def state_dict(self) -> dict[str, Any]:
        return {
            key: cb.state_dict()
            for key, cb in self.items
            if callable(getattr(cb, "state_dict", None))
        }

    def load_state_dict(self, state: dict[str, Any], source: Path | str) -> None:
        for key, cb in self.items:
            if not callable(getattr(cb, "load_state_dict", None)):
                continue
            if key not in state:
                raise TsrxError(
                    f"{source} holds no state for callback {key} (train.callbacks); it was "
                    f"written without it, so this callback cannot resume exactly (saved: "
                    f"{', '.join(state) or 'none'})"
                )
            cb.load_state_dict(state[key])

    def describe(self) -> list[str]:
        return [key for key, _ in self.items]


def build_callbacks(tables: list[Any]) -> Callbacks:
    """The callbacks of ``train.callbacks`` (tables or bare type names), contract-checked."""
    from tsrx.registry import CALLBACKS

    items = []
    for i, table in enumerate(tables or []):
        table = {"type": table} if isinstance(table, str) else table
        cb = CALLBACKS.build(table, f"train.callbacks[{i}]")
        items.append((f"{i}.{table['type']}", cb))
    return Callbacks(items)
