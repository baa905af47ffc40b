"""Fail-safe: each fault stops the cursor and suppresses clicks within one 20 ms bin, with an event.

Graphs run with ``clock: fast`` (a virtual clock: one tick per 1 ms chunk), so the time from a
fault to the halt is measured in source time, deterministically.
"""

import numpy as np
import pytest

from cortexlink.bench.latency import prepare_data
from cortexlink.runtime.runner import GraphRunner

BIN_NS = 20_000_000


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """1 s of simulated 32-channel data for a replay source and a Kalman filter fitted on it."""
    return prepare_data(32, 1.0, tmp_path_factory.mktemp("wd"), seed=2)


def _graph(replay, *, seconds=2.5, source_inject=None, decoder_inject=None, restart=None):
    dec = {"kind": "decoder", "params": {"path": replay["decoder"], "click": False},
           "inputs": {"features": "dsp.features"}, "inject": decoder_inject or {}}
    if restart:
        dec["restart"] = restart
    return {"name": "wd", "clock": "fast", "seconds": seconds,
            "watchdog": {"stall_ms": 5, "max_speed": 10, "output_timeout_ms": 0},
            "nodes": {
                "source": {"kind": "replay_source", "params": {"path": replay["data"]},
                           "inject": source_inject or {}},
                "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}},
                        "inputs": {"raw": "source.raw"}},
                "decoder": dec,
                "cursor": {"kind": "cursor", "inputs": {"intent": "decoder.intent"}},
                "states": {"kind": "sink", "params": {"keep": 5000}, "inputs": {"data": "cursor.state"}},
                "gates": {"kind": "sink", "params": {"keep": 100}, "inputs": {"data": "cursor.gate"}},
            }}


def _run(graph):
    r = GraphRunner(graph)
    res = r.run()
    states = [m.payload.to_dict() for m in r.by_name["states"].node.kept]
    gates = [m.payload.to_dict() for m in r.by_name["gates"].node.kept]
    # every run ends holding the cursor first (SR-12): its last gate is the stop's; the gates the
    # watchdog's faults published are the ones before it
    *gates, last = gates
    assert last["halted"] and last["velocity"] == [0.0, 0.0] and last["click_suppressed"], last
    assert last["faults"][-1]["kind"] == "run_stopped" and res["stop_reason"] in last["faults"][-1]["message"]
    return res, states, gates


def _events(res, kind, severity=None):
    return [e for e in res["faults"] if e["kind"] == kind and (severity is None or e["severity"] == severity)]


@pytest.mark.req("SR-12")
def test_a_fault_free_run_moves_the_cursor_and_raises_nothing(replay):
    """No fault, no gate until the run's end; then (``_run``) the last gate holds the cursor."""
    res, states, gates = _run(_graph(replay))
    assert res["fault_counts"] == {} and gates == []
    moving = [s for s in states if s["block"] is None and np.hypot(*s["velocity"]) > 0]
    assert len(moving) > 50 and not any(s["halted"] for s in states)


@pytest.mark.req("SR-01")
def test_source_stall_halts_within_one_bin(replay):
    res, states, gates = _run(_graph(replay, source_inject={"stall_at_s": 1.5, "stall_for_s": 0.3}))
    halt = _events(res, "source_stall", "halt")
    assert len(halt) == 1 and halt[0]["node"] == "source"
    assert 0 < halt[0]["t_ns"] - 1_500_000_000 <= BIN_NS               # virtual time since the last chunk
    assert gates[0]["halted"] is True and gates[0]["velocity"] == [0.0, 0.0] and gates[0]["click_suppressed"]
    assert gates[0]["faults"][0]["kind"] == "source_stall"
    assert _events(res, "source_stall", "clear") and gates[-1]["halted"] is False   # it recovers when data flows
    assert res["nodes"]["cursor"]["summary"]["n_updates"] > 0


@pytest.mark.req("SR-04")
def test_node_exception_halts_at_once_and_the_supervisor_restarts_it(replay):
    res, states, gates = _run(_graph(replay, decoder_inject={"fail_at_steps": [60]},
                                     restart={"max_restarts": 3, "backoff_ms": 100}))
    failed = _events(res, "node_failed")
    down = _events(res, "node_down", "halt")
    assert len(failed) == 1 and "InjectedFault" in failed[0]["message"] and len(down) == 1
    assert down[0]["t_ns"] - failed[0]["t_ns"] <= BIN_NS
    assert gates[0]["halted"] is True and gates[0]["velocity"] == [0.0, 0.0]
    assert _events(res, "node_restarted") and _events(res, "node_down", "clear")
    assert res["nodes"]["decoder"]["n_failures"] == 1 and res["nodes"]["decoder"]["n_restarts"] == 1
    assert res["nodes"]["decoder"]["state"] == "stopped" and gates[-1]["halted"] is False


@pytest.mark.req("SR-02", "SR-07")
@pytest.mark.parametrize("inject, kind", [("nan_at_bins", "decoder_nan"),
                                          ("out_of_range_at_bins", "decoder_out_of_range")])
def test_bad_decoder_output_gives_zero_velocity_and_no_click_in_that_bin(replay, inject, kind):
    bad_bin = 80
    res, states, gates = _run(_graph(replay, decoder_inject={inject: [bad_bin]}))
    halt = _events(res, kind, "halt")
    assert len(halt) == 1 and halt[0]["node"] == "decoder"
    by_bin = {s["bin"] - 1: s for s in states}           # a state message names the *next* bin
    bad = by_bin[bad_bin]
    assert bad["velocity"] == [0.0, 0.0] and bad["clicked"] is False and bad["halted"] is True
    # the decoder asked for a click on that bin; nothing else clicked, so the gate suppressed it
    assert res["nodes"]["cursor"]["summary"]["n_halted_bins"] == 1
    assert np.hypot(*by_bin[bad_bin - 1]["velocity"]) > 0 and np.hypot(*by_bin[bad_bin + 1]["velocity"]) > 0
    assert _events(res, kind, "clear") and [g["halted"] for g in gates] == [True, False]
