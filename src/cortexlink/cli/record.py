"""``cortexlink record``: record a simulated closed-loop session into a crash-safe session folder."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record", help="record a session (simulated implant) into a crash-safe session folder",
        description="Runs a simulated closed-loop session (open-loop centre-out calibration for 60% of the "
                    "time, Kalman + click decoder fit, closed-loop centre-out for the rest; calibration only "
                    "under 6 s) and records every stream: raw samples, features, cursor, decoder outputs, "
                    "the participant's intent, task and block events, decoders as they go live, provenance. "
                    "The folder survives a crash: run `cortexlink recover DIR` afterwards.")
    p.add_argument("--sim", action="store_true", help="use the simulated implant and participant (the only source "
                   "for now; graphs with other sources record through `cortexlink run`)")
    p.add_argument("--channels", type=int, default=1024, help="number of electrodes (default: 1024)")
    p.add_argument("--seconds", type=float, default=30.0, help="session length in seconds (default: 30)")
    p.add_argument("--out", type=Path, required=True,
                   help="session folder to create (new or empty; not a system folder nor inside another session); "
                        "the file system must have room for the whole session (checked before it starts)")
    p.add_argument("--seed", type=int, default=0, help="simulator seed (default: 0)")
    p.add_argument("--preset", default="default", help="implant preset (default: default)")
    p.add_argument("--participant", default="sim-0001", help="pseudonymous participant code (default: sim-0001)")
    p.add_argument("--no-raw", action="store_true", help="do not record raw samples (features and behaviour only)")
    p.add_argument("--raw-codec", choices=("none", "rice", "range", "lms", "lms-fast"), default="none",
                   help="store raw samples compressed with the lossless codec, encoded on the recorder's writer "
                        "thread: 'rice' (fast; ~1.9x on simulated 1,024 channels), 'range' (~4%% smaller, ~2.5x "
                        "slower) or 'lms' (~7%% smaller than rice, ~5x slower); read back transparently. Check that it keeps up with your channel count: "
                        "`cortexlink bench record --peers cortexlink-rice` (default: none)")
    p.add_argument("--realtime", action="store_true", help="pace the session to the wall clock")
    p.add_argument("--on-full", choices=("drop", "block", "fail"), default="drop",
                   help="what happens when the writer queue is full (default: drop, counted and recorded)")
    p.add_argument("--catalogue", default=None,
                   help="SQLite catalogue to register the session in (default: $CORTEXLINK_CATALOGUE or "
                        "~/.cortexlink/catalogue.sqlite; 'none' to skip)")
    p.add_argument("--status-interval", type=float, default=1.0,
                   help="seconds between status lines on stderr (default: 1; 0 for none)")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.set_defaults(func=run)


def session_config(channels: int, seconds: float, seed: int, preset: str) -> dict:
    """The session ``record --sim`` runs."""
    from cortexlink.core.validation import check_positive

    check_positive("channels", channels, integer=True)
    check_positive("seconds", seconds)
    ct = {"click": True}
    if seconds < 6.0:
        blocks = [{"name": "calibration", "kind": "calibration", "task": "centre_out", "seconds": seconds,
                   "task_params": ct}]
        dec = {"kind": "kalman", "params": {}}
        clk = {"enabled": False, "params": {}}
    else:
        cal = round(0.6 * seconds, 2)
        blocks = [{"name": "calibration", "kind": "calibration", "task": "centre_out", "seconds": cal,
                   "task_params": ct},
                  {"name": "fit", "kind": "fit"},
                  {"name": "closed-loop", "kind": "closed_loop", "task": "centre_out",
                   "seconds": round(seconds - cal, 2), "task_params": ct}]
        dec = {"kind": "kalman", "params": {}}
        clk = {"enabled": True, "params": {}}
    return {"name": "record", "seed": seed, "implant": {"preset": preset, "n_channels": channels},
            "participant": {}, "loop": {"dt_s": 0.02}, "decoder": dec, "click_decoder": clk, "blocks": blocks}


def check_space(out: Path, channels: int, seconds: float, *, raw: bool = True, fs_hz: float = 30000.0,
                free_bytes: int | None = None, file_limit_bytes: int | None = None) -> int:
    """Refuse a recording that cannot fit before it starts; return the bytes it needs.

    The plan is for the real channel count and rate: every stream of ``seconds`` of ``channels``
    at ``fs_hz`` (:func:`~cortexlink.io.session_log.estimate_bytes`), against the free space of
    ``out``'s file system, and its largest file (the raw stream, else the features) against the
    largest file this process may write (``RLIMIT_FSIZE``, ``ulimit -f``).

    Parameters
    ----------
    free_bytes, file_limit_bytes : int, optional
        The figures to plan against instead of the measured ones
        (:func:`cortexlink.core.outpath.space_for`), e.g. to simulate a small disk.

    Raises
    ------
    InsufficientDiskSpace
        Naming what the session needs, what there is, and what to change.
    """
    from cortexlink.core.outpath import space_for
    from cortexlink.io.session_log import InsufficientDiskSpace, estimate_bytes

    need = estimate_bytes(channels, fs_hz, seconds, raw=raw)
    free, limit = space_for(out)
    free = free if free_bytes is None else int(free_bytes)
    limit = limit if file_limit_bytes is None else int(file_limit_bytes)
    what = f"{seconds:g} s of {channels} channels at {fs_hz:g} Hz" + ("" if raw else " without raw")
    if free < need:
        raise InsufficientDiskSpace(f"recording {what} needs about {need / 1e6:,.1f} MB; the file system of {out} "
                                    f"has {free / 1e6:,.1f} MB free: free some space, choose another --out, or "
                                    "record fewer --seconds or --channels (or --no-raw)")
    largest = (estimate_bytes(channels, fs_hz, seconds, raw=True) - estimate_bytes(channels, fs_hz, seconds, raw=False)
               if raw else estimate_bytes(channels, fs_hz, seconds, raw=False))
    if limit is not None and limit < largest:
        raise InsufficientDiskSpace(f"recording {what} writes a stream file of about {largest / 1e6:,.1f} MB; this "
                                    f"process may write files of at most {limit / 1e6:,.1f} MB (ulimit -f): raise "
                                    "the limit or record fewer --seconds or --channels")
    return need


class _Status:
    """Prints one status line per interval on stderr (flushed, for supervisors and tests): called
    with each bin's row of the running session."""

    def __init__(self, rec: Any, interval: float, fs_hz: float = 30000.0) -> None:
        self.rec, self.interval, self.fs_hz, self.last = rec, interval, fs_hz, 0.0

    def __call__(self, row: Any) -> None:
        now = time.monotonic()
        if self.interval and now - self.last >= self.interval:
            self.last = now
            st = self.rec.stats()
            s = row.sample
            print(f"status sample={s} seconds={s / self.fs_hz:.3f} "
                  f"queue_bytes={st['queue_bytes']} dropped={st['dropped_total']}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from cortexlink.core.errors import ConfigError
    from cortexlink.core.outpath import check_output_dir
    from cortexlink.io.session_log import SessionRecorder
    from cortexlink.runtime import session as sess

    if not args.sim:
        raise ConfigError("record needs a source: --sim (simulated implant); other sources record through "
                          "`cortexlink run GRAPH.yaml` with a recorder node")
    cfg = sess.load_session(session_config(args.channels, args.seconds, args.seed, args.preset))
    check_output_dir(args.out, what="--out", create=False, new=True)
    planned_s = args.seconds + 2.0
    need = check_space(args.out, args.channels, planned_s, raw=not args.no_raw)
    cat: Any = None if args.catalogue is None else (False if args.catalogue.lower() == "none" else args.catalogue)
    if cat is None:
        from cortexlink.io.catalogue import default_catalogue_path
        cat = default_catalogue_path()
    rec = SessionRecorder(args.out, fs_hz=30000.0, config=cfg, seeds={"seed": args.seed},
                          participant_id=args.participant, expected_seconds=planned_s, expected_bytes=need,
                          raw=not args.no_raw, on_full=args.on_full, catalogue=cat, raw_codec=args.raw_codec)
    try:
        res = sess.run_session(cfg, progress=sys.stderr.isatty(), recorder=rec, realtime=args.realtime,
                               record_raw=not args.no_raw, on_bin=_Status(rec, args.status_interval))
    finally:
        manifest = rec.close()
    out = {"folder": str(args.out), "session_id": manifest["session_id"], "state": manifest["state"],
           "streams": {k: {"records": v["records"], "rows": v["rows"], "bytes": v["bytes"]}
                       for k, v in manifest["streams"].items()},
           "dropped": manifest.get("dropped", {}), "blocks": res["summary"]["blocks"]}
    if args.json:
        print(json.dumps(out, indent=1, default=str))
    else:
        raw = out["streams"].get("raw", {})
        print(f"recorded {out['folder']} ({out['state']}): {len(out['streams'])} streams, "
              f"{raw.get('rows', 0)} raw samples, dropped {sum(d['items'] for d in out['dropped'].values())}")
        for b in out["blocks"]:
            if "metrics" in b:
                m = {k: round(v, 3) for k, v in b["metrics"].items() if isinstance(v, (int, float))}
                print(f"  {b['name']}: {m}")
    return 0 if manifest["state"] == "closed" else 1

