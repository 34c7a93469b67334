"""The ``[data]`` table: where samples come from and how they are shaped.

Sizes follow the TextZoom protocol: HR 32x128, LR 16x64 (height x width).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from tsrx.config.schema import Component, NonNegative, Positive
from tsrx.config.sections import section

Dataset = Annotated[dict[str, Any], Component("dataset")]


@dataclass
class SynthSpec:
    """Synthetic TextZoom-format data written under ``data.root`` when it is missing.

    ``root``: where synthesis was asked for; filled from the ``data.root`` of the file that
    writes ``synth`` (tsrx.config.load). A ``data.root`` changed elsewhere (``--set``, a
    grid, a file that extends this one) is never synthesised: if it does not exist, that is
    an error (tsrx.data.roots).
    """

    root: str | None = None
    train: Annotated[int, Positive] = 2000
    train2: Annotated[int, NonNegative] | None = (
        None  # default: TextZoom's train2/train1 ratio of `train`
    )
    test: list[Annotated[int, NonNegative]] = field(default_factory=lambda: [300, 300, 300])
    # a validation split for checkpoint selection, NOT the test split: val/{easy,medium,hard},
    # drawn from other random streams than test (no image in common); [0, 0, 0] = none
    val: list[Annotated[int, NonNegative]] = field(default_factory=lambda: [0, 0, 0])
    seed: int = 0
    # "builtin": Pillow's embedded font only (identical data on every machine); "all": also
    # the system's TrueType fonts (more variety, but the data then depends on the machine)
    fonts: Literal["all", "builtin"] = "builtin"


@dataclass
class DataSection:
    """``[data]``: dataset tables (``[data.train]``, ``[data.test.easy]``...) and loading options.

    Relative ``roots`` in dataset tables are resolved against ``root``, so one
    override (``--set data.root=/path/to/TextZoom``) switches synthetic to real data.
    """

    root: str = "data/synth"
    synth: SynthSpec | None = None
    train: Dataset | None = None
    val: dict[str, Dataset] = field(default_factory=dict)
    test: dict[str, Dataset] = field(default_factory=dict)
    # N training images as the validation split "holdout" (not trained on), when [data.val]
    # is empty; which ones: a seeded order of their own (tsrx.data.holdout), not the run's seed.
    # None = 0 (none held out, seed 0), and not written into a run's config.toml: run
    # directories made before these keys existed keep matching their config
    holdout: Annotated[int, NonNegative] | None = None
    holdout_seed: int | None = None
    hr_size: list[Annotated[int, Positive]] = field(default_factory=lambda: [32, 128])
    lr_size: list[Annotated[int, Positive]] = field(default_factory=lambda: [16, 64])
    mask: bool = True
    voc_type: Literal["digit", "lower", "upper", "all"] = "all"
    max_len: Annotated[int, Positive] = 100
    skip_bad: bool = False
    cache: bool = True
    num_workers: Annotated[int, NonNegative] = 2

    def __post_init__(self) -> None:
        # synthesis at data.root itself is what a synth table without root means: recorded
        # only when they differ, so run directories made before synth.root keep their config
        # a SynthSpec, or its table where a caller builds [data] directly
        synth: SynthSpec | dict[str, Any] | None = self.synth
        root = synth.get("root") if isinstance(synth, dict) else getattr(synth, "root", None)
        if root is not None:
            from tsrx.data.roots import same_place

            if same_place(root, self.root):
                if isinstance(synth, dict):
                    # a caller's table stays a table: the field's type is what a file gives
                    self.synth = {k: v for k, v in synth.items() if k != "root"}  # type: ignore[assignment]
                elif synth is not None:
                    synth.root = None

    def cross_check(self) -> list[tuple[str, str]]:
        """A validation split comes from one place: [data.val], or data.holdout."""
        issues = []
        if self.holdout and self.val:
            issues.append(
                (
                    "data.holdout",
                    f"data.holdout = {self.holdout} and [data.val] "
                    f"({', '.join(self.val)}) both name the validation split: choose one "
                    "(data.holdout takes it from the training set; set it to 0 to use [data.val])",
                )
            )
        if self.holdout and not self.train:
            issues.append(
                (
                    "data.holdout",
                    f"data.holdout = {self.holdout} holds out training images, but [data.train] "
                    "is not set",
                )
            )
        return issues


section("data")(DataSection)


def data_section(config: dict[str, Any]) -> DataSection:
    """The typed ``[data]`` of a config: its sizes and options with each default written once,
    above (an older checkpoint's config may lack a key added since)."""
    table = config.get("data") or {}
    known = {f.name for f in dataclasses.fields(DataSection)}
    return DataSection(**{k: v for k, v in table.items() if k in known})
