"""Moved to :mod:`tsrx.checkpoint` (models load initial weights too, and models sit below the
engine); this module re-exports it so ``tsrx.engine.checkpoint`` keeps working."""

from tsrx.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    PARTS,
    LoadReport,
    OfficialCheckpoint,
    PartReport,
    detect_format,
    load_checkpoint,
    load_into,
    make_checkpoint,
    parameter_counts,
    read_official,
    save_checkpoint,
    state_dict_for,
    strip_module_prefix,
    unwrap,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "PARTS",
    "LoadReport",
    "OfficialCheckpoint",
    "PartReport",
    "detect_format",
    "load_checkpoint",
    "load_into",
    "make_checkpoint",
    "parameter_counts",
    "read_official",
    "save_checkpoint",
    "state_dict_for",
    "strip_module_prefix",
    "unwrap",
]
