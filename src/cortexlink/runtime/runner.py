"""Running a graph: the scheduler of one process, its supervisor, the launcher of the others.

:class:`GraphRunner` is the scheduler (this module); its process management lives in
:mod:`cortexlink.runtime.processes` and its faults, states, operator replies and results in
:mod:`cortexlink.runtime.lifecycle` (mixins it inherits).

Scheduling (one process)
------------------------
Nodes run in the graph's topological order (feedback edges left out). Each pass of the
scheduler steps, in that order, every clocked node (source) whose period is due and every other
node that has messages waiting (plus nodes that want every pass, such as the cursor's watchdog).
A message published during a pass is therefore consumed later in the same pass by every node
downstream of its publisher: a chunk goes source → dsp → decoder → cursor within one pass, with
no thread switch and no copy. A feedback edge (cursor → participant) is read on the next pass.

``clock: realtime`` paces clocked nodes by ``time.monotonic_ns()``; between passes the process
sleeps (or, with Redis, blocks in ``XREAD``) until the next period or message. A source handed
its chunk more than ``deadline_ms`` after it was due counts a missed deadline. ``clock: fast``
runs the passes back to back on a virtual clock (a tick per source period), so a run is
deterministic: a session (:func:`~cortexlink.runtime.session.run_session`) gives the same figures
in one process and across processes.

Processes
---------
With the Redis bus, the process that runs ``cortexlink run`` (``main``) starts a child process
per ``group`` of ``where: subprocess`` nodes (``cortexlink run --node A,B --redis URL --run-id
ID``, which reads the graph from Redis) and waits for ``external`` nodes to be started by hand.
Edges between processes go over Redis Streams, edges inside a process stay in-process. Every
process publishes its nodes' states and counters (``cl:<run>:state``), its fault events on the
shared ``runtime.faults`` topic, and stops when ``cl:<run>:stop`` is set. The parent restarts a
child process that died, under the restart policy of its nodes.

Operator commands
-----------------
:meth:`GraphRunner.send_command` (any thread) queues a command; the scheduler publishes it on
``operator.commands`` at the top of its next pass, so a node reading that topic applies it
between bins, in the same pass. The node answers on ``operator.replies``;
:meth:`GraphRunner.wait_reply` waits for that answer. With the Redis bus both topics are shared
streams: a UI in another process appends commands to ``cl:<run>:s:operator.commands`` and reads
the answers from ``cl:<run>:s:operator.replies`` (:class:`~cortexlink.web.remote.RedisLink`).
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ConfigError, CortexlinkError
from cortexlink.runtime.bus import InProcessBus
from cortexlink.runtime.redis_bus import RedisStreamsBus
from cortexlink.runtime.graph import FAULTS_TOPIC, OPERATOR_TOPIC, REPLIES_TOPIC, load_graph
from cortexlink.runtime.node import NodeContext, NodeState, node_class
from cortexlink.runtime.stats import LatencyStats
from cortexlink.runtime.lifecycle import RunResult, _Lifecycle
from cortexlink.runtime.processes import _Processes
from cortexlink.runtime.signals import stopper
from cortexlink.runtime.supervisor import RestartPolicy, Supervisor

logger = logging.getLogger(__name__)

__all__ = ["GraphRunner", "RunResult", "run_graph", "run_worker"]

HOUSEKEEPING_NS = 100_000_000       # states, drop accounting, stop checks
#: Smallest queue of a node's input from ``operator.commands`` (commands are never dropped).
OPERATOR_MAXLEN = 100_000


def _quiet_gc() -> None:
    """Before a real-time loop: collect once and freeze what set-up allocated (modules, models,
    buffers), so that the cyclic garbage collector only ever scans objects made during the run;
    a full collection over everything a process imported (numpy, torch, pynwb) takes milliseconds
    and would land on the hot path as a latency spike."""
    gc.collect()
    gc.freeze()


class _Slot:
    __slots__ = ("name", "node", "policy", "due", "ports", "reported_drops", "lossy")

    def __init__(self, name: str, node: Any, policy: RestartPolicy) -> None:
        self.name = name
        self.node = node
        self.policy = policy
        self.due = 0
        self.ports: list[tuple[str, Any]] = []
        self.reported_drops: dict[str, int] = {}
        self.lossy = bool(getattr(node, "LOSSY", False))


class GraphRunner(_Processes, _Lifecycle):
    """Runs a graph (the whole of it in ``main``, or some nodes as a worker process).

    Parameters
    ----------
    graph : path, built-in name, YAML text or dict (or None for a worker: read from Redis)
    seconds : float, optional
        Run length in source time (overrides the graph's).
    bus : {"inprocess", "redis"}, optional
    redis_url : str, optional
        ``"auto"`` or ``redis://…``.
    clock : {"realtime", "fast"}, optional
    out_dir : path, optional
    nodes : list of str, optional
        Worker role: run only these nodes (they must share a placement group).
    run_id : str, optional
        Worker role: the run to join (default: the last run started on that Redis).
    start_at_end : bool
        Worker role: read only new messages (a restarted process).
    startup_timeout_s : float
        Longest wait for child and external processes to be running.
    objects : dict, optional
        In-process handles for nodes of the main process (``NodeContext.objects``): e.g.
        ``{"recorder": SessionRecorder(...)}`` for a recorder node with ``use: recorder``.
    speed : float
        ``clock: realtime`` only: pace the sources at this many times the wall clock (a simulated
        implant in tests and demos; 1.0, the default, is real time).
    """

    def __init__(self, graph: Any, *, seconds: float | None = None, bus: str | None = None,
                 redis_url: str | None = None, clock: str | None = None, out_dir: Any = None,
                 nodes: list[str] | None = None, run_id: str | None = None, start_at_end: bool = False,
                 startup_timeout_s: float = 120.0, objects: dict | None = None, speed: float = 1.0) -> None:
        self.objects = dict(objects or {})
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0 < speed < 1000:
            raise ConfigError(f"speed must be a number > 0 and < 1000; got {speed!r}")
        self.speed = float(speed)
        self.role = "worker" if nodes else "main"
        self._graph_src = graph
        self._seconds = seconds
        self._bus_kind = bus
        self._redis_url = redis_url
        self._clock = clock
        self.out_dir = None if out_dir is None else Path(out_dir)
        self._only = list(nodes) if nodes else None
        self.run_id = run_id
        self._start_at_end = start_at_end
        self.startup_timeout_s = float(startup_timeout_s)
        self._server = None
        self._client = None
        self._workers: dict[str, dict] = {}
        self.faults: list[dict] = []
        self._stop: str | None = None
        self._failure: dict | None = None          # what ended the run (see lifecycle)
        self._failed_at = 0.0
        self._halts: set = set()                   # halts the watchdog of a cursor here holds
        self._bus_lost = False
        self._gate_local = False
        self._drops_next: dict = {}
        self._fault_seq = 0
        self._remote_cache: tuple[int, dict, dict] = (0, {}, {})
        self.cpus: list[int] | None = None
        self._cpus_before: list[int] | None = None
        self._last_sample = -1
        self._ops: queue.SimpleQueue = queue.SimpleQueue()
        self._op_seq = 0
        self._reply_seq = 0
        self._replies: collections.OrderedDict = collections.OrderedDict()
        self._reply_cond = threading.Condition()
        self._reply_sub = None
        #: Set once the nodes are set up and the loop runs (for callers in other threads).
        self.started = threading.Event()
        #: Set when the run has ended (normally or not).
        self.ended = threading.Event()

    # ------------------------------------------------------------------ set-up
    def _prepare(self) -> None:
        if self.role == "main":
            g = load_graph(self._graph_src)
            if self._bus_kind is not None:
                if self._bus_kind not in ("inprocess", "redis"):
                    raise ConfigError(f"bus must be 'inprocess' or 'redis'; got {self._bus_kind!r}")
                g["bus"]["kind"] = self._bus_kind
            if self._redis_url is not None:
                g["bus"]["url"] = self._redis_url
                if self._bus_kind is None:
                    g["bus"]["kind"] = "redis"
            if self._clock is not None:
                if self._clock not in ("realtime", "fast"):
                    raise ConfigError(f"clock must be 'realtime' or 'fast'; got {self._clock!r}")
                g["clock"] = self._clock
            if self._seconds is not None:
                if not self._seconds > 0:
                    raise ConfigError(f"seconds must be > 0; got {self._seconds!r}")
                g["seconds"] = float(self._seconds)
            redis = g["bus"]["kind"] == "redis"
            g["_placement"] = {n: (s["group"] if redis else "main") for n, s in g["nodes"].items()}
            self.graph = g
            self.process = "main"
            if redis:
                self._open_redis_main()
            else:
                self.bus = InProcessBus()
            self.local = [n for n in g["order"] if g["_placement"][n] == "main"]
        else:
            self._open_redis_worker()
            g = self.graph
            unknown = [n for n in self._only if n not in g["nodes"]]
            if unknown:
                raise ConfigError(f"--node names {unknown} are not in the graph; nodes: {sorted(g['nodes'])}")
            groups = {g["_placement"][n] for n in self._only}
            if len(groups) != 1:
                raise ConfigError(f"--node names {self._only} belong to different process groups {sorted(groups)}")
            self.process = groups.pop()
            if self.process == "main":
                raise ConfigError(f"nodes {self._only} run in the main process (where: main); start the graph "
                                  "with cortexlink run GRAPH instead")
            self.local = [n for n in g["order"] if n in self._only]
        self.realtime = self.graph["clock"] == "realtime"
        if self.graph["clock"] == "fast" and self.graph["bus"]["kind"] == "redis":
            gates = [n for n, s in self.graph["nodes"].items() if s["kind"] == "cursor"
                     and self.graph["_placement"][n] != "main"]
            if gates:
                raise ConfigError(f"clock: fast with the Redis bus needs the cursor node(s) {gates} in the main "
                                  "process (where: main): the watchdog measures stalls on the main process's tick clock")

    def _now(self) -> int:
        return time.monotonic_ns() if self.realtime else self._vnow

    def _build(self) -> None:
        g = self.graph
        placement = g["_placement"]
        proc = self.process
        self._vnow = 0
        fs = None
        chunk = None
        for s in g["nodes"].values():
            if s["kind"] == "sim_source":
                fs = node_class("sim_source").implant_fs(s["params"])
                chunk = s["params"]["chunk_ms"]
            elif s["kind"] == "replay_source":
                fs, chunk = s["params"]["fs_hz"], s["params"]["chunk_ms"]
            if fs is not None:
                break
        dl_ms = g["deadline_ms"] if g["deadline_ms"] is not None else (chunk if chunk is not None else g["bin_ms"])
        redis = isinstance(self.bus, RedisStreamsBus)
        self.deadline_ns = int(dl_ms * 1e6)
        self.stats_from_sample = int(round(g["stats_after_s"] * (fs or 30000.0)))
        self.ctx = NodeContext(bus=self.bus, graph=g, realtime=self.realtime, now_ns=self._now, fault=self._fault,
                               request_stop=self._request_stop, health=self._health, out_dir=self.out_dir,
                               stats_from_sample=self.stats_from_sample, deadline_ns=self.deadline_ns, process=proc,
                               objects=self.objects if self.role == "main" else None, reply=self._reply,
                               fail=self._fail_run if self.role == "main" else None,
                               journal=self._journal if self.role == "worker" and redis else None)
        self.supervisor = Supervisor(self._fault, self._now, on_give_up=self._node_given_up)
        self.slots: list[_Slot] = []
        self.by_name: dict[str, _Slot] = {}
        for name in self.local:
            spec = g["nodes"][name]
            cls = node_class(spec["kind"])
            node = cls(name, spec["params"], self.ctx, inject=spec["inject"])
            node.critical = spec["critical"]
            slot = _Slot(name, node, RestartPolicy.from_dict(spec["restart"]))
            for port, e in spec["inputs"].items():
                ps = cls.INPUTS.get(port)
                # an operator command is never dropped: a burst (hundreds of mouse moves) must not push
                # an E-STOP or a record_start out of a node's queue
                mx = max(e["maxlen"], OPERATOR_MAXLEN) if e["from"] == OPERATOR_TOPIC else e["maxlen"]
                sub = self.bus.subscribe(e["from"], f"{name}.{port}", maxlen=mx, policy=e["policy"],
                                         from_start=bool(ps is not None and ps.replay and self._start_at_end))
                node.subs[port] = sub
                slot.ports.append((port, sub))
                slot.reported_drops[port] = 0
            self.slots.append(slot)
            self.by_name[name] = slot
        # topics this process publishes, and which of them other processes read
        for name in self.local:
            cls = node_class(g["nodes"][name]["kind"])
            for port in cls.OUTPUTS:
                topic = f"{name}.{port}"
                consumers = [(n, p, e) for n, s in g["nodes"].items() for p, e in s["inputs"].items()
                             if e["from"] == topic]
                remote = [(n, p, e) for n, p, e in consumers if placement[n] != proc]
                if redis:
                    mx = max([e["maxlen"] for _, _, e in remote], default=0)
                    self.bus.advertise(topic, remote=bool(remote), maxlen=max(mx * 2, 1000))
                    for n, p, e in remote:
                        self.bus.declare_remote_edge(topic, f"{n}.{p}", e["maxlen"], e["policy"])
                else:
                    self.bus.advertise(topic, remote=False)
        if redis:
            self.bus.advertise_shared(FAULTS_TOPIC, maxlen=10000)
            self.bus.advertise_shared(OPERATOR_TOPIC, maxlen=OPERATOR_MAXLEN)
            self.bus.advertise_shared(REPLIES_TOPIC, maxlen=1000)
        if self.role == "main":
            self._reply_sub = self.bus.subscribe(REPLIES_TOPIC, "runtime.replies", maxlen=1024, policy="drop_oldest")
            self._collector = self.bus.subscribe(FAULTS_TOPIC, "runtime.collector", maxlen=100000,
                                                 policy="drop_oldest", lazy=True)
        self._remote_nodes = [n for n in g["nodes"] if n not in self.by_name]
        self._gate_remote = any(s["kind"] == "cursor" and n not in self.by_name for n, s in g["nodes"].items())
        self._gate_local = any(g["nodes"][n]["kind"] == "cursor" for n in self.by_name)

    def _journal(self, node: str) -> Any:
        from cortexlink.runtime.journal import Journal

        return Journal(self.bus, node)

    # ------------------------------------------------------------------ stepping
    def _step(self, slot: _Slot, inbox: dict, now: int) -> None:
        node = slot.node
        t0 = time.monotonic_ns()
        if inbox:
            sf = self.stats_from_sample
            for port, msgs in inbox.items():
                node.n_in += len(msgs)
                st = node.hop_stats.get(port)
                if st is None:
                    st = node.hop_stats[port] = LatencyStats(1 << 18)
                    node.transport_stats[port] = LatencyStats(1 << 18)
                tr = node.transport_stats[port]
                for m in msgs:
                    if m.sample >= sf and m.t_pub_ns:
                        st.add(t0 - m.t_pub_ns)
                        if m.t_recv_ns != m.t_pub_ns:
                            tr.add(m.t_recv_ns - m.t_pub_ns)
                last = msgs[-1].sample
                if last > self._last_sample:
                    self._last_sample = last
        try:
            if node._fail_at:
                node._check_inject()
            node.step(inbox, now)
        except Exception as exc:
            self.supervisor.failed(node, slot.policy, exc, self._last_sample)
            self._publish_state(slot)
        node.n_steps += 1
        node.step_stats.add(time.monotonic_ns() - t0)

    def _drain(self, slot: _Slot) -> dict:
        inbox = {}
        for port, sub in slot.ports:
            if len(sub) or sub.overflowed:
                try:
                    msgs = sub.drain()
                except CortexlinkError as exc:
                    self.supervisor.failed(slot.node, slot.policy, exc, self._last_sample)
                    self._publish_state(slot)
                    return {}
                if msgs:
                    inbox[port] = msgs
        return inbox

    # ------------------------------------------------------------------ the loop
    def run(self) -> RunResult:
        """Set up, run until the end (``seconds``, a node's stop request, Ctrl-C or the main
        process's stop), tear down; return the :class:`RunResult` (worker: its nodes only)."""
        t_wall = time.perf_counter()
        try:
            self._prepare()
            # from here a SIGINT/SIGTERM/SIGHUP asks for a clean stop (runtime.signals): set-up ends,
            # the loop makes one pass and the run finishes with its result
            with stopper(self.request_stop):
                self._build()
                self._pin()
                self._setup_nodes()
                if self.role == "main" and isinstance(self.bus, RedisStreamsBus) and self._remote_nodes:
                    self._start_workers()
                if self.realtime:
                    _quiet_gc()
                try:
                    self._loop()
                except KeyboardInterrupt:
                    self._request_stop("interrupted")
                return self._finish(time.perf_counter() - t_wall)
        except BaseException:
            self._abort()
            raise
        finally:
            self._unpin()
            self.ended.set()
            with self._reply_cond:
                self._reply_cond.notify_all()

    def _setup_nodes(self) -> None:
        done = []
        for slot in self.slots:
            node = slot.node
            try:
                node.setup()
            except Exception as exc:
                node.state = NodeState.FAILED
                node.error = f"{type(exc).__name__}: {exc}"
                self._publish_state(slot)
                for s in reversed(done):
                    try:
                        s.node.teardown()
                    except Exception:
                        logger.warning("teardown of %s failed", s.name, exc_info=True)
                if isinstance(exc, ConfigError):
                    raise
                raise CortexlinkError(f"nodes.{slot.name}: setup failed: {type(exc).__name__}: {exc}") from exc
            node.state = NodeState.RUNNING
            self._publish_state(slot)
            done.append(slot)

    def _loop(self) -> None:
        g = self.graph
        bus = self.bus
        slots = self.slots
        clocked = [s for s in slots if s.node.CLOCKED]
        periods = [s.node.period_ns for s in clocked if s.node.period_ns > 0]
        if clocked and not periods:
            raise ConfigError("a clocked node has no period (chunk_ms)")
        tick_ns = min(periods) if periods else 0
        ticks = any(s.node.TICKS for s in slots)
        wd = g.get("watchdog", {})
        check_ns = int(float(wd.get("check_interval_ms", 2.0)) * 1e6)
        stall_ns = int(float(wd.get("stall_ms", 5.0)) * 1e6)
        hb_ns = max(stall_ns // 4, 250_000)
        seconds = g["seconds"]
        limit_ns = None if seconds is None else int(seconds * 1e9)
        realtime = self.realtime
        deadline = self.deadline_ns
        stats_from_ns = int(g["stats_after_s"] * 1e9)
        remote_in = isinstance(bus, RedisStreamsBus) and bus.has_remote_inputs
        speed = self.speed
        t0 = time.monotonic_ns()
        for s in clocked:
            s.due = t0 if realtime else 0
        self._vnow = 0
        self._t0 = t0
        next_house = t0
        next_hb = t0
        ppid = os.getppid()
        hb_sources = [s for s in slots if s.node.SOURCE] if (self._gate_remote and isinstance(bus, RedisStreamsBus)) else []
        self.source_time_ns = 0
        n_fast = 0
        ops = self._ops
        replies = self._reply_sub
        self.started.set()
        while True:
            if bus.broken is not None and not self._bus_lost:
                self._check_bus()
            if not ops.empty():
                self._publish_ops()
            now = time.monotonic_ns() if realtime else self._vnow
            tick = False
            progressed = False
            if clocked and not realtime:
                tick = all(s.node.ready(now) for s in clocked if s.node.state == "running")
            for slot in slots:
                node = slot.node
                if node.state != "running":
                    continue
                if node.CLOCKED:
                    if realtime:
                        if now < slot.due:
                            continue
                        late = now - slot.due
                        if late > deadline and slot.due - t0 >= stats_from_ns:
                            node.n_missed += 1
                        slot.due += node.period_ns if speed == 1.0 else int(node.period_ns / speed)
                    else:
                        if not tick or now < slot.due:
                            continue
                        slot.due += node.period_ns
                    self._step(slot, self._drain(slot) if slot.ports else {}, now)
                else:
                    inbox = self._drain(slot) if slot.ports else {}
                    if inbox:
                        progressed = True
                    if inbox or node.TICKS:
                        self._step(slot, inbox, now)
            if replies is not None and len(replies):
                self._collect_replies()
            if clocked:
                self.source_time_ns = int((min(s.due for s in clocked) - t0) * speed) if realtime else min(s.due for s in clocked)
            else:
                self.source_time_ns = (time.monotonic_ns() - t0) if realtime else self._vnow
            if tick:
                self._vnow += tick_ns
            if self.supervisor._pending:
                self._restart_due()
            if self._failure is not None:
                self._end_failed_run()
            wall = time.monotonic_ns()
            if hb_sources and wall >= next_hb:
                next_hb = wall + hb_ns
                for s in hb_sources:
                    bus.heartbeat(s.name, s.node.n_out)
            if wall >= next_house:
                next_house = wall + HOUSEKEEPING_NS
                self._housekeeping(ppid)
            if limit_ns is not None and self.role == "main" and self.source_time_ns >= limit_ns:
                self._request_stop(f"{seconds:g} s of source time")
            if self._stop is not None:
                self._stopping_nodes()                  # the cursor is held first (SR-12)
                self._drain_pass(now)
                break
            # wait for the next period or message
            if realtime:
                nxt = min(s.due for s in clocked if s.node.state == "running") if any(
                    s.node.state == "running" for s in clocked) else wall + (check_ns if ticks else 50_000_000)
                if ticks:
                    nxt = min(nxt, wall + check_ns)
                remaining = nxt - time.monotonic_ns()
                if remaining > 0:
                    bus.pump(remaining / 1e9)
                elif remote_in:
                    bus.pump(0.0)
            else:
                if clocked and tick:
                    n_fast += 1
                    if remote_in and n_fast % 16 == 0:
                        bus.pump(0.0)
                elif remote_in:
                    # a pass that moved messages may have made a local source ready (a participant's
                    # intent in lock step): look at the other processes without blocking, since a
                    # server's BLOCK timeout is only as fine as its `hz` (100 ms at Redis's default)
                    bus.pump(0.0 if progressed else (check_ns / 1e9 if ticks else 0.05))
                elif not clocked:
                    time.sleep(0.001)
                elif not tick:
                    # a source waits for input that no process can deliver: give it a chance to time out
                    time.sleep(0.0005)

    def _drain_pass(self, now: int, max_passes: int = 5) -> None:
        """After a stop: let the non-clocked nodes consume what is still queued (a fit command
        published on the last bin, the last features) before teardown."""
        for _ in range(max_passes):
            busy = False
            for slot in self.slots:
                if slot.node.CLOCKED or slot.node.state != "running":
                    continue
                inbox = self._drain(slot) if slot.ports else {}
                if inbox:
                    busy = True
                    self._step(slot, inbox, now)
            if not busy:
                return

    def _housekeeping(self, ppid: int) -> None:
        self._account_drops()
        if isinstance(self.bus, RedisStreamsBus):
            self.bus.flush()
        for slot in self.slots:
            self._publish_state(slot)
        if isinstance(self.bus, RedisStreamsBus):
            self.bus.pump(0.0, lazy=True)
        if self.role == "main":
            if self._workers:
                self._check_workers()
            if self._remote_nodes and self._failure is None:
                self._check_remote_given_up()
            if isinstance(self.bus, RedisStreamsBus):
                ext = self.bus.poll_stop()
                if ext and self._stop is None:
                    self._request_stop(ext)
        else:
            reason = self.bus.poll_stop()
            if reason:
                self._request_stop(f"main process: {reason}")
            elif os.getppid() != ppid and self.graph["nodes"][self.local[0]]["where"] == "subprocess":
                self._request_stop("parent process exited")

def run_graph(graph: str | Path | dict, *, seconds: float | None = None, bus: str | None = None,
              redis_url: str | None = None, clock: str | None = None, out_dir: str | Path | None = None,
              **kw: Any) -> dict:
    """Run a graph to its end; see :class:`GraphRunner`.

    Parameters
    ----------
    graph : path, built-in name, YAML text or dict
    seconds : float, optional
        Run length in source time (overrides the graph's ``seconds``).
    bus : {"inprocess", "redis"}, optional
        Overrides the graph's ``bus.kind``.
    redis_url : str, optional
        ``"auto"`` (start a private redis-server on 127.0.0.1) or ``redis://host:port``.
    clock : {"realtime", "fast"}, optional
    out_dir : path, optional
        Where recordings, decoders and ``summary.json`` go.

    Returns
    -------
    RunResult
        JSON-able: per node state, counters, latencies and summaries; fault events; edges.
    """
    return GraphRunner(graph, seconds=seconds, bus=bus, redis_url=redis_url, clock=clock, out_dir=out_dir,
                       **kw).run()


def run_worker(nodes: list[str], redis_url: str, *, run_id: str | None = None, graph: Any = None,
               start_at_end: bool = False, out_dir: Any = None) -> RunResult:
    """Run some nodes of a graph in this process (the ``cortexlink run --node`` entry point)."""
    return GraphRunner(graph, nodes=nodes, redis_url=redis_url, run_id=run_id, start_at_end=start_at_end,
                       out_dir=out_dir).run()
