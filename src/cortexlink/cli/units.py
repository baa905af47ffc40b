"""``cortexlink units track SORT_DIR... --out DIR``: units across sessions and days (issue 15 §3)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("units", help="units across sorted sessions: stable ids across sessions and days",
                       description="Work on the units of sessions sorted with `cortexlink sort`.")
    usub = p.add_subparsers(dest="units_command", metavar="ACTION")
    usub.required = True
    t = usub.add_parser(
        "track", help="match units across sessions of one participant: a stable id and a confidence per unit",
        description="Matches the units of sessions sorted with `cortexlink sort` across sessions and days. Sessions "
                    "are ordered by their recording's start (the given order when a start is unknown); sessions of "
                    "different participants are never matched. Between two sessions the rigid shift of the probe "
                    "along its long axis is estimated first (the shift within --max-shift-um that best aligns the "
                    "units' footprints over the electrodes; the good units' when both sessions have three or "
                    "more); units are then compared at that shift by waveform shape, amplitude, position and "
                    "firing rate, a calibrated logistic turns that into a confidence (the probability that the "
                    "two are one neuron), and units are paired one to one (Hungarian assignment); a pair under "
                    "--min-confidence is not a match. A unit unmatched in the "
                    "previous session may continue an id last seen up to --max-gap-sessions back; any other unit "
                    "gets a new id (turnover). Writes DIR/tracking.csv (one row per session and unit: tracked_id, "
                    "confidence, matched session and unit, shift), DIR/tracking.json, DIR/tracking.png and "
                    "DIR/tracking.html.",
        epilog="Example: cortexlink units track sorted/day1 sorted/day2 sorted/day3 --out tracked")
    t.add_argument("sort_dirs", type=Path, nargs="+", metavar="SORT_DIR",
                   help="output folders of `cortexlink sort` (two or more)")
    t.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output folder: new or empty (not a system folder nor inside a session)")
    t.add_argument("--min-confidence", type=float, default=0.5,
                   help="smallest confidence of a match, in (0, 1) (default: 0.5)")
    t.add_argument("--max-shift-um", type=float, default=100.0,
                   help="largest rigid shift of the probe between two sessions searched for, µm (default: 100)")
    t.add_argument("--max-gap-sessions", type=int, default=2,
                   help="a unit may continue an id last seen this many sessions back (default: 2)")
    t.add_argument("--labels", default="good,mua",
                   help="curation labels of the units tracked, comma-separated (default: good,mua)")
    t.add_argument("--json", action="store_true", help="print tracking.json's summary instead of the short summary")
    t.set_defaults(func=run_track)
    f = usub.add_parser(
        "fit", help="fit templates of sorted units for the real-time chain (feature kind su)",
        description="Fits one template per sorted unit, in the feature extractor's own filtered, referenced "
                    "signal, for the real-time unit matcher (cortexlink.dsp.units): a session then counts each "
                    "unit's spikes live with `loop: {units: T.npz, feature_kinds: [su]}` in its YAML (or a dsp "
                    "node's `units` parameter). From a sorting: SOURCE is the recording that was sorted (a session "
                    "folder, read with the extractor settings it was recorded with, or any importer format) and "
                    "--sorting the `cortexlink sort` output (or its units.nwb); the units with the --labels are "
                    "fitted on the first --seconds. With --sim PRESET: a simulated implant (preset, --channels, "
                    "--seed, as a session's `implant:` and `seed:` build it) with its ground-truth spikes as a "
                    "perfect sorting. Prints, per unit, the training spikes, the channels used and how many of "
                    "its own spikes the matcher accepts.",
        epilog="Examples: cortexlink units fit runs/s1/recording --sorting sorted/s1 --out s1_units.npz\n"
               "          cortexlink units fit --sim default --channels 96 --seed 0 --out sim_units.npz")
    f.add_argument("source", type=Path, nargs="?", default=None, metavar="SOURCE",
                   help="the sorted recording (not with --sim)")
    f.add_argument("--sorting", type=Path, default=None, metavar="SORT_DIR",
                   help="`cortexlink sort` output folder or its units.nwb")
    f.add_argument("--sim", default=None, metavar="PRESET", help="a simulator preset instead of SOURCE and --sorting")
    f.add_argument("--channels", type=int, default=None, help="with --sim: channels (default: the preset's)")
    f.add_argument("--seed", type=int, default=0, help="with --sim: the implant's seed (default: 0)")
    f.add_argument("--seconds", type=float, default=None,
                   help="seconds fitted on (default: 120 of a recording, 30 simulated)")
    f.add_argument("--labels", default="good", help="curation labels of the units fitted, comma-separated, or "
                   "'all' (default: good)")
    f.add_argument("--format", default=None, help="importer format of SOURCE (default: detected)")
    f.add_argument("--out", type=Path, required=True, metavar="T.npz", help="the templates file to write")
    f.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    f.add_argument("--json", action="store_true", help="print the templates' info as JSON")
    f.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    from cortexlink.core.errors import ConfigError

    if args.out.exists() and not args.overwrite:
        raise ConfigError(f"{args.out} exists (use --overwrite to replace it)")
    if args.out.suffix != ".npz":
        raise ConfigError(f"--out must end in .npz; got {args.out}")
    progress = sys.stderr.isatty() and not args.json
    if args.sim is not None:
        if args.source is not None or args.sorting is not None:
            raise ConfigError("--sim takes no SOURCE or --sorting")
        from cortexlink.dsp import FeatureExtractor
        from cortexlink.dsp.units import fit_unit_templates, spikes_from_ground_truth
        from cortexlink.sim import SimulatedImplant

        imp = SimulatedImplant.from_preset(args.sim, seed=args.seed,
                                           **({"n_channels": args.channels} if args.channels else {}))
        x = imp.read_seconds(args.seconds or 30.0).data
        spikes, chans = spikes_from_ground_truth(imp.ground_truth())
        t = fit_unit_templates(FeatureExtractor(imp.channel_map, imp.fs_hz), x, spikes, chans, progress=progress)
    else:
        if args.source is None or args.sorting is None:
            raise ConfigError("units fit needs SOURCE and --sorting (or --sim PRESET)")
        from cortexlink.sorting.realtime import fit_from_recording

        labels = None if args.labels.strip() == "all" else tuple(x.strip() for x in args.labels.split(",") if x.strip())
        t = fit_from_recording(args.source, args.sorting, labels=labels, seconds=args.seconds or 120.0,
                               format=args.format, progress=progress)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t.save(args.out)
    if args.json:
        print(json.dumps({"out": str(args.out), "n_units": t.n_units, **t.info}, indent=2))
        return 0
    from statistics import median

    units = t.info["units"].values()
    print(f"{t.n_units} units fitted ({len(t.info['skipped'])} left out: too few spikes or crossings) -> {args.out}")
    print(f"  own training spikes accepted: median {median(v['train_recall'] for v in units):.3f}; "
          f"channels per unit: median {median(v['channels_used'] for v in units):g}")
    return 0


def run_track(args: argparse.Namespace) -> int:
    from cortexlink.core.errors import ConfigError
    from cortexlink.core.outpath import check_output_dir
    from cortexlink.sorting.tracking import load_session_units, track_units, write_tracking

    if len(args.sort_dirs) < 2:
        raise ConfigError(f"units track needs two or more SORT_DIR folders; got {len(args.sort_dirs)}")
    labels = tuple(s.strip() for s in args.labels.split(",") if s.strip())
    progress = sys.stderr.isatty()
    from tqdm import tqdm

    sessions = [load_session_units(d, labels=labels)
                for d in tqdm(args.sort_dirs, desc="loading sorted sessions", unit="session", file=sys.stderr,
                              disable=not progress)]
    out = check_output_dir(args.out, what="--out", create=False, new=True)
    table = track_units(sessions, max_shift_um=args.max_shift_um, min_confidence=args.min_confidence,
                        max_gap_sessions=args.max_gap_sessions, progress=progress)
    summary = write_tracking(out, table, sessions)
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return 0
    print(f"tracked {summary['n_units']} units of {summary['n_sessions']} sessions: {summary['n_tracked_ids']} "
          f"tracked ids, {summary['n_matches']} matches (median confidence {summary['confidence_median']})")
    for d in summary["sessions"]:
        shift = "" if d["shift_vs_previous_um"] is None else f", shift {d['shift_vs_previous_um']:+.1f} µm"
        print(f"  {d['session']}: {d['n_units']} units, {d['n_matched']} matched, {d['n_new']} new{shift}")
    print(f"  {Path(out) / 'tracking.csv'}, {Path(out) / 'tracking.html'}")
    return 0
