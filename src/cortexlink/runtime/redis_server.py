"""Start, reach and tune a real ``redis-server`` for the Redis Streams bus.

The bus keeps nodes in several processes connected through Redis Streams. This
module owns the server's life cycle for tests, demos and single-machine runs:

* :func:`find_redis_server` locates the binary;
* :class:`RedisServer` starts a private server on loopback (free port, own temp directory,
  persistence off, ``protected-mode yes``, a process group of its own, ended with the thread that
  started it), waits until it answers ``PING`` (optionally also on a Unix domain socket, for this
  user only) and stops it again (``SHUTDOWN NOSAVE``, then terminate/kill). A ``weakref.finalize``
  hook, which also runs at interpreter exit, kills a server its owner forgot to stop;
* :func:`connect` reaches an existing server by URL with a bounded ``PING``;
* :func:`tuned_for_latency` turns off RDB snapshots and AOF on a running server,
  because a background save (``fork`` + copy-on-write) is a known cause of
  latency spikes, and reports the settings before and after.

``redis`` (redis-py) is imported here only, never from a package ``__init__``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cortexlink.core.errors import ConfigError, CortexlinkError
from cortexlink.core.validation import check_positive
from cortexlink.runtime.signals import die_with_parent

if TYPE_CHECKING:  # pragma: no cover - typing only
    import redis

__all__ = [
    "RedisServer",
    "RedisServerError",
    "RedisUnavailable",
    "connect",
    "find_redis_server",
    "tuned_for_latency",
]

logger = logging.getLogger(__name__)

#: Directories searched after ``PATH`` (Debian puts the binary in /usr/bin).
SEARCH_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")
#: Lines of the server's log quoted in start-up errors.
N_LOG_LINES = 15
#: Settings that must hold for a low-latency bus (no fork for RDB, no AOF fsync).
LATENCY_SETTINGS = {"save": "", "appendonly": "no"}
#: Name of the Unix domain socket in the server's working directory.
SOCKET_NAME = "redis.sock"
#: Longest Unix socket path the kernel accepts (sun_path is 108 bytes with the terminating NUL).
MAX_SOCKET_PATH = 107
#: Settings reported by :func:`tuned_for_latency` (set or not).
REPORTED_SETTINGS = ("save", "appendonly", "appendfsync")


class RedisServerError(CortexlinkError, RuntimeError):
    """``redis-server`` is missing, failed to start or could not be configured."""


class RedisUnavailable(CortexlinkError, ConnectionError):
    """No Redis server answered at the given address."""


# -- helpers ---------------------------------------------------------------------------

def find_redis_server() -> str | None:
    """Return the path of the ``redis-server`` executable, or ``None``.

    ``PATH`` is searched first, then :data:`SEARCH_DIRS` (``/usr/sbin`` is often
    missing from a non-root ``PATH``).

    Returns
    -------
    str or None
        Absolute path of an executable ``redis-server``, ``None`` if none is found.
    """
    found = shutil.which("redis-server")
    if found:
        return os.path.abspath(found)
    for d in SEARCH_DIRS:
        cand = os.path.join(d, "redis-server")
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def _free_port(host: str) -> int:
    """Ask the kernel for a free TCP port on ``host`` (released before return)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tail(path: Path, n: int = N_LOG_LINES) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if ln.strip()][-n:]


def _to_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _probe_client(factory: Any, where: dict, timeout_s: float) -> "redis.Redis":
    """A client for one bounded check: no retries (redis-py retries with backoff by default)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return factory(**where, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                   retry=Retry(NoBackoff(), 0))


def _shutdown_nosave(host: str, port: int, timeout_s: float) -> None:
    """Send ``SHUTDOWN NOSAVE`` over a plain socket and wait for the server to hang up.

    A raw RESP request avoids redis-py retrying the expected disconnect with backoff.
    """
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(b"*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n")
        reply = b""
        while True:
            got = s.recv(4096)
            if not got:  # connection closed: the server is exiting
                break
            reply += got
            if reply.startswith(b"-"):  # error reply, e.g. NOAUTH
                raise OSError(f"SHUTDOWN refused: {reply.decode(errors='replace').strip()}")


def _kill_and_clean(proc: subprocess.Popen | None, workdir: str | None, timeout_s: float) -> None:
    """Terminate ``proc`` (then kill) and remove ``workdir``; safe to call twice.

    Module-level so that the ``weakref.finalize`` backstop does not keep the
    :class:`RedisServer` alive.
    """
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:  # pragma: no cover - unkillable process
                logger.error("redis-server pid %d did not die after SIGKILL", proc.pid)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


# -- the server ------------------------------------------------------------------------

class RedisServer:
    """A private ``redis-server`` child process on loopback.

    The server runs in the foreground (``--daemonize no``) with persistence off
    (``--save ""``, ``--appendonly no``), bound to ``host`` only, with
    ``--protected-mode yes`` and its working directory in a fresh temp dir.

    Parameters
    ----------
    port : int, optional
        TCP port. ``None`` (default) picks a free port at :meth:`start`.
    host : str
        Address to bind; must be a loopback address (``127.0.0.1``, ``::1`` or
        ``localhost``) because the server has no password.
    executable : str, optional
        Path of ``redis-server``; default :func:`find_redis_server`.
    workdir : str or Path, optional
        Working directory (logs, would-be dump files). Default: a new temp dir
        removed by :meth:`stop`. A given directory is kept.
    extra_args : sequence of str
        Further command-line arguments, appended last (so they override the
        defaults, e.g. ``("--maxmemory", "256mb")``).
    unix_socket : bool
        Also listen on a Unix domain socket, ``redis.sock`` in the working
        directory, readable by this user only (``unixsocketperm 700``);
        :attr:`unix_url` names it. Clients on the same host skip the TCP/IP
        stack (no loopback segmentation or softirq work per message), which
        matters for raw 1 ms chunks of 60 kB and more.

    Examples
    --------
    >>> with RedisServer() as srv:                       # doctest: +SKIP
    ...     r = srv.client()
    ...     r.xadd("features", {"x": b"..."})
    """

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1",
                 executable: str | None = None, workdir: str | os.PathLike | None = None,
                 extra_args: Sequence[str] = (), unix_socket: bool = False) -> None:
        if not isinstance(unix_socket, bool):
            raise ConfigError(f"unix_socket must be True or False; got {unix_socket!r}")
        if port is not None:
            port = check_positive("port", port, integer=True)
            if port > 65535:
                raise ConfigError(f"port must be an integer in [1, 65535] or None; got {port}")
        if not isinstance(host, str) or not _is_loopback(host):
            raise ConfigError(
                "host must be a loopback address (127.0.0.1, ::1 or localhost) because the "
                f"server runs without a password; got {host!r}")
        if isinstance(extra_args, (str, bytes)):
            raise ConfigError(f"extra_args must be a sequence of strings, not one string; got {extra_args!r}")
        self._requested_port = port
        self.host = "127.0.0.1" if host == "localhost" else host
        self._executable = executable
        self._user_workdir = None if workdir is None else Path(workdir)
        self.extra_args = tuple(str(a) for a in extra_args)
        self.unix_socket = unix_socket
        self._proc: subprocess.Popen | None = None
        self._port: int | None = port
        self._workdir: Path | None = None
        self._finalizer: weakref.finalize | None = None
        self._serving = False  # True once PING was answered by *our* process

    # -- properties ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        """TCP port of the server (known after :meth:`start` when it was ``None``)."""
        if self._port is None:
            raise RedisServerError("port is chosen at start(); the server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``redis://HOST:PORT`` (IPv6 hosts in brackets)."""
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{h}:{self.port}"

    @property
    def socket_path(self) -> Path | None:
        """The Unix domain socket (``None`` unless ``unix_socket=True``; known after :meth:`start`
        when the working directory is a temp dir)."""
        if not self.unix_socket:
            return None
        workdir = self._workdir or self._user_workdir
        if workdir is None:
            raise RedisServerError("the socket lives in the working directory, chosen at start(); "
                                   "the server has not been started")
        return Path(workdir) / SOCKET_NAME

    @property
    def unix_url(self) -> str:
        """``unix:///path/redis.sock`` of a server started with ``unix_socket=True``."""
        path = self.socket_path
        if path is None:
            raise RedisServerError("this server has no Unix socket; create it with unix_socket=True")
        return f"unix://{path}"

    @property
    def pid(self) -> int | None:
        """Process id of the server, ``None`` before :meth:`start`."""
        return None if self._proc is None else self._proc.pid

    @property
    def workdir(self) -> Path | None:
        """Working directory of the running server."""
        return self._workdir

    @property
    def log_path(self) -> Path | None:
        """The server's log file (``redis.log`` in :attr:`workdir`)."""
        return None if self._workdir is None else self._workdir / "redis.log"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command_line(self) -> list[str]:
        """The argument vector :meth:`start` runs (executable first)."""
        exe = self._executable or find_redis_server() or "redis-server"
        workdir = self._workdir or self._user_workdir or Path("WORKDIR")
        return [
            exe,
            "--port", str(self._port if self._port is not None else 0),
            "--bind", self.host,
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--logfile", str(workdir / "redis.log"),
            *(("--unixsocket", str(workdir / SOCKET_NAME), "--unixsocketperm", "700") if self.unix_socket else ()),
            *self.extra_args,
        ]

    # -- life cycle ---------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> "RedisServer":
        """Start the server and wait until it answers ``PING``.

        Parameters
        ----------
        timeout_s : float
            Longest wait for the first ``PONG``.

        Returns
        -------
        RedisServer
            ``self``, started.

        Raises
        ------
        RedisServerError
            The executable is missing, the process exited, or it did not answer
            within ``timeout_s``; the message quotes the server's last log lines.
        """
        check_positive("timeout_s", timeout_s)
        if self.running:
            return self
        exe = self._executable if self._executable is not None else find_redis_server()
        if exe is None:
            raise RedisServerError(
                "redis-server was not found on PATH or in " + ", ".join(SEARCH_DIRS)
                + "; install it (Debian/Ubuntu: apt-get install redis-server) or pass executable=")
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            raise RedisServerError(f"executable must be an existing, executable redis-server; got {exe!r}")
        self._executable = exe
        # A free port may be taken by someone else between probing and binding: retry then.
        n_tries = 1 if self._requested_port is not None else 3
        for attempt in range(n_tries):
            try:
                self._start_once(timeout_s)
                return self
            except RedisServerError as err:
                if attempt + 1 < n_tries and "in use" in str(err):
                    logger.info("port %s was taken before redis-server bound it; retrying", self._port)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self, timeout_s: float) -> None:
        import redis

        if self._user_workdir is not None:
            self._user_workdir.mkdir(parents=True, exist_ok=True)
            workdir, owned = self._user_workdir.resolve(), False
        else:
            workdir, owned = Path(tempfile.mkdtemp(prefix="cortexlink-redis-")), True
        self._workdir = workdir
        if self.unix_socket and len(os.fsencode(workdir / SOCKET_NAME)) > MAX_SOCKET_PATH:
            if owned:
                shutil.rmtree(workdir, ignore_errors=True)
            raise RedisServerError(
                f"the Unix socket path {workdir / SOCKET_NAME} is longer than the {MAX_SOCKET_PATH} bytes the "
                "kernel allows; use a shorter workdir (or TMPDIR), or unix_socket=False")
        self._port = self._requested_port if self._requested_port is not None else _free_port(self.host)
        argv = self.command_line()
        stdio_path = workdir / "redis.stdio"
        logger.debug("starting %s", " ".join(repr(a) if a == "" else a for a in argv))
        with open(stdio_path, "wb") as stdio:     # a group of its own (a Ctrl+C is for its owner), gone with it
            proc = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=stdio, stderr=subprocess.STDOUT,
                                    close_fds=True, process_group=0, preexec_fn=die_with_parent())
        self._proc = proc
        # Backstop: runs when this object is collected or at interpreter exit.
        self._finalizer = weakref.finalize(self, _kill_and_clean, proc,
                                           str(workdir) if owned else None, 2.0)
        deadline = time.monotonic() + timeout_s
        last_err: Exception | None = None
        while True:
            if proc.poll() is not None:
                msg = (f"redis-server exited with code {proc.returncode} during start-up "
                       f"(port {self._port}, argv {argv!r})")
                self._fail(msg)
            probe = _probe_client(redis.Redis, dict(host=self.host, port=self._port), 0.5)
            try:
                if probe.ping():
                    # The answer may come from another server that already holds the port.
                    their_pid = int(probe.info("server").get("process_id", -1))
                    if their_pid != proc.pid:
                        try:  # let ours log why it failed before quoting its log
                            proc.wait(timeout=1.0)
                        except subprocess.TimeoutExpired:
                            pass
                        self._fail(f"port {self._port} is already in use by another redis-server "
                                   f"(pid {their_pid}); ours (pid {proc.pid}) could not bind it")
                    if self.unix_socket and not self._unix_ping(0.5):
                        raise redis.exceptions.ConnectionError(f"no answer yet on {self.socket_path}")
                    self._serving = True
                    logger.info("redis-server pid %d ready at %s%s", proc.pid, self.url,
                                f" and {self.unix_url}" if self.unix_socket else "")
                    return
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    redis.exceptions.BusyLoadingError) as err:
                last_err = err
            finally:
                probe.close()
            if time.monotonic() >= deadline:
                self._fail(f"redis-server (pid {proc.pid}) did not answer PING at {self.url} within "
                           f"{timeout_s:g} s (last error: {last_err})")
            time.sleep(0.02)

    def _unix_ping(self, timeout_s: float) -> bool:
        import redis

        probe = _probe_client(redis.Redis, dict(unix_socket_path=str(self.socket_path)), timeout_s)
        try:
            return bool(probe.ping())
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            return False
        finally:
            probe.close()

    def _fail(self, msg: str) -> None:
        """Collect the log tail, clean up and raise RedisServerError."""
        lines: list[str] = []
        if self._workdir is not None:
            lines = _tail(self._workdir / "redis.stdio") + _tail(self._workdir / "redis.log")
        # Never SHUTDOWN here: the port may belong to somebody else's server.
        self._serving = False
        if self._finalizer is not None:
            self._finalizer()
        log = "\n".join("    " + ln for ln in lines[-N_LOG_LINES:]) or "    (no log output)"
        raise RedisServerError(f"{msg}\n  server log (last lines):\n{log}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the server (``SHUTDOWN NOSAVE``, then terminate, then kill).

        Idempotent; removes the temp working directory when it owns it.

        Parameters
        ----------
        timeout_s : float
            Longest wait for each step (graceful shutdown, terminate).
        """
        proc = self._proc
        if proc is not None and proc.poll() is None and self._serving:
            try:
                _shutdown_nosave(self.host, int(self._port), min(timeout_s, 2.0))
            except OSError as err:  # any failure falls through to terminate()
                logger.debug("SHUTDOWN NOSAVE failed (%s); terminating pid %d", err, proc.pid)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("redis-server pid %d ignored SHUTDOWN for %g s; terminating",
                               proc.pid, timeout_s)
        self._serving = False
        if self._finalizer is not None:
            # terminate/kill if still alive, reap, remove the temp dir; runs only once
            self._finalizer()
        if proc is not None:
            logger.debug("redis-server pid %d stopped (exit code %s)", proc.pid, proc.returncode)

    def client(self, **kw: Any) -> "redis.Redis":
        """A ``redis.Redis`` client for this server.

        Parameters
        ----------
        **kw
            Passed to ``redis.Redis`` (e.g. ``decode_responses=True``); a
            ``socket_connect_timeout`` of 2 s is the default.
        """
        import redis

        if not self.running:
            raise RedisServerError("the server is not running; call start() first")
        kw.setdefault("socket_connect_timeout", 2.0)
        return redis.Redis(host=self.host, port=self.port, **kw)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}, url={self.url}" if self.running else "stopped"
        return f"RedisServer({state})"


# -- clients ---------------------------------------------------------------------------

def connect(url: str, timeout_s: float = 2.0, **kw: Any) -> "redis.Redis":
    """Connect to the Redis server at ``url`` and check that it answers ``PING``.

    The check uses a separate probe connection (``timeout_s`` as connect and read
    timeout, no retries), so the returned client is free to use other socket
    timeouts: blocking ``XREAD`` calls need ``socket_timeout`` above their block
    time (redis-py 8's default is 5 s; pass ``socket_timeout=None`` for none).

    Parameters
    ----------
    url : str
        ``redis://host:port[/db]``, ``rediss://…`` or ``unix:///path``.
    timeout_s : float
        Longest wait for the connection and the ``PONG``.
    **kw
        Passed to ``redis.Redis.from_url`` for the returned client.

    Returns
    -------
    redis.Redis

    Raises
    ------
    ConfigError
        ``url`` has an unsupported scheme.
    RedisUnavailable
        Nothing answered ``PING`` at ``url`` within ``timeout_s``.
    """
    import redis

    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"url must start with redis://, rediss:// or unix://; got {url!r}")
    check_positive("timeout_s", timeout_s)
    probe = _probe_client(redis.Redis.from_url, dict(url=url), timeout_s)
    try:
        probe.ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as err:
        raise RedisUnavailable(f"no Redis server answered PING at {url} within {timeout_s:g} s: "
                               f"{err}") from err
    except redis.exceptions.ResponseError as err:  # e.g. NOAUTH
        raise RedisUnavailable(f"the Redis server at {url} refused PING: {err}") from err
    finally:
        probe.close()
    kw.setdefault("socket_connect_timeout", timeout_s)
    return redis.Redis.from_url(url, **kw)


def _config_snapshot(client: "redis.Redis") -> dict[str, str]:
    out: dict[str, str] = {}
    for key in REPORTED_SETTINGS:
        got = client.config_get(key)
        for k, v in got.items():
            out[_to_str(k)] = _to_str(v)
    return out


def tuned_for_latency(client: "redis.Redis", *, strict: bool = True) -> dict:
    """Turn off RDB snapshots and AOF on a running server; report before/after.

    Background saves fork the server and copy memory pages on write, which
    stalls writes for milliseconds on a busy stream; AOF adds ``fsync`` stalls.
    A bus that only carries live data needs neither (the recorder persists).

    Parameters
    ----------
    client : redis.Redis
        Client of the server to tune.
    strict : bool
        If True (default) raise when ``CONFIG`` is refused (managed services
        often disable it); if False, log a warning and report the error.

    Returns
    -------
    dict
        ``{"before": {...}, "after": {...}, "changed": [names], "error": str | None}``
        with the values of ``save``, ``appendonly`` and ``appendfsync``.

    Raises
    ------
    RedisServerError
        ``CONFIG GET/SET`` failed and ``strict`` is True.
    """
    import redis

    report: dict[str, Any] = {"before": {}, "after": {}, "changed": [], "error": None}
    try:
        before = _config_snapshot(client)
        report["before"] = before
        for key, want in LATENCY_SETTINGS.items():
            if before.get(key) != want:
                client.config_set(key, want)
                report["changed"].append(key)
        report["after"] = _config_snapshot(client)
    except redis.exceptions.ResponseError as err:
        msg = (f"could not read or set {sorted(LATENCY_SETTINGS)} with CONFIG ({err}); turn off RDB "
               "snapshots and AOF in the server's own configuration instead")
        if strict:
            raise RedisServerError(msg) from err
        logger.warning(msg)
        report["error"] = msg
        return report
    bad = {k: report["after"].get(k) for k, v in LATENCY_SETTINGS.items() if report["after"].get(k) != v}
    if bad:
        msg = f"settings did not take effect: {bad} (wanted {LATENCY_SETTINGS})"
        if strict:
            raise RedisServerError(msg)
        logger.warning(msg)
        report["error"] = msg
    if report["changed"]:
        logger.info("redis tuned for latency: %s -> %s", report["before"], report["after"])
    return report
