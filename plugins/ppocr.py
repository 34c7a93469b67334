"""``ppocr``: the PP-OCRv4 text recognizer shipped in the ``rapidocr-onnxruntime`` wheel.

A judge that needs no weights from the user: the ONNX model
(``rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx``, the path named by the
package's ``config.yaml`` under ``Rec.model_path``) comes with the package from PyPI and
is run by onnxruntime. It is a judge only: no training, no head (``ctc = False`` for tsrx,
as its logits never leave this module).

Its own pipeline (``rapidocr_onnxruntime/ch_ppocr_rec/text_recognize.py``), reproduced here:
- images are BGR (rapidocr's image loader turns RGB into BGR before recognition);
- each crop is resized (bilinear) to height 48 keeping its aspect ratio, its width capped at
  ``48 x max_ratio`` where ``max_ratio`` is the largest width/height ratio of the batch and at
  least 320 / 48; the crop is padded on the right with zeros up to that width;
- values are ``(x / 255 - 0.5) / 0.5``;
- the output (B, T, K) holds per-step class probabilities; decoding is greedy CTC (argmax,
  merge repeats, drop class 0), the character list comes from the model's ONNX metadata
  (key ``character``, one per line) with the blank inserted at 0 and a space appended last.
The per-character score is the probability of the kept step (rapidocr averages them per word).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tsrx.errors import TsrxError
from tsrx.models.recognition import Recognition
from tsrx.models.text import ctc_best_path
from tsrx.registry import RECOGNIZERS
from tsrx_builtin.installed_package import distribution_version, package_dir
from tsrx_builtin.worker_pool import GrowingPool

PACKAGE = "rapidocr-onnxruntime"
MODULE = "rapidocr_onnxruntime"
INSTALL_HINT = (
    f"the ppocr judge needs the {PACKAGE} package (it ships the PP-OCRv4 recognizer): "
    f"pip install '{PACKAGE}' (or install tsrx with its judge extra: "
    "pip install -e '.[judge]')"
)
HEIGHT = 48
MIN_WIDTH = 320


def _package_dir() -> Path:
    return package_dir(MODULE, INSTALL_HINT)


def default_model_path() -> Path:
    """The recognizer model of the installed package, as its config.yaml names it."""
    root = _package_dir()
    relative = "models/ch_PP-OCRv4_rec_infer.onnx"
    config = root / "config.yaml"
    if config.is_file():
        # Read the one key we need without a YAML dependency: "Rec:" ... "model_path: ...".
        section = None
        for line in config.read_text(encoding="utf-8").splitlines():
            if line and not line[0].isspace():
                section = line.split(":", 1)[0].strip()
            elif section == "Rec" and line.strip().startswith("model_path:"):
                relative = line.split(":", 1)[1].strip()
    path = root / relative
    if not path.is_file():
        raise TsrxError(
            f"the installed {PACKAGE} ({root}) has no recognizer model at {path}; "
            f"reinstall it: pip install --force-reinstall '{PACKAGE}'"
        )
    return path


def package_version() -> str:
    return distribution_version(PACKAGE)


@lru_cache(maxsize=4)
def _session(path: str, threads: int):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise TsrxError(f"{INSTALL_HINT} (onnxruntime failed to import: {exc})") from None
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise TsrxError(f"ppocr: cannot load the ONNX model {path}: {exc}") from None


# Concurrent ONNX calls (``threads = 0``): a pool of Python threads, each running one
# single-threaded onnxruntime call at a time (onnxruntime releases the GIL while it runs).
_workers = GrowingPool("tsrx-ppocr").at_least


@RECOGNIZERS.register("ppocr")
class PPOCR(nn.Module):
    """PP-OCRv4 recognizer (judge only): images (B, 3, H, W) RGB in [0, 1] -> words.

    Options: ``model_path`` (another PP-OCR recognition ONNX file with a ``character``
    metadata entry; default the one in ``rapidocr-onnxruntime``), ``threads``,
    ``batch_size`` (images per ONNX call; 8 used 1.28x less CPU time than 64 at 1 thread and
    1.33x at 2, reading the same 600 synthetic crops: docs/performance.md, issue 25).

    ``threads = 0`` (default): the batches of ``batch_size`` images run as single-threaded
    onnxruntime calls, as many at once as torch has threads (the process's CPU share, set
    by tsrx from ``TSRX_THREADS``, Slurm's ``cpus_per_task`` or the affinity mask). Why:
    at batch 8 onnxruntime's own intra-op threads do not pay. Idle, 2 of them doubled the
    CPU time per image (20 against 38 images per CPU-second at 1), so about the same wall
    time. On the shared machine, onnxruntime's default (one thread per core) took 1.8x
    the wall time of 1 thread. Independent batches need no coordination, and every way
    gives bit-identical output (docs/performance.md, "Quickstart").
    ``threads = N > 0``: one call at a time with N onnxruntime intra-op threads.
    """

    ctc = False  # its CTC logits stay inside: no head, no CTC loss, no training
    pretrained = True  # brings its own weights: a judge without ``weights``

    def __init__(self, model_path: str | None = None, threads: int = 0, batch_size: int = 8):
        super().__init__()
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise TsrxError(f"ppocr: model_path {path}: no such file")
        self.model_path = str(path)
        self.threads = int(threads)
        self.batch_size = max(1, int(batch_size))
        session = self._onnx_session()
        meta = session.get_modelmeta().custom_metadata_map
        if "character" not in meta:
            raise TsrxError(
                f"ppocr: {path} has no 'character' metadata: not a PP-OCR "
                "recognition model exported with its dictionary"
            )
        # class 0 is the CTC blank, the last class a space (rapidocr's CTCLabelDecode)
        self.characters = ["", *meta["character"].splitlines(), " "]
        self.alphabet = "".join(c for c in self.characters if len(c) == 1)
        self.num_classes = len(self.characters)
        self.input_name = session.get_inputs()[0].name

    def _onnx_session(self):
        """The onnxruntime session: ``threads`` intra-op threads, or 1 with ``threads = 0``
        (the calls then run side by side, ``forward``)."""
        return _session(self.model_path, self.threads if self.threads > 0 else 1)

    def describe(self) -> str:
        return f"PP-OCRv4 recognizer ({PACKAGE} {package_version()}, onnxruntime)"

    def reading_identity(self) -> str:
        """What decides its readings besides this file's code (tsrx/engine/judge_identity.py):
        the ONNX model's bytes, onnxruntime's and the package's versions. Not ``threads`` nor
        ``batch_size``: every image of a tensor has one shape, so its padded width (``prepare``)
        does not depend on how the batch is split into ONNX calls, and the in-process memory
        of readings already takes a reading for a function of the image alone."""
        from tsrx.engine.result_cache import file_sha256

        try:
            from importlib.metadata import version

            runtime = version("onnxruntime")
        except Exception:  # not installed as a distribution (a source build): its own word
            import onnxruntime

            runtime = str(onnxruntime.__version__)
        return f"onnx sha256 {file_sha256(Path(self.model_path))}, onnxruntime {runtime}, {PACKAGE} {package_version()}"

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, 3, 48, W') BGR, normalised, right-padded."""
        x = images[:, :3].detach().float().clamp(0, 1)
        x = torch.round(x * 255) / 255  # an 8-bit image, as rapidocr receives one
        h, w = x.shape[-2:]
        ratio = w / h
        width = int(HEIGHT * max(MIN_WIDTH / HEIGHT, ratio))
        resized_w = min(width, int(math.ceil(HEIGHT * ratio)))
        x = F.interpolate(x, (HEIGHT, resized_w), mode="bilinear", align_corners=False)
        x = (x.flip(1) - 0.5) / 0.5  # RGB -> BGR
        return F.pad(x, (0, width - resized_w))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, T, K) as the ONNX model outputs them."""
        chunks = self.prepare(images).cpu().split(self.batch_size)
        at_once = 1 if self.threads > 0 else min(len(chunks), torch.get_num_threads())
        session = self._onnx_session()

        def run(chunk: torch.Tensor) -> torch.Tensor:
            out = session.run(None, {self.input_name: chunk.contiguous().numpy()})[0]
            return torch.from_numpy(out)

        if at_once > 1:
            return torch.cat(list(_workers(at_once).map(run, chunks)))
        return torch.cat([run(chunk) for chunk in chunks])

    def decode(self, probs: torch.Tensor) -> Recognition:
        return ctc_best_path(probs, self.characters[1:])

    @torch.no_grad()
    def recognize(self, images: torch.Tensor) -> Recognition:
        """Greedy CTC decoding of the PP-OCRv4 output (see the module docstring)."""
        return self.decode(self(images))
