"""``cortexlink bench safety``: its arguments and run, kept out of ``cli/bench.py`` (which registers
it) for that module's size."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable


def add_parser(bsub: argparse._SubParsersAction, out_help: str, check_out: Callable, emit: Callable) -> None:
    """Add ``safety`` to ``cortexlink bench``'s subcommands."""
    from cortexlink.bench.safety_cases import CASES

    sa = bsub.add_parser("safety", help="the watchdog and the E-STOP under real signals across processes: bins and ms "
                                        "from each fault to the held cursor",
                         description="Runs a closed loop (a replayed 32-channel recording in one child process, dsp "
                                     "and a fitted Kalman + click decoder in another, the cursor in this process) over "
                                     "a redis-server on 127.0.0.1 and breaks it from outside: a worker SIGKILLed or "
                                     "SIGSTOPped, the redis-server SIGKILLed, an E-STOP sent from another process "
                                     "(also across a restart of the cursor's own process), SIGTERM/SIGINT to "
                                     "`cortexlink run`. Reports per case: halted, halt_ms (fault to the first "
                                     "message holding the cursor), bins_to_halt (that time in 20 ms bins), moved_bins "
                                     "(bins after the fault that were not held) and what held it. Needs redis-server; "
                                     "Linux (/proc). Exits 1 when a case did not hold the cursor or failed.")
    sa.add_argument("--cases", nargs="+", default=None, choices=list(CASES), metavar="CASE",
                    help=f"run only these cases (default: all: {', '.join(CASES)})")
    sa.add_argument("--dir", type=Path, default=None,
                    help="keep each case's folder (logs, recordings) under this folder (default: a temporary one, "
                         "removed)")
    sa.add_argument("--json", action="store_true", help="print the result as JSON only")
    sa.add_argument("--out", type=Path, default=None, help=out_help)
    sa.set_defaults(func=lambda args: run(args, check_out, emit))


def run(args: argparse.Namespace, check_out: Callable, emit: Callable) -> int:
    """Run the benchmark and print (or write) its result with ``emit``."""
    from cortexlink.bench import safety_cases as safety

    check_out(args)
    result = safety.run(args.cases, workdir=args.dir, progress=not args.json and sys.stderr.isatty())
    rc = emit(result, args, safety.print_summary)
    bad = [c for c in result["cases"] if "error" in c or not c.get("halted")]
    return 1 if bad else rc
