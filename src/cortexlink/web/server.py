"""The operator web server: static page, live Server-Sent Events stream, JSON control endpoint.

Standard library only (:class:`http.server.ThreadingHTTPServer`): one thread per connection,
none of them on the real-time path. Each live stream (``GET /api/stream``) reads the
controller's latest snapshot at most ``stream_hz`` times a second and writes only what changed
(``fast`` every time, ``slow`` and ``meta`` when their version changes); the encoding of a
snapshot is shared by every client. A browser that stops reading only blocks its own thread, and
not for long: each stream has a small send buffer, a write that cannot finish within
``stall_timeout_s`` (default 3 s) or data left unread that long closes it, and when every stream
slot is taken a new client takes the slot of the stream that has been stalled longest — or, when
none is, of the oldest stream (its browser reconnects by itself) — so the operator's browser is
always served. One that disconnects only ends its own thread.

Endpoints
---------
``GET /``                    the operator page (``/static/app.js``, ``stim.js``, ``style.css``)
``GET /api/stream``          Server-Sent Events: ``meta``, ``slow``, ``fast`` (JSON each)
``GET /api/state``           the latest snapshot as one JSON object
``GET /api/health``          ``{"ok", "state", "clients", ...}``
``GET /api/commands``        the control commands and their fields
``POST /api/control``        ``{"cmd": "...", ...}`` (``Content-Type: application/json``, at most
                             64 KiB, nested at most 16 levels): 200 ``{"ok": true, "cmd",
                             "result"}`` or 4xx/5xx ``{"ok": false, "error": "..."}``

A malformed request (headers, body, JSON, command) is answered 4xx with a message saying what is
wrong (:func:`parse_control`); 500 is only for a fault of the server itself.

Security: by default the server binds to 127.0.0.1. Binding to any other address needs a token;
with a token every request must carry it (``X-Cortexlink-Token`` header,
``Authorization: Bearer``, or ``?token=``). Without a token the ``Host`` header must name a
loopback address (DNS rebinding) and a cross-origin ``Origin`` on POST is refused; POST bodies
must be JSON (a cross-site form cannot send that without a CORS pre-flight, which is never
granted).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cortexlink.core.errors import ConfigError, CortexlinkError
from cortexlink.core.yamlfile import brief
from cortexlink.web.controller import COMMANDS, ControlError, OperatorController
from cortexlink.web.parsing import MAX_BODY_BYTES, MAX_JSON_DEPTH, Refusal, json_depth_exceeds, parse_control, route
from cortexlink.web.snapshot import jsonable

logger = logging.getLogger(__name__)

__all__ = ["OperatorServer", "is_loopback", "Refusal", "parse_control", "route", "json_depth_exceeds",
           "MAX_BODY_BYTES", "MAX_JSON_DEPTH"]

#: Send buffer of each live stream (bytes): a client that stops reading fills it within seconds.
STREAM_SNDBUF = 64 * 1024
_SIOCOUTQNSD = 0x894B           # Linux: bytes of a TCP socket's send queue not yet sent
_STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
           "stim.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    h = host.strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _check_token(token: Any) -> str | None:
    if token is None:
        return None
    if not isinstance(token, str) or len(token) < 8 or any(c.isspace() for c in token) or not token.isprintable():
        raise ConfigError("token must be at least 8 printable characters without spaces (e.g. from "
                          "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
    return token


def _unsent(conn: socket.socket) -> int | None:
    """Bytes written to ``conn`` that the kernel has not sent yet (Linux), else None."""
    try:
        import fcntl
        import struct

        return int(struct.unpack("i", fcntl.ioctl(conn.fileno(), _SIOCOUTQNSD, b"\0\0\0\0"))[0])
    except (ImportError, OSError, ValueError):
        return None


class _Stream:
    """One live stream's slot: its socket, when it opened, the last time its data moved."""

    __slots__ = ("conn", "opened", "moved", "sent", "left", "evicted", "reason")

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.opened = self.moved = time.monotonic()
        self.sent = 0                     # bytes written
        self.left = 0                     # of those, bytes the kernel has sent
        self.evicted = threading.Event()
        self.reason = ""

    def note(self, now: float) -> float:
        """Look at the send queue (the stream's own thread): seconds its data have waited unsent
        without any of it leaving (0 when nothing waits or where that cannot be known)."""
        q = _unsent(self.conn)
        if q is None:
            return 0.0
        left = self.sent - q
        if q == 0 or left > self.left:
            self.moved = now
        self.left = left
        return 0.0 if q == 0 else now - self.moved

    def stalled_for(self, now: float) -> float:
        """Seconds this stream has been stalled as last noted (0 when it has not)."""
        q = _unsent(self.conn)
        return 0.0 if not q else now - self.moved

    def evict(self, reason: str) -> None:
        """Close the stream from another thread: its thread wakes (a blocked write fails at once)."""
        self.reason = reason
        self.evicted.set()
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False          # server_close() joins every handler thread
    allow_reuse_address = True

    def __init__(self, addr: tuple, handler: type, family: int) -> None:
        self.address_family = family
        super().__init__(addr, handler)


class OperatorServer:
    """Serve the operator UI of a :class:`~cortexlink.web.controller.OperatorController`.

    Parameters
    ----------
    controller : OperatorController
        A started controller (the server only reads its snapshots and forwards commands).
    host : str
        Address to bind (default 127.0.0.1). Anything but a loopback address needs ``token``.
    port : int
        TCP port (0: any free port; see :attr:`port`).
    token : str, optional
        Shared secret every request must carry (at least 8 characters).
    stream_hz : float
        Most snapshots per second sent to each browser (default 30).
    max_clients : int
        Most simultaneous live streams; a new one takes the slot of the stream stalled longest,
        or else of the oldest (whose browser reconnects by itself): a new client is always served.
    socket_timeout_s : float
        A client that takes longer than this to send its request is disconnected.
    stall_timeout_s : float
        A live stream whose data have waited unread this long, or whose write blocks this long,
        is closed (default 3 s).

    Raises
    ------
    ConfigError
        Non-loopback ``host`` without ``token``, a malformed token, or a bad rate.
    OSError
        The address cannot be bound (e.g. the port is in use).
    """

    def __init__(self, controller: OperatorController, host: str = "127.0.0.1", port: int = 8765, *,
                 token: str | None = None, stream_hz: float = 30.0, max_clients: int = 16,
                 socket_timeout_s: float = 10.0, stall_timeout_s: float = 3.0) -> None:
        self.controller = controller
        self.token = _check_token(token)
        if not isinstance(host, str) or not host:
            raise ConfigError(f"host must be an address such as '127.0.0.1'; got {host!r}")
        self.loopback = is_loopback(host)
        if not self.loopback and self.token is None:
            raise ConfigError(f"binding to {host!r} (not a loopback address) needs a token (--token); "
                              "without one only 127.0.0.1, localhost or ::1 are allowed")
        if isinstance(stream_hz, bool) or not isinstance(stream_hz, (int, float)) or not 1 <= stream_hz <= 120:
            raise ConfigError(f"stream_hz must be a number in [1, 120]; got {stream_hz!r}")
        self.stream_hz = float(stream_hz)
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or not 1 <= max_clients <= 1024:
            raise ConfigError(f"max_clients must be an integer in [1, 1024]; got {max_clients!r}")
        self.max_clients = max_clients
        if isinstance(stall_timeout_s, bool) or not isinstance(stall_timeout_s, (int, float)) or not 0.1 <= stall_timeout_s <= 60:
            raise ConfigError(f"stall_timeout_s must be a number of seconds in [0.1, 60]; got {stall_timeout_s!r}")
        self.stall_timeout_s = float(stall_timeout_s)
        self.host = host
        self._stopping = threading.Event()
        self._streams: list[_Stream] = []
        self._clients_lock = threading.Lock()
        self.n_streams_served = 0
        #: Streams closed because they stalled or because a new client took their slot.
        self.n_streams_dropped = 0
        self._static = {name: (resources.files("cortexlink.web") / "static" / name).read_bytes() for name in _STATIC}
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        handler = type("_BoundHandler", (_Handler,), {"app": self, "timeout": float(socket_timeout_s)})
        self._httpd = _Server((host.strip("[]"), int(port)), handler, family)
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """The page's URL (with ``?token=`` when a token is set)."""
        h = self.host.strip("[]")
        if h in ("0.0.0.0", "::"):       # the URL to open, not an address bound  # nosec B104
            h = "127.0.0.1"
        hp = f"[{h}]" if ":" in h else h
        q = f"/?token={self.token}" if self.token else "/"
        return f"http://{hp}:{self.port}{q}"

    @property
    def n_clients(self) -> int:
        """Live streams open now."""
        return len(self._streams)

    def start(self) -> "OperatorServer":
        """Serve in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                            name="cortexlink-web", daemon=True)
            self._thread.start()
            logger.info("operator UI at %s", self.url)
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (from another thread) or Ctrl+C."""
        self._httpd.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        """Close every stream, stop serving and release the port."""
        self._stopping.set()
        with self._clients_lock:
            streams = list(self._streams)
        for st in streams:
            st.evict("the server is stopping")
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(10.0)
        self._httpd.server_close()

    def __enter__(self) -> "OperatorServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for the handler
    def token_ok(self, headers: Any, query: dict) -> bool:
        """The request carries the token (always true without one)."""
        if self.token is None:
            return True
        given = headers.get("X-Cortexlink-Token")
        if given is None:
            auth = headers.get("Authorization") or ""
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
        if given is None:
            vals = query.get("token")
            given = vals[0] if vals else None
        return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())

    def host_ok(self, headers: Any) -> bool:
        """Without a token, the ``Host`` header names a loopback address (DNS rebinding)."""
        if self.token is not None or not self.loopback:
            return True
        host = headers.get("Host")
        if host is None:
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name)

    def stream_opened(self, conn: socket.socket) -> _Stream:
        """A slot for a new live stream; when all are taken, the stream stalled longest (unsent
        data that have not moved for 0.5 s or more) or else the oldest gives up its slot."""
        victim = None
        with self._clients_lock:
            if len(self._streams) >= self.max_clients:
                now = time.monotonic()
                stalled = max(self._streams, key=lambda st: st.stalled_for(now))
                victim = stalled if stalled.stalled_for(now) >= 0.5 else min(self._streams, key=lambda st: st.opened)
                self._streams.remove(victim)
                self.n_streams_dropped += 1
            slot = _Stream(conn)
            self._streams.append(slot)
            self.n_streams_served += 1
        if victim is not None:
            why = "stalled" if victim.stalled_for(time.monotonic()) >= 0.5 else "the oldest"
            logger.info("live stream slots full (%d): a new client takes the slot of a %s stream", self.max_clients, why)
            victim.evict(f"a new client took its slot ({why} of {self.max_clients})")
        return slot

    def stream_closed(self, slot: _Stream, stalled: bool = False) -> None:
        with self._clients_lock:
            if slot in self._streams:
                self._streams.remove(slot)
                if stalled:
                    self.n_streams_dropped += 1


class _Handler(BaseHTTPRequestHandler):
    app: OperatorServer
    server_version = "cortexlink"
    protocol_version = "HTTP/1.0"
    error_content_type = "application/json"

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors from the stdlib (bad request line, unsupported method) as JSON too, and as the
        client's fault (4xx): an unknown method is 405, an unsupported HTTP version 400."""
        extra = {}
        if getattr(self, "request_version", None) == "HTTP/0.9":
            self.request_version = "HTTP/1.0"      # a garbled request line still gets a status line
        if code == 501:
            code, extra = 405, {"Allow": "GET, POST"}
            message = f"method {brief(getattr(self, 'command', '') or '')} is not allowed; the UI takes GET and POST"
        elif code == 505:
            code = 400
            message = f"{message or 'unsupported HTTP version'}; use HTTP/1.0 or HTTP/1.1"
        try:
            self._json(code, {"ok": False, "error": message or self.responses.get(code, ("error",))[0]}, extra)
        except OSError:
            pass

    def _json(self, status: int, obj: Any, extra_headers: dict | None = None) -> None:
        body = json.dumps(jsonable(obj), allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, **extra: Any) -> None:
        self._json(status, {"ok": False, "error": message, **extra})

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _other(self) -> None:
        self._dispatch(self.command)

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other  # noqa: N815

    def _dispatch(self, method: str) -> None:
        try:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            app = self.app
            if not app.host_ok(self.headers):
                return self._error(403, f"Host header {brief(self.headers.get('Host'))} is not a loopback name; "
                                        "open the UI at http://127.0.0.1:<port>/")
            if not app.token_ok(self.headers, query):
                return self._error(401, "missing or wrong token: send it as the X-Cortexlink-Token header, "
                                        "'Authorization: Bearer <token>' or ?token=<token>")
            endpoint = route(method, url.path)
            if endpoint.startswith("static:"):
                return self._static(endpoint[len("static:"):])
            if endpoint in ("/", "/index.html"):
                return self._static("index.html")
            if endpoint == "/api/stream":
                return self._stream()
            if endpoint == "/api/state":
                return self._state()
            if endpoint == "/api/health":
                ctl = app.controller
                return self._json(200, {"ok": True, "state": ctl.state, "running": ctl.running,
                                        "clients": app.n_clients, "stream_hz": app.stream_hz, "bin": ctl.n_bins})
            if endpoint == "/api/commands":
                return self._json(200, {"commands": COMMANDS})
            return self._control()
        except Refusal as r:
            return self._json(r.status, {"ok": False, "error": r.message, **r.extra}, r.headers)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            return None
        except Exception as exc:  # noqa: BLE001 - a request never takes the server down
            logger.exception("request %s %s failed", method, brief(self.path))
            try:
                self._error(500, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")
            except OSError:
                pass
            return None

    # ------------------------------------------------------------------ routes
    def _static(self, name: str) -> None:
        body = self.app._static.get(name)
        if body is None:
            return self._error(404, f"no such file /static/{brief(name)[1:-1]}")
        self.send_response(200)
        self.send_header("Content-Type", _STATIC[name])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(body)

    def _state(self) -> None:
        snap = self.app.controller.snapshots.get()
        if snap is None:
            return self._error(503, f"no snapshot yet (session state {self.app.controller.state!r})")
        d = snap.to_dict()
        d["server"] = {"clients": self.app.n_clients, "stream_hz": self.app.stream_hz}
        return self._json(200, d)

    def _control(self) -> None:
        cmd, args = parse_control(self.headers, self.rfile.read, token_set=self.app.token is not None)
        try:
            result = self.app.controller.command(cmd, args)
        except ControlError as exc:
            return self._error(exc.status, str(exc), cmd=cmd)
        except CortexlinkError as exc:
            return self._error(400, str(exc), cmd=cmd)
        logger.info("control %s %s -> %s", cmd, args, result)
        return self._json(200, {"ok": True, "cmd": cmd, "result": result})

    def _stream(self) -> None:
        app = self.app
        conn = self.connection
        slot = app.stream_opened(conn)
        stalled = False
        try:
            try:                                  # a small send buffer: a client that stops reading fills it soon
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            except OSError:
                pass
            conn.settimeout(app.stall_timeout_s)  # no write blocks longer than this
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n")
            holder = app.controller.snapshots
            period = 1.0 / app.stream_hz
            last_seq = last_slow = last_meta = -1
            t_next = time.monotonic()
            t_write = t_next
            while not app._stopping.is_set() and not slot.evicted.is_set():
                snap = holder.get()
                parts = []
                if snap is not None:
                    if snap.meta.version != last_meta:
                        parts.append(b"event: meta\ndata: " + snap.meta.encoded() + b"\n\n")
                        last_meta = snap.meta.version
                    if snap.slow.version != last_slow:
                        parts.append(b"event: slow\ndata: " + snap.slow.encoded() + b"\n\n")
                        last_slow = snap.slow.version
                    if snap.seq != last_seq:
                        parts.append(b"event: fast\ndata: " + snap.fast_encoded() + b"\n\n")
                        last_seq = snap.seq
                now = time.monotonic()
                if not parts and now - t_write > 5.0:
                    parts.append(b": keep-alive\n\n")
                if parts:
                    data = b"".join(parts)
                    self.wfile.write(data)
                    slot.sent += len(data)
                    t_write = now
                if slot.note(time.monotonic()) > app.stall_timeout_s:
                    stalled = True
                    logger.info("live stream to %s dropped: nothing read for %.1f s", self.address_string(),
                                app.stall_timeout_s)
                    break
                t_next = max(t_next + period, now)
                slot.evicted.wait(max(0.0, t_next - time.monotonic()))
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout, OSError) as exc:
            stalled = isinstance(exc, socket.timeout)
            logger.debug("live stream to %s closed: %s", self.address_string(),
                         slot.reason or ("a write blocked" if stalled else "closed by the client"))
        finally:
            app.stream_closed(slot, stalled=stalled)
            self.close_connection = True
