"""``cortexlink bench units-track`` (issue 15 §3): its arguments and run, kept out of
``cli/bench.py`` (which registers it) for that module's size."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def add_parser(bsub: argparse._SubParsersAction, out_help: str, func: Callable) -> None:
    """Add ``units-track`` to ``cortexlink bench``'s subcommands."""
    ut = bsub.add_parser("units-track", help="units across days: precision and recall of `cortexlink units track`'s "
                                             "matches on a simulated participant with known turnover",
                         description="Simulates one participant over --days days (the probe384 preset at --channels "
                                     "electrodes, --seconds a day; --day-turnover of the units replaced by new "
                                     "neurons each day, the probe moving along its axis by a random walk of "
                                     "--day-shift-um steps), takes each day's units from the ground truth (tracking "
                                     "alone) and, with --sorter, from that sorter too, tracks them across days and "
                                     "scores the matches: a match is correct when both units are the same simulated "
                                     "neuron. Precision and recall over all day pairs and consecutive days, by "
                                     "confidence threshold, and the error of the estimated shifts.")
    ut.add_argument("--days", type=int, default=5, help="recording days (default: 5)")
    ut.add_argument("--channels", type=int, default=64, help="electrodes of the simulated shank (default: 64)")
    ut.add_argument("--seconds", type=float, default=60.0, help="seconds recorded each day (default: 60)")
    ut.add_argument("--day-turnover", type=float, default=0.15,
                    help="fraction of the units replaced by new neurons each day (default: 0.15)")
    ut.add_argument("--day-shift-um", type=float, default=10.0,
                    help="step (µm, SD) of the day-to-day random walk of the probe along its axis (default: 10)")
    ut.add_argument("--sorter", default=None, metavar="NAME",
                    help="also track the units this sorter finds (cortexlink sort; minutes a day)")
    ut.add_argument("--labels", default="good,mua",
                    help="curation labels of the sorter's units that are tracked (default: good,mua)")
    ut.add_argument("--min-confidence", type=float, default=0.5, help="tracking's match threshold (default: 0.5)")
    ut.add_argument("--max-shift-um", type=float, default=100.0, help="tracking's shift search range (default: 100)")
    ut.add_argument("--seed", type=int, default=0, help="simulator seed (default: 0)")
    ut.add_argument("--work-dir", type=Path, default=None,
                    help="keep the recordings (and sortings) in this folder (default: a temporary one, removed)")
    ut.add_argument("--json", action="store_true", help="print the result as JSON only")
    ut.add_argument("--out", type=Path, default=None, help=out_help)
    ut.set_defaults(func=func)


def run(args: argparse.Namespace, emit: Callable) -> int:
    """Run the benchmark and print (or write) its result with ``emit``."""
    import logging

    from cortexlink.bench import units_track

    if not args.json:
        logging.getLogger("cortexlink.bench.units_track").setLevel(logging.INFO)
    labels = tuple(x.strip() for x in args.labels.split(",") if x.strip())
    result = units_track.run(days=args.days, channels=args.channels, seconds=args.seconds,
                             day_turnover=args.day_turnover, day_shift_um=args.day_shift_um, seed=args.seed,
                             sorter=args.sorter, min_confidence=args.min_confidence, max_shift_um=args.max_shift_um,
                             work_dir=args.work_dir, labels=labels, progress=not args.json)
    return emit(result, args, units_track.print_summary)
