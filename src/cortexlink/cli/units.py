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
