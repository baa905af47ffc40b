"""Validation helpers for the edges of the system (constructors, ``fit``, node setup).

Each helper raises :class:`~cortexlink.core.errors.ConfigError` or
:class:`~cortexlink.core.errors.ValidationError` with a message that names the
parameter, what is allowed and what was received.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError


def check_positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> Any:
    """Return ``value`` if it is a finite positive number (or int), else raise ConfigError."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{name} must be {kind}; got {value!r} ({type(value).__name__})")
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        what = "an integer" if integer else "a finite number"
        raise ConfigError(f"{name} must be {what} {bound}; got {value!r}")
    return int(value) if integer else float(value)


def check_range(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    """Return ``float(value)`` if ``lo <= value <= hi`` (bounds optional), else raise ConfigError."""
    is_real = isinstance(value, numbers.Real)
    if isinstance(value, bool) or not is_real or not np.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name} must be in [{lo}, {hi}]; got {value!r}")
    return float(value)


def check_keys(name: str, mapping: Any, allowed: Iterable[str]) -> None:
    """Raise ConfigError naming ``name`` when ``mapping`` has keys outside ``allowed``."""
    allowed = set(allowed)
    unknown = sorted((k for k in mapping if k not in allowed), key=str)     # keys of any type (YAML: 1, null)
    if unknown:
        shown = ", ".join(repr(k)[:40] for k in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise ConfigError(f"{name} has unknown key(s) [{shown}]; allowed: {sorted(allowed, key=str)}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}; got {value!r}")
    return value


def check_array(
    name: str,
    arr: Any,
    *,
    ndim: int | None = None,
    dtype: Any | Iterable[Any] | None = None,
    shape: tuple[int | None, ...] | None = None,
    finite: bool = False,
) -> np.ndarray:
    """Check an array's dimensionality, dtype and shape; raise ValidationError naming ``name``.

    ``shape`` may hold ``None`` for dimensions that are free. ``dtype`` may be one
    dtype or a collection of allowed dtypes; it is checked without conversion.
    """
    if not isinstance(arr, np.ndarray):
        raise ValidationError(f"{name} must be a numpy array; got {type(arr).__name__}")
    if ndim is not None and arr.ndim != ndim:
        raise ValidationError(f"{name} must have {ndim} dimensions; got {arr.ndim} (shape {arr.shape})")
    if dtype is not None:
        choices: Iterable[Any] = dtype if isinstance(dtype, (list, tuple, set)) else [dtype]
        allowed = [np.dtype(d) for d in choices]
        if arr.dtype not in allowed:
            names = ", ".join(str(d) for d in allowed)
            raise ValidationError(f"{name} must have dtype {names}; got {arr.dtype}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValidationError(f"{name} must have shape {want}; got {arr.shape}")
    if finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValidationError(f"{name} must hold only finite values; got {int(np.sum(~np.isfinite(arr)))} NaN/Inf")
    return arr

