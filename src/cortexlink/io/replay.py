"""Replay a recording through the same pipeline: raw chunks → features → decoders.

:func:`replay` reads the raw stream of a session folder (or an NWB file written by
``cortexlink export``), builds a :class:`~cortexlink.dsp.FeatureExtractor` with the recorded
parameters and streams the samples through it, at real time or as fast as possible. For a
session folder it also loads the decoders as they went live (``decoders/*.npz``, each refused
unless its SHA-256 is the one recorded when it went live) and steps them on the same bins the live
session did (closed-loop blocks, state reset at each block start), then compares everything with
what the live session recorded: features bin by bin, decoded velocity and click probability row
by row.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cortexlink.core.errors import ValidationError

logger = logging.getLogger(__name__)

__all__ = ["replay", "ReplayResult", "WARMUP_S"]

#: A recording begun mid-session (e.g. from the operator UI) starts its raw data where the live
#: filters already had a history: its first bins differ while the replayed filters warm up, and
#: are not compared. How long they differ depends on where the recording starts (measured on 140
#: start points of a simulated 24-channel session in 20 ms chunks: median 0.16 s, 95th percentile
#: 0.26 s, at most 0.42 s, after which every row is bit-identical); 0.25 s failed 9 of them.
WARMUP_S = 0.5


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
    speed : float
        With ``realtime``: the pace, a number > 0 (2: twice real time).
    compare : bool
        Compare with the recorded features and decoder outputs.
    seconds : float, optional
        Replay only the first ``seconds`` of the recording (a number > 0).
    format : str, optional
        Importer format (see :data:`cortexlink.io.importers.FORMATS`) to force.
    chunk_ms : float
        Chunk length for sources without a recorded chunking (imported files).

    Returns
    -------
    ReplayResult
    """
    from tqdm.auto import tqdm

    from cortexlink.core.validation import check_positive
    from cortexlink.dsp import FeatureExtractor

    speed = check_positive("speed", speed)
    if seconds is not None:
        seconds = check_positive("seconds", seconds)
    chunk_ms = check_positive("chunk_ms", chunk_ms)
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
    recal: list[dict] = []
    notes: list[str] = []
    mid_session = False
    if kind == "session":
        recal, mid_session = _recorded_calibration(src, fx, notes)
    stop = None if seconds is None else int(round(seconds * fs))
    clean = _stim_cleaner(src, cmap.n_channels, fs, notes) if kind == "session" else None
    feats_s, feats = [], []
    t0 = time.perf_counter()
    n_samples = 0
    bar = tqdm(total=n_total, desc="replay", unit="chunk", disable=not progress)
    try:
        pending = None
        first = end = None
        for ch in _paced(chunks, fs, realtime, speed):
            if stop is not None and ch.start_sample >= stop:
                break
            first = ch.start_sample if first is None else first
            end = ch.end_sample
            if recal and ch.start_sample >= recal[0]["armed_at_sample"]:
                pending = recal.pop(0)                  # the operator's recalibration, where the live dsp began it
                fx.recalibrate()
                cal_before = fx.calibration_ if fx.is_calibrated else None
            bf = fx.step(ch if clean is None else clean(ch))
            if pending is not None and fx.is_calibrated and fx.calibration_ is not cal_before:
                fx.set_calibration(_calibration(pending, fx.n_channels))   # the live figures, exactly
                pending = None
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
                       speed_x=(n_samples / fs) / wall if wall > 0 else float("inf"), compare={}, notes=notes)
    if kind == "session":
        W = fx.bin_width_samples
        out["decoder"] = _replay_decoders(src, F_s, F, W)
        out["raw_samples"] = [first, end]
        if compare:
            # a recording begun mid-session: its first bins differ while the replayed filters warm up
            lo = first + int(round(WARMUP_S * fs)) if (mid_session and first is not None) else None
            hi = None if (stop is not None or end is None) else end       # the raw data end here
            rs, rf = src.read_array("features", stop_sample=stop)
            out["compare"]["features"] = _compare(rs, rf, F_s, F, lo=lo, hi=None if hi is None else hi - W + 1)
            if out["decoder"] is not None and "decoder" in src.streams:
                ds, dr = src.read_array("decoder", stop_sample=None if stop is None else stop + 1)
                rec_cols = src.columns("decoder")   # compare the replayed columns by name
                keep = [rec_cols.index(c) for c in out["decoder"]["columns"] if c in rec_cols]
                out["compare"]["decoder"] = _compare(ds, dr[:, keep], out["decoder"]["samples"], out["decoder"]["data"],
                                                     lo=None if lo is None else lo + W, hi=None if hi is None else hi + 1)
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


def _calibration(d: dict, n: int) -> Any:
    """A :class:`~cortexlink.dsp.Calibration` from what the dsp node published (``<dsp>/calibration``)."""
    from cortexlink.dsp import Calibration

    def arr(key: str) -> np.ndarray:
        v = d.get(key)
        if not isinstance(v, list) or len(v) != n:
            raise ValidationError(f"the recorded dsp calibration's {key} must list {n} values")
        return np.asarray([np.nan if x is None else x for x in v], np.float64)

    def mask(key: str) -> np.ndarray:
        m = np.zeros(n, bool)
        idx = np.asarray(d.get(key) or [], np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValidationError(f"the recorded dsp calibration's {key} names channels outside 0..{n - 1}")
        m[idx] = True
        return m

    return Calibration(noise_rms_uv=arr("noise_rms_uv"), thresholds_uv=arr("thresholds_uv"), bad=mask("bad"),
                       flat=mask("flat"), saturated=mask("saturated"), nonfinite=mask("nonfinite"),
                       n_samples=int(d.get("n_samples") or 0))


def _recorded_calibration(src: Any, fx: Any, notes: list[str]) -> tuple[list[dict], bool]:
    """Put the calibration in force when the recording began (a recording started mid-session, e.g.
    from the operator UI) into ``fx``; return the later recalibrations to replay (each where the
    live dsp began it) and whether the recording began mid-session. A recording without one
    calibrates on its first ``calibration_s``, as the live session did when it recorded from its
    start."""
    cal0 = src.manifest.get("dsp_calibration")
    if not isinstance(cal0, dict):
        return [], False
    if cal0.get("has_lrr_matrix"):
        notes.append("recorded mid-session with the 'lrr' reference, whose matrix is not recorded: replay "
                     "calibrates itself and its features may differ")
        return [], True
    try:
        fx.set_calibration(_calibration(cal0, fx.n_channels))
        later = [e for e in src.events("dsp_calibration")
                 if int(e.get("version") or 0) > int(cal0.get("version") or 0)
                 and isinstance(e.get("armed_at_sample"), int)]
        for e in later:
            _calibration(e, fx.n_channels)
    except (ValidationError, TypeError, ValueError) as exc:
        raise ValidationError(f"{src.path / 'manifest.json'}: {exc}; `cortexlink sessions verify {src.path}` "
                              "checks the recording") from None
    notes.append(f"recorded mid-session: the live dsp calibration (version {cal0.get('version')}) was used"
                 + (f", and {len(later)} recalibration(s) replayed" if later else ""))
    return sorted(later, key=lambda e: e["armed_at_sample"]), True


def _compare(rec_s: np.ndarray, rec: np.ndarray, new_s: np.ndarray, new: np.ndarray, *, lo: int | None = None,
             hi: int | None = None) -> dict:
    """Rows of ``new`` at the sample indices of ``rec``: how many match exactly (NaN == NaN).

    Recorded rows before ``lo`` (the filters' warm-up of a recording begun mid-session) and from
    ``hi`` on (past the end of the raw data, e.g. after ``recover`` cut it) cannot be reproduced:
    they are counted (``rows_warmup``, ``rows_after_raw_end``), not compared."""
    n_rec = int(rec_s.size)
    keep = np.ones(n_rec, bool)
    n_warm = n_after = 0
    if lo is not None:
        n_warm = int((rec_s < lo).sum())
        keep &= rec_s >= lo
    if hi is not None:
        n_after = int((keep & (rec_s >= hi)).sum())
        keep &= rec_s < hi
    rec_s, rec = rec_s[keep], rec[keep]
    extra = {"rows_warmup": n_warm, "rows_after_raw_end": n_after}
    common, ir, inew = np.intersect1d(rec_s, new_s, return_indices=True)
    a = np.asarray(rec[ir], dtype=np.float64)
    b = np.asarray(new[inew], dtype=np.float64)
    if a.shape[1:] != b.shape[1:]:
        return {"rows_recorded": n_rec, "rows_compared": 0, "equal": False, **extra,
                "reason": f"column count differs: recorded {a.shape[1:]}, replayed {b.shape[1:]}"}
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)
    row_eq = np.all(diff == 0.0, axis=1) if a.size else np.zeros(0, bool)
    return {"rows_recorded": n_rec, "rows_compared": int(common.size), "rows_equal": int(row_eq.sum()),
            "max_abs_diff": float(diff.max()) if diff.size else 0.0, **extra,
            "equal": bool(common.size == rec_s.size and row_eq.all())}


def _load_decoder(folder: Path, rel: str, block: str, sha256: str | None) -> Any:
    """A recorded decoder file; a missing or damaged one, or one whose SHA-256 is not the one
    recorded when it went live (``sha256``, from the manifest), is a clear error naming it."""
    from cortexlink.core.errors import CortexlinkError
    from cortexlink.decoders import load
    from cortexlink.io.session_log import CorruptSessionError, sha256_file

    path = folder / rel
    hint = f"`cortexlink sessions verify {folder}` checks every file of the recording"
    if not path.is_file():
        raise CorruptSessionError(f"{path}: the decoder file that block {block!r} used is missing; {hint}")
    try:
        dec = load(path)
    except CortexlinkError as exc:
        raise CorruptSessionError(f"{path}: the decoder file that block {block!r} used cannot be loaded ({exc}); "
                                  f"{hint}") from None
    except Exception as exc:  # noqa: BLE001 - BadZipFile, zlib.error, EOFError, KeyError...: a damaged file
        raise CorruptSessionError(f"{path}: the decoder file that block {block!r} used is damaged "
                                  f"({type(exc).__name__}: {exc}); {hint}") from None
    if sha256 is None:
        raise CorruptSessionError(f"{path}: the recording has no SHA-256 of the decoder file that block {block!r} "
                                  "used, so it cannot be replayed as exactly that decoder")
    if sha256_file(path) != sha256:
        raise CorruptSessionError(f"{path}: the decoder file is not the one that block {block!r} used (its SHA-256 "
                                  f"differs from the one recorded when it went live); {hint}")
    return dec


def _replay_decoders(src: Any, F_s: np.ndarray, F: np.ndarray, width: int) -> dict | None:
    """Step the recorded decoders over the closed-loop blocks' bins as the live session did (with
    the bias correction, speed gain and click freeze each block's decoder went live with)."""
    from cortexlink.decoders.speed_gain import BiasCorrector, SpeedGain, output_stage

    events = src.events()
    starts = [e for e in events if e["kind"] == "block_start"]
    ends = {e["name"]: e["sample"] for e in events if e["kind"] == "block_end"}
    if "decoder" not in src.streams:
        return None
    dec_s, _rows = src.read_array("decoder")
    index = {int(s): i for i, s in enumerate(F_s)}
    out_s, out = [], []
    cache: dict[str, Any] = {}
    # the checksums recorded as each decoder went live (the manifest's, else the decoder events')
    sums = {e["file"]: e.get("sha256") for e in events if e["kind"] == "decoder" and isinstance(e.get("file"), str)}
    sums.update({rel: d.get("sha256") for rel, d in (src.manifest.get("decoders") or {}).items()})

    def get(rel: str | None, block: str) -> Any:
        if rel is None:
            return None
        if rel not in cache:
            cache[rel] = _load_decoder(src.path, rel, block, sums.get(rel))
        return cache[rel]

    for b in starts:
        if b.get("mode") != "closed" or not b.get("decoder_file"):
            continue
        lo, hi = b["sample"], ends.get(b["name"], np.iinfo(np.int64).max)
        cols = np.asarray(b["feature_columns"], dtype=np.intp)
        dec = get(b["decoder_file"], b["name"])
        clk = get(b.get("click_decoder_file"), b["name"])
        gain = SpeedGain.from_dict(b.get("speed_gain"))
        freeze = b.get("click_freeze_proba")
        bias = BiasCorrector.from_dict(b.get("bias_correction"))     # fresh at each block, as live
        dec.reset_state()
        if clk is not None:
            clk.reset_state()
        for s in dec_s[(dec_s > lo) & (dec_s <= hi)]:
            i = index.get(int(s) - width)
            x = np.asarray(F[i, cols], dtype=np.float64) if i is not None else np.full(cols.size, np.nan)
            cs = clk.step(x) if clk is not None else None
            v, _ = output_stage(np.asarray(dec.step(x), dtype=float).reshape(-1)[:2], gain, cs, freeze, bias)
            p = float(cs.proba) if cs is not None else float("nan")
            out_s.append(int(s))
            out.append((v[0], v[1], p))
    return {"samples": np.asarray(out_s, np.int64), "data": np.asarray(out, np.float64).reshape(-1, 3),
            "columns": ["vx", "vy", "click_proba"]}


def _stim_cleaner(src: Any, n_channels: int, fs: float, notes: list[str]) -> Any:
    """For a recording made through stimulation: the live dsp's artefact removal, fed the recorded
    delivered pulses as their chunks come (None when the recording has none)."""
    art = src.manifest.get("stim_artifacts")
    if not art or "stim_pulses" not in src.streams:
        return None
    params = {k: v for k, v in art.items() if k != "compensate"}
    if params.get("mode", "blank") == "none":
        return None
    from cortexlink.core.pulses import PULSE_DTYPE
    from cortexlink.dsp.artifacts import StimArtifactRemover

    _, rows = src.read_array("stim_pulses")
    cols = src.columns("stim_pulses")
    pulses = np.zeros(len(rows), PULSE_DTYPE)
    for name in PULSE_DTYPE.names:
        pulses[name] = rows[:, cols.index(name)] if name != "cathodic_first" else rows[:, cols.index(name)] > 0.5
    pulses = pulses[np.argsort(pulses["time_s"], kind="stable")]
    remover = StimArtifactRemover(n_channels, fs, **params)
    pos = [0]
    if art.get("compensate"):
        notes.append("the live dsp scaled features for blanked samples (artifacts.compensate); replay does not")
    notes.append(f"stimulation: {len(pulses)} delivered pulses fed to the artefact removal ({params.get('mode')})")

    def clean(ch: Any) -> Any:
        # as the live dsp was told: each pulse with the chunk it was delivered in (the simulated
        # stimulator hands over the pulses of [chunk start, chunk end) before the chunk is read)
        i = int(np.searchsorted(pulses["time_s"], ch.end_sample / fs, side="left"))
        if i > pos[0]:
            remover.schedule(pulses[pos[0]:i])
            pos[0] = i
        return remover.step(ch)

    return clean
