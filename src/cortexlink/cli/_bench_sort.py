"""``cortexlink bench sort`` (issue 15 §2): its arguments and run, kept out of ``cli/bench.py``
(which registers it) for that module's size."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def add_parser(bsub: argparse._SubParsersAction, out_help: str, func: Callable) -> None:
    """Add ``sort`` to ``cortexlink bench``'s subcommands."""
    from cortexlink.sorting.merging import DEFAULT_MERGE

    so = bsub.add_parser("sort", help="spike sorters against ground truth: well-detected units, accuracy by SNR, "
                                      "false positives, time and peak memory",
                         description="Runs every available spike sorter (SpikeInterface's, through "
                                     "cortexlink.sorting) on the same recordings with known units, each sorter "
                                     "in its own process: the simulator (sim, sim_drift: footprints over "
                                     "neighbouring electrodes, bursts, amplitude variability, drift along the "
                                     "probe) and known units injected into the real N1 broadband and locust "
                                     "tetrode recordings (n1_hybrid, locust_hybrid; ../shared/data). Scores with "
                                     "SpikeInterface's compare_sorter_to_ground_truth (well detected: accuracy "
                                     ">= 0.8).")
    so.add_argument("--datasets", nargs="+", default=["sim", "sim_drift", "n1_hybrid", "locust_hybrid"],
                    choices=["sim", "sim_drift", "n1_hybrid", "locust_hybrid"], help="data sets (default: all four)")
    so.add_argument("--sorters", nargs="+", default=None,
                    help="sorters (default: every one that runs here; see `cortexlink sort --help`)")
    so.add_argument("--channels", type=int, default=384, help="channels of the simulated probe (default: 384)")
    so.add_argument("--seconds", type=float, default=60.0,
                    help="seconds of simulated data, and at most this much of the real recordings (default: 60)")
    so.add_argument("--drift-period-s", type=float, default=1200.0,
                    help="period of sim_drift's 20 µm drift along the probe (default: 1200 s; shorter to see the "
                         "whole swing in a short run)")
    so.add_argument("--no-motion", action="store_true", help="no drift correction on sim_drift")
    so.add_argument("--n-jobs", type=int, default=1, help="worker processes per sorter (default: 1)")
    so.add_argument("--seed", type=int, default=0, help="simulator and injection seed (default: 0)")
    so.add_argument("--timeout-s", type=float, default=3600.0, help="limit per sorter run (default: 3600 s)")
    so.add_argument("--no-curation", action="store_true", help="skip the curation check")
    so.add_argument("--merge", default=DEFAULT_MERGE, help="automatic merge of split units before scoring, as "
                    f"`cortexlink sort --merge` (default: {DEFAULT_MERGE}; none: off)")
    so.add_argument("--matching", default="auto", metavar="auto|own|KEY=V,...",
                    help="the sorters' template-matching settings, as `cortexlink sort --matching` (default: auto)")
    so.add_argument("--data", type=Path, default=Path("../shared/data"),
                    help="folder of the real recordings (default: ../shared/data)")
    so.add_argument("--work-dir", type=Path, default=None,
                    help="keep the recordings and sortings in this folder (default: a temporary one, removed); "
                         "a sorter run finished there with the same settings is reused, not sorted again")
    so.add_argument("--json", action="store_true", help="print the result as JSON only")
    so.add_argument("--out", type=Path, default=None, help=out_help)
    so.set_defaults(func=func)


def run(args: argparse.Namespace, emit: Callable) -> int:
    """Run the benchmark as the parsed ``args`` ask and print it through ``emit``."""
    import logging

    from cortexlink.bench import sort

    if not args.json:
        logging.getLogger("cortexlink.bench.sort").setLevel(logging.INFO)
    result = sort.run(datasets=args.datasets, sorters=args.sorters, channels=args.channels, seconds=args.seconds,
                      seed=args.seed, motion=not args.no_motion, n_jobs=args.n_jobs,
                      drift_period_s=args.drift_period_s, timeout_s=args.timeout_s, curation=not args.no_curation,
                      merge=args.merge, matching=args.matching,
                      data_dir=args.data, work_dir=args.work_dir, progress=not args.json)
    rc = emit(result, args, sort.print_summary)
    return 1 if any(r.get("error") for r in result["results"]) else rc
