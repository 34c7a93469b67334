"""Training curves from ``metrics.jsonl``: loss terms, learned task weights, validation metrics.

matplotlib is an optional dependency (the ``plots`` extra); without it the command says
how to install it instead of failing on import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tsrx.errors import TsrxError
from tsrx.report.collect import Run

METRICS = ("acc", "psnr", "ssim")
DPI = 100
FIGSIZE = (15.0, 8.0)  # inches: the PNG is 1500 x 800 pixels


@dataclass
class Series:
    """The curves of one run, each a (steps, values) pair."""

    name: str
    loss: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    weights: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    val: dict[str, dict[str, tuple[list[int], list[float]]]] = field(default_factory=dict)
    combiner: str = ""


def _add(table: dict[str, Any], key: str, step: int, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        steps, values = table.setdefault(key, ([], []))
        steps.append(step)
        values.append(float(value))


def series_of(run: Run) -> Series:
    """Curves of a run: ``loss`` (total and per task), ``sigma_<task>`` weights, val per split."""
    s = Series(run.name)
    for rec in run.metrics():
        step = rec.get("step")
        if not isinstance(step, int):
            continue
        if rec.get("kind") == "train":
            _add(s.loss, "total", step, rec.get("loss"))
            for k, v in (rec.get("terms") or {}).items():
                _add(s.loss, k, step, v)
            comb = rec.get("combiner") or {}
            s.combiner = str(comb.get("type", s.combiner))
            for k, v in comb.items():
                if k.startswith("sigma"):
                    _add(s.weights, k, step, v)
        elif rec.get("kind") == "val":
            for split, values in ((rec.get("result") or {}).get("splits") or {}).items():
                for m in METRICS:
                    _add(s.val.setdefault(m, {}), split, step, (values or {}).get(m))
    return s


def _pyplot() -> ModuleType:
    try:
        import matplotlib
    except ImportError:
        raise TsrxError(
            "plotting needs matplotlib, an optional dependency: "
            "pip install 'tsrx[plots]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")  # files only: no display needed on cluster nodes
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs: list[Run], output: Path) -> Path:
    """One PNG: loss terms, sigma per task, a run legend, validation ACC/PSNR/SSIM per split."""
    all_series = [series_of(r) for r in runs]
    if not any(s.loss or s.val for s in all_series):
        damaged = [p for r in runs for p in r.problems]  # a file not text, a line not an object
        raise TsrxError(
            "no training or validation lines in metrics.jsonl of: "
            + ", ".join(str(r.path) for r in runs)
            + ("".join(f"\n  {p}" for p in damaged) if damaged else "")
        )
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=FIGSIZE, dpi=DPI)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    panels = [
        (axes[0][0], "training loss", "loss"),
        (axes[0][1], "uncertainty sigma per task", "weights"),
    ]
    for ax, title, attr in panels:
        drawn = False
        for i, s in enumerate(all_series):
            for j, (key, (x, y)) in enumerate(getattr(s, attr).items()):
                ax.plot(
                    x,
                    y,
                    styles[j % len(styles)],
                    color=colors[i % len(colors)],
                    label=f"{s.name}: {key}" if len(all_series) > 1 else key,
                    linewidth=1.2,
                )
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("step")
        if drawn:
            if attr == "loss" and all(
                v > 0 for s in all_series for _, ys in s.loss.values() for v in ys
            ):
                ax.set_yscale("log")
            ax.legend(fontsize=7)
        else:
            combiners = ", ".join(sorted({s.combiner for s in all_series if s.combiner})) or "none"
            ax.text(
                0.5,
                0.5,
                f"no learned weights\n(combiner: {combiners})",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
    from matplotlib.lines import Line2D

    axes[0][2].axis("off")
    handles = [
        Line2D([0], [0], color=colors[i % len(colors)], linewidth=2) for i in range(len(all_series))
    ]
    axes[0][2].legend(
        handles,
        [s.name for s in all_series],
        title="runs (colour)",
        loc="upper left",
        fontsize=8,
        frameon=False,
    )
    for ax, m in zip(axes[1], METRICS):
        drawn = False
        for i, s in enumerate(all_series):
            for j, (split, (x, y)) in enumerate(s.val.get(m, {}).items()):
                ax.plot(
                    x,
                    y,
                    styles[j % len(styles)],
                    marker="o",
                    markersize=3,
                    color=colors[i % len(colors)],
                    label=f"{s.name}: {split}" if len(all_series) > 1 else split,
                    linewidth=1.2,
                )
                drawn = True
        ax.set_title(f"validation {m.upper()}")
        ax.set_xlabel("step")
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(
                0.5,
                0.5,
                "no values",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=DPI)
    plt.close(fig)
    return output
