"""NWB export of a session folder, and reading the NWB file back for replay (pynwb/hdmf).

:func:`export_nwb` turns a session folder written by
:class:`~cortexlink.io.session_log.SessionRecorder` into one NWB 2 file:

==========================================  ================================================
what                                        where in the file
==========================================  ================================================
electrode array (positions µm, gain,        ``general/devices``, ``general/extracellular_ephys``
bad channels, channel ids)                  (group + electrodes table: ``rel_x``/``rel_y`` µm,
                                            ``channel_id``, ``bad``, ``gain_uv``, ``offset_uv``)
raw int16 counts                            ``acquisition/ElectricalSeries`` (chunked,
                                            compressed, ``conversion``/``channel_conversion`` to
                                            volts, ``starting_time`` + ``rate``; no timestamps)
threshold crossings, spike-band power       ``processing/ecephys``: ``ThresholdCrossings``
(LFP power when recorded)                   (TimeSeries, counts per bin), ``SpikeBandPower``
                                            (ElectricalSeries, µV -> V), ``FeatureColumns`` table
cursor, clicks, decoder, simulated intent   ``processing/behavior``: ``CursorPosition``
                                            (Position/SpatialSeries), ``cursor_velocity``,
                                            ``decoded_velocity``, ``decoded_click_probability``,
                                            ``intended_velocity_simulated``, ...
trials (target, outcome), blocks            ``intervals/trials``, ``intervals/epochs``
clicks, task events                         ``events/clicks``, ``events/task_events``
holes, gaps, dropped items                  ``intervals/invalid_times`` (with a ``reason``)
every event and the manifest (lossless)     ``scratch/cortexlink_events``,
                                            ``scratch/cortexlink_manifest`` (JSON)
de-identified subject                       ``general/subject`` (pseudonymous id, species,
                                            sex ``"U"``, age range; no name, no birth date)
==========================================  ================================================

Times are seconds from ``session_start_time`` (the manifest's ``started_utc``), derived from
the integer sample indices of the source clock (``sample / fs_hz``); every series with a
regular clock is written with ``starting_time`` and ``rate`` instead of timestamps.

Raw samples are streamed from the stream file to HDF5 through an hdmf
:class:`~hdmf.data_utils.AbstractDataChunkIterator`: one buffer of ``chunk_seconds`` is in
memory at a time, whatever the length of the recording. Samples missing from the raw stream
(dropped items, damaged records removed by ``cortexlink recover``) are written as zeros and
listed in ``invalid_times``. The file is written to ``FILE.part.nwb`` and renamed when complete.

:func:`read_nwb_streams` returns what a replay needs (rate, channel map, features, cursor,
decoder, intent, events, trials); :func:`iter_nwb_chunks` yields the raw samples as
:class:`~cortexlink.core.types.Chunk` objects, lazily (h5py), with the recorded holes left out
so that ``start_sample`` jumps where the recording had a gap.

pynwb, hdmf and h5py are imported inside the functions of this module only.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import resource
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cortexlink.core.errors import CortexlinkError, ValidationError

logger = logging.getLogger(__name__)

__all__ = ["export_nwb", "read_nwb_streams", "iter_nwb_chunks", "check_nwb", "NWBFileError",
           "DEFAULT_COMPRESSION", "COMPRESSIONS", "SIMULATED_SPECIES"]

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


# ------------------------------------------------------------------------------------ helpers
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


# ------------------------------------------------------------------------------------ checks
def _session_info(reader: Any, raw: bool) -> dict:
    """Check that the manifest and the stream headers agree; gather what the export needs.

    Raises :class:`ValidationError` naming the file and the disagreement.
    """
    from cortexlink.io.session_log import CorruptSessionError

    path = reader.path
    mpath = path / "manifest.json"
    m = reader.manifest
    streams = reader.streams
    if not streams:
        raise CorruptSessionError(f"{path / 'streams'}: no stream files (*.clog); nothing to export")
    headers = {}
    for name in streams:
        headers[name] = reader.stream_info(name)   # raises CorruptSessionError naming the file
        p = path / "streams" / f"{name}.clog"
        mst = (m.get("streams") or {}).get(name) or {}
        if m.get("state") in ("closed", "stopped", "recovered") and "bytes" in mst and m.get("files") is not None:
            size = p.stat().st_size
            if size != mst["bytes"]:
                raise CorruptSessionError(
                    f"{p}: {size} bytes, but {mpath} says {mst['bytes']} (the file was truncated or changed after "
                    f"the session closed); run `cortexlink verify {path}`")
        if headers[name].get("kind") == "array":
            ncol = len(headers[name].get("columns") or ())
            if "n_columns" in mst and int(mst["n_columns"]) != ncol:
                raise ValidationError(f"{p}: the stream has {ncol} columns but {mpath} says {mst['n_columns']}")
    fs = m.get("fs_hz")
    if fs is None:
        rates = {h.get("rate_hz") for h in headers.values() if h.get("rate_hz")}
        if len(rates) != 1:
            raise ValidationError(f"{mpath}: no fs_hz and the streams do not name one common rate ({sorted(rates)})")
        fs = rates.pop()
    fs = float(fs)
    if not np.isfinite(fs) or fs <= 0:
        raise ValidationError(f"{mpath}: fs_hz must be a positive number; got {fs!r}")
    for name, h in headers.items():
        r = h.get("rate_hz")
        if r is not None and abs(float(r) - fs) > 1e-6 * fs:
            raise ValidationError(f"{path / 'streams' / (name + '.clog')}: rate_hz {float(r):g} Hz disagrees with "
                                  f"the manifest's fs_hz {fs:g} Hz ({mpath}); every stream must use the source clock")
    dsp = m.get("dsp") or {}
    if dsp.get("fs_hz") is not None and abs(float(dsp["fs_hz"]) - fs) > 1e-6 * fs:
        raise ValidationError(f"{mpath}: dsp.fs_hz {float(dsp['fs_hz']):g} Hz disagrees with fs_hz {fs:g} Hz")
    cm = reader.channel_map
    info: dict = {"fs": fs, "channel_map": cm, "headers": headers, "raw": None, "features": None}
    if "raw" in headers:
        h = headers["raw"]
        rp = path / "streams" / "raw.clog"
        if h.get("kind") != "array":
            raise ValidationError(f"{rp}: the raw stream must be an array stream; got kind {h.get('kind')!r}")
        cols = list(h.get("columns") or ())
        dt = np.dtype(h["dtype"])
        if cm is None:
            raise ValidationError(f"{mpath}: no channel_map, but the session has a raw stream ({rp}); the electrodes "
                                  "and the scaling to volts are unknown")
        if len(cols) != cm.n_channels:
            raise ValidationError(f"{rp}: {len(cols)} channel columns, but the manifest's channel map ({mpath}) has "
                                  f"{cm.n_channels} channels")
        if tuple(cols) != tuple(cm.channel_ids):
            bad = next(i for i, (a, b) in enumerate(zip(cols, cm.channel_ids)) if a != b)
            raise ValidationError(f"{rp}: column {bad} is channel {cols[bad]!r} but the manifest's channel map "
                                  f"({mpath}) has {cm.channel_ids[bad]!r} there")
        units = h.get("units", "counts" if dt.kind in "iu" else "uV")
        if dt.kind in "iu" and units != "counts":
            raise ValidationError(f"{rp}: integer samples ({dt}) must be in 'counts' (scaled by the channel map's "
                                  f"gain_uv); the header says units={units!r}")
        if dt.kind == "f" and units != "uV":
            raise ValidationError(f"{rp}: floating-point samples ({dt}) must be in 'uV'; the header says "
                                  f"units={units!r}")
        if dt.kind not in "iuf":
            raise ValidationError(f"{rp}: raw samples must be integer counts or float µV; got dtype {dt}")
        info["raw"] = {"dtype": dt, "units": units, "n_channels": len(cols)}
        if not raw:
            info["raw"]["skipped"] = True
    if "features" in headers:
        h = headers["features"]
        fp = path / "streams" / "features.clog"
        names = [str(c) for c in h.get("columns") or ()]
        bw = h.get("bin_width_samples")
        if not isinstance(bw, int) or bw <= 0:
            raise ValidationError(f"{fp}: bin_width_samples must be a positive integer; got {bw!r}")
        ids = set(cm.channel_ids) if cm is not None else None
        kinds: dict[str, list[int]] = {}
        chans: list[str | None] = []
        for j, n in enumerate(names):
            ch, _, kind = n.rpartition("/")
            if not ch:
                ch, kind = None, "other"
            if ch is not None and ids is not None and ch not in ids:
                raise ValidationError(f"{fp}: feature column {n!r} names channel {ch!r}, which is not in the "
                                      f"manifest's channel map ({mpath})")
            kinds.setdefault(kind, []).append(j)
            chans.append(ch)
        info["features"] = {"names": names, "bw": int(bw), "kinds": kinds, "channels": chans}
    return info


# ------------------------------------------------------------------------------------ raw iterator
def _raw_iterator_class() -> type:
    from hdmf.data_utils import AbstractDataChunkIterator, DataChunk

    class RawRecordIterator(AbstractDataChunkIterator):
        """Raw records of a session stream, re-blocked into buffers of whole HDF5 chunks.

        Never holds more than one buffer; samples missing between records are zeros and are
        listed in :attr:`holes` (source sample ranges ``[a, b)``).
        """

        def __init__(self, records: Iterator[Any], first: Any, n_channels: int, dtype: np.dtype,
                     chunk_shape: tuple[int, int], buffer_samples: int, path: Path,
                     progress: Any = None) -> None:
            self._records = records
            self._pending = first            # a record not yet consumed
            self._off = 0                    # row offset inside the pending record
            self.first_sample = int(first.sample)
            self.pos = self.first_sample     # next source sample to place
            self.n_ch = n_channels
            self._dtype = np.dtype(dtype)
            self._chunk = chunk_shape
            self.buffer_samples = int(buffer_samples)
            self.holes: list[tuple[int, int]] = []
            self.n_records = 0
            self.path = path
            self.error: BaseException | None = None
            self._progress = progress
            self._done = False

        def __iter__(self) -> "RawRecordIterator":
            return self

        def _next_record(self) -> Any:
            try:
                return next(self._records)
            except StopIteration:
                return None
            except BaseException as exc:     # keep the reader's error: hdmf may wrap it
                self.error = exc
                raise

        def __next__(self) -> Any:
            if self._done:
                raise StopIteration
            start = self.pos
            buf = None
            filled = 0
            while filled < self.buffer_samples:
                rec = self._pending
                if rec is None:
                    rec = self._next_record()
                    self._off = 0
                    if rec is None:
                        self._done = True
                        break
                    self.n_records += 1
                    if rec.data.shape[1] != self.n_ch:
                        self.error = ValidationError(f"{self.path}: record {rec.seq} has {rec.data.shape[1]} columns; "
                                                     f"expected {self.n_ch}")
                        raise self.error
                    if rec.sample < self.pos:
                        self.error = ValidationError(
                            f"{self.path}: record {rec.seq} starts at sample {rec.sample}, before the end of the "
                            f"previous record (sample {self.pos}); the raw stream's clock goes backwards or "
                            "records overlap")
                        raise self.error
                    if rec.sample > self.pos:
                        self.holes.append((self.pos, int(rec.sample)))
                    self._pending = rec
                if buf is None:
                    buf = np.zeros((self.buffer_samples, self.n_ch), dtype=self._dtype)
                rec_pos = rec.sample + self._off
                if rec_pos > self.pos:       # a hole: leave zeros
                    skip = min(rec_pos - self.pos, self.buffer_samples - filled)
                    filled += skip
                    self.pos += skip
                    continue
                take = min(rec.data.shape[0] - self._off, self.buffer_samples - filled)
                buf[filled:filled + take] = rec.data[self._off:self._off + take]
                filled += take
                self.pos += take
                self._off += take
                if self._off >= rec.data.shape[0]:
                    self._pending = None
            if filled == 0:
                raise StopIteration
            if self._progress is not None:
                self._progress.update(filled)
            a = start - self.first_sample
            return DataChunk(data=buf[:filled], selection=np.s_[a:a + filled, :])

        def recommended_chunk_shape(self) -> tuple[int, int]:
            return self._chunk

        def recommended_data_shape(self) -> tuple[int, int]:
            return (0, self.n_ch)

        @property
        def dtype(self) -> np.dtype:
            return self._dtype

        @property
        def maxshape(self) -> tuple:
            return (None, self.n_ch)

    return RawRecordIterator


def _feature_iterator_class() -> type:
    from hdmf.data_utils import AbstractDataChunkIterator, DataChunk

    class FeatureColumnsIterator(AbstractDataChunkIterator):
        """Some columns of the features stream, bin after bin, a few thousand bins at a time."""

        def __init__(self, reader: Any, cols: list[int], n_bins: int, buffer_bins: int) -> None:
            self._records = reader.records("features")
            self._cols = np.asarray(cols)
            self.n_bins = int(n_bins)
            self._buffer = max(1, int(buffer_bins))
            self._i = 0
            self._left: np.ndarray | None = None

        def __iter__(self) -> "FeatureColumnsIterator":
            return self

        def __next__(self) -> Any:
            parts, n = [], 0
            while n < self._buffer:
                if self._left is None:
                    rec = next(self._records, None)
                    if rec is None:
                        break
                    self._left = rec.data[:, self._cols]
                take = min(self._left.shape[0], self._buffer - n)
                parts.append(self._left[:take])
                n += take
                self._left = self._left[take:] if take < self._left.shape[0] else None
            if n == 0:
                raise StopIteration
            a = self._i
            self._i += n
            if self._i > self.n_bins:
                raise ValidationError("the features stream changed while it was being exported")
            return DataChunk(data=np.concatenate(parts).astype(np.float32, copy=False),
                             selection=np.s_[a:a + n, :])

        def recommended_chunk_shape(self) -> tuple[int, int]:
            return (max(1, min(self.n_bins, self._buffer)), len(self._cols))

        def recommended_data_shape(self) -> tuple[int, int]:
            return (self.n_bins, len(self._cols))

        @property
        def dtype(self) -> np.dtype:
            return np.dtype(np.float32)

        @property
        def maxshape(self) -> tuple[int, int]:
            return (self.n_bins, len(self._cols))

    return FeatureColumnsIterator


# ------------------------------------------------------------------------------------ building blocks
def _add_electrodes(nwbfile: Any, manifest: dict, cm: Any, simulated: bool) -> tuple[Any, dict]:
    """Device, electrode group and electrodes table; a probeinterface Probe when the geometry fits."""
    dev = manifest.get("device")
    if isinstance(dev, str):
        dev = {"name": dev}
    cfg = manifest.get("config") or {}
    imp = cfg.get("implant") if isinstance(cfg, dict) else None
    if isinstance(dev, dict) and dev.get("name"):
        model = nwbfile.create_device_model(name=str(dev.get("model", dev["name"])) + " model",
                                            manufacturer=str(dev.get("manufacturer", "unknown")),
                                            description=str(dev.get("description", "recording device")))
        device = nwbfile.create_device(name=str(dev["name"]), model=model,
                                       description=str(dev.get("description", "recording device")))
        location = str(dev.get("location", manifest.get("location", "unknown")))
    else:
        desc = ("cortexlink's seeded synthetic intracortical implant (cortexlink.sim.SimulatedImplant)"
                if simulated else "recording device (not named in the session manifest)")
        if isinstance(imp, dict):
            desc += f"; implant config {json.dumps(imp, sort_keys=True, default=str)}"
        model = nwbfile.create_device_model(name="cortexlink SimulatedImplant" if simulated else "unknown model",
                                            manufacturer="cortexlink (simulation)" if simulated else "unknown",
                                            description=desc)
        device = nwbfile.create_device(name=_DEVICE_SIM if simulated else "unknown device", description=desc,
                                       model=model)
        location = "none (simulated data)" if simulated else str(manifest.get("location", "unknown"))
    pos = np.asarray(cm.positions_um, dtype=np.float64)
    probe_info: dict = {"used": False}
    if len(np.unique(pos, axis=0)) == cm.n_channels:
        probe_info = _probe_from_positions(cm)
    group_desc = (f"{cm.n_channels}-electrode planar array; rel_x/rel_y are contact positions in micrometres "
                  "on the array (not brain coordinates)")
    if probe_info.get("used"):
        group_desc += f"; geometry checked with probeinterface ({probe_info['summary']})"
    group = nwbfile.create_electrode_group(name="array0", description=group_desc, location=location, device=device)
    nwbfile.add_electrode_column(name="channel_id", description="cortexlink channel id (column name of the raw stream)")
    nwbfile.add_electrode_column(name="bad", description="marked unusable in the session's channel map")
    nwbfile.add_electrode_column(name="gain_uv", description="microvolts per raw integer count")
    nwbfile.add_electrode_column(name="offset_uv", description="microvolts added after scaling")
    gain, off, bad = cm.gain_uv, cm.offset_uv, cm.bad
    for i, cid in enumerate(cm.channel_ids):
        nwbfile.add_electrode(group=group, location=location, rel_x=float(pos[i, 0]), rel_y=float(pos[i, 1]),
                              channel_id=str(cid), bad=bool(bad[i]), gain_uv=float(gain[i]),
                              offset_uv=float(off[i]))
    return group, probe_info


def _probe_from_positions(cm: Any) -> dict:
    """A probeinterface Probe from the channel map's positions (2-D, µm); its JSON goes to scratch."""
    try:
        from probeinterface import Probe
    except ImportError:                       # pragma: no cover - probeinterface is a dependency
        return {"used": False}
    pos = np.asarray(cm.positions_um, dtype=np.float64)
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)) if cm.n_channels <= 4096 else None
    if d is not None and cm.n_channels > 1:
        np.fill_diagonal(d, np.inf)
        pitch = float(d.min())
    else:
        pitch = 20.0
    radius = max(1.0, round(0.3 * pitch, 2)) if np.isfinite(pitch) else 6.0
    probe = Probe(ndim=2, si_units="um", name="cortexlink array", manufacturer="")
    probe.set_contacts(positions=pos, shapes="circle", shape_params={"radius": radius})
    probe.set_contact_ids([str(c) for c in cm.channel_ids])
    probe.set_device_channel_indices(np.arange(cm.n_channels))
    probe.create_auto_shape(probe_type="rect", margin=max(radius * 2, 10.0))
    lo, hi = pos.min(0), pos.max(0)
    summary = (f"{cm.n_channels} circular contacts, radius {radius:g} um (assumed: 0.3 x the {pitch:g} um minimum "
               f"pitch), span {hi[0] - lo[0]:g} x {hi[1] - lo[1]:g} um")
    return {"used": True, "summary": summary, "json": json.dumps(probe.to_dict(array_as_list=True))}


def _trials(events: list[dict]) -> list[dict]:
    """Trials from task events: a trial runs from a ``target_on`` to the next (or its block's end)."""
    blocks: dict[str, dict] = {}
    for e in events:
        if e.get("kind") == "block_start":
            blocks[e.get("name")] = {"task": e.get("task", ""), "end": None}
        elif e.get("kind") == "block_end" and e.get("name") in blocks:
            blocks[e["name"]]["end"] = int(e["sample"])
    last = max((int(e.get("sample", -1)) for e in events), default=0)
    trials: list[dict] = []
    open_: dict[str, dict] = {}

    def close(block: str, stop: int) -> None:
        t = open_.pop(block, None)
        if t is None:
            return
        t["stop_sample"] = max(stop, t["start_sample"])
        trials.append(t)

    for e in events:
        if e.get("kind") == "block_end":
            close(e.get("name"), int(e["sample"]))
            continue
        if e.get("kind") != "task":
            continue
        block = e.get("block", "")
        te = e.get("task_event")
        d = e.get("data") or {}
        s = int(e["sample"])
        if te == "target_on":
            close(block, s)
            xy = d.get("xy") or [np.nan, np.nan]
            target = next((d[k] for k in ("target_idx", "cell", "square") if k in d), "")
            if isinstance(target, str) and d.get("stage"):
                target = f"{target} ({d['stage']})"
            open_[block] = {"block": block, "task": blocks.get(block, {}).get("task", ""), "target": str(target),
                            "target_x": float(xy[0]), "target_y": float(xy[1]), "start_sample": s,
                            "outcome": "none", "outcome_sample": -1, "success": False, "n_incorrect": 0}
        elif block in open_:
            t = open_[block]
            if te == "incorrect":
                t["n_incorrect"] += 1
            elif te in _OUTCOMES and t["outcome"] == "none":
                t["outcome"] = te
                t["outcome_sample"] = s
                t["success"] = bool(d.get("success", te != "timeout"))
    for block in list(open_):
        end = blocks.get(block, {}).get("end")
        close(block, end if end is not None else last)
    trials.sort(key=lambda t: (t["start_sample"], t["stop_sample"]))
    return trials


def _blocks(events: list[dict], last_sample: int) -> list[dict]:
    out, ends = [], {}
    for e in events:
        if e.get("kind") == "block_end":
            ends[e.get("name")] = e
    for e in events:
        if e.get("kind") != "block_start":
            continue
        end = ends.get(e.get("name"))
        metrics = (end or {}).get("metrics") or {}
        out.append({"name": str(e.get("name")), "mode": str(e.get("mode", "")), "task": str(e.get("task", "")),
                    "start_sample": int(e["sample"]),
                    "stop_sample": int(end["sample"]) if end else int(last_sample),
                    "decoder_file": str(e.get("decoder_file") or ""),
                    "click_decoder_file": str(e.get("click_decoder_file") or ""),
                    "n_bins": int((end or {}).get("n_bins", -1)), "completed": end is not None,
                    "metrics": {k: float(v) for k, v in metrics.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)}})
    return out


def _flat_task_fields(events: list[dict]) -> dict[str, str]:
    """Scalar ``data`` fields of task events, and the type of each (``"f"`` number, ``"s"`` text)."""
    kinds: dict[str, str] = {}
    for e in events:
        for k, v in (e.get("data") or {}).items():
            if k == "xy":
                continue
            if isinstance(v, bool) or isinstance(v, (int, float)):
                kinds.setdefault(k, "f")
            elif isinstance(v, str):
                kinds[k] = "s"
    return kinds


def _event_intervals(events: list[dict], m: dict, feature_bw: int | None) -> list[tuple[int, int, str]]:
    """Invalid intervals named by events: ``gap`` (missing source samples) and ``dropped`` items."""
    spb = int((m.get("loop") or {}).get("samples_per_bin") or 1)
    out = []
    for e in events:
        if e.get("kind") == "gap" and int(e.get("sample", -1)) >= 0:
            s, n = int(e["sample"]), int(e.get("n_missing", 0))
            out.append((s, s + n, f"gap in the source ({e.get('stream', 'features')} input)"))
        elif e.get("kind") == "dropped":
            stream = str(e.get("stream", ""))
            for a, b in e.get("ranges") or []:
                a, b = int(a), int(b)
                if stream == "features" and feature_bw:
                    b = a + (b - a) * feature_bw
                elif stream not in ("raw", "events"):
                    a = a - spb
                out.append((max(a, 0), b, f"{stream} items dropped by the recorder"))
    return out


# ------------------------------------------------------------------------------------ export
def export_nwb(session_dir: str | os.PathLike, nwb_path: str | os.PathLike, *, raw: bool = True,
               compression: str | None = DEFAULT_COMPRESSION, chunk_seconds: float = 1.0,
               progress: bool = False, overwrite: bool = False, salvage: bool = False) -> dict:
    """Write a session folder as one NWB file, streaming the raw samples.

    Parameters
    ----------
    session_dir : path
        A session folder (``manifest.json`` + ``streams/``), closed, stopped or recovered.
    nwb_path : path
        The NWB file to write (written to ``<stem>.part.nwb`` first, renamed when complete).
    raw : bool
        Export the raw stream (``False``: features, behaviour, trials and events only).
    compression : {"gzip", "lzf", None}
        HDF5 filter of the raw (and feature) data; gzip level 1 with byte shuffle by default
        (readable everywhere); ``"lzf"`` is about 3x faster but h5py-only; None: no filter.
    chunk_seconds : float
        Seconds of raw data per write (the only raw buffer held in memory).
    progress : bool
        Show a tqdm progress bar of the raw samples.
    overwrite : bool
        Replace ``nwb_path`` if it exists.
    salvage : bool
        Skip damaged records (their samples become zeros listed in ``invalid_times``) instead of
        refusing the session; ``cortexlink recover`` does the same on the folder itself.

    Returns
    -------
    dict
        ``path``, ``bytes`` (file size), ``seconds``, ``mb_per_s`` (file MB written per second),
        ``raw_mb_per_s`` (raw input MB per second), ``peak_rss_mb`` (this process's high-water
        mark), ``compression``, ``raw`` (samples, channels, chunk shape, holes), ``written`` (the
        NWB objects), ``n_trials``, ``n_invalid_times``, ``warnings``.

    Raises
    ------
    CorruptSessionError
        Not a session folder, a foreign or damaged stream file (the message names the file).
    ValidationError
        Metadata disagreeing with the data (channel count, ids, rates, units), or bad arguments.
    """
    from cortexlink.core.validation import check_positive
    from cortexlink.io.session_log import InsufficientDiskSpace, SessionReader

    t0 = time.perf_counter()
    compression = _check_compression(compression)
    check_positive("chunk_seconds", chunk_seconds)
    session_dir = Path(session_dir)
    out = Path(nwb_path)
    if out.is_dir():
        raise ValidationError(f"{out}: is a folder; give the path of the .nwb file to write")
    if out.exists() and not overwrite:
        raise ValidationError(f"{out}: exists; pass overwrite=True (--overwrite) to replace it")
    reader = SessionReader(session_dir, salvage=salvage)
    m = reader.manifest
    info = _session_info(reader, raw)
    warn_msgs: list[str] = []
    if m.get("state") not in ("closed", "stopped", "recovered"):
        warn_msgs.append(f"{session_dir}: session state is {m.get('state')!r} (not closed); exporting what the "
                         "streams hold - run `cortexlink recover` first for checksums")
    raw_path = session_dir / "streams" / "raw.clog"
    raw_bytes = raw_path.stat().st_size if (raw and info["raw"]) else 0
    out.parent.mkdir(parents=True, exist_ok=True)
    need = int(raw_bytes * (1.0 if compression is None else 0.9)) + (64 << 20)
    free = shutil.disk_usage(out.parent).free
    if free < need:
        raise InsufficientDiskSpace(f"exporting {session_dir} needs up to {need / 1e9:.2f} GB; {out.parent} has "
                                    f"{free / 1e9:.2f} GB free")
    part = out.with_name(out.stem + ".part.nwb")   # pynwb warns about names not ending in .nwb
    if part.exists():
        part.unlink()
    try:
        summary = _write(reader, info, part, raw=raw, compression=compression, chunk_seconds=float(chunk_seconds),
                         progress=progress, warn_msgs=warn_msgs)
        os.replace(part, out)
    except BaseException:
        if part.exists():
            part.unlink()
        raise
    elapsed = time.perf_counter() - t0
    size = out.stat().st_size
    summary.update({"path": str(out), "session": str(session_dir), "bytes": size, "seconds": round(elapsed, 3),
                    "mb_per_s": round(size / 1e6 / elapsed, 2) if elapsed > 0 else None,
                    "raw_mb_per_s": round(raw_bytes / 1e6 / elapsed, 2) if elapsed > 0 and raw_bytes else None,
                    "peak_rss_mb": round(_peak_rss_mb(), 1), "compression": compression, "warnings": warn_msgs})
    for w in warn_msgs:
        logger.warning(w)
    return summary


def _write(reader: Any, info: dict, part: Path, *, raw: bool, compression: str | None, chunk_seconds: float,
           progress: bool, warn_msgs: list[str]) -> dict:
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries
    from pynwb.file import Subject

    from cortexlink.io.session_log import CorruptSessionError

    m = reader.manifest
    fs, cm = info["fs"], info["channel_map"]
    simulated = _is_simulated(m)
    events = reader.events() if "events" in reader.streams else []
    written: list[str] = []
    prov = m.get("provenance") or {}
    cfg = m.get("config") or {}
    sid = str(m.get("session_id") or reader.path.name)
    try:
        start = _dt.datetime.strptime(str(m["started_utc"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
    except (KeyError, ValueError) as exc:
        raise ValidationError(f"{reader.path / 'manifest.json'}: started_utc must be 'YYYY-mm-ddTHH:MM:SSZ'; "
                              f"got {m.get('started_utc')!r} ({exc})") from None
    block_names = [e.get("name") for e in events if e.get("kind") == "block_start"]
    desc = (f"cortexlink session {sid}" + (" - SIMULATED DATA (cortexlink simulator, no real participant)"
                                           if simulated else "")
            + (f"; session config {cfg.get('name')!r}" if isinstance(cfg, dict) and cfg.get("name") else "")
            + (f"; blocks: {', '.join(map(str, block_names))}" if block_names else "")
            + f"; recorded with cortexlink {prov.get('cortexlink_version', '?')} "
            f"(git {prov.get('git_hash') or 'unknown'}, Python {prov.get('python', '?')}, "
            f"numpy {prov.get('numpy', '?')}); exported by cortexlink.io.nwb")
    prov_public = {k: v for k, v in prov.items() if k not in ("host", "pid")}
    extra: dict = {}                 # optional lab metadata from the manifest or its config (never the subject's)
    for key in ("institution", "lab", "experimenter"):
        v = m.get(key, cfg.get(key) if isinstance(cfg, dict) else None)
        if v:
            extra[key] = [str(x) for x in v] if key == "experimenter" and isinstance(v, (list, tuple)) else (
                [str(v)] if key == "experimenter" else str(v))
    nwbfile = NWBFile(
        session_description=desc, identifier=sid, session_id=sid, session_start_time=start,
        experiment_description=("Closed-loop intracortical brain-computer interface session: cursor control with "
                                "decoded velocity and click (cortexlink)"),
        keywords=["brain-computer interface", "intracortical", "cursor control", "cortexlink"]
        + (["simulation"] if simulated else []),
        source_script="cortexlink export (cortexlink.io.nwb.export_nwb)",
        source_script_file_name="cortexlink/io/nwb.py",
        notes=json.dumps({"provenance": prov_public, "seeds": m.get("seeds"), "state": m.get("state")},
                         default=str),
        data_collection=json.dumps({"fs_hz": fs, "dsp": m.get("dsp"), "loop": m.get("loop")}, default=str),
        **extra,
    )
    # subject: de-identified
    meta = _subject_meta(m)
    species = meta.get("species") or (SIMULATED_SPECIES if simulated else None)
    if species is None:
        warn_msgs.append("no species in the manifest (config.participant.species); Subject.species left empty")
    sex = str(meta.get("sex", "U"))
    if sex not in _SEX:
        raise ValidationError(f"{reader.path / 'manifest.json'}: subject sex must be one of {_SEX}; got {sex!r}")
    age = str(meta.get("age", "P0D/"))
    if not all(part == "" or _ISO_DURATION.fullmatch(part) for part in age.split("/")) or age.count("/") > 1 \
            or age in ("", "/"):
        raise ValidationError(f"{reader.path / 'manifest.json'}: subject age must be an ISO 8601 duration such as "
                              f"'P45Y', or a range such as 'P40Y/P50Y' (a de-identified age); got {age!r}")
    nwbfile.subject = Subject(
        subject_id=str(m.get("participant_id", "unknown")), species=species, sex=sex, age=age,
        description=("pseudonymous participant code from the session manifest; no name, date of birth or other "
                     "identifying data are stored" + (
                         f"; simulated participant (no real subject): species set to {SIMULATED_SPECIES} because "
                         "the simulator models a human intracortical BCI user" if simulated else "")
                     + ("; age unknown (range 'P0D/' = any age)" if "age" not in meta else "")))
    written.append("subject")
    region = None
    group = probe_info = None
    if cm is not None:
        group, probe_info = _add_electrodes(nwbfile, m, cm, simulated)
        written.append(f"electrodes ({cm.n_channels})")
        if probe_info.get("used"):
            nwbfile.add_scratch(probe_info["json"], name="probeinterface_probe",
                                description="probeinterface Probe (JSON, probeinterface.Probe.from_dict) built "
                                            "from the electrode positions")
    # ---- raw
    raw_it = None
    raw_summary: dict | None = None
    if raw and info["raw"]:
        rinfo = info["raw"]
        dt = rinfo["dtype"]
        records = reader.records("raw")
        try:
            first = next(records)
        except StopIteration:
            first = None
        if first is None:
            warn_msgs.append(f"{reader.path / 'streams' / 'raw.clog'}: no raw records; no ElectricalSeries written")
        else:
            n_ch = cm.n_channels
            c_chunk = min(n_ch, _CHUNK_MAX_CHANNELS)
            # HDF5 chunks: at most 1 s (and at most chunk_seconds) x 64 channels, about 4 MB or less;
            # each write is a whole number of chunks in time x every channel
            t_chunk = int(max(1, min(round(fs), round(chunk_seconds * fs),
                                     _CHUNK_TARGET_BYTES // (c_chunk * dt.itemsize))))
            k = max(1, int(round(chunk_seconds * fs / t_chunk)))
            pbar = None
            if progress:
                from tqdm import tqdm
                total = (m.get("streams") or {}).get("raw", {}).get("rows")
                pbar = tqdm(total=total, unit="sample", unit_scale=True, desc="raw", leave=False)
            raw_it = _raw_iterator_class()(records, first, n_ch, dt, (t_chunk, c_chunk), k * t_chunk,
                                           reader.path / "streams" / "raw.clog", pbar)
            gain, off = np.asarray(cm.gain_uv), np.asarray(cm.offset_uv)
            kw: dict = {}
            if dt.kind == "f":
                conv, offset = 1e-6, 0.0
                resolution = -1.0
            else:
                if np.all(gain == gain[0]):
                    conv = float(gain[0]) * 1e-6
                else:
                    conv = 1e-6
                    kw["channel_conversion"] = gain.astype(np.float32)
                resolution = float(np.min(np.abs(gain))) * 1e-6
                offset = float(off[0]) * 1e-6
                if not np.all(off == off[0]):
                    offset = 0.0
                    warn_msgs.append("channel offsets differ between channels; the ElectricalSeries offset is 0 and "
                                     "the electrodes table's offset_uv column holds each channel's offset")
            region = nwbfile.create_electrode_table_region(region=list(range(n_ch)), description="every electrode")
            es = ElectricalSeries(
                name=RAW_SERIES, description=(f"broadband samples as recorded ({dt} {rinfo['units']}); volts = data x "
                                              "conversion (x channel_conversion) + offset; samples missing from the "
                                              "recording are zeros, listed in invalid_times"),
                data=_data_io(raw_it, chunks=(t_chunk, c_chunk), compression=compression),
                electrodes=region, starting_time=raw_it.first_sample / fs, rate=fs, conversion=conv, offset=offset,
                resolution=resolution, filtering="none (broadband, as acquired)", **kw)
            nwbfile.add_acquisition(es)
            written.append(f"acquisition/{RAW_SERIES}")
            raw_summary = {"chunk_shape": [t_chunk, c_chunk], "buffer_samples": k * t_chunk,
                           "first_sample": raw_it.first_sample, "n_channels": n_ch, "dtype": str(dt)}
    elif raw and info["raw"] is None:
        warn_msgs.append(f"{reader.path}: the session has no raw stream; no ElectricalSeries written")
    # ---- features
    feat_holes: list[tuple[int, int, str]] = []
    if info["features"]:
        _add_features(nwbfile, reader, info, compression, written, feat_holes)
    # ---- behaviour
    _add_behavior(nwbfile, reader, fs, written)
    # ---- events, trials, blocks
    if events:
        _add_events(nwbfile, events, fs, written)
    last_sample = max([int(e.get("sample", 0)) for e in events] + [0])
    trials = _trials(events)
    if trials:
        for name, d in _TRIAL_COLUMNS.items():
            nwbfile.add_trial_column(name=name, description=d)
        for t in trials:
            nwbfile.add_trial(start_time=t["start_sample"] / fs, stop_time=t["stop_sample"] / fs,
                              block=t["block"], task=t["task"], target=t["target"], target_x=t["target_x"],
                              target_y=t["target_y"], outcome=t["outcome"],
                              outcome_time=(t["outcome_sample"] / fs if t["outcome_sample"] >= 0 else np.nan),
                              success=t["success"], n_incorrect=t["n_incorrect"])
        written.append(f"intervals/trials ({len(trials)})")
    blocks = _blocks(events, last_sample)
    if blocks:
        nwbfile.add_epoch_column(name="block", description="block name in the session")
        nwbfile.add_epoch_column(name="mode", description="'open' (calibration) or 'closed' (decoder in the loop)")
        nwbfile.add_epoch_column(name="task", description="task of the block")
        nwbfile.add_epoch_column(name="decoder_file", description="decoder file in the session folder ('' if none)")
        nwbfile.add_epoch_column(name="click_decoder_file", description="click decoder file ('' if none)")
        nwbfile.add_epoch_column(name="completed", description="False when the block has no block_end event")
        mkeys = sorted({k for b in blocks for k in b["metrics"]})
        for k in mkeys:
            nwbfile.add_epoch_column(name=f"metric_{k}", description=f"block metric {k} (NaN when not computed)")
        for b in blocks:
            nwbfile.add_epoch(start_time=b["start_sample"] / fs,
                              stop_time=max(b["stop_sample"], b["start_sample"]) / fs,
                              tags=[b["mode"], b["task"]], block=b["name"], mode=b["mode"], task=b["task"],
                              decoder_file=b["decoder_file"], click_decoder_file=b["click_decoder_file"],
                              completed=b["completed"],
                              **{f"metric_{k}": b["metrics"].get(k, np.nan) for k in mkeys})
        written.append(f"intervals/epochs ({len(blocks)} blocks)")
    # lossless copies for replay
    if events:
        nwbfile.add_scratch("\n".join(json.dumps(e, default=str) for e in events), name="cortexlink_events",
                            description="every event of the session's events stream, one JSON object per line")
    man = {k: v for k, v in m.items()}
    if isinstance(man.get("provenance"), dict):
        man["provenance"] = prov_public
    nwbfile.add_scratch(json.dumps(man, default=str), name="cortexlink_manifest",
                        description="the session folder's manifest.json (host name and pid removed)")
    written.append("scratch (events, manifest)")
    with NWBHDF5IO(str(part), mode="w") as io:
        try:
            io.write(nwbfile)
        except CortexlinkError:
            raise
        except Exception as exc:
            if raw_it is not None and raw_it.error is not None:
                raise raw_it.error from None
            raise CorruptSessionError(f"writing {part} failed: {exc}") from exc
    if raw_it is not None and raw_it._progress is not None:
        raw_it._progress.close()
    # ---- invalid times (known only once the raw stream has been read)
    intervals = [(a, b, "samples missing from the raw stream (written as zeros)") for a, b in
                 (raw_it.holes if raw_it is not None else [])]
    intervals += feat_holes
    intervals += _event_intervals(events, m, info["features"]["bw"] if info["features"] else None)
    merged = _merge_intervals(intervals)
    if merged:
        with NWBHDF5IO(str(part), mode="a") as io:
            f = io.read()
            f.add_invalid_times_column(name="reason", description="why the interval is invalid")
            f.add_invalid_times_column(name="start_sample", description="first invalid sample of the source clock")
            f.add_invalid_times_column(name="stop_sample", description="one past the last invalid sample")
            for a, b, why in merged:
                f.add_invalid_time_interval(start_time=a / fs, stop_time=b / fs, reason=why, start_sample=a,
                                            stop_sample=b)
            io.write(f)
        written.append(f"intervals/invalid_times ({len(merged)})")
    if raw_it is not None:
        n = raw_it.pos - raw_it.first_sample
        raw_summary.update({"n_samples": int(n), "n_records": raw_it.n_records, "n_holes": len(raw_it.holes),
                            "missing_samples": int(sum(b - a for a, b in raw_it.holes)),
                            "duration_s": round(n / fs, 3)})
    return {"written": written, "raw": raw_summary, "n_trials": len(trials), "n_invalid_times": len(merged),
            "invalid_times": [[a, b, w] for a, b, w in merged][:100], "fs_hz": fs, "session_id": sid,
            "probeinterface": probe_info.get("summary") if probe_info else None}


def _add_features(nwbfile: Any, reader: Any, info: dict, compression: str | None,
                  written: list, feat_holes: list) -> None:
    from hdmf.common import DynamicTable, VectorData
    from pynwb import TimeSeries
    from pynwb.ecephys import ElectricalSeries

    fs, cm = info["fs"], info["channel_map"]
    fi = info["features"]
    bw = fi["bw"]
    samples = []                                    # one pass for the bin start samples only
    for r in reader.records("features"):
        samples.append(r.sample + bw * np.arange(r.data.shape[0], dtype=np.int64))
    samples = np.concatenate(samples) if samples else np.zeros(0, np.int64)
    if samples.size == 0:
        return
    d = np.diff(samples)
    if np.any(d <= 0):
        i = int(np.flatnonzero(d <= 0)[0])
        raise ValidationError(f"{reader.path / 'streams' / 'features.clog'}: bin {i + 1} starts at sample "
                              f"{samples[i + 1]}, not after bin {i} (sample {samples[i]}); bins must be in order")
    for i in np.flatnonzero(d > bw):
        feat_holes.append((int(samples[i] + bw), int(samples[i + 1]), "feature bins missing"))
    tkw = _time_kwargs(samples, fs)
    if "timestamps" in tkw:
        tkw = {"timestamps": _data_io(tkw["timestamps"], compression=compression)}
    n_bins = int(samples.size)
    it_cls = _feature_iterator_class()
    mod = nwbfile.create_processing_module(name="ecephys", description="neural features per bin computed online "
                                           "by cortexlink's FeatureExtractor (see data_collection for parameters)")
    idx = {c: i for i, c in enumerate(cm.channel_ids)} if cm is not None else {}
    rows = {"feature_name": [], "kind": [], "series": [], "series_column": []}
    bin_ms = 1000.0 * bw / fs
    for kind, cols in fi["kinds"].items():
        buffer_bins = max(1, min(n_bins, (8 << 20) // (4 * len(cols))))
        data = _data_io(it_cls(reader, cols, n_bins, buffer_bins), compression=compression)
        chans = [fi["channels"][j] for j in cols]
        common = dict(data=data, comments=f"bin width {bw} samples ({bin_ms:g} ms); times are bin starts; NaN = "
                                          "masked bin (calibration window, gap, non-finite input)", **tkw)
        if kind == "sbp" and cm is not None and all(c in idx for c in chans):
            reg = nwbfile.create_electrode_table_region(region=[idx[c] for c in chans],
                                                        description="electrodes of the spike-band power columns")
            name = "SpikeBandPower"
            band = (reader.manifest.get("dsp") or {}).get("band_hz")
            ts = ElectricalSeries(name=name, electrodes=reg, conversion=1e-6,
                                  description="spike-band power: mean absolute value of the band-passed, referenced "
                                              "signal over each bin (data in microvolts, x conversion = volts)",
                                  filtering=(f"band-pass {band[0]:g}-{band[1]:g} Hz, referenced, |x| averaged per bin"
                                             if isinstance(band, (list, tuple)) and len(band) == 2 else
                                             "band-pass (see data_collection), |x| averaged per bin"),
                                  **common)
        elif kind == "tx":
            name = "ThresholdCrossings"
            ts = TimeSeries(name=name, unit="counts", description=(
                "threshold crossings per bin and channel (columns: FeatureColumns rows of this series, in the order "
                "of the electrodes table)"), **common)
        elif kind == "sbp":
            name = "SpikeBandPower"
            ts = TimeSeries(name=name, unit="volts", conversion=1e-6, description="spike-band power (uV)", **common)
        elif kind == "lfp":
            name = "LFPPower"
            ts = TimeSeries(name=name, unit="volts^2", conversion=1e-12,
                            description="LFP-band power: mean square of the band-passed signal (uV^2)", **common)
        else:
            name = f"features_{kind}"
            ts = TimeSeries(name=name, unit="n.a.", description=f"feature kind {kind!r}", **common)
        mod.add(ts)
        written.append(f"processing/ecephys/{name} ({n_bins} bins x {len(cols)})")
        for k, j in enumerate(cols):
            rows["feature_name"].append(fi["names"][j])
            rows["kind"].append(kind)
            rows["series"].append(name)
            rows["series_column"].append(k)
    where = {n: j for j, n in enumerate(fi["names"])}
    order = np.argsort([where[n] for n in rows["feature_name"]], kind="stable")
    cols_desc = {"feature_name": "column name in the session's features stream ('<channel_id>/<kind>')",
                 "kind": "feature kind (tx, sbp, lfp)", "series": "TimeSeries of this module holding the column",
                 "series_column": "column index in that series"}
    table = DynamicTable(name="FeatureColumns", description=(
        f"the session's feature columns in their recorded order (bin width {bw} samples)"),
        columns=[VectorData(name=k, description=cols_desc[k], data=[rows[k][i] for i in order]) for k in cols_desc])
    mod.add(table)


def _add_behavior(nwbfile: Any, reader: Any, fs: float, written: list) -> None:
    from pynwb import TimeSeries
    from pynwb.behavior import Position
    from pynwb.event import EventsTable

    streams = reader.streams
    mod = None

    def module() -> Any:
        nonlocal mod
        if mod is None:
            mod = nwbfile.create_processing_module(
                name="behavior", description="cursor, clicks, decoder outputs and the simulated participant's intent; "
                                             "one row per loop bin, times at the end of each bin")
        return mod

    def col(cols: list[str], name: str, path: Path) -> int:
        if name not in cols:
            raise ValidationError(f"{path}: column {name!r} missing; columns are {cols}")
        return cols.index(name)

    scr = "screen units (x, y in [-1, 1], centre (0, 0), y up)"
    if "cursor" in streams:
        p = reader.path / "streams" / "cursor.clog"
        s, rows = reader.read_array("cursor")
        cols = reader.columns("cursor")
        if s.size:
            tk = _time_kwargs(s, fs)
            pos = Position(name="CursorPosition")
            pos.create_spatial_series(name="cursor_xy", data=rows[:, [col(cols, "x", p), col(cols, "y", p)]],
                                      reference_frame=scr, unit="n.a.",
                                      description="cursor position on the screen after each loop bin", **tk)
            module().add(pos)
            module().add(TimeSeries(name="cursor_velocity", unit="screen units/s",
                                    data=rows[:, [col(cols, "vx", p), col(cols, "vy", p)]],
                                    description="cursor velocity applied on each bin (vx, vy)", **tk))
            written.append(f"processing/behavior/CursorPosition, cursor_velocity ({s.size} bins)")
            if "clicked" in cols:
                c = rows[:, cols.index("clicked")] > 0.5
                clicks = EventsTable(name="clicks", description="clicks fired by the cursor (bins where 'clicked')",
                                     source_description="cortexlink click decoder / effector")
                clicks.add_column(name="x", description="cursor x at the click (screen units)")
                clicks.add_column(name="y", description="cursor y at the click (screen units)")
                clicks.add_column(name="sample", description="source sample index (end of the bin)")
                for i in np.flatnonzero(c):
                    clicks.add_event(timestamp=float(s[i] / fs), x=float(rows[i, cols.index("x")]),
                                     y=float(rows[i, cols.index("y")]), sample=int(s[i]))
                if len(clicks):
                    nwbfile.add_events_table(clicks)
                    written.append(f"events/clicks ({len(clicks)})")
            extra = [c for c in cols if c not in ("x", "y", "vx", "vy", "clicked")]
            for c in extra:
                module().add(TimeSeries(name=f"cursor_{c}", unit="n.a.", data=rows[:, cols.index(c)],
                                        description=f"cursor stream column {c!r}", **tk))
    if "decoder" in streams:
        p = reader.path / "streams" / "decoder.clog"
        s, rows = reader.read_array("decoder")
        cols = reader.columns("decoder")
        if s.size:
            tk = _time_kwargs(s, fs)
            if "vx" in cols and "vy" in cols:
                module().add(TimeSeries(name="decoded_velocity", unit="screen units/s",
                                        data=rows[:, [col(cols, "vx", p), col(cols, "vy", p)]],
                                        description="velocity decoded from the neural features (closed-loop bins)",
                                        **tk))
            if "click_proba" in cols:
                module().add(TimeSeries(name="decoded_click_probability", unit="n.a.",
                                        data=rows[:, cols.index("click_proba")],
                                        description="click probability from the click decoder (0..1)", **tk))
            for c in (c for c in cols if c not in ("vx", "vy", "click_proba")):
                module().add(TimeSeries(name=f"decoder_{c}", unit="n.a.", data=rows[:, cols.index(c)],
                                        description=f"decoder stream column {c!r}", **tk))
            written.append(f"processing/behavior/decoded_* ({s.size} bins)")
    if "intent" in streams:
        p = reader.path / "streams" / "intent.clog"
        s, rows = reader.read_array("intent")
        cols = reader.columns("intent")
        if s.size:
            tk = _time_kwargs(s, fs)
            if "vx" in cols and "vy" in cols:
                module().add(TimeSeries(name="intended_velocity_simulated", unit="screen units/s",
                                        data=rows[:, [col(cols, "vx", p), col(cols, "vy", p)]],
                                        description="SIMULATED participant's intended velocity: ground truth of the "
                                                    "cortexlink simulator, not a measurement", **tk))
            if "click" in cols:
                module().add(TimeSeries(name="intended_click_simulated", unit="n.a.", data=rows[:, cols.index("click")],
                                        description="SIMULATED participant's click intent (0/1), simulator ground "
                                                    "truth", **tk))
            for c in (c for c in cols if c not in ("vx", "vy", "click")):
                module().add(TimeSeries(name=f"intent_{c}", unit="n.a.", data=rows[:, cols.index(c)],
                                        description=f"intent stream column {c!r}", **tk))
            written.append(f"processing/behavior/intended_*_simulated ({s.size} bins)")
    for name in streams:
        if name in _STREAMS_KNOWN:
            continue
        h = reader.stream_info(name)
        if h.get("kind") != "array":
            continue
        s, rows = reader.read_array(name)
        if not s.size:
            continue
        module().add(TimeSeries(name=f"stream_{name}", unit="n.a.", data=rows,
                                description=f"session stream {name!r}, columns {list(h.get('columns') or [])}",
                                **_time_kwargs(s, fs)))
        written.append(f"processing/behavior/stream_{name}")


def _add_events(nwbfile: Any, events: list[dict], fs: float, written: list) -> None:
    from pynwb.event import EventsTable

    task = [e for e in events if e.get("kind") == "task" and int(e.get("sample", -1)) >= 0]
    if not task:
        return
    fields = _flat_task_fields(task)
    t = EventsTable(name="task_events", description="task state-machine events (target_on, select, correct, "
                                                    "incorrect, timeout, move, ...) with their scalar details",
                    source_description="cortexlink task (tasks.*) on the loop bin where it happened")
    t.add_column(name="sample", description="source sample index (end of the loop bin)")
    t.add_column(name="block", description="block name")
    t.add_column(name="task_event", description="event kind")
    t.add_column(name="x", description="xy[0] of the event (target or cursor; NaN if none)")
    t.add_column(name="y", description="xy[1] of the event (NaN if none)")
    for k, typ in fields.items():
        t.add_column(name=f"data_{k}", description=f"event detail {k!r} ({'NaN' if typ == 'f' else 'empty'} if absent)")
    for e in task:
        d = e.get("data") or {}
        xy = d.get("xy") if isinstance(d.get("xy"), (list, tuple)) and len(d.get("xy")) == 2 else (np.nan, np.nan)
        extra = {}
        for k, typ in fields.items():
            v = d.get(k)
            if typ == "f":
                extra[f"data_{k}"] = float(v) if isinstance(v, (int, float)) and not isinstance(v, str) else np.nan
            else:
                extra[f"data_{k}"] = "" if v is None else str(v)
        t.add_event(timestamp=int(e["sample"]) / fs, sample=int(e["sample"]), block=str(e.get("block", "")),
                    task_event=str(e.get("task_event", "")), x=float(xy[0]), y=float(xy[1]), **extra)
    nwbfile.add_events_table(t)
    written.append(f"events/task_events ({len(task)})")


# ------------------------------------------------------------------------------------ validation
def check_nwb(nwb_path: str | os.PathLike) -> dict:
    """Run pynwb's schema validator and nwbinspector on a file.

    Returns
    -------
    dict
        ``validator``: list of error strings (empty when valid); ``inspector``: list of
        ``{"importance", "check", "message", "location"}``; ``n_critical``.
    """
    from nwbinspector import Importance, inspect_nwbfile
    from pynwb import validate

    path = str(nwb_path)
    errors = [str(e) for e in validate(path=path)]
    msgs = []
    for msg in inspect_nwbfile(nwbfile_path=path):
        if msg is None:
            continue
        msgs.append({"importance": msg.importance.name, "check": msg.check_function_name, "message": msg.message,
                     "location": msg.location, "object": f"{msg.object_type}/{msg.object_name}"})
    return {"validator": errors, "inspector": msgs,
            "n_critical": sum(1 for x in msgs if x["importance"] == Importance.CRITICAL.name)}


# ------------------------------------------------------------------------------------ reading back
def _open_nwb(nwb_path: Path) -> tuple[Any, Any]:
    import h5py
    from pynwb import NWBHDF5IO

    if not nwb_path.is_file():
        raise NWBFileError(f"{nwb_path}: no such file")
    try:
        ok = h5py.is_hdf5(str(nwb_path))
    except OSError as exc:
        raise NWBFileError(f"{nwb_path}: cannot be read ({exc})") from None
    if not ok:
        raise NWBFileError(f"{nwb_path}: not an HDF5 file, so not an NWB file (truncated, or another format)")
    try:
        io = NWBHDF5IO(str(nwb_path), mode="r")
        f = io.read()
    except Exception as exc:
        raise NWBFileError(f"{nwb_path}: not a readable NWB file ({type(exc).__name__}: {exc})") from None
    return io, f


def _channel_map_from(f: Any) -> Any:
    from cortexlink.core.types import ChannelMap

    if f.electrodes is None or len(f.electrodes) == 0:
        return None
    t = f.electrodes
    ids = [str(x) for x in t["channel_id"][:]] if "channel_id" in t.colnames else [f"ch{i:04d}" for i in range(len(t))]
    pos = np.stack([np.asarray(t["rel_x"][:], float), np.asarray(t["rel_y"][:], float)], axis=1) \
        if "rel_x" in t.colnames else None
    gain = np.asarray(t["gain_uv"][:], float) if "gain_uv" in t.colnames else 1.0
    off = np.asarray(t["offset_uv"][:], float) if "offset_uv" in t.colnames else 0.0
    bad = np.asarray(t["bad"][:], bool) if "bad" in t.colnames else None
    return ChannelMap(ids, pos, gain, off, bad)


def read_nwb_streams(nwb_path: str | os.PathLike) -> dict:
    """What a replay needs from a file written by :func:`export_nwb` (raw excepted).

    Returns
    -------
    dict
        ``fs_hz``, ``session_id``, ``participant_id``, ``channel_map`` (ChannelMap or None),
        ``features``: ``(samples, data, names, bin_width_samples)`` or None (bin start samples,
        float32 bins x features in the recorded column order), ``cursor``, ``decoder``,
        ``intent``: ``(samples, rows, columns)`` or None, ``events`` (the session's events, as
        recorded), ``trials`` and ``blocks`` (lists of dicts), ``invalid_times`` (list of
        ``(start_sample, stop_sample, reason)``), ``raw`` (``first_sample``, ``n_samples``,
        ``n_channels``, ``dtype``) or None, ``manifest``.

    Raises
    ------
    NWBFileError
        Not an HDF5/NWB file, or not one written by :func:`export_nwb`.
    """
    nwb_path = Path(nwb_path)
    io, f = _open_nwb(nwb_path)
    try:
        if "cortexlink_manifest" not in f.scratch:
            raise NWBFileError(f"{nwb_path}: no scratch/cortexlink_manifest; not written by cortexlink's export_nwb")
        manifest = json.loads(_text(f.scratch["cortexlink_manifest"].data))
        fs = float(manifest.get("fs_hz") or json.loads(f.data_collection)["fs_hz"])
        out: dict = {"fs_hz": fs, "session_id": f.session_id,
                     "participant_id": f.subject.subject_id if f.subject else None,
                     "channel_map": _channel_map_from(f), "manifest": manifest, "features": None, "cursor": None,
                     "decoder": None, "intent": None, "raw": None}
        if RAW_SERIES in f.acquisition:
            es = f.acquisition[RAW_SERIES]
            out["raw"] = {"first_sample": int(round(float(es.starting_time) * fs)), "n_samples": int(es.data.shape[0]),
                          "n_channels": int(es.data.shape[1]), "dtype": str(es.data.dtype)}
        ec = f.processing.get("ecephys")
        if ec is not None and "FeatureColumns" in ec.data_interfaces:
            tab = ec["FeatureColumns"]
            names = [str(x) for x in tab["feature_name"][:]]
            series = [str(x) for x in tab["series"][:]]
            scol = np.asarray(tab["series_column"][:], int)
            first = ec[series[0]]
            samples = _samples_of(first, fs)
            data = np.empty((samples.size, len(names)), np.float32)
            for sname in dict.fromkeys(series):
                arr = np.asarray(ec[sname].data[:])
                for j in np.flatnonzero(np.asarray(series) == sname):
                    data[:, j] = arr[:, scol[j]]
            bw = int(manifest.get("streams", {}).get("features", {}).get("bin_width_samples")
                     or (manifest.get("loop") or {}).get("samples_per_bin") or round(fs / float(first.rate)))
            out["features"] = (samples, data, tuple(names), bw)
        bh = f.processing.get("behavior")
        if bh is not None:
            di = bh.data_interfaces
            if "CursorPosition" in di:
                xy_s = di["CursorPosition"]["cursor_xy"]
                s = _samples_of(xy_s, fs)
                xy = np.asarray(xy_s.data[:])
                v = np.asarray(di["cursor_velocity"].data[:])
                clicked = np.zeros(s.size)
                if "clicks" in f.events:
                    clicked = np.isin(s, np.asarray(f.events["clicks"]["sample"][:])).astype(float)
                xs, xcols = _extra_columns(di, "cursor", skip=("cursor_velocity",))
                out["cursor"] = (s, np.column_stack([xy, v, clicked, *xs]), ["x", "y", "vx", "vy", "clicked", *xcols])
            for key, vname, cname, ccol in (("decoder", "decoded_velocity", "decoded_click_probability", "click_proba"),
                                            ("intent", "intended_velocity_simulated", "intended_click_simulated",
                                             "click")):
                parts, cols, s = [], [], None
                if vname in di:
                    s = _samples_of(di[vname], fs)
                    parts.append(np.asarray(di[vname].data[:]))
                    cols += ["vx", "vy"]
                if cname in di:
                    s = _samples_of(di[cname], fs) if s is None else s
                    parts.append(np.asarray(di[cname].data[:])[:, None])
                    cols.append(ccol)
                xs, xcols = _extra_columns(di, key)
                if xs:
                    s = _samples_of(di[f"{key}_{xcols[0]}"], fs) if s is None else s
                    parts += xs
                    cols += xcols
                if parts:
                    out[key] = (s, np.column_stack(parts), cols)
        out["events"] = ([json.loads(line) for line in _text(f.scratch["cortexlink_events"].data).splitlines() if line]
                         if "cortexlink_events" in f.scratch else [])
        out["trials"] = _table_rows(f.trials)
        out["blocks"] = _table_rows(f.epochs)
        inv = _table_rows(f.invalid_times)
        out["invalid_times"] = [(int(r["start_sample"]), int(r["stop_sample"]), str(r["reason"])) for r in inv]
        return out
    finally:
        io.close()


def _text(data: Any) -> str:
    v = data[()] if hasattr(data, "shape") else data
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return str(v)


def _table_rows(table: Any) -> list[dict]:
    if table is None or len(table) == 0:
        return []
    cols = {"start_time": table["start_time"][:], "stop_time": table["stop_time"][:]}
    for c in table.colnames:
        if c in ("start_time", "stop_time", "tags", "timeseries"):
            continue
        cols[c] = table[c][:]
    n = len(table)
    rows = []
    for i in range(n):
        r = {}
        for k, v in cols.items():
            x = v[i]
            if isinstance(x, bytes):
                x = x.decode("utf-8")
            elif isinstance(x, np.generic):
                x = x.item()
            r[k] = x
        rows.append(r)
    return rows


def iter_nwb_chunks(nwb_path: str | os.PathLike, chunk_samples: int = 600, *, skip_invalid: bool = True,
                    start_sample: int | None = None, stop_sample: int | None = None) -> Iterator[Any]:
    """The raw ElectricalSeries as :class:`~cortexlink.core.types.Chunk` objects, read lazily.

    Parameters
    ----------
    nwb_path : path
        A file written by :func:`export_nwb` with raw data.
    chunk_samples : int
        Samples per chunk (the last one of a stretch may be shorter).
    skip_invalid : bool
        Leave out the samples listed in ``invalid_times`` as missing from the raw stream, so
        ``start_sample`` jumps over them as it did in the recording (False: yield the zeros).
    start_sample, stop_sample : int, optional
        Source-clock sample range to read.

    Yields
    ------
    Chunk
        Raw counts (the recorded dtype), ``fs_hz``, ``start_sample`` in the source clock, ``seq``.
    """
    import h5py

    from cortexlink.core.types import Chunk
    from cortexlink.core.validation import check_positive

    chunk_samples = int(check_positive("chunk_samples", chunk_samples, integer=True))
    nwb_path = Path(nwb_path)
    if not nwb_path.is_file():
        raise NWBFileError(f"{nwb_path}: no such file")
    if not h5py.is_hdf5(str(nwb_path)):
        raise NWBFileError(f"{nwb_path}: not an HDF5 file, so not an NWB file (truncated, or another format)")
    with h5py.File(str(nwb_path), "r") as h:
        key = f"acquisition/{RAW_SERIES}"
        if key not in h:
            raise NWBFileError(f"{nwb_path}: no {key} (exported with --no-raw, or not written by cortexlink)")
        ds = h[f"{key}/data"]
        st = h[f"{key}/starting_time"]
        fs = float(st.attrs["rate"])
        first = int(round(float(st[()]) * fs))
        n = ds.shape[0]
        holes: list[tuple[int, int]] = []
        if skip_invalid and "intervals/invalid_times" in h:
            inv = h["intervals/invalid_times"]
            if "reason" in inv and "start_sample" in inv:
                for a, b, why in zip(inv["start_sample"][:], inv["stop_sample"][:], inv["reason"][:]):
                    why = why.decode() if isinstance(why, bytes) else str(why)
                    if "missing from the raw stream" in why:
                        holes.append((int(a), int(b)))
        lo = first if start_sample is None else max(first, int(start_sample))
        hi = first + n if stop_sample is None else min(first + n, int(stop_sample))
        # valid stretches [a, b) of the source clock
        stretches, cur = [], lo
        for a, b in sorted(holes):
            if b <= cur or a >= hi:
                continue
            if a > cur:
                stretches.append((cur, min(a, hi)))
            cur = max(cur, b)
        if cur < hi:
            stretches.append((cur, hi))
        # read whole HDF5 chunks in time, a multiple of chunk_samples, then slice in memory
        t_chunk = ds.chunks[0] if ds.chunks else chunk_samples
        per_read = chunk_samples * max(1, -(-t_chunk // chunk_samples))
        seq = 0
        for a, b in stretches:
            pos = a
            while pos < b:
                stop_blk = min(b, pos + per_read)
                buf = ds[pos - first:stop_blk - first]
                for i in range(0, buf.shape[0], chunk_samples):
                    piece = buf[i:i + chunk_samples]
                    yield Chunk(np.ascontiguousarray(piece), fs, pos + i, 0, seq)
                    seq += 1
                pos = stop_blk
