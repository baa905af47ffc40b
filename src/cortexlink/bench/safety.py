"""``cortexlink bench safety``: the watchdog and the E-STOP under real faults, across processes.

A graph runs as it would at the bedside — a replayed 32-channel recording as the source in a child
process (``acq``), the dsp and a fitted Kalman + click decoder in another (``pipeline``), the cursor
(the watchdog's gate) in the main process, all over a real ``redis-server`` on 127.0.0.1 — and is
broken from outside with real signals: a worker process SIGKILLed or SIGSTOPped, the redis-server
SIGKILLed, an E-STOP sent from another process (the operator UI's way, :class:`~cortexlink.web.
remote.RedisLink`), an E-STOP held while the cursor's own process is killed and restarted, and
SIGTERM/SIGINT to a ``cortexlink run`` process. Each case reports how soon the cursor was held:

``halt_ms``
    from the fault (the signal sent, the command written) to the first message that held the
    cursor: a halted ``cursor.gate`` (velocity forced to zero, clicks suppressed) or a halted
    ``cursor.state`` bin, whichever came first;
``bins_to_halt``
    that time in bins (``ceil(halt_ms / bin_ms)``): when nothing flows (a killed decoder) no bin
    carries the halt, so time is the measure;
``moved_bins``
    cursor bins after the fault that were not held (the cursor moved on data from before or
    around the fault); for the E-STOP, bins after the one it was received in (0: the next bin was
    held).

:mod:`cortexlink.bench.safety_cases` holds the cases; ``tests/runtime/test_runtime_realsignals.py``
runs the same cases and asserts what must hold (halted, held while the fault holds, recovered or
ended, no process left), never these figures, which depend on the machine's load.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from cortexlink.core.errors import CortexlinkError

__all__ = ["BIN_MS", "DrillTimeout", "Drill", "prepare", "drill_graph", "halt_figures", "alive", "RemoteOperator"]

BIN_MS = 20.0
FS_HZ = 30000.0
#: Longest wait for anything a case waits on (a start, a halt, a restart, a recovery).
WAIT_S = 60.0


class DrillTimeout(CortexlinkError, TimeoutError):
    """Something a safety drill waited for did not happen within its bound."""


def _intent(sample: int) -> tuple[float, float, float]:
    """The simulated participant: a circle every 2 s, a click held 0.3 s of every second."""
    t = sample / FS_HZ
    return (0.8 * math.cos(math.pi * t), 0.8 * math.sin(math.pi * t), 1.0 if t % 1.0 < 0.3 else 0.0)


def prepare(workdir: Path, *, n_channels: int = 32, seconds: float = 3.0, seed: int = 3) -> dict:
    """A simulated recording (looped by the replay source) and a Kalman velocity decoder and a
    click decoder fitted on the features the dsp node makes from it; returns their paths."""
    import numpy as np

    from cortexlink.core.types import Chunk
    from cortexlink.decoders import ClickDecoder, KalmanFilter
    from cortexlink.dsp import FeatureExtractor
    from cortexlink.sim import SimulatedImplant

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    imp = SimulatedImplant(n_channels=n_channels, seed=seed, intent_fn=_intent)
    n = int(round(seconds * FS_HZ))
    data = np.ascontiguousarray(imp.read(n).data)
    truth = imp.ground_truth()
    cmap = imp.channel_map
    path = workdir / f"safety{n_channels}.npy"
    np.save(path, data)
    (workdir / f"safety{n_channels}.npy.json").write_text(json.dumps({"channel_map": cmap.to_dict()}))
    fx = FeatureExtractor(cmap, FS_HZ, bin_ms=BIN_MS, calibration_s=0.5)
    rows, ends = [], []
    for k in range(3):                   # the replay loops: fit on three passes, as the dsp sees them
        bf = fx.step(Chunk(data, FS_HZ, k * n))
        rows.append(bf.data)
        ends.append(bf.bin_start_samples + bf.bin_width_samples)
    bad = {cmap.channel_ids[i] for i in np.flatnonzero(np.asarray(fx.bad_channels_, bool))}
    names = fx.feature_names
    cols = [i for i, nm in enumerate(names) if nm.rsplit("/", 1)[-1] in ("tx", "sbp") and nm.split("/", 1)[0] not in bad]
    X = np.concatenate(rows)[:, cols].astype(np.float64)
    v, click = truth.intent_at(np.concatenate(ends) % n)
    ok = np.all(np.isfinite(X), axis=1)
    feat = tuple(names[i] for i in cols)
    dec, clk = workdir / "kalman.npz", workdir / "click.npz"
    KalmanFilter().fit(X[ok], v[ok], feature_names=feat).save(dec)
    ClickDecoder().fit(X[ok], (click[ok] > 0.5).astype(int), feature_names=feat).save(clk)
    return {"data": str(path), "decoder": str(dec), "click": str(clk)}


def drill_graph(data: dict, *, seconds: float = 600.0, operator: bool = False, gate_group: str | None = None,
                recorder: bool = False, sinks: bool = True) -> dict:
    """The drill's graph (see the module docstring); ``operator``: the cursor takes operator
    commands (interactive: a ``start`` command begins a closed-loop block); ``gate_group``: the
    cursor in a child process of that name; ``recorder``: a recorder node in the main process;
    ``sinks``: ``states``, ``gates`` and ``intents`` sinks in the main process keep every message."""
    sub = {"where": "subprocess"}
    cursor_inputs: dict[str, Any] = {"intent": "decoder.intent"}
    if operator:
        cursor_inputs["operator"] = "operator.commands"
    nodes: dict[str, Any] = {
        "source": {"kind": "replay_source", "params": {"path": data["data"], "chunk_ms": 5}, **sub, "group": "acq"},
        "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}}, "inputs": {"raw": "source.raw"},
                **sub, "group": "pipeline"},
        "decoder": {"kind": "decoder", "params": {"path": data["decoder"], "click_path": data["click"],
                                                  "click_freeze_proba": None},
                    "inputs": {"features": "dsp.features"}, **sub, "group": "pipeline"},
        "cursor": {"kind": "cursor", "inputs": cursor_inputs, **({**sub, "group": gate_group} if gate_group else {})},
    }
    if sinks:
        nodes["states"] = {"kind": "sink", "params": {"keep": 100000},
                           "inputs": {"data": {"from": "cursor.state", "maxlen": 100000}}}
        nodes["gates"] = {"kind": "sink", "params": {"keep": 10000}, "inputs": {"data": {"from": "cursor.gate", "maxlen": 10000}}}
        nodes["intents"] = {"kind": "sink", "params": {"keep": 100000},
                            "inputs": {"data": {"from": "decoder.intent", "maxlen": 100000}}}
    if recorder:
        nodes["recorder"] = {"kind": "recorder", "params": {"raw": False},
                             "inputs": {"intent": "decoder.intent", "cursor": "cursor.state"}}
    # a stall of 250 ms and 500 ms without decoder output: well above what a loaded 2-core machine
    # makes of a healthy loop, so that every halt here is the fault's
    return {"name": "safety-drill", "clock": "realtime", "seconds": seconds, "bin_ms": BIN_MS,
            "bus": {"kind": "redis"}, "watchdog": {"stall_ms": 250, "output_timeout_ms": 500},
            "restart": {"max_restarts": 3, "window_s": 60}, "nodes": nodes}


def wait_for(pred: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.02) -> Any:
    """Poll ``pred`` until it is true (returned) or ``timeout_s`` passed (:class:`DrillTimeout`)."""
    t_end = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > t_end:
            raise DrillTimeout(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(step_s)


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _kept(sink: Any) -> list:
    for _ in range(10):
        try:
            return list(sink.kept)
        except RuntimeError:            # appended to while copied: try again
            time.sleep(0.001)
    return list(sink.kept)


class Drill:
    """A :class:`~cortexlink.runtime.runner.GraphRunner` on :func:`drill_graph` in a thread of this
    process (the main process of the run; its workers are child processes)."""

    def __init__(self, data: dict, redis_url: str, out_dir: Path, **graph_kw: Any) -> None:
        from cortexlink.runtime.runner import GraphRunner

        self.graph = drill_graph(data, **graph_kw)
        self.runner = GraphRunner(self.graph, redis_url=redis_url, out_dir=out_dir, startup_timeout_s=WAIT_S)
        self.result: dict | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="safety-drill", daemon=True)
        self.thread.start()
        wait_for(lambda: self.runner.started.is_set() or not self.thread.is_alive(), 2 * WAIT_S, "the run to start")
        if not self.runner.started.is_set():
            raise CortexlinkError(f"the drill's run did not start: {self.error!r}")

    def _run(self) -> None:
        try:
            self.result = self.runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            self.error = exc

    def node(self, name: str) -> Any:
        return self.runner.by_name[name].node

    def pid(self, group: str) -> int:
        return self.runner._workers[group]["proc"].pid

    def restarts(self, group: str) -> int:
        return int(self.runner._workers[group]["n_restarts"])

    def state_messages(self) -> list:
        return _kept(self.node("states"))

    def states(self) -> list[tuple[int, Any]]:
        """``(t_pub_ns, CursorState)`` of every cursor bin so far."""
        return [(m.t_pub_ns, m.payload) for m in _kept(self.node("states"))]

    def gates(self) -> list[tuple[int, Any]]:
        return [(m.t_pub_ns, m.payload) for m in _kept(self.node("gates"))]

    def intents(self) -> list[tuple[int, Any]]:
        return [(m.t_pub_ns, m.payload) for m in _kept(self.node("intents"))]

    def moving_since(self, t_ns: int) -> int:
        """Cursor bins published after ``t_ns`` that moved it (not held, velocity not zero)."""
        return sum(1 for t, s in self.states() if t > t_ns and not s.halted and s.velocity != (0.0, 0.0))

    def wait_moving(self, t_ns: int = 0, n: int = 25, timeout_s: float = WAIT_S) -> None:
        wait_for(lambda: self.moving_since(t_ns) >= n or not self.thread.is_alive(), timeout_s,
                 f"{n} cursor bins moving")
        if not self.thread.is_alive():
            raise CortexlinkError(f"the run ended: {self.error!r}")

    def wait_halted(self, t_ns: int, timeout_s: float = WAIT_S) -> int:
        """Wait for the first message that held the cursor after ``t_ns``; return its time."""
        return int(wait_for(lambda: _first_halt(self.states(), self.gates(), t_ns), timeout_s, "the cursor to be held"))

    def command(self, cmd: dict, timeout_s: float = 30.0) -> dict | None:
        return self.runner.wait_reply(self.runner.send_command(cmd), timeout_s)

    def abandon(self) -> None:
        """After a failed case: stop the run, wait (bounded) for its end, raise nothing."""
        self.runner.request_stop("the drill failed")
        self.thread.join(2 * WAIT_S)

    def finish(self, timeout_s: float = 2 * WAIT_S) -> dict:
        """Stop the run (if it still runs) and return its result."""
        self.runner.request_stop("the drill is over")
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise DrillTimeout(f"the run did not end within {timeout_s:g} s of its stop")
        if self.error is not None:
            raise self.error
        return self.result or {}


def _first_halt(states: list, gates: list, t_ns: int) -> int | None:
    ts = [t for t, g in gates if t >= t_ns and g.halted] + [t for t, s in states if t >= t_ns and s.halted]
    return min(ts) if ts else None


def halt_figures(states: list, gates: list, t_fault_ns: int, bin_ms: float = BIN_MS) -> dict:
    """How soon the cursor was held after a fault at ``t_fault_ns`` (module docstring): ``halted``,
    ``halt_ms``, ``bins_to_halt``, ``moved_bins`` and ``clicks_before_halt`` (clicks in those bins)."""
    t_halt = _first_halt(states, gates, t_fault_ns)
    moved = [s for t, s in states if t >= t_fault_ns and (t_halt is None or t < t_halt) and not s.halted]
    out: dict[str, Any] = {"halted": t_halt is not None, "moved_bins": len(moved),
                           "clicks_before_halt": sum(bool(s.clicked) for s in moved)}
    if t_halt is None:
        out.update(halt_ms=None, bins_to_halt=None)
    else:
        ms = (t_halt - t_fault_ns) / 1e6
        out.update(halt_ms=round(ms, 2), bins_to_halt=max(0, math.ceil(ms / bin_ms)))
    return out


class RemoteOperator:
    """Operator commands from another process: a child running ``python -m cortexlink.bench.safety
    --operator URL RUN`` that sends each command as the operator UI does
    (:class:`~cortexlink.web.remote.RedisLink`) and answers with the time it was written
    (``t_sent_ns``, monotonic: comparable across processes on this host) and the node's reply."""

    def __init__(self, url: str, run_id: str, log: Path) -> None:
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "cortexlink.bench.safety", "--operator", url, run_id],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        if self.proc.stdin is None or self.proc.stdout is None:    # pragma: no cover - PIPE gives both
            raise CortexlinkError("the operator process has no pipes")
        self._stdin, self._stdout = self.proc.stdin, self.proc.stdout
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stdout:
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()

    def send(self, cmd: dict, timeout_s: float = WAIT_S) -> dict:
        """Send ``cmd``; return ``{"t_sent_ns", "reply"}`` (reply None: no answer within 20 s)."""
        with self._cond:
            n = len(self._lines)
        self._stdin.write(json.dumps(cmd) + "\n")
        self._stdin.flush()
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._lines) > n or self.proc.poll() is not None, timeout_s) \
                    or len(self._lines) <= n:
                err = self.log.read_text(errors="replace")[-500:]
                raise DrillTimeout(f"the operator process did not answer {cmd} within {timeout_s:g} s: {err}")
            return json.loads(self._lines[n])

    def close(self) -> None:
        try:
            self._stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        self._stdout.close()


def _operator_main(url: str, run_id: str) -> int:
    from cortexlink.web.remote import RedisLink

    link = RedisLink(url, run_id)
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            wait_s = float(cmd.pop("_reply_s", 20.0))
            t = time.monotonic_ns()
            cid = link.send(cmd)
            print(json.dumps({"t_sent_ns": t, "reply": link.reply(cid, wait_s)}), flush=True)
    finally:
        link.close()
    return 0


if __name__ == "__main__":  # pragma: no cover - the remote operator's process
    if len(sys.argv) == 4 and sys.argv[1] == "--operator":
        sys.exit(_operator_main(sys.argv[2], sys.argv[3]))
    sys.exit("usage: python -m cortexlink.bench.safety --operator REDIS_URL RUN_ID")
