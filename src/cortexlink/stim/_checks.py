"""Value checks shared by the encoders' configuration classes (errors name ``Owner.field``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError

__all__ = ["number", "per_item"]


def number(owner: str, name: str, value: Any, *, low: float = 0.0, inclusive: bool = False,
           high: float = math.inf) -> float:
    """A finite real number above ``low`` (or at it, with ``inclusive``) and at most ``high``."""
    ok = (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
          and math.isfinite(float(value)))
    if ok:
        v = float(value)
        ok = (v >= low if inclusive else v > low) and v <= high
    if not ok:
        rng = (">= " if inclusive else "> ") + f"{low:g}" + (f" and <= {high:g}" if math.isfinite(high) else "")
        raise ConfigError(f"{owner}.{name} must be a finite number {rng}; got {value!r}")
    return float(value)


def per_item(owner: str, name: str, value: Any, n: int, item: str) -> np.ndarray:
    """One positive finite number, or ``n`` of them (one per ``item``), as an array of ``n``."""
    try:
        arr = np.asarray(value, float)
    except (TypeError, ValueError):
        arr = np.asarray([np.nan])
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ConfigError(f"{owner}.{name} must be a finite number > 0 or {n} such numbers "
                          f"(one per {item}, µA); got {value!r}")
    return arr
