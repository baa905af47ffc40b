"""Node lifecycle, published state and counters; the supervisor; the recorder keeps recording."""

import pytest

from cortexlink import ConfigError
from cortexlink.bench.latency import prepare_data
from cortexlink.io.session_log import SessionReader
from cortexlink.runtime.node import BUILTIN_NODES, NODE_KINDS, Node, Param, PortSpec, node_class, register_node
from cortexlink.runtime.runner import GraphRunner, run_graph

CALLS: list = []


@register_node
class _Probe(Node):
    """Records its lifecycle and the states it could see while running."""

    kind = "test_probe"
    CRITICAL = False
    INPUTS = {"data": PortSpec(maxlen=8, policy="drop_oldest", required=True)}
    OUTPUTS = ("echo",)
    PARAMS = {"tag": Param("str", "p")}

    def setup(self):
        CALLS.append(("setup", self.state))

    def step(self, inbox, now_ns):
        if not CALLS or CALLS[-1][0] != "step":
            CALLS.append(("step", self.state, self.ctx.bus.states().get(self.name, {}).get("state")))
        for m in inbox["data"]:
            self.emit("echo", {"n": 1}, sample=m.sample, t_enter_ns=m.t_enter_ns)

    def teardown(self):
        CALLS.append(("teardown", self.state))


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    return prepare_data(16, 1.0, tmp_path_factory.mktemp("life"), seed=4)


def test_lifecycle_states_and_counters():
    CALLS.clear()
    g = {"name": "life", "clock": "fast", "seconds": 2.0, "nodes": {
        "src": {"kind": "sim_source", "params": {"config": {"n_channels": 16}, "seed": 1}},
        "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}}, "inputs": {"raw": "src.raw"}},
        "probe": {"kind": "test_probe", "inputs": {"data": "dsp.features"}},
        "sink": {"kind": "sink", "inputs": {"data": "probe.echo"}},
    }}
    runner = GraphRunner(g)
    res = runner.run()
    assert [c[0] for c in CALLS] == ["setup", "step", "teardown"]
    assert CALLS[0][1] == "starting" and CALLS[1][1:] == ("running", "running") and CALLS[2][1] == "running"
    n = res["nodes"]
    assert all(v["state"] == "stopped" for v in n.values())
    assert n["src"]["n_out"] == 2000 and n["src"]["n_steps"] == 2000          # 2 s of 1 ms chunks
    assert n["dsp"]["n_in"] == 2000 and n["dsp"]["n_out"] == 100              # 20 ms bins
    assert n["probe"]["n_in"] == 100 == n["probe"]["n_out"] == n["sink"]["summary"]["n"]
    assert n["dsp"]["step_mean_ms"] > 0 and n["dsp"]["latency"]["hops"]["raw"]["n"] == 2000
    assert res["edges"]["src.raw->dsp.raw"] == {"policy": "drop_oldest", "maxlen": 256, "n_received": 2000,
                                                "n_dropped": 0}
    assert res["seconds"] == pytest.approx(2.0) and res["stop_reason"].startswith("2 s of source time")
    # the published state is what the nodes report
    states = runner.bus.states()
    assert states["dsp"]["state"] == "stopped" and states["dsp"]["n_out"] == 100
    assert "test_probe" in NODE_KINDS


def test_builtin_registry_names_every_builtin_node():
    import importlib

    import cortexlink.runtime.nodes as nodes

    builtin = {k: c for k, c in NODE_KINDS.items() if c.__module__.startswith("cortexlink.runtime.nodes.")}
    assert builtin.keys() == BUILTIN_NODES.keys()
    for kind, target in BUILTIN_NODES.items():
        module, _, name = target.partition(":")
        cls = getattr(importlib.import_module(module), name)
        assert node_class(kind) is cls and cls.kind == kind and getattr(nodes, name) is cls


def _sup_graph(replay, *, critical):
    return {"name": "sup", "clock": "fast", "seconds": 2.0,
            "watchdog": {"output_timeout_ms": 0},
            "nodes": {
                "source": {"kind": "replay_source", "params": {"path": replay["data"]}},
                "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}}, "inputs": {"raw": "source.raw"}},
                "decoder": {"kind": "decoder", "params": {"path": replay["decoder"], "click": False},
                            "inputs": {"features": "dsp.features"}, "inject": {"fail_at_steps": [40, 41, 42, 43]},
                            "restart": {"max_restarts": 2, "window_s": 60}, "critical": critical},
                "cursor": {"kind": "cursor", "inputs": {"intent": "decoder.intent"}},
                "gates": {"kind": "sink", "params": {"keep": 100}, "inputs": {"data": "cursor.gate"}},
                "recorder": {"kind": "recorder", "params": {"raw": True},
                             "inputs": {"raw": "source.raw", "features": "dsp.features", "intent": "decoder.intent"}},
            }}


@pytest.mark.req("SR-04")
def test_supervisor_restarts_then_stops_a_failing_non_critical_node_while_the_run_and_recording_go_on(replay, tmp_path):
    res = run_graph(_sup_graph(replay, critical=False), out_dir=tmp_path)
    dec = res["nodes"]["decoder"]
    assert dec["state"] == "stopped" and dec["gave_up"] is True
    assert dec["n_failures"] == 3 and dec["n_restarts"] == 2
    kinds = [e["kind"] for e in res["faults"]]
    assert kinds.count("node_failed") == 3 and kinds.count("node_restarted") == 2 and kinds.count("node_stopped") == 1
    assert res["stop_reason"].startswith("2 s of source time") and res["failure"] is None   # the session went on
    rec = res["nodes"]["recorder"]
    assert rec["state"] == "stopped" and rec["n_failures"] == 0
    reader = SessionReader(rec["summary"]["path"])
    raw = reader.read_array("raw")
    n_raw = raw[1].shape[0] if isinstance(raw, tuple) else raw.shape[0]
    assert n_raw == 2000 * 30                                                    # every sample, after the stop too
    faults = [e for e in reader.events() if e["kind"] == "fault"]
    assert {"node_failed", "node_restarted", "node_stopped"} <= {e["fault_kind"] for e in faults}


@pytest.mark.req("SR-04")
def test_a_critical_node_given_up_on_halts_the_cursor_then_ends_the_run_naming_it(replay, tmp_path):
    runner = GraphRunner(_sup_graph(replay, critical=True), out_dir=tmp_path)
    res = runner.run()
    dec = res["nodes"]["decoder"]
    assert dec["state"] == "stopped" and dec["gave_up"] is True and dec["n_failures"] == 3
    f = res["failure"]
    assert f["kind"] == "node_stopped" and f["node"] == "decoder" and "InjectedFault" in f["error"]
    assert "critical node decoder" in f["message"] and res["stop_reason"].startswith("node_stopped: critical node")
    # promptly: 2 s of source were asked for; the run ended within a bin of the give-up (virtual time)
    stopped = next(e for e in res["faults"] if e["kind"] == "node_stopped")
    assert res["seconds"] < 2.0 and res["seconds"] * 1e9 - stopped["t_ns"] <= 20_000_000
    # the cursor was halted before the end: the watchdog's halt is the last word of the gate
    down = [e for e in res["faults"] if e["kind"] == "node_down" and e["node"] == "decoder"]
    assert down[-1]["severity"] == "halt" and down[-1]["mono_ns"] >= stopped["mono_ns"]
    gates = [m.payload for m in runner.by_name["gates"].node.kept]
    assert gates[-1].halted and gates[-1].velocity == (0.0, 0.0)
    # the recording is complete and closed, with the failure in its events
    rec = res["nodes"]["recorder"]
    reader = SessionReader(rec["summary"]["path"])
    assert reader.manifest["state"] == "closed"
    assert "node_stopped" in {e["fault_kind"] for e in reader.events() if e["kind"] == "fault"}


def test_setup_errors_name_the_node(tmp_path):
    g = {"clock": "fast", "seconds": 0.1, "nodes": {
        "src": {"kind": "replay_source", "params": {"path": str(tmp_path / "missing.npy")}},
        "sink": {"kind": "sink", "inputs": {"data": "src.raw"}}}}
    with pytest.raises(ConfigError, match=r"nodes\.src\.params\.path .*missing\.npy does not exist"):
        run_graph(g)


def test_dropped_messages_are_counted_and_recorded_as_events():
    g = {"name": "drops", "clock": "fast", "seconds": 1.0, "nodes": {
        "src": {"kind": "sim_source", "params": {"config": {"n_channels": 8}, "chunk_ms": 100}},
        "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.2}}, "inputs": {"raw": "src.raw"}},
        "sink": {"kind": "sink", "inputs": {"data": {"from": "dsp.features", "maxlen": 2}}},   # 5 bins per chunk
        "ui": {"kind": "ui_feed", "inputs": {"features": "dsp.features"}},
    }}
    runner = GraphRunner(g)
    res = runner.run()
    edge = res["edges"]["dsp.features->sink.data"]
    assert edge["n_received"] == 50 and edge["n_dropped"] == 30 and res["nodes"]["sink"]["summary"]["n"] == 20
    events = [e for e in res["faults"] if e["kind"] == "dropped"]
    assert sum(e["n"] for e in events) == 30 and all(e["edge"] == "dsp.features->sink.data" for e in events)
    # the UI feed keeps only the newest value: its superseded messages are counted, not reported as faults
    assert res["edges"]["dsp.features->ui.features"]["n_dropped"] == 40
    snap = runner.bus.get_info("ui/snapshot")
    assert snap == runner.by_name["ui"].node.snapshot() and snap["features"]["bin"] == 49
    assert snap["nodes"]["dsp"]["state"] == "running"


@pytest.mark.req("SR-04")
def test_a_restarted_source_goes_on_from_where_it_stopped():
    g = {"name": "src-restart", "clock": "fast", "seconds": 1.0, "nodes": {
        "src": {"kind": "sim_source", "params": {"config": {"n_channels": 8}}, "inject": {"fail_at_steps": [300]}},
        "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.2}}, "inputs": {"raw": "src.raw"}},
    }}
    res = run_graph(g)
    src, dsp = res["nodes"]["src"], res["nodes"]["dsp"]
    assert src["n_failures"] == 1 and src["n_restarts"] == 1
    assert dsp["n_failures"] == 0 and dsp["n_in"] == src["n_out"] == 999     # one tick lost to the failure
    assert [e["kind"] for e in res["faults"]] == ["node_failed", "node_restarted"]


def test_repeated_drops_of_an_edge_are_reported_at_most_every_few_seconds_with_exact_counts():
    from cortexlink.runtime.lifecycle import DROP_REPORT_S

    # a non-critical consumer stopped for good at its 5th step: its input overflows every chunk
    # from then on, for the rest of the run (realtime: about 2.5 s of housekeeping every 100 ms)
    g = {"name": "drop-flood", "clock": "realtime", "seconds": 2.5, "nodes": {
        "src": {"kind": "sim_source", "params": {"config": {"n_channels": 8}, "chunk_ms": 5}},
        "sink": {"kind": "sink", "inputs": {"data": {"from": "src.raw", "maxlen": 4}}, "critical": False,
                 "inject": {"fail_at_steps": [5]}, "restart": {"max_restarts": 0}},
    }}
    res = run_graph(g)
    assert res["failure"] is None and res["nodes"]["sink"]["gave_up"]
    events = [e for e in res["faults"] if e["kind"] == "dropped"]
    edge = res["edges"]["src.raw->sink.data"]
    assert edge["n_dropped"] > 100 and sum(e["n"] for e in events) == edge["n_dropped"]    # every drop counted
    assert 1 <= len(events) <= 2 + int(res["wall_s"] // DROP_REPORT_S)                      # not ten a second
