"""``cortexlink serve``: the operator web UI, a client of a running graph's bus."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="operator web UI: watch and drive a live session from a browser",
                       description="Runs an interactive runtime graph (by default the shipped 'operator' graph: a "
                                   "simulated 1024-channel implant) and serves the operator UI as a client of its "
                                   "bus: array heat map, raster, decoder output, task view (centre-out, Webgrid, "
                                   "chess), bits per second, latency, recording; controls to calibrate, fit, run "
                                   "closed loop, ReFIT, record, mouse mode, and an emergency stop, sent on the "
                                   "graph's operator.commands topic and applied between bins. With --redis the "
                                   "graph runs in its own process and keeps running, under its watchdog, if the UI "
                                   "process dies; a UI started again with --redis URL --attach takes it over. Binds "
                                   "to 127.0.0.1 unless --host is given (then --token is required).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1; anything but a loopback address needs --token)")
    p.add_argument("--port", type=int, default=8765, help="TCP port, 0..65535 (default: 8765; 0 picks a free one)")
    p.add_argument("--token", default=os.environ.get("CORTEXLINK_TOKEN"),
                   help="shared secret every request must carry (default: $CORTEXLINK_TOKEN); required off loopback")
    p.add_argument("--graph", default=None,
                   help="graph to run: a shipped one (operator, the default) or a YAML file; its cursor must read "
                        "operator.commands (the UI never runs without a working emergency stop)")
    p.add_argument("--session", type=Path, default=None,
                   help="instead of --graph: a session YAML (implant, participant, decoder; its blocks give default "
                        "block lengths) compiled to an interactive graph; a speech session (blocks with task: speech) "
                        "runs its block schedule with a Speech panel, and its E-STOP ends the trial in progress and "
                        "holds the schedule")
    p.add_argument("--channels", type=int, default=None,
                   help="electrodes of the simulated implant (default: the graph's or session's)")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="run the graph in a child process and talk to it only over Redis: 'auto' starts a private "
                        "redis-server, or give redis://host:port / unix:///path")
    p.add_argument("--attach", action="store_true",
                   help="with --redis URL: attach to the graph already running there (e.g. after the UI process "
                        "died) instead of starting one; Ctrl+C then detaches and leaves the graph running")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    p.add_argument("--record-dir", type=Path, default=Path("runs") / "recordings",
                   help="parent folder of recordings started from the UI (default: runs/recordings; not a system "
                        "folder nor inside a recorded session)")
    p.add_argument("--participant-id", default="sim-0001", help="pseudonymous participant code for recordings")
    p.add_argument("--speed", type=float, default=1.0,
                   help="pace of the simulated implant relative to the wall clock (default: 1.0)")
    p.add_argument("--priority", choices=("auto", "normal", "high", "realtime"), default="auto",
                   help="scheduling of the graph's thread (in-process graphs): realtime (SCHED_FIFO) keeps the loop "
                        "on time on a loaded machine (a browser included) and needs CAP_SYS_NICE or an rtprio limit; "
                        "auto tries realtime and falls back to normal (default: auto)")
    p.add_argument("--stream-hz", type=float, default=30.0, help="most updates per second sent to each browser (default: 30)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cortexlink.core.errors import ConfigError
    from cortexlink.core.outpath import check_output_dir
    from cortexlink.core.validation import check_range
    from cortexlink.web.controller import OperatorController
    from cortexlink.web.server import OperatorServer, is_loopback

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be a TCP port in 0..65535 (0 picks a free one); got {args.port}")
    check_range("--stream-hz", args.stream_hz, 1.0, 120.0)
    if not args.attach:
        check_output_dir(args.record_dir, what="--record-dir", create=False)
    if not is_loopback(args.host) and not args.token:
        raise ConfigError(f"--host {args.host} is not a loopback address: --token (or $CORTEXLINK_TOKEN) is required")
    if args.attach and (args.redis is None or args.redis == "auto"):
        raise ConfigError("--attach needs --redis URL of the server the graph runs on (not 'auto')")
    if args.attach and (args.graph or args.session or args.channels):
        raise ConfigError("--attach takes the graph that runs there: do not give --graph, --session or --channels")
    ctl = OperatorController(args.graph, session=args.session, n_channels=args.channels, record_dir=args.record_dir,
                             participant_id=args.participant_id, speed=args.speed,
                             priority="normal" if args.priority == "auto" else args.priority,
                             redis=args.redis, attach=args.attach)
    what = "attaching to the graph on " + args.redis if args.attach else "starting " + ctl.describe()
    print(f"cortexlink serve: {what}…", file=sys.stderr)
    ctl.start()
    if args.redis is not None and ctl._remote is not None:
        pid = "?" if ctl._remote.proc is None else ctl._remote.proc.pid
        print(f"cortexlink serve: graph process pid {pid} on {ctl._remote.url} (run {ctl._remote.run_id}); "
              f"attach again with --redis {ctl._remote.url} --attach", file=sys.stderr)
    if args.priority == "auto" and args.redis is None:
        info = ctl.set_priority("realtime", warn=False)
        if info.get("error"):
            print("cortexlink serve: note: the graph runs at normal priority (real-time scheduling needs "
                  "CAP_SYS_NICE or an rtprio limit; see --priority)", file=sys.stderr)
    elif ctl.priority_info.get("error"):
        print(f"cortexlink serve: warning: --priority {args.priority} not applied: {ctl.priority_info['error']}",
              file=sys.stderr)
    try:
        server = OperatorServer(ctl, args.host, args.port, token=args.token, stream_hz=args.stream_hz)
    except BaseException:
        ctl.stop()
        raise
    server.start()
    print(f"cortexlink operator UI: {server.url}   (Ctrl+C to stop)")
    sys.stdout.flush()
    if not args.no_browser:
        import webbrowser

        try:
            webbrowser.open(server.url)
        except Exception:  # noqa: BLE001 - no browser is fine  # nosec B110
            pass

    try:                # SIGINT, SIGTERM, SIGHUP: KeyboardInterrupt once (cli.main, runtime.signals)
        while ctl.running:
            time.sleep(0.25)
        print(f"cortexlink serve: the session ended (state {ctl.state})", file=sys.stderr)
    except KeyboardInterrupt:
        print("cortexlink serve: " + ("detaching (the graph runs on)…" if args.attach else "stopping…"), file=sys.stderr)
    finally:
        server.stop()
        ctl.stop()
    return 0 if ctl.state != "error" else 1
