"""``cortexlink bench dataset`` (issue 15 §4): its arguments and run, kept out of ``cli/bench.py``
(which registers it) for that module's size."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def add_parser(bsub: argparse._SubParsersAction, out_help: str, func: Callable) -> None:
    """Add ``dataset`` to ``cortexlink bench``'s subcommands."""
    ds = bsub.add_parser("dataset", help="a data set of simulated sessions built on Ray with 1, 2, ... workers: "
                                         "wall time, sessions/hour, channel-hours/hour, scaling",
                         description="Builds the same data set of --sessions simulated sessions (the probe384 preset "
                                     "at --channels electrodes, --seconds each, spread over --participants "
                                     "participants recorded on consecutive days) with `cortexlink dataset build` "
                                     "once per --workers count, each into its own folder with its own local Ray "
                                     "instance. Each session is simulated inside its Ray task and its raw samples "
                                     "deleted once sorted. Reports wall time, sessions/hour, channel-hours/hour, "
                                     "units, tracked units, excluded sessions, peak RSS per worker and the scaling "
                                     "(throughput against the fewest workers). Sorting dominates: see the README for "
                                     "each sorter's cost per channel-hour before asking for 20 x 256 ch x 5 min.")
    ds.add_argument("--sessions", type=int, default=20, help="simulated sessions (default: 20)")
    ds.add_argument("--channels", type=int, default=256, help="electrodes per session (default: 256)")
    ds.add_argument("--seconds", type=float, default=300.0, help="seconds per session (default: 300)")
    ds.add_argument("--participants", type=int, default=2, help="simulated participants (default: 2)")
    ds.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to build with (default: 1 2)")
    ds.add_argument("--sorter", default=None, metavar="NAME", help="sorter (default: the best that runs here)")
    ds.add_argument("--seed", type=int, default=0, help="simulator seed of the first participant (default: 0)")
    ds.add_argument("--work-dir", type=Path, default=None,
                    help="keep the data sets in this folder (w<N>/ per worker count; default: a temporary one, "
                         "removed)")
    ds.add_argument("--json", action="store_true", help="print the result as JSON only")
    ds.add_argument("--out", type=Path, default=None, help=out_help)
    ds.set_defaults(func=func)


def run(args: argparse.Namespace, emit: Callable) -> int:
    """Run the benchmark and print (or write) its result with ``emit``."""
    import logging
    import sys

    from cortexlink.bench import dataset

    if not args.json:
        logging.getLogger("cortexlink.bench.dataset").setLevel(logging.INFO)
    result = dataset.run(sessions=args.sessions, channels=args.channels, seconds=args.seconds, workers=args.workers,
                         sorter=args.sorter, participants=args.participants, seed=args.seed, work_dir=args.work_dir,
                         progress=sys.stderr.isatty())
    rc = emit(result, args, dataset.print_summary)
    return 1 if any(r["excluded"] for r in result["results"]) else rc
