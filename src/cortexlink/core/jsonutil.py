"""The one ``default=`` hook for ``json.dumps`` of cortexlink's own records (bus messages, node
states, session manifests and logs): numpy scalars and arrays, paths, sets and objects with a
``to_dict`` become plain JSON values; anything else raises ``TypeError`` (callers that must never
fail, like the session log, catch it and write ``repr``)."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_default", "jsonable"]


def json_default(o: Any) -> Any:
    """A JSON value for ``o``; ``TypeError`` for a type without one."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        try:
            return sorted(o)
        except TypeError:
            return list(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"{type(o).__name__} has no JSON form")


def jsonable(v: Any, *, finite: bool = False) -> Any:
    """``v`` as plain JSON values, recursively: dicts (keys as text), lists (from tuples, sets
    and arrays), numbers, strings, None; bytes as base64 text; other objects through
    :func:`json_default`. ``finite=True`` also turns NaN and infinities into None (strict JSON,
    e.g. for a browser); by default they stay floats (``json.dumps`` writes ``NaN``)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x, finite=finite) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x, finite=finite) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return None if finite and not math.isfinite(f) else f
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist(), finite=finite)
    return jsonable(json_default(v), finite=finite)
