"""Options that several commands share, defined once so that each has one meaning everywhere.

``--device``: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``
(tsrx.engine.loading.resolve_device). ``--precision``: ``fp32``, ``bf16`` or ``fp16``, the SR
forward's arithmetic, as ``eval.precision`` (tsrx.engine.precision); ``--judge-precision``
the judges', as ``eval.judge_precision``. ``--judge``:
``NAME=WEIGHTS`` or ``NAME`` for a judge that ships its weights
(tsrx.engine.judge_build.parse_cli_judges), repeatable. ``--plugin``: a plugin file or
module to load for the components a checkpoint names (tsrx.plugins.load_named_plugins).
"""

from __future__ import annotations

DEVICE_DEFAULT = "auto"
DEVICE_HELP = "auto (cuda when available, else cpu), cpu, cuda or cuda:N."
PRECISION_HELP = (
    "The SR forward's arithmetic: fp32 (exact, the default: the config's eval.precision), "
    "bf16 (bfloat16 autocast: CPU or CUDA, several times faster on CPUs with AVX512_BF16/AMX) "
    "or fp16 (CUDA only); its output is compared and read in float32."
)
JUDGE_PRECISION_HELP = (
    "The judges' arithmetic: fp32 (exact, the default: the config's eval.judge_precision) or "
    "bf16 (autocast: about twice as fast for torch judges on CPUs with AVX512_BF16/AMX, "
    "readings differ slightly; onnxruntime judges such as ppocr read the same either way)."
)
JUDGE_HELP = (
    "A named judge, repeatable: NAME=WEIGHTS (crnn=crnn.pth, aster=aster.pth.tar; the type "
    "is NAME unless the file says otherwise) or NAME for one that ships its weights (ppocr). "
    "Replaces the config's [eval.judges]."
)
PLUGIN_HELP = (
    "A plugin file or module providing components the checkpoint needs (repeatable); tsrx "
    "never imports code a checkpoint names."
)
RECOGNIZER_MOVED = (
    "{option} {value}: judge weights are given with --judge NAME=WEIGHTS in every command "
    "now (e.g. --judge crnn={value})"
)
