"""The closed-loop session on the runtime: participant, implant, dsp, decoder and cursor as nodes."""

import numpy as np

from cortexlink.runtime.session import session_to_graph
from cortexlink.runtime.runner import GraphRunner, run_graph
from cortexlink.runtime.session import run_session

SESSION = {"name": "short", "seed": 0, "implant": {"preset": "default", "n_channels": 48},
           "decoder": {"kind": "kalman"}, "click_decoder": {"enabled": True},
           "blocks": [{"kind": "calibration", "task": "centre_out", "seconds": 10.0, "task_params": {"click": True}},
                      {"kind": "fit"},
                      {"kind": "evaluation", "task": "centre_out", "seconds": 8.0, "task_params": {"click": True}}]}


def test_closed_loop_graph_calibrates_then_controls_the_cursor_like_run_session():
    # 1 ms chunks here, one chunk per bin in run_session: the loop's figures do not depend on it
    runner = GraphRunner(session_to_graph(SESSION, chunk_ms=1.0))
    res = runner.run()
    assert res["stop_reason"] == "cursor: schedule finished" and res["fault_counts"] == {}
    blocks = res["nodes"]["cursor"]["summary"]["blocks"]
    assert [b["kind"] for b in blocks] == ["calibration", "fit", "evaluation"]
    ev = blocks[-1]
    assert ev["mode"] == "closed" and ev["n_bins"] == 400
    assert ev["metrics"]["n_success"] > 0                          # the decoded cursor reaches targets
    fit = res["nodes"]["decoder"]["summary"]["fits"][0]
    # lab labels (direction to the target at the cursor's speed) lag the features by a lag chosen from the data
    assert fit["labels"] == "target" and 0 <= fit["label_lag_bins"] <= 20
    assert fit["n_bins"] == 500 - fit["label_lag_bins"] and fit["n_click_bins"] > 0
    assert fit["speed_gain"] is None or fit["speed_gain"]["s0_units_s"] > 0
    assert ev["loop_latency_ms"]["n"] == 400
    # same session, same seed, same figures (clock: fast, one process)
    ref = run_session(SESSION, progress=False)
    ref_blocks = [b for b in ref["summary"]["blocks"] if "metrics" in b]
    assert [b["metrics"] for b in blocks if "metrics" in b] == [b["metrics"] for b in ref_blocks]
    assert runner.by_name["cursor"].node.traces[-1]["cursor_xy"].shape == (400, 2)


def test_decoder_saved_by_the_session_drives_a_free_running_cursor(tmp_path):
    g = session_to_graph({**SESSION, "blocks": SESSION["blocks"][:2]})
    g["nodes"]["decoder"]["params"]["save_dir"] = str(tmp_path)
    run_graph(g)
    saved = sorted(tmp_path.glob("decoder-v*.npz"))
    assert [p.name for p in saved] == ["decoder-v1.npz"]
    free = {"clock": "fast", "seconds": 3.0, "nodes": {
        "implant": {"kind": "sim_source", "params": {"config": {"n_channels": 48}, "seed": 0}},
        "dsp": {"kind": "dsp", "inputs": {"raw": "implant.raw"}},
        "decoder": {"kind": "decoder", "params": {"path": str(saved[0]), "click": False},
                    "inputs": {"features": "dsp.features"}},
        "cursor": {"kind": "cursor", "inputs": {"intent": "decoder.intent"}}}}
    res = run_graph(free)
    s = res["nodes"]["cursor"]["summary"]
    assert s["n_updates"] == 150 - 51 + 1 and s["n_halted_bins"] == 0      # after the 1 s calibration window


def test_a_session_file_becomes_a_graph(tmp_path):
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SESSION))
    g = session_to_graph(path)
    assert g["nodes"]["cursor"]["params"]["blocks"][0]["seconds"] == 10.0
    assert g["nodes"]["implant"]["params"]["config"] == {"n_channels": 48}


def test_click_freeze_holds_the_cursor_while_a_click_builds_up():
    """freeze_proba 0 holds the cursor on every decoded bin (the click decoder's probability is
    always >= 0); without it the same decoder moves the cursor."""
    blocks = SESSION["blocks"][:2] + [{"kind": "evaluation", "task": "centre_out", "seconds": 3.0,
                                       "task_params": {"click": True}}]
    runs = {}
    for fz in (None, 0.0):
        s = {**SESSION, "blocks": blocks, "click_decoder": {"enabled": True, "freeze_proba": fz}}
        runner = GraphRunner(session_to_graph(s))
        res = runner.run()
        xy = runner.by_name["cursor"].node.traces[-1]["cursor_xy"]
        runs[fz] = (res["nodes"]["decoder"]["summary"]["n_frozen_bins"], np.ptp(xy, axis=0).max())
    assert runs[None][0] == 0 and runs[None][1] > 0.01
    assert runs[0.0][0] == 150 and runs[0.0][1] == 0.0
