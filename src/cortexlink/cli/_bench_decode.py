"""``cortexlink bench decode``: its arguments and run, kept out of ``cli/bench.py`` (which
registers it) for that module's size."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def add_parser(bsub: argparse._SubParsersAction, out_help: str, func: Callable) -> None:
    """Add ``decode`` to ``cortexlink bench``'s subcommands."""
    dec = bsub.add_parser("decode", help="decoder accuracy, fit time and step latency",
                          description="Runs every decoder on the real monkey M1 centre-out data and on "
                                      "simulated data (96 and 1024 channels), with the neural-decoding "
                                      "package's Wiener and Kalman filters side by side. With --sim-preset, "
                                      "scores simulator presets at several channel counts on a centre-out "
                                      "intent (offline velocity R2 of the Kalman filter). With --units, the "
                                      "Kalman filter's R2 with sorted units (template matching in the real-time "
                                      "chain, templates fitted on the simulator's ground truth) against threshold "
                                      "crossings on simulated centre-out sessions.")
    dec.add_argument("--data", type=Path, default=None,
                     help="monkey_m1_center_out folder (default: ../shared/data/monkey_m1_center_out if present)")
    dec.add_argument("--n-steps", type=int, default=10000, help="streaming steps timed per decoder (default: 10000)")
    dec.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                     help="subset of chewie mihi sim96 sim1024 (default: all; none with --sim-preset)")
    dec.add_argument("--sim-preset", nargs="+", default=None, metavar="PRESET", help="also score these simulator "
                     "presets on a centre-out intent at each --sim-channels and --sim-seeds (rows sim:PRESET/CHANNELS)")
    dec.add_argument("--sim-channels", nargs="+", type=int, default=None, metavar="N", help="default: 96 256 1024")
    dec.add_argument("--sim-seeds", nargs="+", type=int, default=None, metavar="SEED", help="default: 0 1 2 3")
    dec.add_argument("--sim-seconds", type=float, default=None, metavar="S", help="simulated per row (default: 120)")
    dec.add_argument("--sim-decoders", nargs="+", default=None, metavar="NAME",
                     help="KalmanFilter WienerFilter (default: KalmanFilter)")
    dec.add_argument("--units", action="store_true", help="score sorted units against crossings (rows per channel "
                     "count, seed and feature set tx, su, tx+su, su_truth; only these unless --datasets is given)")
    dec.add_argument("--units-channels", nargs="+", type=int, default=None, metavar="N", help="default: 96 256")
    dec.add_argument("--units-seeds", nargs="+", type=int, default=None, metavar="SEED", help="default: 0 1")
    dec.add_argument("--units-seconds", type=float, default=None, metavar="S",
                     help="simulated per session (default: 120)")
    dec.add_argument("--units-fit-s", type=float, default=None, metavar="S",
                     help="seconds at the start the templates are fitted on (default: 30)")
    dec.add_argument("--no-gru-fit-target", action="store_true",
                     help="skip timing GRUDecoder on 30,000 bins x 1024 features (~1 minute)")
    dec.add_argument("--json", action="store_true", help="print the result as JSON only")
    dec.add_argument("--out", type=Path, default=None, help=out_help)
    dec.set_defaults(func=func)


def run(args: argparse.Namespace, emit: Callable) -> int:
    """Run the benchmark and print (or write) its result with ``emit``."""
    from cortexlink.bench import decode, decode_units

    units = None
    if args.units:
        units = decode_units.score_units(
            channels=args.units_channels or decode_units.UNITS_CHANNELS,
            seeds=args.units_seeds if args.units_seeds is not None else decode_units.UNITS_SEEDS,
            seconds=args.units_seconds or decode_units.UNITS_SECONDS, fit_s=args.units_fit_s or decode_units.UNITS_FIT_S,
            progress=not args.json)
        if args.datasets is None and args.sim_preset is None:
            return emit({"benchmark": "decode", "units": units}, args,
                        lambda r: decode_units.print_units(r["units"]))
    only_sim = args.sim_preset is not None and args.datasets is None
    result = decode.run_decode_bench(datasets=[] if only_sim else args.datasets, data=args.data, n_steps=args.n_steps,
                                     progress=not args.json, gru_fit_target=not (args.no_gru_fit_target or only_sim),
                                     sim_presets=args.sim_preset, sim_channels=args.sim_channels,
                                     sim_seeds=args.sim_seeds, sim_preset_seconds=args.sim_seconds,
                                     sim_decoders=args.sim_decoders)
    if units is None:
        return emit(result, args, decode.print_summary)
    result["units"] = units

    def summary(r: dict) -> None:
        decode.print_summary(r)
        decode_units.print_units(r["units"])

    return emit(result, args, summary)
