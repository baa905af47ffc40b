"""NWB files for the quality report, read with h5py (never loaded whole).

The largest ``ElectricalSeries`` of ``acquisition`` is sliced on demand and converted to µV
(``conversion`` x ``channel_conversion`` + ``offset``, volts -> µV); the electrodes table gives
channel names and positions, ``general/subject`` and the other ``general`` text fields go to
``header_text``, the trials table to events, ``source_script`` / ``file_create_date`` /
``generated_by`` to provenance. A cortexlink export's binned features (``processing/ecephys``)
and intended velocity (``processing/behavior``) become the recording's
:class:`~cortexlink.quality.model.FeatureAccess`, so an export without raw samples is checked
too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cortexlink.quality._eeg import sha256_file
from cortexlink.quality._implant import FEATURE_BLOCK_BINS
from cortexlink.quality.model import Event, FeatureAccess, Recording


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
