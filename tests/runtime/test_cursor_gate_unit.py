"""Unit tests of the cursor node as the watchdog's gate and the E-STOP's effector
(:mod:`cortexlink.runtime.nodes.cursor`), driven bin by bin with hand-made decoder outputs.

A real :class:`CursorNode` on a real in-process bus, with a real watchdog; the test is the
runtime around it: it hands the node each bin's inbox, the health table and the clock, and reads
what the node published (``state``, ``gate``, ``bins``, ``control``, ``events``) and the fault
events it reported. No graph runs: each test takes milliseconds, so that mutation testing of
``cursor.py`` can run them for every mutant (docs/safety/requirements.yaml, ``safety_code``).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.core.messages import ParticipantIntent
from cortexlink.core.types import Intent
from cortexlink.runtime.bus import InProcessBus, Message
from cortexlink.runtime.node import NodeContext, check_params
from cortexlink.runtime.nodes.cursor import CursorNode

BIN_NS = 20_000_000
MS = 1_000_000


class Rig:
    """A cursor node with the runtime's side played by the test."""

    def __init__(self, params=None, *, operator=False, participant=True, bins=True, watchdog=None,
                 realtime=False, fail=True, stats_from_sample=0, deadline_ns=10**15, decoder_where=None,
                 name="cursor", decoder="decoder", bin_ms=20.0):
        nodes = {decoder: {"kind": "decoder", "inputs": {}, "where": decoder_where},
                 name: {"kind": "cursor", "inputs": {"intent": {"from": f"{decoder}.intent"}}}}
        if participant:
            nodes[name]["inputs"]["participant"] = {"from": "participant.intent"}
        if operator:
            nodes[name]["inputs"]["operator"] = {"from": "operator.commands"}
        if bins:
            nodes["trace"] = {"kind": "trace", "inputs": {"bins": {"from": f"{name}.bins"}}}
        self.graph = {"bin_ms": bin_ms, "nodes": nodes,
                      "watchdog": {"stall_ms": 5, "max_speed": 10, "output_timeout_ms": 0,
                                   "check_interval_ms": 2, **(watchdog or {})}}
        p = check_params(f"nodes.{name}.params", CursorNode.PARAMS,
                         {"effector": {"refractory_s": 0.0}, **(params or {})})
        CursorNode.validate_config(name, p, self.graph)
        self.bus = InProcessBus()
        self.faults: list[dict] = []
        self.stops: list[str] = []
        self.failures: list[dict] = []
        self.replies: list[dict] = []
        self.health: dict = {}
        self.now = 0
        self.ctx = NodeContext(bus=self.bus, graph=self.graph, realtime=realtime, now_ns=lambda: self.now,
                               fault=self._fault, request_stop=self.stops.append, health=lambda: self.health,
                               reply=self.replies.append, stats_from_sample=stats_from_sample,
                               deadline_ns=deadline_ns,
                               fail=(lambda kind, **kw: self.failures.append({"kind": kind, **kw})) if fail else None)
        self.node = CursorNode(name, p, self.ctx)
        self.subs = {port: self.bus.subscribe(f"{name}.{port}", f"test.{port}", maxlen=100000)
                     for port in CursorNode.OUTPUTS}
        if operator:
            self.node.subs["operator"] = self.bus.subscribe("operator.commands", f"{name}.operator")
        self.node.setup()
        self.seq = 0

    def _fault(self, kind, **kw):
        self.faults.append({"kind": kind, **kw})

    def out(self, port):
        """Payloads published on ``port`` since the last call."""
        return [m.payload for m in self.subs[port].drain()]

    def msgs(self, port):
        return self.subs[port].drain()

    def step(self, intent=None, *, ops=(), part=(), now=None, **kw):
        """One pass of the scheduler: ``intent``: a bin number (or an Intent) from the decoder."""
        inbox = {}
        if ops:
            inbox["operator"] = [Message("operator.commands", i, -1, 0, c, 0) for i, c in enumerate(ops)]
        if part:
            inbox["participant"] = [Message("participant.intent", 0, -1, 0, p, 0) for p in part]
        if intent is not None:
            it = intent if isinstance(intent, Intent) else make_intent(intent, **kw)
            self.seq += 1
            inbox["intent"] = [Message("decoder.intent", self.seq, kw.get("sample", it.bin * 20 + 19),
                                       kw.get("t_enter", 0), it, 0)]
        self.now = (it.bin + 1) * BIN_NS if now is None and intent is not None else (now if now is not None
                                                                                      else self.now + BIN_NS)
        self.node.step(inbox, self.now)

    def run(self, bins, **kw):
        states = []
        for g in bins:
            self.step(g, **kw)
            states += self.out("state")
        return states


def make_intent(g, *, velocity=(0.0, 0.0), click=False, proba=None, ready=True, features_valid=True, version=0,
                n_jobs=0, decode_us=7.0, **_):
    return Intent(g, velocity, click, proba, ready, features_valid, version, decode_us, n_jobs)


def _src(n):
    return {"source": {"state": "running", "n_out": n, "source": True, "critical": True}}


# -- free-running: the decoder drives the cursor; the gate holds it on every fault ---------------------

@pytest.mark.req("SR-01", "SR-07")
def test_free_running_the_decoder_drives_the_cursor_and_clicks():
    r = Rig()
    [s0] = r.out("state")                                       # published at setup: at rest, bin 0
    assert (s0.bin, s0.xy, s0.halted, s0.block, s0.done, s0.op) == (0, (0.0, 0.0), False, None, False, None)
    [s] = r.run([0], velocity=(0.5, -0.25), click=True, proba=0.9)
    assert s.bin == 1 and s.velocity == (0.5, -0.25) and s.clicked and not s.halted
    assert s.xy == pytest.approx((0.01, -0.005)) and s.t_s == pytest.approx(0.02)
    [s] = r.run([1], velocity=(0.5, -0.25))
    assert s.xy == pytest.approx((0.02, -0.01)) and not s.clicked
    assert r.out("gate") == [] and r.faults == []               # the gate is published when it changes
    assert r.node.summary()["n_updates"] == 2 and r.node.summary()["n_halted_bins"] == 0


@pytest.mark.req("SR-01", "SR-07", "SR-13")
def test_a_source_stall_holds_the_cursor_and_suppresses_clicks_until_it_resumes():
    r = Rig()
    r.out("state")
    r.health = _src(5)
    [s] = r.run([0], velocity=(1.0, 0.0), click=True)
    assert s.velocity == (1.0, 0.0) and s.clicked
    r.health = _src(5)                                          # no output for 20 ms > stall_ms
    [s] = r.run([1], velocity=(1.0, 0.0), click=True, proba=0.9)
    assert s.velocity == (0.0, 0.0) and not s.clicked and s.halted
    assert s.xy == pytest.approx((0.02, 0.0))                   # held where it was
    [g] = r.out("gate")
    assert g.halted and g.velocity == (0.0, 0.0) and g.click_suppressed
    assert [f["kind"] for f in g.faults] == ["source_stall"] and g.faults[0]["node"] == "source"
    [f] = r.faults
    assert (f["kind"], f["node"], f["severity"]) == ("source_stall", "source", "halt")
    assert f["sample"] == 19                                    # the last bin the gate had seen
    [s] = r.run([2], velocity=(1.0, 0.0), click=True)           # still stalled: held, gate unchanged
    assert s.halted and s.velocity == (0.0, 0.0) and not s.clicked and r.out("gate") == []
    r.health = _src(6)
    [s] = r.run([3], velocity=(1.0, 0.0), click=True)
    assert not s.halted and s.velocity == (1.0, 0.0) and s.clicked
    [g] = r.out("gate")
    assert not g.halted and g.velocity is None and not g.click_suppressed and g.faults == ()
    assert [(f["kind"], f["severity"]) for f in r.faults] == [("source_stall", "halt"), ("source_stall", "clear")]
    sm = r.node.summary()
    assert sm["n_halted_bins"] == 2 and sm["faults_raised"] == 1 and sm["n_updates"] == 4


@pytest.mark.req("SR-02", "SR-07", "SR-13")
@pytest.mark.parametrize("velocity, proba, kind", [
    ((math.nan, 0.0), 0.9, "decoder_nan"), ((0.0, math.inf), None, "decoder_nan"),
    ((20.0, 0.0), 0.9, "decoder_out_of_range"), ((0.0, 0.0), 1.5, "decoder_out_of_range")])
def test_a_bad_decoder_output_gives_zero_velocity_and_no_click_in_that_very_bin(velocity, proba, kind):
    r = Rig()
    r.out("state")
    r.run([0], velocity=(0.3, 0.3))
    [s] = r.run([1], velocity=velocity, click=True, proba=proba, sample=1234)
    assert s.velocity == (0.0, 0.0) and not s.clicked and s.halted and s.xy == pytest.approx((0.006, 0.006))
    [g] = r.out("gate")
    assert g.halted and g.velocity == (0.0, 0.0) and g.faults[0]["kind"] == kind
    assert [(f["kind"], f["node"], f["severity"], f["sample"]) for f in r.faults] == [(kind, "decoder", "halt", 1234)]
    [s] = r.run([2], velocity=(0.3, 0.0), click=True, proba=0.9)     # the next valid output drives again
    assert not s.halted and s.velocity == (0.3, 0.0) and s.clicked
    assert [g.halted for g in r.out("gate")] == [False]
    assert r.node.n_halted_bins == 1


@pytest.mark.req("SR-04", "SR-07")
def test_a_node_down_holds_the_cursor_from_the_first_check():
    r = Rig()
    r.out("state")
    r.health = {"decoder": {"state": "failed", "error": "ValueError: x"}}
    [s] = r.run([0], velocity=(0.3, 0.0), click=True)
    assert s.halted and s.velocity == (0.0, 0.0) and not s.clicked
    [g] = r.out("gate")
    assert g.halted and g.faults[0]["kind"] == "node_down" and g.faults[0]["node"] == "decoder"
    r.health = {"decoder": {"state": "running"}}
    [s] = r.run([1], velocity=(0.3, 0.0))
    assert not s.halted and s.velocity == (0.3, 0.0)


def test_a_decoder_output_that_is_not_ready_does_not_move_the_cursor_and_is_counted():
    r = Rig()
    r.out("state")
    [s] = r.run([0], velocity=(0.3, 0.0), click=True, ready=False)
    assert s.velocity == (0.0, 0.0) and not s.clicked and not s.halted     # no fault: nothing to halt for
    assert r.faults == [] and r.out("gate") == []
    sm = r.node.summary()
    assert sm["n_not_ready"] == 1 and sm["n_halted_bins"] == 1 and sm["n_updates"] == 1


def test_free_running_waits_for_the_feature_extractor():
    r = Rig()
    r.out("state")
    r.run([0, 1], velocity=(0.3, 0.0), features_valid=False)
    assert r.node.summary()["n_updates"] == 0 and r.node.t_s == 0.0
    assert r.node.last_bin == 1 and r.node.last_sample == 39


# -- the watchdog's checks: cadence, health, gate re-publication ---------------------------------

def test_the_watchdog_is_checked_at_most_every_check_interval_ms():
    r = Rig(watchdog={"check_interval_ms": 10})
    r.node.step({}, 0)
    r.node.step({}, 9_999_999)
    r.node.step({}, 10_000_000)
    r.node.step({}, 19_999_999)
    assert r.node.watchdog.n_checks == 2
    r.node.step({}, 20_000_000)
    r.node.step({}, 100_000_000)
    assert r.node.watchdog.n_checks == 4


@pytest.mark.req("SR-01")
def test_a_stall_is_seen_between_bins_by_the_periodic_check():
    r = Rig()
    r.out("state")
    r.health = _src(1)
    r.node.step({}, 0)
    r.node.step({}, 5 * MS)                                     # checked: exactly stall_ms, not yet
    r.node.step({}, 6 * MS)                                     # not checked (every 2 ms)
    assert r.out("gate") == [] and r.node.watchdog.n_checks == 2
    r.node.step({}, 7 * MS)
    [g] = r.out("gate")
    assert g.halted and g.faults[0]["kind"] == "source_stall" and r.faults[0]["sample"] == -1


@pytest.mark.req("SR-04")
def test_after_a_restart_the_gate_is_published_again():
    r = Rig()
    r.out("state")
    r.health = {"decoder": {"state": "failed"}}
    r.run([0])
    assert [g.halted for g in r.out("gate")] == [True]
    xy_before = r.node.effector.xy
    r.node.setup()                                              # the supervisor restarts the node
    assert r.out("state") == []                                 # the schedule and the cursor are kept
    r.run([1])
    assert [g.halted for g in r.out("gate")] == [True]          # the new subscriber learns the state
    assert np.array_equal(r.node.effector.xy, xy_before) and r.node.watchdog.n_raised == 1


# -- the schedule: warm-up, blocks, fits ------------------------------------------------------------

SCHEDULE = [
    {"kind": "calibration", "task": "centre_out", "seconds": 0.1, "name": "cal",
     "task_params": {"return_to_centre": False}},                 # the first target is away from the start
    {"kind": "fit", "name": "fit1"},
    {"kind": "closed_loop", "task": "centre_out", "seconds": 0.06, "name": "cl"},
    {"kind": "refit", "name": "refit1"},
    {"kind": "evaluation", "task": "webgrid", "seconds": 0.04, "name": "ev"},
]


def _sched(**kw):
    return Rig({"blocks": [dict(b) for b in SCHEDULE], "seed": 3, **kw.pop("params", {})}, **kw)


@pytest.mark.req("SR-07")
def test_the_schedule_runs_warm_up_calibration_fit_closed_loop_refit_evaluation():
    r = _sched()
    [s0] = r.out("state")
    assert s0.block is None and not s0.begin
    # warm-up: the extractor calibrates; the cursor rests
    states = r.run([0, 1], features_valid=False)
    assert [s.block for s in states] == [None, None] and r.out("control") == []
    assert [s.t_s for s in states] == pytest.approx([0.02, 0.04])
    [s] = r.run([2])                                             # the first valid bin: the block begins at bin 3
    assert s.begin and s.block == "cal" and s.mode == "open" and s.bin == 3 and s.target is not None
    [c] = r.out("control")
    assert (c.cmd, c.name, c.kind, c.mode, c.bin) == ("begin", "cal", "calibration", "open", 3)
    [e] = r.out("events")
    assert e == {"kind": "block_start", "name": "cal", "block_kind": "calibration", "mode": "open",
                 "task": "centre_out", "bin": 3, "n_max": 5}
    # calibration: the autopilot drives (5 bins), then the fit, then the closed-loop block at once (fast clock)
    states = r.run(range(3, 8), velocity=(9.0, 9.0), click=True)        # the decoder's output is not used
    assert [s.block for s in states] == ["cal"] * 4 + ["cl"]
    assert states[-1].begin and states[-1].mode == "closed" and not any(s.begin for s in states[:-1])
    assert all(np.hypot(*s.velocity) > 0 for s in states[:-1]) and all(s.velocity != (9.0, 9.0) for s in states)
    assert states[-1].xy == (0.0, 0.0) and states[-1].velocity == (0.0, 0.0)      # each block starts at rest
    ctl = r.out("control")
    assert [(c.cmd, c.name) for c in ctl] == [("end", "cal"), ("fit", "fit1"), ("begin", "cl")]
    fit = ctl[1]
    assert len(fit.blocks) == 1 and fit.blocks[0]["name"] == "cal"
    assert list(fit.blocks[0]["bins"]) == [3, 4, 5, 6, 7] and fit.blocks[0]["dt_s"] == 0.02
    assert fit.blocks[0]["cursor_xy"].shape == (5, 2) and fit.blocks[0]["cursor_velocity"].shape == (5, 2)
    assert fit.blocks[0]["target_xy"].shape == (5, 2)
    assert np.allclose(fit.blocks[0]["cursor_velocity"][0], states[0].velocity)
    assert ctl[2].bin == 8 and ctl[2].kind == "closed_loop"
    ev = r.out("events")
    end = [e for e in ev if e["kind"] == "block_end"][0]
    assert (end["name"], end["block_kind"], end["n_bins"], end["reason"], end["mode"]) == ("cal", "calibration", 5,
                                                                                           "done", "open")
    assert end["seconds"] == pytest.approx(0.1) and end["n_halted_bins"] == 0 and "metrics" in end
    assert r.node.n_calibration_blocks == 1 and len(r.node.calibration_kinematics) == 1
    rows = r.out("bins")
    assert [(b.block, b.n, b.bin) for b in rows] == [("cal", i, 3 + i) for i in range(5)]
    # closed loop: the decoder drives; 3 bins; then the refit and the evaluation block
    states = r.run(range(8, 11), velocity=(0.5, 0.0), click=False, proba=0.1)
    assert [s.velocity for s in states] == [(0.5, 0.0)] * 2 + [states[-1].velocity]
    assert states[-1].block == "ev" and states[-1].begin and states[-1].mode == "closed"
    ctl = r.out("control")
    assert [(c.cmd, c.name) for c in ctl] == [("end", "cl"), ("refit", "refit1"), ("begin", "ev")]
    refit = ctl[1]
    assert [b["name"] for b in refit.blocks] == ["cl"] and list(refit.blocks[0]["bins"]) == [8, 9, 10]
    assert refit.blocks[0]["on_target"].dtype == bool and refit.blocks[0]["dt_s"] == 0.02
    rows = r.out("bins")
    assert [(b.block, b.bin) for b in rows] == [("cl", 8), ("cl", 9), ("cl", 10)]
    assert rows[0].decoded_velocity == (0.5, 0.0) and rows[0].click_proba == 0.1 and rows[0].decode_latency_us == 7.0
    # the evaluation ends the schedule: the run is asked to stop
    states = r.run(range(11, 13), velocity=(0.1, 0.0))
    assert [(b.block, b.bin) for b in r.out("bins")] == [("ev", 11), ("ev", 12)]
    assert r.stops == ["cursor: schedule finished"] and r.node.finished and states[-1].done
    assert states[-1].block is None
    assert [res["name"] for res in r.node.results] == ["cal", "fit1", "cl", "refit1", "ev"]
    assert [t["name"] for t in r.node.traces] == ["cal", "cl", "ev"]
    assert r.node._closed_since_fit == []                        # an evaluation is not kept for ReFIT
    # after the schedule the cursor rests
    [s] = r.run([13], velocity=(0.5, 0.0))
    assert s.xy == states[-1].xy and s.block is None and r.out("bins") == []
    sm = r.node.summary()
    assert sm["finished"] and [b["name"] for b in sm["blocks"]] == ["cal", "fit1", "cl", "refit1", "ev"]
    assert sm["n_updates"] == 10 and sm["n_wait_bins"] == 0


ESTOP_SCHEDULE = [
    {"kind": "calibration", "task": "centre_out", "seconds": 0.2, "name": "cal",
     "task_params": {"return_to_centre": False}},
    {"kind": "fit", "name": "fit1"},
    {"kind": "closed_loop", "task": "centre_out", "seconds": 0.2, "name": "cl"},
]


@pytest.mark.req("SR-10", "SR-07")
def test_estop_in_a_schedule_holds_from_the_next_bin_until_release():
    r = Rig({"blocks": ESTOP_SCHEDULE}, operator=True)
    assert not r.node.interactive
    r.run([0])                                                     # valid features: calibration from bin 1
    states = r.run([1, 2, 3])                                      # the autopilot moves
    assert np.hypot(*states[-1].velocity) > 0
    r.step(4, ops=[{"cmd": "estop", "id": "e1"}])                 # read before the bin's intent
    [s] = r.out("state")
    assert s.halted and s.velocity == (0.0, 0.0) and not s.clicked and s.xy == states[-1].xy
    assert r.node.estop_bin == 4 and r.node.estop_requested_after_bin == 3
    assert r.replies[-1]["ok"] and r.replies[-1]["result"] == {"estop": True, "received_after_bin": 3}
    held = s.xy
    states = r.run([5, 6], part=[ParticipantIntent(5, click=1.0), ParticipantIntent(6, click=1.0)])
    assert all(s.halted and s.xy == held and not s.clicked for s in states)
    assert r.out("gate") == []                                    # the E-STOP is not a watchdog fault
    rows = r.out("bins")
    assert [(b.bin, b.halted, b.clicks) for b in rows] == [(1, False, False), (2, False, False), (3, False, False),
                                                          (4, True, False), (5, True, False), (6, True, False)]
    assert all(b.cursor_velocity == (0.0, 0.0) for b in rows[3:])
    r.step(7, ops=[{"cmd": "release"}])
    [s] = r.out("state")
    assert not s.halted and np.hypot(*s.velocity) > 0 and s.xy != held
    assert r.replies[-1]["result"] == {"estop": False, "was_engaged": True}
    assert r.node.block.n_halted == 3 and r.node.n_halted_bins == 3


@pytest.mark.req("SR-10", "SR-07")
def test_estop_in_closed_loop_holds_a_valid_decoder_output_and_its_click():
    r = Rig({"blocks": ESTOP_SCHEDULE}, operator=True)
    r.run(range(0, 13))                                           # warm-up bin, calibration, into closed loop
    assert r.node.block.name == "cl"
    r.out("bins")
    r.step(13, ops=[{"cmd": "estop"}], velocity=(0.5, 0.0), click=True, proba=0.9)
    [s] = r.out("state")
    assert s.halted and s.velocity == (0.0, 0.0) and not s.clicked
    [row] = r.out("bins")
    assert row.halted and row.decoded_velocity == (0.5, 0.0) and not row.clicks and row.click_proba == 0.9
    assert r.node.n_halted_bins == 1 and not r.node.watchdog.halted and r.out("gate") == []   # no watchdog fault
    r.step(14, ops=[{"cmd": "release"}], velocity=(0.5, 0.0), click=True, proba=0.9)
    [s] = r.out("state")
    assert not s.halted and s.velocity == (0.5, 0.0) and s.clicked


def test_a_schedule_that_ends_with_a_fit_finishes_after_it():
    r = Rig({"blocks": [{"kind": "calibration", "task": "webgrid", "seconds": 0.04, "name": "c"},
                        {"kind": "fit", "name": "f"}]})
    r.out("state")
    states = r.run([0, 1, 2])
    assert [c.cmd for c in r.out("control")] == ["begin", "end", "fit"]
    assert r.stops == ["cursor: schedule finished"] and states[-1].done and r.node.block is None


def test_stop_when_done_false_keeps_the_run_going():
    r = Rig({"blocks": [{"kind": "calibration", "task": "webgrid", "seconds": 0.04, "name": "c"}],
             "stop_when_done": False})
    r.run([0, 1, 2, 3])
    assert r.node.finished and r.stops == []


# -- realtime: a block after a fit waits for the decoder's new version --------------------------------

def test_realtime_a_block_after_a_fit_waits_for_the_new_decoder_version():
    r = Rig({"blocks": [dict(b) for b in ESTOP_SCHEDULE[:1]] + [
        {"kind": "fit", "name": "fit1"}, {"kind": "closed_loop", "task": "webgrid", "seconds": 0.04, "name": "cl"}]},
        realtime=True)
    r.out("state")
    r.run(range(0, 11), version=0)                              # warm-up + 10 calibration bins
    assert [c.cmd for c in r.out("control")] == ["begin", "end", "fit"] and len(r.out("bins")) == 10
    assert r.node.block is None and r.node._waiting()
    states = r.run([11, 12], velocity=(0.5, 0.0), version=0)     # waiting: the cursor rests, bins are counted
    assert [s.block for s in states] == [None, None] and not any(s.begin for s in states)
    assert all(s.xy == states[0].xy for s in states) and r.out("bins") == []
    assert r.node.n_wait_bins == 2 and r.out("control") == []
    assert states[1].t_s == pytest.approx(13 * 0.02)
    [s] = r.run([13], velocity=(0.5, 0.0), version=1)           # the new fit arrived: the block begins next bin
    assert s.begin and s.block == "cl" and s.bin == 14
    [c] = r.out("control")
    assert (c.cmd, c.name, c.bin) == ("begin", "cl", 14)
    assert not r.node._waiting() and r.node.n_wait_bins == 3
    states = r.run([14, 15], velocity=(0.5, 0.0), version=1)
    assert r.stops == ["cursor: schedule finished"] and states[-1].done


def test_realtime_a_schedule_that_ends_with_a_fit_does_not_wait_for_it():
    r = Rig({"blocks": [{"kind": "calibration", "task": "webgrid", "seconds": 0.04, "name": "c"},
                        {"kind": "fit", "name": "f"}]}, realtime=True)
    r.run([0, 1, 2])
    assert not r.node._waiting() and r.stops == ["cursor: schedule finished"] and r.node.finished


def test_realtime_fits_before_the_first_block_are_awaited_together():
    r = Rig({"blocks": [{"kind": "calibration", "task": "webgrid", "seconds": 0.02, "name": "c"},
                        {"kind": "fit", "name": "f"}, {"kind": "closed_loop", "task": "webgrid", "seconds": 0.02,
                                                        "name": "cl"},
                        {"kind": "refit", "name": "r1"}, {"kind": "refit", "name": "r2"},
                        {"kind": "evaluation", "task": "webgrid", "seconds": 0.02, "name": "ev"}]}, realtime=True)
    r.run([0, 1])                                                # warm-up, calibration (1 bin), fit: wait
    r.run([2], version=1)                                        # fit 1 arrived: cl begins at 3
    r.run([3], version=1)                                        # cl's only bin, then two refits
    assert r.node._await_version == 3
    r.run([4], version=2)
    assert r.node._waiting()
    r.run([5], version=3)
    assert r.node.block.name == "ev"


# -- the perfect decoder: the participant's intent drives ---------------------------------------------

@pytest.mark.req("SR-07")
def test_perfect_decoder_the_first_block_begins_at_once_and_follows_the_intent():
    r = Rig({"decoder_kind": "perfect", "blocks": [
        {"kind": "calibration", "task": "centre_out", "seconds": 0.04, "name": "c"},
        {"kind": "fit", "name": "f"},
        {"kind": "closed_loop", "task": "centre_out", "seconds": 0.1, "name": "cl"},
        {"kind": "fit", "name": "f2"}]})
    [s0] = r.out("state")
    assert s0.begin and s0.block == "c" and s0.mode == "perfect" and not r.node.warm
    [c] = r.out("control")
    assert (c.cmd, c.bin, c.mode) == ("begin", 0, "perfect")
    part = [ParticipantIntent(0, velocity=(0.5, 0.0), click=0.0), ParticipantIntent(1, velocity=(0.5, 0.0), click=0.9)]
    states = r.run([0, 1], part=part, velocity=(-3.0, -3.0), features_valid=False)
    assert [s.velocity for s in states[:1]] == [(0.5, 0.0)] and not states[0].clicked
    assert states[-1].block == "cl" and states[-1].begin              # the fit is skipped: nothing to fit
    assert r.node.results[1] == {"name": "f", "kind": "fit", "note": "perfect decoder: nothing to fit"}
    assert [c.cmd for c in r.out("control")] == ["end", "begin"]
    rows = r.out("bins")
    assert rows[1].clicks and rows[1].click_intent == 0.9 and rows[1].intended_velocity == (0.5, 0.0)
    assert math.isnan(rows[0].decoded_velocity[0]) and math.isnan(rows[0].click_proba)
    assert math.isnan(rows[0].decode_latency_us) and math.isnan(rows[0].loop_latency_us)
    # a bin without the participant's intent: nothing to follow, the cursor is held and the bin counted
    [s] = r.run([2])
    assert s.velocity == (0.0, 0.0) and r.node.n_halted_bins == 1
    [row] = r.out("bins")
    assert row.halted is False and math.isnan(row.click_intent) and math.isnan(row.intended_velocity[0])
    # the click fires where the intent rises through 0.5, once
    states = r.run([3, 4, 5], part=[ParticipantIntent(g, click=0.9) for g in (3, 4, 5)])
    assert [s.clicked for s in states] == [True, False, False]
    r.run([6, 7])
    assert r.stops == ["cursor: schedule finished"]
    assert r.node.results[-1] == {"name": "f2", "kind": "fit", "note": "perfect decoder: nothing to fit"}
    assert r.node._closed_since_fit == []                        # perfect blocks are no ReFIT data


# -- a scheduled fit that failed ends the run (SR-31) -------------------------------------------------

@pytest.mark.req("SR-31", "SR-13")
def test_a_failed_scheduled_fit_latches_a_halt_and_ends_the_run():
    r = _sched()
    r.run(range(0, 6))
    r.out("gate")
    r.bus.set_info("decoder/job", {"ok": False, "job": "fit", "error": "LinAlgError: singular"})
    [s] = r.run([6], velocity=(0.5, 0.0), n_jobs=1, sample=777)
    [g] = r.out("gate")
    assert g.halted and g.faults[0]["kind"] == "fit_failed" and g.faults[0]["node"] == "decoder"
    [f] = r.faults
    assert (f["kind"], f["node"], f["severity"], f["sample"]) == ("fit_failed", "decoder", "halt", 777)
    assert f["error"] == "LinAlgError: singular"
    assert f["message"] == "the scheduled fit of decoder decoder failed: LinAlgError: singular"
    assert r.failures == [{"kind": "fit_failed", "node": "decoder", "message": f["message"],
                           "error": "LinAlgError: singular"}]
    assert s.halted and s.velocity == (0.0, 0.0)
    states = r.run([7, 8], velocity=(0.5, 0.0), n_jobs=1)         # latched: nothing releases it
    assert all(s.halted and s.velocity == (0.0, 0.0) for s in states)


def test_a_failed_refit_is_named_and_without_fail_hook_the_run_is_asked_to_stop():
    r = _sched(fail=False)
    r.bus.set_info("decoder/job", {"ok": False, "job": "refit", "error": "boom"})
    r.run([0], n_jobs=2)
    assert r.stops == ["fit_failed: the scheduled refit of decoder decoder failed: boom"]
    assert r.node._jobs_seen == 2
    r.run([1], n_jobs=2)                                          # seen: not again
    assert len(r.faults) == 1


@pytest.mark.parametrize("info", [{"ok": True, "job": "fit"}, {"ok": False, "operator": True, "error": "x"}, None,
                                  {}])
def test_a_scheduled_job_that_succeeded_or_an_operators_job_ends_nothing(info):
    r = _sched()
    if info is not None:
        r.bus.set_info("decoder/job", info)
    r.run([0, 1], n_jobs=1)
    assert r.faults == [] and r.failures == [] and r.stops == [] and not r.node.watchdog.halted
    assert r.node._jobs_seen == 1


def test_a_missing_job_name_reads_fit():
    r = _sched()
    r.bus.set_info("decoder/job", {"ok": False})
    r.run([0], n_jobs=1)
    assert r.faults[0]["message"] == "the scheduled fit of decoder decoder failed: None"


# -- latency and the age of an output ----------------------------------------------------------------

def test_loop_latency_is_counted_from_stats_from_sample_and_missed_deadlines_are_counted():
    r = Rig(stats_from_sample=30, deadline_ns=10**9)
    old = time.monotonic_ns() - 5 * 10**9                          # 5 s ago: past the 1 s deadline
    r.run([0], t_enter=old)                                        # sample 19: before stats_from_sample
    assert r.node.latency.n == 0 and r.node.n_missed == 0
    r.run([1], t_enter=old)                                        # sample 39
    assert r.node.latency.n == 1 and r.node.n_missed == 1 and r.node.latency.max_ns >= 5 * 10**9
    fresh = time.monotonic_ns() + 10**12                           # not late
    r.run([2], t_enter=fresh)
    assert r.node.latency.n == 2 and r.node.n_missed == 1
    r.run([3], t_enter=0)                                          # unknown entry time: not measured
    assert r.node.latency.n == 2


def test_block_latency_and_loop_latency_of_the_rows():
    r = Rig({"blocks": ESTOP_SCHEDULE}, deadline_ns=10**15)
    r.run([0])
    t = time.monotonic_ns() - 10**9
    r.run([1], t_enter=t)
    [row] = r.out("bins")
    assert row.loop_latency_us >= 1e6 and r.node.block.latency.n == 1
    r.run([2])
    [row] = r.out("bins")
    assert math.isnan(row.loop_latency_us) and r.node.block.latency.n == 1


@pytest.mark.req("SR-03", "SR-05")
def test_realtime_a_stale_output_holds_the_cursor_and_a_fresh_one_releases_it():
    r = Rig(realtime=True, watchdog={"output_timeout_ms": 100})
    r.out("state")
    now = time.monotonic_ns()
    [s] = r.run([0], velocity=(0.5, 0.0), t_enter=now + 10**12)   # entered "in the future": fresh
    assert s.velocity == (0.5, 0.0)
    [s] = r.run([1], velocity=(0.5, 0.0), click=True, t_enter=now - 10**9)     # 1 s old
    assert s.halted and s.velocity == (0.0, 0.0) and not s.clicked
    [f] = r.faults
    assert f["kind"] == "pipeline_stall" and f["age_ms"] >= 1000.0
    [s] = r.run([2], velocity=(0.5, 0.0), t_enter=time.monotonic_ns() + 10**12)
    assert not s.halted and s.velocity == (0.5, 0.0)


def test_the_age_is_not_checked_in_a_fast_run_or_with_an_external_node():
    r = Rig(watchdog={"output_timeout_ms": 100})
    r.out("state")
    [s] = r.run([0], velocity=(0.5, 0.0), t_enter=1)
    assert s.velocity == (0.5, 0.0) and r.faults == []
    r2 = Rig(realtime=True, watchdog={"output_timeout_ms": 100}, decoder_where="external")
    r2.out("state")
    [s] = r2.run([0], velocity=(0.5, 0.0), t_enter=1)
    assert s.velocity == (0.5, 0.0) and r2.faults == []


# -- housekeeping ---------------------------------------------------------------------------------

def test_participant_intents_without_a_bin_are_pruned_to_the_newest():
    r = Rig()
    r.step(None, part=[ParticipantIntent(g) for g in range(4097)], now=BIN_NS)
    assert len(r.node._part) == 1024 and min(r.node._part) == 4097 - 1024
    r.step(None, part=[ParticipantIntent(5000)], now=2 * BIN_NS)
    assert len(r.node._part) == 1025


def test_no_bins_rows_without_a_consumer():
    r = Rig({"blocks": ESTOP_SCHEDULE}, bins=False)
    r.run([0, 1, 2])
    assert r.out("bins") == [] and r.node.block.n == 2


def test_summary():
    r = Rig()
    r.health = {"decoder": {"state": "failed"}}
    r.run([0], ready=False)
    assert r.node.summary() == {"blocks": [], "n_updates": 1, "n_halted_bins": 1, "n_not_ready": 1,
                                "n_wait_bins": 0, "loop_latency_ms": r.node.latency.summary(),
                                "faults_raised": 1, "finished": False}


# -- interactive mode: the operator's blocks, mouse mode, E-STOP -------------------------------------

def _interactive(**kw):
    r = Rig({"effector": {"refractory_s": 0.0}, **kw.pop("params", {})}, operator=True, **kw)
    assert r.node.interactive and r.node.warm
    r.out("state")
    return r


def test_interactive_the_cursor_rests_until_the_operator_begins_a_block():
    r = _interactive(watchdog={"output_timeout_ms": 100})
    [s] = r.run([0], features_valid=False)
    assert r.node.warm and s.op["state"] == "starting"
    [s] = r.run([1], velocity=(0.5, 0.0))                          # warm-up over: idle, no block begins
    assert not r.node.warm and s.block is None and not s.begin and r.stops == [] and s.op["state"] == "idle"
    states = r.run([2, 3], velocity=(0.5, 0.0), proba=0.5)
    assert all(s.xy == (0.0, 0.0) and s.op["decoded"] is None and s.op["click_proba"] is None for s in states)
    assert states[-1].t_s == pytest.approx(4 * 0.02)
    # between blocks the pipeline's outputs count as outputs: no pipeline_stall
    r.node.step({}, 3 * BIN_NS + 100 * MS + 1)
    assert r.faults == [] and r.node.n_updates == 0


@pytest.mark.req("SR-10", "SR-07")
def test_interactive_calibration_block_estop_and_stop():
    r = _interactive(watchdog={"output_timeout_ms": 100})
    r.run([0])
    r.step(1, ops=[{"cmd": "calibrate", "task": "webgrid", "seconds": 1.0, "id": "c1"}])
    assert r.replies[-1]["ok"] and r.replies[-1]["result"] == {"block": "01-calibration", "seconds": 1.0}
    [s] = r.out("state")
    assert s.block == "01-calibration" and s.mode == "open" and s.op["state"] == "calibrating"
    assert s.op["decoded"] is None and s.op["click_proba"] is None          # open loop: nothing decoded shown
    [row] = r.out("bins")
    assert row.bin == 1 and row.n == 0
    states = r.run([2, 3])
    assert all(np.hypot(*s.velocity) > 0 for s in states)
    # open loop: the decoder's outputs are not used, but they show the pipeline runs
    r.node.step({}, 4 * BIN_NS + 100 * MS - 1)
    assert r.faults == []
    r.step(4, ops=[{"cmd": "estop"}])
    [s] = r.out("state")
    assert s.halted and s.velocity == (0.0, 0.0) and s.op["estop"] and s.op["estop_bin"] == 4
    assert s.op["state"] == "calibrating"                                     # the block runs on
    r.step(5, ops=[{"cmd": "release"}, {"cmd": "stop"}])
    [s] = r.out("state")
    assert s.block is None and not s.halted
    info = r.replies[-1]["result"]["stopped"]
    assert info["name"] == "01-calibration" and info["n_bins"] == 4 and info["reason"] == "operator"
    end = [e for e in r.out("events") if e["kind"] == "block_end"][0]
    assert end["n_halted_bins"] == 1 and end["reason"] == "operator"
    assert r.node.n_calibration_blocks == 1 and r.node.last_block["name"] == "01-calibration"


def test_interactive_a_block_that_runs_out_ends_and_nothing_follows():
    r = _interactive()
    r.run([0])
    r.step(1, ops=[{"cmd": "calibrate", "seconds": 0.04}])
    r.run([2, 3])
    assert r.node.block is None and r.stops == [] and not r.node.finished
    assert [e["kind"] for e in r.out("events") if e["kind"] != "task"] == ["block_start", "block_end"]
    assert r.node.results[-1]["n_bins"] == 2 and r.node.results[-1]["reason"] == "done"


def test_interactive_a_block_stopped_before_its_first_bin_has_its_metrics():
    r = _interactive()
    r.run([0])
    r.step(None, ops=[{"cmd": "calibrate", "seconds": 1.0}, {"cmd": "stop"}])
    info = r.replies[-1]["result"]["stopped"]
    assert info["n_bins"] == 0 and info["metrics"] is not None
    assert r.node.n_calibration_blocks == 0 and r.node.calibration_kinematics == []


@pytest.mark.req("SR-07")
def test_interactive_closed_loop_shows_the_decoded_output_and_the_gate_holds_it():
    r = _interactive()
    r.run([0])
    r.node._last_version = 1                                         # a fitted decoder
    r.step(1, ops=[{"cmd": "start", "task": "webgrid", "seconds": 1.0}], velocity=(0.5, 0.0), proba=0.25,
           version=1)
    assert r.replies[-1]["result"]["mode"] == "closed"
    [s] = r.out("state")
    assert s.velocity == (0.5, 0.0) and s.op["decoded"] == [0.5, 0.0] and s.op["click_proba"] == 0.25
    assert s.op["state"] == "closed_loop"
    [s] = r.run([2], velocity=(math.nan, 0.0), proba=0.25, version=1)
    assert s.halted and s.velocity == (0.0, 0.0) and s.op["decoded"] is None
    [s] = r.run([3], velocity=(0.5, 0.0), proba=None, click=True, version=1)
    assert not s.halted and s.clicked and s.op["clicked"] and s.op["click_proba"] is None
    # closed loop: the decoder's outputs drive and are checked, no output for 100 ms is a stall
    r.step(None, ops=[{"cmd": "stop"}])
    assert len(r.node._closed_since_fit) == 1 and r.node._closed_since_fit[0]["name"] == "01-webgrid"
    assert list(r.node._closed_since_fit[0]["bins"]) == [1, 2, 3]


@pytest.mark.req("SR-07", "SR-10")
def test_mouse_mode_drives_the_cursor_its_click_is_held_by_the_estop_and_the_block_is_not_kept():
    r = _interactive()
    r.run([0])
    r.node._last_version = 1
    r.step(1, ops=[{"cmd": "mouse", "enabled": True}, {"cmd": "start", "task": "webgrid", "seconds": 1.0},
                   {"cmd": "mouse_move", "x": 0.5, "y": 0.0}], velocity=(math.nan, 0.0), version=1)
    [s] = r.out("state")
    assert s.velocity[0] > 0 and not s.halted and r.faults == []     # the decoder's NaN is not used
    assert s.op["decoded"] is None
    r.step(2, ops=[{"cmd": "estop"}, {"cmd": "mouse_click"}], version=1)
    [s] = r.out("state")
    assert s.halted and not s.clicked and s.velocity == (0.0, 0.0)
    r.step(3, ops=[{"cmd": "release"}, {"cmd": "mouse_click"}], version=1)
    [s] = r.out("state")
    assert s.clicked and not s.halted
    assert r.node.block.n_mouse == 3
    r.step(None, ops=[{"cmd": "stop"}])
    assert r.node.results[-1]["note"] == "mouse mode was used: not kept for ReFIT"
    assert r.node.last_block["note"] == "mouse mode was used: not kept for ReFIT"
    assert r.node._closed_since_fit == []


def test_an_open_loop_task_block_under_the_mouse_before_a_fit_is_not_kept_for_refit():
    r = _interactive()
    r.run([0])
    r.step(1, ops=[{"cmd": "mouse", "enabled": True}, {"cmd": "start", "task": "webgrid", "seconds": 1.0}])
    assert r.node.block.mode == "open"
    r.step(2, ops=[{"cmd": "mouse", "enabled": False}])
    r.step(3, ops=[{"cmd": "stop"}])
    assert r.node._closed_since_fit == [] and "note" in r.node.results[-1]


def test_an_empty_closed_loop_block_is_not_kept_for_refit():
    r = _interactive()
    r.run([0])
    r.node._last_version = 1
    r.step(None, ops=[{"cmd": "start", "task": "webgrid", "seconds": 1.0}, {"cmd": "stop"}])
    assert r.node._closed_since_fit == [] and "note" not in r.node.results[-1]
    assert "note" not in r.node.last_block


def test_schedule_mode_refuses_the_operators_block_commands():
    r = _sched(operator=True)
    r.step(0, ops=[{"cmd": "calibrate"}])
    assert not r.replies[-1]["ok"] and r.replies[-1]["status"] == 409
    assert r.node.block.name == "cal"


# -- configuration ------------------------------------------------------------------------------------

def _validate(params, *, participant=True):
    graph = {"bin_ms": 20.0, "nodes": {"cursor": {"inputs": {"intent": {"from": "decoder.intent"}}}}}
    if participant:
        graph["nodes"]["cursor"]["inputs"]["participant"] = {"from": "participant.intent"}
    p = check_params("nodes.cursor.params", CursorNode.PARAMS, params)
    CursorNode.validate_config("cursor", p, graph)
    return p


@pytest.mark.parametrize("params, match", [
    ({"effector": {"gainz": 1}}, r"^nodes\.cursor\.params\.effector has unknown key"),
    ({"effector": {"gain": 0}}, r"^nodes\.cursor\.params\.effector is invalid: gain"),
    ({"effector": {"gain": "x"}}, r"^nodes\.cursor\.params\.effector is invalid"),
    ({"effector": {"dwell_s": 0.001}}, r"^nodes\.cursor\.params\.effector is invalid: dwell_s"),
    ({"block_defaults": {"speech": {}}}, r"^nodes\.cursor\.params\.block_defaults has unknown key"),
    ({"block_defaults": {"webgrid": 3}}, r"^nodes\.cursor\.params\.block_defaults\.webgrid must be a mapping; got 3"),
    ({"block_defaults": {"webgrid": {"task": "x"}}},
     r"^nodes\.cursor\.params\.block_defaults\.webgrid has unknown key"),
    ({"block_defaults": {"calibration": {"task": "chess"}}},
     r"^nodes\.cursor\.params\.block_defaults\.calibration\.task must be one of \['centre_out', 'webgrid'\]; "
     r"got 'chess'"),
    ({"blocks": [{"kind": "closed_loop", "task": "webgrid", "seconds": 1}]},
     r"^nodes\.cursor\.params\.blocks\[0\]\.kind"),
])
def test_invalid_parameters_are_refused_naming_the_field(params, match):
    with pytest.raises(ConfigError, match=match):
        _validate(params)


def test_task_blocks_need_the_participant_input():
    blocks = [{"kind": "calibration", "task": "webgrid", "seconds": 1}]
    with pytest.raises(ConfigError, match=r"^nodes\.cursor\.inputs\.participant must be connected when blocks run "
                                          r"tasks \(the participant's intent drives open-loop clicks\)$"):
        _validate({"blocks": blocks}, participant=False)
    p = _validate({"blocks": blocks})
    assert p["blocks"][0]["name"] == "00-calibration" and p["blocks"][0]["max_seconds"] == 3600.0
    _validate({}, participant=False)                                  # free-running: no participant needed


def test_valid_parameters_are_accepted():
    p = _validate({"effector": {"gain": 2.0, "smoothing": 0.5, "refractory_s": 0.1, "dwell_s": 0.5},
                   "block_defaults": {"calibration": {"task": "webgrid", "seconds": 30, "max_seconds": 60,
                                                      "task_params": {}},
                                      "chess": {"seconds": 100}, "centre_out": {"seconds": 10},
                                      "webgrid": {"task_params": {}}}})
    assert p["effector"]["gain"] == 2.0
    _validate({"block_defaults": {"calibration": {"seconds": 5}}})      # centre_out by default


# -- what each published state and row carries --------------------------------------------------------

def _resting(states, bins):
    """States of bins that moved nothing: the next bin, no block beginning, no click."""
    assert [s.bin for s in states] == [g + 1 for g in bins]
    assert not any(s.begin or s.clicked for s in states)


@pytest.mark.req("SR-07")
def test_states_of_warm_up_waiting_and_rest_bins_carry_the_next_bin_and_no_click():
    r = Rig({"blocks": [dict(b) for b in ESTOP_SCHEDULE[:2]] + [
        {"kind": "closed_loop", "task": "webgrid", "seconds": 0.02, "name": "cl"}]}, realtime=True)
    r.out("state")
    _resting(r.run([0, 1], click=True, features_valid=False), [0, 1])
    [s] = r.run([2], click=True)
    assert s.bin == 3 and s.begin and not s.clicked
    states = r.run(range(3, 13))                                     # calibration; then the fit: wait
    assert r.node._waiting() and states[-1].block is None and not states[-1].begin
    _resting(r.run([13, 14], click=True, proba=0.9), [13, 14])
    [s] = r.run([15], click=True, version=1)
    assert s.bin == 16 and s.begin and not s.clicked
    r.run([16], version=1)
    assert r.node.finished
    _resting(r.run([17, 18], click=True, proba=0.9, version=1), [17, 18])


def test_the_first_state_and_the_perfect_first_blocks_control_are_at_sample_0():
    r = Rig({"decoder_kind": "perfect", "blocks": [
        {"kind": "calibration", "task": "centre_out", "seconds": 0.04, "name": "c"}]})
    [m] = r.msgs("state")
    assert (m.sample, m.t_enter_ns) == (0, 0) and m.payload.clicked is False and m.payload.bin == 0
    [m] = r.msgs("control")
    assert (m.sample, m.t_enter_ns) == (0, 0)
    r2 = Rig()
    [m] = r2.msgs("state")
    assert (m.sample, m.t_enter_ns, m.payload.begin, m.payload.clicked) == (0, 0, False, False)


def test_the_gate_message_is_no_data_message():
    r = Rig()
    r.run([0], sample=55)
    r.health = {"decoder": {"state": "failed"}}
    r.run([1])
    [m] = r.msgs("gate")
    assert m.t_enter_ns == 0 and m.sample == 55            # no entry time: not counted in latency statistics


def test_rows_carry_the_bin_the_cursor_and_the_target():
    r = Rig({"blocks": ESTOP_SCHEDULE, "autopilot_speed": 0.5}, deadline_ns=10**15)
    r.run([0])
    r.run([1], proba=0.3, sample=1111)
    [row] = r.out("bins")
    tgt = r.node.block.task.current_target()
    assert (row.block, row.n, row.bin, row.sample) == ("cal", 0, 1, 1111)
    assert row.t_s == pytest.approx(0.04) and row.t_s == r.node.t_s
    toward = np.asarray(tgt.xy) / np.hypot(*tgt.xy)                   # from the centre, where it starts
    assert row.cursor_velocity == pytest.approx(tuple(0.5 * toward), abs=1e-12)
    assert row.cursor_xy == pytest.approx(tuple(0.01 * toward), abs=1e-12)
    assert row.target_xy == pytest.approx(tgt.xy) and abs(row.target_xy[1]) == pytest.approx(0.7)
    assert row.target_radius == tgt.radius and row.on_target is False
    assert math.isnan(row.click_proba) and math.isnan(row.decoded_velocity[0])      # open loop: none used
    assert math.isnan(row.decode_latency_us)
    trace_xy = r.node.block.cursor_xy[-1]
    assert trace_xy == row.cursor_xy and r.node.block.target_xy[-1] == row.target_xy
    assert r.node.block.cursor_velocity[-1] == row.cursor_velocity


def test_on_target_is_within_the_targets_radius():
    r = Rig({"blocks": [{"kind": "calibration", "task": "centre_out", "seconds": 0.1, "name": "c"}]})
    r.run([0, 1])                                                  # the first target is the centre, where it starts
    [row] = r.out("bins")
    assert row.on_target is True and row.target_xy == (0.0, 0.0) and row.target_radius == 0.1
    assert r.node.block.on_target == [True]


def test_the_autopilot_speed_parameter_sets_the_calibration_speed():
    for speed in (0.5, 1.5):
        r = Rig({"blocks": ESTOP_SCHEDULE, "autopilot_speed": speed})
        r.run([0])
        [s] = r.run([1])
        assert np.hypot(*s.velocity) == pytest.approx(speed)


def test_the_effector_runs_at_the_graphs_bin():
    r = Rig(bin_ms=10.0)
    r.out("state")
    [s] = r.run([0], velocity=(1.0, 0.0))
    assert s.xy == pytest.approx((0.01, 0.0)) and s.t_s == pytest.approx(0.01)
    with pytest.raises(ConfigError, match=r"effector is invalid: dwell_s"):
        Rig({"effector": {"dwell_s": 0.03}}, bin_ms=50.0)          # shorter than one 50 ms bin


def test_faults_name_this_gate_and_the_decoder_feeding_it():
    r = Rig(name="gate1", decoder="dec2", watchdog={"output_timeout_ms": 50})
    r.out("state")
    r.run([0], velocity=(math.nan, 0.0))
    assert [(f["kind"], f["node"]) for f in r.faults] == [("decoder_nan", "dec2")]
    r.node.step({}, BIN_NS + 50 * MS + 1)
    assert (r.faults[-1]["kind"], r.faults[-1]["node"]) == ("pipeline_stall", "gate1")
    r.bus.set_info("dec2/job", {"ok": False, "error": "e"})
    r2 = Rig({"blocks": ESTOP_SCHEDULE}, decoder="dec2")
    r2.bus.set_info("dec2/job", {"ok": False, "error": "e"})
    r2.run([0], n_jobs=1)
    assert r2.faults[0]["node"] == "dec2" and "decoder dec2 failed" in r2.faults[0]["message"]


@pytest.mark.req("SR-03")
def test_decoder_outputs_that_stop_raise_pipeline_stall_at_the_gate():
    r = Rig(watchdog={"output_timeout_ms": 100})
    r.out("state")
    r.run([0], velocity=(0.5, 0.0))                                 # at now = 20 ms
    r.node.step({}, 20 * MS + 100 * MS)
    assert r.faults == []
    r.node.step({}, 20 * MS + 100 * MS + 2 * MS)
    [f] = r.faults
    assert (f["kind"], f["node"], f["sample"]) == ("pipeline_stall", "cursor", 19)
    [g] = r.out("gate")
    assert g.halted
    [s] = r.run([6], velocity=(0.5, 0.0), sample=140)
    assert not s.halted and r.faults[-1]["severity"] == "clear" and r.faults[-1]["sample"] == 140


@pytest.mark.req("SR-03")
def test_interactive_between_blocks_the_outputs_keep_the_pipeline_timeout_armed():
    r = _interactive(watchdog={"output_timeout_ms": 100})
    r.run([0, 1], sample=77)                                          # the last at now = 40 ms
    r.node.step({}, 40 * MS + 100 * MS + 2 * MS)
    [f] = r.faults
    assert f["kind"] == "pipeline_stall" and f["node"] == "cursor"
    r.run([7], sample=150)
    assert r.faults[-1]["severity"] == "clear" and r.faults[-1]["sample"] == 150


@pytest.mark.req("SR-03", "SR-05")
def test_interactive_between_blocks_a_stale_output_raises_pipeline_stall():
    r = _interactive(realtime=True, watchdog={"output_timeout_ms": 100})
    r.run([0], t_enter=time.monotonic_ns() + 10**12)
    assert r.faults == []
    r.run([1], t_enter=time.monotonic_ns() - 10**9)
    [f] = r.faults
    assert f["kind"] == "pipeline_stall" and f["age_ms"] >= 1000.0


@pytest.mark.req("SR-03")
def test_interactive_closed_loop_outputs_that_are_not_ready_do_not_keep_the_pipeline_alive():
    r = _interactive(watchdog={"output_timeout_ms": 100})
    r.run([0])
    r.node._last_version = 1
    r.step(1, ops=[{"cmd": "start", "task": "webgrid", "seconds": 10.0}], version=1)       # at 40 ms
    for g in range(2, 9):                                             # not ready for 140 ms
        r.run([g], ready=False, version=1)
    assert [f["kind"] for f in r.faults] == ["pipeline_stall"]
    assert r.node.n_not_ready == 7


def test_a_job_result_is_read_only_when_the_decoder_finished_a_new_job():
    r = _sched()
    r.bus.set_info("decoder/job", {"ok": False, "error": "an old failure"})
    r.run([0, 1], n_jobs=0)
    assert r.faults == [] and r.failures == []


def test_estop_bin_is_only_set_by_an_estop():
    r = _sched(operator=True)
    r.run([0, 1, 2])
    assert r.node.estop_bin is None


def test_participant_pruning_starts_above_4096_entries():
    r = Rig()
    r.step(None, part=[ParticipantIntent(g) for g in range(4096)], now=BIN_NS)
    assert len(r.node._part) == 4096


def test_missed_deadlines_and_not_ready_bins_are_counted_each():
    r = Rig(deadline_ns=10**9, stats_from_sample=30)
    old = time.monotonic_ns() - 5 * 10**9
    r.run([0], t_enter=old, sample=30)                               # at stats_from_sample: not yet counted
    assert r.node.latency.n == 0
    r.run([1, 2], t_enter=old, ready=False)
    assert r.node.n_missed == 2 and r.node.n_not_ready == 2


def test_interactive_op_view_shows_the_loop_latency_of_the_bin():
    r = _interactive()
    r.run([0])
    r.step(1, ops=[{"cmd": "calibrate", "task": "webgrid", "seconds": 1.0}], t_enter=time.monotonic_ns() - 10**9)
    [s] = r.out("state")
    [row] = r.out("bins")
    assert s.op["loop_us"] == row.loop_latency_us and row.loop_latency_us >= 1e6
    [s] = r.run([2])
    assert s.op["loop_us"] is None


def test_perfect_rows_have_no_loop_latency():
    r = Rig({"decoder_kind": "perfect", "blocks": [
        {"kind": "calibration", "task": "centre_out", "seconds": 0.1, "name": "c"}]})
    r.run([0], t_enter=time.monotonic_ns())
    [row] = r.out("bins")
    assert math.isnan(row.loop_latency_us) and r.node.latency.n == 1


@pytest.mark.req("SR-07")
def test_a_click_intent_already_high_on_the_first_bin_of_a_block_clicks():
    r = Rig({"decoder_kind": "perfect", "blocks": [
        {"kind": "calibration", "task": "centre_out", "seconds": 0.1, "name": "c"}]})
    r.out("state")
    [s] = r.run([0], part=[ParticipantIntent(0, click=0.8)])
    assert s.clicked


def test_task_events_are_published_with_the_block_and_the_click_reaches_the_task():
    r = Rig({"blocks": [{"kind": "calibration", "task": "webgrid", "seconds": 0.1, "name": "w"}]})
    r.run([0])
    r.out("events")
    r.run([1], part=[ParticipantIntent(1, click=0.9)])               # open loop: the participant clicks
    ev = r.out("events")
    kinds = [e["event"] for e in ev]
    assert "incorrect" in kinds or "correct" in kinds
    e = ev[-1]
    assert set(e) == {"kind", "block", "t_s", "event", "data"} and e["kind"] == "task" and e["block"] == "w"
    assert e["t_s"] == pytest.approx(0.04) and isinstance(e["data"], dict)


def test_the_schedules_tasks_are_seeded_and_kept_for_inspection():
    r = _sched()
    r.run(range(0, 13))
    assert set(r.node.tasks) == {"cal", "cl", "ev"} and r.node.tasks["ev"] is not r.node.tasks["cal"]
    assert all(t.seed == 3 for t in r.node.tasks.values())
    assert r.node.tasks["cal"].name == "centre_out" and r.node.tasks["ev"].name == "webgrid"
    assert r.node.results[1] == {"name": "fit1", "kind": "fit"} and r.node.results[3] == {"name": "refit1",
                                                                                          "kind": "refit"}


# -- what a finished block leaves ----------------------------------------------------------------------

def test_traces_and_refit_sets_of_finished_blocks():
    r = _sched()
    r.run(range(0, 11), velocity=(0.5, 0.0))
    cal, cl = r.node.traces[0], r.node.traces[1]
    assert set(cal) == {"name", "bins", "cursor_xy", "target_xy", "on_target", "events"}
    assert cal["bins"].dtype == np.int64 and list(cal["bins"]) == [1, 2, 3, 4, 5]
    assert cal["cursor_xy"].shape == (5, 2) and cal["target_xy"].shape == (5, 2)
    assert cal["on_target"].dtype == bool and cal["on_target"].shape == (5,)
    assert isinstance(cal["events"], list) and cal["events"] and cal["events"][0].kind == "target_on"
    assert list(cl["cursor_xy"][:, 0]) == pytest.approx([0.01, 0.02, 0.03])
    assert list(cl["cursor_xy"][:, 1]) == pytest.approx([0, 0, 0])
    kin = r.node.calibration_kinematics[0]
    assert kin["bins"].dtype == np.int64 and np.array_equal(kin["cursor_xy"], cal["cursor_xy"])
    assert np.array_equal(kin["target_xy"], cal["target_xy"])
    refit = [c for c in r.out("control") if c.cmd == "refit"][0].blocks[0]
    assert set(refit) == {"name", "bins", "cursor_xy", "target_xy", "on_target", "dt_s"}
    assert refit["bins"].dtype == np.int64 and np.array_equal(refit["cursor_xy"], cl["cursor_xy"])
    assert np.array_equal(refit["target_xy"], cl["target_xy"]) and refit["target_xy"].shape == (3, 2)


def test_a_block_stopped_before_its_first_bin_has_empty_two_column_traces():
    r = _interactive()
    r.run([0])
    r.step(None, ops=[{"cmd": "calibrate", "task": "webgrid", "seconds": 1.0}, {"cmd": "stop"}])
    tr = r.node.traces[-1]
    assert tr["cursor_xy"].shape == (0, 2) and tr["target_xy"].shape == (0, 2) and tr["bins"].dtype == np.int64
    assert tr["on_target"].dtype == bool and tr["on_target"].shape == (0,)


def test_one_bin_blocks_are_kept_for_fits_and_refits():
    r = Rig({"blocks": [{"kind": "calibration", "task": "webgrid", "seconds": 0.02, "name": "c1"},
                        {"kind": "calibration", "task": "webgrid", "seconds": 0.02, "name": "c2"},
                        {"kind": "fit", "name": "f"},
                        {"kind": "closed_loop", "task": "webgrid", "seconds": 0.02, "name": "cl"},
                        {"kind": "refit", "name": "r"},
                        {"kind": "evaluation", "task": "webgrid", "seconds": 0.02, "name": "ev"}]})
    r.run(range(0, 5))
    assert r.node.n_calibration_blocks == 2
    ctl = {c.cmd: c for c in r.out("control") if c.cmd in ("fit", "refit")}
    assert [b["name"] for b in ctl["fit"].blocks] == ["c1", "c2"]
    assert [b["name"] for b in ctl["refit"].blocks] == ["cl"]


def test_block_end_reports_the_tasks_metrics_over_the_blocks_own_time():
    from cortexlink.core.jsonutil import jsonable

    r = _sched()
    r.run(range(0, 11), velocity=(0.5, 0.0))
    ends = {e["name"]: e for e in r.out("events") if e["kind"] == "block_end"}
    for name, seconds in (("cal", 0.1), ("cl", 0.06)):                # the second starts at 0.12 s
        got = ends[name]["metrics"]
        assert got["elapsed_s"] == pytest.approx(seconds)
        assert got == {**jsonable(r.node.tasks[name].metrics(seconds)), "elapsed_s": got["elapsed_s"]}
    assert ends["cl"]["loop_latency_ms"] == r.node.results[2]["loop_latency_ms"]
    assert set(ends["cl"]) >= {"loop_latency_ms", "n_halted_bins", "seconds", "n_bins", "task", "mode"}


def test_a_block_end_is_logged(caplog):
    caplog.set_level("INFO", logger="cortexlink.runtime.nodes")
    r = Rig({"blocks": [{"kind": "calibration", "task": "webgrid", "seconds": 0.04, "name": "w"}]})
    r.run([0, 1, 2])
    msgs = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("block w")]
    assert len(msgs) == 1 and msgs[0].startswith("block w: 2 bins (0.0 s), metrics {")


def test_interactive_the_operator_view_is_published_when_a_block_ends():
    r = _interactive()
    r.run([0])
    r.step(1, ops=[{"cmd": "calibrate", "task": "webgrid", "seconds": 1.0}])
    r.run([2, 3, 4])
    r.step(None, ops=[{"cmd": "stop"}])
    assert r.bus.get_info("cursor/operator")["last_block"]["name"] == "01-calibration"


@pytest.mark.req("SR-07")
def test_interactive_after_a_block_the_operator_view_shows_no_click():
    r = _interactive()
    r.run([0])
    r.node._last_version = 1
    r.step(1, ops=[{"cmd": "start", "task": "webgrid", "seconds": 1.0}], click=True, proba=0.9, version=1)
    [s] = r.out("state")
    assert s.clicked and s.op["clicked"]
    r.step(2, ops=[{"cmd": "stop"}], click=True, proba=0.9, version=1)
    [s] = r.out("state")
    assert not s.clicked and s.op["clicked"] is False and s.op["decoded"] is None


def test_interactive_open_loop_shows_no_click_probability():
    r = _interactive()
    r.run([0])
    r.step(1, ops=[{"cmd": "calibrate", "task": "webgrid", "seconds": 1.0}], proba=0.3)
    [s] = r.out("state")
    assert s.op["click_proba"] is None


def test_mouse_mode_bins_are_not_counted_as_held_when_the_decoder_has_no_output():
    r = _interactive()
    r.run([0])
    r.node._last_version = 1
    r.step(1, ops=[{"cmd": "mouse", "enabled": True}, {"cmd": "start", "task": "webgrid", "seconds": 1.0},
                   {"cmd": "mouse_move", "x": 0.5, "y": 0.0}], velocity=(math.nan, math.nan), version=1)
    r.run([2, 3], velocity=(math.nan, math.nan), version=1)
    assert r.node.n_halted_bins == 0 and r.node.block.n_halted == 0
    r.step(4, ops=[{"cmd": "estop"}], velocity=(math.nan, math.nan), version=1)
    assert r.node.n_halted_bins == 1 and r.node.block.n_halted == 1


def test_on_target_is_measured_from_the_cursor_to_the_target():
    r = Rig({"decoder_kind": "perfect", "blocks": [
        {"kind": "calibration", "task": "centre_out", "seconds": 0.2, "name": "c",
         "task_params": {"return_to_centre": False}}]})
    tgt = r.node.block.task.current_target()
    r.run([0], part=[ParticipantIntent(0, velocity=(0.0, 0.0))])
    v = tuple(np.asarray(tgt.xy) / 0.02)                               # one bin onto the target
    r.run([1], part=[ParticipantIntent(1, velocity=v)])
    rows = r.out("bins")
    assert [row.on_target for row in rows] == [False, True]
    assert rows[1].cursor_xy == pytest.approx(tgt.xy)


# -- the run stops (SR-12): the cursor is held first -----------------------------------------------------

@pytest.mark.req("SR-12", "SR-07")
def test_when_the_run_stops_a_final_halted_gate_goes_out_and_every_later_bin_is_held():
    r = Rig(name="gate1")
    r.out("state")
    [s] = r.run([0], velocity=(0.5, 0.0), sample=40)
    assert not s.halted and r.out("gate") == []
    r.node.stopping("SIGTERM")
    [m] = r.msgs("gate")
    g = m.payload
    assert g.halted and g.velocity == (0.0, 0.0) and g.click_suppressed and m.sample == 40 and m.t_enter_ns == 0
    assert g.faults == ({"kind": "run_stopped", "node": "gate1", "message": "the run stops: SIGTERM", "sample": 40},)
    states = r.run([1, 2], velocity=(0.5, 0.0), click=True, proba=0.9)
    assert all(s.halted and s.velocity == (0.0, 0.0) and not s.clicked for s in states)
    assert r.out("gate") == []                                        # published once
    assert r.node.n_halted_bins == 2 and r.faults == []


@pytest.mark.req("SR-12")
def test_the_stop_gate_lists_the_active_faults_first_and_goes_out_even_when_already_halted():
    r = Rig()
    r.out("state")
    r.health = {"decoder": {"state": "failed"}}
    r.run([0], sample=21)
    [g] = r.out("gate")
    assert g.halted
    r.node.stopping("time is up")
    [g] = r.out("gate")
    assert g.halted and [f["kind"] for f in g.faults] == ["node_down", "run_stopped"]
    r.health = {"decoder": {"state": "running"}}                       # the fault clears: still held
    [s] = r.run([1], velocity=(0.5, 0.0))
    assert s.halted and s.velocity == (0.0, 0.0) and r.out("gate") == []


def test_stopping_before_setup_does_nothing():
    r = Rig()
    sub = r.bus.subscribe("c2.gate", "test.c2")
    node = CursorNode("c2", r.node.params, r.ctx)
    node.stopping("early")                                              # no watchdog yet: nothing to hold
    assert len(sub) == 0 and not hasattr(node, "watchdog")


# -- E-STOP and release are fault events (SR-13) ---------------------------------------------------------

@pytest.mark.req("SR-10", "SR-13")
def test_estop_and_release_are_fault_events_with_their_bin_and_sample():
    r = _sched(operator=True)
    r.run([0, 1])
    r.step(2, ops=[{"cmd": "estop"}], sample=59)
    r.step(3, ops=[{"cmd": "estop"}])                                 # already engaged: no second event
    r.step(4, ops=[{"cmd": "release"}])
    r.step(5, ops=[{"cmd": "release"}])                               # not engaged: no event
    ev = [f for f in r.faults if f["kind"] == "estop"]
    assert [(f["severity"], f["node"], f["bin"]) for f in ev] == [("halt", "cursor", 1), ("clear", "cursor", 3)]
    assert ev[0]["sample"] == 39 and "after bin 1" in ev[0]["message"]
    assert ev[1]["sample"] == 79 and "after bin 3" in ev[1]["message"]
