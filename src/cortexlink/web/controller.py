"""The operator's session: a client of the runtime graph's bus.

:class:`OperatorController` runs an interactive graph (:mod:`cortexlink.web.graphs`: the shipped
``operator`` graph, a session compiled to one, or a graph file whose cursor reads
``operator.commands``) with :class:`~cortexlink.runtime.runner.GraphRunner` in a background
thread, or — with ``redis=`` — in a child process it talks to only over Redis
(:mod:`cortexlink.web.remote`). It never processes a bin itself: the graph's nodes do. The UI

* sends operator commands on ``operator.commands``: the cursor, dsp or recorder node applies
  each between bins and answers on ``operator.replies``; a refusal comes back as a
  :class:`ControlError` with the node's status (409: not possible now) and reason;
* reads what the graph's ``ui_feed`` node publishes (``<ui>/snapshot``, ``<ui>/slow``,
  ``<ui>/meta``) and turns it into :class:`~cortexlink.web.snapshot.Snapshot` objects in a
  latest-value holder (:attr:`OperatorController.snapshots`) for the web server.

========================  ===================================================================
``calibrate``             open-loop block (the cursor moves by itself, the participant
                          intends along) of the session's calibration task, or ``task``
                          (centre_out or webgrid); its bins train the decoders
``fit``                   fit the velocity (and click) decoder on every calibration block so far
``start``                 closed-loop block of ``centre_out``, ``webgrid`` or ``chess``
``stop``                  end the running block
``refit``                 ReFIT-Kalman: re-estimate from the closed-loop blocks since the last fit
``estop`` / ``release``   emergency stop: the cursor is held and clicks are suppressed from the
                          next bin on, latched until released (works in every state)
``mouse``                 mouse mode on/off: the operator's pointer drives the cursor
``mouse_move``            the pointer position (screen units); ``mouse_click`` a click
``record_start/stop``     record the session (the graph's idle recorder node)
``recalibrate_noise``     re-estimate noise RMS, thresholds and bad channels from the next
                          calibration window (the dsp node)
========================  ===================================================================
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from cortexlink.core.errors import CortexlinkError
from cortexlink.core.validation import check_choice, check_positive
from cortexlink.web.commands import (COMMANDS, MAX_BLOCK_S, PRIORITIES, TASK_NAMES, ControlError,
                                     set_thread_priority, validate_command)
from cortexlink.web.snapshot import LatestValue, Part, Snapshot

logger = logging.getLogger(__name__)

__all__ = ["OperatorController", "ControlError", "COMMANDS", "validate_command", "MAX_BLOCK_S", "PRIORITIES",
           "TASK_NAMES", "set_thread_priority"]


class _LocalLink:
    """The bus of a graph run in this process (:class:`GraphRunner` in a thread)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def send(self, cmd: dict) -> str:
        return self.runner.send_command(cmd)

    def reply(self, cid: str, timeout_s: float) -> dict | None:
        return self.runner.wait_reply(cid, timeout_s)

    def info(self, key: str) -> dict | None:
        return self.runner.bus.get_info(key)


class OperatorController:
    """Run (or attach to) an interactive graph and take operator commands.

    Parameters
    ----------
    graph : str, path or dict, optional
        A shipped graph (``operator``), a graph YAML file or a graph dict; its cursor must read
        ``operator.commands`` (:func:`~cortexlink.web.graphs.check_operator_graph`).
    session : path, YAML text or dict, optional
        Instead of ``graph``: a session compiled with :func:`~cortexlink.web.graphs.operator_graph`
        (implant, participant, decoder; its blocks give the default block lengths). Neither
        given: the shipped ``operator`` graph.
    n_channels : int, optional
        Override the simulated implant's channel count.
    record_dir : path
        Parent folder of recordings (``record_start`` creates ``record_dir/<name>``). A graph
        with a ``stim_interlock`` runs with the output folder ``<record_dir's parent>/operator-runs/
        <time>-<random>`` (:attr:`run_dir`), where the interlock keeps its audit log of every decision
        for the whole session (each recording copies in its part); other graphs run without one.
    participant_id : str
        Pseudonymous participant code written to recordings.
    speed : float
        Pace of the simulated implant relative to the wall clock (1.0: real time).
    priority : {"normal", "high", "realtime"}
        Scheduling of the graph's thread (see :func:`set_thread_priority`).
    redis : str, optional
        ``"auto"`` (a private redis-server) or a Redis URL: the graph runs in a child process and
        this controller talks to it only through Redis (:mod:`cortexlink.web.remote`).
    attach : bool
        With ``redis``: attach to the graph already running on that server (its current run)
        instead of starting one.
    poll_hz : float
        How often the graph's published snapshot is read.

    Attributes
    ----------
    snapshots : LatestValue
        The latest :class:`~cortexlink.web.snapshot.Snapshot`.
    graph : dict
        The validated graph.
    """

    def __init__(self, graph: Any = None, *, session: Any = None, n_channels: int | None = None,
                 record_dir: str | Path = Path("runs") / "recordings", participant_id: str = "sim-0001",
                 speed: float = 1.0, priority: str = "normal", redis: str | None = None, attach: bool = False,
                 poll_hz: float = 200.0) -> None:
        from cortexlink.web.graphs import check_operator_graph, resolve_graph

        if attach and redis is None:
            raise ControlError("attach needs redis (the URL of the server the graph runs on)")
        self.redis = redis
        self.attach = bool(attach)
        if attach:
            self.graph = None
            self.nodes: dict = {}
        else:
            if graph is None and session is None:
                graph = "operator"
            g = resolve_graph(graph, session=session, n_channels=n_channels, record_dir=record_dir,
                              participant_id=participant_id)
            self.nodes = check_operator_graph(g)
            self.graph = g
        self.speed = check_positive("speed", speed)
        self.priority = check_choice("priority", priority, PRIORITIES)
        self.priority_info: dict = {"requested": self.priority, "applied": None, "error": None}
        self.poll_s = 1.0 / check_positive("poll_hz", poll_hz)
        self.run_dir: Path | None = None              # made by start() for a graph with a stim_interlock
        self._runs_parent = None
        if self.graph is not None and any(isinstance(s, dict) and s.get("kind") == "stim_interlock"
                                          for s in self.graph["nodes"].values()):
            self._runs_parent = Path(record_dir).parent / "operator-runs"
        self.snapshots = LatestValue()
        self._link: Any = None
        self._runner: Any = None
        self._thread: threading.Thread | None = None
        self._poller: threading.Thread | None = None
        self._stop_evt = threading.Event()
        self._ended = threading.Event()
        self._error: BaseException | None = None
        self._state = "created"
        self.result: dict | None = None
        self._remote: Any = None

    # ================================================================== lifecycle
    @property
    def name(self) -> str:
        """The graph's name."""
        return (self.nodes.get("graph") or {}).get("name", "graph")

    @property
    def dt_s(self) -> float:
        return float((self.nodes.get("graph") or {}).get("bin_ms", 20.0)) / 1000.0

    def describe(self) -> str:
        """One line: graph, channels, decoder."""
        g = self.nodes.get("graph") or {}
        ch = next((s["params"].get("config", {}).get("n_channels", "preset") for s in g.get("nodes", {}).values()
                   if s["kind"] == "sim_source"), None)
        dec = (g.get("nodes", {}).get(self.nodes.get("cursor"), {}).get("params") or {}).get("decoder_kind", "?")
        if self.nodes.get("task"):
            dec = "phoneme CTC + word beam search (speech)"
        return f"graph '{self.name}' ({'no implant' if ch is None else f'{ch} channels'}, decoder {dec})"

    def start(self, timeout_s: float = 120.0) -> "OperatorController":
        """Start the graph (or attach to it) and wait until its operator view is published and the
        implant's noise calibration is done.

        Raises
        ------
        CortexlinkError
            The graph could not be set up, or did not become ready within ``timeout_s``.
        """
        if self._state != "created":
            raise ControlError("the session was already started", 409)
        self._state = "starting"
        if self.redis is not None:
            from cortexlink.web.remote import RemoteGraph

            self._remote = RemoteGraph(self.graph, self.redis, attach=self.attach, speed=self.speed)
            try:
                self._link = self._remote.start(timeout_s)
            except BaseException:
                self._state = "error"
                raise
            if self.attach:
                from cortexlink.web.graphs import check_operator_graph

                self.graph = self._remote.graph
                self.nodes = check_operator_graph(self.graph)
        else:
            from cortexlink.runtime.runner import GraphRunner

            if self._runs_parent is not None and self.run_dir is None:
                import tempfile

                self._runs_parent.mkdir(parents=True, exist_ok=True)
                self.run_dir = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%dT%H%M%S-"), dir=self._runs_parent))
            self._runner = GraphRunner(self.graph, speed=self.speed, out_dir=self.run_dir)
            self._thread = threading.Thread(target=self._run_graph, name="cortexlink-graph", daemon=True)
            self._thread.start()
            if not self._runner.started.wait(timeout_s) or self._error is not None:
                self._state = "error"
                self.stop()
                raise CortexlinkError(f"the session could not start: {self._error or 'timed out'}")
            self._link = _LocalLink(self._runner)
            if self.priority != "normal":
                self.set_priority(self.priority)
        self._poller = threading.Thread(target=self._poll, name="cortexlink-ui-poll", daemon=True)
        self._poller.start()
        try:
            has_dsp = bool(self.nodes.get("dsp"))
            self.wait_for(lambda s: s.fast.get("state") not in ("starting", None)
                          and (not has_dsp or bool(s.meta.data.get("noise_rms_uv"))), timeout_s)
        except TimeoutError:
            self.stop()
            raise CortexlinkError(f"the session did not become ready within {timeout_s:g} s "
                                  f"(error: {self._error})") from None
        self._state = "running"
        return self

    def _run_graph(self) -> None:
        try:
            self.result = self._runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported by start() / state
            logger.exception("the graph failed")
            self._error = exc
        finally:
            self._ended.set()
            self._runner.started.set()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the graph (a running block is ended there, a recording closed) and the poller; with
        ``redis`` and ``attach``, only detach (the graph runs on)."""
        self._stop_evt.set()
        if self._remote is not None:
            self._remote.stop(timeout_s, detach_only=self.attach)
            self._ended.set()
        elif self._runner is not None:
            self._runner.request_stop("operator UI stopped")
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout_s)
        if self._poller is not None and self._poller is not threading.current_thread():
            self._poller.join(5.0)
        self._final_snapshot()

    def detach(self) -> None:
        """Stop reading and commanding without stopping the graph (Redis only)."""
        if self._remote is None:
            raise ControlError("detach needs a graph in another process (redis)", 409)
        self.attach = True
        self.stop()

    def __enter__(self) -> "OperatorController":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        if self._stop_evt.is_set() or self._ended.is_set() or self._state != "running":
            return False
        if self._remote is not None:
            return self._remote.alive()
        return self._thread is not None and self._thread.is_alive()

    @property
    def failure(self) -> dict | None:
        """What ended an in-process graph that could not go on (a critical node given up on: the
        run result's ``failure``), else None."""
        return (self.result or {}).get("failure")

    @property
    def state(self) -> str:
        """``created``, ``starting``, ``idle``, ``calibrating``, ``closed_loop``, ``stopped`` or ``error``
        (the graph failed, or ended on a :attr:`failure`)."""
        if self._error is not None or self._state == "error" or self.failure:
            return "error"
        if self._state in ("created", "starting"):
            return self._state
        if not self.running:
            return "stopped"
        snap = self.snapshots.get()
        return "starting" if snap is None else str(snap.fast.get("state"))

    @property
    def n_bins(self) -> int:
        """The cursor's bin count in the latest snapshot."""
        snap = self.snapshots.get()
        return 0 if snap is None else int(snap.fast.get("bin", 0))

    @property
    def n_faults(self) -> int:
        """Fault events (halt or warning) the graph reported so far."""
        snap = self.snapshots.get()
        return 0 if snap is None else int(snap.slow.data.get("n_faults", 0))

    @property
    def faults(self) -> list:
        snap = self.snapshots.get()
        return [] if snap is None else list(snap.slow.data.get("faults", []))

    def set_priority(self, priority: str, *, warn: bool = True) -> dict:
        """Change the scheduling of the graph's thread while it runs (in-process graphs; see
        :func:`set_thread_priority`). Returns ``{"requested", "applied", "error"}``."""
        priority = check_choice("priority", priority, PRIORITIES)
        th = self._thread
        if th is not None and th.native_id is not None:
            info = set_thread_priority(th.native_id, priority, warn=warn)
            if info["applied"] == priority:
                self.priority = priority
            self.priority_info = info
        else:
            self.priority = priority
            self.priority_info = {"requested": priority, "applied": None,
                                  "error": "the graph runs in another process" if self._remote else None}
        return self.priority_info

    # ================================================================== commands
    def command(self, cmd: str, args: dict | None = None, *, timeout_s: float = 15.0) -> dict:
        """Validate one command, send it to the graph and return the applying node's result.

        Raises
        ------
        ControlError
            With ``status`` 400 (bad request), 409 (not possible now; the node's reason) or 503
            (no answer within ``timeout_s``).
        """
        cmd, args = validate_command({"cmd": cmd, **(args or {})})
        if not self.running:
            if cmd == "estop":
                return {"estop": True, "received_after_bin": self.n_bins, "note": "the session is not running"}
            raise ControlError(f"the session is not running (state {self.state!r}); command {cmd!r} not applied", 409)
        if cmd in ("record_start", "record_stop") and not self.nodes.get("recorder"):
            raise ControlError(f"{cmd}: this graph has no recorder node reading operator.commands", 409)
        if cmd == "recalibrate_noise" and not self.nodes.get("dsp"):
            raise ControlError("recalibrate_noise: this graph has no dsp node reading operator.commands "
                               "(no implant: decoder 'perfect'?)", 409)
        cid = self._link.send({"cmd": cmd, **args})
        rep = self._link.reply(cid, timeout_s)
        if rep is None:
            raise ControlError(f"the session did not answer command {cmd!r} within {timeout_s:g} s", 503)
        if not rep.get("ok"):
            raise ControlError(str(rep.get("error")), int(rep.get("status", 409)))
        return rep.get("result") or {}

    def estop(self) -> dict:
        """Engage the emergency stop: from the next bin on the cursor is held and clicks are
        suppressed, until :meth:`release`."""
        return self.command("estop")

    def release(self) -> dict:
        """Release a latched emergency stop."""
        return self.command("release")

    # ================================================================== snapshots
    def _poll(self) -> None:
        ui = self.nodes["ui"]
        last_seq = None
        slow = Part(0, {"version": 0})
        meta = Part(0, {"version": 0})
        while not self._stop_evt.is_set() and not self._ended.is_set():
            try:
                snap = self._link.info(f"{ui}/snapshot")
                if snap and "fast" in snap and snap.get("seq") != last_seq:
                    if snap.get("slow_version") != slow.version:
                        d = self._link.info(f"{ui}/slow")
                        if d is not None:
                            slow = Part(d.get("version", 0), d)
                    if snap.get("meta_version") != meta.version:
                        d = self._link.info(f"{ui}/meta")
                        if d is not None:
                            meta = Part(d.get("version", 0), d)
                    last_seq = snap.get("seq")
                    self.snapshots.set(Snapshot(int(last_seq), snap["fast"], slow, meta))
            except Exception:  # noqa: BLE001 - a failed read is retried; the graph does not depend on it
                logger.warning("reading the graph's snapshot failed", exc_info=True)
                time.sleep(0.2)
            time.sleep(self.poll_s)

    def _final_snapshot(self) -> None:
        snap = self.snapshots.get()
        if snap is None:
            return
        fast = dict(snap.fast)
        fast["state"] = "error" if self._error is not None or self.failure else "stopped"
        fast["seq"] = snap.seq + 1
        self.snapshots.set(Snapshot(snap.seq + 1, fast, snap.slow, snap.meta))

    def wait_for(self, predicate: Callable[[Snapshot], bool], timeout_s: float = 10.0, poll_s: float = 0.01) -> Snapshot:
        """Poll :attr:`snapshots` until ``predicate(snapshot)`` is true; return that snapshot.

        Raises
        ------
        TimeoutError
            After ``timeout_s`` seconds, naming the last state seen.
        """
        t_end = time.monotonic() + timeout_s
        snap = None
        while True:
            snap = self.snapshots.get()
            if snap is not None and predicate(snap):
                return snap
            if time.monotonic() > t_end:
                st = None if snap is None else snap.fast.get("state")
                raise TimeoutError(f"condition not met within {timeout_s:g} s (last state {st!r})")
            if self._ended.is_set() and self._error is not None:
                raise CortexlinkError(f"the graph failed: {self._error}")
            time.sleep(poll_s)

    def loop_latency_ns(self) -> Any:
        """In-process graphs: the cursor node's :class:`~cortexlink.runtime.stats.LatencyStats` of the
        loop latency (bin's samples entered the graph -> cursor updated), for benchmarks."""
        if self._runner is None:
            raise ControlError("loop latency is read in-process only", 409)
        if not self.nodes.get("cursor"):
            raise ControlError("loop latency is the cursor's; this graph has none (a speech session)", 409)
        return self._runner.by_name[self.nodes["cursor"]].node.latency
