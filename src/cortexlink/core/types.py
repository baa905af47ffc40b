"""Core message types: ChannelMap, Chunk, BinnedFeatures, Intent and a task's Target.

All types are immutable value objects built on numpy arrays marked read-only.
Time is carried as integer sample indices (``start_sample``, int64); seconds are
derived from them and never stored as rounded floats.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ValidationError
from cortexlink.core.validation import check_array, check_positive


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


class ChannelMap:
    """Immutable description of an electrode array.

    Parameters
    ----------
    channel_ids : sequence of str
        Unique channel labels, e.g. ``"ch0000"``.
    positions_um : array (n_channels, 2)
        Electrode positions in micrometres.
    gain_uv : float or array (n_channels,)
        Microvolts per integer count of the raw samples.
    offset_uv : float or array (n_channels,)
        Offset in microvolts added after scaling.
    bad : array of bool (n_channels,), optional
        Channels known to be unusable.
    """

    __slots__ = ("_ids", "_pos", "_gain", "_offset", "_bad")

    def __init__(self, channel_ids: Sequence[str], positions_um: Any = None, gain_uv: Any = 1.0,
                 offset_uv: Any = 0.0, bad: Any = None) -> None:
        ids = tuple(str(c) for c in channel_ids)
        n = len(ids)
        if n == 0:
            raise ValidationError("channel_ids must name at least one channel; got 0")
        if len(set(ids)) != n:
            raise ValidationError("channel_ids must be unique; got duplicates")
        if positions_um is None:
            positions_um = np.zeros((n, 2))
        pos = np.asarray(positions_um, dtype=np.float64)
        check_array("positions_um", pos, ndim=2, shape=(n, 2))
        gain = np.broadcast_to(np.asarray(gain_uv, dtype=np.float64), (n,)).copy()
        offset = np.broadcast_to(np.asarray(offset_uv, dtype=np.float64), (n,)).copy()
        if not np.all(np.isfinite(gain)) or np.any(gain == 0):
            raise ValidationError("gain_uv must be finite and non-zero for every channel")
        bad_arr = np.zeros(n, bool) if bad is None else np.asarray(bad, dtype=bool)
        check_array("bad", bad_arr, ndim=1, shape=(n,))
        self._ids = ids
        self._pos = _readonly(pos.copy())
        self._gain = _readonly(gain)
        self._offset = _readonly(offset)
        self._bad = _readonly(bad_arr.copy())

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def grid(cls, n_channels: int, pitch_um: float = 50.0, gain_uv: float = 0.195) -> "ChannelMap":
        """A square-ish grid of ``n_channels`` electrodes at ``pitch_um`` spacing."""
        n = check_positive("n_channels", n_channels, integer=True)
        pitch = check_positive("pitch_um", pitch_um)
        n_cols = int(np.ceil(np.sqrt(n)))
        idx = np.arange(n)
        pos = np.stack([(idx % n_cols) * pitch, (idx // n_cols) * pitch], axis=1)
        return cls([f"ch{i:04d}" for i in range(n)], pos, gain_uv=gain_uv)

    # -- properties ---------------------------------------------------------------------
    @property
    def n_channels(self) -> int:
        return len(self._ids)

    @property
    def channel_ids(self) -> tuple[str, ...]:
        return self._ids

    @property
    def positions_um(self) -> np.ndarray:
        return self._pos

    @property
    def gain_uv(self) -> np.ndarray:
        return self._gain

    @property
    def offset_uv(self) -> np.ndarray:
        return self._offset

    @property
    def bad(self) -> np.ndarray:
        return self._bad

    @property
    def good_idx(self) -> np.ndarray:
        return np.flatnonzero(~self._bad)

    def __len__(self) -> int:
        return self.n_channels

    # -- derived maps -------------------------------------------------------------------
    def with_bad(self, bad: Any) -> "ChannelMap":
        """Return a new map whose bad-channel mask is ``bad`` (bool array or index list)."""
        b = np.asarray(bad)
        if b.dtype != bool:
            mask = np.zeros(self.n_channels, bool)
            mask[b.astype(int)] = True
            b = mask
        return ChannelMap(self._ids, self._pos, self._gain, self._offset, b)

    def to_uv(self, samples: np.ndarray) -> np.ndarray:
        """Convert raw integer samples (samples x channels) to float32 microvolts."""
        return (samples.astype(np.float32) * self._gain.astype(np.float32)
                + self._offset.astype(np.float32))

    def to_dict(self) -> dict[str, Any]:
        return {"channel_ids": list(self._ids), "positions_um": self._pos.tolist(),
                "gain_uv": self._gain.tolist(), "offset_uv": self._offset.tolist(),
                "bad": self._bad.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ChannelMap":
        return cls(d["channel_ids"], d["positions_um"], d["gain_uv"], d["offset_uv"], d["bad"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChannelMap):
            return NotImplemented
        return (self._ids == other._ids and np.array_equal(self._pos, other._pos)
                and np.array_equal(self._gain, other._gain)
                and np.array_equal(self._offset, other._offset)
                and np.array_equal(self._bad, other._bad))

    def __hash__(self) -> int:
        return hash(self._ids)

    def __repr__(self) -> str:
        return f"ChannelMap(n_channels={self.n_channels}, n_bad={int(self._bad.sum())})"


@dataclasses.dataclass(frozen=True, eq=False)
class Chunk:
    """A block of raw samples (samples x channels), read-only.

    Attributes
    ----------
    data : ndarray (n_samples, n_channels)
        Raw samples, usually int16 counts (see ``ChannelMap.gain_uv``) or float32 µV.
    fs_hz : float
        Sampling rate.
    start_sample : int
        Index of the first sample in the source's clock; the authoritative time.
    host_time_ns : int
        ``time.monotonic_ns()`` when the chunk arrived (0 if unknown).
    seq : int
        Sequence number of the chunk in its stream.
    """

    data: np.ndarray
    fs_hz: float
    start_sample: int
    host_time_ns: int = 0
    seq: int = 0

    def __post_init__(self) -> None:
        check_array("data", self.data, ndim=2)
        check_positive("fs_hz", self.fs_hz)
        object.__setattr__(self, "data", _readonly(self.data))
        object.__setattr__(self, "start_sample", int(self.start_sample))

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[1])

    @property
    def end_sample(self) -> int:
        """One past the last sample index."""
        return self.start_sample + self.n_samples

    def times_s(self) -> np.ndarray:
        """Sample times in seconds, derived from sample indices."""
        return (self.start_sample + np.arange(self.n_samples)) / self.fs_hz


@dataclasses.dataclass(frozen=True, eq=False)
class BinnedFeatures:
    """Features per time bin (bins x features).

    Attributes
    ----------
    data : ndarray (n_bins, n_features), float32
        Feature values. Masked entries (see ``valid``) are NaN.
    bin_start_samples : ndarray (n_bins,), int64
        Sample index at which each bin starts.
    bin_width_samples : int
        Bin width in samples.
    fs_hz : float
        Sampling rate of the source clock.
    feature_names : tuple of str
        e.g. ``("ch0000/tx", "ch0001/tx", ..., "ch0000/sbp", ...)``.
    valid : ndarray (n_bins, n_features) of bool, optional
        False where a feature was masked (NaN input, gap, bad channel).
    gaps : tuple of (start_sample, n_missing)
        Discontinuities seen in the input while these bins were formed.
    """

    data: np.ndarray
    bin_start_samples: np.ndarray
    bin_width_samples: int
    fs_hz: float
    feature_names: tuple[str, ...]
    valid: np.ndarray | None = None
    gaps: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        check_array("data", self.data, ndim=2)
        n_bins, n_feat = self.data.shape
        starts = np.asarray(self.bin_start_samples, dtype=np.int64)
        check_array("bin_start_samples", starts, ndim=1, shape=(n_bins,))
        names = tuple(self.feature_names)
        if len(names) != n_feat:
            raise ValidationError(f"feature_names must have {n_feat} entries (one per feature column); got {len(names)}")
        check_positive("bin_width_samples", self.bin_width_samples, integer=True)
        check_positive("fs_hz", self.fs_hz)
        valid = np.ones((n_bins, n_feat), bool) if self.valid is None else np.asarray(self.valid, bool)
        check_array("valid", valid, ndim=2, shape=(n_bins, n_feat))
        object.__setattr__(self, "data", _readonly(self.data))
        object.__setattr__(self, "bin_start_samples", _readonly(starts))
        object.__setattr__(self, "feature_names", names)
        object.__setattr__(self, "valid", _readonly(valid))
        object.__setattr__(self, "gaps", tuple((int(a), int(b)) for a, b in self.gaps))

    @classmethod
    def _trusted(cls, data: np.ndarray, starts: np.ndarray, width: int, fs_hz: float,
                 names: tuple[str, ...], valid: np.ndarray) -> "BinnedFeatures":
        """Build from arrays a producer has just made and owns (right dtypes and shapes, names a
        tuple): no checks, no copies; the arrays are made read-only in place. Hot path only."""
        obj = object.__new__(cls)
        for a in (data, starts, valid):
            a.flags.writeable = False
        sa = object.__setattr__
        sa(obj, "data", data)
        sa(obj, "bin_start_samples", starts)
        sa(obj, "bin_width_samples", width)
        sa(obj, "fs_hz", fs_hz)
        sa(obj, "feature_names", names)
        sa(obj, "valid", valid)
        sa(obj, "gaps", ())
        return obj

    @property
    def n_bins(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.data.shape[1])

    @property
    def bin_width_s(self) -> float:
        return self.bin_width_samples / self.fs_hz

    def bin_times_s(self) -> np.ndarray:
        """Start time of each bin in seconds."""
        return self.bin_start_samples / self.fs_hz

    def select(self, kind: str) -> "BinnedFeatures":
        """Keep only features whose name ends in ``/kind`` (e.g. ``"tx"``, ``"sbp"``)."""
        cols = [i for i, n in enumerate(self.feature_names) if n.rsplit("/", 1)[-1] == kind]
        if not cols:
            kinds = sorted({n.rsplit("/", 1)[-1] for n in self.feature_names})
            raise ValidationError(f"kind must be one of {kinds}; got {kind!r}")
        assert self.valid is not None    # __post_init__ always sets it (narrowing for mypy)  # nosec B101
        return BinnedFeatures(self.data[:, cols], self.bin_start_samples, self.bin_width_samples,
                              self.fs_hz, tuple(self.feature_names[i] for i in cols),
                              self.valid[:, cols], self.gaps)

    @staticmethod
    def concat(parts: Sequence["BinnedFeatures"]) -> "BinnedFeatures":
        """Concatenate along bins; parts must share feature names, bin width and rate."""
        parts = [p for p in parts]
        if not parts:
            raise ValidationError("parts must hold at least one BinnedFeatures; got none")
        first = parts[0]
        for p in parts[1:]:
            if p.feature_names != first.feature_names or p.bin_width_samples != first.bin_width_samples:
                raise ValidationError("parts must share feature_names and bin_width_samples")
        return BinnedFeatures(
            np.concatenate([p.data for p in parts]),
            np.concatenate([p.bin_start_samples for p in parts]),
            first.bin_width_samples, first.fs_hz, first.feature_names,
            np.concatenate([p.valid for p in parts]),
            tuple(g for p in parts for g in p.gaps),
        )



class LoopMode(str, enum.Enum):
    """How the cursor moves in a block of a closed loop.

    ``open``: calibration — the cursor moves to the target by itself while the participant
    intends along; ``closed``: the decoder drives it; ``perfect``: it follows the participant's
    intent exactly (the ceiling of a perfect decoder). A ``str`` enum: it equals its value
    (``LoopMode.OPEN == "open"``) and is written to JSON as that value.
    """

    OPEN = "open"
    CLOSED = "closed"
    PERFECT = "perfect"

    def __str__(self) -> str:
        return self.value

@dataclasses.dataclass(frozen=True)
class Intent:
    """A decoder's output for one bin: the message from the decoder to the cursor.

    Attributes
    ----------
    bin : int
        Bin index since the stream began.
    velocity : tuple of float
        Decoded cursor velocity (vx, vy) in screen units per second; NaN when not decoding.
    click : bool
        A click starts in this bin (the click decoder's onset).
    proba : float or None
        The click decoder's probability (None without one, or when not decoding).
    ready : bool
        The output may drive the cursor (a fitted decoder in closed-loop mode).
    features_valid : bool
        The bin's features were valid (False inside the extractor's calibration window).
    version : int
        How many fits and refits made the decoder that produced it.
    decode_us : float
        Time spent in the decoders' ``step`` (NaN when not decoding).
    n_jobs : int
        Fit and refit jobs the decoder has finished, failed ones included (the operator UI
        notices a finished job by it).
    """

    bin: int
    velocity: tuple[float, float]
    click: bool = False
    proba: float | None = None
    ready: bool = True
    features_valid: bool = True
    version: int = 0
    decode_us: float = float("nan")
    n_jobs: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the wire (JSON)."""
        return {"bin": int(self.bin), "velocity": [float(self.velocity[0]), float(self.velocity[1])],
                "click": bool(self.click), "proba": None if self.proba is None else float(self.proba),
                "ready": bool(self.ready), "features_valid": bool(self.features_valid),
                "version": int(self.version), "decode_us": float(self.decode_us), "n_jobs": int(self.n_jobs)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Intent":
        """Inverse of :meth:`to_dict`; unknown or missing keys are a :class:`ValidationError`."""
        fields = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(d, dict) or set(d) - set(fields) or "bin" not in d or "velocity" not in d:
            raise ValidationError(f"an Intent needs the keys {fields} (bin and velocity at least); got {d!r}")
        v = d["velocity"]
        return cls(**{**d, "velocity": (float(v[0]), float(v[1]))})


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the participant should bring the cursor and how to select it.

    Attributes
    ----------
    xy : tuple of float
        Centre in screen units.
    radius : float
        Acceptance radius in screen units (half the cell width for grids).
    click : bool
        True: select by click; False: select by dwelling ``dwell_s`` inside.
    dwell_s : float
        Hold time for dwell selection.
    """

    xy: tuple[float, float]
    radius: float
    click: bool = True
    dwell_s: float = 0.0


def check_chunk(chunk: Any, n_channels: int, fs_hz: float) -> np.ndarray:
    """The samples of a raw :class:`Chunk` for a stage built for
    ``n_channels`` channels at ``fs_hz``: int16 counts or float32 µV.

    Raises
    ------
    ValidationError
        For something that is not a Chunk, another dtype, channel count or sampling rate.
    """
    if not isinstance(chunk, Chunk):
        raise ValidationError(f"chunk must be a cortexlink.Chunk; got {type(chunk).__name__}")
    data = chunk.data
    if data.dtype != np.int16 and data.dtype != np.float32:
        raise ValidationError(f"chunk.data must have dtype int16 (counts) or float32 (µV); got {data.dtype}")
    if data.shape[1] != n_channels:
        raise ValidationError(f"chunk.data must have {n_channels} channels (columns, from the "
                              f"ChannelMap); got {data.shape[1]}")
    if chunk.fs_hz != fs_hz:
        raise ValidationError(f"chunk.fs_hz must equal fs_hz={fs_hz:g}; got {chunk.fs_hz:g}")
    return data
