"""``cortexlink demo``: stream a simulated implant through real-time feature extraction.

Until the closed-loop session exists this is the main job: it streams simulated
broadband data chunk by chunk (as a live implant would deliver it), extracts
threshold crossings and spike-band power, prints a summary and writes a run folder
with the features, a summary JSON and a PNG figure.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="stream a simulated implant through feature extraction (the main job)",
                       description="Streams a simulated high-channel-count implant through cortexlink's "
                                   "real-time feature chain (band-pass, common-average reference, threshold "
                                   "crossings, spike-band power, 20 ms bins), then prints a summary and "
                                   "writes a run folder with features, summary.json and demo.png.")
    p.add_argument("--channels", type=int, default=1024, help="number of electrodes (default: 1024)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of data to stream (default: 10)")
    p.add_argument("--chunk-ms", type=float, default=10.0, help="chunk size delivered by the implant (default: 10 ms)")
    p.add_argument("--seed", type=int, default=0, help="simulator seed (default: 0)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="parent folder of the run folder (default: runs/)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from cortexlink.core.types import BinnedFeatures
    from cortexlink.core.validation import check_positive
    from cortexlink.dsp import FeatureExtractor
    from cortexlink.quality.figures import feature_overview
    from cortexlink.sim import SimulatedImplant

    n_ch = check_positive("--channels", args.channels, integer=True)
    seconds = check_positive("--seconds", args.seconds)
    chunk_ms = check_positive("--chunk-ms", args.chunk_ms)

    implant = SimulatedImplant(n_channels=n_ch, seed=args.seed)
    fs = implant.config.fs_hz
    fx = FeatureExtractor(implant.channel_map, fs_hz=fs)
    chunk_samples = max(1, int(round(chunk_ms * fs / 1000)))
    n_total = int(round(seconds * fs))

    # Warm-up: compiles the numba kernels (cached on disk after the first run) on a throwaway extractor.
    warm = FeatureExtractor(implant.channel_map, fs_hz=fs)
    warm.step(SimulatedImplant(n_channels=n_ch, seed=args.seed + 1).read(chunk_samples))

    run_dir = args.out / (_dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-demo-{n_ch}ch")
    run_dir.mkdir(parents=True, exist_ok=True)

    parts = []
    sim_s = dsp_s = 0.0
    done = 0
    with tqdm(total=n_total, unit="samples", unit_scale=True, desc=f"{n_ch} ch", disable=args.no_progress,
              file=sys.stderr) as bar:
        while done < n_total:
            n = min(chunk_samples, n_total - done)
            t0 = time.perf_counter()
            chunk = implant.read(n)
            t1 = time.perf_counter()
            out = fx.step(chunk)
            t2 = time.perf_counter()
            sim_s += t1 - t0
            dsp_s += t2 - t1
            if out.n_bins:
                parts.append(out)
            done += n
            bar.update(n)
    features = BinnedFeatures.concat(parts)
    gt = implant.ground_truth()

    tx = features.select("tx")
    valid_tx = np.asarray(tx.valid)
    counts = np.where(valid_tx, np.nan_to_num(np.asarray(tx.data, float)), 0.0)
    seconds_valid = valid_tx.sum(axis=0) * features.bin_width_s
    rate_hz = np.divide(counts.sum(axis=0), seconds_valid, out=np.full(n_ch, np.nan), where=seconds_valid > 0)
    bad = np.asarray(fx.bad_channels_, bool)
    true_bad = set(int(c) for c in gt.dead_channels) | set(int(c) for c in gt.saturating_channels)
    found_bad = set(int(c) for c in np.flatnonzero(bad))
    noise = np.asarray(fx.noise_rms_uv_, float)

    summary = {
        "channels": n_ch, "seconds": seconds, "fs_hz": fs, "chunk_ms": chunk_ms, "seed": args.seed,
        "n_bins": features.n_bins, "bin_ms": features.bin_width_s * 1e3,
        "dsp_realtime_factor": seconds / dsp_s, "sim_realtime_factor": seconds / sim_s,
        "loop_realtime_factor": seconds / (sim_s + dsp_s),
        "crossing_rate_hz": {"median": float(np.nanmedian(rate_hz)), "p10": float(np.nanpercentile(rate_hz, 10)),
                             "p90": float(np.nanpercentile(rate_hz, 90))},
        "noise_rms_uv_median": float(np.nanmedian(noise[~bad])) if (~bad).any() else None,
        "bad_channels_found": sorted(found_bad), "bad_channels_simulated": sorted(true_bad),
        "bad_channels_missed": sorted(true_bad - found_bad), "bad_channels_extra": sorted(found_bad - true_bad),
        "gaps": len(features.gaps),
    }
    np.savez_compressed(run_dir / "features.npz", data=np.asarray(features.data),
                        bin_start_samples=np.asarray(features.bin_start_samples),
                        valid=np.asarray(features.valid), feature_names=np.asarray(features.feature_names))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    png = feature_overview(features, implant.channel_map, noise, bad, run_dir / "demo.png",
                           title=f"cortexlink demo: {n_ch}-channel simulated implant, {seconds:g} s")

    print(f"\ncortexlink demo — {n_ch}-channel simulated implant, {seconds:g} s at {fs / 1000:g} kHz, "
          f"{chunk_ms:g} ms chunks")
    print(f"  feature extraction : {summary['dsp_realtime_factor']:8.1f}x real time on one core "
          f"({n_ch * summary['dsp_realtime_factor']:,.0f} channels sustainable)")
    print(f"  simulator          : {summary['sim_realtime_factor']:8.1f}x real time")
    print(f"  bins               : {features.n_bins} x {features.n_features} features "
          f"({summary['bin_ms']:g} ms bins)")
    cr = summary["crossing_rate_hz"]
    print(f"  crossing rate      : median {cr['median']:.1f} Hz (p10 {cr['p10']:.1f}, p90 {cr['p90']:.1f})")
    print(f"  noise RMS          : median {summary['noise_rms_uv_median']:.1f} µV")
    print(f"  bad channels found : {len(found_bad)} {sorted(found_bad)} "
          f"(simulated dead/saturating: {len(true_bad)}, missed {len(summary['bad_channels_missed'])}, "
          f"extra {len(summary['bad_channels_extra'])})")
    print(f"  run folder         : {run_dir}  (summary.json, features.npz, {png.name})")
    return 0
