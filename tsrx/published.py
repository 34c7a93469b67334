"""The field's published weight files: where each comes from, and how tsrx knows a file is it.

Plugins register one :class:`PublishedFile` per file in ``tsrx.registry.PUBLISHED_FILES``
(the built-ins: plugins/published_weights.py). A file whose authors publish a checksum is
identified by it, and a file carrying a published file's name but another checksum is named
as damaged or different; most of the field's files come with no checksum at all (a Dropbox,
Google Drive or Baidu link), and those are identified by their key layout only, which says
what the file is, not that it is the published one. Nothing here invents a checksum.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsrx.errors import TsrxError


@dataclass(frozen=True)
class PublishedFile:
    """One published file. ``layout``: the ``CHECKPOINT_FORMATS`` reader that recognises its
    keys and, for TextZoom-format SR files, the ``arch`` it names (``"textzoom:tbsrn"``)."""

    title: str  # "meijieru/crnn.pytorch crnn.pth"
    filename: str  # the name it is published under
    source: str  # where to download it
    layout: str  # "crnn", "aster", "moran", "textzoom:<arch>", "state_dict"
    md5: str | None = None  # only a checksum its authors publish
    checksum_source: str | None = None  # where that checksum is stated
    note: str = ""


def file_md5(path: Path) -> str:
    """The file's MD5 in hex, read in 1 MiB blocks (the form reference repositories publish)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def published_files() -> list[PublishedFile]:
    from tsrx.registry import PUBLISHED_FILES

    return [entry.obj for entry in PUBLISHED_FILES.entries()]


def verify(path: str | Path) -> PublishedFile | None:
    """The published file ``path`` is, by its published checksum; None when no published
    checksum matches. A file under a published file's name whose checksum differs is an error
    naming both checksums (a damaged download, or another file under that name)."""
    path = Path(path)
    checksummed = [p for p in published_files() if p.md5]
    if not checksummed:
        return None
    actual = file_md5(path)
    for p in checksummed:
        if p.md5 == actual:
            return p
    for p in checksummed:
        if p.filename == path.name:
            raise TsrxError(
                f"{path}: named like the published {p.title}, but its MD5 is {actual}, not the "
                f"published {p.md5} ({p.checksum_source}): the download is damaged or it is "
                f"another file. Get it again from {p.source}"
            )
    return None


def layout_of(obj: Any) -> str:
    """``crnn``, ``textzoom:tsrn``...: what the file's keys say it is (see PublishedFile)."""
    from tsrx.checkpoint import detect_format, read_official

    fmt = detect_format(obj)
    if fmt == "textzoom":
        official = read_official(obj)
        return f"textzoom:{official.model['sr']['type']}" if official else fmt
    return fmt


def describe(path: str | Path, obj: Any) -> str | None:
    """One line for ``tsrx ckpt inspect``: which published file this is and how tsrx knows."""
    p = verify(path)
    if p is not None:
        return (
            f"published file {p.title}, checksum verified (MD5 {p.md5}, as published in "
            f"{p.checksum_source}); source: {p.source}"
        )
    layout = layout_of(obj)
    matches = [p for p in published_files() if p.layout == layout and not p.md5]
    if not matches:
        return None
    named = [p for p in matches if p.filename == Path(path).name] or matches
    titles = " or ".join(p.title for p in named)
    return (
        f"key layout of the published {titles}; no checksum is published for it, so tsrx "
        f"identifies it by its keys only (docs/models.md, 'Published weights')"
    )
