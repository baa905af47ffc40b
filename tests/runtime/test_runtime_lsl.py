"""LSL nodes over loopback: decoded intent out through ``lsl_outlet``, samples in through ``lsl_source``.

Every wait is bounded (resolve timeouts, loop counts, thread joins with timeouts).
"""

import threading
import time
import uuid

import numpy as np
import pytest

from cortexlink import Chunk
from cortexlink.bench.latency import prepare_data
from cortexlink.io import lsl
from cortexlink.io.lsl import LSLInlet, LSLOutlet
from cortexlink.runtime.runner import GraphRunner

#: the bound of every resolve and wait for data: generous for a loaded machine, and never reached on
#: the way to a pass (each wait returns as soon as its stream or rows arrive)
TIMEOUT_S = 30.0


@pytest.fixture(scope="module", autouse=True)
def _loopback_discovery():
    lsl.use_loopback_only()


def _name():
    return f"cortexlink-rt-{uuid.uuid4().hex[:10]}"


def test_lsl_outlet_node_publishes_decoded_intent(tmp_path):
    prep = prepare_data(16, 1.0, tmp_path, seed=6)
    name = _name()
    # paced by the wall clock, stopped by the test once it has read what it checks (a loaded machine may
    # resolve the stream late: a fixed 4 s run used to end before the inlet had read 30 rows)
    g = {"name": "lsl-out", "clock": "realtime", "seconds": 300.0, "nodes": {
        "source": {"kind": "replay_source", "params": {"path": prep["data"]}},
        "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}}, "inputs": {"raw": "source.raw"}},
        "decoder": {"kind": "decoder", "params": {"path": prep["decoder"], "click": False},
                    "inputs": {"features": "dsp.features"}},
        "out": {"kind": "lsl_outlet", "params": {"stream": "intent", "name": name}, "inputs": {"data": "decoder.intent"}},
    }}
    runner = GraphRunner(g)
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(runner.run()), daemon=True)
    t.start()
    rows = []

    def calibrated():       # 30 rows read, the last 10 with a decoded (finite) velocity
        data = np.concatenate(rows) if rows else np.zeros((0, 3))
        return len(data) >= 30 and np.isfinite(data[-10:, :2]).all()

    try:
        with LSLInlet(name=name, timeout_s=TIMEOUT_S) as inlet:
            assert inlet.channel_labels == ("vx", "vy", "click") and inlet.fs_hz == pytest.approx(50.0)
            deadline = time.monotonic() + 2 * TIMEOUT_S
            for _ in range(1000):
                if calibrated() or time.monotonic() > deadline or not t.is_alive():
                    break
                c = inlet.read_chunk(timeout_s=0.2)
                if c is not None:
                    rows.append(np.asarray(c.data))
    finally:
        runner.request_stop("test done")
        t.join(timeout=60.0)
    assert not t.is_alive() and result["stop_reason"] == "test done", result.get("stop_reason")
    data = np.concatenate(rows)
    assert data.shape[1] == 3 and len(data) >= 30
    assert np.isfinite(data[-10:, :2]).all()                 # decoded velocity once calibrated
    assert result["nodes"]["out"]["summary"]["n_pushed"] == result["nodes"]["decoder"]["n_out"]


def test_lsl_source_node_reads_a_stream(tmp_path):
    name = _name()
    outlet = LSLOutlet(name, "EEG", [f"e{i}" for i in range(8)], "counts", 1000.0, dtype="int16")
    stop = threading.Event()

    def push():
        k = 0
        deadline = time.monotonic() + 15.0
        while not stop.is_set() and time.monotonic() < deadline:
            outlet.push((np.arange(80, dtype=np.int16).reshape(10, 8) + k) % 1000)
            k += 1
            time.sleep(0.01)

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    try:
        g = {"name": "lsl-in", "clock": "realtime", "seconds": 2.0, "watchdog": {"stall_ms": 200},
             "nodes": {"inlet": {"kind": "lsl_source", "params": {"name": name, "timeout_s": TIMEOUT_S}},
                       "sink": {"kind": "sink", "params": {"keep": 1000}, "inputs": {"data": "inlet.raw"}}}}
        runner = GraphRunner(g)
        res = runner.run()
    finally:
        stop.set()
        pusher.join(timeout=5.0)
        outlet.close()
    kept = [m.payload for m in runner.by_name["sink"].node.kept]
    assert res["nodes"]["sink"]["summary"]["n"] == len(kept) > 10
    assert all(isinstance(c, Chunk) and c.n_channels == 8 and c.data.dtype == np.int16 for c in kept)
    starts = [c.start_sample for c in kept]
    assert starts == sorted(starts) and kept[1].start_sample == kept[0].end_sample
