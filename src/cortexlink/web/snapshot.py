"""Snapshots of a running session and the latest-value holder they pass through.

The controller's poller :meth:`LatestValue.set`\\ s one :class:`Snapshot` per snapshot the graph's ``ui_feed`` publishes: a new object,
never mutated afterwards, so readers in other threads need no copy. Setting replaces the
previous snapshot (no queue, nothing grows, the writer never waits for a reader). Readers
(the web server's client threads) :meth:`LatestValue.get` it whenever they like and ask for its
JSON encoding, which is computed once per snapshot by the first reader that needs it and
shared by the others.

A snapshot has three parts so that big, slowly changing payloads are encoded and sent only
when they change:

``fast``
    Per bin: cursor, target, decoded velocity, click probability, state, the last raster rows.
``slow``
    A few times a second (``version`` counts its updates): per-channel crossing rate, latency
    statistics, task metrics (bits per second, accuracy), chess position and moves, recording
    status, faults.
``meta``
    When the session or the channel calibration changes: electrode layout, noise RMS, bad
    channels, session settings.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np

from cortexlink.core.jsonutil import jsonable as _jsonable

__all__ = ["Part", "Snapshot", "LatestValue", "jsonable", "finite_list"]


def finite_list(values: Any, ndigits: int | None = None) -> list:
    """A JSON-able list of floats with non-finite values as None (``ndigits``: round first)."""
    a = np.asarray(values, dtype=np.float64)
    if ndigits is not None:
        a = np.round(a, ndigits)
    out = a.tolist()
    if not np.all(np.isfinite(a)):
        out = [v if math.isfinite(v) else None for v in out]
    return out


def jsonable(v: Any) -> Any:
    """``v`` as strict JSON values for the browser: :func:`cortexlink.core.jsonutil.jsonable` with
    ``finite=True`` (numpy values, tuples, sets, paths made plain; NaN/Inf become None; bytes as
    base64 text; ``TypeError`` for a type with no JSON form)."""
    return _jsonable(v, finite=True)


def _encode(data: Any) -> bytes:
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):
        return json.dumps(jsonable(data), separators=(",", ":"), allow_nan=False).encode("utf-8")


class Part:
    """A versioned JSON-able payload whose encoding is computed at most once (lazily).

    Parameters
    ----------
    version : int
        Increases whenever the payload changes.
    data : dict
        JSON-able content (not modified after construction).
    """

    __slots__ = ("version", "data", "_bytes")

    def __init__(self, version: int, data: dict) -> None:
        self.version = int(version)
        self.data = data
        self._bytes: bytes | None = None

    def encoded(self) -> bytes:
        """UTF-8 JSON of :attr:`data` (a benign race may encode twice; the result is the same)."""
        b = self._bytes
        if b is None:
            b = _encode(self.data)
            self._bytes = b
        return b


class Snapshot:
    """What the operator sees after one bin.

    Attributes
    ----------
    seq : int
        Increases by one per published snapshot.
    fast : dict
        Per-bin values (see the module docstring); raster rows as ``raster_rows`` (``(bin, bytes)``
        pairs) or already encoded as ``raster`` (what the ``ui_feed`` node publishes).
    slow, meta : Part
        Shared with the previous snapshots until they change.
    """

    __slots__ = ("seq", "fast", "slow", "meta", "_bytes")

    def __init__(self, seq: int, fast: dict, slow: Part, meta: Part) -> None:
        self.seq = seq
        self.fast = fast
        self.slow = slow
        self.meta = meta
        self._bytes: bytes | None = None

    def fast_encoded(self) -> bytes:
        """UTF-8 JSON of the fast part; raster rows become ``{"bin0", "n_ch", "b64"}``."""
        b = self._bytes
        if b is None:
            f = dict(self.fast)
            rows = f.pop("raster_rows", None)
            if rows:
                f["raster"] = {"bin0": rows[0][0], "n_rows": len(rows), "n_ch": len(rows[0][1]),
                               "b64": base64.b64encode(b"".join(r[1] for r in rows)).decode("ascii")}
            elif rows is not None or "raster" not in f:
                f["raster"] = None
            b = _encode(f)
            self._bytes = b
        return b

    def to_dict(self) -> dict:
        """Everything as one JSON-able dict ``{"fast", "slow", "meta"}`` (for ``GET /api/state``)."""
        return {"fast": json.loads(self.fast_encoded()), "slow": self.slow.data, "meta": self.meta.data}


class LatestValue:
    """Holds the most recent value; :meth:`set` never blocks and nothing queues up.

    Assigning one reference is atomic in CPython, so neither side takes a lock: the writer
    (the controller's poller) can never be held up by a reader.
    """

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, value: Any) -> None:
        """Replace the held value."""
        self._value = value

    def get(self) -> Any:
        """The held value (None before the first :meth:`set`)."""
        return self._value
