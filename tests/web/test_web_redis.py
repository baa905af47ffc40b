"""The operator UI and its graph in different processes, over a real redis-server, in headless Chromium.

``cortexlink serve --redis auto`` runs the graph in a child process; the E-STOP pressed in the
page halts the cursor from the next bin across the two processes; killing the UI process
leaves the graph running with the E-STOP still latched, and a UI started again with
``--redis URL --attach`` on the same port is found by the same browser page, which reconnects
by itself and shows the current state.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest


def _need(what, reason):
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} tests must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser():
    from cortexlink.web.browser import find_browser, launch

    _need("browser", find_browser()[2])
    b = launch(width=1400, height=950)
    try:
        yield b.driver
    finally:
        b.quit()


@pytest.fixture
def redis_available():
    from cortexlink.runtime.redis_server import find_redis_server

    _need("redis", None if find_redis_server() else "redis-server not found (apt-get install redis-server)")


class _Proc:
    """A ``cortexlink serve`` process with its output collected by reader threads."""

    def __init__(self, args, env=None):
        cmd = [sys.executable, "-m", "cortexlink.cli.main", "serve", "--no-browser", *args]
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.out, self.err = [], []
        self.t = [threading.Thread(target=lambda s=s, d=d: d.extend(iter(s.readline, "")), daemon=True)
                  for s, d in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for t in self.t:
            t.start()

    def find(self, pattern, where, timeout_s):
        t_end = time.monotonic() + timeout_s
        while True:
            for ln in list(where):
                m = re.search(pattern, ln)
                if m:
                    return m
            if self.p.poll() is not None or time.monotonic() > t_end:
                raise AssertionError(f"no {pattern!r} (exit {self.p.poll()}):\n{''.join(self.err)[-3000:]}")
            time.sleep(0.05)

    def kill(self, sig=signal.SIGKILL):
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)
        self.p.wait(120)
        for t in self.t:
            t.join(5)
        self.p.stdout.close()
        self.p.stderr.close()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _js(d, expr):
    return d.execute_script("return " + expr)


@pytest.mark.req("SR-10")
def test_estop_across_processes_and_the_graph_outlives_its_ui(tmp_path, browser, redis_available, web_graph, web_http,
                                                             artifact_dir):
    import yaml
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from cortexlink.web.remote import RedisLink

    gfile = tmp_path / "graph.yaml"
    gfile.write_text(yaml.safe_dump(web_graph()))
    ui = _Proc(["--redis", "auto", "--port", "0", "--graph", str(gfile), "--speed", "4", "--record-dir", str(tmp_path)])
    graph_pid = None
    link = None
    ui2 = None
    try:
        m = ui.find(r"graph process pid (\d+) on (\S+) \(run (\w+)\)", ui.err, 300)
        graph_pid, url, run_id = int(m.group(1)), m.group(2), m.group(3)
        base = ui.find(r"(http://127\.0\.0\.1:(\d+))/", ui.out, 300)
        port = base.group(2)
        d = browser
        d.get(base.group(1) + "/")
        wait = WebDriverWait(d, 120, poll_frequency=0.05)     # generous: a loaded machine
        wait.until(lambda d: _js(d, "window.cl && cl.nMeta > 0 && cl.fast !== null && cl.fast.state === 'idle'"))
        assert d.find_element(By.ID, "conn").text == "live"

        # open-loop calibration: the cursor moves by itself (600 s of source time, 150 s wall at speed 4)
        st, _, res = web_http("POST", base.group(1) + "/api/control", {"cmd": "calibrate", "seconds": 600})
        assert st == 200, res
        wait.until(lambda d: _js(d, "cl.fast.state") == "calibrating" and _js(d, "cl.fast.block.n") > 30)

        # the E-STOP button: the graph in the other process holds the cursor from the very next bin
        d.find_element(By.ID, "estop").click()
        wait.until(lambda d: _js(d, "cl.lastResponse && cl.lastResponse.cmd") == "estop")
        resp = _js(d, "cl.lastResponse")
        assert resp["status"] == 200, resp
        received = resp["body"]["result"]["received_after_bin"]
        wait.until(lambda d: _js(d, "cl.fast.estop && cl.fast.estop_bin !== null && cl.fast.bin > cl.fast.estop_bin + 2"))
        assert _js(d, "cl.fast.estop_bin") == received + 1
        held_bin, held_xy = _js(d, "[cl.fast.bin, cl.fast.cursor]")
        wait.until(lambda d: _js(d, "cl.fast.bin") >= held_bin + 15)
        assert _js(d, "cl.fast.cursor") == held_xy and _js(d, "cl.fast.state") == "calibrating"

        # the UI process dies; the graph runs on, its cursor still held (read straight from Redis)
        ui.kill(signal.SIGKILL)
        assert _alive(graph_pid)
        link = RedisLink(url, run_id)
        s0 = link.info("ui/snapshot")
        t_end = time.monotonic() + 120
        while link.info("ui/snapshot")["fast"]["bin"] < s0["fast"]["bin"] + 20:
            assert time.monotonic() < t_end, "the graph stopped when its UI died"
            time.sleep(0.05)
        f = link.info("ui/snapshot")["fast"]
        assert f["estop"] and f["cursor"] == held_xy and f["state"] == "calibrating"
        assert link.info("ui/slow")["nodes"]["cursor"] == "running"
        wait.until(lambda d: not _js(d, "cl.connected"))                    # the page noticed

        # a new UI attaches to the same run on the same port; the page reconnects by itself
        ui2 = _Proc(["--redis", url, "--attach", "--port", port])
        ui2.find(r"cortexlink operator UI: (http://\S+)", ui2.out, 300)
        wait.until(lambda d: _js(d, "cl.connected") and _js(d, "cl.fast.bin") > held_bin + 40)
        assert _js(d, "cl.fast.estop") and _js(d, "cl.fast.cursor") == held_xy
        assert d.find_element(By.ID, "estop-banner").is_displayed()
        d.save_screenshot(str(artifact_dir / "web_ui_redis_reattached.png"))
        d.find_element(By.ID, "btn-release").click()
        wait.until(lambda d: not _js(d, "cl.fast.estop") and _js(d, "cl.fast.cursor") != held_xy)

        # the attached UI detaches on SIGTERM and leaves the graph running
        ui2.kill(signal.SIGTERM)
        assert ui2.p.returncode == 0 and _alive(graph_pid) and link.stop_reason() is None
    finally:
        for u in (ui, ui2):
            if u is not None and u.p.poll() is None:
                u.kill()
        if link is not None:
            try:
                link.request_stop("test done")
            except Exception:  # noqa: BLE001 - the server may be gone
                pass
            link.close()
        if graph_pid is not None:
            t_end = time.monotonic() + 30
            while _alive(graph_pid) and time.monotonic() < t_end:
                time.sleep(0.1)
            if _alive(graph_pid):
                os.kill(graph_pid, signal.SIGKILL)
                raise AssertionError("the graph process did not stop through Redis")
