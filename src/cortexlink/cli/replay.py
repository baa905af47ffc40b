"""``cortexlink replay``: stream a recording back through the pipeline and compare."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="stream a recording back through features and decoders",
                       description="Replays a session folder or an exported .nwb file through a feature "
                                   "extractor built with the recorded parameters (and, for a session folder, "
                                   "the decoders as they went live), at real time or as fast as possible, and "
                                   "compares features and decoder outputs with those of the live session.")
    p.add_argument("source", type=Path, help="session folder, .nwb file, or a lab recording (Blackrock, Intan, "
                   "Open Ephys, SpikeGLX, WAV, raw + sidecar: features only, nothing to compare with)")
    p.add_argument("--format", default=None, help="importer format to force (blackrock, intan, openephys, "
                   "spikeglx, nwb, wav, raw)")
    p.add_argument("--realtime", action="store_true", help="pace the replay to the wall clock")
    p.add_argument("--speed", type=float, default=1.0, help="with --realtime: speed factor, > 0 (default: 1)")
    p.add_argument("--seconds", type=float, default=None, help="replay only the first SECONDS (> 0)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cortexlink.core.validation import check_positive
    from cortexlink.io.replay import WARMUP_S, replay

    check_positive("--speed", args.speed)
    if args.seconds is not None:
        check_positive("--seconds", args.seconds)
    r = replay(args.source, realtime=args.realtime, speed=args.speed, seconds=args.seconds,
               progress=sys.stderr.isatty(), format=args.format)
    out = {"source": str(args.source), "seconds": r["seconds"], "wall_s": r["wall_s"], "speed_x": r["speed_x"],
           "n_feature_bins": int(r["features"]["samples"].size), "compare": r["compare"],
           "raw_samples": r.get("raw_samples"), "notes": r.get("notes", [])}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"replayed {out['seconds']:.1f} s of {args.source} in {out['wall_s']:.2f} s ({out['speed_x']:.1f}x real time)")
        first, end = r.get("raw_samples") or (None, None)
        fs = r["samples"] / r["seconds"] if r["seconds"] else None
        for note in r.get("notes", []):
            print(f"  note: {note}")
        for name, c in r["compare"].items():
            verdict = "identical" if c["equal"] else "DIFFERENT"
            n_cmp = c["rows_recorded"] - c.get("rows_warmup", 0) - c.get("rows_after_raw_end", 0)
            print(f"  {name}: {c.get('rows_equal', 0)}/{n_cmp} rows equal to the live session "
                  f"(max |diff| {c.get('max_abs_diff', float('nan')):.3g}) - {verdict}"
                  + (f" ({c['reason']})" if c.get("reason") else ""))
            if c.get("rows_warmup"):
                print(f"    the first {c['rows_warmup']} recorded rows were not compared: the recording began "
                      f"mid-session at sample {first}, and the replayed filters need {WARMUP_S:g} s to warm up")
            if c.get("rows_after_raw_end"):
                t = f" ({end / fs:.3f} s)" if fs and first == 0 else ""
                print(f"    the raw data end at sample {end}{t}: {c['rows_after_raw_end']} recorded rows after it "
                      "cannot be replayed (e.g. `cortexlink recover` cut a damaged tail)")
        if not r["compare"]:
            f = r["features"]["data"]
            print(f"  {f.shape[0]} feature bins x {f.shape[1]} features (nothing recorded to compare with)")
    return 0 if all(c["equal"] for c in r["compare"].values()) else 1
