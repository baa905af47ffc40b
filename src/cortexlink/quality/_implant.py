"""Implant recordings for the quality report: cortexlink session folders and NWB files.

A session folder is read through :class:`~cortexlink.io.session_log.SessionReader`: raw samples
(stream ``raw``, counts converted to µV with the channel map's gain and offset) through an index
of its records built on first read, features (stream ``features``) block by block in one pass,
the participant's intended velocity (stream ``intent``) aligned to the feature bins, task events.
An NWB file is read with h5py: the largest ``ElectricalSeries`` of ``acquisition`` sliced on
demand and converted to µV (``conversion``, ``channel_conversion``, ``offset``), the electrodes
table, ``general/subject``, the trials table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cortexlink.quality._eeg import sha256_file
from cortexlink.quality.model import Event, FeatureAccess, Recording

#: Rows per block when features are yielded (bounded memory whatever the session length).
FEATURE_BLOCK_BINS = 2048


def is_session(path: Path) -> bool:
    """Whether ``path`` is a cortexlink session folder (``manifest.json`` of that format)."""
    import json

    m = path / "manifest.json"
    if not m.is_file():
        return False
    try:
        with open(m, encoding="utf-8") as f:
            return json.load(f).get("format") == "cortexlink-session"
    except (OSError, ValueError, AttributeError):
        return False


# --------------------------------------------------------------------------------------------
# session folders


def _raw_access(reader: Any, problems: list[tuple[str, str]], extra: dict) -> tuple[int, int, Any]:
    """``(first_sample, n_samples, read)`` of the raw stream (counts -> µV)."""
    from cortexlink.core.types import ChannelMap

    info = reader.check_raw("raw")
    cm = info.get("channel_map") or (reader.manifest.get("channel_map"))
    cmap = ChannelMap.from_dict(cm) if cm else None
    counts = info.get("units", "counts") == "counts"
    gain = cmap.gain_uv if (counts and cmap is not None) else np.ones(len(info["columns"]))
    offset = cmap.offset_uv if (counts and cmap is not None) else np.zeros(len(info["columns"]))
    if counts and cmap is None:
        problems.append(("units", "raw samples are counts but no channel map gives their gain; read as µV"))
    dtype = np.dtype(info["dtype"])
    ncol = len(info["columns"])
    compressed = "codec" in info
    index: list[tuple[int, int, int]] = []       # (sample, n_rows, payload offset)
    from cortexlink.io.session_log.format import REC_HEADER_BYTES
    for r in reader.records("raw", want=(lambda s, n: False) if compressed else None):
        index.append((int(r.sample), int(r.data.shape[0]), int(r.offset) + REC_HEADER_BYTES))
    if not index:
        return 0, 0, None
    first = index[0][0]
    end = max(s + n for s, n, _ in index)
    starts = np.array([s for s, _, _ in index], np.int64)
    gaps = []
    covered = first
    for s, n, _ in index:
        if s > covered:
            gaps.append((covered - first, s - covered))
        covered = max(covered, s + n)
    if gaps:
        extra["gaps"] = gaps
        problems.append(("gaps", f"{len(gaps)} hole(s) in the raw stream, {sum(g[1] for g in gaps)} samples in "
                                 "all (read as zeros)"))
    path = reader.path / "streams" / "raw.clog"

    def read(start: int, stop: int) -> np.ndarray:
        a, b = first + int(start), first + int(stop)
        out = np.zeros((b - a, ncol), np.float64)
        if compressed:
            s, rows = reader.read_array("raw", a, b)
            out[s - a] = rows
        else:
            i = max(0, int(np.searchsorted(starts, a, side="right")) - 1)
            with open(path, "rb") as f:
                while i < len(index) and index[i][0] < b:
                    s, n, off = index[i]
                    if s + n > a:
                        f.seek(off)
                        rows = np.frombuffer(f.read(n * ncol * dtype.itemsize), dtype).reshape(n, ncol)
                        lo, hi = max(a, s), min(b, s + n)
                        out[lo - a:hi - a] = rows[lo - s:hi - s]
                    i += 1
        return (out * gain + offset).T.copy()
    return first, end - first, read


def _feature_access(reader: Any, manifest: dict) -> FeatureAccess | None:
    if "features" not in reader.streams:
        return None
    info = reader.stream_info("features")
    fs = float(info.get("rate_hz") or reader.fs_hz)
    width = int(info.get("bin_width_samples", 1))
    st = manifest.get("streams", {}).get("features", {})
    first, last = st.get("first_sample"), st.get("last_sample")
    if first is None or last is None:          # an unclosed session: one pass over the record headers
        samples = [r.sample + width * (r.data.shape[0] - 1) for r in reader.records("features")]
        first_rec = next(iter(reader.records("features")), None)
        if first_rec is None or not samples:
            return None
        first, last = int(first_rec.sample), int(max(samples))
    n_bins = (int(last) - int(first)) // width + 1

    def iter_blocks() -> Iterator[tuple[int, np.ndarray]]:
        buf: list[np.ndarray] = []
        buf_first = None
        expect = None
        for r in reader.records("features"):
            idx = (int(r.sample) - int(first)) // width
            rows = np.asarray(r.data, np.float64)
            if buf and (idx != expect or sum(len(b) for b in buf) >= FEATURE_BLOCK_BINS):
                yield int(buf_first), np.concatenate(buf)
                buf = []
            if not buf:
                buf_first = idx
            buf.append(rows)
            expect = idx + rows.shape[0]
        if buf:
            yield int(buf_first), np.concatenate(buf)

    def behaviour() -> tuple[np.ndarray, np.ndarray] | None:
        if "intent" not in reader.streams:
            return None
        cols = reader.columns("intent")
        if "vx" not in cols or "vy" not in cols:
            return None
        s, rows = reader.read_array("intent")
        # a row is written when its bin is complete: its sample is the bin's start + the bin width
        idx = (s.astype(np.int64) - width - int(first)) // width
        keep = (idx >= 0) & (idx < n_bins)
        v = rows[:, [cols.index("vx"), cols.index("vy")]].astype(np.float64)
        return idx[keep], v[keep]
    return FeatureAccess(bin_s=width / fs, names=list(info["columns"]), n_bins=n_bins, iter_blocks=iter_blocks,
                         behaviour=behaviour)


def _session_events(reader: Any, fs: float, first: int) -> list[Event]:
    """Trials (``target_on`` to the next ``select``/``timeout``, or the block's end) labelled
    ``target<k>`` (``centre`` for a return to the centre); blocks as ``block:<name>``."""
    out: list[Event] = []
    open_trial: tuple[int, str] | None = None
    blocks: dict[str, int] = {}
    for e in reader.events():
        kind = e.get("kind")
        sample = e.get("sample")
        if not isinstance(sample, (int, float)) or sample < 0:
            continue
        if kind == "task":
            te = e.get("task_event")
            data = e.get("data") or {}
            if te == "target_on":
                t = data.get("target_idx")
                open_trial = (int(sample), "centre" if t is None or t < 0 else f"target{int(t)}")
            elif te in ("select", "timeout", "trial_end") and open_trial is not None:
                s0, label = open_trial
                out.append(Event((s0 - first) / fs, (int(sample) - s0) / fs, label))
                open_trial = None
        elif kind == "block_start":
            blocks[str(e.get("name"))] = int(sample)
        elif kind == "block_end" and str(e.get("name")) in blocks:
            if open_trial is not None:       # a trial the block's end cut short (as the NWB export keeps it)
                out.append(Event((open_trial[0] - first) / fs, (int(sample) - open_trial[0]) / fs, open_trial[1]))
                open_trial = None
            s0 = blocks.pop(str(e.get("name")))
            out.append(Event((s0 - first) / fs, (int(sample) - s0) / fs, f"block:{e.get('name')}"))
    return sorted(out, key=lambda ev: ev.onset_s)


def open_session(path: Path, name: str) -> Recording:
    """A cortexlink session folder as a lazy Recording (raw samples and/or binned features)."""
    from cortexlink.io.session_log import SessionReader

    reader = SessionReader(path)
    m = reader.manifest
    problems: list[tuple[str, str]] = []
    extra: dict[str, Any] = {"state": m.get("state"), "streams": reader.streams}
    if m.get("state") != "closed":
        problems.append(("header", f"session state is {m.get('state')!r}, not 'closed' (run `cortexlink recover`)"))
    dropped = m.get("dropped") or {}
    if any((d or {}).get("items") for d in dropped.values() if isinstance(d, dict)):
        problems.append(("dropped", f"the recorder dropped items: {dropped}"))
    fs = float(m.get("fs_hz") or 0) or None
    cm = reader.channel_map
    first, n, read = 0, 0, None
    names = list(cm.channel_ids) if cm is not None else []
    if "raw" in reader.streams:
        first, n, read = _raw_access(reader, problems, extra)
        names = reader.columns("raw")
    features = _feature_access(reader, m)
    if not names and features is not None:
        names = sorted({c.split("/")[0] for c in features.names})
    if features is not None and "raw" not in reader.streams:
        first = int((m.get("streams", {}).get("features", {}) or {}).get("first_sample") or 0)
    positions = bool(cm is not None and np.all(np.isfinite(cm.positions_um)) and len(names) > 1
                     and np.ptp(cm.positions_um, axis=0).any())
    prov = dict(m.get("provenance") or {})
    prov.update({"session_id": m.get("session_id"), "started_utc": m.get("started_utc"),
                 "closed_utc": m.get("closed_utc"), "seeds": m.get("seeds"),
                 "files": m.get("files") or {}, "manifest_sha256": sha256_file(path / "manifest.json")})
    if m.get("decoders"):
        prov["decoders"] = m["decoders"]
    implant = ((m.get("config") or {}).get("implant") or {})
    device = f"cortexlink sim implant ({implant.get('preset', 'default')})" if implant else None
    header_text = {"participant_id": str(m.get("participant_id"))} if m.get("participant_id") else {}
    part = (m.get("config") or {}).get("participant")
    if part:
        header_text["config.participant"] = str(part)
    extra["first_sample"] = first
    return Recording(path=path, name=name, kind="implant", fmt="session", fs_hz=fs, n_samples=n,
                     channel_names=names, channel_types=["implant"] * len(names),
                     units=["uV"] * len(names), positions_present=positions, subject=m.get("participant_id"),
                     session=m.get("session_id"), device=device,
                     events=_session_events(reader, fs or 1.0, first) if fs else [], header_text=header_text,
                     provenance=prov, problems=problems, reader=read, features=features, extra=extra)


# --------------------------------------------------------------------------------------------
# NWB files


def _s(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.ndarray):
        return ", ".join(_s(x) for x in v.ravel()[:20])
    return str(v)


def _electrical_series(f: Any) -> list[str]:
    out: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if obj.attrs.get("neurodata_type") in ("ElectricalSeries", b"ElectricalSeries") and "data" in obj:
            out.append(name)
    if "acquisition" in f:
        f["acquisition"].visititems(visit)
    return ["acquisition/" + n for n in out]


def _column(table: Any, name: str) -> np.ndarray | None:
    if name in table and hasattr(table[name], "shape") and f"{name}_index" not in table:
        try:
            return table[name][()]
        except (TypeError, ValueError):
            return None
    return None


def _rate_t0(g: Any) -> tuple[float, float] | None:
    if "starting_time" in g:
        rate = float(g["starting_time"].attrs.get("rate", 0.0))
        return (rate, float(g["starting_time"][()])) if rate > 0 else None
    if "timestamps" in g and g["timestamps"].shape[0] > 1:
        ts = g["timestamps"][:2]
        return 1.0 / float(ts[1] - ts[0]), float(ts[0])
    return None


def _nwb_features(f: Any, path: Path, ch_names: list[str]) -> FeatureAccess | None:
    """Binned features of a cortexlink NWB export (``processing/ecephys``: ``ThresholdCrossings``,
    ``SpikeBandPower`` in µV, their order in ``FeatureColumns``) and the intended velocity."""
    if "processing/ecephys" not in f:
        return None
    eph = f["processing/ecephys"]
    cols: list[tuple[str, str, int]] = []          # (feature name, series, column)
    if "FeatureColumns" in eph:
        t = eph["FeatureColumns"]
        for fn, se, sc in zip(t["feature_name"][()], t["series"][()], t["series_column"][()]):
            cols.append((_s(fn), _s(se), int(sc)))
    else:
        for se, suffix in (("ThresholdCrossings", "tx"), ("SpikeBandPower", "sbp")):
            if se in eph and "data" in eph[se]:
                n = eph[se]["data"].shape[1]
                cols += [(f"{ch_names[i] if i < len(ch_names) else f'ch{i:04d}'}/{suffix}", se, i) for i in range(n)]
    cols = [c for c in cols if c[1] in eph and "data" in eph[c[1]]]
    if not cols:
        return None
    series = sorted({c[1] for c in cols})
    timing = _rate_t0(eph[series[0]])
    if timing is None:
        return None
    rate, t0 = timing
    n_bins = min(int(eph[se]["data"].shape[0]) for se in series)
    scale = {se: (float(eph[se]["data"].attrs.get("conversion", 1.0)) / 1e-6
                  if _s(eph[se]["data"].attrs.get("unit", "")).lower() in ("volts", "v") else 1.0) for se in series}
    names = [c[0] for c in cols]
    beh_key = None
    if "processing/behavior" in f:
        cand = [k for k in sorted(f["processing/behavior"]) if "data" in f["processing/behavior"][k]
                and f["processing/behavior"][k]["data"].ndim == 2 and f["processing/behavior"][k]["data"].shape[1] >= 2]
        beh_key = next((k for k in cand if k.startswith("intended_velocity")), None) or next(
            (k for k in cand if "vel" in k.lower() and not k.startswith(("cursor", "decoded"))), None)

    def iter_blocks() -> Iterator[tuple[int, np.ndarray]]:
        import h5py
        with h5py.File(path, "r") as fh:
            g = fh["processing/ecephys"]
            for a in range(0, n_bins, FEATURE_BLOCK_BINS):
                b = min(n_bins, a + FEATURE_BLOCK_BINS)
                parts = {se: np.asarray(g[se]["data"][a:b], np.float64) * scale[se] for se in series}
                yield a, np.stack([parts[se][:, c] for _, se, c in cols], axis=1)

    def behaviour() -> tuple[np.ndarray, np.ndarray] | None:
        if beh_key is None:
            return None
        import h5py
        with h5py.File(path, "r") as fh:
            g = fh["processing/behavior"][beh_key]
            bt = _rate_t0(g)
            if bt is None:
                return None
            v = np.asarray(g["data"][:, :2], np.float64)
        times = bt[1] + np.arange(v.shape[0]) / bt[0]
        # a behaviour row is stamped when its bin is complete (the bin's end)
        idx = np.round((times - t0) * rate).astype(np.int64) - 1
        keep = (idx >= 0) & (idx < n_bins)
        return idx[keep], v[keep]
    return FeatureAccess(bin_s=1.0 / rate, names=names, n_bins=n_bins, iter_blocks=iter_blocks, behaviour=behaviour)


def _trial_label(lab: np.ndarray | None, col: str | None, i: int) -> str:
    """A trial's label; a numeric ``target`` column (cortexlink's export) is named as a session's
    trials are (``target<k>``, ``centre`` for a negative index)."""
    if lab is None:
        return "trial"
    text = _s(lab[i])
    if col == "target":
        try:
            k = int(float(text))
        except (ValueError, OverflowError):
            return text
        return "centre" if k < 0 else f"target{k}"
    return text


def _electrode_names(etab: Any, elec_idx: np.ndarray) -> list[str]:
    if etab is not None:
        for col in ("channel_id", "label", "channel_name"):
            c = _column(etab, col)
            if c is not None and len(c) > int(elec_idx.max(initial=0)):
                return [_s(c[i]) for i in elec_idx]
    return [f"ch{i:04d}" for i in elec_idx]


def _manifest_fs(f: Any) -> float | None:
    """The source's sampling rate from a cortexlink export's copy of the session manifest."""
    import json
    try:
        d = f["scratch/cortexlink_manifest"]
        m = json.loads(_s((d["data"] if "data" in getattr(d, "keys", lambda: ())() else d)[()]))
        return float(m["fs_hz"]) if m.get("fs_hz") else None
    except (KeyError, ValueError, TypeError):
        return None


def open_nwb(path: Path, name: str) -> Recording:
    """An NWB file as a lazy Recording: its largest acquisition ElectricalSeries sliced with h5py."""
    import h5py

    problems: list[tuple[str, str]] = []
    extra: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        series = [k for k in _electrical_series(f) if f[k]["data"].ndim == 2]
        key = max(series, key=lambda k: int(np.prod(f[k]["data"].shape))) if series else None
        if len(series) > 1:
            extra["other_series"] = [s for s in series if s != key]
        etab = f.get("general/extracellular_ephys/electrodes")
        if key is None:            # features only (an export without raw samples)?
            n_e = int(etab["id"].shape[0]) if etab is not None and "id" in etab else 0
            names = _electrode_names(etab, np.arange(n_e))
            features = _nwb_features(f, path, names)
            if features is None:
                raise ValueError("no ElectricalSeries in acquisition and no binned features in processing/ecephys "
                                 "(nothing to check)")
            problems.append(("no_raw", "no raw ElectricalSeries; checked from the binned features only"))
            es = d = None
            n, nch, conv, off, unit, chconv = 0, len(names), 1.0, 0.0, "volts", np.ones(len(names))
            elec_idx = np.arange(nch)
            fs = _manifest_fs(f)
            t0 = next((_rate_t0(f[k])[1] for k in ("processing/ecephys/ThresholdCrossings",
                                                   "processing/ecephys/SpikeBandPower")
                       if k in f and _rate_t0(f[k]) is not None), 0.0)
        else:
            es = f[key]
            d = es["data"]
            n, nch = int(d.shape[0]), int(d.shape[1])
            conv = float(d.attrs.get("conversion", 1.0))
            off = float(d.attrs.get("offset", 0.0))
            unit = _s(d.attrs.get("unit", "volts"))
            chconv = (np.asarray(es["channel_conversion"][()], np.float64) if "channel_conversion" in es
                      else np.ones(nch))
            elec_idx = np.asarray(es["electrodes"][()], np.int64) if "electrodes" in es else np.arange(nch)
            names = _electrode_names(etab, elec_idx)
            features = _nwb_features(f, path, names)
        if es is None:
            pass                    # fs and t0 set above
        elif "starting_time" in es:
            fs = float(es["starting_time"].attrs.get("rate", 0.0)) or None
            t0 = float(es["starting_time"][()])
        elif "timestamps" in es:
            ts = es["timestamps"][: min(n, 10001)]
            dt = np.diff(ts)
            fs = float(1.0 / np.median(dt)) if dt.size and np.median(dt) > 0 else None
            t0 = float(ts[0]) if ts.size else 0.0
            if dt.size and np.ptp(dt) > 1e-3 * np.median(dt):
                problems.append(("timestamps", f"{key}: irregular timestamps; rate estimated as {fs} Hz"))
        else:
            fs, t0 = None, 0.0
        present = False
        if etab is not None and len(elec_idx):
            pos = [_column(etab, a) for a in ("rel_x", "rel_y", "x", "y", "z")]
            xy = [p for p in pos if p is not None and np.issubdtype(np.asarray(p).dtype, np.number)]
            if xy:
                P = np.stack([np.asarray(p, float)[elec_idx] for p in xy], axis=1)
                present = bool(np.all(np.isfinite(P)) and np.ptp(P, axis=0).any())
        header_text: dict[str, str] = {}
        subject = None
        if "general/subject" in f:
            g = f["general/subject"]
            for k in g:
                if isinstance(g[k], h5py.Dataset):
                    header_text[f"subject.{k}"] = _s(g[k][()])
            subject = header_text.get("subject.subject_id")
        for k in ("experimenter", "institution", "lab", "session_id", "experiment_description",
                  "session_description", "notes", "data_collection"):
            p = f"general/{k}" if k != "session_description" else k
            if p in f and isinstance(f[p], h5py.Dataset):
                header_text[k] = _s(f[p][()])
        prov: dict[str, Any] = {"series": key, "nwb_version": _s(f.attrs.get("nwb_version", ""))}
        for k, p in (("source_script", "general/source_script"), ("file_create_date", "file_create_date"),
                     ("session_start_time", "session_start_time"), ("identifier", "identifier")):
            if p in f:
                prov[k] = _s(f[p][()])
        if "general/source_script" in f:
            prov["source_script_file_name"] = _s(f["general/source_script"].attrs.get("file_name", ""))
        if "general/generated_by" in f:
            prov["generated_by"] = _s(f["general/generated_by"][()])
        device = None
        if "general/devices" in f and len(f["general/devices"]):
            device = sorted(f["general/devices"])[0]
            dg = f["general/devices"][device]
            for a in ("description", "manufacturer"):
                if a in dg.attrs:
                    header_text[f"device.{a}"] = _s(dg.attrs[a])
        site = header_text.get("institution")
        events: list[Event] = []
        if "intervals/trials" in f:
            t = f["intervals/trials"]
            st, sp = _column(t, "start_time"), _column(t, "stop_time")
            lab, col = None, None
            for col in ("trial_type", "condition", "label", "target", "stimulus", "outcome"):
                lab = _column(t, col)
                if lab is not None:
                    break
            if st is not None and sp is not None:
                for i in range(len(st)):
                    events.append(Event(float(st[i]) - t0, float(sp[i] - st[i]), _trial_label(lab, col, i)))
        session = header_text.get("session_id")
    scale = conv * chconv * (1e6 if unit.lower() in ("volts", "v") else 1.0)
    off_uv = off * (1e6 if unit.lower() in ("volts", "v") else 1.0)
    if unit.lower() not in ("volts", "v"):
        problems.append(("units", f"{key} unit is {unit!r}, not volts; values are not converted to µV"))

    def read(start: int, stop: int) -> np.ndarray:
        with h5py.File(path, "r") as fh:
            x = np.asarray(fh[key]["data"][int(start):int(stop)], np.float64)
        return (x * scale + off_uv).T.copy()
    if features is not None and key is None:
        kind = "implant"
    else:
        kind = "implant" if (fs or 0) >= 2000 or features is not None else "eeg"
    prov.update({"file_bytes": int(path.stat().st_size), "sha256": sha256_file(path)})
    extra["starting_time_s"] = t0
    return Recording(path=path, name=name, kind=kind, fmt="nwb", fs_hz=fs if fs and math.isfinite(fs) else None,
                     n_samples=n, channel_names=names, channel_types=["implant" if kind == "implant" else "eeg"] * nch,
                     units=[unit] * nch, positions_present=present, subject=subject, session=session, site=site,
                     device=device, events=events, header_text=header_text, provenance=prov, problems=problems,
                     reader=read if key is not None else None, features=features, extra=extra)
