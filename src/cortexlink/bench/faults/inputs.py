"""Fault cases: inputs (see :mod:`cortexlink.bench.faults`).

Hostile and malformed input as a careless or hostile user would give it: session and graph files
(alias bombs, huge, binary, non-UTF-8 and deeply nested files, absurd values, parameters that only
the run would have refused) through `cortexlink session check` and `cortexlink run`, and requests
to the operator UI (`cortexlink serve` on a 16-channel graph, over real sockets on 127.0.0.1). A
case survives when the input is refused with a clear message (exit 2 / a 4xx answer) in bounded
time, and the server goes on serving.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cortexlink.bench.faults.base import Outcome, case, clean_message, describe, run_cli  # noqa: F401

# -- hostile and malformed input: session and graph files, the operator UI's HTTP server

_SMALL_SESSION = """name: {name}
implant: {{preset: default, n_channels: 16}}
decoder: {{kind: refit_kalman, params: {decoder_params}}}
click_decoder: {{enabled: true, params: {click_params}}}
blocks:
  - {{kind: calibration, task: centre_out, seconds: {seconds}, task_params: {{click: true}}}}
  - {{kind: fit}}
  - {{kind: evaluation, task: webgrid, seconds: 5, task_params: {{n: 4}}}}
"""


def _session_text(name: str = "faults", seconds: str = "5", decoder_params: str = "{}",
                  click_params: str = "{}") -> str:
    return _SMALL_SESSION.format(name=name, seconds=seconds, decoder_params=decoder_params,
                                 click_params=click_params)


def _refused(p: subprocess.CompletedProcess, *needles: str, limit_s: float | None = None,
             seconds: float | None = None) -> Outcome:
    """The command refused the input: exit 2 (a ConfigError), a message naming the problem, no
    traceback (and, with ``limit_s``, within that many seconds)."""
    ok_msg = clean_message(p, *needles)
    in_time = limit_s is None or (seconds is not None and seconds <= limit_s)
    detail = describe(p) + ("" if seconds is None else f" ({seconds:.1f} s)")
    return Outcome(survived=p.returncode == 2 and ok_msg and in_time, exit_code=p.returncode, message_ok=ok_msg,
                   detail=detail)


def _check(work: Path, text: str | bytes, *needles: str, limit_s: float = 20.0, cmd: str = "session") -> Outcome:
    f = work / "input.yaml"
    (f.write_bytes if isinstance(text, bytes) else f.write_text)(text)
    t0 = time.monotonic()
    args = ["session", "check", f] if cmd == "session" else ["run", f]
    p = run_cli(args, cwd=work, timeout_s=max(60.0, 2 * limit_s))
    return _refused(p, *needles, limit_s=limit_s, seconds=time.monotonic() - t0)


def _bomb(levels: int = 9) -> str:
    text = 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    return text


@case("inputs", timeout_s=90)
def session_alias_bomb(work: Path) -> Outcome:
    """A YAML alias bomb (9^9 strings from ten lines) in a session's name: `session check` refuses it at once"""
    return _check(work, _bomb() + "name: *a8\nblocks: []\n", "anchors and aliases expand it")


@case("inputs", timeout_s=90)
def graph_alias_bomb(work: Path) -> Outcome:
    """The same alias bomb in a graph file given to `cortexlink run`: refused at once"""
    return _check(work, _bomb() + "name: *a8\nnodes: {}\n", "graph file", "anchors and aliases expand it",
                  cmd="run")


@case("inputs", timeout_s=90)
def session_file_50mb(work: Path) -> Outcome:
    """A 50 MB session file: refused by its size before it is read (it took 55 s and 700 MB)"""
    f = work / "input.yaml"
    with open(f, "wb") as fh:
        fh.write(_session_text().encode())
        fh.write(b"# padding\n" * 5_000_000)
    t0 = time.monotonic()
    p = run_cli(["session", "check", f], cwd=work, timeout_s=60)
    return _refused(p, "at most 1,000,000 bytes", limit_s=20.0, seconds=time.monotonic() - t0)


@case("inputs", timeout_s=90)
def session_binary_garbage(work: Path) -> Outcome:
    """Binary garbage (random bytes) as a session file: a clear refusal, no traceback"""
    data = np.random.default_rng(14).integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes()
    return _check(work, data, "input.yaml")


@case("inputs", timeout_s=90)
def session_not_utf8(work: Path) -> Outcome:
    """A session file saved as Latin-1 (non-UTF-8 bytes in the name): refused, naming the byte and what to do"""
    return _check(work, _session_text(name="séance").encode("latin-1"), "not UTF-8 text", "save it as UTF-8")


@case("inputs", timeout_s=90)
def session_deep_nesting(work: Path) -> Outcome:
    """A session file nested 100,000 levels deep: refused without a RecursionError"""
    return _check(work, "name: x\nblocks: " + "[" * 100_000 + "]" * 100_000 + "\n", "input.yaml")


@case("inputs", timeout_s=90)
def session_seconds_1e12(work: Path) -> Outcome:
    """`seconds: 1e12` (YAML 1.1 read it as a string): read as a number and refused as absurd"""
    return _check(work, _session_text(seconds="1e12"), "blocks[0].seconds must be at most 86400 s")


@case("inputs", timeout_s=90)
def session_check_unknown_click_param(work: Path) -> Outcome:
    """An unknown click-decoder parameter: `session check` refuses it as `session run` would"""
    return _check(work, _session_text(click_params="{depth: 3}"), "session.click_decoder.params is invalid",
                  "depth")


@case("inputs", timeout_s=90)
def session_check_bad_decoder_value(work: Path) -> Outcome:
    """A decoder parameter value the decoder's fit refuses (max_iter: -3): `session check` refuses it too"""
    return _check(work, _session_text(decoder_params="{max_iter: -3}"), "session.decoder.params is invalid",
                  "max_iter must be an integer >= 1")


# ---- the operator UI: `cortexlink serve` on a small graph, driven over real sockets on 127.0.0.1

class _Serve:
    """`cortexlink serve` (16 channels, a free port) in a child process; stopped on exit."""

    def __init__(self, work: Path, *extra: str) -> None:
        self.cmd = [sys.executable, "-m", "cortexlink.cli.main", "serve", "--port", "0", "--no-browser", "--graph",
                    "operator", "--channels", "16", "--record-dir", str(work / "recordings"), *extra]
        self.work = work
        self.token = extra[extra.index("--token") + 1] if "--token" in extra else None

    def __enter__(self) -> "_Serve":
        import re
        import threading

        self.proc = subprocess.Popen(self.cmd, cwd=self.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, b"")),
                         daemon=True).start()
        t_end = time.monotonic() + 90
        while True:
            m = next((re.search(rb"http://127\.0\.0\.1:(\d+)/", ln) for ln in self.lines
                      if re.search(rb"http://127\.0\.0\.1:(\d+)/", ln)), None)
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > t_end:
                raise RuntimeError("cortexlink serve did not start: "
                                   + b"".join(self.lines)[-300:].decode("utf-8", "replace"))
            time.sleep(0.1)
        self._wait_running()
        return self

    def _wait_running(self) -> None:
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            st, body = self.request("GET", "/api/health")
            if st == 200 and json.loads(body).get("bin", 0) > 5:
                return
            time.sleep(0.2)
        raise RuntimeError("the served graph did not start running within 60 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                timeout_s: float = 10.0, auth: bool = True) -> tuple[int | None, bytes]:
        """One HTTP/1.0 request over a socket: ``(status, body)`` (status None: no answer); with the
        server's token unless ``auth`` is false."""
        h = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        if auth and self.token:
            h.setdefault("X-Cortexlink-Token", self.token)
        if body or method == "POST":
            h.setdefault("Content-Length", str(len(body)))
        head = f"{method} {path} HTTP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as s:
                s.sendall(head.encode("latin-1") + body)
                resp = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    resp += chunk
        except OSError:
            return None, b""
        if not resp.startswith(b"HTTP/"):
            return None, resp
        status = int(resp.split(b" ", 2)[1])
        return status, resp.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in resp else b""

    def health(self) -> dict:
        st, body = self.request("GET", "/api/health")
        return json.loads(body) if st == 200 else {}


def _answered(srv: _Serve, status: int | None, body: bytes, want: int, *needles: str) -> Outcome:
    """The server answered ``want`` with a JSON error naming ``needles``, and still serves (health 200)."""
    try:
        err = json.loads(body).get("error", "") if body else ""
    except ValueError:
        err = ""
    ok_msg = bool(err) and all(n.lower() in err.lower() for n in needles)
    alive = srv.health().get("running") is True
    return Outcome(survived=status == want and ok_msg and alive, exit_code=None, message_ok=ok_msg,
                   detail=f"HTTP {status}: {err[:160]}; server still running: {alive}")


_JSON = {"Content-Type": "application/json"}


@case("inputs", timeout_s=150)
def ui_deeply_nested_json(work: Path) -> Outcome:
    """20,000-deep JSON to /api/control (was a 500 RecursionError): 400 with a message"""
    with _Serve(work) as srv:
        st, body = srv.request("POST", "/api/control", b"[" * 20000 + b"]" * 20000, _JSON)
        return _answered(srv, st, body, 400, "levels deep")


@case("inputs", timeout_s=150)
def ui_oversize_body(work: Path) -> Outcome:
    """A 10 MB body declared to /api/control: 413 before it is read"""
    with _Serve(work) as srv:
        st, body = srv.request("POST", "/api/control", b"{" * 70000, {**_JSON, "Content-Length": "10000000"})
        return _answered(srv, st, body, 413, "at most")


@case("inputs", timeout_s=150)
def ui_stalled_streams_then_browser(work: Path) -> Outcome:
    """16 /api/stream clients that never read, then the operator's browser: served at once (was 503 for 12 s+)"""
    with _Serve(work) as srv:
        stalled = []
        try:
            for _ in range(16):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                s.settimeout(10)
                s.connect(("127.0.0.1", srv.port))
                s.sendall(f"GET /api/stream HTTP/1.0\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
                stalled.append(s)
            t_end = time.monotonic() + 20
            while srv.health().get("clients", 0) < 16 and time.monotonic() < t_end:
                time.sleep(0.1)
            held = srv.health().get("clients", 0)
            t0 = time.monotonic()
            seen: set[str] = set()
            first = b""
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as b:
                b.sendall(f"GET /api/stream HTTP/1.0\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
                while not {"meta", "slow", "fast"} <= seen and time.monotonic() < t0 + 20:
                    try:
                        chunk = b.recv(65536)
                    except socket.timeout:
                        break
                    if not chunk:
                        break
                    first = first or chunk[:40]
                    seen.update(ln[7:].decode() for ln in chunk.split(b"\n") if ln.startswith(b"event: "))
            waited = time.monotonic() - t0
            served = {"meta", "slow", "fast"} <= seen
            t_end = time.monotonic() + 30
            while srv.health().get("clients", 99) > 0 and time.monotonic() < t_end:
                time.sleep(0.2)
            left = srv.health().get("clients")
        finally:
            for s in stalled:
                s.close()
        return Outcome(survived=served and left == 0, exit_code=None, message_ok=True,
                       detail=f"{held} stalled streams held; the browser got {sorted(seen)} in {waited:.1f} s "
                              f"(first bytes {first!r}); stalled streams left after 30 s: {left}")


@case("inputs", timeout_s=150)
def ui_wrong_host(work: Path) -> Outcome:
    """A request whose Host is not a loopback name (DNS rebinding): 403"""
    return _estop_refused(work, {"Host": "evil.example:80"}, "not a loopback name")


@case("inputs", timeout_s=150)
def ui_wrong_origin(work: Path) -> Outcome:
    """A cross-origin POST (another site's page): 403 and the command is not applied"""
    return _estop_refused(work, {"Origin": "http://evil.example"}, "cross-origin")


def _estop_refused(work: Path, headers: dict, needle: str) -> Outcome:
    """An E-STOP sent with ``headers`` is answered 403 naming ``needle`` and not applied."""
    with _Serve(work) as srv:
        st, body = srv.request("POST", "/api/control", b'{"cmd": "estop"}', {**_JSON, **headers})
        o = _answered(srv, st, body, 403, needle)
        st2, state = srv.request("GET", "/api/state")
        estop = json.loads(state)["fast"]["estop"] if st2 == 200 else None
        o.survived = o.survived and estop is False
        o.detail += f"; E-STOP applied: {estop}"
        return o


@case("inputs", timeout_s=150)
def ui_missing_token_off_loopback(work: Path) -> Outcome:
    """`serve --host 0.0.0.0` without a token is refused; a server with a token answers 401 without it"""
    every_interface = "0.0.0.0"       # the case itself: serve must refuse it without a token  # nosec B104
    p = run_cli(["serve", "--host", every_interface, "--port", "0", "--no-browser", "--token", ""], cwd=work,
                timeout_s=60, env={"CORTEXLINK_TOKEN": ""})      # no token, on purpose  # nosec B105
    cli_ok = p.returncode == 2 and clean_message(p, "--token", "required")
    with _Serve(work, "--token", "s3cret-token-for-faults") as srv:
        st, body = srv.request("GET", "/api/state", auth=False)
        err = json.loads(body).get("error", "") if st == 401 else ""
        st_ok, _ = srv.request("GET", "/api/health")
    ok_msg = cli_ok and "token" in err
    return Outcome(survived=cli_ok and st == 401 and st_ok == 200, exit_code=p.returncode, message_ok=ok_msg,
                   detail=f"{describe(p)}; without the token: HTTP {st} {err[:80]}; with it: HTTP {st_ok}")


@case("inputs", timeout_s=150)
def ui_static_path_traversal(work: Path) -> Outcome:
    """Path traversal in static files (/static/../server.py, encoded, absolute): 404, no file leaves the package"""
    secret = (work / "secret.txt")
    secret.write_text("do-not-serve-me")
    with _Serve(work) as srv:
        got = []
        for path in ("/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e/%2e%2e/secret.txt",
                     f"/static/{secret}", "/static//etc/passwd", "/../../etc/passwd"):
            st, body = srv.request("GET", path)
            got.append((path, st, b"do-not-serve-me" in body or b"import" in body or b"root:" in body))
        o = _answered(srv, *srv.request("GET", "/static/../server.py"), 404, "no such")
    leaked = [g for g in got if g[2] or g[1] not in (404, 400)]
    o.survived = o.survived and not leaked
    o.detail = f"{len(got)} paths answered {sorted({g[1] for g in got})}; leaked or not refused: {leaked}"
    return o



# -- writing commands ------------------------------------------------------------------------------
# export, record, replay, serve and the run folders given a place they must not write, a disk too
# small, a read-only folder or bad numbers (area "writing"): the cases live in
# cortexlink.bench.faults.writing (with them this module would pass 600 lines); importing it here
# registers them with the campaign.
from cortexlink.bench.faults import writing as _writing  # noqa: E402,F401
