"""``cortexlink bench codec --near-lossless``: bits per sample against what the BCI still does
with the data, for a sweep of error bounds of the near-lossless codec
(:mod:`cortexlink.codec.nearlossless`; bound 0 is the lossless codec).

For each bound, the data are coded, decoded, checked against the bound sample by sample, and:

- **simulated implant** (:class:`cortexlink.sim.SimulatedImplant`, µV per count from its channel
  map): spike detection recall and precision against the simulator's ground truth, per SNR
  group, with the DSP chain of ``bench dsp`` (:class:`cortexlink.dsp.FeatureExtractor`,
  threshold crossings, 0.5 s calibration, a true spike found when a crossing on its channel lies
  within 0.4 ms; :func:`cortexlink.bench.dsp.score_detection`). Coded in 1 ms frames, as it
  streams.
- **N1 recordings** (the WAV folder of ``bench codec``): threshold-crossing agreement between
  decoded and original data: the crossings of the same chain on each (gain 1: the files carry no
  µV scale, so the bounds here are in file counts; the files hold a 10-bit ADC scaled into int16,
  one ADC step ~64 counts), the relative error of the total crossing count, the median per
  channel ``|rate_decoded - rate_original| / rate_original``, and the share of the original's
  crossings found again within 0.4 ms (``crossing_recall``) and of the decoded ones that were in
  the original (``crossing_precision``). Each file coded on its own in 1 s frames, as ``bench
  codec`` does.

``bits_per_sample`` = 8 x coded bytes / (samples x channels), frame and near-lossless prefixes
included. With ``closed_loop=True`` also closed-loop Webgrid bps with the raw chunks through a
near-lossless link node in the session's graph (:mod:`cortexlink.bench.codec_loop`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError

from .dsp import CALIBRATION_S, TOLERANCE_S, machine_info, score_detection

SIM_ERRORS_UV = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
N1_ERRORS_COUNTS = (0, 32, 64, 128, 320, 640, 1280)
N1_RESYNC_FRAMES = 8
SIM_RESYNC_FRAMES = 100


def _extractor(cm: Any, fs: float):
    from cortexlink.dsp import FeatureExtractor

    bin_ms = max(1, round(20.0 * fs / 1000.0)) * 1000.0 / fs
    return FeatureExtractor(cm, fs_hz=fs, bin_ms=bin_ms, calibration_s=CALIBRATION_S, keep_events=True)


def crossings(data: np.ndarray, cm: Any, fs: float, step_s: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Threshold-crossing events (samples, channels) of ``data`` by the DSP chain of ``bench dsp``
    (a causal, chunk-size-invariant chain: large chunks give the same events as 1 ms ones)."""
    from cortexlink.core.types import Chunk

    fx = _extractor(cm, fs)
    step = max(1, int(round(step_s * fs)))
    for a in range(0, data.shape[0], step):
        fx.step(Chunk(np.ascontiguousarray(data[a:a + step]), fs, a))
    ev = fx.events_
    return np.asarray(ev.sample_idx, np.int64), np.asarray(ev.channel_idx, np.int64)


def implant(channels: int, seed: int) -> Any:
    """The simulated implant of the curve (below 16 channels: one dead channel, none saturating)."""
    from cortexlink.sim import SimulatedImplant

    extra = {} if channels >= 16 else {"n_dead": min(1, channels), "n_saturating": 0}
    return SimulatedImplant(n_channels=channels, seed=seed, **extra)


def _check_errors(name: str, values: Sequence[float]) -> list[float]:
    vals = [float(v) for v in values]
    if not vals or any(not np.isfinite(v) or v < 0 for v in vals):
        raise ConfigError(f"{name} must be a non-empty list of numbers >= 0; got {list(values)!r}")
    return sorted(set(vals))


def sim_curve(errors_uv: Sequence[float] = SIM_ERRORS_UV, *, channels: int = 256, seconds: float = 5.0,
              seed: int = 0, progress: bool = False) -> dict:
    """The curve on simulated data: per bound, bits per sample, the largest error, and spike
    detection against the ground truth."""
    from cortexlink.codec.nearlossless import decode_array_nl, encode_array_nl

    errors = _check_errors("errors_uv", errors_uv)
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 65535:
        raise ConfigError(f"channels must be an integer in [1, 65535]; got {channels!r}")
    if not isinstance(seconds, (int, float)) or not CALIBRATION_S + 0.1 < seconds <= 600:
        raise ConfigError(f"seconds must be in ({CALIBRATION_S + 0.1:g}, 600]; got {seconds!r}")
    imp = implant(channels, seed)
    fs = float(imp.config.fs_hz)
    x = np.ascontiguousarray(imp.read_seconds(seconds).data)
    gt = imp.ground_truth()
    cm = imp.channel_map
    gain = np.asarray(cm.gain_uv, float)
    exclude = list(gt.dead_channels) + list(gt.saturating_channels)
    spike_ch = np.asarray(gt.unit_channel)[gt.spike_units]
    spike_snr = np.asarray(gt.unit_snr)[gt.spike_units]
    chunk = max(1, int(round(fs / 1000)))
    rows = []
    for e in errors:
        if progress:
            print(f"  sim {channels} ch: max error {e:g} µV ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        blob = encode_array_nl(x, max_error_uv=e, uv_per_count=gain, chunk_samples=chunk,
                               resync_frames=SIM_RESYNC_FRAMES)
        t_enc = time.perf_counter() - t0
        y = decode_array_nl(blob)
        err_uv = np.abs(y.astype(np.int64) - x.astype(np.int64)) * gain
        ev_s, ev_c = crossings(y, cm, fs)
        det = score_detection(ev_s, ev_c, gt.spike_samples, spike_ch, spike_snr,
                              tol_samples=int(round(TOLERANCE_S * fs)), exclude_channels=exclude,
                              t_min=int((CALIBRATION_S + 0.01) * fs), t_max=int((seconds - 0.01) * fs))
        rows.append({"max_error_uv": e, "bits_per_sample": round(8 * len(blob) / x.size, 4),
                     "ratio": round(x.nbytes / len(blob), 4), "max_abs_error_uv": float(err_uv.max()),
                     "rms_error_uv": round(float(np.sqrt(np.mean(err_uv ** 2))), 4),
                     "bound_held": bool(err_uv.max() <= e), "encode_mb_s": round(x.nbytes / t_enc / 1e6, 2),
                     **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in det.items()}})
    return {"dataset": f"sim_{channels}ch_{fs / 1000:g}khz", "channels": channels, "seconds": seconds,
            "seed": seed, "fs_hz": fs, "gain_uv": float(np.median(gain)), "frame_ms": chunk * 1000 / fs,
            "rows": rows}


def n1_curve(folder: Path, errors_counts: Sequence[float] = N1_ERRORS_COUNTS, *, max_files: int | None = None,
             progress: bool = False) -> dict:
    """The curve on the N1 files: per bound (in file counts), bits per sample and threshold-crossing
    agreement between decoded and original data."""
    from cortexlink.codec.nearlossless import decode_array_nl, encode_array_nl
    from cortexlink.core.types import ChannelMap

    from .codec import read_wav_folder

    errors = _check_errors("errors_counts", errors_counts)
    arrays, sizes, fs = read_wav_folder(Path(folder))
    arrays = arrays[:max_files] if max_files else arrays
    n = min(a.size for a in arrays)
    x = np.stack([a[:n] for a in arrays], axis=1)
    cm = ChannelMap.grid(x.shape[1], gain_uv=1.0)
    ref_s, ref_c = crossings(x, cm, fs)
    t_min, t_max = int((CALIBRATION_S + 0.01) * fs), int((n / fs - 0.01) * fs)
    keep = (ref_s >= t_min) & (ref_s < t_max)
    ref_counts = np.bincount(ref_c[keep], minlength=x.shape[1])
    frame = int(round(fs))
    total = sum(a.size for a in arrays)
    rows = []
    for e in errors:
        if progress:
            print(f"  n1 ({len(arrays)} files): max error {e:g} counts ...", file=sys.stderr, flush=True)
        blobs = [encode_array_nl(a, max_error_uv=e, uv_per_count=1.0, chunk_samples=frame,
                                 resync_frames=N1_RESYNC_FRAMES) for a in arrays]
        decoded = [decode_array_nl(b)[:, 0] for b in blobs]
        max_err = max(int(np.abs(d.astype(np.int64) - a.astype(np.int64)).max()) for d, a in zip(decoded, arrays))
        y = np.stack([d[:n] for d in decoded], axis=1)
        ev_s, ev_c = crossings(y, cm, fs)
        k2 = (ev_s >= t_min) & (ev_s < t_max)
        counts = np.bincount(ev_c[k2], minlength=x.shape[1])
        live = ref_counts > 0
        rel = np.abs(counts[live] - ref_counts[live]) / ref_counts[live]
        agree = score_detection(ev_s, ev_c, ref_s, ref_c, np.full(ref_s.size, 10.0),
                                tol_samples=int(round(TOLERANCE_S * fs)), t_min=t_min, t_max=t_max)
        packed = sum(len(b) for b in blobs)
        rows.append({"max_error_counts": e, "bits_per_sample": round(8 * packed / total, 4),
                     "ratio_vs_wav": round(sum(sizes[:len(arrays)]) / packed, 4), "max_abs_error_counts": max_err,
                     "bound_held": bool(max_err <= e),
                     "crossings": int(counts.sum()), "crossings_original": int(ref_counts.sum()),
                     "crossing_count_rel_error": round(abs(int(counts.sum()) - int(ref_counts.sum()))
                                                       / max(1, int(ref_counts.sum())), 4),
                     "crossing_rate_rel_error_median": round(float(np.median(rel)), 4) if rel.size else None,
                     "crossing_recall": agree["recall_snr_ge_5"], "crossing_precision": agree["precision"]})
    return {"dataset": "n1_broadband", "folder": str(folder), "n_files": len(arrays), "fs_hz": fs,
            "seconds_for_crossings": round(n / fs, 3), "error_unit": "file counts (one ADC step ~64 counts)",
            "rows": rows}


def run(*, data: Path | None = None, use_default_data: bool = True, errors_uv: Sequence[float] = SIM_ERRORS_UV,
        n1_errors_counts: Sequence[float] = N1_ERRORS_COUNTS, channels: int = 256, seconds: float = 5.0,
        seed: int = 0, closed_loop: bool = False, loop_errors_uv: Sequence[float] | None = None,
        progress: bool = False) -> dict:
    """The near-lossless curve on simulated data and, when found, the N1 files; with
    ``closed_loop``, closed-loop Webgrid bps per bound in ``loop_errors_uv``."""
    from .codec import default_n1_folder

    folder = data if data is not None else (default_n1_folder() if use_default_data else None)
    sim = sim_curve(errors_uv, channels=channels, seconds=seconds, seed=seed, progress=progress)
    curves = [sim]
    if folder is not None:
        curves.append(n1_curve(Path(folder), n1_errors_counts, progress=progress))
    out = {"bench": "codec-near-lossless", "machine": machine_info(),
           "settings": {"errors_uv": list(errors_uv), "n1_errors_counts": list(n1_errors_counts),
                        "channels": channels, "seconds": seconds, "seed": seed,
                        "tolerance_ms": TOLERANCE_S * 1e3, "calibration_s": CALIBRATION_S},
           "curves": curves}
    if closed_loop:
        from .codec_loop import LOOP_ERRORS_UV, loop_curve

        loop_errors = list(_check_errors("loop_errors_uv", loop_errors_uv or LOOP_ERRORS_UV))
        curves.append(loop_curve(loop_errors, seed=seed, progress=progress))
    else:
        out["not_measured"] = {"closed_loop_webgrid_bps": "run with --closed-loop (a demo session per bound)"}
    return out


def print_summary(result: dict, file: Any = None) -> None:
    """A table per dataset of a :func:`run` result."""
    out = file if file is not None else sys.stdout
    for c in result["curves"]:
        print(f"\n{c['dataset']}", file=out)
        if c["dataset"].startswith("closed_loop"):
            print(f"  {'max µV':>8}{'bits/smp':>10}{'max |e|':>9}{'bps':>8}{'accuracy':>10}", file=out)
            for r in c["rows"]:
                print(f"  {r['max_error_uv']:>8g}{_f(r['bits_per_sample']):>10}{r['max_abs_error_counts']!s:>9}"
                      f"{_f(r['webgrid_bps']):>8}{_f(r['webgrid_accuracy']):>10}", file=out)
        elif c["dataset"] == "n1_broadband":
            print(f"  {'max err':>8}{'bits/smp':>10}{'ratio':>8}{'max |e|':>9}{'xings':>8}{'count err':>11}"
                  f"{'x recall':>10}{'x prec':>8}", file=out)
            for r in c["rows"]:
                print(f"  {r['max_error_counts']:>8g}{r['bits_per_sample']:>10.3f}{r['ratio_vs_wav']:>8.3f}"
                      f"{r['max_abs_error_counts']:>9d}{r['crossings']:>8d}{r['crossing_count_rel_error']:>11.4f}"
                      f"{r['crossing_recall']:>10.4f}{r['crossing_precision']:>8.4f}", file=out)
        else:
            print(f"  {'max µV':>8}{'bits/smp':>10}{'ratio':>8}{'max |e| µV':>11}{'recall≥5':>10}{'recall3-5':>10}"
                  f"{'precision':>10}", file=out)
            for r in c["rows"]:
                print(f"  {r['max_error_uv']:>8g}{r['bits_per_sample']:>10.3f}{r['ratio']:>8.3f}"
                      f"{r['max_abs_error_uv']:>11.3f}{_f(r['recall_snr_ge_5']):>10}{_f(r['recall_snr_3_5']):>10}"
                      f"{_f(r['precision']):>10}", file=out)
    if "not_measured" in result:
        print("\nnot measured: closed-loop Webgrid bps (" + result["not_measured"]["closed_loop_webgrid_bps"] + ")",
              file=out)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def plot(result: dict, path: Path) -> Path:
    """Write the curve as a PNG: bits per sample against detection recall (simulated) and crossing
    agreement (N1)."""
    from cortexlink.core.outpath import check_output_file

    def is_png(p: Path) -> bool:
        try:
            return p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        except OSError:
            return False

    path = check_output_file(path, what="plot", overwrite=True, ours=is_png, ours_is="a PNG file")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["curves"]
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4.2), squeeze=False)
    for ax, c in zip(axes[0], curves):
        bps = [r["bits_per_sample"] for r in c["rows"]]
        if c["dataset"].startswith("closed_loop"):
            ax.plot(bps, [r["webgrid_bps"] for r in c["rows"]], "o-", label="Webgrid bps")
            labels = [f"{r['max_error_uv']:g} µV" for r in c["rows"]]
            ax.set_title(f"closed loop, simulated {c['channels']} ch")
            ax.set_ylabel("bits per second")
        elif c["dataset"] == "n1_broadband":
            ax.plot(bps, [r["crossing_recall"] for r in c["rows"]], "o-", label="crossings found again")
            ax.plot(bps, [1 - r["crossing_count_rel_error"] for r in c["rows"]], "s--",
                    label="1 - crossing count error")
            labels = [f"{r['max_error_counts']:g}" for r in c["rows"]]
            ax.set_title(f"N1 ({c['n_files']} files): bound in counts")
        else:
            ax.plot(bps, [r["recall_snr_ge_5"] for r in c["rows"]], "o-", label="recall, SNR >= 5")
            ax.plot(bps, [r["recall_snr_3_5"] for r in c["rows"]], "s-", label="recall, SNR 3-5")
            ax.plot(bps, [r["precision"] for r in c["rows"]], "^--", label="precision")
            labels = [f"{r['max_error_uv']:g} µV" for r in c["rows"]]
            ax.set_title(f"simulated {c['channels']} ch: bound in µV")
        first = ax.lines[0].get_ydata()
        for b, y, lab in zip(bps, first, labels):
            ax.annotate(lab, (b, 0.0 if y is None else y), textcoords="offset points", xytext=(0, -12),
                        ha="center", fontsize=7)
        ax.set_xlabel("bits per sample")
        if c["dataset"].startswith("closed_loop"):
            ax.set_ylim(bottom=0)
        else:
            ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(loc="center right", fontsize=8)
    fig.suptitle("cortexlink near-lossless codec: bits per sample vs what the BCI still detects")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
