"""Implant recordings for the quality report: cortexlink session folders (NWB files: :mod:`._nwb`).

A session folder is read through :class:`~cortexlink.io.session_log.SessionReader`: raw samples
(stream ``raw``, counts converted to µV with the channel map's gain and offset) through an index
of its records built when the folder is opened (one pass over the stream file; a compressed
stream's frames are checked, not decoded), features (stream ``features``) block by block in one pass,
the participant's intended velocity (stream ``intent``) aligned to the feature bins, task events.
"""

from __future__ import annotations

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
