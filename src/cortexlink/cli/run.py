"""``cortexlink run``: run a graph of nodes (sources, dsp, decoder, cursor/task, recorder, ...)."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

EPILOG = """\
examples:
  cortexlink run closed_loop                         the built-in closed-loop session graph, in-process
  cortexlink run closed_loop --clock fast            as fast as possible (deterministic)
  cortexlink run closed_loop --bus redis --redis auto
                                                     dsp + decoder in a child process over Redis Streams
  cortexlink run --session my_session.yaml --clock fast
                                                     a `cortexlink session` file run on the runtime
  cortexlink run GRAPH.yaml --node dsp --redis redis://10.0.0.2:6379
                                                     run node(s) of a running graph here (another host)

A graph (YAML) names its nodes, their params, inputs, placement (where: main | subprocess |
external) and optionally the CPUs of their process (cpus: [1]); see cortexlink.runtime.graph.
Faults (source stall, node failure, a child process that died, NaN or out-of-range decoder
output, a lost Redis server) stop the cursor within one bin and are reported on stderr and in
summary.json. A run that cannot go on (a critical node given up on after repeated failures, the
Redis server lost) halts the cursor, ends, writes summary.json with its "failure" and exits 1;
SIGINT, SIGTERM or SIGHUP stop it cleanly (summary written, child processes, recorders and the
private redis-server closed) with exit status 128 + the signal.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a graph of nodes (closed loop on the real-time runtime)",
                       description="Run a graph: nodes in this process (in-process bus, the default) or in "
                                   "several processes or hosts over Redis Streams, with a watchdog that stops "
                                   "the cursor on any fault and a supervisor that restarts failed nodes.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("graph", nargs="?", default=None,
                   help="graph YAML file or built-in name (closed_loop); a worker (--node) may omit it and "
                        "read the graph from Redis")
    p.add_argument("--session", type=Path, default=None,
                   help="run a session file (cortexlink session format) as a graph instead of GRAPH")
    p.add_argument("--bus", choices=("inprocess", "redis"), default=None,
                   help="message bus (default: the graph's, in-process unless it says redis)")
    p.add_argument("--redis", default=None, metavar="auto|URL",
                   help="Redis server: 'auto' starts a private redis-server on 127.0.0.1 that this host's "
                        "processes reach over a Unix socket (the graph's bus.socket: tcp for TCP), or "
                        "redis://host:port, or unix:///path (implies --bus redis)")
    p.add_argument("--seconds", type=float, default=None, help="run length in source time (default: the graph's)")
    p.add_argument("--clock", choices=("realtime", "fast"), default=None,
                   help="realtime: sources paced by the wall clock; fast: as fast as possible, deterministic")
    p.add_argument("--out", type=Path, default=Path("runs"),
                   help="parent folder of the run folder (summary.json, recordings, logs; default runs/); not a "
                        "system folder nor inside a recorded session")
    p.add_argument("--node", default=None, metavar="NAME[,NAME]",
                   help="worker mode: run only these nodes of a running graph, connected over --redis")
    p.add_argument("--run-id", default=None, help="worker mode: the run to join (default: the latest on that Redis)")
    p.add_argument("--start-at-end", action="store_true", help="worker mode: read only new messages (restart)")
    p.add_argument("--placement", choices=("main", "subprocess"), default="main",
                   help="with --session: where the dsp and decoder run (subprocess needs the Redis bus)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON only")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cortexlink.core.errors import ConfigError
    from cortexlink.core.outpath import check_name, check_output_dir, new_run_folder
    from cortexlink.runtime.graph import load_graph
    from cortexlink.runtime.session import session_to_graph
    from cortexlink.runtime.runner import GraphRunner

    if args.node:
        names = [n for n in args.node.split(",") if n]
        if not args.redis:
            raise ConfigError("--node needs --redis URL (the Redis server of the running graph)")
        check_output_dir(args.out, what="--out", create=False)
        res = GraphRunner(args.graph, nodes=names, redis_url=args.redis, run_id=args.run_id,
                          start_at_end=args.start_at_end, out_dir=args.out).run()
        if args.json:
            print(json.dumps(res, indent=1, default=str))
        return _failed(res)
    if args.session is not None:
        graph = session_to_graph(args.session, clock=args.clock or "fast", placement=args.placement, chunk_ms=1.0)
    elif args.graph is not None:
        graph = args.graph
    else:
        raise ConfigError("give a graph (file or built-in name, e.g. closed_loop) or --session FILE")
    g = load_graph(graph)
    check_name(g["name"], what="graph name")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = new_run_folder(args.out, f"{stamp}-{g['name']}")
    res = GraphRunner(graph, seconds=args.seconds, bus=args.bus, redis_url=args.redis, clock=args.clock,
                      out_dir=run_dir).run()
    (run_dir / "summary.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    if args.json:
        print(json.dumps(res, indent=1, default=str))
    else:
        _print_summary(res, run_dir)
    return _failed(res, run_dir)


def _failed(res: dict, run_dir: Path | None = None) -> int:
    """1 when the run ended on a failure (a critical node given up on, a lost bus: said on stderr), else 0."""
    f = res.get("failure")
    if not f:
        return 0
    where = f"; summary: {run_dir / 'summary.json'}" if run_dir is not None else ""
    print(f"cortexlink: error: the run ended on a failure ({f['kind']}, {f['node']}): {f['message']}{where}",
          file=sys.stderr)
    return 1


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _print_summary(res: dict, run_dir: Path) -> None:
    print(f"\ncortexlink run '{res['graph']}' — bus {res['bus']}, clock {res['clock']}, "
          f"{res['seconds']:.1f} s source time in {res['wall_s']:.1f} s wall; stopped: {res['stop_reason']}")
    print(f"  {'node':<14}{'state':<10}{'in':>9}{'out':>9}{'dropped':>9}{'fail':>6}{'restart':>8}"
          f"{'missed':>8}{'step mean ms':>14}{'step max ms':>13}")
    for name, n in res["nodes"].items():
        print(f"  {name:<14}{_fmt(n.get('state')):<10}{_fmt(n.get('n_in')):>9}{_fmt(n.get('n_out')):>9}"
              f"{_fmt(n.get('n_dropped')):>9}{_fmt(n.get('n_failures')):>6}{_fmt(n.get('n_restarts')):>8}"
              f"{_fmt(n.get('n_missed')):>8}{_fmt(n.get('step_mean_ms')):>14}{_fmt(n.get('step_max_ms')):>13}")
    for name, n in res["nodes"].items():
        s = n.get("summary") or {}
        lat = s.get("loop_latency_ms")
        if lat and lat.get("n"):
            print(f"  {name}: chunk → cursor latency p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms, "
                  f"max {lat['max_ms']:.3f} ms over {lat['n']} bins")
        for b in s.get("blocks", []):
            m = b.get("metrics")
            if not m:
                continue
            keys = [k for k in ("bps", "ntpm", "accuracy", "success_rate", "trials_per_min", "n_moves",
                                "seconds_per_move") if k in m]
            figs = ", ".join(f"{k} {_fmt(m[k])}" for k in keys)
            print(f"  block {b['name']} ({b['task']}, {b['mode']}, {b['seconds']:.0f} s): {figs}")
    if res["fault_counts"]:
        print("  faults: " + ", ".join(f"{k} x{v}" for k, v in sorted(res["fault_counts"].items())))
    print(f"  run folder: {run_dir}  (summary.json)")
    sys.stdout.flush()
