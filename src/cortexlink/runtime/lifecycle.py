"""Faults, node states, operator replies and the result of a run.
:class:`~cortexlink.runtime.runner.GraphRunner` inherits these methods; they read and set its
attributes.

A run that stops (a stop request, SIGINT/SIGTERM, its time is up, a failure) tells every node of
each process first (:meth:`~cortexlink.runtime.node.Node.stopping`: the cursor holds itself and
publishes a halted gate), then lets the queued messages through once and tears the nodes down.

A run that cannot go on ends by itself, cursor first: a *critical* node given up on by its
supervisor (or whose process kept dying), or a broken bus (its Redis server lost: a
``bus_lost`` fault; the watchdog's ``bus_down``) becomes the run's ``failure``
(``{"kind", "node", "message", "error", "sample"}`` in the result and ``summary.json``); the
stop is requested once the cursor's watchdog holds a halt (at most
:data:`FAILURE_STOP_WAIT_S` later where the cursor runs in another process or cannot check),
the nodes are torn down and the result is returned as usual — ``cortexlink run`` then exits
with status 1. Repeated ``dropped`` warnings of one edge are reported at most every
:data:`DROP_REPORT_S` seconds (the counts stay exact: the last report carries the rest).
"""

from __future__ import annotations

import collections
import logging
import queue
import subprocess
import time
import uuid
from typing import Any

from cortexlink.runtime.bus import Message
from cortexlink.runtime.graph import FAULTS_TOPIC, OPERATOR_TOPIC, REPLIES_TOPIC
from cortexlink.runtime.redis_bus import RedisStreamsBus
from cortexlink.runtime.node import NodeState
from cortexlink.runtime.watchdog import BUS_HEALTH, HALT_KINDS

logger = logging.getLogger("cortexlink.runtime.runner")

__all__ = ["RunResult", "FAILURE_STOP_WAIT_S", "DROP_REPORT_S"]

SEVERITIES = ("halt", "warning", "info", "clear")
#: Longest wait between a run's failure and its stop for the cursor's watchdog to halt.
FAILURE_STOP_WAIT_S = 0.5
#: Shortest interval between two ``dropped`` warnings of one edge.
DROP_REPORT_S = 5.0


class RunResult(dict):
    """JSON-able result of a run: ``nodes`` (state, counters, latency, summary per node),
    ``faults`` (events), ``edges`` (per edge counters), ``seconds``, ``wall_s``, ``stop_reason``,
    ``failure`` (None, or what ended the run: see the module docstring)."""


class _Lifecycle:
    """GraphRunner's faults, states, operator command queue and results (a mixin)."""

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
        if kind in HALT_KINDS:             # the watchdog of a cursor in this process: is it halted?
            if severity == "halt":
                self._halts.add((kind, node))
            elif severity == "clear":
                self._halts.discard((kind, node))
        msg = Message(FAULTS_TOPIC, self._fault_seq, ev["sample"], 0, ev, time.monotonic_ns())
        self._fault_seq += 1
        try:
            self.bus.publish(msg)
        except Exception:  # a broken bus must not hide the fault: it is logged above and kept here
            logger.exception("could not publish fault event %s", kind)
            if self.role == "main":
                self.faults.append(ev)

    def request_stop(self, reason: str) -> None:
        """End the run after the current pass (thread-safe; e.g. from a UI's thread or a signal
        handler)."""
        self._request_stop(reason)

    # ------------------------------------------------------------------ a run that cannot go on
    def _fail_run(self, kind: str, *, node: str, message: str, **fields: Any) -> None:
        """Record what ends the run (the first only); :meth:`_end_failed_run` stops it."""
        if self._failure is not None:
            return
        self._failure = {"kind": kind, "node": node, "message": message, "sample": int(self._last_sample), **fields}
        self._failed_at = time.monotonic()
        logger.error("the run ends: %s", message)

    def _end_failed_run(self) -> None:
        """Called every pass after a failure: stop once the cursor here is halted (or no cursor
        runs here, or it did not halt within FAILURE_STOP_WAIT_S)."""
        if self._stop is None and (not self._gate_local or self._halts
                                   or time.monotonic() - self._failed_at > FAILURE_STOP_WAIT_S):
            self._request_stop(f"{self._failure['kind']}: {self._failure['message']}")

    def _check_bus(self) -> None:
        """Called every pass: a bus that broke becomes the ``bus_lost`` fault and ends the run."""
        if self._bus_lost:
            return
        self._bus_lost = True
        where = getattr(self, "url", None) or "the Redis server"
        msg = (f"lost the message bus ({where}): {self.bus.broken}; the cursor is halted and the run ends "
               "(a lost Redis server is not reconnected: its streams and state are gone)")
        self._fault("bus_lost", node=BUS_HEALTH, severity="halt", message=msg, error=self.bus.broken)
        self._fail_run("bus_lost", node=BUS_HEALTH, message=msg, error=self.bus.broken)

    def _node_given_up(self, node: Any) -> None:
        """The supervisor stopped ``node`` for good: a critical one ends the run (from the main
        process; a worker's is seen there in the nodes' states)."""
        if node.critical and self.role == "main":
            self._fail_run("node_stopped", node=node.name, error=node.error,
                           message=f"critical node {node.name} was stopped after {node.n_failures} failures; "
                                   f"last error: {node.error}")

    def _check_remote_given_up(self) -> None:
        for name, h in self._health().items():
            if name in self.by_name or name == BUS_HEALTH:
                continue
            if h.get("critical") and h.get("state") == "stopped" and h.get("gave_up"):
                self._fail_run("node_stopped", node=name, error=h.get("error"),
                               message=f"critical node {name} was stopped after repeated failures; "
                                       f"last error: {h.get('error')}")
                return

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
        if self.bus.broken is not None:
            out[BUS_HEALTH] = {"state": "failed", "bus": True, "critical": True, "error": self.bus.broken}
        return out

    def _publish_state(self, slot: Any, final: bool = False) -> None:
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

    def _account_drops(self, final: bool = False) -> None:
        now = time.monotonic()
        for slot in self.slots:
            for port, sub in slot.ports:
                d = sub.n_dropped - slot.reported_drops[port]
                if d > 0 and not slot.lossy and (final or now >= self._drops_next.get((slot.name, port), 0.0)):
                    self._drops_next[(slot.name, port)] = now + DROP_REPORT_S
                    slot.reported_drops[port] = sub.n_dropped
                    self._fault("dropped", node=slot.name, severity="warning",
                                message=f"edge {sub.topic} -> {sub.name} ({sub.policy}, maxlen {sub.maxlen}) "
                                        f"dropped {d} message(s) ({sub.n_dropped} in all)",
                                edge=f"{sub.topic}->{sub.name}", n=d, total=sub.n_dropped, policy=sub.policy)

    # ------------------------------------------------------------------ the end
    def _stopping_nodes(self) -> None:
        """Tell every running node of this process, once, that the run stops (``Node.stopping``:
        the cursor publishes a halted gate before anything is torn down)."""
        if getattr(self, "_told_stopping", False):
            return
        self._told_stopping = True
        for slot in self.slots:
            if slot.node.state == "running":
                try:
                    slot.node.stopping(self._stop or "the run ends")
                except Exception as exc:
                    logger.warning("stopping %s raised %s: %s", slot.name, type(exc).__name__, exc)

    def _teardown_nodes(self) -> dict:
        self._stopping_nodes()                  # where the loop did not (an interrupt, a failed loop)
        infos = {}
        for slot in reversed(self.slots):
            node = slot.node
            if node.state in ("running", "starting"):
                try:
                    node.teardown()
                except Exception as exc:
                    logger.warning("teardown of %s raised %s: %s", slot.name, type(exc).__name__, exc)
                    node.error = f"teardown: {type(exc).__name__}: {exc}"
                node.state = NodeState.STOPPED
            infos[slot.name] = self._publish_state(slot, final=True)
        return infos

    def _finish(self, wall_s: float) -> RunResult:
        self._account_drops(final=True)
        if self.role == "main" and isinstance(self.bus, RedisStreamsBus):
            self.bus.request_stop(self._stop or "finished")
        infos = self._teardown_nodes()
        res = RunResult(graph=self.graph["name"], role=self.role, process=self.process, bus=self.bus.kind,
                        clock=self.graph["clock"], run_id=self.run_id, stop_reason=self._stop, failure=self._failure,
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
                res["redis"] = {"url": self.url, "xadd": self.bus.n_xadd, "xread": self.bus.n_xread,
                                "chunk_codec": self.bus.codecs.stats()}     # this process's chunks
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
                slot.node.state = NodeState.STOPPED
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
