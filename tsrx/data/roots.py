"""Whether ``data.root`` may be read or synthesised, and whether what it holds is synthetic.

A mistyped ``--set data.root=/data/TextZom`` must not quietly become a synthetic data set:
``data.synth`` synthesises only at the root it was written with (``data.synth.root``, filled
from the ``data.root`` of the file that sets ``synth``), so a root changed elsewhere that does
not exist is an error. Torch-free: ``tsrx report`` reads the marker too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tsrx.errors import TsrxError

SYNTH_MANIFEST = "synth.json"  # written by tsrx.data.synth next to the LMDBs it makes


def is_synthetic(root: str | Path) -> bool:
    """Whether ``root`` was made by ``tsrx data synth`` / ``data.synth`` (its manifest)."""
    return (Path(root) / SYNTH_MANIFEST).is_file()


def same_place(a: str | Path, b: str | Path) -> bool:
    return os.path.abspath(os.path.expanduser(a)) == os.path.abspath(os.path.expanduser(b))


def may_synthesise(data_cfg: dict[str, Any]) -> bool:
    """True when ``data.synth`` asks for synthetic data at this very ``data.root``.

    A ``synth`` table without ``root`` (a config resolved before tsrx recorded it) is taken
    to mean its own ``data.root``, as it did then.
    """
    spec = data_cfg.get("synth")
    if not isinstance(spec, dict):
        return False
    return same_place(spec.get("root") or data_cfg["root"], data_cfg["root"])


def check_root(data_cfg: dict[str, Any]) -> None:
    """Refuse a ``data.root`` that does not exist unless synthesis at it was asked for."""
    root = Path(str(data_cfg["root"]))
    if root.exists() or may_synthesise(data_cfg):
        return
    spec = data_cfg.get("synth")
    msg = f"data.root = {str(root)!r}: no such folder ({root.absolute()})"
    if isinstance(spec, dict):
        msg += (
            f". data.synth synthesises only at the root written with it (data.synth.root = "
            f"{spec.get('root')!r}), so nothing is made here: check the path, or to "
            f"synthesise at this root too, also pass --set data.synth.root={root}"
        )
    else:
        msg += ": point it at the folder holding train1, train2 and test/ (TextZoom)"
    raise TsrxError(msg)


SPLITS = ("easy", "medium", "hard")


def misplaced_root(root: str | Path) -> str | None:
    """What a folder given as a TextZoom root is when it is not one, and what to pass instead;
    None when it is not recognisably part of a TextZoom tree."""
    root = Path(root)
    if not root.exists():
        return f"no such folder ({root.absolute()})"
    name, parent = root.name, root.parent
    if name == "test" and any((root / s).is_dir() for s in SPLITS):
        return f"this is the test/ folder; pass its parent, {parent}"
    if name == "val" and any((root / s).is_dir() for s in SPLITS):
        return f"this is the val/ folder; pass its parent, {parent}"
    if name in SPLITS and parent.name in ("test", "val"):
        return (
            f"this is one split folder ({parent.name}/{name}); pass the TextZoom folder that "
            f"holds {parent.name}/, {parent.parent}"
        )
    if name in ("train1", "train2") and (root / "data.mdb").is_file():
        return f"this is a training split ({name}); pass its parent, {parent}"
    return None
