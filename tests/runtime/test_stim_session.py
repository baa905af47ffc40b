"""Stimulation on the runtime graph: session section, interlock node, simulated stimulator, blanking,
E-STOP / watchdog halts and a dead encoder — all in real runs of the one graph."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.runtime.runner import GraphRunner
from cortexlink.runtime.session import load_session, run_session, session_to_graph
from cortexlink.stim.verify import find_unsafe

SESSION = {
    "name": "stim-test", "seed": 0,
    "implant": {"preset": "default", "n_channels": 64},
    "decoder": {"kind": "wiener"}, "click_decoder": {"enabled": False},
    "stimulation": {
        "touch": {"config": {"sensor_electrodes": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]}},
        "auditory": {"config": {"n_channels": 4, "rate_hz": 200, "electrodes": [20, 21, 22, 23]}},
    },
    "blocks": [{"name": "calibration", "kind": "calibration", "task": "centre_out", "seconds": 8},
               {"name": "fit", "kind": "fit"},
               {"name": "closed-loop", "kind": "closed_loop", "task": "centre_out", "seconds": 6}],
}


def _run(session, inject=None):
    g = session_to_graph(session, trace=True)
    for node, spec in (inject or {}).items():
        g["nodes"][node]["inject"] = spec
    runner = GraphRunner(g)
    rr = runner.run()
    return runner, rr


@pytest.fixture(scope="module")
def plain_run():
    return _run(SESSION)


@pytest.mark.req("SR-21")
def test_session_stimulation_runs_through_the_interlock(plain_run):
    runner, rr = plain_run
    lock = runner.by_name["stim"].node.interlock
    dev = runner.by_name["implant"].node.stim_device
    delivered = dev.delivered_pulses()
    assert lock.totals["approved"] > 500 and len(delivered) > 500
    # What the device delivered is what the interlock approved (less the last bin's still pending).
    assert 0 <= lock.totals["approved"] - len(delivered) <= 50
    assert set(np.unique(delivered["electrode"])) <= set(range(10)) | {20, 21, 22, 23}
    # The independent checker finds nothing unsafe in the whole delivered stream.
    assert find_unsafe(delivered, lock.limits) == []
    # The simulator rendered them and the dsp blanked their artefacts.
    imp = runner.by_name["implant"].node.implant
    assert len(imp.stimulation_log) == len(delivered)
    art = rr["nodes"]["dsp"]["summary"]["artifacts"]
    assert art["mode"] == "blank+template" and art["blanked_samples"] > 0
    assert rr["nodes"]["dsp"]["inputs"]["stim"]["n_dropped"] == 0


def test_run_session_summary_has_stimulation():
    s = copy.deepcopy(SESSION)
    s["blocks"] = [{"name": "calibration", "kind": "calibration", "task": "centre_out", "seconds": 4}]
    s["stimulation"]["blocks"] = ["calibration"]
    s["stimulation"]["policy"] = "clamp"
    out = run_session(s, progress=False)
    st = out["summary"]["stimulation"]
    assert st["interlock"]["limits"]["policy"] == "clamp"
    assert st["interlock"]["approved"] > 0
    assert st["stimulator"]["pulses_delivered"] > 0
    assert len(st["interlock"]["limits"]["sha256"]) == 64


@pytest.mark.req("SR-11")
def test_halts_stop_stimulation_within_one_bin():
    # Decoder output out of range in two stretches of the closed-loop block: the watchdog halts
    # the cursor, then releases it. The auditory encoder keeps planning all along.
    s = copy.deepcopy(SESSION)
    s["stimulation"].pop("touch")
    s["stimulation"]["blocks"] = ["closed-loop"]
    runner, rr = _run(s, {"decoder": {"out_of_range_at_bins": list(range(520, 526)) + list(range(600, 604))}})
    node = runner.by_name["stim"].node
    dev = runner.by_name["implant"].node.stim_device
    halts = node.halts
    assert any(k == "estop" for _, k in halts), "the drill needs halts (bins 520-525, 600-603 in closed loop)"
    assert dev.counts["stops"] == sum(k == "estop" for _, k in halts) + 1       # + the STOP of the run's end
    bin_s = node.bin_s
    t = dev.delivered_pulses()["time_s"]
    spans = []
    for i, (t0, kind) in enumerate(halts):
        if kind == "estop":
            end = next((t1 for t1, k in halts[i + 1:] if k == "reset"), np.inf)
            spans.append((t0, end))
    for t0, t1 in spans:
        # nothing after the bin in which the halt arrived, until the release
        assert not np.any((t >= t0 + bin_s) & (t < t1 - 1e-9)), (t0, t1)
    # The encoder kept planning during the halts; the interlock refused those plans.
    assert node.audit.reasons["estop"] > 0


@pytest.mark.req("SR-12")
def test_a_stopped_run_holds_the_cursor_first_and_sends_the_stimulator_stop():
    """A run that stops (here by the runner's own stop request at the end of its time, the path a
    SIGINT/SIGTERM takes) while it stimulates: the cursor's last gate is halted (zero velocity, no
    click, ``run_stopped``) and the simulated stimulator receives a STOP frame, its only one (no
    halt during the run), which drops what was still pending."""
    s = copy.deepcopy(SESSION)
    s["blocks"] = [{"name": "calibration", "kind": "calibration", "task": "centre_out", "seconds": 3000}]
    s["stimulation"]["blocks"] = ["calibration"]
    g = session_to_graph(s, trace=True)
    g["nodes"]["gates"] = {"kind": "sink", "params": {"keep": 100}, "inputs": {"data": "cursor.gate"}}
    g["nodes"]["states"] = {"kind": "sink", "params": {"keep": 1000}, "inputs": {"data": "cursor.state"}}
    runner = GraphRunner(g, seconds=3.0)
    rr = runner.run()
    assert rr["stop_reason"] == "3 s of source time" and rr["failure"] is None
    (gate,) = runner.by_name["gates"].node.kept          # nothing halted the cursor before the stop
    last = gate.payload
    assert last.halted and last.velocity == (0.0, 0.0) and last.click_suppressed
    assert last.faults[-1]["kind"] == "run_stopped" and "3 s of source time" in last.faults[-1]["message"]
    states = list(runner.by_name["states"].node.kept)
    before = [m.payload.halted for m in states if m.t_pub_ns < gate.t_pub_ns]
    assert len(before) > 100 and not any(before)         # the cursor moved freely until the stop,
    assert all(m.payload.halted for m in states if m.t_pub_ns > gate.t_pub_ns)     # and is held after it
    dev = runner.by_name["implant"].node.stim_device
    assert runner.by_name["stim"].node.halts == []
    assert dev.counts["pulses_delivered"] > 0 and dev.counts["stops"] == 1 and dev.n_pending == 0


def test_a_dead_encoder_means_no_stimulation():
    s = copy.deepcopy(SESSION)
    s["stimulation"].pop("auditory")
    runner, rr = _run(s, {"touch": {"fail_at_steps": list(range(150, 5000))}})
    touch = rr["nodes"]["touch"]
    assert touch["gave_up"] and touch["n_failures"] >= 1
    dev = runner.by_name["implant"].node.stim_device
    t = dev.delivered_pulses()["time_s"]
    assert len(t) > 0                                  # it stimulated while it lived
    # It stepped at most ~150 + restarts times (one bin each): nothing was delivered after that.
    assert t.max() < (150 + 10) * runner.by_name["stim"].node.bin_s
    # The movement loop went on (an encoder is not critical).
    assert rr["stop_reason"] == "cursor: schedule finished"


@pytest.mark.parametrize("change, match", [
    ({"bogus": 1}, "unknown key"),
    ({"touch": None, "auditory": None}, "needs an encoder"),
    ({"policy": "ignore"}, "refuse or clamp"),
    ({"blocks": ["nope"]}, "does not have"),
    ({"n_electrodes": 999}, "n_electrodes"),
    ({"artifacts": {"mode": "magic"}}, "artifacts"),
    ({"touch": {"config": {"sensor_electrodes": [[100]]}}}, "beyond the implant"),
    ({"limits": {"electrodes": []}}, "non-empty list"),
])
def test_stimulation_section_errors(change, match):
    s = copy.deepcopy(SESSION)
    for k, v in change.items():
        if v is None:
            s["stimulation"].pop(k, None)
        else:
            s["stimulation"][k] = v
    with pytest.raises(ConfigError, match=match):
        load_session(s)


def test_perfect_decoder_cannot_stimulate():
    s = copy.deepcopy(SESSION)
    s["decoder"] = {"kind": "perfect"}
    with pytest.raises(ConfigError, match="needs an implant"):
        load_session(s)


def test_example_session_and_limits_file_load(monkeypatch):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)                      # the example names its limits file from the repo root
    cfg = load_session(root / "examples" / "stim" / "touch_feedback.yaml")
    assert cfg["stimulation"]["limits_file"] == "examples/stim/limits.yaml"
    from cortexlink.runtime.nodes.stim import StimInterlockNode

    lim = StimInterlockNode.build_limits(cfg["stimulation"])
    assert lim.participant == "SIM01" and not lim.enabled[12] and lim.per_electrode["max_amplitude_ua"][20] == 60.0


def test_a_recording_made_through_stimulation_replays_exactly(tmp_path):
    from cortexlink.io.replay import replay
    from cortexlink.io.session_log import SessionRecorder

    s = copy.deepcopy(SESSION)
    s["stimulation"].pop("auditory")
    s["blocks"] = [{"name": "calibration", "kind": "calibration", "task": "centre_out", "seconds": 5}]
    rec = SessionRecorder(tmp_path / "rec", config=load_session(s), raw=True)
    try:
        out = run_session(s, progress=False, recorder=rec, out_dir=tmp_path)
    finally:
        rec.close()
    assert out["summary"]["stimulation"]["stimulator"]["pulses_delivered"] > 100
    r = replay(tmp_path / "rec")
    assert r["compare"]["features"]["equal"] and r["compare"]["features"]["rows_compared"] > 200
    assert any("delivered pulses fed to the artefact removal" in n for n in r["notes"])
