"""Constants, the read-back error and the small helpers shared by the NWB export and reader
(compression settings, times of series, subject metadata, interval merging).
"""

from __future__ import annotations

import os
import re
import resource
import warnings
from typing import Any

import numpy as np

from cortexlink.core.errors import ValidationError


COMPRESSIONS = ("gzip", "lzf", None)
#: gzip level 1 with byte shuffle: every HDF5 reader has it (MatNWB, h5py, HDFView, DANDI). Measured
#: on SimulatedImplant int16 data: level 1 compresses 1.61x at 1.6x the speed of level 4 (1.68x);
#: LZF is 3x faster again but compresses 1.33x and is an h5py-only filter. See the README.
DEFAULT_COMPRESSION = "gzip"
GZIP_LEVEL = 1
#: Species written for simulated sessions: the simulator models a human intracortical BCI user
#: (cursor and click decoding); the subject's description says that no real subject exists.
SIMULATED_SPECIES = "Homo sapiens"
RAW_SERIES = "ElectricalSeries"
_DEVICE_SIM = "cortexlink simulated implant"
_CHUNK_TARGET_BYTES = 4 << 20
_CHUNK_MAX_CHANNELS = 64
_STREAMS_KNOWN = ("raw", "features", "cursor", "decoder", "intent", "events")
_OUTCOMES = ("select", "timeout", "correct", "pickup", "move")
_SEX = ("M", "F", "O", "U")
_ISO_DURATION = re.compile(r"P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?")
_TRIAL_COLUMNS = {
    "block": "block the trial belongs to", "task": "task of the block",
    "target": "target shown (centre-out target index, -1 = centre; Webgrid cell; chess square and stage)",
    "target_x": "target centre x (screen units, [-1, 1])", "target_y": "target centre y (screen units)",
    "outcome": "first resolving task event: select, timeout, correct, pickup, move; 'none' if the block ended",
    "outcome_time": "time of the outcome event (s; NaN when none)",
    "success": "the trial ended in a successful selection", "n_incorrect": "wrong selections during the trial"}


class NWBFileError(ValidationError):
    """An NWB file cannot be read back: not HDF5, not NWB, or not written by ``export_nwb``."""


def _check_compression(compression: Any) -> str | None:
    if isinstance(compression, str) and compression.lower() in ("none", ""):
        compression = None
    if compression not in COMPRESSIONS:
        raise ValidationError(f"compression must be one of {COMPRESSIONS}; got {compression!r}")
    return compression


def _h5_kwargs(compression: str | None) -> dict:
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": GZIP_LEVEL, "shuffle": True}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": True}
    return {}


def _data_io(data: Any, *, compression: str | None, **kw: Any) -> Any:
    """``H5DataIO`` with the chosen filter."""
    from hdmf.backends.hdf5 import H5DataIO

    with warnings.catch_warnings():
        # hdmf warns that LZF is an h5py-only filter; the caller chose it explicitly and the docs say so.
        warnings.filterwarnings("ignore", message="lzf compression may not be available", category=UserWarning)
        return H5DataIO(data, **kw, **_h5_kwargs(compression))


def _peak_rss_mb() -> float:
    """Peak resident memory of this process image (MB).

    Linux: ``VmHWM`` (unlike ``ru_maxrss`` it does not carry over the parent's peak across
    fork + exec, and ``/proc/self/clear_refs`` can reset it); elsewhere ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss    # KiB on Linux, bytes on macOS
    return r / 2**20 if os.uname().sysname == "Darwin" else r / 1024.0


def _time_kwargs(samples: np.ndarray, fs: float) -> dict:
    """``starting_time``/``rate`` for a regular clock, else ``timestamps`` (seconds = sample / fs)."""
    s = np.asarray(samples, dtype=np.int64)
    if s.size >= 2:
        d = np.diff(s)
        if d[0] > 0 and np.all(d == d[0]):
            return {"starting_time": float(s[0] / fs), "rate": float(fs / d[0])}
    return {"timestamps": s / fs}


def _samples_of(series: Any, fs: float) -> np.ndarray:
    """Sample indices of a TimeSeries read back (inverse of :func:`_time_kwargs`)."""
    n = len(series.data)
    if series.timestamps is not None:
        return np.rint(np.asarray(series.timestamps[:], dtype=np.float64) * fs).astype(np.int64)
    s0 = int(round(float(series.starting_time) * fs))
    step = int(round(fs / float(series.rate)))
    return s0 + step * np.arange(n, dtype=np.int64)


def _extra_columns(di: Any, key: str, skip: tuple[str, ...] = ()) -> tuple[list[np.ndarray], list[str]]:
    """The columns of stream ``key`` that :func:`export_nwb` wrote as ``<key>_<column>`` TimeSeries
    (those beyond the standard ones, e.g. the cursor's ``halted``), as ``(n, 1)`` arrays."""
    names = [n for n in di if n.startswith(f"{key}_") and n not in skip]
    return [np.asarray(di[n].data[:]).reshape(-1, 1) for n in names], [n[len(key) + 1:] for n in names]


def _is_simulated(manifest: dict) -> bool:
    if "simulated" in manifest:
        return bool(manifest["simulated"])
    cfg = manifest.get("config") or {}
    return isinstance(cfg, dict) and "implant" in cfg


def _subject_meta(manifest: dict) -> dict:
    """Subject fields the manifest (or its config) gives: ``species``, ``sex``, ``age``."""
    out: dict = {}
    cfg = manifest.get("config") or {}
    for src in (cfg.get("participant") if isinstance(cfg, dict) else None,
                cfg.get("subject") if isinstance(cfg, dict) else None, manifest.get("subject")):
        if isinstance(src, dict):
            out.update({k: src[k] for k in ("species", "sex", "age") if src.get(k) is not None})
    return out


def _merge_intervals(items: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Union of sample intervals [a, b), reasons of merged intervals joined."""
    out: list[list] = []
    for a, b, why in sorted((int(a), int(b), w) for a, b, w in items if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
            if why not in out[-1][2]:
                out[-1][2].append(why)
        else:
            out.append([a, b, [why]])
    return [(a, b, "; ".join(w)) for a, b, w in out]



_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def written_by_export(path: Any) -> bool:
    """``path`` is an NWB (HDF5) file that :func:`~cortexlink.io.nwb.export_nwb` wrote: it holds
    ``scratch/cortexlink_manifest``. Only such a file may be replaced by an export."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != _HDF5_SIGNATURE:
                return False
        import h5py

        with h5py.File(path, "r") as h:
            return "scratch/cortexlink_manifest" in h
    except Exception:  # noqa: BLE001 - unreadable or foreign: not ours
        return False
