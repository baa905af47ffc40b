"""Operator commands on the bus: ``operator.commands`` in, ``operator.replies`` out, applied between bins.

The graph runs paced by the wall clock in a background thread (as under the web UI); every
check about *when* a command acts is made in bins (the cursor's own ``bins`` rows), never in
milliseconds, and every wait is bounded.
"""

import threading
import time

import numpy as np
import pytest

from cortexlink import ConfigError
from cortexlink.runtime.graph import load_graph
from cortexlink.runtime.runner import GraphRunner


def _graph(*, decoder="refit_kalman", recorder_dir=None, blocks=None, block_defaults=None):
    nodes = {
        "participant": {"kind": "participant", "params": {"seed": 0}, "inputs": {"cursor": "cursor.state"}},
        "implant": {"kind": "sim_source", "params": {"preset": "default", "seed": 0, "config": {"n_channels": 24},
                                                     "chunk_ms": 20}, "inputs": {"intent": "participant.intent"}},
        "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}},
                "inputs": {"raw": "implant.raw", "operator": "operator.commands"}},
        "decoder": {"kind": "decoder", "params": {"decoder": decoder},
                    "inputs": {"features": "dsp.features", "labels": "participant.intent", "control": "cursor.control"}},
        "cursor": {"kind": "cursor", "params": {"seed": 0, "decoder_kind": decoder, "blocks": blocks or [],
                                                "block_defaults": block_defaults or {}},
                   "inputs": {"intent": "decoder.intent", "participant": "participant.intent",
                              "operator": "operator.commands"}},
        "rows": {"kind": "sink", "params": {"keep": 100000}, "inputs": {"data": {"from": "cursor.bins", "maxlen": 100000}}},
    }
    if recorder_dir is not None:
        nodes["recorder"] = {"kind": "recorder", "params": {"record_dir": str(recorder_dir), "raw": True},
                             "inputs": {"raw": "implant.raw", "features": "dsp.features", "intent": "decoder.intent",
                                        "bins": "cursor.bins", "events": "cursor.events",
                                        "operator": "operator.commands"}}
    return {"name": "operator-test", "bin_ms": 20, "clock": "realtime", "watchdog": {"stall_ms": 200}, "nodes": nodes}


class Live:
    """A graph running in a background thread, with helpers to command and watch it."""

    def __init__(self, graph):
        self.runner = GraphRunner(graph)
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.runner.started.wait(60), f"the graph did not start: {self.error}"
        self.cursor = self.runner.by_name["cursor"].node
        self.wait(lambda: not self.cursor.warm, 30, "the noise calibration")

    def _run(self):
        try:
            self.result = self.runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self.runner.started.set()

    def cmd(self, cmd, **fields):
        cid = self.runner.send_command({"cmd": cmd, **fields})
        rep = self.runner.wait_reply(cid, 20)
        assert rep is not None, f"no reply to {cmd}"
        return rep

    def ok(self, cmd, **fields):
        rep = self.cmd(cmd, **fields)
        assert rep["ok"], (rep.get("error"), rep)
        return rep["result"]

    def rows(self):
        return [m.payload.to_dict() for m in list(self.runner.by_name["rows"].node.kept)]

    def wait(self, pred, timeout_s, what):
        t_end = time.monotonic() + timeout_s
        while True:
            v = pred()
            if v:
                return v
            assert self.error is None, self.error
            if time.monotonic() > t_end:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.02)

    def stop(self):
        self.runner._request_stop("test done")
        self.thread.join(60)
        assert not self.thread.is_alive()


@pytest.fixture
def live():
    made = []

    def make(**kw):
        lv = Live(_graph(**kw))
        made.append(lv)
        return lv
    yield make
    for lv in made:
        lv.stop()


def test_operator_topic_in_graphs():
    g = load_graph(_graph())
    assert g["nodes"]["cursor"]["inputs"]["operator"]["from"] == "operator.commands"
    assert "operator" not in g["order"] and g["order"].index("cursor") > g["order"].index("decoder")
    bad = _graph()
    bad["nodes"]["operator"] = bad["nodes"].pop("rows")
    with pytest.raises(ConfigError, match="not be 'runtime' or 'operator'"):
        load_graph(bad)
    bad = _graph()
    bad["nodes"]["cursor"]["inputs"]["operator"] = "operator.replies"
    with pytest.raises(ConfigError, match="names node 'operator', which is not in the graph"):
        load_graph(bad)


def test_commands_refused_in_the_wrong_state_say_why(live):
    lv = live()
    for cmd, fields, status, msg in [
        ("fit", {}, 409, "no calibration block yet; run 'calibrate' first"),
        ("refit", {}, 409, "the decoder is not fitted"),
        ("start", {"task": "webgrid"}, 409, "the decoder is not fitted"),
        ("stop", {}, 409, "no block is running"),
        ("mouse_move", {"x": 0, "y": 0}, 409, "mouse_move needs mouse mode"),
        ("mouse_click", {}, 409, "mouse_click needs mouse mode"),
        ("start", {"task": "webgrid", "task_params": {"n": 1}}, 400, "invalid task_params for webgrid"),
        ("calibrate", {"task": "chess"}, 400, "calibrate.task must be one of ['centre_out', 'webgrid']"),
    ]:
        rep = lv.cmd(cmd, **fields)
        assert not rep["ok"] and rep["status"] == status and msg in rep["error"], (cmd, rep)
        assert rep["node"] == "cursor"
    res = lv.ok("calibrate", seconds=2)
    assert res["block"] == "01-calibration"
    for cmd in ("fit", "calibrate"):
        rep = lv.cmd(cmd)
        assert rep["status"] == 409 and "'01-calibration') is running; stop it first" in rep["error"], rep
    lv.wait(lambda: len(lv.rows()) >= 5, 20, "some calibration bins")
    assert lv.ok("stop")["stopped"]["reason"] == "operator"
    assert lv.cursor.n_calibration_blocks == 1 and lv.cursor.block is None
    assert lv.cmd("refit")["error"] == "refit: the decoder is not fitted; run 'calibrate' and 'fit' first"
    # the loop ran on through all of it
    assert lv.runner.by_name["cursor"].node.state == "running"


def test_refit_needs_refit_kalman_and_a_schedule_takes_only_estop(live):
    lv = live(decoder="kalman")
    rep = lv.cmd("refit")
    assert rep["status"] == 409 and "needs decoder kind 'refit_kalman'; this session uses 'kalman'" in rep["error"]
    lv2 = live(blocks=[{"kind": "calibration", "task": "centre_out", "seconds": 600}])
    rep = lv2.cmd("calibrate")
    assert rep["status"] == 409 and "fixed block schedule" in rep["error"]
    assert lv2.ok("estop")["estop"] is True


@pytest.mark.req("SR-10")
def test_estop_holds_the_cursor_from_the_next_bin_until_released(live):
    lv = live()
    assert lv.ok("estop")["estop"] is True                       # works when nothing runs, too
    lv.wait(lambda: lv.cursor.estop_bin is not None, 10, "the idle E-STOP to take a bin")
    assert lv.ok("release")["was_engaged"] is True
    lv.ok("calibrate", seconds=60)                              # open loop: the cursor moves by itself
    lv.wait(lambda: len(lv.rows()) > 40, 30, "the calibration block to run")
    res = lv.ok("estop")
    received = res["received_after_bin"]
    lv.wait(lambda: lv.cursor.estop_bin is not None, 10, "the E-STOP to act")
    stop_bin = lv.cursor.estop_bin
    assert stop_bin == received + 1, (received, stop_bin)       # the very next bin
    lv.wait(lambda: lv.rows()[-1]["bin"] >= stop_bin + 25, 30, "bins after the stop")
    rows = lv.rows()
    before = [r for r in rows if r["bin"] < stop_bin]
    after = [r for r in rows if r["bin"] >= stop_bin]
    assert before[-1]["bin"] == received
    assert any(np.any(np.asarray(r["cursor_velocity"]) != 0) for r in before[-40:]), "not moving before"
    held = before[-1]["cursor_xy"]
    for r in after:
        assert r["halted"] and not r["clicks"], r
        assert tuple(r["cursor_velocity"]) == (0.0, 0.0), r
        assert tuple(r["cursor_xy"]) == tuple(held), r
    assert lv.cursor.op_state() == "calibrating"                # the block runs on; only the output is held
    assert lv.ok("release")["was_engaged"] is True
    n = len(lv.rows())
    lv.wait(lambda: len(lv.rows()) > n + 20 and tuple(lv.rows()[-1]["cursor_xy"]) != tuple(held), 30,
            "the cursor to move again after release")


@pytest.mark.req("SR-07")
def test_mouse_mode_drives_the_cursor_and_estop_suppresses_its_clicks(live):
    lv = live()
    assert lv.ok("mouse", enabled=True) == {"mouse": True}
    res = lv.ok("start", task="webgrid", seconds=120)
    assert res["mode"] == "open"                                # no decoder yet: the operator drives
    lv.ok("mouse_move", x=0.6, y=-0.4)

    def near():
        xy = lv.rows()[-1]["cursor_xy"] if lv.rows() else (9, 9)
        return abs(xy[0] - 0.6) < 0.02 and abs(xy[1] + 0.4) < 0.02
    lv.wait(near, 20, "the cursor to reach the pointer")
    received = lv.ok("estop")["received_after_bin"]
    lv.ok("mouse_click")
    lv.wait(lambda: lv.rows()[-1]["bin"] > received + 10, 20, "bins after the stop")
    assert not any(r["clicks"] for r in lv.rows() if r["bin"] > received)
    lv.ok("release")
    n = lv.rows()[-1]["bin"]
    lv.ok("mouse_click")
    lv.wait(lambda: any(r["clicks"] for r in lv.rows() if r["bin"] > n), 20, "the click after release")
    assert sum(r["clicks"] for r in lv.rows() if r["bin"] > n) == 1
    info = lv.ok("stop")["stopped"]
    assert info["task"] == "webgrid" and info["metrics"]["n_selections"] == 1
    assert lv.ok("mouse", enabled=False) == {"mouse": False}


def test_fit_refit_noise_and_recording_from_commands(live, tmp_path):
    from cortexlink.io.session_log import verify

    lv = live(recorder_dir=tmp_path / "recs")
    assert lv.cmd("record_stop")["error"] == "not recording"
    res = lv.ok("record_start", name="rec1")
    assert res["dir"] == str(tmp_path / "recs" / "rec1")
    rep = lv.cmd("record_start", name="rec2")
    assert rep["status"] == 409 and "already recording" in rep["error"] and rep["node"] == "recorder"
    lv.ok("calibrate", seconds=3)
    lv.wait(lambda: lv.cursor.n_calibration_blocks == 1, 30, "the calibration block to end")
    assert lv.ok("fit")["job"] == "fit"
    lv.wait(lambda: lv.cursor.job is None, 60, "the fit")
    assert lv.cursor.last_job["ok"] and lv.cursor.fitted, lv.cursor.last_job
    assert lv.cmd("refit")["error"].startswith("refit: no closed-loop block since the last fit")
    assert lv.ok("start", task="centre_out", seconds=2)["mode"] == "closed"
    lv.wait(lambda: lv.cursor.block is None, 30, "the closed-loop block to end")
    assert lv.ok("refit")["n_closed_loop_blocks"] == 1
    lv.wait(lambda: lv.cursor.job is None, 60, "the refit")
    assert lv.cursor.last_job["job"] == "refit" and lv.cursor.last_job["ok"] and lv.cursor.n_refits == 1
    slow = lv.runner.bus.get_info("cursor/operator")
    assert slow["decoder"]["n_refits"] == 1 and slow["counts"]["calibration_blocks"] == 1
    v0 = lv.runner.bus.get_info("dsp/noise")["version"]
    rep = lv.cmd("recalibrate_noise")
    assert rep["ok"] and rep["node"] == "dsp" and rep["result"]["recalibrating_s"] == 0.5
    lv.wait(lambda: lv.runner.bus.get_info("dsp/noise")["version"] > v0, 20, "new noise figures")
    res = lv.ok("record_stop")
    assert res["state"] == "closed" and {"raw", "features", "cursor", "events"} <= set(res["streams"])
    assert verify(tmp_path / "recs" / "rec1")["ok"]
    rep = lv.cmd("record_start", name="rec1")
    assert rep["status"] == 409 and "already exists" in rep["error"]


def _send_all(lv, cmds):
    """Queue ``cmds`` at once (the scheduler publishes them in one pass) and collect every reply."""
    ids = [lv.runner.send_command(c) for c in cmds]
    return [lv.runner.wait_reply(i, 20) for i in ids]


def test_calibrate_then_stop_in_the_same_bin_apply_in_order_and_the_recording_has_both_block_events(live, tmp_path):
    from cortexlink.io.session_log import SessionReader

    lv = live(recorder_dir=tmp_path)
    lv.ok("record_start", name="one-bin")
    lv.ok("mouse", enabled=True)
    pairs = [({"cmd": "calibrate", "seconds": 5.0}, "calibration"), ({"cmd": "start", "task": "webgrid"}, "webgrid"),
             ({"cmd": "start", "task": "chess"}, "chess")]
    for begin, _ in pairs:
        reps = _send_all(lv, [begin, {"cmd": "stop"}])
        assert all(r is not None and r["ok"] for r in reps), reps
        assert reps[1]["result"]["stopped"]["n_bins"] == 0 and reps[1]["result"]["stopped"]["reason"] == "operator"
    lv.wait(lambda: lv.cursor.block is None, 5, "no block running")
    lv.ok("record_stop")
    lv.wait(lambda: (tmp_path / "one-bin" / "manifest.json").is_file(), 30, "the recording closed")
    ev = SessionReader(tmp_path / "one-bin").events()
    starts = [e["name"] for e in ev if e["kind"] == "block_start"]
    ends = [e["name"] for e in ev if e["kind"] == "block_end"]
    assert starts == ends == ["01-calibration", "02-webgrid", "03-chess"]


@pytest.mark.req("SR-10")
def test_a_burst_of_commands_drops_none_and_the_estop_in_it_holds_the_next_bin(live):
    lv = live()
    lv.ok("mouse", enabled=True)
    burst = [{"cmd": "mouse_move", "x": 0.1 * (i % 5), "y": 0.0} for i in range(400)]
    burst.insert(200, {"cmd": "estop"})
    reps = _send_all(lv, burst)                      # more than a node's default queue (256) in one pass
    assert all(r is not None and r["ok"] for r in reps)
    est = reps[200]["result"]
    lv.wait(lambda: lv.cursor.estop_bin is not None, 10, "the first held bin")
    assert lv.cursor.estop_bin == est["received_after_bin"] + 1


def test_between_blocks_and_in_mouse_mode_the_watchdog_sees_the_pipeline_running(live):
    """Regression: after a closed-loop block, the decoder's output drives nothing (between blocks,
    mouse mode) but still shows the pipeline runs — no pipeline_stall may hold the cursor."""
    lv = live()
    lv.ok("calibrate", seconds=3)
    lv.wait(lambda: lv.cursor.n_calibration_blocks == 1, 30, "the calibration block to end")
    lv.ok("fit")
    lv.wait(lambda: lv.cursor.job is None, 60, "the fit")
    assert lv.ok("start", task="centre_out", seconds=2)["mode"] == "closed"
    lv.wait(lambda: lv.cursor.block is None, 30, "the closed-loop block to end")
    lv.ok("mouse", enabled=True)
    timeout_ms = lv.cursor.watchdog.config.output_timeout_ms
    b0 = lv.cursor.last_bin
    # well past the output timeout (in bins of 20 ms) with no block: the loop runs unhalted
    lv.wait(lambda: lv.cursor.last_bin > b0 + 3 * timeout_ms / 20 + 10 and not lv.cursor.watchdog.halted, 30,
            "bins between blocks without a halt")
    assert lv.ok("start", task="centre_out", seconds=600)["mode"] == "closed"
    lv.ok("mouse_move", x=0.5, y=0.0)
    lv.wait(lambda: lv.rows() and lv.rows()[-1]["cursor_xy"][0] > 0.3, 30, "the cursor to follow the pointer")


def test_calibrate_runs_the_sessions_calibration_task_or_the_one_asked_for(live):
    lv = live(block_defaults={"calibration": {"task": "webgrid", "seconds": 30, "task_params": {"n": 6}}})
    assert lv.ok("calibrate", seconds=2)["block"] == "01-calibration"
    assert lv.cursor.block.task.name == "webgrid" and lv.cursor.block.spec["task_params"] == {"n": 6}
    lv.ok("stop")
    lv.ok("calibrate", seconds=2, task="centre_out")             # the command's task wins; its own defaults
    assert lv.cursor.block.task.name == "centre_out" and lv.cursor.block.spec["task_params"] == {"click": True}
    lv.ok("stop")


def test_block_defaults_calibration_task_is_checked():
    from cortexlink.web.graphs import _block_defaults

    bad = _graph(block_defaults={"calibration": {"task": "chess"}})
    with pytest.raises(ConfigError, match=r"block_defaults.calibration.task must be one of \['centre_out', 'webgrid'\]"):
        load_graph(bad)
    d = _block_defaults([{"kind": "calibration", "task": "webgrid", "seconds": 60, "task_params": {"n": 30}}])
    assert d["calibration"] == {"task": "webgrid", "seconds": 60, "task_params": {"n": 30}}


@pytest.mark.req("SR-13")
def test_an_estop_and_its_release_are_fault_events_logged_and_recorded_at_their_sample(live, tmp_path, caplog):
    """The operator's E-STOP and release are events on ``runtime.faults`` (kind ``estop``, severity
    ``halt`` then ``clear``, node ``cursor``) at the sample of the bin after which each was taken:
    in the run's faults, the log, and the recording's events."""
    import logging

    from cortexlink.io.session_log import SessionReader

    caplog.set_level(logging.INFO, logger="cortexlink.runtime.runner")
    lv = live(recorder_dir=tmp_path)
    lv.ok("record_start", name="r1")
    lv.ok("calibrate", seconds=60)
    lv.wait(lambda: len(lv.rows()) > 10, 30, "the calibration block to run")
    engaged = lv.ok("estop")["received_after_bin"]
    lv.wait(lambda: lv.rows()[-1]["bin"] >= engaged + 5, 30, "bins under the E-STOP")
    assert lv.ok("release")["was_engaged"] is True
    lv.wait(lambda: not lv.rows()[-1]["halted"], 30, "bins after the release")
    lv.ok("record_stop")
    lv.stop()
    sample_of = {r["bin"]: r["sample"] for r in lv.rows()}
    events = [e for e in lv.result["faults"] if e["kind"] == "estop"]
    assert [(e["severity"], e["node"]) for e in events] == [("halt", "cursor"), ("clear", "cursor")], events
    halt, clear = events
    assert halt["bin"] == engaged and halt["sample"] == sample_of[engaged]
    assert clear["bin"] > engaged and clear["sample"] == sample_of[clear["bin"]]
    logged = [r.getMessage() for r in caplog.records if "estop" in r.getMessage()]
    assert any(r.startswith("FAULT estop [halt] cursor: EMERGENCY STOP") for r in logged), logged
    assert any(r.startswith("fault estop [clear] cursor: emergency stop released") for r in logged), logged
    recorded = [e for e in SessionReader(tmp_path / "r1").events("fault") if e["fault_kind"] == "estop"]
    assert [(e["severity"], e["sample"], e["bin"]) for e in recorded] == \
        [(e["severity"], e["sample"], e["bin"]) for e in events]

