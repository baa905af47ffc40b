"""Graph files: validation errors name the node and the field; the shipped graph loads."""

import copy

import pytest

from cortexlink import ConfigError
from cortexlink.runtime.graph import builtin_graph, load_graph
from cortexlink.runtime.session import session_to_graph

BASE = {
    "name": "t",
    "clock": "fast",
    "nodes": {
        "src": {"kind": "sim_source", "params": {"config": {"n_channels": 16}}},
        "dsp": {"kind": "dsp", "inputs": {"raw": "src.raw"}},
        "sink": {"kind": "sink", "inputs": {"data": "dsp.features"}},
    },
}


def _with(**changes):
    g = copy.deepcopy(BASE)
    for path, value in changes.items():
        keys = path.split("__")
        d = g
        for k in keys[:-1]:
            d = d.setdefault(k, {})
        d[keys[-1]] = value
    return g


def test_valid_graph_fills_defaults_and_orders_nodes():
    g = load_graph(BASE)
    assert g["order"] == ["src", "dsp", "sink"]
    assert g["nodes"]["dsp"]["inputs"]["raw"] == {"from": "src.raw", "maxlen": 256, "policy": "drop_oldest",
                                                  "feedback": False}
    assert g["nodes"]["src"]["params"]["chunk_ms"] == 1.0
    assert g["nodes"]["dsp"]["where"] == "main" and g["nodes"]["sink"]["critical"] is False


@pytest.mark.parametrize("changes, match", [
    ({"nodes__dsp__kind": "fft"}, r"nodes\.dsp\.kind: node kind must be one of"),
    ({"nodes__dsp__params": {"extractor": {"reference": "median"}}}, r"nodes\.dsp\.params\.extractor is invalid.*reference"),
    ({"nodes__dsp__params": {"feature_kinds": ["spikes"]}}, r"nodes\.dsp\.params\.feature_kinds must be"),
    ({"nodes__dsp__params": {"bogus": 1}}, r"nodes\.dsp\.params has unknown key\(s\) \['bogus'\]"),
    ({"nodes__src__params": {"chunk_ms": 0.01}}, r"nodes\.src\.params\.chunk_ms must be a whole number"),
    ({"nodes__src__params": {"chunk_ms": "1"}}, r"nodes\.src\.params\.chunk_ms must be a finite number"),
    ({"nodes__src__params": {"config": {"n_channels": -3}}}, r"nodes\.src\.params\.config is invalid"),
    ({"nodes__dsp__inputs": {"raw": "nowhere.raw"}}, r"nodes\.dsp\.inputs\.raw\.from names node 'nowhere'"),
    ({"nodes__dsp__inputs": {"raw": "src.spikes"}}, r"nodes\.dsp\.inputs\.raw\.from: src \(sim_source\) has no output 'spikes'"),
    ({"nodes__dsp__inputs": {"raw": {"from": "src.raw", "policy": "drop_newest"}}},
     r"nodes\.dsp\.inputs\.raw\.policy must be one of \['block', 'drop_oldest', 'fail'\]"),
    ({"nodes__dsp__inputs": {"raw": {"from": "src.raw", "maxlen": 0}}}, r"nodes\.dsp\.inputs\.raw\.maxlen must be"),
    ({"nodes__dsp__inputs": {"lfp": "src.raw"}}, r"nodes\.dsp\.inputs\.lfp: dsp has no input 'lfp'"),
    ({"nodes__dsp__inputs": {}}, r"nodes\.dsp\.inputs\.raw is required"),
    ({"nodes__dsp__where": "gpu"}, r"nodes\.dsp\.where must be one of"),
    ({"nodes__dsp__restart": {"max_restarts": -1}}, r"nodes\.dsp\.restart\.max_restarts must be"),
    ({"nodes__dsp__inject": {"fail_at": [3]}}, r"nodes\.dsp\.inject has unknown key"),
    ({"bin_ms": 20.01}, r"bin_ms must be a whole number of samples at the source's 30000 Hz"),
    ({"clock": "slow"}, r"clock must be one of"),
    ({"watchdog": {"stall_ms": 0}}, r"watchdog\.stall_ms must be"),
    ({"extra": 1}, r"graph has unknown key\(s\) \['extra'\]"),
    ({"nodes__dsp__cpus": [1, 1]}, r"nodes\.dsp\.cpus must be a non-empty list of distinct CPU numbers"),
    ({"nodes__dsp__cpus": "0"}, r"nodes\.dsp\.cpus must be a non-empty list"),
    ({"nodes__dsp__cpus": [-1]}, r"nodes\.dsp\.cpus must be"),
    ({"bus": {"kind": "redis", "server_cpus": []}}, r"bus\.server_cpus must be a non-empty list"),
    ({"bus": {"kind": "redis", "socket": "shm"}}, r"bus\.socket must be one of \['unix', 'tcp'\]"),
])
def test_errors_name_the_node_and_field(changes, match):
    with pytest.raises(ConfigError, match=match):
        load_graph(_with(**changes))


def test_cycle_needs_a_feedback_edge():
    g = {"nodes": {"a": {"kind": "sink", "inputs": {"data": "b.intent"}},
                   "b": {"kind": "participant", "inputs": {"cursor": {"from": "c.state", "feedback": False}}},
                   "d": {"kind": "bin_clock", "inputs": {"after": "b.intent"}},
                   "c": {"kind": "cursor", "inputs": {"intent": "d.tick", "participant": "b.intent"}}}}
    with pytest.raises(ConfigError, match=r"form a cycle; mark the input that closes the loop"):
        load_graph(g)
    g["nodes"]["b"]["inputs"]["cursor"]["feedback"] = True
    assert load_graph(g)["order"].index("b") < load_graph(g)["order"].index("c")


def test_cursor_blocks_are_validated_like_a_session():
    g = _with(nodes__dec={"kind": "decoder", "inputs": {"features": "dsp.features"}},
              nodes__cur={"kind": "cursor", "inputs": {"intent": "dec.intent"},
                          "params": {"blocks": [{"kind": "evaluation", "task": "tetris", "seconds": 5}]}})
    with pytest.raises(ConfigError, match=r"nodes\.cur\.params\.blocks\[0\]\.task must be one of"):
        load_graph(g)


def test_builtin_closed_loop_graph_loads_and_yaml_text_too():
    assert builtin_graph("closed_loop").is_file()
    g = load_graph("closed_loop")
    assert {"participant", "implant", "dsp", "decoder", "cursor", "recorder", "ui"} <= set(g["nodes"])
    assert g["nodes"]["participant"]["inputs"]["cursor"]["feedback"] is True
    assert g["order"].index("participant") < g["order"].index("implant") < g["order"].index("cursor")
    text = "nodes:\n  s: {kind: sim_source, params: {config: {n_channels: 8}}}\n  k: {kind: sink, inputs: {data: s.raw}}\n"
    assert load_graph(text)["order"] == ["s", "k"]
    with pytest.raises(ConfigError, match="does not exist"):
        load_graph("no/such/graph.yaml")


def test_the_perfect_decoder_compiles_to_a_graph_without_an_implant():
    s = {"decoder": {"kind": "perfect"}, "blocks": [{"kind": "evaluation", "task": "webgrid", "seconds": 5}]}
    g = load_graph(session_to_graph(s, trace=True))
    assert "implant" not in g["nodes"] and "decoder" not in g["nodes"]
    assert g["nodes"]["clock"]["kind"] == "bin_clock"
    assert g["nodes"]["cursor"]["inputs"]["intent"]["from"] == "clock.tick"
    assert g["order"].index("participant") < g["order"].index("clock") < g["order"].index("cursor")
    with pytest.raises(ConfigError, match="nothing to record"):
        session_to_graph(s, recorder=True)
    with pytest.raises(ConfigError, match="no dsp or decoder"):
        session_to_graph(s, placement="subprocess")


def test_a_process_is_pinned_to_the_cpus_of_its_nodes():
    import os

    from cortexlink.runtime.processes import pin_cpus
    from cortexlink.runtime.runner import run_graph

    cpu = max(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    g = _with(nodes__dsp__cpus=[cpu], seconds=0.05)
    try:
        res = run_graph(g)
        assert res["cpus"] == [cpu]
        assert os.sched_getaffinity(0) == before            # undone at the end of the run
    finally:
        pin_cpus(sorted(before), "restore")          # every thread of the test process
    with pytest.raises(ConfigError, match=r"CPU\(s\) \[4096\] are not available here"):
        run_graph(_with(nodes__dsp__cpus=[4096], seconds=0.05))


def test_latency_bench_cpu_plan():
    from cortexlink.bench.latency import plan_cpus

    assert plan_cpus("redis", "pipeline", [0]) == {}
    assert plan_cpus("inprocess", None, [0, 1]) == {"main": [1]}
    assert plan_cpus("redis", "pipeline", [0, 1]) == {"main": [0], "redis": [0], "pipeline": [1]}
    assert plan_cpus("redis", "split", [0, 1]) == {"main": [0], "redis": [0], "dsp": [1]}
    assert plan_cpus("redis", "split", [0, 1, 2, 3, 4, 5]) == {"main": [0], "redis": [1], "dsp": [2],
                                                               "decoder": [3], "cursor": [4]}


def test_an_edge_between_ports_of_different_message_kinds_is_refused():
    from cortexlink.runtime.messages import MESSAGE_KINDS
    from cortexlink.runtime.node import BUILTIN_NODES, node_class

    g = {"name": "miswired", "clock": "fast", "seconds": 1.0, "nodes": {
        "src": {"kind": "sim_source", "params": {"config": {"n_channels": 8}}},
        "dsp": {"kind": "dsp", "inputs": {"raw": "src.raw"}},
        "cursor": {"kind": "cursor", "inputs": {"intent": "dsp.features"}}}}
    with pytest.raises(ConfigError, match=r"nodes\.cursor\.inputs\.intent: .*'decoded_intent'.*dsp\.features sends 'features'"):
        load_graph(g)
    g["nodes"]["cursor"]["inputs"]["intent"] = "runtime.faults"           # a built-in topic has a kind too
    with pytest.raises(ConfigError, match="runtime.faults sends 'fault'"):
        load_graph(g)
    # every built-in port names a kind that exists, and the shipped graphs are wired consistently
    for kind in BUILTIN_NODES:
        cls = node_class(kind)
        outs = cls.OUTPUTS.values() if isinstance(cls.OUTPUTS, dict) else ()
        ins = [k for spec in cls.INPUTS.values() if spec.message
               for k in ((spec.message,) if isinstance(spec.message, str) else spec.message)]
        assert set(outs) | set(ins) <= set(MESSAGE_KINDS), kind
    for name in ("closed_loop", "operator"):
        load_graph(builtin_graph(name))
