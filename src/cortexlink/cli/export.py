"""``cortexlink export DIR --to FILE.nwb``: write a session folder as one NWB file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a session folder to NWB",
                       description="Write a recorded session folder as one NWB 2 file (pynwb): electrodes with "
                                   "geometry, the raw ElectricalSeries streamed in compressed chunks, threshold "
                                   "crossings and spike-band power, cursor, clicks, decoder outputs, trials, "
                                   "blocks, gaps as invalid_times and a de-identified subject; a speech "
                                   "session's trials and phoneme log-probabilities; a stimulation session's "
                                   "delivered pulses and the safety interlock's decisions.")
    p.add_argument("session", type=Path, metavar="DIR", help="session folder (manifest.json + streams/)")
    p.add_argument("--to", dest="to", type=Path, required=True, metavar="FILE.nwb", help="NWB file to write")
    p.add_argument("--no-raw", action="store_true", help="leave the raw samples out (features, behaviour, events only)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE.nwb if it exists and is an NWB file cortexlink export wrote "
                   "(any other file, a path inside a session folder or a system location is refused)")
    p.add_argument("--compression", choices=["gzip", "lzf", "none"], default="gzip",
                   help="HDF5 filter for raw and feature data (default: gzip level 1 + shuffle, readable "
                        "everywhere; lzf is ~3x faster but h5py-only)")
    p.add_argument("--chunk-seconds", type=float, default=1.0,
                   help="seconds of raw data per write, the only raw buffer held in memory (default: 1)")
    p.add_argument("--salvage", action="store_true",
                   help="export a session that does not verify: skip damaged records (their samples become zeros "
                        "listed in invalid_times) instead of refusing it; without it every checksum is verified "
                        "first (`cortexlink sessions verify`); `cortexlink recover` repairs the folder itself")
    p.add_argument("--validate", action="store_true",
                   help="afterwards run pynwb's validator and nwbinspector and report their findings")
    p.add_argument("--json", action="store_true", help="print the summary as JSON only")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cortexlink.io.nwb import check_nwb, export_nwb

    compression = None if args.compression == "none" else args.compression
    summary = export_nwb(args.session, args.to, raw=not args.no_raw, compression=compression,
                         chunk_seconds=args.chunk_seconds, progress=not args.json and sys.stderr.isatty(),
                         overwrite=args.overwrite, salvage=args.salvage)
    rc = 0
    if args.validate:
        found = check_nwb(args.to)
        summary["validation"] = found
        if found["validator"] or found["n_critical"]:
            rc = 1
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return rc
    raw = summary.get("raw") or {}
    print(f"cortexlink export: {summary['session']} -> {summary['path']}")
    print(f"  {summary['bytes'] / 1e6:.1f} MB in {summary['seconds']:.1f} s ({summary['mb_per_s']} MB/s written"
          + (f", {summary['raw_mb_per_s']} MB/s of raw input" if summary.get("raw_mb_per_s") else "")
          + f"), peak RSS {summary['peak_rss_mb']:.0f} MB, compression {summary['compression']}")
    if raw:
        print(f"  raw: {raw['n_samples']} samples x {raw['n_channels']} channels ({raw['duration_s']} s), "
              f"{raw['n_holes']} hole(s), {raw['missing_samples']} missing samples")
    for w in summary["written"]:
        print(f"  + {w}")
    for w in summary["warnings"]:
        print(f"  warning: {w}")
    if args.validate:
        v = summary["validation"]
        print(f"  pynwb validator: {len(v['validator'])} error(s)")
        for e in v["validator"]:
            print(f"    {e}")
        print(f"  nwbinspector: {len(v['inspector'])} message(s), {v['n_critical']} critical")
        for msg in v["inspector"]:
            print(f"    {msg['importance']}: {msg['check']} at {msg['location']}: {msg['message']}")
    sys.stdout.flush()
    return rc
