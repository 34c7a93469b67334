"""Experiment files: loading, schema checks, sections. Range annotations for components'
options live here: ``from tsrx.config import PositiveInt`` (see tsrx.config.schema.Range)."""

from tsrx.config.schema import (
    Fraction,
    NonNegative,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnit,
    Positive,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
)

__all__ = [
    "Range",
    "Positive",
    "NonNegative",
    "Probability",
    "OpenUnit",
    "PositiveInt",
    "NonNegativeInt",
    "PositiveFloat",
    "NonNegativeFloat",
    "Fraction",
]
