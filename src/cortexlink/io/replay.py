"""Replay a recording through the same pipeline: raw chunks → features → decoders.

:func:`replay` reads the raw stream of a session folder (or an NWB file written by
``cortexlink export``), builds a :class:`~cortexlink.dsp.FeatureExtractor` with the recorded
parameters and streams the samples through it, at real time or as fast as possible. For a
session folder it also loads the decoders as they went live (``decoders/*.npz``) and steps them
on the same bins the live session did (closed-loop blocks, state reset at each block start),
then compares everything with what the live session recorded: features bin by bin, decoded
velocity and click probability row by row.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cortexlink.core.errors import ValidationError

logger = logging.getLogger(__name__)

__all__ = ["replay", "ReplayResult"]


class ReplayResult(dict):
    """A dict: ``features`` (samples, rows, names), ``decoder`` (samples, rows) and ``compare``
    (per stream: rows compared, rows equal, max absolute difference, ``equal``), plus timing."""


def _source(path: Path, fmt: str | None) -> tuple[str, Any]:
    if fmt is None and path.is_dir() and (path / "manifest.json").exists():
        from cortexlink.io.session_log import SessionReader
        return "session", SessionReader(path)
    if fmt is None and path.suffix.lower() == ".nwb":
        return "nwb", path
    from cortexlink.io.importers import open_recording
    try:
        return "import", open_recording(path, fmt)
    except ValidationError as exc:
        raise ValidationError(f"{path}: replay takes a session folder (with manifest.json), an .nwb file written "
                              f"by `cortexlink export`, or a recording the importers read ({exc})") from None


def _paced(chunks: Iterator[Any], fs: float, realtime: bool, speed: float) -> Iterator[Any]:
    if not realtime:
        yield from chunks
        return
    t0 = None
    s0 = 0
    for ch in chunks:
        if t0 is None:
            t0, s0 = time.perf_counter(), ch.start_sample
        due = (ch.end_sample - s0) / fs / speed
        ahead = due - (time.perf_counter() - t0)
        if ahead > 0:
            time.sleep(ahead)
        yield ch


def replay(path: str | Path, *, realtime: bool = False, speed: float = 1.0, progress: bool = False,
           compare: bool = True, seconds: float | None = None, format: str | None = None,
           chunk_ms: float = 20.0) -> ReplayResult:
    """Stream a recording back through feature extraction and the recorded decoders.

    Parameters
    ----------
    path : session folder, ``.nwb`` file or any recording :mod:`cortexlink.io.importers` reads
        Imported recordings go through a default extractor (nothing to compare with).
    realtime : bool
        Pace chunks to the wall clock (times ``speed``) instead of as fast as possible.
    compare : bool
        Compare with the recorded features and decoder outputs.
    seconds : float, optional
        Replay only the first ``seconds`` of the recording.
    format : str, optional
        Importer format (see :data:`cortexlink.io.importers.FORMATS`) to force.
    chunk_ms : float
        Chunk length for sources without a recorded chunking (imported files).

    Returns
    -------
    ReplayResult
    """
    from tqdm.auto import tqdm

    from cortexlink.dsp import FeatureExtractor

    path = Path(path)
    kind, src = _source(path, format)
    if kind == "import":
        cmap, fs = src.channel_map, float(src.fs_hz)
        dsp = {"bin_ms": 1000.0 * max(1, round(0.02 * fs)) / fs}     # ~20 ms, a whole number of samples
        chunks = src.iter_chunks(max(1, int(round(chunk_ms * fs / 1000.0))))
        n_total = None
    elif kind == "session":
        man = src.manifest
        if "raw" not in src.streams:
            raise ValidationError(f"{path}: the session has no raw stream to replay (recorded without raw)")
        cmap, fs = src.channel_map, float(src.fs_hz)
        dsp = dict(man.get("dsp") or {})
        chunks = src.iter_chunks("raw")
        n_total = src.manifest.get("streams", {}).get("raw", {}).get("records")
    else:
        from cortexlink.io.nwb import iter_nwb_chunks, read_nwb_streams
        nwb = read_nwb_streams(src)
        cmap, fs = nwb["channel_map"], float(nwb["fs_hz"])
        dsp = dict(nwb.get("dsp") or (nwb.get("manifest") or {}).get("dsp") or {})
        chunks = iter_nwb_chunks(src, int(round(fs * (dsp.get("bin_ms", 20.0) / 1000.0))))
        n_total = None
    if cmap is None or not fs:
        raise ValidationError(f"{path}: the recording names no channel map or sampling rate; cannot replay")
    dsp.pop("fs_hz", None)
    for k in ("band_hz", "lfp_band_hz"):
        if dsp.get(k) is not None:
            dsp[k] = tuple(dsp[k])
    if "features" in dsp:
        dsp["features"] = tuple(dsp["features"])
    fx = FeatureExtractor(cmap, fs, **dsp)
    stop = None if seconds is None else int(round(seconds * fs))
    feats_s, feats = [], []
    t0 = time.perf_counter()
    n_samples = 0
    bar = tqdm(total=n_total, desc="replay", unit="chunk", disable=not progress)
    try:
        for ch in _paced(chunks, fs, realtime, speed):
            if stop is not None and ch.start_sample >= stop:
                break
            bf = fx.step(ch)
            n_samples += ch.n_samples
            if bf.n_bins:
                feats_s.append(np.asarray(bf.bin_start_samples))
                feats.append(np.asarray(bf.data))
            bar.update(1)
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    F_s = np.concatenate(feats_s) if feats_s else np.zeros(0, np.int64)
    F = np.concatenate(feats) if feats else np.zeros((0, len(fx.feature_names)), np.float32)
    out = ReplayResult(features={"samples": F_s, "data": F, "names": fx.feature_names},
                       samples=n_samples, seconds=n_samples / fs, wall_s=wall,
                       speed_x=(n_samples / fs) / wall if wall > 0 else float("inf"), compare={})
    if kind == "session":
        out["decoder"] = _replay_decoders(src, F_s, F, fx.bin_width_samples)
        if compare:
            rs, rf = src.read_array("features", stop_sample=stop)
            out["compare"]["features"] = _compare(rs, rf, F_s, F)
            if out["decoder"] is not None and "decoder" in src.streams:
                ds, dr = src.read_array("decoder", stop_sample=None if stop is None else stop + 1)
                rec_cols = src.columns("decoder")   # compare the replayed columns by name
                keep = [rec_cols.index(c) for c in out["decoder"]["columns"] if c in rec_cols]
                out["compare"]["decoder"] = _compare(ds, dr[:, keep], out["decoder"]["samples"], out["decoder"]["data"])
    elif kind == "nwb" and compare and nwb.get("features") is not None:
        ns, nd, _names, _w = nwb["features"]
        if stop is not None:
            keep = ns < stop
            ns, nd = ns[keep], nd[keep]
        out["compare"]["features"] = _compare(ns, nd, F_s, F)
    if kind == "import":
        src.close()
    logger.info("replayed %s: %.1f s of data in %.2f s (%.1fx)", path, out["seconds"], wall, out["speed_x"])
    return out


def _compare(rec_s: np.ndarray, rec: np.ndarray, new_s: np.ndarray, new: np.ndarray) -> dict:
    """Rows of ``new`` at the sample indices of ``rec``: how many match exactly (NaN == NaN)."""
    common, ir, inew = np.intersect1d(rec_s, new_s, return_indices=True)
    a = np.asarray(rec[ir], dtype=np.float64)
    b = np.asarray(new[inew], dtype=np.float64)
    if a.shape[1:] != b.shape[1:]:
        return {"rows_recorded": int(rec_s.size), "rows_compared": 0, "equal": False,
                "reason": f"column count differs: recorded {a.shape[1:]}, replayed {b.shape[1:]}"}
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)
    row_eq = np.all(diff == 0.0, axis=1) if a.size else np.zeros(0, bool)
    return {"rows_recorded": int(rec_s.size), "rows_compared": int(common.size), "rows_equal": int(row_eq.sum()),
            "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "equal": bool(common.size == rec_s.size and row_eq.all())}


def _replay_decoders(src: Any, F_s: np.ndarray, F: np.ndarray, width: int) -> dict | None:
    """Step the recorded decoders over the closed-loop blocks' bins as the live session did."""
    from cortexlink.decoders import load

    events = src.events()
    starts = [e for e in events if e["kind"] == "block_start"]
    ends = {e["name"]: e["sample"] for e in events if e["kind"] == "block_end"}
    if "decoder" not in src.streams:
        return None
    dec_s, _rows = src.read_array("decoder")
    index = {int(s): i for i, s in enumerate(F_s)}
    out_s, out = [], []
    cache: dict[str, Any] = {}
    for b in starts:
        if b.get("mode") != "closed" or not b.get("decoder_file"):
            continue
        lo, hi = b["sample"], ends.get(b["name"], np.iinfo(np.int64).max)
        cols = np.asarray(b["feature_columns"], dtype=np.intp)

        def get(rel: str | None) -> Any:
            if rel is None:
                return None
            if rel not in cache:
                cache[rel] = load(src.path / rel)
            return cache[rel]

        dec = get(b["decoder_file"])
        clk = get(b.get("click_decoder_file"))
        dec.reset_state()
        if clk is not None:
            clk.reset_state()
        for s in dec_s[(dec_s > lo) & (dec_s <= hi)]:
            i = index.get(int(s) - width)
            x = np.asarray(F[i, cols], dtype=np.float64) if i is not None else np.full(cols.size, np.nan)
            v = np.asarray(dec.step(x), dtype=float).reshape(-1)[:2]
            p = float(clk.step(x).proba) if clk is not None else float("nan")
            out_s.append(int(s))
            out.append((v[0], v[1], p))
    return {"samples": np.asarray(out_s, np.int64), "data": np.asarray(out, np.float64).reshape(-1, 3),
            "columns": ["vx", "vy", "click_proba"]}
