"""Unit tests of the supervisor (:mod:`cortexlink.runtime.supervisor`): restart counting within
the window, give-up, backoff, the fault events, with a hand-driven clock and real nodes whose
step or setup raises.

These run in milliseconds: they are the tests mutation testing runs against ``supervisor.py``
(docs/safety/requirements.yaml, ``safety_code``).
"""

from __future__ import annotations

import logging
import math

import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.runtime.node import Node, NodeState
from cortexlink.runtime.supervisor import RestartPolicy, Supervisor

MS = 1_000_000
S = 1_000_000_000


class Clock:
    def __init__(self, t: int = 0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


class Events:
    def __init__(self) -> None:
        self.log: list[dict] = []

    def __call__(self, kind, **kw):
        self.log.append({"kind": kind, **kw})

    def kinds(self):
        return [e["kind"] for e in self.log]


class Deep(Exception):
    pass


def _raise_deep(depth):          # two functions in turn: no frame repeats (Python folds repeats)
    if depth == 0:
        raise Deep("at the bottom")
    _deeper(depth - 1)


def _deeper(depth):
    _raise_deep(depth)


class Flaky(Node):
    """A node whose step raises; counts its set-ups and tear-downs."""

    kind = "flaky_test_node"

    def __init__(self, name="dec", *, critical=True, teardown_raises=False, setup_raises=False):
        super().__init__(name, {}, None)
        self.critical = critical
        self.n_setup = 0
        self.n_teardown = 0
        self.teardown_raises = teardown_raises
        self.setup_raises = setup_raises

    def setup(self):
        self.n_setup += 1
        if self.setup_raises:
            raise OSError("device busy")

    def step(self, inbox, now_ns):
        raise ValueError("bad input")

    def teardown(self):
        self.n_teardown += 1
        if self.teardown_raises:
            raise RuntimeError("teardown broke")


def _fail(sup, node, policy, sample=-1):
    try:
        node.step({}, 0)
    except ValueError as exc:
        sup.failed(node, policy, exc, sample)


def _sup(t=0):
    clock, ev, gave_up = Clock(t), Events(), []
    return Supervisor(ev, clock, gave_up.append), clock, ev, gave_up


# -- RestartPolicy ------------------------------------------------------------------------------

@pytest.mark.req("SR-04")
def test_policy_defaults():
    assert RestartPolicy.from_dict(None) == RestartPolicy.from_dict({}) == RestartPolicy()
    assert (RestartPolicy().max_restarts, RestartPolicy().window_s, RestartPolicy().backoff_ms) == (3, 60.0, 0.0)


def test_policy_from_dict_keeps_the_given_values_as_numbers():
    p = RestartPolicy.from_dict({"max_restarts": 0, "window_s": 5, "backoff_ms": 250})
    assert (p.max_restarts, p.window_s, p.backoff_ms) == (0, 5.0, 250.0)
    assert type(p.max_restarts) is int and type(p.window_s) is float and type(p.backoff_ms) is float
    p = RestartPolicy.from_dict({"window_s": 0.5, "backoff_ms": 0})
    assert (p.max_restarts, p.window_s, p.backoff_ms) == (3, 0.5, 0.0)
    assert RestartPolicy.from_dict({"max_restarts": 7}).max_restarts == 7


@pytest.mark.parametrize("bad", [-1, 1.0, 2.5, True, False, "3", None])
def test_policy_refuses_a_bad_max_restarts_naming_field_and_value(bad):
    with pytest.raises(ConfigError, match=r"^restart\.max_restarts must be an integer >= 0; got " + repr(bad)):
        RestartPolicy.from_dict({"max_restarts": bad})
    with pytest.raises(ConfigError, match=r"^nodes\.dec\.restart\.max_restarts "):
        RestartPolicy.from_dict({"max_restarts": bad}, path="nodes.dec.restart")


@pytest.mark.parametrize("field", ["window_s", "backoff_ms"])
@pytest.mark.parametrize("bad", [-1, -0.001, math.nan, True, False, "1", None, [1]])
def test_policy_refuses_a_bad_time_naming_field_and_value(field, bad):
    with pytest.raises(ConfigError, match=rf"^restart\.{field} must be a number >= 0; got "):
        RestartPolicy.from_dict({field: bad})
    with pytest.raises(ConfigError, match=rf"^nodes\.x\.restart\.{field} must be"):
        RestartPolicy.from_dict({field: bad}, path="nodes.x.restart")


def test_policy_refuses_unknown_keys_naming_the_path():
    with pytest.raises(ConfigError, match=r"^restart has unknown key.*max_restart"):
        RestartPolicy.from_dict({"max_restart": 1})
    with pytest.raises(ConfigError, match=r"^nodes\.x\.restart has unknown key"):
        RestartPolicy.from_dict({"max_restart": 1}, path="nodes.x.restart")


# -- failure, restart --------------------------------------------------------------------------------

@pytest.mark.req("SR-04", "SR-13")
def test_a_failure_marks_the_node_failed_reports_it_tears_it_down_and_schedules_a_restart():
    sup, clock, ev, gave_up = _sup(10 * S)
    node = Flaky()
    _fail(sup, node, RestartPolicy(max_restarts=3, backoff_ms=0), sample=42)
    assert node.state == NodeState.FAILED and node.n_failures == 1 and node.error == "ValueError: bad input"
    assert node.n_teardown == 1 and not node.gave_up and gave_up == []
    [e] = ev.log
    assert (e["kind"], e["node"], e["severity"], e["sample"]) == ("node_failed", "dec", "halt", 42)
    assert e["error"] == "ValueError: bad input" and e["n_failures"] == 1
    assert "dec" in e["message"] and "ValueError: bad input" in e["message"]
    tb = e["traceback"].splitlines()
    assert tb[0] == "Traceback (most recent call last):" and tb[1].startswith("  File ") and "in step" in tb[-3]
    assert tb[-1] == "ValueError: bad input"
    assert sup.due() == ["dec"]                                # no backoff: due at once


@pytest.mark.req("SR-13")
def test_the_traceback_in_the_event_keeps_the_innermost_frames_where_it_raised():
    sup, _, ev, _ = _sup()
    node = Flaky()
    try:
        _raise_deep(12)
    except Deep as exc:
        sup.failed(node, RestartPolicy(), exc)
    tb = ev.log[0]["traceback"].splitlines()
    frames = [ln for ln in tb if ln.startswith("  File ")]
    assert len(frames) == 6                                     # bounded: the event is kept in summary.json
    assert all("_raise_deep" in f or "_deeper" in f for f in frames)
    assert tb[-2].strip() == 'raise Deep("at the bottom")' and tb[-1].endswith("Deep: at the bottom")


@pytest.mark.req("SR-04", "SR-13")
def test_a_failure_is_logged_as_an_error_naming_node_and_error(caplog):
    sup, _, _, _ = _sup()
    caplog.set_level(logging.DEBUG, logger="cortexlink.runtime.supervisor")
    _fail(sup, Flaky("dec7"), RestartPolicy())
    recs = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert recs[0] == (logging.ERROR, "node dec7 failed: ValueError: bad input")
    assert recs[1][0] == logging.DEBUG and recs[1][1].startswith("node dec7 failed:\nTraceback (most recent call")
    assert recs[1][1].endswith("ValueError: bad input\n")


def test_a_failing_teardown_is_logged_as_a_warning(caplog):
    sup, _, _, _ = _sup()
    caplog.set_level(logging.WARNING, logger="cortexlink.runtime.supervisor")
    _fail(sup, Flaky("dec8", teardown_raises=True), RestartPolicy())
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno == logging.WARNING] == [
        (logging.WARNING, "teardown of failed node dec8 raised RuntimeError: teardown broke")]


@pytest.mark.req("SR-04")
def test_a_non_critical_node_failure_is_a_warning():
    sup, _, ev, _ = _sup()
    _fail(sup, Flaky("ui", critical=False), RestartPolicy(max_restarts=0))
    assert [(e["kind"], e["severity"]) for e in ev.log] == [("node_failed", "warning"), ("node_stopped", "warning")]


@pytest.mark.req("SR-04", "SR-13")
def test_restart_runs_setup_again_and_reports_it():
    sup, clock, ev, _ = _sup()
    node = Flaky()
    _fail(sup, node, RestartPolicy())
    assert sup.restart(node, sample=9) is True
    assert node.state == NodeState.RUNNING and node.n_setup == 1 and node.n_restarts == 1 and node.error is None
    e = ev.log[-1]
    assert (e["kind"], e["node"], e["severity"], e["sample"], e["n_restarts"]) == ("node_restarted", "dec", "info",
                                                                                    9, 1)
    assert "dec" in e["message"] and "1 restart" in e["message"]
    assert sup.due() == []                                     # no longer pending
    _fail(sup, node, RestartPolicy())
    sup.restart(node)
    assert node.n_restarts == 2 and ev.log[-1]["n_restarts"] == 2 and ev.log[-1]["sample"] == -1
    assert "2 restart" in ev.log[-1]["message"]


def test_restart_of_a_node_that_is_not_pending_runs_it_again():
    sup, _, ev, _ = _sup()
    node = Flaky()
    assert sup.restart(node) is True and node.state == NodeState.RUNNING and node.n_restarts == 1
    assert ev.kinds() == ["node_restarted"]


@pytest.mark.req("SR-04")
def test_a_restart_whose_setup_raises_leaves_the_node_down_for_the_caller():
    sup, _, ev, _ = _sup()
    node = Flaky(setup_raises=True)
    _fail(sup, node, RestartPolicy())
    with pytest.raises(OSError, match="device busy"):
        sup.restart(node)
    assert node.state == NodeState.STARTING and node.n_restarts == 0 and node.error == "ValueError: bad input"
    assert sup.due() == [] and ev.kinds() == ["node_failed"]
    sup.failed(node, RestartPolicy(), OSError("device busy"))   # the caller reports it
    assert node.n_failures == 2 and node.error == "OSError: device busy" and sup.due() == ["dec"]


@pytest.mark.req("SR-04")
def test_a_teardown_that_raises_is_not_fatal():
    sup, _, ev, _ = _sup()
    node = Flaky(teardown_raises=True)
    _fail(sup, node, RestartPolicy())
    assert node.n_teardown == 1 and node.state == NodeState.FAILED and sup.due() == ["dec"]
    assert ev.kinds() == ["node_failed"]


# -- backoff ------------------------------------------------------------------------------------------

@pytest.mark.req("SR-04")
def test_the_restart_is_due_exactly_backoff_ms_after_the_failure():
    sup, clock, _, _ = _sup(1 * S)
    node = Flaky()
    _fail(sup, node, RestartPolicy(backoff_ms=100))
    assert sup.due() == []
    clock.t = 1 * S + 100 * MS - 1
    assert sup.due() == []
    clock.t = 1 * S + 100 * MS
    assert sup.due() == ["dec"]
    clock.t = 5 * S
    assert sup.due() == ["dec"]


def test_due_lists_only_the_nodes_whose_backoff_is_over():
    sup, clock, _, _ = _sup(0)
    a, b = Flaky("a"), Flaky("b")
    _fail(sup, a, RestartPolicy(backoff_ms=10))
    _fail(sup, b, RestartPolicy(backoff_ms=30))
    clock.t = 20 * MS
    assert sup.due() == ["a"]
    clock.t = 30 * MS
    assert sup.due() == ["a", "b"]
    sup.restart(a)
    assert sup.due() == ["b"]


# -- window, give-up -------------------------------------------------------------------------------------

@pytest.mark.req("SR-04", "SR-13")
def test_one_failure_more_than_max_restarts_within_the_window_stops_the_node():
    sup, clock, ev, gave_up = _sup(0)
    node = Flaky()
    policy = RestartPolicy(max_restarts=2, window_s=10, backoff_ms=5)
    for i in range(2):                                         # two failures, two restarts
        clock.t = i * S
        _fail(sup, node, policy)
        assert not node.gave_up and node.state == NodeState.FAILED and gave_up == []
        clock.t += 5 * MS
        assert sup.due() == ["dec"]
        sup.restart(node)
    clock.t = 3 * S
    _fail(sup, node, policy, sample=77)                        # the 3rd failure within 10 s
    assert node.state == NodeState.STOPPED and node.gave_up and gave_up == [node]
    assert sup.due() == [] and node.n_failures == 3 and node.n_restarts == 2
    e = ev.log[-1]
    assert (e["kind"], e["node"], e["severity"], e["sample"]) == ("node_stopped", "dec", "halt", 77)
    assert e["n_failures"] == 3 and e["error"] == "ValueError: bad input"
    assert "3 failures within 10 s" in e["message"] and "max_restarts 2" in e["message"]
    assert "ValueError: bad input" in e["message"]
    clock.t = 60 * S
    assert sup.due() == []                                      # never restarted


@pytest.mark.req("SR-04")
def test_max_restarts_zero_stops_at_the_first_failure():
    sup, _, ev, gave_up = _sup()
    node = Flaky()
    _fail(sup, node, RestartPolicy(max_restarts=0))
    assert node.state == NodeState.STOPPED and node.gave_up and gave_up == [node] and sup.due() == []
    assert ev.kinds() == ["node_failed", "node_stopped"]


@pytest.mark.req("SR-04")
def test_failures_older_than_the_window_do_not_count():
    sup, clock, ev, gave_up = _sup(0)
    node = Flaky()
    policy = RestartPolicy(max_restarts=1, window_s=1.0)
    _fail(sup, node, policy)
    sup.restart(node)
    clock.t = 1 * S + 1                                         # the first one is 1 s + 1 ns old: dropped
    _fail(sup, node, policy)
    assert not node.gave_up and sup.due() == ["dec"]
    sup.restart(node)
    clock.t = 2 * S + 1                                         # exactly window_s after the last: counted
    _fail(sup, node, policy)
    assert node.gave_up and gave_up == [node]
    assert "2 failures within 1 s" in ev.log[-1]["message"]


@pytest.mark.req("SR-04")
@pytest.mark.parametrize("second_ns, stops", [(2_500 * MS, True), (2_500 * MS + 1, False), (1, True)])
def test_the_window_is_window_s_long(second_ns, stops):
    sup, clock, _, _ = _sup(7 * S)
    node = Flaky()
    policy = RestartPolicy(max_restarts=1, window_s=2.5)
    _fail(sup, node, policy)
    sup.restart(node)
    clock.t = 7 * S + second_ns
    _fail(sup, node, policy)
    assert node.gave_up is stops


def test_failures_are_counted_per_node():
    sup, _, _, gave_up = _sup()
    a, b = Flaky("a"), Flaky("b")
    policy = RestartPolicy(max_restarts=1)
    _fail(sup, a, policy)
    _fail(sup, b, policy)
    assert not a.gave_up and not b.gave_up
    _fail(sup, a, policy)
    assert a.gave_up and not b.gave_up and gave_up == [a] and sup.due() == ["b"]


def test_give_up_without_a_callback():
    sup = Supervisor(Events(), Clock())
    node = Flaky()
    _fail(sup, node, RestartPolicy(max_restarts=0))
    assert node.gave_up and node.state == NodeState.STOPPED
