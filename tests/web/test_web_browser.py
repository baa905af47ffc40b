"""The operator page in a real headless Chromium: run a simulated session, watch it, stop it."""

import math
import time

import pytest

from _browser import browser_or_skip


@pytest.fixture
def browser():
    b = browser_or_skip()
    try:
        yield b.driver
    finally:
        b.quit()


def _js(d, expr):
    return d.execute_script("return " + expr)


@pytest.mark.req("SR-10")
def test_operator_runs_a_session_sees_it_and_stops_it(make_controller, browser, artifact_dir):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from cortexlink.web.server import OperatorServer

    d = browser
    ctl = make_controller(n_channels=64)
    with OperatorServer(ctl, "127.0.0.1", 0) as srv:
        d.get(srv.url)
        wait = WebDriverWait(d, 120, poll_frequency=0.05)     # generous: a loaded machine
        wait.until(lambda d: _js(d, "window.cl && cl.nMeta > 0 && cl.nSlow > 0 && cl.fast !== null"))
        wait.until(lambda d: d.find_element(By.ID, "conn").text == "live")
        assert "64 channels" in d.find_element(By.ID, "session-name").text
        assert d.find_element(By.ID, "estop").is_displayed()

        # calibrate (open loop), then fit, from the buttons
        field = d.find_element(By.ID, "cal-seconds")
        field.clear()
        field.send_keys("12")
        d.find_element(By.ID, "btn-calibrate").click()
        wait.until(lambda d: _js(d, "cl.fast.state") == "calibrating")
        wait.until(lambda d: _js(d, "cl.slow.counts.calibration_blocks") >= 1 and _js(d, "cl.fast.state") == "idle")
        wait.until(lambda d: d.find_element(By.ID, "btn-fit").is_enabled())
        d.find_element(By.ID, "btn-fit").click()
        wait.until(lambda d: _js(d, "cl.slow.decoder.fitted"))
        assert "fit done" in " ".join(m["text"] for m in _js(d, "cl.messages"))

        # closed-loop Webgrid: the cursor moves and bits per second update
        Select(d.find_element(By.ID, "task-select")).select_by_value("webgrid")
        wait.until(lambda d: d.find_element(By.ID, "btn-start").is_enabled())
        d.find_element(By.ID, "btn-start").click()
        wait.until(lambda d: _js(d, "cl.fast.block && cl.fast.block.mode") == "closed")
        start_xy = _js(d, "cl.fast.cursor")
        wait.until(lambda d: math.dist(_js(d, "cl.fast.cursor"), start_xy) > 0.1)
        assert d.find_element(By.ID, "task-title").text.startswith("webgrid")

        def bps(d):
            txt = d.find_element(By.ID, "bps").text
            try:
                return float(txt)
            except ValueError:
                return None
        wait.until(lambda d: (bps(d) or 0) > 0)
        assert _js(d, "cl.slow.metrics.n_correct") >= 1
        assert int(d.find_element(By.ID, "rx-rate").text) > 0
        assert _js(d, "cl.rxRate") >= 1 and _js(d, "cl.nFast") > 20
        d.save_screenshot(str(artifact_dir / "web_ui_closed_loop.png"))

        # the emergency stop button: the cursor stops, the page says so
        d.find_element(By.ID, "estop").click()
        wait.until(lambda d: _js(d, "cl.fast.estop && cl.fast.estop_bin !== null && cl.fast.bin > cl.fast.estop_bin"))
        wait.until(lambda d: d.find_element(By.ID, "estop-banner").is_displayed())
        assert d.find_element(By.ID, "state").text.startswith("E-STOP")
        held_bin, held_xy = _js(d, "[cl.fast.bin, cl.fast.cursor]")
        wait.until(lambda d: _js(d, "cl.fast.bin") >= held_bin + 15)
        assert _js(d, "cl.fast.cursor") == held_xy
        assert _js(d, "cl.fast.block !== null")                # the block (and recording) run on
        d.save_screenshot(str(artifact_dir / "web_ui_estop.png"))
        assert ctl.snapshots.get().fast["cursor"] == held_xy

        # release, stop the block, then try a task in mouse mode: the pointer drives the cursor
        d.find_element(By.ID, "btn-release").click()
        wait.until(lambda d: not _js(d, "cl.fast.estop"))
        d.find_element(By.ID, "btn-stop").click()
        wait.until(lambda d: _js(d, "cl.fast.block") is None)
        d.find_element(By.ID, "btn-mouse").click()
        wait.until(lambda d: _js(d, "cl.fast.mouse"))
        Select(d.find_element(By.ID, "task-select")).select_by_value("centre_out")
        d.find_element(By.ID, "btn-start").click()
        wait.until(lambda d: _js(d, "cl.fast.block && cl.fast.block.task") == "centre_out")
        canvas = d.find_element(By.ID, "task")
        w = canvas.size["width"]
        ActionChains(d).move_to_element_with_offset(canvas, int(w * 0.3), 0).perform()   # right of centre
        wait.until(lambda d: _js(d, "cl.fast.cursor[0]") > 0.3 and abs(_js(d, "cl.fast.cursor[1]")) < 0.1)
        ActionChains(d).move_to_element_with_offset(canvas, 0, int(w * 0.3)).perform()   # below centre
        wait.until(lambda d: _js(d, "cl.fast.cursor[1]") < -0.3 and abs(_js(d, "cl.fast.cursor[0]")) < 0.1)
        d.save_screenshot(str(artifact_dir / "web_ui_mouse_mode.png"))

        # a refused request shows its reason on the page and changes nothing
        n_msgs = len(_js(d, "cl.messages"))
        d.find_element(By.ID, "btn-mouse").click()                # mouse off while a block runs: fine
        wait.until(lambda d: not _js(d, "cl.fast.mouse"))
        assert not d.find_element(By.ID, "btn-fit").is_enabled()   # greyed out while a block runs ...
        d.execute_script("cl.api('fit')")                           # ... and refused if sent anyway
        wait.until(lambda d: any(m["kind"] == "error" and "is running" in m["text"]
                                 for m in _js(d, "cl.messages")[n_msgs:]))
        assert _js(d, "cl.lastResponse.status") == 409
        time.sleep(0.1)
        assert _js(d, "cl.fast.state") == "closed_loop" and ctl.running
        js_errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
        assert js_errors == [], js_errors                     # no exception in the page's script
