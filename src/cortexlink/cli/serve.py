"""``cortexlink serve``: the operator web UI on a live (simulated) session."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="operator web UI: watch and drive a live session from a browser",
                       description="Starts a session on the simulated implant (or a session YAML) in a paced "
                                   "real-time thread and serves the operator UI: array heat map, raster, decoder "
                                   "output, task view (centre-out, Webgrid, chess), bits per second, latency, "
                                   "recording; controls to calibrate, fit, run closed loop, ReFIT, record, mouse "
                                   "mode, and an emergency stop. Binds to 127.0.0.1 unless --host is given "
                                   "(then --token is required).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1; anything but a loopback address needs --token)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default: 8765; 0 picks a free one)")
    p.add_argument("--token", default=os.environ.get("CORTEXLINK_TOKEN"),
                   help="shared secret every request must carry (default: $CORTEXLINK_TOKEN); required off loopback")
    p.add_argument("--channels", type=int, default=None,
                   help="electrodes of the simulated implant (default: 1024, or the session file's)")
    p.add_argument("--session", type=Path, default=None,
                   help="session YAML: implant, participant, decoder; its blocks give default block lengths")
    p.add_argument("--graph", type=Path, default=None,
                   help="run a runtime graph (YAML) instead (not yet supported: the runtime has no operator "
                        "emergency-stop input yet)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    p.add_argument("--record-dir", type=Path, default=Path("runs") / "recordings",
                   help="parent folder of recordings started from the UI (default: runs/recordings)")
    p.add_argument("--participant-id", default="sim-0001", help="pseudonymous participant code for recordings")
    p.add_argument("--realtime-factor", type=float, default=1.0,
                   help="pace of the simulated session relative to the wall clock (default: 1.0)")
    p.add_argument("--priority", choices=("auto", "normal", "high", "realtime"), default="auto",
                   help="scheduling of the real-time worker thread: realtime (SCHED_FIFO) keeps the loop on time on "
                        "a loaded machine (a browser included) and needs CAP_SYS_NICE or an rtprio limit; auto "
                        "tries realtime and falls back to normal (default: auto)")
    p.add_argument("--stream-hz", type=float, default=30.0, help="most updates per second sent to each browser (default: 30)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cortexlink.core.errors import ConfigError
    from cortexlink.web.controller import SessionController
    from cortexlink.web.server import OperatorServer, is_loopback

    if args.graph is not None:
        raise ConfigError("--graph is not yet supported: a runtime graph can be watched through its ui_feed node, "
                          "but it has no operator input yet for the emergency stop and the controls (calibrate, "
                          "fit, start/stop), and the UI never runs without a working emergency stop; use --session "
                          "or the built-in simulated session")
    if not is_loopback(args.host) and not args.token:
        raise ConfigError(f"--host {args.host} is not a loopback address: --token (or $CORTEXLINK_TOKEN) is required")
    n_ch = args.channels if (args.channels is not None or args.session is not None) else 1024
    ctl = SessionController(args.session, n_channels=n_ch, realtime_factor=args.realtime_factor,
                            record_dir=args.record_dir, participant_id=args.participant_id,
                            priority="normal" if args.priority == "auto" else args.priority)
    print(f"cortexlink serve: starting session '{ctl.config['name']}' "
          f"({ctl.config['implant'].get('n_channels', 'preset')} channels, decoder {ctl.config['decoder']['kind']})…",
          file=sys.stderr)
    ctl.start()
    if args.priority == "auto":
        info = ctl.set_priority("realtime", warn=False)
        if info.get("error"):
            print("cortexlink serve: note: the real-time worker runs at normal priority (real-time scheduling "
                  "needs CAP_SYS_NICE or an rtprio limit; see --priority)", file=sys.stderr)
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
        except Exception:  # noqa: BLE001 - no browser is fine
            pass

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term)
    try:
        while ctl.running:
            time.sleep(0.25)
        print(f"cortexlink serve: the session ended (state {ctl.state})", file=sys.stderr)
    except KeyboardInterrupt:
        print("cortexlink serve: stopping…", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, old)
        server.stop()
        ctl.stop()
    return 0 if ctl.state != "error" else 1
