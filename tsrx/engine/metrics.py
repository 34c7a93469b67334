"""Evaluation metrics: PSNR, SSIM and accuracy, batched in torch on any device.

Conventions (also in docs/metrics.md), following the TextZoom reference code,
JasonBoy1/TextZoom ``src/utils/ssim_psnr.py`` (``calculate_psnr``, ``SSIM``) as called
from ``src/interfaces/super_resolution.py`` (``test`` / ``eval``):

- Images are float in [0, 1]; only the RGB channels ``[:, :3]`` count (the mask is
  dropped). Nothing is clamped or quantised: the SR output is used as it comes.
- PSNR = ``20 * log10(255 / sqrt(MSE))`` with MSE over the images scaled by 255;
  identical images give ``inf`` (the reference returns ``float('inf')``).
- SSIM: 11x11 Gaussian window, sigma 1.5, applied per channel (depthwise conv) with
  zero padding of 5, so the map has the image's size and border windows see black;
  C1 = 0.01^2, C2 = 0.03^2 (data range 1); the SSIM map's mean.
- Protocol ``textzoom``: one PSNR and one SSIM per *batch* (MSE and SSIM-map means over
  the whole batch), then the plain mean over batches: numbers depend on the batch size
  and order, so the evaluator fixes and records them.
  Protocol ``per-image``: both metrics per image, then the mean over images.
- Accuracy: prediction == label after ``tsrx.models.text.normalize_for_accuracy`` on
  both (lower-case, keep 0-9a-z).
- The average over splits is weighted by sample count (``weighted_average``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from tsrx.errors import TsrxError
from tsrx.models.text import normalize_for_accuracy

Protocol = Literal["textzoom", "per-image"]
PROTOCOLS = ("textzoom", "per-image")
METRICS = ("acc", "psnr", "ssim")
# per split: samples, samples judged by a recognizer, correct, PSNR sum, SSIM sum,
# number of PSNR/SSIM terms (batches for textzoom, images for per-image)
FIELDS = ("n", "n_judged", "correct", "psnr_sum", "ssim_sum", "terms")

WINDOW_SIZE = 11
SIGMA = 1.5
C1 = 0.01**2
C2 = 0.03**2


def gaussian_window(
    size: int = WINDOW_SIZE,
    sigma: float = SIGMA,
    channels: int = 3,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The (channels, 1, size, size) normalised 2-D Gaussian for a depthwise conv."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = g / g.sum()
    window = torch.outer(g, g).to(torch.float32)
    return window.expand(channels, 1, size, size).contiguous().to(device)


def _rgb_pair(sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if sr.dim() != 4 or sr.shape[0] != hr.shape[0] or sr.shape[2:] != hr.shape[2:]:
        raise TsrxError(
            f"metrics: SR and HR images must be (B, C, H, W) of the same batch "
            f"and size, got SR {tuple(sr.shape)} and HR {tuple(hr.shape)}"
        )
    return sr[:, :3].float(), hr[:, :3].float()


def ssim_map(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """The per-pixel SSIM map (B, 3, H, W) of the RGB channels (conventions above)."""
    x, y = _rgb_pair(sr, hr)
    channels = x.shape[1]
    window = gaussian_window(channels=channels, device=x.device)
    # one depthwise conv over the five moments at once: x, y, x^2, y^2, xy
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    moments = F.conv2d(
        stacked, window.repeat(5, 1, 1, 1), padding=WINDOW_SIZE // 2, groups=5 * channels
    )
    mu_x, mu_y, e_xx, e_yy, e_xy = torch.split(moments, channels, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x, var_y, cov = e_xx - mu_xx, e_yy - mu_yy, e_xy - mu_xy
    return ((2 * mu_xy + C1) * (2 * cov + C2)) / ((mu_xx + mu_yy + C1) * (var_x + var_y + C2))


def ssim_per_image(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """(B,) SSIM of each image."""
    return ssim_map(sr, hr).mean(dim=(1, 2, 3))


def ssim_batch(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Scalar SSIM of a batch as the reference: the mean of the whole batch's map."""
    return ssim_map(sr, hr).mean()


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return 20 * torch.log10(255.0 / torch.sqrt(mse))


def psnr_per_image(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR of each image in dB (inf where the image is reproduced exactly)."""
    x, y = _rgb_pair(sr, hr)
    return _psnr(((x * 255 - y * 255) ** 2).mean(dim=(1, 2, 3)))


def psnr_batch(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Scalar PSNR of a batch as the reference: one MSE over every pixel of the batch."""
    x, y = _rgb_pair(sr, hr)
    return _psnr(((x * 255 - y * 255) ** 2).mean())


def count_correct(preds: Sequence[str], labels: Sequence[str]) -> int:
    """How many predictions equal their label after accuracy normalisation."""
    if len(preds) != len(labels):
        raise TsrxError(f"metrics: {len(preds)} predictions for {len(labels)} labels")
    return sum(
        normalize_for_accuracy(p) == normalize_for_accuracy(t) for p, t in zip(preds, labels)
    )


def weighted_average(splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"n", "acc", "psnr", "ssim"}`` averaged over splits, weighted by each split's ``n``.

    A metric that a split lacks (None) is averaged over the splits that have it;
    None when no split has it.
    """
    out: dict[str, Any] = {"n": sum(int(s["n"]) for s in splits.values())}
    for metric in METRICS:
        pairs = [
            (s["n"], s[metric]) for s in splits.values() if s.get(metric) is not None and s["n"] > 0
        ]
        weight = sum(n for n, _ in pairs)
        out[metric] = sum(n * v for n, v in pairs) / weight if weight else None
    return out


class MetricAccumulator:
    """Running sums of one evaluation, per split; mergeable across DDP ranks.

    ``update`` keeps its sums on the images' device (no host sync per batch).
    For DDP, every rank builds the accumulator with the same ``splits`` in the same
    order, then ``all_reduce(acc.state_tensor())`` (SUM) and ``load_state_tensor``. Under
    the ``textzoom`` protocol a "batch" is what one ``update`` call receives, so a
    rank's shard of a global batch is its own batch: the merged value is the mean over
    all ranks' batches, which equals the single-process number only when each rank
    sees the same batches as that process would.
    """

    def __init__(self, protocol: Protocol = "textzoom", splits: Sequence[str] = ()):
        if protocol not in PROTOCOLS:
            raise TsrxError(
                f"metrics: unknown protocol {protocol!r}; one of {', '.join(PROTOCOLS)}"
            )
        self.protocol = protocol
        self.splits: list[str] = []
        self._sums: dict[str, torch.Tensor] = {}
        for split in splits:
            self._add_split(split)

    def _add_split(self, split: str, device: torch.device | str | None = None) -> None:
        if split not in self._sums:
            self.splits.append(split)
            self._sums[split] = torch.zeros(len(FIELDS), dtype=torch.float64, device=device)

    def update(
        self,
        split: str,
        sr: torch.Tensor | None,
        hr: torch.Tensor | None,
        preds: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add one batch. ``sr``/``hr`` None: accuracy only; ``preds`` None: images only."""
        device = sr.device if sr is not None else None
        self._add_split(split, device)
        if preds is not None:
            n = len(preds)
        elif sr is not None:
            n = sr.shape[0]
        else:
            raise TsrxError(f"metrics: split {split!r}: a batch needs images or predictions")
        judged = correct = 0
        if preds is not None:
            if labels is None:
                raise TsrxError(f"metrics: split {split!r}: predictions given without labels")
            judged, correct = len(preds), count_correct(preds, labels)
            if sr is not None and sr.shape[0] != judged:
                raise TsrxError(
                    f"metrics: split {split!r}: {sr.shape[0]} images but {judged} predictions"
                )
        counts = torch.tensor([n, judged, correct], dtype=torch.float64)
        sums = self._sums[split]
        if sr is not None:
            if hr is None:
                raise TsrxError(f"metrics: split {split!r}: SR images given without HR images")
            with torch.no_grad():
                if self.protocol == "textzoom":
                    image = torch.stack(
                        [psnr_batch(sr, hr), ssim_batch(sr, hr), torch.ones((), device=sr.device)]
                    )
                else:
                    image = torch.stack(
                        [
                            psnr_per_image(sr, hr).sum(),
                            ssim_per_image(sr, hr).sum(),
                            torch.tensor(float(n), device=sr.device),
                        ]
                    )
            sums = sums.to(sr.device)
            sums[3:] += image.to(torch.float64)
        sums[:3] += counts.to(sums.device)
        self._sums[split] = sums

    # -- DDP ------------------------------------------------------------------------
    def state_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """All sums as one flat float64 tensor (len(splits) x len(FIELDS)) for all_reduce."""
        if not self.splits:
            return torch.zeros(0, dtype=torch.float64, device=device)
        target = device if device is not None else next(iter(self._sums.values())).device
        return torch.cat([self._sums[s].to(target) for s in self.splits])

    def load_state_tensor(self, state: torch.Tensor) -> None:
        """Replace the sums by ``state`` (e.g. after an all_reduce SUM)."""
        expected = len(self.splits) * len(FIELDS)
        if state.numel() != expected:
            raise TsrxError(
                f"metrics: state of {state.numel()} values for splits {self.splits} "
                f"(expected {expected}); did the ranks use different splits?"
            )
        for i, split in enumerate(self.splits):
            self._sums[split] = (
                state[i * len(FIELDS) : (i + 1) * len(FIELDS)].to(torch.float64).clone()
            )

    @classmethod
    def from_state_tensor(
        cls, protocol: Protocol, splits: Sequence[str], state: torch.Tensor
    ) -> MetricAccumulator:
        acc = cls(protocol, splits)
        acc.load_state_tensor(state)
        return acc

    def merge(self, other: MetricAccumulator) -> None:
        """Add another accumulator's sums (same protocol) into this one."""
        if other.protocol != self.protocol:
            raise TsrxError(
                f"metrics: cannot merge protocol {other.protocol!r} into {self.protocol!r}"
            )
        for split in other.splits:
            self._add_split(split, other._sums[split].device)
            self._sums[split] = self._sums[split] + other._sums[split].to(self._sums[split].device)

    # -- result -----------------------------------------------------------------------
    def compute(self) -> dict[str, Any]:
        """``{"protocol", "splits": {split: {"n", "acc", "psnr", "ssim"}}, "average"}``.

        A metric with nothing to average (no recognizer, no images) is None.
        """
        splits: dict[str, dict[str, Any]] = {}
        for split in self.splits:
            n, judged, correct, psnr_sum, ssim_sum, terms = self._sums[split].tolist()
            splits[split] = {
                "n": int(n),
                "acc": correct / judged if judged else None,
                "psnr": psnr_sum / terms if terms else None,
                "ssim": ssim_sum / terms if terms else None,
            }
        return {"protocol": self.protocol, "splits": splits, "average": weighted_average(splits)}


__all__ = [
    "PROTOCOLS",
    "FIELDS",
    "MetricAccumulator",
    "weighted_average",
    "count_correct",
    "psnr_batch",
    "psnr_per_image",
    "ssim_batch",
    "ssim_per_image",
    "ssim_map",
    "gaussian_window",
]
