"""Hostile and malformed graph files: the same bounded loader as session files, and any value in
any field of a graph is a graph or a ConfigError naming the field (property-based)."""

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortexlink import ConfigError
from cortexlink.core.yamlfile import read_yaml_file
from cortexlink.runtime.graph import builtin_graph, load_graph

GRAPH = read_yaml_file(builtin_graph("closed_loop"))


def test_graph_files_go_through_the_bounded_loader(tmp_path):
    p = tmp_path / "g.yaml"
    bomb = 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, 9):
        bomb += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    p.write_text(bomb + "name: *a8\n")
    with pytest.raises(ConfigError, match=r"graph file .*g.yaml is refused: anchors and aliases expand it"):
        load_graph(p)
    with open(p, "wb") as fh:
        fh.truncate(2_000_000)
    with pytest.raises(ConfigError, match=r"graph file .*g.yaml is 2,000,000 bytes; at most 1,000,000"):
        load_graph(p)
    with pytest.raises(ConfigError, match="graph file .* does not exist"):
        load_graph("x" * 5000)


@pytest.mark.parametrize("change, match", [
    (lambda g: g.update(watchdog=True), r"watchdog must be a mapping; got True"),
    (lambda g: g.update(restart=1), r"restart must be a mapping; got 1"),
    (lambda g: g["nodes"][next(iter(g["nodes"]))].update(kind=[]), r"\.kind must be a node kind's name; got \[\]"),
    (lambda g: g.update(name=["x"] * 100000), None),
])
def test_malformed_fields_are_named_briefly(change, match):
    g = copy.deepcopy(GRAPH)
    change(g)
    try:
        load_graph(g)
    except ConfigError as exc:
        assert match is None or __import__("re").search(match, str(exc)), str(exc)
        assert len(str(exc)) < 600
    else:
        assert match is None


_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                       lambda kids: st.lists(kids, max_size=3)
                       | st.dictionaries(st.text(max_size=6) | st.integers(), kids, max_size=3), max_leaves=8)
_names = list(GRAPH["nodes"])
_paths = st.sampled_from(
    [("name",), ("bin_ms",), ("clock",), ("seconds",), ("bus",), ("bus", "kind"), ("bus", "server_cpus"), ("nodes",),
     ("watchdog",), ("restart",), ("deadline_ms",), ("bogus",)]
    + [("nodes", n, k) for n in _names for k in ("kind", "params", "inputs", "where", "group", "critical", "restart")]
    + [("nodes", n, "params", p) for n in _names for p in list(GRAPH["nodes"][n].get("params") or {})[:4]]
    + [("nodes", n, "inputs", p) for n in _names for p in list(GRAPH["nodes"][n].get("inputs") or {})[:3]])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_paths, _values), min_size=1, max_size=3))
def test_any_value_anywhere_gives_a_graph_or_a_config_error(changes):
    g = copy.deepcopy(GRAPH)
    for path, value in changes:
        node = g
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        out = load_graph(g)
    except ConfigError as exc:
        assert len(str(exc)) < 2000, str(exc)[:3000]
    else:
        assert out["nodes"] and out["order"]
