"""The operator UI and a graph in another process, talking only through Redis.

:class:`RemoteGraph` starts the graph in a child process (``python -m cortexlink.web.remote``:
a :class:`~cortexlink.runtime.runner.GraphRunner` on the Redis bus; with ``redis="auto"`` that
process starts its own private ``redis-server``), or attaches to a graph already running on a
Redis server (its current run). The child runs in its own session: it does not share the UI's
fate. If the UI process dies, the graph keeps running under its watchdog (a latched E-STOP stays
latched), and a UI started again with ``--redis URL --attach`` takes it over and sees its
current state.

The link (:class:`RedisLink`) is three things on the run's keys (``cl:<run>:``):

* commands: ``XADD s:operator.commands`` (the bus's message encoding, with this process's origin);
* replies: a reader thread doing ``XREAD BLOCK`` on ``s:operator.replies``;
* shared values: ``GET info:<key>`` (the ``ui_feed`` node's snapshot parts).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ConfigError, CortexlinkError
from cortexlink.runtime.graph import OPERATOR_TOPIC, REPLIES_TOPIC

logger = logging.getLogger(__name__)

__all__ = ["RemoteGraph", "RedisLink"]


class RedisLink:
    """Commands, replies and shared values of one run on a Redis server (see the module docstring)."""

    def __init__(self, url: str, run_id: str) -> None:
        from cortexlink.runtime.redis_server import connect

        self.url = url
        self.run_id = run_id
        self.prefix = f"cl:{run_id}:"
        self._r = connect(url, socket_timeout=10.0)
        self._rd = connect(url, socket_timeout=10.0)
        self.origin = f"ui-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._replies: dict[str, dict] = {}
        last = self._rd.xrevrange(self.prefix + "s:" + REPLIES_TOPIC, count=1)
        self._pos = last[0][0] if last else b"0-0"
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="cortexlink-ui-replies", daemon=True)
        self._reader.start()

    def send(self, cmd: dict) -> str:
        from cortexlink.runtime.bus import Message
        from cortexlink.runtime.wire import encode_message

        cid = str(cmd.get("id") or uuid.uuid4().hex[:16])
        with self._lock:
            msg = Message(OPERATOR_TOPIC, self._seq, -1, 0, {**cmd, "id": cid}, time.monotonic_ns())
            self._seq += 1
        fields = encode_message(msg)
        fields[b"o"] = self.origin
        self._r.xadd(self.prefix + "s:" + OPERATOR_TOPIC, fields, maxlen=1000, approximate=True)
        return cid

    def _read(self) -> None:
        import redis

        from cortexlink.runtime.wire import decode_message

        key = self.prefix + "s:" + REPLIES_TOPIC
        while not self._stop.is_set():
            try:
                got = self._rd.xread({key: self._pos}, count=100, block=200)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                if self._stop.is_set():
                    return
                time.sleep(0.2)
                continue
            for _, entries in got or ():
                with self._cond:
                    for eid, fields in entries:
                        self._pos = eid
                        p = decode_message(REPLIES_TOPIC, fields).payload
                        if isinstance(p, dict) and "id" in p:
                            self._replies[str(p["id"])] = p
                    while len(self._replies) > 1024:
                        self._replies.pop(next(iter(self._replies)))
                    self._cond.notify_all()

    def reply(self, cid: str, timeout_s: float) -> dict | None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while cid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.1))
            return self._replies.pop(cid)

    def info(self, key: str) -> dict | None:
        got = self._r.get(self.prefix + "info:" + key)
        return None if got is None else json.loads(got)

    def graph(self) -> dict | None:
        got = self._r.get(self.prefix + "graph")
        return None if got is None else json.loads(got)

    def stop_reason(self) -> str | None:
        got = self._r.get(self.prefix + "stop")
        return None if got is None else got.decode()

    def exists(self) -> bool:
        return bool(self._r.exists(self.prefix + "graph"))

    def request_stop(self, reason: str) -> None:
        self._r.set(self.prefix + "stop", reason, nx=True)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(2.0)
        for c in (self._r, self._rd):
            try:
                c.close()
            except Exception:  # noqa: BLE001 - best effort
                logger.debug("closing a redis client failed", exc_info=True)


def current_run(url: str) -> str:
    """The run last started on the Redis server at ``url``."""
    from cortexlink.runtime.redis_server import connect

    r = connect(url)
    try:
        got = r.get("cl:current_run")
    finally:
        r.close()
    if got is None:
        raise ConfigError(f"no graph runs on {url} (no cl:current_run key); start one with cortexlink serve --redis")
    return got.decode()


class RemoteGraph:
    """A graph in a child process (or one already running), driven through Redis.

    Parameters
    ----------
    graph : dict or None
        The graph to start (None with ``attach``).
    redis : str
        ``"auto"`` (the child starts a private redis-server) or a Redis URL.
    attach : bool
        Attach to the current run on ``redis`` instead of starting one.
    speed : float
        Pace of the simulated implant relative to the wall clock.
    """

    def __init__(self, graph: dict | None, redis: str, *, attach: bool = False, speed: float = 1.0) -> None:
        if attach and redis == "auto":
            raise ConfigError("attach needs the URL of the Redis server the graph runs on, not 'auto'")
        self.graph = graph
        self.redis = redis
        self.attach = attach
        self.speed = float(speed)
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None if redis == "auto" else redis
        self.run_id: str | None = None
        self.link: RedisLink | None = None
        self.log: Path | None = None
        self._dir: str | None = None

    def start(self, timeout_s: float = 120.0) -> RedisLink:
        """Start (or find) the graph; return the link once it runs."""
        if self.attach:
            self.run_id = current_run(self.url)
        else:
            self._spawn(timeout_s)
        self.link = RedisLink(self.url, self.run_id)
        g = self.link.graph()
        if g is None:
            raise CortexlinkError(f"run {self.run_id!r} on {self.url} has no graph (it has ended)")
        if self.attach:
            from cortexlink.runtime.graph import _TOP

            self.graph = {k: v for k, v in g.items() if k in _TOP}
        return self.link

    def _spawn(self, timeout_s: float) -> None:
        self._dir = tempfile.mkdtemp(prefix="cortexlink-ui-graph-")
        gfile = Path(self._dir) / "graph.json"
        gfile.write_text(json.dumps(self.graph))
        info = Path(self._dir) / "run.json"
        self.log = Path(self._dir) / "graph.log"
        cmd = [sys.executable, "-m", "cortexlink.web.remote", "--graph", str(gfile), "--redis", self.redis,
               "--speed", repr(self.speed), "--info", str(info)]
        with open(self.log, "ab") as fh:
            # its own session: a signal to the UI's process group (Ctrl+C in its terminal) or the UI's
            # death does not reach the graph; the UI stops it through Redis
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                         close_fds=True, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not info.is_file():
            if self.proc.poll() is not None:
                raise CortexlinkError(f"the graph process exited with code {self.proc.returncode}:\n{self._tail()}")
            if time.monotonic() > deadline:
                self._kill()
                raise CortexlinkError(f"the graph process did not start within {timeout_s:g} s:\n{self._tail()}")
            time.sleep(0.05)
        d = json.loads(info.read_text())
        self.url, self.run_id = d["url"], d["run_id"]
        logger.info("graph process pid %d runs %s on %s; log %s", self.proc.pid, self.run_id, self.url, self.log)

    def _tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except (OSError, AttributeError):
            return "(no log)"

    def alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            return False
        try:
            return self.link is not None and self.link.stop_reason() is None and self.link.exists()
        except Exception:  # noqa: BLE001 - the server is gone
            return False

    def stop(self, timeout_s: float = 60.0, *, detach_only: bool = False) -> None:
        """Stop the graph (through Redis; the child ends and takes its redis-server along), or with
        ``detach_only`` just close the link."""
        link, self.link = self.link, None
        if link is not None:
            try:
                if not detach_only:
                    link.request_stop("operator UI stopped")
            except Exception:  # noqa: BLE001 - the server may be gone already
                logger.debug("could not request the stop", exc_info=True)
            link.close()
        if self.proc is not None and not detach_only:
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("the graph process did not stop within %g s; terminating it", timeout_s)
                self._kill()
            self._remove_dir()

    def _remove_dir(self) -> None:
        """The graph file and log folder: removed after a clean end, kept (and named) after a failure."""
        if self._dir is None or self.proc is None or self.proc.poll() is None:
            return
        if self.proc.returncode in (0, 129, 130, 143):
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)
        else:
            logger.warning("the graph process exited with code %s; its log: %s", self.proc.returncode, self.log)
        self._dir = None

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    """The graph process: run a graph on the Redis bus until its stop key is set."""
    from cortexlink.runtime.runner import GraphRunner

    p = argparse.ArgumentParser(prog="python -m cortexlink.web.remote", description=main.__doc__)
    p.add_argument("--graph", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--info", required=True, help="file to write {url, run_id, pid} to once the graph runs")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    g = json.loads(Path(a.graph).read_text())
    runner = GraphRunner(g, redis_url=a.redis, speed=a.speed)
    out: dict[str, Any] = {}

    def announce() -> None:
        if runner.started.wait(300) and not runner.ended.is_set():
            tmp = Path(a.info + ".tmp")
            tmp.write_text(json.dumps({"url": runner.url, "run_id": runner.run_id, "pid": os.getpid()}))
            tmp.replace(a.info)

    threading.Thread(target=announce, daemon=True).start()
    from cortexlink.runtime.signals import stop_on_signals

    with stop_on_signals() as sig:         # SIGTERM/SIGINT/SIGHUP: a clean stop, its redis-server stopped
        try:
            out = runner.run()
        except KeyboardInterrupt:
            return 130
    if sig.exit_code is not None:
        logger.info("graph stopped by %s: %s", sig.name, out.get("stop_reason"))
        return sig.exit_code
    logger.info("graph ended: %s", out.get("stop_reason"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
