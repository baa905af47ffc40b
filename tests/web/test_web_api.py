"""Operator web UI over HTTP: pages, live stream, control requests, bad input, tokens, e-stop, disconnects.

The UI is a client of the graph it runs (in a background thread here): commands go out on
``operator.commands``, what the page shows comes from the graph's ``ui_feed`` node.
"""

import json
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from cortexlink import ConfigError


def _post(web_http, base, obj, **kw):
    return web_http("POST", base + "/api/control", obj, **kw)


def _wait(pred, timeout_s, what):
    t_end = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def _calibrate_and_fit(ctl, seconds=12.0):
    ctl.command("calibrate", {"seconds": seconds})
    ctl.wait_for(lambda s: s.slow.data["counts"]["calibration_blocks"] >= 1, 60)
    ctl.command("fit")
    snap = ctl.wait_for(lambda s: s.slow.data["last_job"] is not None, 60)
    assert snap.slow.data["decoder"]["fitted"], snap.slow.data["last_job"]


def _read_sse(sock, want=("meta", "slow", "fast"), timeout_s=60.0):
    """Read Server-Sent Events from a connected socket until each kind in ``want`` was seen."""
    sock.settimeout(timeout_s)
    buf = b""
    seen = {}
    t_end = time.monotonic() + timeout_s
    while not set(want) <= set(seen):
        if time.monotonic() > t_end:
            raise AssertionError(f"stream gave only {sorted(seen)} in {timeout_s} s")
        chunk = sock.recv(65536)
        assert chunk, "the server closed the stream"
        buf += chunk
        while b"\n\n" in buf:
            msg, buf = buf.split(b"\n\n", 1)
            lines = dict(ln.split(b": ", 1) for ln in msg.split(b"\n") if b": " in ln)
            if b"event" in lines:
                seen[lines[b"event"].decode()] = json.loads(lines[b"data"])
    return seen


def _open_stream(port, path="/api/stream", rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return s


# ---------------------------------------------------------------------------------------- pages, state, stream
def test_page_static_files_state_and_stream(served, web_http):
    ctl, srv, base = served
    st, hdrs, body = web_http("GET", base + "/")
    assert st == 200 and hdrs["Content-Type"].startswith("text/html")
    assert b'id="estop"' in body and b"/static/app.js" in body and b"http" not in body.replace(b"http-equiv", b"")
    assert "default-src 'self'" in hdrs["Content-Security-Policy"]
    st, hdrs, js = web_http("GET", base + "/static/app.js")
    assert st == 200 and hdrs["Content-Type"].startswith("text/javascript") and b"EventSource" in js
    st, _, css = web_http("GET", base + "/static/style.css")
    assert st == 200 and b".estop" in css
    st, _, err = web_http("GET", base + "/static/../server.py")
    assert st == 404 and err["ok"] is False

    st, _, state = web_http("GET", base + "/api/state")
    assert st == 200 and set(state) >= {"fast", "slow", "meta"}
    assert state["meta"]["n_channels"] == 48 and len(state["meta"]["noise_rms_uv"]) == 48
    assert state["meta"]["grid"]["cols"] * state["meta"]["grid"]["rows"] >= 48
    assert state["fast"]["state"] == "idle" and len(state["slow"]["rate_hz"]) == 48
    st, _, cmds = web_http("GET", base + "/api/commands")
    assert st == 200 and "estop" in cmds["commands"]

    with _open_stream(srv.port) as s:
        ev = _read_sse(s)
    assert ev["meta"]["session"] == "web-test"
    assert ev["fast"]["raster"]["n_ch"] == 48 and ev["fast"]["bin"] >= 0
    assert "latency" in ev["slow"]

    # re-estimating the noise gives new noise figures in a new meta part
    v0 = ctl.snapshots.get().meta.version
    st, _, res = _post(web_http, base, {"cmd": "recalibrate_noise"})
    assert st == 200 and res["result"]["recalibrating_s"] > 0
    snap = ctl.wait_for(lambda s: s.meta.version > v0, 120)
    assert len(snap.meta.data["noise_rms_uv"]) == 48


# ---------------------------------------------------------------------------------------- bad input
BAD_REQUESTS = [
    (b"not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b"{}", 400, "missing field 'cmd'"),
    ({"cmd": "launch"}, 400, "unknown command 'launch'"),
    ({"cmd": 7}, 400, "unknown command 7"),
    ({"cmd": "fit", "now": True}, 400, "unknown field(s) ['now']"),
    ({"cmd": "calibrate", "seconds": "ten"}, 400, "calibrate.seconds must be a number of seconds"),
    ({"cmd": "calibrate", "seconds": -1}, 400, "calibrate.seconds must be"),
    ({"cmd": "calibrate", "seconds": 1e9}, 400, "<= 600"),
    ({"cmd": "calibrate", "seconds": True}, 400, "calibrate.seconds must be"),
    ({"cmd": "start"}, 400, "needs field 'task'"),
    ({"cmd": "start", "task": "tetris"}, 400, "start.task must be one of ['centre_out', 'webgrid', 'chess']"),
    ({"cmd": "start", "task": "webgrid", "task_params": [1]}, 400, "start.task_params must be a JSON object"),
    ({"cmd": "start", "task": "webgrid", "task_params": {"n": 1}}, 400, "invalid task_params for webgrid"),
    ({"cmd": "start", "task": "chess", "task_params": {"colour": "red"}}, 400, "invalid task_params for chess"),
    ({"cmd": "mouse", "enabled": "yes"}, 400, "mouse.enabled must be true or false"),
    (b'{"cmd": "mouse_move", "x": NaN, "y": 0}', 400, "mouse_move.x must be a number in [-2, 2]"),
    ({"cmd": "mouse_move", "x": 0.1, "y": 5}, 400, "mouse_move.y must be a number in [-2, 2]"),
    ({"cmd": "record_start", "name": "../../etc"}, 400, "record_start.name must be 1-64 letters"),
    # valid requests the session cannot apply now
    ({"cmd": "fit"}, 409, "no calibration block yet; run 'calibrate' first"),
    ({"cmd": "refit"}, 409, "the decoder is not fitted"),
    ({"cmd": "start", "task": "webgrid"}, 409, "the decoder is not fitted"),
    ({"cmd": "stop"}, 409, "no block is running"),
    ({"cmd": "mouse_move", "x": 0, "y": 0}, 409, "mouse_move needs mouse mode"),
    ({"cmd": "mouse_click"}, 409, "mouse_click needs mouse mode"),
    ({"cmd": "record_stop"}, 409, "not recording"),
]


@pytest.mark.req("SR-71")
def test_bad_control_requests_get_4xx_json_and_the_session_carries_on(served, web_http):
    ctl, srv, base = served
    bins_before = ctl.n_bins
    for body, status, msg in BAD_REQUESTS:
        headers = {"Content-Type": "application/json"} if isinstance(body, bytes) else None
        st, hdrs, res = _post(web_http, base, body, headers=headers)
        assert st == status, (body, st, res)
        assert hdrs["Content-Type"].startswith("application/json")
        assert res["ok"] is False and msg in res["error"], (body, res)
    # transport-level mistakes
    st, _, res = web_http("POST", base + "/api/control", b'{"cmd": "fit"}', headers={"Content-Type": "text/plain"})
    assert st == 415 and "Content-Type must be application/json" in res["error"]
    st, _, res = web_http("POST", base + "/api/control", b"{" * 70000, headers={"Content-Type": "application/json"})
    assert st == 413 and "at most" in res["error"]
    st, _, res = web_http("GET", base + "/api/control")
    assert st == 405 and "use POST" in res["error"]
    st, _, res = web_http("POST", base + "/api/state", {"cmd": "fit"})
    assert st == 405
    st, _, res = web_http("DELETE", base + "/")
    assert st == 405
    st, _, res = web_http("GET", base + "/api/nothing")
    assert st == 404 and "no such endpoint" in res["error"]
    # nothing of that hurt the session
    st, _, health = web_http("GET", base + "/api/health")
    assert st == 200 and health["ok"] and health["state"] == "idle" and health["running"]
    _wait(lambda: ctl.n_bins > bins_before + 20, 120, "the loop to keep running")
    assert ctl.running and ctl.state == "idle"


def test_commands_refused_in_the_wrong_state(served, web_http):
    ctl, srv, base = served
    st, _, res = _post(web_http, base, {"cmd": "calibrate", "seconds": 12})
    assert st == 200 and res["result"]["block"].endswith("calibration")
    st, _, res = _post(web_http, base, {"cmd": "fit"})
    assert st == 409 and "is running; stop it first" in res["error"]
    st, _, res = _post(web_http, base, {"cmd": "calibrate"})
    assert st == 409 and "is running" in res["error"]
    ctl.wait_for(lambda s: s.slow.data["counts"]["calibration_blocks"] >= 1, 60)
    st, _, res = _post(web_http, base, {"cmd": "fit"})
    assert st == 200 and res["result"]["job"] == "fit"
    snap = ctl.wait_for(lambda s: s.slow.data["last_job"] is not None, 60)
    assert snap.slow.data["last_job"]["ok"] and snap.slow.data["decoder"]["fitted"]
    st, _, res = _post(web_http, base, {"cmd": "refit"})
    assert st == 409 and "no closed-loop block since the last fit" in res["error"]
    # a closed-loop block, then ReFIT works
    st, _, res = _post(web_http, base, {"cmd": "start", "task": "centre_out", "seconds": 6})
    assert st == 200 and res["result"]["mode"] == "closed"
    ctl.wait_for(lambda s: s.slow.data["counts"]["closed_loop_blocks_since_fit"] >= 1, 60)
    st, _, res = _post(web_http, base, {"cmd": "refit"})
    assert st == 200, res
    snap = ctl.wait_for(lambda s: s.slow.data["decoder"]["n_refits"] >= 1 or
                        (s.slow.data["last_job"] or {}).get("job") == "refit", 60)
    assert snap.slow.data["last_job"]["job"] == "refit" and snap.slow.data["last_job"]["ok"], snap.slow.data["last_job"]
    assert ctl.state == "idle"


# ---------------------------------------------------------------------------------------- emergency stop
@pytest.mark.req("SR-10")
def test_estop_holds_the_cursor_from_the_next_bin_until_released(make_controller, web_graph, web_http):
    from cortexlink.web.server import OperatorServer

    ctl = make_controller(web_graph(rows=True))
    rows_node = ctl._runner.by_name["rows"].node

    def rows():
        return [m.payload.to_dict() for m in list(rows_node.kept)]
    with OperatorServer(ctl, "127.0.0.1", 0) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        # estop works when nothing runs, too
        st, _, res = _post(web_http, base, {"cmd": "estop"})
        assert st == 200 and res["result"]["estop"] is True
        ctl.wait_for(lambda s: s.fast["estop"] and s.fast["estop_bin"] is not None, 120)
        st, _, res = _post(web_http, base, {"cmd": "release"})
        assert st == 200 and res["result"]["was_engaged"] is True

        _post(web_http, base, {"cmd": "calibrate", "seconds": 600})   # open loop: the cursor moves by itself
        _wait(lambda: len(rows()) > 60, 120, "the calibration block to run")
        st, _, res = _post(web_http, base, {"cmd": "estop"})
        assert st == 200
        received = res["result"]["received_after_bin"]
        snap = ctl.wait_for(lambda s: s.fast["estop_requested_after_bin"] == received and s.fast["estop_bin"] is not None
                            and s.fast["bin"] > received + 1, 120)
        stop_bin = snap.fast["estop_bin"]
        assert stop_bin == received + 1, (received, stop_bin)          # the very next bin
        _wait(lambda: rows()[-1]["bin"] >= stop_bin + 25, 120, "bins after the stop")
        before = [r for r in rows() if r["bin"] < stop_bin]
        after = [r for r in rows() if r["bin"] >= stop_bin]
        assert any(np.any(np.asarray(r["cursor_velocity"]) != 0) for r in before[-40:]), "not moving before the stop"
        held = before[-1]["cursor_xy"]
        for r in after:
            assert tuple(r["cursor_velocity"]) == (0.0, 0.0) and not r["clicks"], r
            assert tuple(r["cursor_xy"]) == tuple(held), r
        assert ctl.snapshots.get().fast["state"] == "calibrating"     # the block runs on; only the output is held
        assert ctl.snapshots.get().fast["cursor"] == list(held)
        # latched: still held a while later, until released
        n = len(rows())
        _wait(lambda: len(rows()) > n + 10, 120, "more bins")
        assert tuple(rows()[-1]["cursor_xy"]) == tuple(held)
        _post(web_http, base, {"cmd": "release"})
        _wait(lambda: tuple(rows()[-1]["cursor_xy"]) != tuple(held), 120, "the cursor to move again after release")


# ---------------------------------------------------------------------------------------- tokens and origins
@pytest.mark.req("SR-70")
def test_binding_off_loopback_needs_a_token(make_controller):
    from cortexlink.web.server import OperatorServer, is_loopback

    ctl = make_controller()
    with pytest.raises(ConfigError, match="not a loopback address.*needs a token"):
        OperatorServer(ctl, "0.0.0.0", 0)
    with pytest.raises(ConfigError, match="needs a token"):
        OperatorServer(ctl, "192.168.1.10", 0)
    with pytest.raises(ConfigError, match="token must be at least 8 printable characters"):
        OperatorServer(ctl, "127.0.0.1", 0, token="short")
    with pytest.raises(ConfigError, match="stream_hz"):
        OperatorServer(ctl, "127.0.0.1", 0, stream_hz=0)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


@pytest.mark.req("SR-70")
def test_with_a_token_every_request_needs_it(make_controller, web_http):
    from cortexlink.web.server import OperatorServer

    ctl = make_controller()
    token = "s3cret-token-for-tests"
    with OperatorServer(ctl, "127.0.0.1", 0, token=token) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        assert srv.url.endswith(f"/?token={token}")
        for path in ("/", "/static/app.js", "/api/state", "/api/health", "/api/stream"):
            st, _, res = web_http("GET", base + path)
            assert st == 401 and "token" in res["error"], path
        st, _, res = web_http("GET", base + "/api/health?token=wrong-token-123")
        assert st == 401
        st, _, res = _post(web_http, base, {"cmd": "estop"})
        assert st == 401 and not ctl.snapshots.get().fast["estop"]
        st, _, body = web_http("GET", base + f"/?token={token}")
        assert st == 200 and b"EMERGENCY STOP" in body
        st, _, res = web_http("GET", base + "/api/health", headers={"Authorization": f"Bearer {token}"})
        assert st == 200 and res["ok"]
        st, _, res = _post(web_http, base, {"cmd": "mouse", "enabled": True}, headers={"X-Cortexlink-Token": token})
        assert st == 200 and res["result"]["mouse"] is True
        with _open_stream(srv.port, f"/api/stream?token={token}") as s:
            assert "fast" in _read_sse(s, want=("fast",))


@pytest.mark.req("SR-71")
def test_foreign_host_and_origin_are_refused(served, web_http):
    ctl, srv, base = served
    st, _, res = web_http("GET", base + "/api/health", headers={"Host": "evil.example:80"})
    assert st == 403 and "not a loopback name" in res["error"]
    st, _, res = _post(web_http, base, {"cmd": "estop"}, headers={"Origin": "http://evil.example"})
    assert st == 403 and "cross-origin" in res["error"]
    assert not ctl.snapshots.get().fast["estop"]
    st, _, res = _post(web_http, base, {"cmd": "mouse", "enabled": False},
                       headers={"Origin": f"http://127.0.0.1:{srv.port}"})
    assert st == 200


# ---------------------------------------------------------------------------------------- disconnects
def test_disconnecting_or_stalled_browsers_change_nothing(served, web_http):
    ctl, srv, base = served
    _post(web_http, base, {"cmd": "calibrate", "seconds": 600})
    ctl.wait_for(lambda s: s.fast["state"] == "calibrating", 120)
    # a browser that reads a little and then vanishes (connection reset)
    s1 = _open_stream(srv.port)
    try:
        _read_sse(s1)
        _wait(lambda: srv.n_clients == 1, 120, "the stream to be counted")
        s1.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s1.close()
    # a browser that never reads (tiny receive buffer) and one that never sends its request
    s2 = _open_stream(srv.port, rcvbuf=1024)
    s3 = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        n0 = ctl.snapshots.get().fast["block"]["n"]
        _wait(lambda: ctl.snapshots.get().fast["block"]["n"] > n0 + 100, 120, "the block to keep running")
        st, _, res = _post(web_http, base, {"cmd": "mouse", "enabled": False})   # and the server still answers
        assert st == 200
    finally:
        s2.close()
        s3.close()
    _wait(lambda: srv.n_clients == 0, 120, "the server to notice the closed streams")
    snap = ctl.snapshots.get()
    assert snap.fast["state"] == "calibrating" and not snap.fast["estop"]
    with _open_stream(srv.port) as s4:                          # a new browser is served as before
        assert _read_sse(s4)["fast"]["state"] == "calibrating"


# ---------------------------------------------------------------------------------------- mouse mode, recording
def test_mouse_mode_drives_the_cursor_and_clicks(served, web_http):
    ctl, srv, base = served
    assert _post(web_http, base, {"cmd": "mouse", "enabled": True})[0] == 200
    st, _, res = _post(web_http, base, {"cmd": "start", "task": "webgrid", "seconds": 60})
    assert st == 200 and res["result"]["mode"] == "open"      # no decoder yet: the operator drives
    _post(web_http, base, {"cmd": "mouse_move", "x": 0.6, "y": -0.4})

    def near():
        c = ctl.snapshots.get().fast["cursor"]
        return abs(c[0] - 0.6) < 0.02 and abs(c[1] + 0.4) < 0.02
    _wait(near, 120, "the cursor to reach the pointer")
    assert _post(web_http, base, {"cmd": "mouse_click"})[0] == 200
    snap = ctl.wait_for(lambda s: (s.slow.data["metrics"] or {}).get("n_selections", 0) >= 1, 120)
    assert snap.slow.data["metrics"]["n_selections"] == 1
    assert _post(web_http, base, {"cmd": "stop"})[0] == 200
    assert _post(web_http, base, {"cmd": "mouse", "enabled": False})[0] == 200


def test_recording_start_and_stop(served, web_http, tmp_path):
    from cortexlink.io.session_log import verify

    ctl, srv, base = served
    st, _, res = _post(web_http, base, {"cmd": "record_start", "name": "rec1"})
    assert st == 200 and res["result"]["recording"] is True
    folder = tmp_path / "recordings" / "rec1"
    assert (folder / "manifest.json").is_file()
    ctl.wait_for(lambda s: s.fast["recording"] and s.slow.data["recording"]["active"], 120)
    st, _, res = _post(web_http, base, {"cmd": "record_start", "name": "rec2"})
    assert st == 409 and "already recording" in res["error"]
    _post(web_http, base, {"cmd": "calibrate", "seconds": 1})
    ctl.wait_for(lambda s: s.slow.data["counts"]["calibration_blocks"] >= 1, 120)
    st, _, res = _post(web_http, base, {"cmd": "record_stop"})
    assert st == 200 and res["result"]["state"] == "closed"
    assert {"raw", "features", "cursor", "events"} <= set(res["result"]["streams"])
    assert verify(folder)["ok"]
    st, _, res = _post(web_http, base, {"cmd": "record_start", "name": "rec1"})
    assert st == 409 and "already exists" in res["error"]
    ctl.wait_for(lambda s: not s.fast["recording"], 120)


def test_stopped_session_refuses_commands_but_estop_still_answers(make_controller):
    from cortexlink.web.controller import ControlError

    ctl = make_controller()
    assert ctl.result is None
    ctl.stop()
    assert ctl.result["stop_reason"] == "operator UI stopped"
    assert ctl.state == "stopped" and ctl.snapshots.get().fast["state"] == "stopped"
    with pytest.raises(ControlError, match="the session is not running") as e:
        ctl.command("calibrate")
    assert e.value.status == 409
    assert ctl.command("estop")["estop"] is True


# ---------------------------------------------------------------------------------------- the CLI
@pytest.mark.req("SR-70")
def test_cli_serve_refuses_bad_setups(capsys):
    from cortexlink.cli.main import main

    assert main(["serve", "--host", "0.0.0.0", "--no-browser", "--token", ""]) == 2
    assert "--token (or $CORTEXLINK_TOKEN) is required" in capsys.readouterr().err
    assert main(["serve", "--graph", "graph.yaml", "--no-browser"]) == 2
    assert "graph file graph.yaml does not exist" in capsys.readouterr().err
    # a graph without a cursor reading operator.commands would have no E-STOP: refused
    assert main(["serve", "--graph", "closed_loop", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "cannot be served" in err and "operator.commands" in err and "never runs without a working E-STOP" in err
    assert main(["serve", "--graph", "operator", "--session", "s.yaml", "--no-browser"]) == 2
    assert "give a graph or a session, not both" in capsys.readouterr().err
    assert main(["serve", "--attach", "--no-browser"]) == 2
    assert "--attach needs --redis URL" in capsys.readouterr().err


def test_cli_serve_runs_and_stops_on_sigterm(web_http, tmp_path):
    import os
    import re
    import signal
    import threading

    cmd = [sys.executable, "-m", "cortexlink.cli.main", "serve", "--port", "0", "--no-browser", "--graph", "operator",
           "--channels", "16", "--record-dir", str(tmp_path)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, "")), daemon=True)
        reader.start()
        try:
            # bounds for a loaded machine (start-up imports and JIT compiles); the pass returns at once
            url = _wait(lambda: next((m.group(1) for ln in lines if (m := re.search(r"(http://\S+)", ln))), None),
                        300, "the server to print its URL")
            st, _, res = web_http("GET", url.rstrip("/") + "/api/health", timeout=60.0)
            assert st == 200 and res["ok"] and res["state"] == "idle"
            p.send_signal(signal.SIGTERM)
            assert p.wait(timeout=120) == 0
        finally:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
            reader.join(5)
            p.stderr.read()


def test_worker_priority_is_applied_or_the_reason_reported(make_controller, monkeypatch):
    import os

    from cortexlink.web.controller import set_thread_priority

    ctl = make_controller(priority="normal")
    assert ctl.priority_info["requested"] == "normal"
    info = ctl.set_priority("normal")
    assert info == {"requested": "normal", "applied": "normal", "error": None}

    def refuse(*a, **k):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    info = ctl.set_priority("realtime", warn=False)
    assert info["applied"] is None and "PermissionError" in info["error"] and "CAP_SYS_NICE" in info["error"]
    assert ctl.priority == "normal" and ctl.priority_info == info        # unchanged, and why
    b = ctl.n_bins
    ctl.wait_for(lambda s: s.fast["bin"] > b + 5, 120)                      # and the loop runs on
    assert set_thread_priority(0, "normal", warn=False)["error"] is not None


def test_shipped_operator_graph_is_the_demo_sessions_and_graphs_are_checked():
    from cortexlink.runtime.graph import builtin_graph, load_graph
    from cortexlink.web.graphs import check_operator_graph, operator_graph

    shipped = load_graph("operator")
    assert builtin_graph("operator").is_file()
    built = load_graph(operator_graph())
    shipped["nodes"]["ui"]["params"]["session"] = built["nodes"]["ui"]["params"]["session"]
    assert shipped["nodes"] == built["nodes"] and shipped["order"] == built["order"]
    found = check_operator_graph("operator")
    assert (found["cursor"], found["ui"], found["dsp"], found["recorder"]) == ("cursor", "ui", "dsp", "recorder")
    g = operator_graph()
    g["nodes"]["cursor"]["params"]["blocks"] = [{"kind": "calibration", "task": "centre_out", "seconds": 5}]
    with pytest.raises(ConfigError, match="runs a fixed block schedule"):
        check_operator_graph(g)
    g = operator_graph()
    del g["nodes"]["ui"]
    with pytest.raises(ConfigError, match="needs a ui_feed node with params.operator: true"):
        check_operator_graph(g)
    g = operator_graph({"name": "ceiling", "decoder": {"kind": "perfect", "params": {}},
                        "blocks": [{"kind": "evaluation", "task": "webgrid", "seconds": 30}]})
    found = check_operator_graph(g)
    assert found["dsp"] is None and found["recorder"] is None and "implant" not in g["nodes"]


@pytest.mark.req("SR-04")
def test_a_graph_that_ends_on_a_failure_leaves_the_controller_in_error_naming_it(make_controller, web_graph):
    g = web_graph()
    g["nodes"]["dsp"]["inject"] = {"fail_at_steps": list(range(2000, 2020))}   # after start-up, on and on
    ctl = make_controller(g)
    t_end = time.monotonic() + 90
    while ctl.running and time.monotonic() < t_end:
        time.sleep(0.05)
    assert not ctl.running
    ctl.stop()
    assert ctl.state == "error" and ctl.failure["kind"] == "node_stopped" and ctl.failure["node"] == "dsp"
    assert ctl.snapshots.get().fast["state"] == "error"
