"""Unit tests of the watchdog (:mod:`cortexlink.runtime.watchdog`): every fault kind, its exact
boundary, the fault events it emits and when it clears, driven with explicit clock values.

These run in milliseconds (no graph, no bus): they are the tests mutation testing runs against
``watchdog.py`` (docs/safety/requirements.yaml, ``safety_code``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.runtime.watchdog import BUS_HEALTH, HALT_KINDS, Watchdog, WatchdogConfig

MS = 1_000_000


class Events:
    """A fault emitter that keeps what it was given (the node context's ``fault``)."""

    def __init__(self) -> None:
        self.log: list[dict] = []

    def __call__(self, kind, **kw):
        self.log.append({"kind": kind, **kw})

    def of(self, kind=None, severity=None):
        return [e for e in self.log if (kind is None or e["kind"] == kind)
                and (severity is None or e["severity"] == severity)]


def _wd(**cfg):
    ev = Events()
    return Watchdog(WatchdogConfig(**cfg), ev, gate="gate"), ev


def _src(n_out, state="running", **kw):
    return {"state": state, "n_out": n_out, "source": True, "critical": True, **kw}


# -- configuration ----------------------------------------------------------------------------

@pytest.mark.req("SR-01", "SR-02", "SR-03")
def test_config_defaults_are_the_documented_ones():
    # module docstring: stall_ms=5 (checked every 1 ms tick, well inside one 20 ms bin)
    c = WatchdogConfig.from_dict(None)
    assert c == WatchdogConfig() == WatchdogConfig.from_dict({})
    assert (c.stall_ms, c.max_speed, c.output_timeout_ms, c.check_interval_ms) == (5.0, 10.0, 100.0, 2.0)


@pytest.mark.parametrize("field", ["stall_ms", "max_speed", "output_timeout_ms", "check_interval_ms"])
@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "5", True, None])
def test_config_refuses_a_bad_value_and_names_the_field(field, bad):
    with pytest.raises(ConfigError, match=rf"^watchdog\.{field} must be"):
        WatchdogConfig(**{field: bad})
    with pytest.raises(ConfigError, match=rf"^watchdog: watchdog\.{field} must be"):
        WatchdogConfig.from_dict({field: bad})


@pytest.mark.parametrize("field", ["stall_ms", "max_speed", "check_interval_ms"])
def test_config_refuses_zero_where_zero_would_disable_a_check(field):
    with pytest.raises(ConfigError, match=rf"^watchdog: watchdog\.{field} .*> 0"):
        WatchdogConfig.from_dict({field: 0})


def test_config_output_timeout_zero_means_off():
    assert WatchdogConfig.from_dict({"output_timeout_ms": 0}).output_timeout_ms == 0.0


def test_config_from_dict_takes_integers_as_floats_and_keeps_the_given_values():
    c = WatchdogConfig.from_dict({"stall_ms": 3, "max_speed": 7, "output_timeout_ms": 40, "check_interval_ms": 1})
    assert (c.stall_ms, c.max_speed, c.output_timeout_ms, c.check_interval_ms) == (3.0, 7.0, 40.0, 1.0)
    assert all(type(v) is float for v in (c.stall_ms, c.max_speed, c.output_timeout_ms, c.check_interval_ms))
    assert WatchdogConfig.from_dict({"stall_ms": 2.5}).stall_ms == 2.5


def test_config_from_dict_refuses_unknown_keys_naming_the_path():
    with pytest.raises(ConfigError, match=r"^watchdog has unknown key.*stall_s"):
        WatchdogConfig.from_dict({"stall_s": 5})
    with pytest.raises(ConfigError, match=r"^graph\.watchdog has unknown key"):
        WatchdogConfig.from_dict({"stall_s": 5}, path="graph.watchdog")


def test_config_from_dict_turns_a_type_error_into_a_config_error_naming_the_path():
    # a Real that numpy cannot check raises TypeError inside the check
    with pytest.raises(ConfigError, match=r"^graph\.watchdog: ") as exc_info:
        WatchdogConfig.from_dict({"stall_ms": Fraction(1, 2)}, path="graph.watchdog")
    assert isinstance(exc_info.value.__cause__, TypeError)
    with pytest.raises(ConfigError, match=r"^watchdog: "):
        WatchdogConfig.from_dict({"stall_ms": Fraction(1, 2)})


def test_halt_kinds_name_every_fault_the_watchdog_raises():
    assert set(HALT_KINDS) == {"source_stall", "node_down", "decoder_nan", "decoder_out_of_range",
                               "pipeline_stall", "bus_down", "fit_failed"}
    assert "." in BUS_HEALTH        # never a node name


# -- source stall (SR-01) -----------------------------------------------------------------------

@pytest.mark.req("SR-01", "SR-13")
def test_source_stall_raises_only_after_more_than_stall_ms_without_output_and_clears_when_it_moves():
    wd, ev = _wd(stall_ms=5, output_timeout_ms=0)
    t0 = 1_000 * MS
    assert wd.check_health(t0, {"src": _src(10)}) is False
    assert wd.check_health(t0 + 5 * MS, {"src": _src(10)}, sample=7) is False        # exactly stall_ms: not yet
    assert not wd.halted and ev.log == []
    assert wd.check_health(t0 + 5 * MS + 1, {"src": _src(10)}, sample=8) is True     # 1 ns past it
    assert wd.halted
    [e] = ev.log
    assert e["kind"] == "source_stall" and e["severity"] == "halt" and e["node"] == "src" and e["sample"] == 8
    assert e["age_ms"] == 5_000_001 / 1e6
    assert "src" in e["message"] and "5.0 ms" in e["message"]
    assert wd.active[("source_stall", "src")] == {"kind": "source_stall", "node": "src",
                                                   "message": e["message"], "sample": 8}
    # still stalled: no second event, no new fault
    assert wd.check_health(t0 + 50 * MS, {"src": _src(10)}, sample=9) is False
    assert len(ev.log) == 1 and wd.n_raised == 1 and wd.n_checks == 4
    # output again: cleared, with a clear event at that sample
    assert wd.check_health(t0 + 51 * MS, {"src": _src(11)}, sample=10) is False
    assert not wd.halted and wd.active == {}
    assert ev.log[-1] == {"kind": "source_stall", "node": "src", "severity": "clear",
                          "message": "source_stall on src cleared", "sample": 10}
    # the stall clock restarted at the new output
    assert wd.check_health(t0 + 56 * MS, {"src": _src(11)}) is False
    assert wd.check_health(t0 + 56 * MS + 1, {"src": _src(11)}) is True


@pytest.mark.req("SR-01")
def test_source_stall_limit_follows_stall_ms():
    wd, _ = _wd(stall_ms=0.5, output_timeout_ms=0)
    wd.check_health(0, {"src": _src(1)})
    assert wd.check_health(500_000, {"src": _src(1)}) is False
    assert wd.check_health(500_001, {"src": _src(1)}) is True


@pytest.mark.req("SR-01")
def test_source_stall_is_armed_only_after_the_first_output():
    wd, ev = _wd(stall_ms=5, output_timeout_ms=0)
    for t in range(0, 100 * MS, 10 * MS):                     # still at 0 outputs: starting up
        assert wd.check_health(t, {"src": _src(0)}) is False
    no_count = {"state": "running", "source": True}            # no counter published yet: as 0
    for t in range(100 * MS, 200 * MS, 10 * MS):
        assert wd.check_health(t, {"src": no_count}) is False
    assert ev.log == []
    wd.check_health(200 * MS, {"src": _src(1)})               # first output arms it
    assert wd.check_health(205 * MS + 1, {"src": _src(1)}) is True


@pytest.mark.req("SR-01")
def test_source_stall_is_checked_only_for_running_sources():
    wd, ev = _wd(stall_ms=5, output_timeout_ms=0)
    wd.check_health(0, {"src": _src(3), "dsp": {"state": "running", "n_out": 3, "critical": True}})
    later = {"src": _src(3, state="stopped"), "dsp": {"state": "running", "n_out": 3, "critical": True}}
    assert wd.check_health(100 * MS, later) is False          # a stopped source, a non-source: no stall
    assert ev.log == []


@pytest.mark.req("SR-01")
def test_a_source_that_resumes_clears_even_a_stall_seen_from_zero():
    wd, ev = _wd(stall_ms=5, output_timeout_ms=0)
    wd.check_health(0, {"src": _src(2)})
    wd.check_health(6 * MS, {"src": _src(2)})
    assert wd.halted
    wd.check_health(7 * MS, {"src": _src(3)}, sample=4)
    assert not wd.halted and [e["severity"] for e in ev.log] == ["halt", "clear"]


@pytest.mark.req("SR-01")
def test_each_source_has_its_own_stall_clock():
    wd, ev = _wd(stall_ms=5, output_timeout_ms=0)
    wd.check_health(0, {"a": _src(1), "b": _src(1)})
    wd.check_health(4 * MS, {"a": _src(1), "b": _src(2)})
    assert wd.check_health(5 * MS + 1, {"a": _src(1), "b": _src(2)}) is True
    assert list(wd.active) == [("source_stall", "a")]
    assert wd.check_health(9 * MS + 1, {"a": _src(1), "b": _src(2)}) is True
    assert set(wd.active) == {("source_stall", "a"), ("source_stall", "b")}
    assert [e["node"] for e in ev.log] == ["a", "b"]


# -- node down (SR-04, SR-05) -------------------------------------------------------------------

@pytest.mark.req("SR-04", "SR-13")
def test_a_failed_critical_node_halts_until_it_runs_again():
    wd, ev = _wd(output_timeout_ms=0)
    assert wd.check_health(0, {"dec": {"state": "failed", "error": "ValueError: x"}}, sample=3) is True
    [e] = ev.log
    assert (e["kind"], e["node"], e["severity"], e["sample"]) == ("node_down", "dec", "halt", 3)
    assert "dec" in e["message"] and "ValueError: x" in e["message"]
    assert wd.check_health(1, {"dec": {"state": "failed", "error": "ValueError: x"}}) is False
    assert wd.check_health(2, {"dec": {"state": "starting"}}) is False           # restarting: still halted
    assert wd.halted
    wd.check_health(3, {"dec": {"state": "running"}}, sample=5)
    assert not wd.halted
    assert ev.log[-1] == {"kind": "node_down", "node": "dec", "severity": "clear",
                          "message": "node_down on dec cleared", "sample": 5}


@pytest.mark.req("SR-04")
def test_a_node_given_up_on_halts_but_a_normal_stop_does_not():
    wd, ev = _wd(output_timeout_ms=0)
    assert wd.check_health(0, {"dec": {"state": "stopped"}}) is False
    assert wd.check_health(0, {"dec": {"state": "stopped", "gave_up": False}}) is False
    assert ev.log == []
    assert wd.check_health(1, {"dec": {"state": "stopped", "gave_up": True}}, sample=2) is True
    [e] = ev.log
    assert (e["kind"], e["node"], e["severity"], e["sample"]) == ("node_down", "dec", "halt", 2)
    assert "dec" in e["message"] and "repeated failures" in e["message"]


@pytest.mark.req("SR-04")
def test_a_non_critical_node_never_halts_and_critical_is_the_default():
    wd, ev = _wd(output_timeout_ms=0)
    assert wd.check_health(0, {"ui": {"state": "failed", "critical": False},
                               "ui2": {"state": "stopped", "gave_up": True, "critical": False}}) is False
    assert not wd.halted and ev.log == []
    assert wd.check_health(0, {"dec": {"state": "failed"}}) is True             # no "critical": critical


def test_running_clears_only_the_node_down_of_that_node():
    wd, ev = _wd(output_timeout_ms=0)
    wd.check_health(0, {"a": {"state": "failed"}, "b": {"state": "failed"}})
    wd.check_health(1, {"a": {"state": "running"}, "b": {"state": "failed"}})
    assert list(wd.active) == [("node_down", "b")]
    assert [(e["node"], e["severity"]) for e in ev.log] == [("a", "halt"), ("b", "halt"), ("a", "clear")]


def test_check_health_reports_new_when_any_fault_of_the_check_is_new():
    wd, _ = _wd(output_timeout_ms=0)
    wd.check_health(0, {"b": {"state": "failed"}})
    # "a" is new, "b" was active already: the check raised something new
    assert wd.check_health(1, {"a": {"state": "failed"}, "b": {"state": "failed"}}) is True
    wd2, _ = _wd(output_timeout_ms=0)
    wd2.check_health(0, {"a": {"state": "failed"}})
    assert wd2.check_health(1, {"a": {"state": "failed"}, "b": {"state": "failed"}}) is True
    wd3, _ = _wd(stall_ms=1, output_timeout_ms=0)
    wd3.check_health(0, {"s": _src(1)})
    wd3.check_health(1, {"x": {"state": "failed"}})
    assert wd3.check_health(2 * MS, {"x": {"state": "failed"}, "s": _src(1)}) is True
    # a new fault earlier in the check, then one that was active already (the last raise is not new)
    wd5, _ = _wd(stall_ms=1, output_timeout_ms=0)
    wd5.check_health(0, {"g": {"state": "stopped", "gave_up": True}})
    assert wd5.check_health(1, {"x": {"state": "failed"}, "g": {"state": "stopped", "gave_up": True}}) is True
    wd6, _ = _wd(stall_ms=1, output_timeout_ms=0)
    wd6.check_health(0, {"s": _src(1)})
    wd6.check_health(2 * MS, {"s": _src(1)})
    assert wd6.check_health(3 * MS, {"x": {"state": "failed"}, "s": _src(1)}) is True
    wd7, _ = _wd(output_timeout_ms=1)
    wd7.output_seen(0)
    wd7.check_health(2 * MS, {})
    assert wd7.check_health(3 * MS, {"x": {"state": "failed"}}) is True
    wd4, _ = _wd(stall_ms=1, output_timeout_ms=0)
    wd4.check_health(0, {"s": _src(1), "y": {"state": "failed", "bus": True}})
    assert wd4.check_health(2 * MS, {"s": _src(1), "y": {"state": "failed", "bus": True}}) is True


# -- bus down (SR-06) ---------------------------------------------------------------------------

@pytest.mark.req("SR-06", "SR-13")
def test_a_broken_bus_raises_bus_down_and_nothing_else_for_that_entry():
    wd, ev = _wd(output_timeout_ms=0)
    health = {BUS_HEALTH: {"state": "failed", "bus": True, "error": "ConnectionError: gone", "source": True,
                           "n_out": 0},
              "dec": {"state": "failed"}}
    assert wd.check_health(0, health, sample=11) is True
    assert [(e["kind"], e["node"]) for e in ev.log] == [("bus_down", BUS_HEALTH), ("node_down", "dec")]
    e = ev.log[0]
    assert e["severity"] == "halt" and e["sample"] == 11 and "ConnectionError: gone" in e["message"]
    assert "bus" in e["message"]
    # a running bus entry is no node: it clears nothing and raises nothing
    assert wd.check_health(1, {BUS_HEALTH: {"state": "running", "bus": True}}) is False
    assert (("bus_down", BUS_HEALTH)) in wd.active
    assert wd.check_health(2, {BUS_HEALTH: {"state": "failed", "bus": True}}) is False


def test_a_healthy_bus_entry_raises_nothing():
    wd, ev = _wd(output_timeout_ms=0)
    assert wd.check_health(0, {BUS_HEALTH: {"state": "running", "bus": True, "source": True, "n_out": 1}}) is False
    assert wd.check_health(10**12, {BUS_HEALTH: {"state": "running", "bus": True, "source": True,
                                                 "n_out": 1}}) is False
    assert ev.log == [] and not wd.halted


# -- latched faults (SR-31) ---------------------------------------------------------------------

@pytest.mark.req("SR-31", "SR-13")
def test_a_latched_fault_is_raised_once_and_nothing_clears_it():
    wd, ev = _wd(stall_ms=5, output_timeout_ms=50)
    assert wd.latch("fit_failed", "dec", "the fit failed", 12, error="LinAlgError") is True
    assert ev.log == [{"kind": "fit_failed", "node": "dec", "severity": "halt", "message": "the fit failed",
                       "sample": 12, "error": "LinAlgError"}]
    assert wd.latch("fit_failed", "dec", "again") is False and len(ev.log) == 1 and wd.n_raised == 1
    # everything healthy, valid outputs: still halted
    wd.check_health(0, {"dec": {"state": "running"}, "src": _src(1)})
    wd.check_health(1 * MS, {"dec": {"state": "running"}, "src": _src(2)})
    wd.output_seen(2 * MS)
    assert wd.check_output(3 * MS, (0.1, 0.1), 0.5, node="dec") is True
    assert wd.halted and list(wd.active) == [("fit_failed", "dec")]
    assert len(ev.log) == 1


def test_latch_default_sample_is_unknown():
    wd, ev = _wd()
    wd.latch("bus_down", "x", "m")
    assert ev.log[0]["sample"] == -1


# -- pipeline stall (SR-03) ---------------------------------------------------------------------

@pytest.mark.req("SR-03", "SR-13")
def test_pipeline_stall_after_more_than_output_timeout_ms_once_outputs_flowed():
    wd, ev = _wd(output_timeout_ms=100)
    assert wd.check_health(10**12, {}) is False               # no output yet: not armed
    t0 = 5_000 * MS
    assert wd.check_output(t0, (0.0, 0.0), None, node="dec") is True
    assert wd.check_health(t0 + 100 * MS, {}) is False        # exactly the timeout: not yet
    assert wd.check_health(t0 + 100 * MS + 1, {}, sample=21) is True
    [e] = ev.log
    assert (e["kind"], e["node"], e["severity"], e["sample"]) == ("pipeline_stall", "gate", "halt", 21)
    assert e["age_ms"] == 100_000_001 / 1e6 and "100.0 ms" in e["message"]
    assert wd.check_health(t0 + 200 * MS, {}) is False        # already active
    # the next output clears it
    wd.check_output(t0 + 201 * MS, (0.0, 0.0), 0.0, node="dec", sample=22)
    assert not wd.halted
    assert ev.log[-1] == {"kind": "pipeline_stall", "node": "gate", "severity": "clear",
                          "message": "pipeline_stall on gate cleared", "sample": 22}


@pytest.mark.req("SR-03")
def test_an_unused_output_also_restarts_the_pipeline_timeout_and_clears_it():
    wd, ev = _wd(output_timeout_ms=10)
    wd.output_seen(0)
    assert wd.check_health(10 * MS, {}) is False
    assert wd.check_health(10 * MS + 1, {}) is True
    wd.output_seen(11 * MS, sample=3)
    assert not wd.halted and ev.log[-1]["severity"] == "clear" and ev.log[-1]["sample"] == 3
    assert wd.check_health(21 * MS, {}) is False
    assert wd.check_health(21 * MS + 1, {}) is True


def test_output_timeout_zero_disables_the_pipeline_check():
    wd, ev = _wd(output_timeout_ms=0)
    wd.output_seen(0)
    assert wd.check_health(10**15, {}) is False and ev.log == []


def test_the_gate_name_defaults_to_cursor():
    ev = Events()
    wd = Watchdog(WatchdogConfig(output_timeout_ms=1), ev)
    assert wd.gate == "cursor"
    wd.output_seen(0)
    wd.check_health(2 * MS, {})
    assert ev.log[0]["node"] == "cursor"


# -- decoder output (SR-02) ---------------------------------------------------------------------

@pytest.mark.req("SR-02", "SR-13")
@pytest.mark.parametrize("velocity, click", [
    ((math.nan, 0.0), 0.5), ((0.0, math.nan), 0.5), ((math.inf, 0.0), None), ((0.0, -math.inf), None),
    ((0.0, 0.0), math.nan), ((0.0, 0.0), math.inf),
    (None, 0.0), ((1.0,), 0.0), (("a", "b"), 0.0), ((), None)])
def test_a_non_finite_or_malformed_output_raises_decoder_nan(velocity, click):
    wd, ev = _wd(output_timeout_ms=0)
    assert wd.check_output(0, velocity, click, node="dec", sample=4) is False
    [e] = ev.log
    assert (e["kind"], e["node"], e["severity"], e["sample"]) == ("decoder_nan", "dec", "halt", 4)
    assert "dec" in e["message"] and "not finite" in e["message"]
    assert wd.halted


@pytest.mark.req("SR-02")
def test_speed_exactly_max_speed_passes_and_just_above_raises_out_of_range():
    wd, ev = _wd(max_speed=5.0, output_timeout_ms=0)
    assert wd.check_output(0, (3.0, 4.0), 0.0, node="dec") is True             # |v| == 5
    assert wd.check_output(1, (-3.0, -4.0), 1.0, node="dec") is True
    assert ev.log == []
    assert wd.check_output(2, (3.0, 4.000001), 0.0, node="dec", sample=6) is False
    [e] = ev.log
    assert (e["kind"], e["node"], e["severity"], e["sample"]) == ("decoder_out_of_range", "dec", "halt", 6)
    assert e["speed"] == pytest.approx(math.hypot(3.0, 4.000001)) and e["click"] == 0.0
    assert "dec" in e["message"] and "> 5 " in e["message"]
    assert wd.check_output(3, (0.0, -5.1), 0.0, node="dec") is False           # either axis, either sign
    assert len(ev.log) == 1


@pytest.mark.req("SR-02", "SR-07")
@pytest.mark.parametrize("click, ok", [(0.0, True), (1.0, True), (0.5, True), (None, True),
                                       (-1e-9, False), (1.0 + 1e-9, False), (2.0, False), (-1.0, False)])
def test_a_click_probability_outside_0_1_raises_out_of_range(click, ok):
    wd, ev = _wd(output_timeout_ms=0)
    assert wd.check_output(0, (0.0, 0.0), click, node="dec") is ok
    assert wd.halted is not ok
    if not ok:
        assert ev.log[0]["kind"] == "decoder_out_of_range" and ev.log[0]["click"] == click
        assert ev.log[0]["speed"] == 0.0


@pytest.mark.req("SR-02", "SR-13")
def test_a_valid_output_clears_the_decoder_faults_of_that_decoder_only():
    wd, ev = _wd(output_timeout_ms=0)
    wd.check_output(0, (math.nan, 0.0), 0.0, node="dec")
    wd.check_output(1, (100.0, 0.0), 0.0, node="dec")         # out of range: the NaN fault stays
    wd.check_output(2, (math.nan, 0.0), 0.0, node="other")
    assert set(wd.active) == {("decoder_nan", "dec"), ("decoder_out_of_range", "dec"), ("decoder_nan", "other")}
    assert wd.check_output(3, (0.0, 0.0), 0.0, node="dec", sample=30) is True
    assert list(wd.active) == [("decoder_nan", "other")]
    assert [(e["kind"], e["severity"], e["sample"]) for e in ev.log[-2:]] == [
        ("decoder_nan", "clear", 30), ("decoder_out_of_range", "clear", 30)]
    assert ev.log[-2]["message"] == "decoder_nan on dec cleared"


def test_a_repeated_bad_output_emits_one_event():
    wd, ev = _wd(output_timeout_ms=0)
    for t in range(5):
        assert wd.check_output(t, (math.nan, 0.0), 0.0, node="dec") is False
    assert len(ev.log) == 1 and wd.n_raised == 1


def test_a_bad_output_also_restarts_the_pipeline_timeout():
    # the pipeline runs (it produced an output); the bad value is its own fault
    wd, ev = _wd(output_timeout_ms=10)
    wd.output_seen(0)
    wd.check_health(11 * MS, {})
    assert ("pipeline_stall", "gate") in wd.active
    wd.check_output(12 * MS, (math.nan, 0.0), 0.0, node="dec")
    assert ("pipeline_stall", "gate") not in wd.active
    assert wd.check_health(22 * MS, {}) is False


def test_counters_start_at_zero_and_count_every_raise():
    wd, _ = _wd()
    assert (wd.n_raised, wd.n_checks, wd.halted, wd.active) == (0, 0, False, {})
    wd.check_health(0, {"a": {"state": "failed"}, "b": {"state": "failed"}})
    wd.check_output(0, (math.nan, 0.0), 0.0, node="dec")
    assert (wd.n_raised, wd.n_checks) == (3, 1)


def test_a_missing_click_is_no_click():
    wd, ev = _wd(max_speed=1.0, output_timeout_ms=0)
    assert wd.check_output(0, (2.0, 0.0), None, node="dec") is False
    assert ev.log[0]["click"] == 0.0 and "click=0 " in ev.log[0]["message"]


# -- stale outputs (SR-03, SR-05): data that entered the graph too long ago ---------------------

@pytest.mark.req("SR-03", "SR-05", "SR-13")
def test_an_output_older_than_output_timeout_ms_is_held_and_raises_pipeline_stall():
    wd, ev = _wd(output_timeout_ms=100)
    assert wd.check_output(0, (0.1, 0.0), 0.2, node="dec", age_ns=100 * MS) is True      # exactly the limit
    assert ev.log == []
    assert wd.check_output(MS, (0.1, 0.0), 0.2, node="dec", sample=5, age_ns=100 * MS + 1) is False
    [e] = ev.log
    assert (e["kind"], e["node"], e["severity"], e["sample"]) == ("pipeline_stall", "gate", "halt", 5)
    assert e["age_ms"] == 100_000_001 / 1e6
    assert "100.0 ms old" in e["message"] and "output_timeout_ms 100" in e["message"]
    # more of the backlog: held, no new event, the fault stays
    assert wd.check_output(2 * MS, (0.1, 0.0), 0.2, node="dec", age_ns=90 * MS + 10**9) is False
    assert len(ev.log) == 1 and wd.halted
    # a fresh output clears it
    assert wd.check_output(3 * MS, (0.1, 0.0), 0.2, node="dec", sample=6, age_ns=2 * MS) is True
    assert not wd.halted and ev.log[-1]["severity"] == "clear" and ev.log[-1]["sample"] == 6


@pytest.mark.req("SR-03", "SR-05")
def test_a_stale_output_clears_no_decoder_fault():
    wd, ev = _wd(output_timeout_ms=10)
    wd.check_output(0, (math.nan, 0.0), 0.0, node="dec")
    assert wd.check_output(MS, (0.0, 0.0), 0.0, node="dec", age_ns=11 * MS) is False
    assert set(wd.active) == {("decoder_nan", "dec"), ("pipeline_stall", "gate")}
    assert [e["severity"] for e in ev.log] == ["halt", "halt"]


@pytest.mark.req("SR-03", "SR-05")
def test_a_stale_unused_output_raises_and_does_not_clear_or_restart_the_timeout():
    wd, ev = _wd(output_timeout_ms=10)
    wd.output_seen(0, age_ns=10 * MS)                          # exactly the limit: fresh
    wd.output_seen(MS, sample=2, age_ns=10 * MS + 1)
    assert list(wd.active) == [("pipeline_stall", "gate")] and ev.log[-1]["sample"] == 2
    wd.output_seen(2 * MS, age_ns=10**10)
    assert wd.halted and len(ev.log) == 1
    wd.output_seen(3 * MS, sample=3, age_ns=0)
    assert not wd.halted and ev.log[-1]["severity"] == "clear"


def test_the_age_is_not_checked_when_unknown_or_when_the_timeout_is_off():
    wd, ev = _wd(output_timeout_ms=10)
    assert wd.check_output(0, (0.0, 0.0), 0.0, node="dec", age_ns=None) is True
    wd.output_seen(0)
    off, ev_off = _wd(output_timeout_ms=0)
    assert off.check_output(0, (0.0, 0.0), 0.0, node="dec", age_ns=10**12) is True
    off.output_seen(0, age_ns=10**12)
    assert ev.log == [] and ev_off.log == [] and not wd.halted and not off.halted


@pytest.mark.req("SR-03", "SR-05")
def test_the_age_limit_follows_a_short_output_timeout():
    wd, ev = _wd(output_timeout_ms=0.5)
    assert wd.check_output(0, (0.0, 0.0), 0.0, node="dec", age_ns=500_000) is True
    assert wd.check_output(0, (0.0, 0.0), 0.0, node="dec", age_ns=500_001) is False
    assert [e["kind"] for e in ev.log] == ["pipeline_stall"]
