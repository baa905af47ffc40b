"""``cortexlink demo``: the main job, a complete closed-loop session on a simulated implant.

By default it runs :data:`cortexlink.runtime.session.DEFAULT_SESSION`: a simulated participant
with a 1024-channel implant calibrates a ReFIT-Kalman decoder, plays two minutes of Webgrid and
ten moves of chess, and a run folder gets the session config, decoded traces, the PGN and an
HTML report with figures. ``--features`` instead streams the implant through feature extraction
only (threshold crossings and spike-band power, with a crossing raster and noise map).
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
    p = sub.add_parser("demo", help="run a complete closed-loop session on a simulated implant (the main job)",
                       description="Runs a complete closed-loop session: a simulated participant with a "
                                   "simulated 1024-channel implant calibrates (open loop, on Webgrid), a "
                                   "ReFIT-Kalman decoder is fitted, used in closed loop and refitted, then the "
                                   "participant plays two minutes of Webgrid (bits per second) and ten moves of "
                                   "chess. Prints a summary table and writes a run folder (session.yaml, "
                                   "traces, PGN, report.html with figures). --features runs the "
                                   "feature-extraction demo instead.")
    p.add_argument("--features", action="store_true",
                   help="stream the implant through feature extraction only (no decoder, no tasks)")
    p.add_argument("--session", type=Path, default=None, help="a session YAML to run instead of the built-in demo")
    p.add_argument("--channels", type=int, default=1024, help="number of electrodes (default: 1024; ignored with --session)")
    p.add_argument("--webgrid-s", type=float, default=None, help="seconds of Webgrid (default: 120)")
    p.add_argument("--chess-moves", type=int, default=None, help="participant moves of chess (default: 10)")
    p.add_argument("--seconds", type=float, default=10.0, help="with --features: seconds to stream (default: 10)")
    p.add_argument("--chunk-ms", type=float, default=10.0, help="chunk size delivered by the implant (default: 10 ms)")
    p.add_argument("--seed", type=int, default=0, help="simulator seed (default: 0)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="parent folder of the run folder (default: runs/)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    from cortexlink.cli.session import add_record_option, add_redis_option
    add_record_option(p)
    add_redis_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.features:
        return run_features(args)
    from cortexlink.cli.session import run_and_report
    from cortexlink.core.validation import check_positive
    from cortexlink.runtime.session import load_session

    if args.session is not None:
        cfg = load_session(args.session)
    else:
        cfg = load_session(None)
        cfg["seed"] = int(args.seed)
        cfg["implant"]["n_channels"] = check_positive("--channels", args.channels, integer=True)
        for b in cfg["blocks"]:
            if b.get("task") == "webgrid" and b["kind"] == "evaluation" and args.webgrid_s is not None:
                b["seconds"] = check_positive("--webgrid-s", args.webgrid_s)
            if b.get("task") == "chess" and args.chess_moves is not None:
                b["task_params"]["max_moves"] = check_positive("--chess-moves", args.chess_moves, integer=True)
        cfg = load_session(cfg)
    return run_and_report(cfg, args.out, progress=not args.no_progress, record=args.record, redis=args.redis)


def run_features(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from cortexlink.core.outpath import new_run_folder
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

    run_dir = new_run_folder(args.out, _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-demo-{n_ch}ch")

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
