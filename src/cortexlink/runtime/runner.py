"""Running a graph: the scheduler of one process, its supervisor, the launcher of the others.

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
the answers from ``cl:<run>:s:operator.replies`` (:class:`~cortexlink.runtime.operator.RedisOperatorClient`).
"""

from __future__ import annotations

import collections
import gc
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ConfigError, CortexlinkError
from cortexlink.runtime.bus import InProcessBus, Message, RedisStreamsBus
from cortexlink.runtime.graph import FAULTS_TOPIC, OPERATOR_TOPIC, REPLIES_TOPIC, load_graph
from cortexlink.runtime.node import NodeContext, node_class
from cortexlink.runtime.stats import LatencyStats
from cortexlink.runtime.supervisor import RestartPolicy, Supervisor

logger = logging.getLogger(__name__)

__all__ = ["GraphRunner", "RunResult", "run_graph", "run_worker"]

HOUSEKEEPING_NS = 100_000_000       # states, drop accounting, stop checks
#: One connection per process (no pool on the hot path), 1 MiB socket reads (fewer recv calls
#: for raw chunks), a socket timeout well above the longest blocking read.
_CLIENT_KW = {"socket_timeout": 30.0, "single_connection_client": True, "socket_read_size": 1 << 20}
SEVERITIES = ("halt", "warning", "info", "clear")


def _start_affinity() -> frozenset[int] | None:
    if not hasattr(os, "sched_getaffinity"):
        return None
    env = os.environ.get("CORTEXLINK_ALLOWED_CPUS")      # set for child processes by the main one
    if env:
        try:
            return frozenset(int(c) for c in env.split(","))
        except ValueError:
            logger.warning("ignoring CORTEXLINK_ALLOWED_CPUS=%r (not a comma-separated list of CPUs)", env)
    return frozenset(os.sched_getaffinity(0))


#: The CPUs this process may use before any pinning: its set when cortexlink was imported, or
#: for a child process the main process's (a child must not inherit the main process's pinning).
_START_AFFINITY = _start_affinity()


def pin_cpus(cpus: list[int], what: str, pid: int | None = None) -> list[int] | None:
    """Restrict every thread of process ``pid`` (default: this one) to ``cpus``; return the set
    applied, or None where the platform has no CPU affinity (then a warning). ``what`` names the
    graph field in errors.

    Raises
    ------
    ConfigError
        A CPU is not available to this process (absent, or outside its cgroup's set).
    """
    if not hasattr(os, "sched_setaffinity"):
        logger.warning("%s: CPU affinity is not supported on this platform; ignored", what)
        return None
    allowed = _START_AFFINITY or os.sched_getaffinity(0)
    missing = sorted(set(cpus) - allowed)
    if missing:
        raise ConfigError(f"{what}: CPU(s) {missing} are not available here (this process may use "
                          f"{sorted(allowed)})")
    tasks = Path(f"/proc/{pid or os.getpid()}/task")
    tids = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [pid or 0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:      # a thread that has just ended
            pass
    return list(cpus)


def _quiet_gc() -> None:
    """Before a real-time loop: collect once and freeze what set-up allocated (modules, models,
    buffers), so that the cyclic garbage collector only ever scans objects made during the run;
    a full collection over everything a process imported (numpy, torch, pynwb) takes milliseconds
    and would land on the hot path as a latency spike."""
    gc.collect()
    gc.freeze()


class RunResult(dict):
    """JSON-able result of a run: ``nodes`` (state, counters, latency, summary per node),
    ``faults`` (events), ``edges`` (per edge counters), ``seconds``, ``wall_s``, ``stop_reason``."""


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


class GraphRunner:
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

    # ------------------------------------------------------------------ operator commands
    def send_command(self, cmd: dict) -> str:
        """Queue an operator command (``{"cmd": ..., fields}``; thread-safe) for the next pass of
        the scheduler, which publishes it on ``operator.commands``; return its ``id``."""
        cid = str(cmd.get("id") or uuid.uuid4().hex[:16])
        self._ops.put({**cmd, "id": cid})
        return cid

    def wait_reply(self, cid: str, timeout_s: float) -> dict | None:
        """The answer of the node that applied command ``cid`` (``{"id", "ok", "result" | "error",
        "status", "node"}``), or None when none came within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._reply_cond:
            while cid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.ended.is_set():
                    return self._replies.pop(cid, None)
                self._reply_cond.wait(min(left, 0.1))
            return self._replies.pop(cid)

    def _publish_ops(self) -> None:
        while True:
            try:
                cmd = self._ops.get_nowait()
            except queue.Empty:
                return
            self.bus.publish(Message(OPERATOR_TOPIC, self._op_seq, self._last_sample, 0, cmd, time.monotonic_ns()))
            self._op_seq += 1

    def _reply(self, payload: dict) -> None:
        self.bus.publish(Message(REPLIES_TOPIC, self._reply_seq, self._last_sample, 0, payload, time.monotonic_ns()))
        self._reply_seq += 1

    def _collect_replies(self) -> None:
        msgs = self._reply_sub.drain()
        with self._reply_cond:
            for m in msgs:
                if isinstance(m.payload, dict) and "id" in m.payload:
                    self._replies[str(m.payload["id"])] = m.payload
            while len(self._replies) > 1024:
                self._replies.popitem(last=False)
            self._reply_cond.notify_all()

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

    def _open_redis_main(self) -> None:
        from cortexlink.runtime.redis_server import RedisServer, connect, tuned_for_latency

        g = self.graph
        url = g["bus"].get("url") or "auto"
        if url == "auto":
            # hz 500: blocking reads time out with ~2 ms granularity instead of 100 ms (watchdog wake-ups)
            unix = g["bus"].get("socket", "unix") == "unix"
            self._server = RedisServer(extra_args=("--hz", "500"), unix_socket=unix).start()
            url = self._server.unix_url if unix else self._server.url
            if g["bus"].get("server_cpus"):
                pin_cpus(g["bus"]["server_cpus"], "bus.server_cpus", pid=self._server.pid)
        self.url = url
        self._client = connect(url, **_CLIENT_KW)
        tuned_for_latency(self._client, strict=False)
        try:
            hz = int(self._client.config_get("hz").get("hz", 10))
            if hz < 100:
                logger.warning("the Redis server at %s runs with hz %d: blocking reads time out with %d ms "
                               "granularity, so nodes in other processes may check the watchdog that late "
                               "(CONFIG SET hz 500 on a dedicated server, or --redis auto)", url, hz, 1000 // hz)
        except Exception:  # CONFIG may be disabled on managed servers
            logger.debug("CONFIG GET hz failed", exc_info=True)
        self.run_id = self.run_id or uuid.uuid4().hex[:12]
        self.bus = RedisStreamsBus(self._client, self.run_id, stream_maxlen=g["bus"]["stream_maxlen"])
        self._client.set(self.bus.prefix + "graph", json.dumps(g))
        self._client.set("cl:current_run", self.run_id)

    def _open_redis_worker(self) -> None:
        from cortexlink.runtime.redis_server import connect

        if not self._redis_url or self._redis_url == "auto":
            raise ConfigError("a worker (--node) needs --redis URL of the run's Redis server")
        self.url = self._redis_url
        self._client = connect(self._redis_url, **_CLIENT_KW)
        if self.run_id is None:
            got = self._client.get("cl:current_run")
            if got is None:
                raise ConfigError(f"no run found on {self._redis_url}; give --run-id")
            self.run_id = got.decode()
        raw = self._client.get(f"cl:{self.run_id}:graph")
        if self._graph_src is not None:
            g = load_graph(self._graph_src)
            stored = None if raw is None else json.loads(raw)
            g["_placement"] = stored["_placement"] if stored else {n: s["group"] for n, s in g["nodes"].items()}
            for k in ("clock", "seconds", "bus"):
                if stored:
                    g[k] = stored[k]
        elif raw is None:
            raise ConfigError(f"run {self.run_id!r} has no graph on {self._redis_url}")
        else:
            g = json.loads(raw)
        self.graph = g
        self.bus = RedisStreamsBus(self._client, self.run_id, stream_maxlen=g["bus"]["stream_maxlen"],
                                   start_at_end=self._start_at_end)

    def _now(self) -> int:
        return time.monotonic_ns() if self.realtime else self._vnow

    def _build(self) -> None:
        g = self.graph
        placement = g["_placement"]
        proc = self.process
        self._vnow = 0
        fs = None
        chunk = None
        for n, s in g["nodes"].items():
            if s["kind"] == "sim_source":
                fs = node_class("sim_source").implant_fs(s["params"])
                chunk = s["params"]["chunk_ms"]
            elif s["kind"] == "replay_source":
                fs, chunk = s["params"]["fs_hz"], s["params"]["chunk_ms"]
            if fs is not None:
                break
        dl_ms = g["deadline_ms"] if g["deadline_ms"] is not None else (chunk if chunk is not None else g["bin_ms"])
        self.deadline_ns = int(dl_ms * 1e6)
        self.stats_from_sample = int(round(g["stats_after_s"] * (fs or 30000.0)))
        self.ctx = NodeContext(bus=self.bus, graph=g, realtime=self.realtime, now_ns=self._now, fault=self._fault,
                               request_stop=self._request_stop, health=self._health, out_dir=self.out_dir,
                               stats_from_sample=self.stats_from_sample, deadline_ns=self.deadline_ns, process=proc,
                               objects=self.objects if self.role == "main" else None, reply=self._reply)
        self.supervisor = Supervisor(self._fault, self._now)
        self.slots: list[_Slot] = []
        self.by_name: dict[str, _Slot] = {}
        redis = isinstance(self.bus, RedisStreamsBus)
        for name in self.local:
            spec = g["nodes"][name]
            cls = node_class(spec["kind"])
            node = cls(name, spec["params"], self.ctx, inject=spec["inject"])
            node.critical = spec["critical"]
            slot = _Slot(name, node, RestartPolicy.from_dict(spec["restart"]))
            for port, e in spec["inputs"].items():
                sub = self.bus.subscribe(e["from"], f"{name}.{port}", maxlen=e["maxlen"], policy=e["policy"])
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
            self.bus.advertise_shared(OPERATOR_TOPIC, maxlen=1000)
            self.bus.advertise_shared(REPLIES_TOPIC, maxlen=1000)
        if self.role == "main":
            self._reply_sub = self.bus.subscribe(REPLIES_TOPIC, "runtime.replies", maxlen=1024, policy="drop_oldest")
            self._collector = self.bus.subscribe(FAULTS_TOPIC, "runtime.collector", maxlen=100000,
                                                 policy="drop_oldest", lazy=True)
        self._remote_nodes = [n for n in g["nodes"] if n not in self.by_name]
        self._gate_remote = any(s["kind"] == "cursor" and n not in self.by_name for n, s in g["nodes"].items())

    # ------------------------------------------------------------------ faults, health, stop
    def _fault(self, kind: str, *, node: str, severity: str = "halt", message: str = "", sample: int = -1,
               **fields: Any) -> None:
        ev = {"kind": kind, "severity": severity, "node": node, "message": message,
              "sample": int(sample if sample is not None and sample >= 0 else self._last_sample),
              "t_ns": int(self._now()), "mono_ns": time.monotonic_ns(), "process": self.process, **fields}
        if severity in ("halt", "warning"):
            logger.warning("FAULT %s [%s] %s: %s", kind, severity, node, message)
        else:
            logger.info("fault %s [%s] %s: %s", kind, severity, node, message)
        msg = Message(FAULTS_TOPIC, self._fault_seq, ev["sample"], 0, ev, time.monotonic_ns())
        self._fault_seq += 1
        try:
            self.bus.publish(msg)
        except Exception:  # a broken bus must not hide the fault: it is logged above and kept here
            logger.exception("could not publish fault event %s", kind)
            if self.role == "main":
                self.faults.append(ev)

    def request_stop(self, reason: str) -> None:
        """End the run after the current pass (thread-safe; e.g. from a UI's thread)."""
        self._request_stop(reason)

    def _request_stop(self, reason: str) -> None:
        if self._stop is None:
            self._stop = reason
            logger.info("stop requested: %s", reason)

    def _health(self) -> dict:
        out: dict[str, dict] = {}
        for slot in self.slots:
            n = slot.node
            out[slot.name] = {"state": n.state, "n_out": n.n_out, "critical": n.critical, "source": n.SOURCE,
                              "error": n.error, "gave_up": n.gave_up}
        if self._remote_nodes:
            now = time.monotonic_ns()
            t, states, hb = self._remote_cache
            wd = self.graph.get("watchdog", {})
            interval = int(float(wd.get("check_interval_ms", 2.0)) * 1e6)
            if isinstance(self.bus, RedisStreamsBus):
                # asked for now, read on a later pass: no round trip on the hot path
                try:
                    got = self.bus.poll_health(interval)
                except Exception:
                    logger.warning("could not read node states from the bus", exc_info=True)
                    got = None
                if got is not None:
                    self._remote_cache = got
                    t, states, hb = got
            elif now - t >= interval:
                try:
                    states, hb = self.bus.states(), self.bus.heartbeats()
                except Exception:
                    logger.warning("could not read node states from the bus", exc_info=True)
                self._remote_cache = (now, states, hb)
            for name in self._remote_nodes:
                st = states.get(name, {"state": "starting"})
                out[name] = {"state": st.get("state", "starting"), "n_out": hb.get(name, st.get("n_out", 0)),
                             "critical": st.get("critical", self.graph["nodes"][name]["critical"]),
                             "source": st.get("source", False), "error": st.get("error"),
                             "gave_up": st.get("gave_up", False)}
        return out

    def _publish_state(self, slot: _Slot, final: bool = False) -> None:
        info = slot.node.info()
        if final:
            info["latency"] = slot.node.latency_info()
            info["cpus"] = self.cpus
            try:
                info["summary"] = slot.node.summary()
            except Exception as exc:  # a summary must not lose the run's other results
                info["summary"] = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            self.bus.set_state(slot.name, info, wait=final)
        except Exception:
            logger.warning("could not publish the state of %s", slot.name, exc_info=True)
        return info

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

    def _restart_due(self) -> None:
        for name in self.supervisor.due():
            slot = self.by_name[name]
            for _, sub in slot.ports:
                # what queued up while the node was down is discarded, and counted as dropped
                sub.overflowed = False
                sub.n_dropped += len(sub.drain())
            try:
                self.supervisor.restart(slot.node, self._last_sample)
            except Exception as exc:
                self.supervisor.failed(slot.node, slot.policy, exc, self._last_sample)
            self._publish_state(slot)

    def _account_drops(self) -> None:
        for slot in self.slots:
            for port, sub in slot.ports:
                d = sub.n_dropped - slot.reported_drops[port]
                if d > 0 and not slot.lossy:
                    slot.reported_drops[port] = sub.n_dropped
                    self._fault("dropped", node=slot.name, severity="warning",
                                message=f"edge {sub.topic} -> {sub.name} ({sub.policy}, maxlen {sub.maxlen}) "
                                        f"dropped {d} message(s) ({sub.n_dropped} in all)",
                                edge=f"{sub.topic}->{sub.name}", n=d, total=sub.n_dropped, policy=sub.policy)

    # ------------------------------------------------------------------ processes
    def _spawn(self, group: str, names: list[str], restart: bool = False) -> None:
        logdir = self.out_dir / "logs" if self.out_dir is not None else Path(tempfile.mkdtemp(prefix="cortexlink-run-"))
        logdir.mkdir(parents=True, exist_ok=True)
        log = logdir / f"{group}.log"
        cmd = [sys.executable, "-m", "cortexlink.cli.main"]
        level = logging.getLogger("cortexlink").getEffectiveLevel()
        if level <= logging.DEBUG:
            cmd.append("-vv")
        elif level <= logging.INFO:
            cmd.append("-v")
        cmd += ["run", "--node", ",".join(names), "--redis", self.url, "--run-id", self.run_id]
        if restart:
            cmd.append("--start-at-end")
        if self.out_dir is not None:
            cmd += ["--out", str(self.out_dir)]
        env = dict(os.environ)
        if _START_AFFINITY:
            env["CORTEXLINK_ALLOWED_CPUS"] = ",".join(map(str, sorted(_START_AFFINITY)))
        with open(log, "ab") as fh:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    close_fds=True, env=env)
        if _START_AFFINITY and self.cpus:
            try:                        # undo the inherited pinning of this process at once
                os.sched_setaffinity(proc.pid, _START_AFFINITY)
            except OSError:
                logger.debug("could not reset the CPU affinity of process %s", group, exc_info=True)
        w = self._workers.setdefault(group, {"names": names, "restarts": collections.deque(), "n_restarts": 0})
        w.update(proc=proc, log=log, gave_up=False)
        logger.info("started process %s (pid %d) for nodes %s; log %s", group, proc.pid, names, log)

    def _start_workers(self) -> None:
        g = self.graph
        groups: dict[str, list[str]] = collections.defaultdict(list)
        external = []
        for n in g["order"]:
            s = g["nodes"][n]
            if g["_placement"][n] == "main":
                continue
            if s["where"] == "external":
                external.append(n)
            else:
                groups[g["_placement"][n]].append(n)
        for grp, names in groups.items():
            self._spawn(grp, names)
        if external:
            logger.warning("waiting for external node(s) %s: start each with  cortexlink run --node NAME --redis %s "
                           "--run-id %s", external, self.url, self.run_id)
        want = [n for n in g["nodes"] if g["_placement"][n] != "main"]
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            states = self.bus.states()
            bad = [n for n in want if states.get(n, {}).get("state") in ("failed", "stopped")]
            missing = [n for n in want if states.get(n, {}).get("state") != "running"]
            dead = [grp for grp, w in self._workers.items() if w["proc"].poll() is not None]
            if bad or dead:
                tail = ""
                for grp in dead or list(self._workers):
                    tail += f"\n--- {grp} log ---\n" + _tail(self._workers[grp]["log"])
                raise CortexlinkError(f"process(es) for nodes {bad or missing} failed to start{tail}")
            if not missing:
                return
            if time.monotonic() > deadline:
                raise CortexlinkError(f"nodes {missing} were not running within {self.startup_timeout_s:g} s")
            time.sleep(0.05)

    def _check_workers(self) -> None:
        for grp, w in self._workers.items():
            proc = w["proc"]
            if w["gave_up"] or proc.poll() is None:
                continue
            names = w["names"]
            for n in names:
                self.bus.set_state(n, {"state": "failed", "error": f"process exited with code {proc.returncode}",
                                       "critical": self.graph["nodes"][n]["critical"], "source": False})
            self._fault("process_exited", node=",".join(names), severity="halt",
                        message=f"process {grp} (nodes {names}) exited with code {proc.returncode}; "
                                f"log: {w['log']}", returncode=proc.returncode)
            policy = RestartPolicy.from_dict(self.graph["nodes"][names[0]]["restart"])
            now = time.monotonic()
            hist = w["restarts"]
            hist.append(now)
            while hist and now - hist[0] > policy.window_s:
                hist.popleft()
            if len(hist) > policy.max_restarts:
                w["gave_up"] = True
                for n in names:
                    self.bus.set_state(n, {"state": "stopped", "gave_up": True, "error": "process kept failing",
                                           "critical": self.graph["nodes"][n]["critical"], "source": False})
                self._fault("node_stopped", node=",".join(names), severity="halt",
                            message=f"process {grp} stopped after {len(hist)} exits within {policy.window_s:g} s")
            else:
                w["n_restarts"] += 1
                self._spawn(grp, names, restart=True)

    def _await_remote_stop(self, timeout_s: float = 10.0) -> None:
        """Wait (bounded) until every node of another process has published its final state, so
        that nodes started by hand see the stop before the run's keys are deleted."""
        ext = [n for n in self._remote_nodes if self.graph["nodes"][n]["where"] == "external"]
        deadline = time.monotonic() + timeout_s
        while ext and time.monotonic() < deadline:
            states = self.bus.states()
            if all(states.get(n, {}).get("state") in ("stopped", "failed") for n in ext):
                return
            time.sleep(0.05)
        if ext:
            logger.warning("external node(s) %s did not report stopping within %g s", ext, timeout_s)

    def _stop_workers(self) -> None:
        for grp, w in self._workers.items():
            try:
                w["proc"].wait(timeout=30)
            except subprocess.TimeoutExpired:
                logger.warning("process %s did not stop within 30 s; terminating", grp)
                w["proc"].terminate()
                try:
                    w["proc"].wait(timeout=5)
                except subprocess.TimeoutExpired:
                    w["proc"].kill()
                    w["proc"].wait(timeout=5)

    # ------------------------------------------------------------------ the loop
    def run(self) -> RunResult:
        """Set up, run until the end (``seconds``, a node's stop request, Ctrl-C or the main
        process's stop), tear down; return the :class:`RunResult` (worker: its nodes only)."""
        t_wall = time.perf_counter()
        try:
            self._prepare()
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

    def _pin(self) -> None:
        """CPU affinity of this process: the union of its nodes' ``cpus`` (undone by
        :meth:`_unpin` at the end of the run)."""
        want = sorted({c for n in self.local for c in (self.graph["nodes"][n].get("cpus") or ())})
        if not want:
            return
        before = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        if pin_cpus(want, f"cpus of the nodes {self.local} (process {self.process})") is not None:
            self._cpus_before = before
            self.cpus = sorted(os.sched_getaffinity(0))       # as the OS has it now
            logger.info("process %s pinned to CPU(s) %s", self.process, self.cpus)

    def _unpin(self) -> None:
        before = self._cpus_before
        if before and self.cpus:
            try:
                pin_cpus(before, "the CPUs of this process before the run")
            except Exception:
                logger.warning("could not restore this process's CPU affinity", exc_info=True)
            self._cpus_before = None

    def _setup_nodes(self) -> None:
        done = []
        for slot in self.slots:
            node = slot.node
            try:
                node.setup()
            except Exception as exc:
                node.state = "failed"
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
            node.state = "running"
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

    # ------------------------------------------------------------------ the end
    def _teardown_nodes(self) -> dict:
        infos = {}
        for slot in reversed(self.slots):
            node = slot.node
            if node.state in ("running", "starting"):
                try:
                    node.teardown()
                except Exception as exc:
                    logger.warning("teardown of %s raised %s: %s", slot.name, type(exc).__name__, exc)
                    node.error = f"teardown: {type(exc).__name__}: {exc}"
                node.state = "stopped"
            infos[slot.name] = self._publish_state(slot, final=True)
        return infos

    def _finish(self, wall_s: float) -> RunResult:
        self._account_drops()
        if self.role == "main" and isinstance(self.bus, RedisStreamsBus):
            self.bus.request_stop(self._stop or "finished")
        infos = self._teardown_nodes()
        res = RunResult(graph=self.graph["name"], role=self.role, process=self.process, bus=self.bus.kind,
                        clock=self.graph["clock"], run_id=self.run_id, stop_reason=self._stop,
                        seconds=getattr(self, "source_time_ns", 0) / 1e9, deadline_ms=self.deadline_ns / 1e6,
                        stats_after_s=self.graph["stats_after_s"])
        if self.role == "main":
            if self._workers:
                self._stop_workers()
            if isinstance(self.bus, RedisStreamsBus):
                self._await_remote_stop()
                res["processes"] = {grp: {"nodes": w["names"], "pid": w["proc"].pid,
                                          "returncode": w["proc"].returncode, "restarts": w["n_restarts"],
                                          "log": str(w["log"])} for grp, w in self._workers.items()}
            if isinstance(self.bus, RedisStreamsBus):
                states = self.bus.states()
                for n in self._remote_nodes:
                    infos[n] = states.get(n, {"state": "unknown"})
                for _ in range(3):
                    self.bus.pump(0.0)
                res["redis"] = {"url": self.url, "xadd": self.bus.n_xadd, "xread": self.bus.n_xread}
            self.faults.extend(m.payload for m in self._collector.drain())
            self.faults.sort(key=lambda e: (e.get("mono_ns", 0)))
        res["wall_s"] = wall_s
        res["cpus"] = self.cpus
        res["nodes"] = {n: infos[n] for n in self.graph["order"] if n in infos}
        res["faults"] = self.faults
        counts: dict[str, int] = collections.Counter(f"{e['kind']}/{e['severity']}" for e in self.faults)
        res["fault_counts"] = dict(counts)
        res["edges"] = {f"{i['topic']}->{i['consumer']}": {k: i[k] for k in ("policy", "maxlen", "n_received", "n_dropped")}
                        for info in res["nodes"].values() for i in (info.get("inputs") or {}).values()}
        self._close()
        return res

    def _abort(self) -> None:
        for slot in getattr(self, "slots", []):
            if slot.node.state in ("running", "starting"):
                try:
                    slot.node.teardown()
                except Exception:
                    logger.debug("teardown after abort failed", exc_info=True)
                slot.node.state = "stopped"
        if self.role == "main" and isinstance(getattr(self, "bus", None), RedisStreamsBus):
            try:
                self.bus.request_stop("aborted")
            except Exception:
                logger.debug("could not signal stop", exc_info=True)
        for w in self._workers.values():
            if w["proc"].poll() is None:
                try:
                    w["proc"].wait(timeout=10)
                except subprocess.TimeoutExpired:
                    w["proc"].terminate()
                    w["proc"].wait(timeout=5)
        self._close()

    def _close(self) -> None:
        bus = getattr(self, "bus", None)
        if self.role == "main" and isinstance(bus, RedisStreamsBus):
            try:
                bus.delete_run()
            except Exception:
                logger.debug("could not delete the run's keys", exc_info=True)
        if bus is not None:
            bus.close()
        if self._server is not None:
            self._server.stop()
            self._server = None


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


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def run_worker(nodes: list[str], redis_url: str, *, run_id: str | None = None, graph: Any = None,
               start_at_end: bool = False, out_dir: Any = None) -> RunResult:
    """Run some nodes of a graph in this process (the ``cortexlink run --node`` entry point)."""
    return GraphRunner(graph, nodes=nodes, redis_url=redis_url, run_id=run_id, start_at_end=start_at_end,
                       out_dir=out_dir).run()
