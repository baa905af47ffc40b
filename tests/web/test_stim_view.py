"""The operator page's stimulation panel: delivered pulses and the interlock's state, from a real run
(touch feedback through the interlock into the simulated stimulator), in headless chromium."""

from __future__ import annotations

import copy
import json
import time

import pytest
from _browser import assert_no_js_errors, browser_or_skip

from cortexlink.core.errors import ConfigError

#: a small session (the cursor loop of the other UI tests)
SESSION = {
    "name": "stim-web-test", "seed": 0, "implant": {"preset": "default", "n_channels": 32},
    "decoder": {"kind": "wiener", "params": {}}, "click_decoder": {"enabled": False, "params": {}},
    "blocks": [{"kind": "calibration", "task": "centre_out", "seconds": 60.0, "task_params": {}}],
}


def _limits(disabled: int) -> dict:
    """Default limits for 32 electrodes with one disabled (its pulses are refused)."""
    from cortexlink.stim.limits import SafetyLimits

    d = SafetyLimits.default(32).to_dict()
    d["electrodes"][disabled]["enabled"] = False
    return json.loads(json.dumps(d))


def _from(spec):
    return spec["from"] if isinstance(spec, dict) else spec


def test_the_stim_graph_wires_touch_through_the_interlock():
    from cortexlink.web.graphs import check_operator_graph, operator_graph, stim_operator_graph

    g = stim_operator_graph(copy.deepcopy(SESSION), limits=_limits(0))
    n = g["nodes"]
    assert n["implant"]["inputs"]["stim"] == "stim.command" and _from(n["dsp"]["inputs"]["stim"]) == "implant.stim"
    assert n["stim"]["inputs"] == {"touch": "touch.plan", "cursor": "cursor.state"}
    assert n["stim"]["params"]["limits"] == _limits(0)
    for node in ("ui", "recorder"):
        assert _from(n[node]["inputs"]["stim"]) == "implant.stim" and n[node]["inputs"]["stim_status"] == "stim.status"
    assert check_operator_graph(g)["ui"] == "ui"
    # a session's own stimulation section is what the operator graph runs (here resized to 16 channels)
    own = {**copy.deepcopy(SESSION), "stimulation": {"touch": {"force_max_n": 3.0}, "policy": "clamp"}}
    for g in (operator_graph(copy.deepcopy(own), n_channels=16), stim_operator_graph(copy.deepcopy(own))):
        n = g["nodes"]
        assert n["touch"]["params"]["force_max_n"] == 3.0 and n["stim"]["params"]["policy"] == "clamp"
        assert n["ui"]["inputs"]["stim_status"] == "stim.status"
        check_operator_graph(g)
    assert operator_graph(copy.deepcopy(own), n_channels=16)["nodes"]["stim"]["params"]["n_electrodes"] == 16
    assert "stim" not in operator_graph(copy.deepcopy(SESSION))["nodes"]["ui"]["inputs"]     # no section: no panel
    bad = copy.deepcopy(SESSION)
    bad["decoder"] = {"kind": "perfect", "params": {}}
    with pytest.raises(ConfigError, match="stimulation needs an implant"):
        stim_operator_graph(bad)


def test_the_stim_view_numbers_pulses_and_keeps_the_newest():
    from cortexlink.runtime.nodes._stimview import SEND_PULSES, StimView

    v = StimView()
    assert v.view()["status"] is None and v.view()["pulses"]["n"] == 0
    for k in range(3):
        n = 200
        v.delivered({"now_s": k * 0.1, "time_s": [k * 0.1 + i * 1e-4 for i in range(n)], "electrode": [k] * n,
                     "amplitude_ua": [50.0] * n})
    out = v.view()
    assert out["n_delivered"] == 600 and out["electrodes"] == [0, 1, 2]
    p = out["pulses"]
    assert p["n"] == SEND_PULSES and p["n0"] == 600 - SEND_PULSES and p["e"][-1] == 2
    v.interlock({"now_s": 0.5, "estop": "x", "policy": "refuse", "limits_sha256": "f" * 64, "n_plans": 3,
                 "n_pulses": 700, "n_approved": 600, "n_refused": 100, "n_clamped": 0, "reasons": {"rate": 100},
                 "last_refused": [{"electrode": 4, "time_s": 0.123456, "reason": "rate"}] * 12})
    s = v.view()
    assert s["now_s"] == 0.5 and s["status"]["estop"] == "x" and len(s["status"]["last_refused"]) == 10
    assert s["status"]["estop_since_s"] == 0.5
    v.interlock({**v.status, "now_s": 0.7})
    assert v.view()["status"]["estop_since_s"] == 0.5                   # since it engaged, not the newest
    v.interlock({**v.status, "now_s": 0.8, "estop": None})
    assert v.view()["status"]["estop_since_s"] is None
    json.dumps(s, allow_nan=False)


def test_a_recording_started_from_the_ui_keeps_pulses_and_its_part_of_the_audit_log(tmp_path):
    from cortexlink.io.session_log import SessionReader, verify_session
    from cortexlink.stim.audit import read_audit
    from cortexlink.web.controller import OperatorController
    from cortexlink.web.graphs import stim_operator_graph

    g = stim_operator_graph(copy.deepcopy(SESSION), limits=_limits(0), record_dir=tmp_path / "rec")
    ctl = OperatorController(g, speed=4.0, record_dir=tmp_path / "rec").start()
    try:
        assert ctl.run_dir is not None and ctl.run_dir.parent == tmp_path / "operator-runs"
        ctl.command("calibrate", {"seconds": 60})
        ctl.wait_for(lambda s: (s.fast.get("stim") or {}).get("n_delivered", 0) > 50, 60)
        ctl.command("record_start", {"name": "r1"})
        ctl.wait_for(lambda s: s.fast["stim"]["n_delivered"] > 400 and s.fast["recording"], 60)
        res = ctl.command("record_stop")
        assert res["state"] == "closed" and {"stim_pulses", "stim_status"} <= set(res["streams"])
    finally:
        ctl.stop()
    rec = tmp_path / "rec" / "r1"
    assert verify_session(rec)["ok"]
    m = json.loads((rec / "manifest.json").read_text())["stimulation"]
    r = SessionReader(rec)
    _, rows = r.read_array("stim_pulses")
    assert len(rows) == m["n_pulses_recorded"] > 0 and m["n_pulses_dropped"] == 0
    # refusal events count this recording's refusals only (from its first status on)
    _, srows = r.read_array("stim_status")
    refused = sum(e["n_refused"] for e in r.events() if e["kind"] == "stim_refusals")
    assert refused == srows[-1, 4] - srows[0, 4] > 0
    run_audit = read_audit(ctl.run_dir / "stim_audit.jsonl")
    audit = read_audit(rec / m["audit_file"])
    # the interlock's first line (its limits), then the decisions made while recording: a tail of the run's
    assert audit[0] == run_audit[0] and audit[0]["kind"] == "interlock_start"
    assert 1 < len(audit) < len(run_audit) and audit[1:] == run_audit[audit[1]["n"]:audit[-1]["n"] + 1]
    assert audit[1]["n"] > 1                                      # the decisions before record_start left out


def _js(d, expr):
    return d.execute_script("return " + expr)


def test_the_panel_shows_delivered_pulses_and_the_interlock(tmp_path, artifact_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from cortexlink.web.controller import OperatorController
    from cortexlink.web.graphs import stim_operator_graph
    from cortexlink.web.server import OperatorServer

    b = browser_or_skip()
    d = b.driver
    g = stim_operator_graph(copy.deepcopy(SESSION), limits=_limits(0), record_dir=tmp_path / "rec")
    ctl = OperatorController(g, speed=4.0, record_dir=tmp_path / "rec").start()
    try:
        with OperatorServer(ctl, "127.0.0.1", 0) as srv:
            d.get(srv.url)
            wait = WebDriverWait(d, 90, poll_frequency=0.05)
            wait.until(lambda d: _js(d, "window.cl && cl.nMeta > 0 && cl.fast !== null && cl.stim.shown"))
            assert d.find_element(By.ID, "stim-panel").is_displayed()
            ctl.command("calibrate", {"seconds": 60})
            # the participant moves the cursor into its targets: touch pulses, electrode 0's refused
            wait.until(lambda d: _js(d, "cl.fast.stim.n_delivered > 20 && cl.fast.stim.status.n_refused > 0"))
            wait.until(lambda d: _js(d, "cl.stim.nDrawn") > 0)
            st = _js(d, "cl.fast.stim")
            assert 0 not in st["electrodes"] and set(st["electrodes"]) <= set(range(1, 10))
            # the text is the snapshot's (the page renders the one it holds on its next frame)
            wait.until(lambda d: _js(d, "document.getElementById('stim-approved').textContent === "
                                        "cl.fast.stim.status.n_approved + ' / ' + cl.fast.stim.status.n_pulses"))
            wait.until(lambda d: _js(d, "document.getElementById('stim-refused').textContent === "
                                        "String(cl.fast.stim.status.n_refused)"))
            assert d.find_element(By.ID, "stim-estop").text == "armed"
            assert d.find_element(By.ID, "stim-policy").text.startswith("refuse · limits ")
            assert "disabled_electrode" in d.find_element(By.ID, "stim-reasons").text
            assert d.find_element(By.ID, "stim-last-refused").text.startswith("e0 at ")
            # the raster: yellow ticks drawn on the canvas
            lit = _js(d, "(() => { const c = document.getElementById('stim-raster'); const px = c.getContext('2d')"
                         ".getImageData(34, 0, c.width - 34, c.height - 14).data; let n = 0; for (let i = 0; i < "
                         "px.length; i += 4) if (px[i] > 200 && px[i + 1] > 180 && px[i + 2] < 120) n++; return n; })()")
            assert lit > 0
            # the delivered count follows the pulses the page received, none skipped while it kept up
            assert _js(d, "cl.stim.lastN + 1") <= _js(d, "cl.fast.stim.n_delivered")
            d.execute_script("document.getElementById('stim-panel').scrollIntoView()")
            time.sleep(0.3)
            d.save_screenshot(str(artifact_dir / "web_ui_stimulation.png"))
            # the E-STOP halts the cursor; the interlock is E-STOPPED and the panel says so
            d.find_element(By.ID, "estop").click()
            wait.until(lambda d: d.find_element(By.ID, "stim-estop").text.startswith("E-STOP: "))
            assert "bad" in d.find_element(By.ID, "stim-estop").get_attribute("class")
            since = _js(d, "cl.fast.stim.status.estop_since_s")
            assert since is not None and since <= _js(d, "cl.fast.stim.now_s")
            n0 = _js(d, "cl.fast.stim.n_delivered")
            t0 = _js(d, "cl.fast.stim.now_s")
            wait.until(lambda d: _js(d, "cl.fast.stim.now_s") > t0 + 1.0)
            assert _js(d, "cl.fast.stim.n_delivered") == n0                   # nothing delivered while stopped
            d.save_screenshot(str(artifact_dir / "web_ui_stimulation_estop.png"))
            assert_no_js_errors(d)
    finally:
        ctl.stop()
        b.quit()
