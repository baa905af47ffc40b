"""Fault cases: runtime (see :mod:`cortexlink.bench.faults`).

Each case runs the live loop as a user would — ``cortexlink run`` on a short graph (a simulated
64-channel implant, a 4-8 s calibration, a fit, a closed-loop block; the dsp and decoder in a
child process over ``--redis auto`` where the case is about processes), or the operator graph
driven through its ``operator.commands`` topic — breaks one thing while it runs (kills the
redis-server or the child process, makes a node raise, sends signals), and reports what the run
did: its exit status and message, its ``summary.json``, the processes and temporary folders it
left behind, and ``cursor_halted_within_bins``: the cursor bins recorded after the fault before
the first halted one (0: no bin moved the cursor after the fault before it was held), read from
the run's own recording (the ``cursor`` stream: each bin's entry time and ``halted`` flag) and
fault events.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from cortexlink.bench.faults.base import Outcome, case

_HALTS = ("source_stall", "node_down", "decoder_nan", "decoder_out_of_range", "pipeline_stall", "bus_down",
          "fit_failed")


# -- the graph and the run -----------------------------------------------------------------------
def _graph(work: Path, *, cal_s: float = 4.0, cl_s: float = 4.0, split: bool = True, name: str = "faults",
           inject: dict | None = None, restart: dict | None = None) -> Path:
    """A short closed-loop graph (64 channels) as a file; ``split``: dsp + decoder in a child process."""
    where = {"where": "subprocess", "group": "pipeline"} if split else {}
    nodes = {
        "participant": {"kind": "participant", "params": {"seed": 0}, "inputs": {"cursor": "cursor.state"}},
        "implant": {"kind": "sim_source", "params": {"seed": 0, "config": {"n_channels": 64}, "chunk_ms": 5},
                    "inputs": {"intent": "participant.intent"}},
        "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}}, "inputs": {"raw": "implant.raw"}, **where},
        "decoder": {"kind": "decoder", "params": {"decoder": "kalman", "click": True},
                    "inputs": {"features": "dsp.features", "labels": "participant.intent", "control": "cursor.control"},
                    **where},
        "cursor": {"kind": "cursor", "params": {"seed": 0, "decoder_kind": "kalman", "blocks": [
            {"name": "calibration", "kind": "calibration", "task": "centre_out", "seconds": cal_s,
             "task_params": {"click": True}},
            {"name": "fit", "kind": "fit"},
            {"name": "closed-loop", "kind": "closed_loop", "task": "centre_out", "seconds": cl_s,
             "task_params": {"click": True}}]},
            "inputs": {"intent": "decoder.intent", "participant": "participant.intent"}},
        "recorder": {"kind": "recorder", "params": {"raw": False},
                     "inputs": {"features": "dsp.features", "intent": "decoder.intent", "cursor": "cursor.state",
                                "events": "cursor.events"}},
    }
    for n, inj in (inject or {}).items():
        nodes[n]["inject"] = inj
    g = {"name": name, "bin_ms": 20, "clock": "realtime", "stats_after_s": 1.0,
         "watchdog": {"stall_ms": 250, "output_timeout_ms": 500}, "restart": restart or {"max_restarts": 3, "window_s": 60},
         "nodes": nodes}
    p = work / f"{name}.yaml"
    p.write_text(json.dumps(g))           # JSON is YAML
    return p


class _Run:
    """``cortexlink -v run GRAPH`` in a child process, its output in files under ``work``."""

    def __init__(self, work: Path, graph: Path, *extra: str) -> None:
        self.out = work / "runs"
        self.err_path = work / "stderr.txt"
        self.out_path = work / "stdout.txt"
        cmd = [sys.executable, "-m", "cortexlink.cli.main", "-v", "run", str(graph), "--out", str(self.out), *extra]
        with open(self.out_path, "wb") as o, open(self.err_path, "wb") as e:
            self.proc = subprocess.Popen(cmd, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.pid = self.proc.pid

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    @property
    def run_dir(self) -> Path | None:
        got = sorted(self.out.glob("*/")) if self.out.is_dir() else []
        return got[0] if got else None

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def events(self) -> list[dict]:
        """The run's task/block events recorded so far (empty before the recorder wrote any)."""
        from cortexlink.io.session_log import SessionReader

        d = self.run_dir
        if d is None or not (d / "recorder" / "streams" / "events.clog").is_file():
            return []
        try:
            return SessionReader(d / "recorder", salvage=True).events()
        except Exception:  # noqa: BLE001 - a stream being written may end in a partial record
            return []

    def block_started(self, name: str) -> bool:
        return any(e.get("kind") == "block_start" and e.get("name") == name for e in self.events())

    def summary(self) -> dict | None:
        d = self.run_dir
        try:
            return json.loads((d / "summary.json").read_text()) if d is not None else None
        except (OSError, ValueError):
            return None


def _wait_for(pred: Callable[[], Any], timeout_s: float, step_s: float = 0.1) -> Any:
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        v = pred()
        if v:
            return v
        time.sleep(step_s)
    return None


def _children(pid: int) -> list[tuple[int, str]]:
    """Direct child processes of ``pid`` (Linux /proc): ``(pid, command line)``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid == pid:
                out.append((int(d.name), (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
        except (OSError, ValueError):
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _tree(run: _Run) -> dict:
    """The run's redis-server and worker processes (pids) and the redis-server's folder."""
    kids = _children(run.pid)
    redis = [p for p, c in kids if "redis-server" in c]
    workers = [p for p, c in kids if "--node" in c]
    folder = None
    if redis:
        try:
            folder = os.readlink(f"/proc/{redis[0]}/cwd")
        except OSError:
            pass
    return {"redis": redis, "workers": workers, "folder": folder}


def _leftovers(tree: dict) -> list[str]:
    """What outlived the run: processes still alive, the redis-server's folder still there."""
    left = [f"pid {p} still running" for p in tree["redis"] + tree["workers"] if _alive(p)]
    if tree["folder"] and os.path.isdir(tree["folder"]):
        left.append(f"{tree['folder']} left behind")
    return left


def _halt_bins(run: _Run, summary: dict | None, fault_ns: int | None) -> int | None:
    """Cursor bins recorded after ``fault_ns`` (monotonic) before the first halted one; None when the
    cursor was never halted after the fault."""
    if summary is None or fault_ns is None:
        return None
    halt = min((e["mono_ns"] for e in summary.get("faults", ()) if e.get("kind") in _HALTS
                and e.get("severity") == "halt" and e.get("mono_ns", 0) >= fault_ns), default=None)
    rows = []
    d = run.run_dir
    if d is not None and (d / "recorder" / "streams" / "cursor.clog").is_file():
        from cortexlink.io.session_log import SessionReader

        try:
            rows = [(r.host_time_ns, bool(r.data[0][5])) for r in SessionReader(d / "recorder", salvage=True).records("cursor")]
        except Exception:  # noqa: BLE001 - no rows: counted from the events alone
            rows = []
    n = 0
    for t, halted in rows:
        if t < fault_ns:
            continue
        if halted or (halt is not None and t >= halt):
            return n
        n += 1
    return n if halt is not None else None


def _message(run: _Run, *needles: str) -> bool:
    text = run.stderr + run.out_path.read_text(errors="replace")
    return "Traceback (most recent call last)" not in text and all(n.lower() in text.lower() for n in needles)


def _last_error(run: _Run) -> str:
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("cortexlink:")]
    return (lines[-1] if lines else "")[:220]


def _started(run: _Run, block: str = "calibration", timeout_s: float = 60.0) -> bool:
    """Wait until the graph runs its block ``block`` (and, split, its child process is there)."""
    return bool(_wait_for(lambda: run.block_started(block) or run.proc.poll() is not None, timeout_s, 0.2)) \
        and run.proc.poll() is None


# -- redis-server death and restart ----------------------------------------------------------------
def _redis_dies(work: Path, sig: int) -> Outcome:
    run = _Run(work, _graph(work, cal_s=30.0), "--redis", "auto")
    if not _started(run):
        return Outcome(False, exit_code=run.wait(30), message_ok=False, detail="the run did not start: " + _last_error(run))
    time.sleep(1.0)
    tree = _tree(run)
    if not tree["redis"]:
        run.proc.kill()
        return Outcome(False, exit_code=run.wait(30), message_ok=False, detail="no redis-server under the run")
    t_fault = time.monotonic_ns()
    os.kill(tree["redis"][0], sig)
    rc = run.wait(60)
    s = run.summary()
    left = _leftovers(tree)
    fail = (s or {}).get("failure") or {}
    ok = rc == 1 and fail.get("kind") == "bus_lost" and not left
    return Outcome(ok, data_lost=False, cursor_halted_within_bins=_halt_bins(run, s, t_fault), exit_code=rc,
                   message_ok=_message(run, "lost the message bus"),
                   detail=f"{_last_error(run)}" + (f"; left: {left}" if left else "; nothing left behind"))


@case("runtime", timeout_s=120, needs=("redis-server",))
def redis_killed_mid_run(work: Path) -> Outcome:
    """redis-server killed (SIGKILL) during `run --redis auto`: bus_lost, cursor halted, exit 1, summary, no orphans."""
    return _redis_dies(work, signal.SIGKILL)


@case("runtime", timeout_s=120, needs=("redis-server",))
def redis_terminated_mid_run(work: Path) -> Outcome:
    """redis-server stopped (SIGTERM) during `run --redis auto`: as killed (bus_lost, exit 1, summary)."""
    return _redis_dies(work, signal.SIGTERM)


@case("runtime", timeout_s=120, needs=("redis-server",))
def redis_restarted_mid_run(work: Path) -> Outcome:
    """redis-server killed and started again on the same port: the run ends cleanly, it does not reconnect."""
    from cortexlink.runtime.redis_server import RedisServer, connect

    srv = RedisServer().start()
    port = srv.port
    run = _Run(work, _graph(work, cal_s=30.0), "--redis", srv.url)
    again = None
    try:
        if not _started(run):
            return Outcome(False, exit_code=run.wait(30), message_ok=False, detail="the run did not start")
        time.sleep(1.0)
        t_fault = time.monotonic_ns()
        os.kill(srv.pid, signal.SIGKILL)
        srv.stop()
        again = RedisServer(port=port).start()
        rc = run.wait(60)
        keys = connect(again.url).keys("cl:*")
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        for s in (srv, again):
            if s is not None:
                s.stop()
    s = run.summary()
    fail = (s or {}).get("failure") or {}
    ok = rc == 1 and fail.get("kind") == "bus_lost" and not keys
    return Outcome(ok, data_lost=False, cursor_halted_within_bins=_halt_bins(run, s, t_fault), exit_code=rc,
                   message_ok=_message(run, "lost the message bus"),
                   detail=f"{_last_error(run)}; keys written to the restarted server: {len(keys)} (no reconnect)")


# -- a critical node that keeps raising ------------------------------------------------------------
def _keeps_raising(work: Path, node: str, steps: range) -> Outcome:
    g = _graph(work, cal_s=30.0, split=False, inject={node: {"fail_at_steps": list(steps)}})
    run = _Run(work, g, "--seconds", "20")
    rc = run.wait(90)
    s = run.summary() or {}
    fail = s.get("failure") or {}
    n_drop = run.stderr.count("FAULT dropped")
    first = min((e["mono_ns"] for e in s.get("faults", ()) if e.get("kind") == "node_failed"), default=None)
    ok = (rc == 1 and fail.get("kind") == "node_stopped" and fail.get("node") == node
          and "InjectedFault" in str(fail.get("error")) and s.get("seconds", 20.0) < 19.0 and n_drop <= 3)
    return Outcome(ok, data_lost=None, cursor_halted_within_bins=_halt_bins(run, s, first), exit_code=rc,
                   message_ok=_message(run, node, "InjectedFault"),
                   detail=f"{_last_error(run)}; ended after {s.get('seconds', float('nan')):.1f} s of 20; "
                          f"{n_drop} 'dropped' warning(s)")


@case("runtime", timeout_s=120)
def decoder_keeps_raising(work: Path) -> Outcome:
    """The decoder raises at steps 100-107 (`run --seconds 20`): stopped, cursor halted, run ends, exit 1, no log flood."""
    return _keeps_raising(work, "decoder", range(100, 108))


@case("runtime", timeout_s=120)
def source_keeps_raising(work: Path) -> Outcome:
    """The implant (source) raises at steps 100-107: stopped, cursor halted, run ends naming it, exit 1."""
    return _keeps_raising(work, "implant", range(100, 108))


# -- the child process killed ----------------------------------------------------------------------
def _child_killed(work: Path, block: str) -> Outcome:
    run = _Run(work, _graph(work, cal_s=8.0, cl_s=6.0), "--redis", "auto")
    if not _started(run, block, 90):
        return Outcome(False, exit_code=run.wait(30), message_ok=False, detail=f"block {block} did not start")
    time.sleep(2.0)
    tree = _tree(run)
    if not tree["workers"]:
        run.proc.kill()
        return Outcome(False, exit_code=run.wait(30), message_ok=False, detail="no child process under the run")
    t_fault = time.monotonic_ns()
    os.kill(tree["workers"][0], signal.SIGKILL)
    rc = run.wait(90)
    s = run.summary() or {}
    dec = (s.get("nodes", {}).get("decoder") or {}).get("summary") or {}
    fits = dec.get("fits") or []
    rec = [e for e in s.get("faults", ()) if e.get("kind") == "decoder_recovered"]
    done = str(s.get("stop_reason", "")).endswith("schedule finished")
    cal_bins = fits[0].get("n_bins") if fits else None
    ok = rc == 0 and done and bool(rec) and bool(fits) and not _leftovers(tree)
    return Outcome(ok, data_lost=not (bool(rec) and bool(fits)),
                   cursor_halted_within_bins=_halt_bins(run, s, t_fault), exit_code=rc,
                   message_ok=_message(run) and (rc == 0 or bool(_last_error(run))),
                   detail=(f"stop: {s.get('stop_reason')}; " + (rec[0]["message"][:160] if rec else "no recovery")
                           + f"; fit on {cal_bins} of the calibration's 400 bins (the others fell while the "
                             "process was down)"))


@case("runtime", timeout_s=150, needs=("redis-server",))
def child_killed_during_calibration(work: Path) -> Outcome:
    """SIGKILL of the dsp/decoder process mid-calibration: restarted, its calibration bins kept, the fit and the run go on."""
    return _child_killed(work, "calibration")


@case("runtime", timeout_s=150, needs=("redis-server",))
def child_killed_during_closed_loop(work: Path) -> Outcome:
    """SIGKILL of the dsp/decoder process in closed loop: cursor held, restarted with its fitted decoder, the block goes on."""
    return _child_killed(work, "closed-loop")


# -- signals -----------------------------------------------------------------------------------------
def _signalled(work: Path, sigs: list[int]) -> Outcome:
    run = _Run(work, _graph(work, cal_s=30.0), "--redis", "auto")
    if not _started(run):
        return Outcome(False, exit_code=run.wait(30), message_ok=False, detail="the run did not start")
    time.sleep(1.0)
    tree = _tree(run)
    for sg in sigs:
        os.kill(run.pid, sg)
    rc = run.wait(60)
    s = run.summary() or {}
    left = _leftovers(tree)
    name = signal.Signals(sigs[0]).name
    ok = rc in {128 + int(x) for x in sigs} and "received" in str(s.get("stop_reason")) and not left \
        and s.get("failure") is None
    return Outcome(ok, data_lost=False, exit_code=rc, message_ok=_message(run, "stopped by"),
                   detail=f"stop: {s.get('stop_reason')}; {len(sigs)} signal(s) from {name}"
                          + (f"; left: {left}" if left else "; summary written, nothing left behind"))


@case("runtime", timeout_s=120, needs=("redis-server",))
def sigterm_run_redis_auto(work: Path) -> Outcome:
    """SIGTERM of `run --redis auto`: summary written, child and redis-server stopped, its folder removed, exit 143."""
    return _signalled(work, [signal.SIGTERM])


@case("runtime", timeout_s=120, needs=("redis-server",))
def sigint_run_redis_auto(work: Path) -> Outcome:
    """SIGINT (Ctrl+C) of `run --redis auto`: the same clean stop, exit 130."""
    return _signalled(work, [signal.SIGINT])


@case("runtime", timeout_s=120, needs=("redis-server",))
def sighup_run_redis_auto(work: Path) -> Outcome:
    """SIGHUP (terminal closed) of `run --redis auto`: the same clean stop, exit 129."""
    return _signalled(work, [signal.SIGHUP])


@case("runtime", timeout_s=120, needs=("redis-server",))
def signal_storm(work: Path) -> Outcome:
    """60 SIGINT/SIGTERM/SIGHUP in a burst: one clean stop, the burst cannot interrupt the clean-up."""
    return _signalled(work, [signal.SIGTERM, signal.SIGINT, signal.SIGHUP] * 20)


# -- the operator's commands -------------------------------------------------------------------------
@case("runtime", timeout_s=150, needs=("redis-server",))
def calibrate_and_stop_in_one_bin(work: Path) -> Outcome:
    """`calibrate` then `stop` in the same bin on operator.commands (graph in its own process over Redis): both applied, block_end recorded."""
    from cortexlink.io.session_log import SessionReader
    from cortexlink.web.controller import OperatorController

    ctl = OperatorController("operator", n_channels=64, record_dir=work / "rec", redis="auto").start()
    try:
        ctl.command("record_start", {"name": "one-bin"})
        link = ctl._link
        replies = []
        for _ in range(3):                               # three times, back to back on the topic
            ids = [link.send({"cmd": "calibrate", "seconds": 5.0}), link.send({"cmd": "stop"})]
            replies += [link.reply(i, 20) for i in ids]
        ctl.command("record_stop")
    finally:
        ctl.stop()
    ok_replies = [r for r in replies if r and r.get("ok")]
    ev = SessionReader(work / "rec" / "one-bin").events()
    starts = [e["name"] for e in ev if e["kind"] == "block_start"]
    ends = [e["name"] for e in ev if e["kind"] == "block_end"]
    bad = [r for r in replies if not r or not r.get("ok")]
    ok = len(ok_replies) == 6 and len(starts) == 3 and starts == ends
    return Outcome(ok, data_lost=starts != ends, exit_code=None,
                   message_ok=not any("Traceback" in str(r) or "failed:" in str((r or {}).get("error")) for r in bad),
                   detail=f"{len(ok_replies)}/6 replies ok; block_start {starts}, block_end {ends}"
                          + (f"; refused: {[(r or {}).get('error') for r in bad]}" if bad else ""))


@case("runtime", timeout_s=120)
def estop_under_load(work: Path) -> Outcome:
    """E-STOP in a burst of 300 mouse commands while a busy process loads a CPU: the cursor is held from the next bin."""
    from cortexlink.web.controller import OperatorController

    ctl = OperatorController("operator", n_channels=64, record_dir=work / "rec").start(60)
    burn = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 8\nwhile time.time() < t: pass"])
    try:
        ctl.command("mouse", {"enabled": True})
        link = ctl._link
        ids = [link.send({"cmd": "mouse_move", "x": 0.3 * (i % 3) - 0.3, "y": 0.1}) for i in range(150)]
        est = link.send({"cmd": "estop"})
        ids += [link.send({"cmd": "mouse_move", "x": 0.2, "y": -0.2}) for _ in range(150)]
        rep = link.reply(est, 20)
        cur = ctl._runner.by_name["cursor"].node
        _wait_for(lambda: cur.estop_bin is not None, 10)
        after, held = cur.estop_requested_after_bin, cur.estop_bin
        t_end = time.monotonic() + 20                      # every reply, within 20 s in all
        n_ok = sum(1 for i in ids if (link.reply(i, max(0.0, t_end - time.monotonic())) or {}).get("ok"))
    finally:
        burn.kill()
        burn.wait(10)
        ctl.stop()
    bins = None if held is None or after is None else held - after - 1
    ok = bool(rep and rep.get("ok")) and bins is not None and bins <= 0 and n_ok == 300     # none dropped
    return Outcome(ok, cursor_halted_within_bins=bins, message_ok=bool(rep and rep.get("ok")),
                   detail=f"E-STOP received after bin {after}, cursor held from bin {held}; {n_ok}/300 mouse "
                          "commands answered")
