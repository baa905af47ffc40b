"""The processes of a run: the Redis connection of the main process and of a worker, child
processes started per ``group`` (restarted under their nodes' policy), external nodes waited for,
and CPU pinning. :class:`~cortexlink.runtime.runner.GraphRunner` inherits these methods; they
read and set its attributes."""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cortexlink.core.errors import ConfigError, CortexlinkError
from cortexlink.runtime.graph import load_graph
from cortexlink.runtime.redis_bus import RedisStreamsBus
from cortexlink.runtime.supervisor import RestartPolicy

logger = logging.getLogger("cortexlink.runtime.runner")

__all__ = ["pin_cpus"]

#: One connection per process (no pool on the hot path), 1 MiB socket reads (fewer recv calls
#: for raw chunks), a socket timeout well above the longest blocking read, and no retries: a
#: lost server breaks the bus at once (a server that comes back has lost the run's streams).
_CLIENT_KW = {"socket_timeout": 30.0, "single_connection_client": True, "socket_read_size": 1 << 20}


def _client_kw() -> dict:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {**_CLIENT_KW, "retry": Retry(NoBackoff(), 0)}


def _codec_kw(g: dict) -> dict:
    """The Redis bus's chunk codec options from the graph's ``bus`` section."""
    from cortexlink.runtime.chunk_codec import DEFAULT_RESYNC_FRAMES

    bus = g.get("bus") or {}
    return {"chunk_codec": bus.get("chunk_codec", "none"),
            "chunk_codec_resync": bus.get("chunk_codec_resync", DEFAULT_RESYNC_FRAMES)}


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


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class _Processes:
    """GraphRunner's process management (a mixin: the attributes are GraphRunner's)."""

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
        self._client = connect(url, **_client_kw())
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
        self.bus = RedisStreamsBus(self._client, self.run_id, stream_maxlen=g["bus"]["stream_maxlen"],
                                   **_codec_kw(g))
        self._client.set(self.bus.prefix + "graph", json.dumps(g))
        self._client.set("cl:current_run", self.run_id)

    def _open_redis_worker(self) -> None:
        from cortexlink.runtime.redis_server import connect

        if not self._redis_url or self._redis_url == "auto":
            raise ConfigError("a worker (--node) needs --redis URL of the run's Redis server")
        self.url = self._redis_url
        self._client = connect(self._redis_url, **_client_kw())
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
                                   start_at_end=self._start_at_end, **_codec_kw(g))

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
        while self._stop is None:            # a stop signal during start-up: on to the loop and the summary
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
            critical = [n for n in names if self.graph["nodes"][n]["critical"]]
            for n in names:
                self.bus.set_state(n, {"state": "failed", "error": f"process exited with code {proc.returncode}",
                                       "critical": n in critical, "source": False})
            self._fault("process_exited", node=",".join(names), severity="halt",
                        message=f"process {grp} (nodes {names}) exited with code {proc.returncode}; "
                                f"log: {w['log']}", returncode=proc.returncode)
            if self._stop is not None or self.bus.broken is not None:
                w["gave_up"] = True                 # the run is ending: no restart
                continue
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
                if critical:
                    self._fail_run("node_stopped", node=",".join(critical), error=f"exit code {proc.returncode}",
                                   message=f"the process of critical node(s) {critical} kept dying ({len(hist)} exits "
                                           f"within {policy.window_s:g} s, last exit code {proc.returncode}; log: "
                                           f"{w['log']})")
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
