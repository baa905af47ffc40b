"""The cases of ``cortexlink bench safety`` (see :mod:`cortexlink.bench.safety`).

Each case is ``fn(data, redis_url, workdir) -> dict``: it runs a drill, breaks it from outside
with real signals, waits (bounded: :data:`~cortexlink.bench.safety.WAIT_S` for each thing it
waits on) for what must follow, and returns what it saw — the cursor's ``states`` and ``gates``
(``(t_ns, message)`` lists), the run's ``result``, the times and pids involved — and
``figures``, the benchmark's row. A case raises :class:`~cortexlink.bench.safety.DrillTimeout`
when something it must wait for never came (the cursor never held, the run never ended); it
always stops what it started (the run, its workers, a stopped process is continued first).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from cortexlink.bench.safety import (BIN_MS, WAIT_S, Drill, DrillTimeout, RemoteOperator, alive, drill_graph,
                                     halt_figures, prepare, wait_for)

__all__ = ["CASES", "run", "print_summary", "sigkill_worker", "sigstop_worker", "redis_killed", "estop_remote", "estop_gate_restarted",
           "runner_signal", "held_between"]


def _since(items: list, t_ns: int, until_ns: int | None = None) -> list:
    return [x for t, x in items if t >= t_ns and (until_ns is None or t < until_ns)]


def held_between(states: list, t0: int, t1: int | None) -> list:
    """The cursor bins published in ``[t0, t1)`` that were *not* held (velocity zero, no click)."""
    return [s for s in _since(states, t0, t1) if not s.halted or s.velocity != (0.0, 0.0) or s.clicked]


def _release_after(gates: list, t_ns: int) -> int | None:
    return next((t for t, g in gates if t > t_ns and not g.halted), None)


def _kinds(result: dict, t_ns: int, severity: str = "halt") -> list[str]:
    return sorted({e["kind"] for e in result.get("faults", ()) if e.get("severity") == severity
                   and e.get("mono_ns", 0) >= t_ns and e["kind"] != "dropped"})


def _cont(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


# -- a worker process killed or stopped ----------------------------------------------------------------
def sigkill_worker(data: dict, redis_url: str, work: Path, group: str = "pipeline") -> dict:
    """SIGKILL of the worker process ``group`` (``pipeline``: dsp + decoder; ``acq``: the source):
    the cursor is held; the process is restarted under its nodes' policy; the cursor moves again."""
    d = Drill(data, redis_url, work)
    try:
        d.wait_moving()
        old = d.pid(group)
        t_fault = time.monotonic_ns()
        os.kill(old, signal.SIGKILL)
        t_halt = d.wait_halted(t_fault)
        wait_for(lambda: d.restarts(group) >= 1, WAIT_S, f"process {group} to be restarted")
        new = d.pid(group)
        t_release = wait_for(lambda: _release_after(d.gates(), t_halt), WAIT_S, "the gate to release the cursor")
        d.wait_moving(t_release, 10)
    except BaseException:
        d.abandon()
        raise
    res = d.finish()
    states, gates = d.states(), d.gates()
    figs = halt_figures(states, gates, t_fault)
    moving = [t for t, s in states if t > t_release and not s.halted and s.velocity != (0.0, 0.0)]
    figs.update(halted_by=_kinds(res, t_fault), restarts=res["processes"][group]["restarts"],
                recovered_s=round((moving[0] - t_fault) / 1e9, 2) if moving else None,
                outcome=f"process {group} restarted, cursor moving again")
    return {"t_fault_ns": t_fault, "t_halt_ns": t_halt, "t_release_ns": t_release, "old_pid": old, "new_pid": new,
            "states": states, "gates": gates, "result": res, "figures": figs}


def sigstop_worker(data: dict, redis_url: str, work: Path, group: str = "pipeline", hold_s: float = 1.5) -> dict:
    """SIGSTOP of the worker process ``group`` (a hung node) for ``hold_s`` after the cursor was
    held, then SIGCONT: held while it is stopped, moving again after."""
    d = Drill(data, redis_url, work)
    pid = None
    try:
        d.wait_moving()
        pid = d.pid(group)
        t_fault = time.monotonic_ns()
        os.kill(pid, signal.SIGSTOP)
        t_halt = d.wait_halted(t_fault)
        time.sleep(hold_s)                     # the fault holds: nothing may release the cursor
        t_cont = time.monotonic_ns()
        os.kill(pid, signal.SIGCONT)
        t_release = wait_for(lambda: _release_after(d.gates(), t_cont), WAIT_S, "the gate to release the cursor")
        d.wait_moving(t_release, 10)
    except BaseException:
        if pid is not None:
            _cont(pid)
        d.abandon()
        raise
    res = d.finish()
    states, gates = d.states(), d.gates()
    figs = halt_figures(states, gates, t_fault)
    moving = [t for t, s in states if t > t_release and not s.halted and s.velocity != (0.0, 0.0)]
    # bins that moved the cursor after SIGCONT on data that entered the graph before it (the
    # backlog the stopped process catches up on), and those among them older than twice the
    # watchdog's output_timeout_ms when published
    after = [m for m in d.state_messages() if m.t_pub_ns > t_cont and m.t_enter_ns and not m.payload.halted
             and m.payload.velocity != (0.0, 0.0)]
    stale = [m for m in after if m.t_enter_ns < t_cont]
    limit_ns = 2 * d.graph["watchdog"]["output_timeout_ms"] * 1e6
    old_bins = [m for m in stale if m.t_pub_ns - m.t_enter_ns > limit_ns]
    figs.update(halted_by=_kinds(res, t_fault), stopped_s=round((t_cont - t_fault) / 1e9, 2),
                stale_bins_after=len(stale), old_bins_after=len(old_bins),
                oldest_moved_ms=round(max((m.t_pub_ns - m.t_enter_ns for m in stale), default=0) / 1e6, 1),
                recovered_s=round((moving[0] - t_cont) / 1e9, 2) if moving else None,
                outcome="held while stopped, moving again after SIGCONT")
    return {"t_fault_ns": t_fault, "t_halt_ns": t_halt, "t_cont_ns": t_cont, "t_release_ns": t_release, "pid": pid,
            "states": states, "gates": gates, "result": res, "figures": figs}


# -- the redis-server killed ---------------------------------------------------------------------------
def redis_killed(data: dict, redis_url: str, work: Path) -> dict:
    """SIGKILL of the run's redis-server (a private one; ``redis_url`` is not used): bus_down, the
    cursor held, the run ends on ``bus_lost``, every worker process gone."""
    from cortexlink.runtime.redis_server import RedisServer

    srv = RedisServer(extra_args=("--hz", "500")).start()
    try:
        d = Drill(data, srv.url, work)
        try:
            d.wait_moving()
            workers = {g: d.pid(g) for g in ("acq", "pipeline")}
            t_fault = time.monotonic_ns()
            os.kill(srv.pid, signal.SIGKILL)
            t_halt = d.wait_halted(t_fault)
            d.thread.join(2 * WAIT_S)          # the run ends by itself
            t_end = time.monotonic_ns()
            ended = not d.thread.is_alive()
            gone = wait_for(lambda: not any(alive(p) for p in workers.values()), WAIT_S, "the workers to exit")
        except BaseException:
            d.abandon()
            raise
        res = d.finish()
    finally:
        srv.stop()
    states, gates = d.states(), d.gates()
    figs = halt_figures(states, gates, t_fault)
    f = res.get("failure") or {}
    figs.update(halted_by=_kinds(res, t_fault), run_ended_s=round((t_end - t_fault) / 1e9, 2) if ended else None,
                failure=f.get("kind"), workers_gone=bool(gone),
                outcome=f"run ended on {f.get('kind')}, worker processes gone")
    return {"t_fault_ns": t_fault, "t_halt_ns": t_halt, "ended_by_itself": ended, "workers": workers,
            "states": states, "gates": gates, "result": res, "figures": figs}


# -- the E-STOP ----------------------------------------------------------------------------------------
def _start_block(op: RemoteOperator) -> None:
    """Begin a closed-loop block (refused while the implant's noise calibration runs: asked again)."""
    t_end = time.monotonic() + WAIT_S
    while True:
        got = op.send({"cmd": "start", "task": "centre_out", "seconds": 600})
        if (got["reply"] or {}).get("ok"):
            return
        if time.monotonic() > t_end:
            raise DrillTimeout(f"the cursor did not start a block within {WAIT_S:g} s: {got['reply']}")
        time.sleep(0.2)


def estop_remote(data: dict, redis_url: str, work: Path) -> dict:
    """E-STOP from another process (the operator UI's Redis link) in closed loop: held from the
    next bin, also through a watchdog halt raised and cleared under it (the decoder's process
    SIGSTOPped and continued), with the decoder still asking for clicks, until the release."""
    d = Drill(data, redis_url, work, operator=True)
    op = RemoteOperator(redis_url, d.runner.run_id, work / "operator.log")
    pid = None
    try:
        _start_block(op)
        d.wait_moving()
        est = op.send({"cmd": "estop"})
        t_fault = est["t_sent_ns"]
        t_halt = d.wait_halted(t_fault)
        # under the E-STOP: a watchdog halt comes and goes; it must not release the cursor
        pid = d.pid("pipeline")
        t_stop = time.monotonic_ns()
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: any(g.halted and any(f["kind"] == "pipeline_stall" for f in g.faults)
                             for g in _since(d.gates(), t_stop)), WAIT_S, "pipeline_stall under the E-STOP")
        os.kill(pid, signal.SIGCONT)
        t_cont = time.monotonic_ns()
        t_clear = wait_for(lambda: _release_after(d.gates(), t_cont), WAIT_S, "the watchdog to clear pipeline_stall")
        # held bins after the watchdog let go, and the decoder asking for a click while held
        wait_for(lambda: len(_since(d.states(), t_clear)) >= 25
                 and any(i.click for i in _since(d.intents(), t_clear)), WAIT_S, "held bins with a click asked for")
        rel = op.send({"cmd": "release"})
        t_rel = rel["t_sent_ns"]
        d.wait_moving(t_rel, 10)
        cur = d.node("cursor")
        after, first = cur.estop_requested_after_bin, cur.estop_bin
    except BaseException:
        if pid is not None:
            _cont(pid)
        d.abandon()
        raise
    finally:
        op.close()
    res = d.finish()
    states, gates = d.states(), d.gates()
    figs = halt_figures(states, gates, t_fault)
    asked = sum(bool(i.click) for i in _since(d.intents(), t_halt, t_rel))
    figs.update(estop_bins=None if first is None or after is None else first - after - 1,
                held_bins=len(_since(states, t_halt, t_rel)), clicks_asked_while_held=asked,
                halted_by=["estop"], outcome="held from the next bin through a watchdog halt and clear, until release")
    return {"t_fault_ns": t_fault, "t_halt_ns": t_halt, "t_clear_ns": t_clear, "t_release_ns": t_rel,
            "estop_reply": est["reply"], "release_reply": rel["reply"], "estop_received_after_bin": after,
            "estop_bin": first, "states": states, "gates": gates, "intents": d.intents(), "result": res,
            "figures": figs}


def estop_gate_restarted(data: dict, redis_url: str, work: Path, while_down: bool = False) -> dict:
    """The cursor in a child process of its own (``gate``), SIGKILLed and restarted with the E-STOP
    engaged before the kill (``while_down``: sent while the process is down): the restarted cursor
    is held until the release; a restart releases nothing."""
    d = Drill(data, redis_url, work, operator=True, gate_group="gate")
    op = RemoteOperator(redis_url, d.runner.run_id, work / "operator.log")
    try:
        _start_block(op)
        d.wait_moving()
        old = d.pid("gate")
        t_fault = time.monotonic_ns()
        if not while_down:
            est = op.send({"cmd": "estop"})
            t_fault = est["t_sent_ns"]
            d.wait_halted(t_fault)
            os.kill(old, signal.SIGKILL)
        else:
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: not alive(old), WAIT_S, "the cursor's process to die")
            est = op.send({"cmd": "estop", "_reply_s": 0.2})      # nobody is there to answer
        t_kill = time.monotonic_ns()
        wait_for(lambda: d.restarts("gate") >= 1, WAIT_S, "the cursor's process to be restarted")
        # bins of the restarted cursor (it rests: the block did not survive the restart)
        t_back = wait_for(lambda: next((t for t, s in d.states() if t > t_kill), None), WAIT_S,
                          "the restarted cursor's first bin")
        wait_for(lambda: len(_since(d.states(), t_back)) >= 25, WAIT_S, "25 bins of the restarted cursor")
        rel = op.send({"cmd": "release"})
        t_rel = rel["t_sent_ns"]
        if not (rel["reply"] or {}).get("ok"):
            raise DrillTimeout(f"the restarted cursor did not take the release: {rel['reply']}")
        _start_block(op)
        d.wait_moving(t_rel, 10)
    except BaseException:
        d.abandon()
        raise
    finally:
        op.close()
    res = d.finish()
    states, gates = d.states(), d.gates()
    figs = halt_figures(states, gates, t_fault)
    back = _since(states, t_back, t_rel)
    figs.update(held_after_restart=sum(bool(s.halted) for s in back), bins_after_restart=len(back),
                restarts=res["processes"]["gate"]["restarts"], halted_by=["estop"],
                outcome="restarted cursor held until release" if all(s.halted for s in back) else
                "RESTART RELEASED THE E-STOP")
    return {"t_fault_ns": t_fault, "t_kill_ns": t_kill, "t_back_ns": t_back, "t_release_ns": t_rel,
            "release_reply": rel["reply"], "states": states, "gates": gates, "result": res, "figures": figs}


# -- a stop signal to `cortexlink run` -------------------------------------------------------------------
def _children(pid: int) -> dict[int, str]:
    out = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                    out[int(p.name)] = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError):
                continue
    return out


def runner_signal(data: dict, redis_url: str, work: Path, sig: int = signal.SIGTERM) -> dict:
    """``sig`` (SIGTERM, SIGINT) to a ``cortexlink run`` process in closed loop: its loop stops
    after the current pass, the workers stop, the result (summary.json) and the recording are
    written; ``moved_bins``: cursor bins recorded after the signal (by their data's entry time)."""
    import redis

    work.mkdir(parents=True, exist_ok=True)
    gfile = work / "drill.json"
    gfile.write_text(json.dumps(drill_graph(data, recorder=True, sinks=False)))
    out = work / "runs"
    err = open(work / "stderr.txt", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cortexlink.cli.main", "-v", "run", str(gfile), "--redis", redis_url,
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    r = redis.Redis.from_url(redis_url)
    try:
        def workers() -> dict[int, str]:
            return {p: c for p, c in _children(proc.pid).items() if "--node" in c}
        kids = wait_for(lambda: len(workers()) == 2 and workers() or proc.poll() is not None, 2 * WAIT_S,
                        "the run's two worker processes")
        if proc.poll() is not None:
            raise DrillTimeout(f"cortexlink run exited with {proc.returncode} before its workers ran")
        run_id = next(c.split("--run-id ")[1].split()[0] for c in kids.values())

        def cursor_bins() -> int:
            raw = r.hget(f"cl:{run_id}:state", "cursor")
            return int(json.loads(raw).get("n_in", 0)) if raw else 0
        wait_for(lambda: cursor_bins() >= 50 or proc.poll() is not None, 2 * WAIT_S, "50 cursor bins")
        t_fault = time.monotonic_ns()
        proc.send_signal(sig)
        rc = proc.wait(2 * WAIT_S)
        t_end = time.monotonic_ns()
        gone = wait_for(lambda: not any(alive(p) for p in kids), WAIT_S, "the workers to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        err.close()
        r.close()
    run_dir = next(out.glob("*/"))
    summary = json.loads((run_dir / "summary.json").read_text())
    from cortexlink.io.session_log import SessionReader

    reader = SessionReader(run_dir / "recorder")
    rows = [(rec.host_time_ns, bool(rec.data[0][5]), bool(rec.data[0][4])) for rec in reader.records("cursor")]
    after = [row for row in rows if row[0] >= t_fault]
    figs = {"halted": True, "halt_ms": None, "bins_to_halt": None, "moved_bins": len(after),
            "clicks_before_halt": sum(c for _, _, c in after), "exit_code": rc,
            "run_ended_s": round((t_end - t_fault) / 1e9, 2), "workers_gone": bool(gone),
            "halted_by": [signal.Signals(sig).name],
            "outcome": f"exit {rc}, summary and recording written, workers gone"}
    if after:
        ms = (after[-1][0] - t_fault) / 1e6
        figs.update(halt_ms=round(ms, 2), bins_to_halt=max(0, math.ceil(ms / BIN_MS)))
    else:
        figs.update(halt_ms=0.0, bins_to_halt=0)
    return {"t_fault_ns": t_fault, "exit_code": rc, "stderr": (work / "stderr.txt").read_text(errors="replace"),
            "summary": summary, "manifest": reader.manifest, "rows": rows, "workers": kids, "figures": figs}


#: name -> case function, in the order the benchmark runs them.
CASES: dict[str, Callable[..., dict[str, Any]]] = {
    "sigkill_pipeline": lambda d, u, w: sigkill_worker(d, u, w, "pipeline"),
    "sigkill_source": lambda d, u, w: sigkill_worker(d, u, w, "acq"),
    "sigstop_pipeline": lambda d, u, w: sigstop_worker(d, u, w, "pipeline"),
    "sigstop_source": lambda d, u, w: sigstop_worker(d, u, w, "acq"),
    "redis_killed": redis_killed,
    "estop_remote": estop_remote,
    "estop_gate_restarted": estop_gate_restarted,
    "estop_while_gate_down": lambda d, u, w: estop_gate_restarted(d, u, w, while_down=True),
    "sigterm_runner": lambda d, u, w: runner_signal(d, u, w, signal.SIGTERM),
    "sigint_runner": lambda d, u, w: runner_signal(d, u, w, signal.SIGINT),
}


# -- the benchmark -----------------------------------------------------------------------------------
def run(cases: list[str] | None = None, *, workdir: Path | None = None, progress: bool = False) -> dict:
    """Run the cases (default: all of :data:`CASES`) over one
    loopback redis-server (the redis_killed case starts its own) and return ``{"cases": [...],
    "machine": ...}``; each case's figures are :func:`halt_figures` and what it observed."""
    import platform
    import tempfile

    from cortexlink.core.errors import ConfigError
    from cortexlink.runtime.redis_server import RedisServer

    names = list(cases or CASES)
    unknown = [c for c in names if c not in CASES]
    if unknown:
        raise ConfigError(f"unknown safety case(s) {unknown}; cases: {list(CASES)}")
    tmp = tempfile.TemporaryDirectory(prefix="cortexlink-safety-") if workdir is None else None
    root = Path(tmp.name if tmp is not None else workdir)
    results = []
    try:
        data = prepare(root / "data")
        srv = RedisServer(extra_args=("--hz", "500")).start()      # as `--redis auto` runs it
        try:
            for name in names:
                if progress:
                    print(f"safety: {name} ...", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                try:
                    obs = CASES[name](data, srv.url, root / name)
                    r = {"case": name, **obs["figures"]}
                except Exception as exc:  # noqa: BLE001 - a case that breaks is a finding, reported
                    r = {"case": name, "error": f"{type(exc).__name__}: {exc}"}
                r["seconds"] = round(time.perf_counter() - t0, 2)
                results.append(r)
        finally:
            srv.stop()
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {"benchmark": "safety", "bin_ms": BIN_MS, "cases": results,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}


def print_summary(result: dict) -> None:
    print(f"{'case':28s} {'halted':>6s} {'bins':>5s} {'ms':>8s} {'moved':>5s}  what held it / outcome")
    for r in result["cases"]:
        if "error" in r:
            print(f"{r['case']:28s} ERROR {r['error'][:150]}")
            continue
        ms = "-" if r.get("halt_ms") is None else f"{r['halt_ms']:.1f}"
        bins = "-" if r.get("bins_to_halt") is None else str(r["bins_to_halt"])
        print(f"{r['case']:28s} {str(r.get('halted')):>6s} {bins:>5s} {ms:>8s} {r.get('moved_bins', '-')!s:>5s}  "
              f"{','.join(r.get('halted_by') or []) or '-'}; {r.get('outcome', '')}")
