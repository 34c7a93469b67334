"""Type checking of TOML values against Python annotations.

One mechanism serves every table: a section's dataclass (``[train]``) and a
component's constructor signature (``[model.head]``) are both checked here, so
an owner only writes annotated fields and gets file:table.key errors for free.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union

from tsrx.config.load import tomllib
from tsrx.errors import suggest

# The trainer every run executes unless [launcher] entry names another function.
TRAINER_ENTRY = "tsrx.engine.run:run_training"


# Keys that were renamed, by dotted path, with the hint a file that still has them gets: the
# old spelling is refused with it (never silently read under the new meaning). A table's owner
# fills it next to its dataclass: ``RENAMED["train.amp"] = "renamed train.precision ..."``.
RENAMED: dict[str, str] = {}


class RawValue(str):
    """A value typed on the command line (``--set k=v``): converted by the schema, not guessed."""


@dataclasses.dataclass(frozen=True)
class Component:
    """Marks a field as a component table of a registry (``Annotated[dict, Component("head")]``).

    ``many=True``: a list whose items are names or tables of that registry.
    """

    registry: str
    many: bool = False


@dataclasses.dataclass(frozen=True)
class Check:
    """A condition on a value beyond its type (``Annotated[str, NON_EMPTY]``)."""

    test: Callable[[Any], bool]
    expected: str


NON_EMPTY = Check(lambda v: bool(str(v).strip()), "a non-empty path")


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a number may take, carried by its annotation: ``Annotated[int, Positive]``.

    Checked with the type when a file is validated, so ``train.steps = 0`` is refused by
    ``tsrx config validate`` instead of producing an untrained "completed" run hours later.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: low itself is excluded
    high_open: bool = False

    def contains(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return True  # the type check reports it
        if value != value:  # NaN is in no range
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def describe(self) -> str:
        if self.low == 0 and self.high is None:
            return "> 0" if self.low_open else ">= 0"
        if self.low is not None and self.high is not None:
            return (
                f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
                f"{')' if self.high_open else ']'}"
            )
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        return f"{'<' if self.high_open else '<='} {_num(self.high)}"


def _num(x: float | None) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


Positive = Range(low=0, low_open=True)
NonNegative = Range(low=0)
Probability = Range(0, 1)  # [0, 1], e.g. dropout
OpenUnit = Range(0, 1, low_open=True, high_open=True)  # (0, 1)

# Ready-made annotations for components' options: ``hidden_units: PositiveInt = 256``.
PositiveInt = Annotated[int, Positive]
NonNegativeInt = Annotated[int, NonNegative]
PositiveFloat = Annotated[float, Positive]
NonNegativeFloat = Annotated[float, NonNegative]
Fraction = Annotated[float, Probability]


def range_of(tp: Any) -> Range | None:
    if typing.get_origin(tp) is typing.Annotated:
        for meta in tp.__metadata__:
            if isinstance(meta, Range):
                return meta
    return None


def component_of(tp: Any) -> Component | None:
    if typing.get_origin(tp) is typing.Annotated:
        for meta in tp.__metadata__:
            if isinstance(meta, Component):
                return meta
    return None


class Mismatch(Exception):
    """A value does not fit its annotation; the message says what was expected."""


# ``dict[str, Any]`` and ``list[Any]`` say no more than ``dict`` and ``list`` (a TOML table's
# keys are strings): spelled either way, a field is checked, coerced and named alike.
_BARE = {dict[str, Any]: dict, dict[Any, Any]: dict, list[Any]: list}


def _bare(tp: Any) -> Any:
    try:
        return _BARE.get(tp, tp)
    except TypeError:  # an unhashable annotation (Annotated with a list in its metadata)
        return tp


def type_name(tp: Any) -> str:
    tp = _bare(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        comp = component_of(tp)
        if comp is not None:
            return (
                f"a list of {comp.registry} names or tables"
                if comp.many
                else (f"a {comp.registry} table with 'type'")
            )
        checks = [m.expected for m in tp.__metadata__ if isinstance(m, Check)]
        if checks:
            return " and ".join(checks)
        rng = range_of(tp)
        base = type_name(typing.get_args(tp)[0])
        return f"{base} {rng.describe()}" if rng else base
    if tp is Any or tp is inspect.Parameter.empty:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {type_name(args[0])}" if args else "a list"
    if origin is dict:
        args = typing.get_args(tp)
        return f"a table of {type_name(args[1])}" if args else "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        dict: "a table",
        list: "a list",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def unwrap_optional(tp: Any) -> Any:
    """``X | None`` -> ``X`` (other unions unchanged)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _raw_string(raw: RawValue) -> str:
    """A command-line string: quoted TOML (``"/p"``) is unquoted, anything else taken as typed."""
    parsed = parse_raw(raw) if raw[:1] in "\"'" else None
    return parsed if isinstance(parsed, str) else str(raw)


def parse_raw(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return str(raw)


def coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` where TOML cannot say it (int->float, str->Path),
    or raise :class:`Mismatch`."""
    tp = _bare(tp)
    if tp is Any or tp is inspect.Parameter.empty or tp is object:
        return parse_raw(value) if isinstance(value, RawValue) else value
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        out = coerce(value, typing.get_args(tp)[0])
        for meta in tp.__metadata__:
            if isinstance(meta, Check) and not meta.test(out):
                raise Mismatch(f"expected {meta.expected}, got {value!r}")
        rng = range_of(tp)
        if rng is not None and not rng.contains(out):
            raise Mismatch(f"expected {type_name(tp)}, got {out!r}")
        return out
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, RawValue) and str in args:
            return _raw_string(value)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg)
            except Mismatch:
                pass
        raise Mismatch(f"expected {type_name(tp)}, got {value!r}")
    if (
        isinstance(value, RawValue)
        and tp is not str
        and not (isinstance(tp, type) and issubclass(tp, PurePath))
    ):
        value = parse_raw(value)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and type(value) is type(allowed[allowed.index(value)]):
            return value
        raise Mismatch(
            f"expected {type_name(tp)}, got {value!r}{suggest(str(value), map(str, allowed))}"
        )
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise Mismatch(f"expected {type_name(tp)}, got {value!r}")
        item_types = [a for a in typing.get_args(tp) if a is not Ellipsis]
        inner = item_types[0] if item_types else Any
        items = [coerce(v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise Mismatch(f"expected {type_name(tp)}, got {value!r}")
        args = typing.get_args(tp)
        inner = args[1] if args else Any
        table = {}
        for k, v in value.items():
            try:
                table[k] = coerce(v, inner)
            except Mismatch as exc:
                raise Mismatch(f"key {k!r}: {exc}") from None
        return table
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                number = math.inf
            if not math.isfinite(number):  # inf or nan: no setting of tsrx means either
                raise Mismatch(f"expected a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, RawValue):
            return _raw_string(value)
        if isinstance(value, str):
            return str(value)
    elif isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, RawValue):
            return _raw_string(value)
        if isinstance(value, (str, PurePath)):
            return str(value)
    elif tp is dict:
        if isinstance(value, dict):
            return value
    elif tp is list:
        if isinstance(value, list):
            return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return value  # nested tables are checked field by field by check_table
    else:
        return value
    raise Mismatch(f"expected {type_name(tp)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    annotation: Any
    required: bool
    default: Any = None


def _type_hints(obj: Any) -> dict[str, Any]:
    """``typing.get_type_hints`` once per class or callable: it evaluates string annotations
    anew on each call, and a grid validates the same sections and components at every point
    (1,000 points: 3x faster). A copy: callers may change it."""
    try:
        return dict(_cached_type_hints(obj))
    except TypeError:  # an unhashable callable: not cached
        return typing.get_type_hints(obj, include_extras=True)


@functools.cache
def _cached_type_hints(obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(obj, include_extras=True)


def dataclass_fields(cls: type) -> dict[str, Field]:
    hints = _type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        required, default = False, None
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            required = True
        out[f.name] = Field(f.name, hints.get(f.name, Any), required, default)
    return out


def signature_fields(obj: Callable[..., Any]) -> tuple[dict[str, Field], bool]:
    """Fields of a callable's keyword parameters, and whether it takes ``**kwargs``."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        hints = _type_hints(target)  # keeps Range marks
    except Exception:  # unresolvable forward references: fall back to no type checks
        hints = {}
    sig = inspect.signature(obj)
    fields, var_kw = {}, False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
            continue
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
            continue
        required = p.default is inspect.Parameter.empty
        fields[p.name] = Field(
            p.name, hints.get(p.name, p.annotation), required, None if required else p.default
        )
    return fields, var_kw


def unannotated_options(
    obj: Callable[..., Any], provided: frozenset[str] = frozenset()
) -> list[str]:
    """Constructor options without a type annotation: TOML values for them go unchecked."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in params
        if p.name not in ("self", *provided)
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.annotation is inspect.Parameter.empty
    ]


def check_table(
    table: dict[str, Any],
    fields: dict[str, Field],
    where: str,
    *,
    extra_ok: bool = False,
    provided: frozenset[str] = frozenset(),
    skip: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Check ``table`` against ``fields``.

    Returns the coerced table and a list of ``(dotted key, message)`` problems;
    ``provided`` names arguments tsrx itself supplies (not required from the user),
    ``skip`` names keys the caller checks itself (such as ``type``). Component tables inside
    (fields marked :class:`Component`) are the registries' to check:
    ``tsrx.registry.check_components``.
    """
    problems: list[tuple[str, str]] = []
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in skip:
            out[key] = value
            continue
        path = f"{where}.{key}" if where else key
        if key not in fields:
            if path in RENAMED:
                problems.append((path, RENAMED[path]))
                continue
            if extra_ok:
                out[key] = parse_raw(value) if isinstance(value, RawValue) else value
                continue
            allowed = sorted(fields)
            problems.append(
                (
                    path,
                    f"unknown key{suggest(key, allowed)}; allowed keys: "
                    f"{', '.join(allowed) if allowed else '(none)'}",
                )
            )
            continue
        if key in provided:
            problems.append((path, "is set by tsrx itself and cannot be given here"))
            continue
        f = fields[key]
        try:
            out[key] = coerce(value, f.annotation)
        except Mismatch as exc:
            problems.append((path, str(exc)))
            continue
        sub_schema = unwrap_optional(f.annotation)
        if (
            isinstance(sub_schema, type)
            and dataclasses.is_dataclass(sub_schema)
            and isinstance(value, dict)
        ):
            sub, sub_problems = check_table(value, dataclass_fields(sub_schema), path)
            out[key] = sub
            problems.extend(sub_problems)
    for name, f in fields.items():
        if f.required and name not in table and name not in provided and name not in skip:
            problems.append(
                (f"{where}.{name}" if where else name, f"is required ({type_name(f.annotation)})")
            )
    return out, problems


def build_dataclass(cls: type, table: dict[str, Any], where: str) -> Any:
    """Instantiate a section dataclass from an already-checked table."""
    fields = dataclass_fields(cls)
    kwargs = {}
    for k, v in table.items():
        ann = unwrap_optional(fields[k].annotation)
        if isinstance(ann, type) and dataclasses.is_dataclass(ann) and isinstance(v, dict):
            v = build_dataclass(ann, v, f"{where}.{k}")
        kwargs[k] = v
    return cls(**kwargs)
