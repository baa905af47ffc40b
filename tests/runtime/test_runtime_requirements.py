"""Safety requirements of the runtime that no other test verified on its own (docs/safety/requirements.yaml):
the watchdog's output checks case by case (SR-02), a hung pipeline (SR-03), fault events recorded at
their sample (SR-13), and a failed scheduled fit that leaves no decoder driving the cursor (SR-31).

The watchdog is checked as a unit (its own virtual time in ns), the graphs run with ``clock: fast``
(one tick per source chunk, virtual time): nothing here depends on the machine's speed."""

from __future__ import annotations

import logging
import math

import pytest

from cortexlink.bench.latency import prepare_data
from cortexlink.runtime.runner import GraphRunner
from cortexlink.runtime.watchdog import Watchdog, WatchdogConfig

MS = 1_000_000


class _Events:
    """The watchdog's ``emit``: keeps every fault event it publishes."""

    def __init__(self):
        self.events: list[dict] = []

    def __call__(self, kind, **fields):
        self.events.append({"kind": kind, **fields})

    def of(self, kind, severity=None):
        return [e for e in self.events if e["kind"] == kind and (severity is None or e["severity"] == severity)]


def _watchdog(**cfg):
    ev = _Events()
    return Watchdog(WatchdogConfig(**cfg), ev, gate="cursor"), ev


@pytest.mark.req("SR-02")
@pytest.mark.parametrize("velocity, click, kind", [
    ((math.nan, 0.0), 0.5, "decoder_nan"),
    ((0.0, math.inf), 0.5, "decoder_nan"),
    ((-math.inf, 0.0), None, "decoder_nan"),
    ((0.1, 0.1), math.nan, "decoder_nan"),
    ((0.1, 0.1), math.inf, "decoder_nan"),
    ((8.0, 6.01), 0.5, "decoder_out_of_range"),          # |v| = 10.006 > max_speed 10
    ((-30.0, 0.0), None, "decoder_out_of_range"),
    ((0.1, 0.1), 1.0001, "decoder_out_of_range"),
    ((0.1, 0.1), -0.01, "decoder_out_of_range"),
    ("not a velocity", 0.5, "decoder_nan"),
    ((1.0,), 0.5, "decoder_nan"),
])
def test_every_implausible_decoder_output_halts_until_a_valid_one_clears_it(velocity, click, kind):
    wd, ev = _watchdog(max_speed=10.0, output_timeout_ms=0)
    assert wd.check_output(0, (0.5, -0.5), 0.2, node="decoder", sample=0) and not wd.halted
    assert wd.check_output(20 * MS, velocity, click, node="decoder", sample=600) is False
    assert wd.halted and [(e["kind"], e["node"], e["sample"]) for e in ev.of(kind, "halt")] == [(kind, "decoder", 600)]
    # it holds while bad output goes on (one event, not one per bin), and clears on the next valid one
    assert wd.check_output(40 * MS, velocity, click, node="decoder", sample=1200) is False
    assert len(ev.of(kind, "halt")) == 1 and wd.halted
    assert wd.check_output(60 * MS, (6.0, 8.0), 1.0, node="decoder", sample=1800)      # |v| = 10, click 1: allowed
    assert not wd.halted and [e["sample"] for e in ev.of(kind, "clear")] == [1800]


@pytest.mark.req("SR-03")
def test_the_watchdog_halts_when_decoder_outputs_stop_once_they_flowed():
    wd, ev = _watchdog(output_timeout_ms=100.0)

    def source(n):          # a source that keeps producing: only the decoder's outputs stop
        return {"source": {"state": "running", "source": True, "n_out": n}}
    assert not wd.check_health(0, source(1)) and not wd.halted        # no output yet: nothing to time out
    assert not wd.check_health(500 * MS, source(2)) and not wd.halted
    wd.check_output(500 * MS, (0.1, 0.0), None, node="decoder", sample=100)
    assert not wd.check_health(600 * MS, source(3))                    # exactly the timeout
    assert wd.check_health(601 * MS, source(4), sample=180)
    (halt,) = ev.of("pipeline_stall", "halt")
    assert wd.halted and halt["node"] == "cursor" and halt["sample"] == 180 and halt["age_ms"] == pytest.approx(101.0)
    assert [e["kind"] for e in ev.events] == ["pipeline_stall"]
    assert not wd.check_health(900 * MS, source(5))                    # still held, no new event
    assert wd.halted and len(ev.of("pipeline_stall", "halt")) == 1
    wd.check_output(910 * MS, (0.1, 0.0), None, node="decoder", sample=300)               # it flows again
    assert not wd.halted and [e["sample"] for e in ev.of("pipeline_stall", "clear")] == [300]
    off, ev_off = _watchdog(output_timeout_ms=0.0)                                         # 0: the check is off
    off.check_output(0, (0.1, 0.0), None, node="decoder")
    assert not off.check_health(10_000 * MS, {}) and ev_off.events == []


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """1 s of simulated 32-channel data for a replay source and a Kalman filter fitted on it."""
    return prepare_data(32, 1.0, tmp_path_factory.mktemp("req"), seed=2)


def _graph(replay, *, watchdog, decoder=None, recorder=False):
    dec = {"kind": "decoder", "params": {"path": replay["decoder"], "click": False},
           "inputs": {"features": "dsp.features"}, **(decoder or {})}
    nodes = {
        "source": {"kind": "replay_source", "params": {"path": replay["data"]}},
        "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}}, "inputs": {"raw": "source.raw"}},
        "decoder": dec,
        "cursor": {"kind": "cursor", "inputs": {"intent": "decoder.intent"}},
        "gates": {"kind": "sink", "params": {"keep": 100}, "inputs": {"data": "cursor.gate"}},
        "intents": {"kind": "sink", "params": {"keep": 10000}, "inputs": {"data": "decoder.intent"}},
    }
    if recorder:
        nodes["recorder"] = {"kind": "recorder", "params": {"raw": False}, "inputs": {"intent": "decoder.intent"}}
    return {"name": "req", "clock": "fast", "seconds": 2.5, "watchdog": {"stall_ms": 5, "max_speed": 10, **watchdog},
            "nodes": nodes}


@pytest.mark.req("SR-03")
def test_a_hung_decoder_halts_the_cursor_with_a_pipeline_stall_until_its_outputs_return(replay):
    # a non-critical decoder (no node_down halt) fails at its 60th step and is restarted 200 ms later:
    # meanwhile the source runs on and only the output timeout can see that nothing reaches the cursor
    dec = {"inject": {"fail_at_steps": [60]}, "critical": False, "restart": {"max_restarts": 3, "backoff_ms": 200}}
    runner = GraphRunner(_graph(replay, watchdog={"output_timeout_ms": 60}, decoder=dec))
    res = runner.run()
    kinds = [(e["kind"], e["severity"]) for e in res["faults"]]
    assert ("node_down", "halt") not in kinds and ("source_stall", "halt") not in kinds
    failed = next(e for e in res["faults"] if e["kind"] == "node_failed")
    restarted = next(e for e in res["faults"] if e["kind"] == "node_restarted")
    (halt,) = [e for e in res["faults"] if e["kind"] == "pipeline_stall" and e["severity"] == "halt"]
    (clear,) = [e for e in res["faults"] if e["kind"] == "pipeline_stall" and e["severity"] == "clear"]
    assert failed["t_ns"] < halt["t_ns"] < restarted["t_ns"] <= clear["t_ns"]
    assert halt["node"] == "cursor" and halt["age_ms"] > 60
    *gates, last = [m.payload.to_dict() for m in runner.by_name["gates"].node.kept]
    assert gates[0]["halted"] and gates[0]["velocity"] == [0.0, 0.0] and gates[0]["click_suppressed"]
    assert [f["kind"] for f in gates[0]["faults"]] == ["pipeline_stall"] and gates[-1]["halted"] is False
    assert last["halted"] and [f["kind"] for f in last["faults"]] == ["run_stopped"]     # the run's end (SR-12)
    # the same failure with the timeout off raises no halt at all: it is the timeout that saw it
    quiet = GraphRunner(_graph(replay, watchdog={"output_timeout_ms": 0}, decoder=dec)).run()
    assert not [e for e in quiet["faults"] if e["severity"] == "halt"]


@pytest.mark.req("SR-13")
def test_halt_and_clear_are_fault_events_logged_and_recorded_at_their_sample(replay, tmp_path, caplog):
    from cortexlink.io.session_log import SessionReader

    bad_bin = 80
    runner = GraphRunner(_graph(replay, watchdog={"output_timeout_ms": 0}, recorder=True,
                                decoder={"inject": {"nan_at_bins": [bad_bin]}}), out_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="cortexlink.runtime.runner"):
        res = runner.run()
    sample_of = {m.payload.bin: m.sample for m in runner.by_name["intents"].node.kept}
    events = [(e["kind"], e["severity"], e["sample"]) for e in res["faults"] if e["kind"] == "decoder_nan"]
    want = [("decoder_nan", "halt", sample_of[bad_bin]), ("decoder_nan", "clear", sample_of[bad_bin + 1])]
    assert events == want
    # in the recording, as events at the same samples
    rec = SessionReader(res["nodes"]["recorder"]["summary"]["path"])
    got = [(e["fault_kind"], e["severity"], e["sample"]) for e in rec.events()
           if e["kind"] == "fault" and e["fault_kind"] == "decoder_nan"]
    assert got == want
    # and in the log: the raise as a warning, the clear as information
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if "decoder_nan" in r.getMessage()]
    assert [lv for lv, _ in logged] == [logging.WARNING, logging.INFO]
    assert "[halt]" in logged[0][1] and "[clear]" in logged[1][1]


def _fit_fails_graph():
    """A scheduled calibration without click intent, then a fit that must also fit a click decoder
    (it cannot), then a closed-loop block that would need the fitted decoder."""
    return {"name": "fit-fails", "bin_ms": 20, "clock": "fast", "seconds": 30,
            "watchdog": {"stall_ms": 5, "output_timeout_ms": 0},
            "nodes": {
                "participant": {"kind": "participant", "params": {"seed": 0}, "inputs": {"cursor": "cursor.state"}},
                "implant": {"kind": "sim_source", "params": {"seed": 0, "config": {"n_channels": 16}, "chunk_ms": 5},
                            "inputs": {"intent": "participant.intent"}},
                "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}}, "inputs": {"raw": "implant.raw"}},
                "decoder": {"kind": "decoder", "params": {"decoder": "kalman", "click": True},
                            "inputs": {"features": "dsp.features", "labels": "participant.intent",
                                       "control": "cursor.control"}},
                "cursor": {"kind": "cursor", "params": {"seed": 0, "decoder_kind": "kalman", "blocks": [
                    {"name": "calibration", "kind": "calibration", "task": "centre_out", "seconds": 1.5,
                     "task_params": {"click": False}},
                    {"name": "fit", "kind": "fit"},
                    {"name": "closed-loop", "kind": "closed_loop", "task": "centre_out", "seconds": 3,
                     "task_params": {"click": True}}]},
                    "inputs": {"intent": "decoder.intent", "participant": "participant.intent"}},
                "gates": {"kind": "sink", "params": {"keep": 100}, "inputs": {"data": "cursor.gate"}},
                "intents": {"kind": "sink", "params": {"keep": 100000}, "inputs": {"data": "decoder.intent"}},
                "states": {"kind": "sink", "params": {"keep": 100000}, "inputs": {"data": "cursor.state"}},
            }}


@pytest.mark.req("SR-31")
def test_a_failed_scheduled_fit_latches_a_halt_ends_the_run_and_no_decoder_output_drives_the_cursor():
    runner = GraphRunner(_fit_fails_graph())
    res = runner.run()
    f = res["failure"]
    assert f["kind"] == "fit_failed" and f["node"] == "decoder" and "no click intent" in f["message"]
    assert res["stop_reason"].startswith("fit_failed") and res["seconds"] < 30
    assert [(e["kind"], e["severity"]) for e in res["faults"] if e["kind"] == "fit_failed"] == [("fit_failed", "halt")]
    gates = [m.payload for m in runner.by_name["gates"].node.kept]
    assert gates[-1].halted and gates[-1].velocity == (0.0, 0.0) and gates[-1].click_suppressed
    assert not any(e["kind"] == "fit_failed" and e["severity"] == "clear" for e in res["faults"])   # latched
    # nothing half-fitted went live: no decoder version, no output marked to drive the cursor, and
    # every bin of the closed-loop block that followed (waiting for a decoder, then halted) held the
    # cursor still without a click
    assert res["nodes"]["decoder"]["summary"]["version"] == 0
    intents = [m.payload for m in runner.by_name["intents"].node.kept]
    assert intents and not any(i.ready for i in intents) and {i.version for i in intents} == {0}
    closed = [m.payload.to_dict() for m in runner.by_name["states"].node.kept
              if m.payload.to_dict()["block"] == "closed-loop"]
    assert closed and all(s["velocity"] == [0.0, 0.0] and not s["clicked"] for s in closed)
    assert len({tuple(s["xy"]) for s in closed}) == 1 and closed[-1]["halted"]
    assert [b["name"] for b in res["nodes"]["cursor"]["summary"]["blocks"]] == ["calibration", "fit"]
