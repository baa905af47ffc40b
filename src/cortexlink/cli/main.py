"""The ``cortexlink`` command: one module per subcommand, all argument parsing lives in cli/."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from cortexlink import CortexlinkError, __version__


def build_parser() -> argparse.ArgumentParser:
    from cortexlink.cli import bench, demo, session

    parser = argparse.ArgumentParser(
        prog="cortexlink",
        description="Open software stack for high-channel-count implantable brain-computer interfaces.",
    )
    parser.add_argument("--version", action="version", version=f"cortexlink {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    demo.add_parser(sub)
    session.add_parser(sub)
    bench.add_parser(sub)
    from cortexlink.cli import record, recover, replay, sessions
    record.add_parser(sub)
    recover.add_parser(sub)
    replay.add_parser(sub)
    sessions.add_parser(sub)
    from cortexlink.cli import serve  # operator web UI (issue 7)
    serve.add_parser(sub)
    from cortexlink.cli import export  # NWB export (issue 5)
    export.add_parser(sub)
    from cortexlink.cli import run  # real-time runtime (issue 6)
    run.add_parser(sub)
    from cortexlink.cli import compress  # WAV <-> .clz with the lossless codec (issue 20)
    compress.add_parser(sub)
    from cortexlink.cli import quality  # data-set quality report (issue 16)
    quality.add_parser(sub)
    from cortexlink.cli import sort  # spike sorting (issue 15)
    sort.add_parser(sub)
    from cortexlink.cli import units  # units across sessions (issue 15 §3)
    units.add_parser(sub)
    from cortexlink.cli import dataset  # a data set from many sessions, on Ray (issue 15 §4)
    dataset.add_parser(sub)
    from cortexlink.cli import evidence  # safety evidence (issue 21)
    evidence.add_parser(sub)
    return parser


#: Commands that run until their work is done or they are stopped: SIGINT, SIGTERM and SIGHUP
#: stop them cleanly (cortexlink.runtime.signals), and they then exit with 128 + the signal —
#: but for ``serve``, a server whose normal end is a signal: its own status (0 after a clean stop).
LONG_RUNNING = frozenset({"run", "session", "demo", "record", "serve", "replay"})
_ENDS_ON_A_SIGNAL = frozenset({"serve"})


def main(argv: Sequence[str] | None = None) -> int:
    from cortexlink.runtime.signals import StopSignals, stop_on_signals

    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sig = StopSignals()
    rc = 130
    try:
        if args.command in LONG_RUNNING:
            with stop_on_signals() as sig:
                rc = int(args.func(args) or 0)
        else:
            rc = int(args.func(args) or 0)
    except CortexlinkError as exc:
        print(f"cortexlink: error: {exc}", file=sys.stderr)
        rc = 2
    except KeyboardInterrupt:
        if sig.signum is None:
            print("cortexlink: interrupted", file=sys.stderr)
            return 130
    if sig.exit_code is not None:
        print(f"cortexlink: stopped by {sig.name}", file=sys.stderr)
        return rc if args.command in _ENDS_ON_A_SIGNAL and rc != 130 else sig.exit_code
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
