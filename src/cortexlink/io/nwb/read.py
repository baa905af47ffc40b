"""Read an exported NWB file back: :func:`check_nwb`, :func:`read_nwb_streams` and
:func:`iter_nwb_chunks`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cortexlink.io.nwb._common import NWBFileError, RAW_SERIES, _extra_columns, _samples_of


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

