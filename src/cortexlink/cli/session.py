"""``cortexlink session``: run, check or print a closed-loop session described in YAML."""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("session", help="run, check or print a closed-loop session (YAML)",
                       description="Closed-loop sessions: open-loop calibration, decoder fit, closed loop, "
                                   "ReFIT refit and evaluation blocks (centre-out, Webgrid, chess), described "
                                   "in a YAML file. 'example' prints the built-in demo session to start from.")
    ssub = p.add_subparsers(dest="session_cmd", metavar="ACTION")
    ssub.required = True
    r = ssub.add_parser("run", help="run a session file and write a run folder")
    r.add_argument("file", type=Path, help="session YAML")
    r.add_argument("--out", type=Path, default=Path("runs"), help="parent folder of the run folder (default: runs/)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_record_option(r)
    add_redis_option(r)
    r.set_defaults(func=_run)
    c = ssub.add_parser("check", help="validate a session file and print it with defaults filled in",
                        description="Makes every check `session run` makes (the decoders' own parameter "
                                    "checks too) and prints the session with its defaults filled in. Session "
                                    "files are at most 1 MB of UTF-8 YAML, nested at most 64 levels, without "
                                    "alias bombs; a block lasts at most 24 h.")
    c.add_argument("file", type=Path, help="session YAML")
    c.set_defaults(func=_check)
    e = ssub.add_parser("example", help="print the built-in demo session as YAML")
    e.set_defaults(func=_example)
    g = ssub.add_parser("graph", help="print the runtime graph a session file compiles to (YAML)",
                        description="Every session runs as a runtime graph (participant, implant, dsp, decoder, "
                                    "cursor, trace/recorder nodes); this prints that graph, which `cortexlink run "
                                    "FILE` also runs.")
    g.add_argument("file", type=Path, nargs="?", default=None, help="session YAML (default: the demo session)")
    g.add_argument("--placement", choices=("main", "subprocess"), default="main",
                   help="where the dsp and decoder run (subprocess: a child process over Redis)")
    g.add_argument("--clock", choices=("fast", "realtime"), default="fast", help="the graph's clock (default: fast)")
    g.set_defaults(func=_graph)


def _run(args: argparse.Namespace) -> int:
    from cortexlink.runtime.session import load_session

    return run_and_report(load_session(args.file), args.out, progress=not args.no_progress, record=args.record,
                          redis=args.redis)


def _graph(args: argparse.Namespace) -> int:
    import yaml

    from cortexlink.runtime.session import session_to_graph

    g = session_to_graph(args.file, clock=args.clock, placement=args.placement, trace=True)
    print(yaml.safe_dump(g, sort_keys=False), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    import yaml

    from cortexlink.runtime.session import load_session

    print(yaml.safe_dump(load_session(args.file), sort_keys=False), end="")
    return 0


def _example(args: argparse.Namespace) -> int:
    import yaml

    from cortexlink.runtime.session import DEFAULT_SESSION

    print(yaml.safe_dump(DEFAULT_SESSION, sort_keys=False), end="")
    return 0


def add_record_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--record", choices=("none", "behaviour", "raw", "raw-rice", "raw-range", "raw-lms",
                                           "raw-lms-fast"), default="none",
                   help="record the session into RUN_FOLDER/recording: 'behaviour' = features, cursor, decoder "
                        "outputs, intent and events; 'raw' = also every raw sample (1024 ch: ~61 MB per second; "
                        "free space is checked first); 'raw-rice' / 'raw-range' / 'raw-lms' / 'raw-lms-fast' = raw "
                        "stored with the lossless codec (~1.9-2x smaller, read back transparently). Default: none")


def add_redis_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", default=None, metavar="URL",
                   help="run the dsp and decoder in a child process over Redis Streams: 'auto' starts a private "
                        "redis-server on 127.0.0.1, or give redis://host:port (default: one process)")


def run_and_report(cfg: dict, out_parent: Path, *, progress: bool = True, record: str = "none",
                   redis: str | None = None) -> int:
    """Run a validated session on the runtime graph, write its run folder and print the summary table."""
    from cortexlink.core.outpath import check_name, new_run_folder
    from cortexlink.runtime.session import SessionStopped, run_session
    from cortexlink.tasks.report import summary_table, write_run_folder

    ch = cfg["implant"].get("n_channels")
    check_name(cfg["name"], what="session name")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = new_run_folder(out_parent, f"{stamp}-{cfg['name']}" + (f"-{ch}ch" if ch else ""))
    recorder = None
    if record != "none":
        from cortexlink.io.catalogue import default_catalogue_path
        from cortexlink.io.session_log import SessionRecorder, estimate_bytes

        secs = sum(b.get("seconds") or b.get("max_seconds") or 0.0 for b in cfg["blocks"])
        raw = record.startswith("raw")
        need = estimate_bytes(int(ch or 0), 30000.0, secs, raw=raw)
        recorder = SessionRecorder(run_dir / "recording", config=cfg, seeds={"seed": cfg["seed"]},
                                   expected_bytes=need, raw=raw, catalogue=default_catalogue_path(),
                                   raw_codec=record.partition("-")[2] or "none")
    try:
        kw = {"out_dir": run_dir} if cfg.get("stimulation") else {}   # the interlock's audit log
        result = run_session(cfg, progress=progress, recorder=recorder, record_raw=record.startswith("raw"),
                             redis=redis, **kw)
    except SessionStopped as exc:               # a failure or a stop signal: what ran goes to summary.json
        import json

        (run_dir / "summary.json").write_text(json.dumps({"session": cfg["name"], "completed": False, "stopped": str(exc),
                                                          "runtime": exc.run}, indent=1, default=str) + "\n")
        raise SessionStopped(f"{exc}; what ran: {run_dir / 'summary.json'}", exc.run) from None
    finally:
        if recorder is not None:
            recorder.close()
    if cfg.get("task") == "speech":
        return _report_speech(cfg, result, run_dir, recorder is not None)
    write_run_folder(result, run_dir)
    rows = summary_table(result["summary"])
    w = max(len(k) for k, _ in rows)
    print(f"\ncortexlink session '{cfg['name']}' — simulated participant, {result['summary']['channels']} channels")
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")
    print(f"  {'run folder':<{w}}  {run_dir}  (report.html, summary.json, session.yaml, traces/, *.pgn"
          + (", stim_audit.jsonl" if cfg.get("stimulation") else "")
          + (", recording/" if recorder is not None else "") + ")")
    sys.stdout.flush()
    return 0


def _report_speech(cfg: dict, result: dict, run_dir: Path, recorded: bool) -> int:
    """A speech session's run folder (summary.json, session.yaml, trials.json: every sentence with
    its decoded text) and its summary table."""
    import json

    import yaml

    from cortexlink.core.jsonutil import json_default

    summ = result["summary"]
    (run_dir / "summary.json").write_text(json.dumps(summ, indent=1, default=json_default) + "\n")
    (run_dir / "trials.json").write_text(json.dumps(result.get("trials", []), indent=1, default=json_default) + "\n")
    (run_dir / "session.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(cfg, default=json_default)),
                                                         sort_keys=False))

    def pct(v: object) -> str:
        return "-" if not isinstance(v, (int, float)) or v != v else f"{100 * v:.1f} %"

    print(f"\ncortexlink speech session '{cfg['name']}' — simulated participant, {summ['electrodes']} electrodes")
    for b in summ["blocks"]:
        m = b.get("metrics") or {}
        if b["kind"] == "fit":
            fits = (summ.get("phoneme_decoder") or {}).get("fit_seconds") or []
            print(f"  {b['name']:<14} phoneme decoder fitted on {(summ.get('phoneme_decoder') or {}).get('n_train_trials')} "
                  f"sentences" + (f" in {fits[-1]:.0f} s" if fits else ""))
        elif b["kind"] == "calibration":
            print(f"  {b['name']:<14} {b.get('n_trials', 0)} sentences attempted ({b.get('seconds', 0):.0f} s)")
        else:
            wpm = m.get("words_per_min")
            print(f"  {b['name']:<14} {m.get('n_decoded', 0)} sentences: PER {pct(m.get('per'))}, WER {pct(m.get('wer_lm'))} "
                  f"(no LM {pct(m.get('wer_no_lm'))})" + (f", {wpm:.0f} words/min" if isinstance(wpm, float) and wpm == wpm else ""))
    print(f"  {'run folder':<14} {run_dir}  (summary.json, trials.json, session.yaml"
          + (", recording/" if recorded else "") + ")")
    sys.stdout.flush()
    return 0
