"""The operator web server: static page, live Server-Sent Events stream, JSON control endpoint.

Standard library only (:class:`http.server.ThreadingHTTPServer`): one thread per connection,
none of them on the real-time path. Each live stream (``GET /api/stream``) reads the
controller's latest snapshot at most ``stream_hz`` times a second and writes only what changed
(``fast`` every time, ``slow`` and ``meta`` when their version changes); the encoding of a
snapshot is shared by every client. A browser that stops reading only blocks its own thread
(until the socket timeout closes it); one that disconnects only ends its own thread.

Endpoints
---------
``GET /``                    the operator page (``/static/app.js``, ``/static/style.css``)
``GET /api/stream``          Server-Sent Events: ``meta``, ``slow``, ``fast`` (JSON each)
``GET /api/state``           the latest snapshot as one JSON object
``GET /api/health``          ``{"ok", "state", "clients", ...}``
``GET /api/commands``        the control commands and their fields
``POST /api/control``        ``{"cmd": "...", ...}`` (``Content-Type: application/json``):
                             200 ``{"ok": true, "cmd", "result"}`` or 4xx/5xx
                             ``{"ok": false, "error": "..."}``

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
from cortexlink.web.controller import COMMANDS, ControlError, OperatorController, validate_command
from cortexlink.web.snapshot import jsonable

logger = logging.getLogger(__name__)

__all__ = ["OperatorServer", "is_loopback"]

MAX_BODY_BYTES = 64 * 1024
_STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
           "style.css": "text/css; charset=utf-8"}
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
        Most simultaneous live streams (more get HTTP 503).
    socket_timeout_s : float
        A client that neither sends nor reads for this long is disconnected.

    Raises
    ------
    ConfigError
        Non-loopback ``host`` without ``token``, a malformed token, or a bad rate.
    OSError
        The address cannot be bound (e.g. the port is in use).
    """

    def __init__(self, controller: OperatorController, host: str = "127.0.0.1", port: int = 8765, *,
                 token: str | None = None, stream_hz: float = 30.0, max_clients: int = 16,
                 socket_timeout_s: float = 10.0) -> None:
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
        self.max_clients = int(max_clients)
        self.host = host
        self._stopping = threading.Event()
        self._clients = 0
        self._clients_lock = threading.Lock()
        self.n_streams_served = 0
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
        if h in ("0.0.0.0", "::"):
            h = "127.0.0.1"
        hp = f"[{h}]" if ":" in h else h
        q = f"/?token={self.token}" if self.token else "/"
        return f"http://{hp}:{self.port}{q}"

    @property
    def n_clients(self) -> int:
        """Live streams open now."""
        return self._clients

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
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(10.0)
        self._httpd.server_close()

    def __enter__(self) -> "OperatorServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for the handler
    def token_ok(self, handler: "_Handler", query: dict) -> bool:
        if self.token is None:
            return True
        given = handler.headers.get("X-Cortexlink-Token")
        if given is None:
            auth = handler.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
        if given is None:
            vals = query.get("token")
            given = vals[0] if vals else None
        return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())

    def host_ok(self, handler: "_Handler") -> bool:
        if self.token is not None or not self.loopback:
            return True
        host = handler.headers.get("Host")
        if host is None:
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name)

    def stream_opened(self) -> bool:
        with self._clients_lock:
            if self._clients >= self.max_clients:
                return False
            self._clients += 1
            self.n_streams_served += 1
            return True

    def stream_closed(self) -> None:
        with self._clients_lock:
            self._clients -= 1


class _Handler(BaseHTTPRequestHandler):
    app: OperatorServer
    server_version = "cortexlink"
    protocol_version = "HTTP/1.0"
    error_content_type = "application/json"

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors from the stdlib (bad request line, unsupported method) as JSON too."""
        try:
            self._json(code, {"ok": False, "error": message or self.responses.get(code, ("error",))[0]})
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
            if not app.host_ok(self):
                return self._error(403, f"Host header {self.headers.get('Host')!r} is not a loopback name; "
                                        "open the UI at http://127.0.0.1:<port>/")
            if not app.token_ok(self, query):
                return self._error(401, "missing or wrong token: send it as the X-Cortexlink-Token header, "
                                        "'Authorization: Bearer <token>' or ?token=<token>")
            route = (method, url.path)
            if method == "GET" and url.path in ("/", "/index.html"):
                return self._static("index.html")
            if method == "GET" and url.path.startswith("/static/"):
                return self._static(url.path[len("/static/"):])
            if route == ("GET", "/api/stream"):
                return self._stream()
            if route == ("GET", "/api/state"):
                return self._state()
            if route == ("GET", "/api/health"):
                ctl = app.controller
                return self._json(200, {"ok": True, "state": ctl.state, "running": ctl.running,
                                        "clients": app.n_clients, "stream_hz": app.stream_hz, "bin": ctl.n_bins})
            if route == ("GET", "/api/commands"):
                return self._json(200, {"commands": COMMANDS})
            if route == ("POST", "/api/control"):
                return self._control()
            known = {"/", "/index.html", "/api/stream", "/api/state", "/api/health", "/api/commands", "/api/control"}
            if url.path in known or url.path.startswith("/static/"):
                allowed = "POST" if url.path == "/api/control" else "GET"
                return self._json(405, {"ok": False, "error": f"{method} is not allowed on {url.path}; use {allowed}"},
                                  {"Allow": allowed})
            return self._error(404, f"no such endpoint {url.path!r}; the UI is at / and the API under /api/")
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            return None
        except Exception as exc:  # noqa: BLE001 - a request never takes the server down
            logger.exception("request %s %s failed", method, self.path)
            try:
                self._error(500, f"internal error: {type(exc).__name__}: {exc}")
            except OSError:
                pass
            return None

    # ------------------------------------------------------------------ routes
    def _static(self, name: str) -> None:
        body = self.app._static.get(name)
        if body is None:
            return self._error(404, f"no such file /static/{name}")
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
        ctype = self.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            return self._error(415, f"Content-Type must be application/json; got {ctype or 'none'!r}")
        origin = self.headers.get("Origin")
        if origin is not None and self.app.token is None:
            host = self.headers.get("Host", "")
            if origin not in (f"http://{host}", f"https://{host}"):
                return self._error(403, f"cross-origin request from {origin!r} refused")
        length = self.headers.get("Content-Length")
        if length is None:
            return self._error(411, "Content-Length is required")
        try:
            n = int(length)
        except ValueError:
            return self._error(400, f"Content-Length must be an integer; got {length!r}")
        if n < 0 or n > MAX_BODY_BYTES:
            return self._error(413, f"request body must be at most {MAX_BODY_BYTES} bytes; got {n}")
        raw = self.rfile.read(n)
        if len(raw) < n:
            return self._error(400, f"request body ended after {len(raw)} of {n} bytes")
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._error(400, f"request body is not valid JSON: {exc}")
        try:
            cmd, args = validate_command(obj)
            result = self.app.controller.command(cmd, args)
        except ControlError as exc:
            return self._error(exc.status, str(exc), cmd=obj.get("cmd") if isinstance(obj, dict) else None)
        except CortexlinkError as exc:
            return self._error(400, str(exc), cmd=obj.get("cmd"))
        logger.info("control %s %s -> %s", cmd, args, result)
        return self._json(200, {"ok": True, "cmd": cmd, "result": result})

    def _stream(self) -> None:
        app = self.app
        if not app.stream_opened():
            return self._error(503, f"too many live streams (at most {app.max_clients})")
        try:
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
            while not app._stopping.is_set():
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
                if parts:
                    self.wfile.write(b"".join(parts))
                    t_write = now
                elif now - t_write > 5.0:
                    self.wfile.write(b": keep-alive\n\n")
                    t_write = now
                t_next = max(t_next + period, now)
                app._stopping.wait(max(0.0, t_next - time.monotonic()))
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout):
            logger.debug("live stream to %s closed by the client", self.address_string())
        finally:
            app.stream_closed()
