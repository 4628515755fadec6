"""Records (frozen dataclasses) from asyncpg rows, two ways behind one switch.

``fast_record`` builds without the dataclass ``__init__``: a frozen dataclass sets
each field through ``object.__setattr__``, which was most of the cost of reading a
subscription (the fan-out reads every active one per event batch, the dispatcher
every claimed one): 4.4 µs a row, 1.6 µs this way. It leans on CPython's dataclass
internals (``object.__new__`` and the instance ``__dict__``), so ``plain_record``
does the same through the constructor, and ``PostgresStorage.open(...,
fast_records=False)`` (``open_storage(..., fast_paths=False)``) uses it: the
contract suite runs both (tests/test_storage_contract.py).
"""

from __future__ import annotations

import dataclasses
import functools
from datetime import UTC
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import asyncpg

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_R = TypeVar("_R", bound="DataclassInstance")


class RecordBuilder(Protocol):
    def __call__(self, cls: type[_R], row: asyncpg.Record, *arrays: str) -> _R: ...


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What a builder needs to know of a record class, worked out once per class."""

    names: frozenset[str]
    defaults: dict[str, Any]
    times: tuple[str, ...]  # datetime fields
    #: Whether ``fast_record`` may build it: no default factories, no __post_init__.
    plain_only: bool


@functools.cache
def _shape(cls: type) -> _Shape:
    fields = dataclasses.fields(cls)
    return _Shape(
        names=frozenset(f.name for f in fields),
        defaults={f.name: f.default for f in fields if f.default is not dataclasses.MISSING},
        times=tuple(f.name for f in fields if "datetime" in str(f.type)),
        plain_only=any(f.default_factory is not dataclasses.MISSING for f in fields)
        or "__post_init__" in vars(cls),
    )


def _values(
    cls: type, shape: _Shape, row: asyncpg.Record, arrays: tuple[str, ...]
) -> dict[str, Any]:
    """``row``'s columns that ``cls`` has fields for, times in UTC, jsonb arrays as
    tuples, defaults for the fields it has no column for."""
    names = shape.names
    values = dict(shape.defaults)
    for key, value in row.items():
        if key in names:
            values[key] = value
    if len(values) != len(names):
        missing = ", ".join(sorted(names - values.keys()))
        raise TypeError(f"{cls.__name__}: no column for {missing}")
    for key in shape.times:
        value = values[key]
        if value is not None and value.tzinfo is not UTC:
            values[key] = value.astimezone(UTC)
    for key in arrays:
        values[key] = tuple(values[key])
    return values


def fast_record(cls: type[_R], row: asyncpg.Record, *arrays: str) -> _R:
    """``row`` as a ``cls``, built without its ``__init__`` (see the module doc)."""
    shape = _shape(cls)
    if shape.plain_only:
        raise TypeError(f"{cls.__name__}: fast_record runs no default factory or __post_init__")
    record: _R = object.__new__(cls)
    record.__dict__.update(_values(cls, shape, row, arrays))
    return record


def plain_record(cls: type[_R], row: asyncpg.Record, *arrays: str) -> _R:
    """``row`` as a ``cls``, through its constructor: the same values as ``fast_record``."""
    return cls(**_values(cls, _shape(cls), row, arrays))
