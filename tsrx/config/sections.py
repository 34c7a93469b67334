"""Top-level experiment tables and the modules that own them.

There is no global config class: each table (``[data]``, ``[model]``, ``[train]``...)
is a dataclass declared next to the code that reads it and registered here by
name. A table that is a single component (``[optim] type = "adam"``) is declared
with a :class:`~tsrx.config.schema.Component` marker instead. Owner modules must
stay free of torch imports, so that validating a config stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tsrx.config.schema import Component
from tsrx.errors import TsrxError

# Core modules declaring sections; plugins may call register_section too.
SECTION_MODULES = (
    "tsrx.data.config",
    "tsrx.models.config",
    "tsrx.engine.config",
    "tsrx.launch.config",
)


@dataclass(frozen=True)
class Section:
    name: str
    schema: Any  # a dataclass, or a Component for single-component tables
    default: dict[str, Any] | None = None  # default table for Component sections
    doc: str = ""


T = TypeVar("T")

_sections: dict[str, Section] = {}
_imported = False


def register_section(
    name: str, schema: Any, default: dict[str, Any] | None = None, doc: str = ""
) -> Any:
    if name in _sections and _sections[name].schema is not schema:
        raise TsrxError(
            f"config section [{name}] is declared twice: by "
            f"{getattr(_sections[name].schema, '__module__', '?')} and by "
            f"{getattr(schema, '__module__', '?')}"
        )
    _sections[name] = Section(name, schema, default, doc or (schema.__doc__ or "").strip())
    return schema


def section(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: ``@section("train")`` on the dataclass that owns ``[train]``."""

    def deco(cls: type[T]) -> type[T]:
        register_section(name, cls)
        return cls

    return deco


def all_sections() -> dict[str, Section]:
    global _imported
    if not _imported:
        _imported = True
        for mod in SECTION_MODULES:
            importlib.import_module(mod)
    return dict(_sections)


# Keys at the top of an experiment file that are not sections.
TOP_LEVEL_KEYS = {
    "name": str,
    "description": str,
    "seed": int,
    "plugins": list,
    "extends": list,
    "grid": dict,
    "variants": list,
}

__all__ = ["Section", "register_section", "section", "all_sections", "TOP_LEVEL_KEYS", "Component"]
