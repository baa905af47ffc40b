"""Any recording cortexlink reads, as a lazy SpikeInterface recording in µV with its probe.

:func:`to_si_recording` takes

* a session folder written by ``cortexlink record`` / the recorder (its ``raw`` stream): the
  records are decoded once, in file order, into a flat binary file in ``cache_dir`` (memory
  bounded: one record at a time; dropped records become zeros and are counted), read back
  lazily by SpikeInterface's ``BinaryRecordingExtractor``;
* an NWB file or anything :func:`cortexlink.io.importers.open_recording` reads: wrapped
  lazily (:class:`CortexlinkRecordingExtractor` reads only the samples asked for);
* an already opened :class:`cortexlink.io.importers.Recording`, or a SpikeInterface recording
  (returned with a probe attached when it has none).

The probe is built with probeinterface from the :class:`~cortexlink.core.types.ChannelMap`
(positions in µm, one contact per channel, 2-D); channels the map marks bad are left out.
A truncated input (an importer salvage, a session that was not closed cleanly) is refused
unless ``allow_truncated=True``; an unreadable one is refused with a message naming the file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from spikeinterface.core import BaseRecording, BaseRecordingSegment

from cortexlink.core.errors import CortexlinkError, ValidationError

logger = logging.getLogger(__name__)

__all__ = ["to_si_recording", "make_probe", "CortexlinkRecordingExtractor", "describe"]


def make_probe(channel_map: Any, radius_um: float = 6.0) -> Any:
    """A probeinterface ``Probe`` (2-D, µm) with one circular contact per channel of the map."""
    from probeinterface import Probe

    pos = np.asarray(channel_map.positions_um, dtype=float)
    if pos.ndim != 2 or pos.shape[0] != channel_map.n_channels:
        raise ValidationError(f"channel map positions must be (n_channels, 2|3) µm; got shape {pos.shape}")
    pos = pos[:, :2]
    if len(np.unique(pos, axis=0)) != len(pos):
        raise ValidationError("channel map positions must be distinct, one per electrode; found duplicates")
    probe = Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=pos, shapes="circle", shape_params={"radius": float(radius_um)})
    probe.set_contact_ids([str(c) for c in channel_map.channel_ids])
    probe.set_device_channel_indices(np.arange(channel_map.n_channels))
    return probe


class _Segment(BaseRecordingSegment):
    def __init__(self, rec: Any) -> None:
        BaseRecordingSegment.__init__(self, sampling_frequency=float(rec.fs_hz), t_start=None)
        self._rec = rec
        self._gain = np.asarray(rec.channel_map.gain_uv, dtype=np.float32)
        self._offset = np.asarray(rec.channel_map.offset_uv, dtype=np.float32)

    def get_num_samples(self) -> int:
        return int(self._rec.n_samples)

    def get_traces(self, start_frame: int | None = None, end_frame: int | None = None,
                   channel_indices: Any = None) -> np.ndarray:
        start = 0 if start_frame is None else int(start_frame)
        stop = self.get_num_samples() if end_frame is None else int(end_frame)
        x = self._rec.read(start, stop).astype(np.float32) * self._gain + self._offset
        return x if channel_indices is None else x[:, channel_indices]


class CortexlinkRecordingExtractor(BaseRecording):
    """A recording :func:`cortexlink.io.importers.open_recording` reads, lazily, in µV
    (float32). Rebuilt from ``(path, format, stream, allow_truncated)`` when SpikeInterface
    serialises it (worker processes, the analyzer's provenance)."""

    def __init__(self, path: str, format: str | None = None, stream: str | None = None,
                 allow_truncated: bool = False) -> None:
        from cortexlink.io.importers import detect_format, open_recording

        fmt = format or detect_format(path)
        kw = {"allow_truncated": True} if fmt == "raw" and allow_truncated else {}   # raw refuses otherwise
        rec = open_recording(path, fmt, stream=stream, **kw)
        _check_truncated(rec, allow_truncated)
        cm = rec.channel_map
        BaseRecording.__init__(self, sampling_frequency=float(rec.fs_hz),
                               channel_ids=[str(c) for c in cm.channel_ids], dtype="float32")
        self.add_recording_segment(_Segment(rec))
        self.set_channel_gains(1.0)
        self.set_channel_offsets(0.0)
        self.cortexlink_metadata = dict(rec.metadata)
        self.cortexlink_channel_map = cm
        self._kwargs = {"path": str(path), "format": format, "stream": stream,
                        "allow_truncated": bool(allow_truncated)}


def _check_truncated(rec: Any, allow_truncated: bool) -> None:
    meta = getattr(rec, "metadata", {}) or {}
    if meta.get("truncated") and not allow_truncated:
        raise ValidationError(f"{rec.path}: the file is truncated ({meta.get('truncation', 'cut short')}; "
                              f"{meta.get('n_samples_salvaged')} of {meta.get('n_samples_expected')} samples "
                              "complete); refusing to sort a damaged recording (allow_truncated=True / "
                              "--allow-truncated sorts the complete samples)")


def _session_to_binary(folder: Path, cache_dir: Path, allow_truncated: bool, progress: bool) -> Any:
    """Decode a session's raw stream into ``cache_dir/raw.bin`` one record at a time."""
    from spikeinterface.core import BinaryRecordingExtractor

    from cortexlink.io.session_log import SessionReader

    try:
        reader = SessionReader(folder)
        if "raw" not in reader.streams:
            raise ValidationError(f"{folder}: the session has no raw stream (recorded with --no-raw); nothing to sort")
        info = reader.check_raw("raw")
    except CortexlinkError as exc:
        raise ValidationError(f"{folder}: not a readable session ({exc})") from None
    state = reader.state
    if state != "closed" and not allow_truncated:
        raise ValidationError(f"{folder}: the session was not closed cleanly (state {state!r}); run `cortexlink "
                              "recover` first, or pass allow_truncated=True / --allow-truncated")
    cm = reader.channel_map
    if cm is None:
        raise ValidationError(f"{folder}/manifest.json: no channel_map; cannot place the electrodes")
    fs = float(info.get("rate_hz") or reader.fs_hz)
    dtype = np.dtype(info["dtype"])
    n_ch = len(info["columns"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = cache_dir / "raw.bin"
    first = end = None
    n_rows = 0
    from tqdm import tqdm
    bar = tqdm(desc="session raw -> binary", unit="record", disable=not progress)
    try:
        with open(out, "wb") as f:
            for r in reader.records("raw"):
                first = r.sample if first is None else first
                data = np.ascontiguousarray(r.data, dtype=dtype)
                f.seek((r.sample - first) * n_ch * dtype.itemsize)
                f.write(data.tobytes())
                n_rows += data.shape[0]
                end = max(end or 0, r.sample + data.shape[0])
                bar.update(1)
            if end is not None:
                f.truncate((end - first) * n_ch * dtype.itemsize)
    except CortexlinkError as exc:
        raise ValidationError(f"{folder}/streams/raw.clog: damaged raw stream ({exc}); refusing to sort it") from None
    finally:
        bar.close()
    if first is None:
        raise ValidationError(f"{folder}/streams/raw.clog: no raw samples recorded; nothing to sort")
    n_gap = (end - first) - n_rows
    if n_gap:
        logger.warning("%s: %d samples missing from the raw stream are zeros in %s", folder, n_gap, out)
    scaled = info.get("units", "counts") == "uV"
    gain = np.ones(n_ch) if scaled else np.asarray(cm.gain_uv, float)
    offset = np.zeros(n_ch) if scaled else np.asarray(cm.offset_uv, float)
    rec = BinaryRecordingExtractor(file_paths=[str(out)], sampling_frequency=fs, dtype=dtype.str,
                                   num_channels=n_ch, channel_ids=[str(c) for c in cm.channel_ids],
                                   gain_to_uV=gain, offset_to_uV=offset, is_filtered=False)
    meta = {"format": "cortexlink-session", "path": str(folder), "fs_hz": fs, "first_sample": int(first),
            "n_samples": int(end - first), "n_samples_missing": int(n_gap), "state": state,
            "session_id": reader.manifest.get("session_id"), "participant_id": reader.manifest.get("participant_id"),
            "species": _species(reader.manifest),
            "cache": str(out)}
    (cache_dir / "raw.json").write_text(json.dumps(meta, indent=1))
    return rec, cm, meta


def _species(manifest: dict) -> str | None:
    """The participant's species as ``cortexlink export`` reads it from a session manifest (a
    simulated session: "Homo sapiens", the simulator models a human BCI user)."""
    from cortexlink.io.nwb._common import SIMULATED_SPECIES, _is_simulated, _subject_meta

    return _subject_meta(manifest).get("species") or (SIMULATED_SPECIES if _is_simulated(manifest) else None)


def _finish(rec: Any, cm: Any, meta: dict) -> Any:
    """Scale to µV (float32), attach the probe, drop bad channels."""
    import spikeinterface.preprocessing as spre

    if rec.get_dtype() != np.float32 or not np.allclose(rec.get_channel_gains(), 1.0) \
            or not np.allclose(rec.get_channel_offsets(), 0.0):
        rec = spre.scale_to_uV(rec)
        if rec.get_dtype() != np.float32:
            rec = spre.astype(rec, "float32")
    rec.set_probe(make_probe(cm), group_mode="by_probe")          # in place (spikeinterface >= 0.105)
    bad = [str(c) for c, b in zip(cm.channel_ids, cm.bad) if b]
    if bad:
        rec = rec.remove_channels(bad)
    meta = dict(meta, n_bad_channels=len(bad))
    rec.annotate(cortexlink=json.dumps(meta, default=str))
    return rec


def to_si_recording(source: Any, *, format: str | None = None, stream: str | None = None,
                    cache_dir: str | Path | None = None, allow_truncated: bool = False,
                    progress: bool = False) -> Any:
    """A lazy SpikeInterface recording in µV (float32), probe attached, from ``source``.

    Parameters
    ----------
    source : path, cortexlink importers ``Recording`` or spikeinterface ``BaseRecording``
        A session folder (with ``manifest.json`` and a raw stream), an NWB file, or anything
        :func:`~cortexlink.io.importers.open_recording` reads.
    format, stream : str, optional
        Passed to :func:`~cortexlink.io.importers.open_recording`.
    cache_dir : path, optional
        Where a session folder's raw stream is decoded to (``raw.bin``); required for sessions.
    allow_truncated : bool
        Sort the complete samples of a truncated file / an unclosed session instead of refusing.
    progress : bool
        A progress bar while a session's raw stream is decoded.

    Raises
    ------
    ValidationError
        A missing, foreign, damaged or (by default) truncated input; the message names the file.
    """
    if isinstance(source, BaseRecording):
        if source.has_probe():
            return source
        from cortexlink.core.types import ChannelMap
        if source.get_channel_locations is not None and "location" in source.get_property_keys():
            cm = ChannelMap([str(c) for c in source.channel_ids], positions_um=source.get_channel_locations())
        else:
            cm = ChannelMap.grid(source.get_num_channels(), gain_uv=1.0)
        source.set_probe(make_probe(cm), group_mode="by_probe")
        return source
    if hasattr(source, "channel_map") and hasattr(source, "read") and hasattr(source, "path"):
        src_path, fmt = Path(source.path), source.format
        stream = stream or (source.metadata or {}).get("stream")
        _check_truncated(source, allow_truncated)
    else:
        src_path, fmt = Path(source), format
    if not src_path.exists():
        raise ValidationError(f"{src_path}: no such file or folder")
    if src_path.is_dir() and (src_path / "manifest.json").is_file() and fmt is None:
        if cache_dir is None:
            raise ValidationError(f"{src_path}: a session folder is decoded to a binary file first; pass cache_dir")
        rec, cm, meta = _session_to_binary(src_path, Path(cache_dir), allow_truncated, progress)
        return _finish(rec, cm, meta)
    try:
        rec = CortexlinkRecordingExtractor(str(src_path), fmt, stream, allow_truncated)
    except CortexlinkError as exc:
        msg = str(exc)
        raise ValidationError(msg if str(src_path) in msg else f"{src_path}: {msg}") from None
    meta = dict(rec.cortexlink_metadata)
    return _finish(rec, rec.cortexlink_channel_map, meta)


def describe(recording: Any) -> dict:
    """Channels, rate, duration and the cortexlink source description of a recording."""
    ann = recording.get_annotation("cortexlink") if "cortexlink" in recording.get_annotation_keys() else None
    return {"n_channels": int(recording.get_num_channels()), "fs_hz": float(recording.get_sampling_frequency()),
            "duration_s": float(recording.get_total_duration()),
            "source": json.loads(ann) if ann else None}
