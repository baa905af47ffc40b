"""The one ``default=`` hook for ``json.dumps`` of cortexlink's own records (bus messages, node
states, session manifests and logs): numpy scalars and arrays, paths, sets and objects with a
``to_dict`` become plain JSON values; anything else raises ``TypeError`` (callers that must never
fail, like the session log, catch it and write ``repr``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_default"]


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
