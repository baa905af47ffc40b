"""The recorder node under the operator UI: a recording that stops on a full disk says so (a fault on
``runtime.faults``, ``active: false`` with the reason), and a recording started mid-session replays
as the live session computed it (the live dsp calibration is stored).

The graph runs paced by the wall clock in a thread (as under the UI); every wait is bounded.
"""

import json
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from cortexlink.io.replay import WARMUP_S, replay
from cortexlink.io.session_log import SessionReader
from cortexlink.runtime.runner import GraphRunner


def _graph(record_dir, *, channels=24):
    return {"name": "rec-test", "bin_ms": 20, "clock": "realtime", "watchdog": {"stall_ms": 500}, "nodes": {
        "participant": {"kind": "participant", "params": {"seed": 0}, "inputs": {"cursor": "cursor.state"}},
        "implant": {"kind": "sim_source", "params": {"preset": "default", "seed": 0,
                                                     "config": {"n_channels": channels}, "chunk_ms": 20},
                    "inputs": {"intent": "participant.intent"}},
        "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}, "full_rows": True},
                "inputs": {"raw": "implant.raw", "operator": "operator.commands"}},
        "decoder": {"kind": "decoder", "params": {"decoder": "kalman"},
                    "inputs": {"features": "dsp.features", "labels": "participant.intent", "control": "cursor.control"}},
        "cursor": {"kind": "cursor", "params": {"seed": 0, "decoder_kind": "kalman", "blocks": []},
                   "inputs": {"intent": "decoder.intent", "participant": "participant.intent",
                              "operator": "operator.commands"}},
        "recorder": {"kind": "recorder", "params": {"record_dir": str(record_dir), "raw": True},
                     "inputs": {"raw": "implant.raw", "features": "dsp.features", "intent": "decoder.intent",
                                "bins": "cursor.bins", "events": "cursor.events", "operator": "operator.commands"}},
    }}


_FULL_DISK = textwrap.dedent("""
    import json, resource, sys, threading, time
    sys.path.insert(0, sys.argv[3])
    from test_runtime_recorder_faults import _graph
    from cortexlink.runtime.runner import GraphRunner

    runner = GraphRunner(_graph(sys.argv[1]))
    t = threading.Thread(target=runner.run, daemon=True)
    t.start()
    assert runner.started.wait(60)
    # from here on no file of this process may grow past the limit: the recording's disk is "full"
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    start = runner.wait_reply(runner.send_command({"cmd": "record_start", "name": "r1"}), 20)
    st, t_end = {}, time.monotonic() + 60
    while time.monotonic() < t_end:
        st = runner.bus.get_info("recorder/status") or {}
        if not st.get("active") and (st.get("last") or {}).get("state") not in (None, "stopping"):
            break
        time.sleep(0.05)
    stop = runner.wait_reply(runner.send_command({"cmd": "record_stop"}), 20)
    runner._request_stop("test done")
    t.join(60)
    print(json.dumps({"start": start, "status": st, "stop": stop, "alive": not t.is_alive(),
                      "faults": [f for f in runner.faults if f.get("kind") == "recording_stopped"]}, default=str))
""")


def test_a_recording_that_stops_on_a_full_disk_raises_a_fault_and_says_why(tmp_path):
    """A real limit (RLIMIT_FSIZE of the graph's process, 1 MB) fills up under a 24-channel raw
    stream within a second: the recorder stops, a `recording_stopped` fault is raised, the status
    says `active: false` with the reason (the UI's header no longer shows "● recording"), the loop
    runs on and what was written before is intact."""
    import pathlib

    here = str(pathlib.Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path), str(1 << 20), here],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["start"]["ok"], res
    st = res["status"]
    assert st["active"] is False, st
    last = st["last"]
    assert last["dir"] == str(tmp_path / "r1") and last["state"] == "stopped"
    assert "File too large" in last["stopped_reason"] or "disk full" in last["stopped_reason"]
    (fault,) = res["faults"]
    assert fault["severity"] == "warning" and fault["node"] == "recorder" and fault["dir"] == last["dir"]
    assert "stopped" in fault["message"] and fault["reason"] == last["stopped_reason"]
    assert res["stop"]["status"] == 409 and "the last recording stopped" in res["stop"]["error"]
    assert res["alive"]
    rdr = SessionReader(tmp_path / "r1")                      # what was written before is readable
    assert rdr.manifest["state"] == "stopped" and rdr.manifest["stopped_reason"] == last["stopped_reason"]
    s, _ = rdr.read_array("raw")
    assert s.size > 0


def test_a_recording_started_mid_session_replays_as_the_live_session(tmp_path):
    """Started from the UI after the dsp calibrated (and with a noise recalibration while it records):
    the recording stores the live calibration, so replay's features equal the live ones after the
    filters' warm-up; before, replay calibrated on the recording's first 0.5 s and said DIFFERENT."""
    runner = GraphRunner(_graph(tmp_path))
    t = threading.Thread(target=runner.run, daemon=True)
    t.start()
    try:
        assert runner.started.wait(60)

        def cmd(c, **k):
            rep = runner.wait_reply(runner.send_command({"cmd": c, **k}), 20)
            assert rep is not None and rep["ok"], rep
            return rep["result"]

        def source_s(s, what):
            """Wait until ``s`` more seconds of source time went by (a loaded machine runs the graph
            late: a wall-clock sleep recorded fewer bins than the test compares)."""
            at, t_end = runner.source_time_ns, time.monotonic() + 300
            while runner.source_time_ns < at + s * 1e9:
                assert time.monotonic() < t_end and t.is_alive(), f"no {s} s of source time {what}"
                time.sleep(0.02)

        t_end = time.monotonic() + 300
        while not (runner.bus.get_info("dsp/calibration") or {}).get("version"):
            assert time.monotonic() < t_end, "the dsp did not calibrate"
            time.sleep(0.05)
        source_s(0.3, "after the calibration")
        rep = runner.wait_reply(runner.send_command({"cmd": "record_start", "name": "../escaped"}), 20)
        assert rep["status"] == 409 and "recording name must not contain path separators" in rep["error"], rep
        assert not (tmp_path.parent / "escaped").exists()
        cmd("record_start", name="ui")
        source_s(1.0, "recorded")
        cmd("recalibrate_noise")
        t_end = time.monotonic() + 300
        while (runner.bus.get_info("dsp/calibration") or {}).get("version", 0) < 2:
            assert time.monotonic() < t_end, "the recalibration did not complete"
            time.sleep(0.05)
        source_s(1.0, "recorded after the recalibration")
        assert cmd("record_stop")["state"] == "closed"
    finally:
        runner._request_stop("test done")
        t.join(60)
    rdr = SessionReader(tmp_path / "ui")
    assert rdr.manifest["dsp_calibration"]["version"] == 1
    (recal,) = rdr.events("dsp_calibration")[-1:]
    assert recal["version"] == 2 and recal["armed_at_sample"] > 0
    first = int(rdr.read_array("raw")[0][0])
    assert first > 0                                          # begun mid-session
    r = replay(tmp_path / "ui")
    f = r["compare"]["features"]
    assert f["equal"], f
    assert f["rows_warmup"] == int(np.ceil(WARMUP_S * 30000 / 600)) and f["rows_compared"] > 50
    assert any("recalibration" in n for n in r["notes"])


@pytest.mark.req("SR-44")
def test_what_the_recorder_drops_is_in_the_run_result(tmp_path):
    """The recorder node's writer cannot keep up (held inside its first write, a one-chunk queue):
    the chunks it drops are counted in the node's summary in the run result, per stream and in
    total, equal to the recorder's own counts and to the manifest's ``dropped``."""
    from cortexlink.core.types import ChannelMap
    from cortexlink.io.session_log import SessionRecorder

    n_ch = 16
    rec = SessionRecorder(tmp_path / "s", channel_map=ChannelMap.grid(n_ch), fs_hz=30000.0, catalogue=False,
                          max_queue_bytes=30 * n_ch * 2 + 1, on_full="drop")
    gate, write_batch = threading.Event(), rec._write_batch

    def held(batch, dirty):
        gate.wait(60)
        write_batch(batch, dirty)

    rec._write_batch = held
    g = {"name": "drops", "clock": "fast", "seconds": 0.5, "nodes": {
        "src": {"kind": "sim_source", "params": {"config": {"n_channels": n_ch}, "seed": 1}},
        "recorder": {"kind": "recorder", "params": {"use": "rec"}, "inputs": {"raw": "src.raw"}},
    }}
    try:
        res = GraphRunner(g, objects={"rec": rec}).run()
        st = rec.stats()["streams"]["raw"]
    finally:
        gate.set()
    m = rec.close()
    summ = res["nodes"]["recorder"]["summary"]
    assert st["dropped"] > 0 and m["streams"]["raw"]["records"] + st["dropped"] == res["nodes"]["src"]["n_out"]
    assert summ["dropped"] == {"raw": {"items": st["dropped"], "rows": st["dropped_rows"]}}
    assert summ["dropped_total"] == st["dropped"] == m["dropped"]["raw"]["items"]
    assert m["dropped"]["raw"]["rows"] == st["dropped_rows"]
