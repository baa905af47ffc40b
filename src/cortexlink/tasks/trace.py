"""What happened in one block of a closed loop, one row per bin: :class:`BlockTrace`, and
:class:`TraceBuilder`, which fills one bin at a time (the runtime's trace node does)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.messages import BinRow

__all__ = ["BlockTrace", "TraceBuilder", "RASTER_CHANNELS"]

#: Threshold-crossing raster kept per bin: the first this many channels.
RASTER_CHANNELS = 128


@dataclasses.dataclass
class BlockTrace:
    """Everything that happened in one block, one row per bin.

    Attributes
    ----------
    name, mode, task : str
        Block name, loop mode and task name.
    dt_s : float
        Bin width.
    t_s : ndarray (n,)
        Session time at the end of each bin.
    cursor_xy, cursor_velocity : ndarray (n, 2)
        Cursor position after the bin and the velocity the effector was given.
    intended_velocity : ndarray (n, 2)
        The participant's intended velocity (screen units/s).
    click_intent : ndarray (n,)
        The participant's click intent in [0, 1].
    decoded_velocity : ndarray (n, 2)
        The velocity decoder's output (NaN outside ``mode="closed"``).
    click_proba : ndarray (n,)
        The click decoder's probability (NaN when there is none).
    clicks : ndarray (n,), bool
        Bins where a click fired.
    target_xy : ndarray (n, 2)
        The task's current target (NaN when none); ``target_radius`` its radius.
    on_target : ndarray (n,), bool
        Cursor inside the current target.
    features : ndarray (n, n_features) float32 or None
        Decoder input per bin (NaN where invalid); None in ``mode="perfect"``.
    decode_latency_us : ndarray (n,)
        Time spent in the decoders' ``step`` per bin (NaN without decoders).
    loop_latency_us : ndarray (n,)
        Time from the bin's last chunk entering the graph to the cursor update (NaN in ``perfect``).
    tx_raster : ndarray (n, <= 128), uint8, or None
        Threshold crossings per bin of the first (up to 128) channels, for rasters.
    events : list of TaskEvent
    metrics : dict
        The task's metrics at the end of the block.
    """

    name: str
    mode: str
    task: str
    dt_s: float
    t_s: np.ndarray
    cursor_xy: np.ndarray
    cursor_velocity: np.ndarray
    intended_velocity: np.ndarray
    click_intent: np.ndarray
    decoded_velocity: np.ndarray
    click_proba: np.ndarray
    clicks: np.ndarray
    target_xy: np.ndarray
    target_radius: np.ndarray
    on_target: np.ndarray
    features: np.ndarray | None
    decode_latency_us: np.ndarray
    loop_latency_us: np.ndarray
    tx_raster: np.ndarray | None
    events: list
    metrics: dict

    @property
    def n_bins(self) -> int:
        return int(self.t_s.size)

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-bin arrays (for ``np.savez``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if isinstance(getattr(self, f.name), np.ndarray)}
        return out

    def save_npz(self, path: str | Path) -> Path:
        """Write the per-bin arrays to a compressed ``.npz``."""
        path = Path(path)
        np.savez_compressed(path, **self.arrays())
        return path


class TraceBuilder:
    """Collects the bins of one block into a :class:`BlockTrace`.

    Parameters
    ----------
    name, mode, task : str
    dt_s : float
    n_max : int
        Most bins the block can have (arrays are allocated once).
    n_features : int
        Decoder features kept per bin (0: none, ``features`` is None).
    n_raster : int
        Raster channels kept per bin (0: ``tx_raster`` is None).
    """

    _PAIRS = ("cursor_xy", "cursor_velocity", "intended_velocity", "decoded_velocity", "target_xy")
    _SCALARS = ("t_s", "click_intent", "click_proba", "target_radius", "decode_latency_us", "loop_latency_us")

    def __init__(self, name: str, mode: str, task: str, dt_s: float, n_max: int, *, n_features: int = 0,
                 n_raster: int = 0) -> None:
        self.name, self.mode, self.task, self.dt_s = name, mode, task, float(dt_s)
        self.n = 0
        self.rec: dict[str, np.ndarray] = {k: np.full((n_max, 2), np.nan) for k in self._PAIRS}
        self.rec.update({k: np.full(n_max, np.nan) for k in self._SCALARS})
        self.rec["clicks"] = np.zeros(n_max, bool)
        self.rec["on_target"] = np.zeros(n_max, bool)
        self.feats = np.full((n_max, n_features), np.nan, np.float32) if n_features else None
        self.raster = np.zeros((n_max, n_raster), np.uint8) if n_raster else None
        self.events: list = []

    def add(self, row: BinRow, features: Any = None, raster: Any = None) -> None:
        """Append one bin: ``row`` (a :class:`~cortexlink.core.messages.BinRow`) holds this bin's
        values of the :class:`BlockTrace` columns."""
        n = self.n
        if n >= self.rec["t_s"].size:
            return
        rec = self.rec
        for k in BinRow.TRACE_FIELDS:
            rec[k][n] = getattr(row, k)
        if self.feats is not None and features is not None:
            self.feats[n] = features
        if self.raster is not None and raster is not None:
            self.raster[n] = raster
        self.n = n + 1

    def finish(self, metrics: dict) -> BlockTrace:
        """The :class:`BlockTrace` of the bins added so far."""
        n = self.n
        r = {k: v[:n] for k, v in self.rec.items()}
        return BlockTrace(name=self.name, mode=self.mode, task=self.task, dt_s=self.dt_s,
                          features=None if self.feats is None else self.feats[:n],
                          tx_raster=None if self.raster is None else self.raster[:n],
                          events=self.events, metrics=metrics, **r)
