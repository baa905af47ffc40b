"""Graph files: the nodes of a closed loop, their parameters, connections and placement.

A graph is YAML (or the same structure as a dict)::

    name: closed-loop
    bin_ms: 20                 # loop period: feature bin, decoder step, cursor update
    clock: realtime            # realtime: sources paced by the wall clock; fast: as fast as possible
    seconds: null              # run length in source time (null: until a node ends the run)
    stats_after_s: 0           # latency statistics from this source time on (skip warm-up)
    deadline_ms: null          # a chunk must be processed within this (default: the source's chunk period)
    bus: {kind: inprocess}     # or {kind: redis, url: auto | redis://host:port | unix:///path}
    watchdog: {stall_ms: 5, max_speed: 10, output_timeout_ms: 100}
    restart: {max_restarts: 3, window_s: 60, backoff_ms: 0}    # default restart policy
    nodes:
      implant:
        kind: sim_source
        params: {preset: default, seed: 0, chunk_ms: 1}
        inputs: {intent: participant.intent}
      dsp:
        kind: dsp
        inputs:
          raw: {from: implant.raw, maxlen: 256, policy: drop_oldest}
        where: subprocess      # main (default) | subprocess | external
        group: pipeline        # subprocess nodes with the same group share a process
      ...

Per node: ``kind`` (see :mod:`cortexlink.runtime.nodes`), ``params`` (checked against the
kind's ``PARAMS``), ``inputs`` (``port: "node.port"`` or ``port: {from, maxlen, policy}``;
``runtime.faults`` is the topic of fault events, ``operator.commands`` the operator's commands,
see :data:`OPERATOR_TOPIC`), ``where`` (``main``: the process that runs
``cortexlink run``; ``subprocess``: a child process it starts, talking over Redis;
``external``: started by hand, e.g. on another host that can reach the Redis URL, with
``cortexlink run --node NAME --redis URL --run-id ID``), ``group``, ``critical`` (its failure
halts the cursor), ``restart`` (its own restart policy), ``inject`` (fault injection for
drills and tests) and ``cpus`` (the CPUs its process may run on, e.g. ``[1]``: a process
pins itself to the union of its nodes' sets; ``bus.server_cpus`` does the same for the
``redis-server`` that ``url: auto`` starts, and ``bus.socket`` says how this host's processes
reach it: ``unix`` (the default; a Unix domain socket in its private directory) or ``tcp``
(127.0.0.1)). With the in-process bus every node runs in this
process whatever ``where`` says.

:func:`load_graph` validates everything and raises :class:`~cortexlink.ConfigError` naming the
field (``nodes.dsp.params.extractor``, ``nodes.cursor.inputs.intent``, ``bin_ms``);
:func:`~cortexlink.runtime.runner.run_graph` runs a graph;
:func:`~cortexlink.runtime.session.session_to_graph` compiles a session file into one.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_keys
from cortexlink.core.yamlfile import brief
from cortexlink.runtime.bus import POLICIES
from cortexlink.runtime.messages import accepts
from cortexlink.runtime.node import check_params, node_class
from cortexlink.runtime.supervisor import RestartPolicy
from cortexlink.runtime.watchdog import WatchdogConfig

__all__ = ["load_graph", "builtin_graph", "BUILTIN_GRAPHS", "PLACEMENTS",
           "FAULTS_TOPIC", "OPERATOR_TOPIC", "REPLIES_TOPIC", "BUILTIN_TOPICS"]

PLACEMENTS = ("main", "subprocess", "external")
CLOCKS = ("realtime", "fast")
#: How the processes of this host reach the private redis-server of ``url: auto``.
BUS_SOCKETS = ("unix", "tcp")
FAULTS_TOPIC = "runtime.faults"
#: Operator commands (``{"id", "cmd", ...fields}``) from a UI: published by
#: :meth:`~cortexlink.runtime.runner.GraphRunner.send_command` in-process, or appended to the
#: topic's Redis stream by a UI in another process; nodes with an ``operator`` input apply them
#: between bins and answer on :data:`REPLIES_TOPIC` (``{"id", "ok", "result" | "error", "status"}``).
OPERATOR_TOPIC = "operator.commands"
REPLIES_TOPIC = "operator.replies"
#: Topics that no node publishes under its own name (inputs may read them).
BUILTIN_TOPICS = (FAULTS_TOPIC, OPERATOR_TOPIC)
#: The message kind of each built-in topic (:mod:`cortexlink.runtime.messages`).
_BUILTIN_KINDS = {FAULTS_TOPIC: "fault", OPERATOR_TOPIC: "operator_command"}
BUILTIN_GRAPHS = ("closed_loop", "operator")
_TOP = {"name", "bin_ms", "clock", "seconds", "stats_after_s", "deadline_ms", "bus", "watchdog", "restart",
        "nodes"}
_NODE = {"kind", "params", "inputs", "where", "group", "critical", "restart", "inject", "cpus"}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def check_cpus(path: str, cpus: Any) -> list[int] | None:
    """A CPU set (``cpus: [1]``): None, or a non-empty list of distinct CPU numbers >= 0.
    Whether they exist is checked where the process starts (it may be another host)."""
    if cpus is None:
        return None
    if (not isinstance(cpus, (list, tuple)) or not cpus
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in cpus) or len(set(cpus)) != len(cpus)):
        raise ConfigError(f"{path} must be a non-empty list of distinct CPU numbers (integers >= 0); got {brief(cpus)}")
    return sorted(cpus)


def builtin_graph(name: str) -> Path:
    """Path of a graph shipped with cortexlink (``closed_loop``, ``operator``)."""
    from importlib import resources

    if name not in BUILTIN_GRAPHS:
        raise ConfigError(f"built-in graph must be one of {list(BUILTIN_GRAPHS)}; got {brief(name)}")
    return Path(str(resources.files("cortexlink.runtime").joinpath("graphs", f"{name}.yaml")))


def _num(path: str, v: Any, *, positive: bool = True, allow_zero: bool = False, nullable: bool = False) -> Any:
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise ConfigError(f"{path} must be a number; got {brief(v)}")
    if positive and (v < 0 or (v == 0 and not allow_zero)):
        raise ConfigError(f"{path} must be {'>= 0' if allow_zero else '> 0'}; got {brief(v)}")
    return float(v)


def _read(source: Any) -> dict:
    from cortexlink.core.yamlfile import load_yaml, read_yaml_file

    if isinstance(source, dict):
        return copy.deepcopy(source)
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and not source.lstrip().startswith("{")):
        p = Path(source)
        try:
            found = p.is_file()
        except (OSError, ValueError):        # a name too long, a NUL byte in it
            found = False
        if not found:
            if isinstance(source, str) and source in BUILTIN_GRAPHS:
                p = builtin_graph(source)
            else:
                raise ConfigError(f"graph file {brief(str(p))[1:-1]} does not exist (built-in graphs: {list(BUILTIN_GRAPHS)})")
        raw = read_yaml_file(p, what="graph file")
    elif isinstance(source, str):
        raw = load_yaml(source, what="graph")
    else:
        raise ConfigError(f"a graph is a YAML file, a built-in name, YAML text or a dict; got {type(source).__name__}")
    if not isinstance(raw, dict):
        raise ConfigError(f"graph must be a mapping at the top level; got {type(raw).__name__}")
    return raw


def _section(path: str, value: Any) -> dict:
    """A mapping section of the graph (empty when absent), or a ConfigError naming it."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path} must be a mapping; got {brief(value)}")
    return dict(value)


def load_graph(source: str | Path | dict) -> dict:
    """Read and validate a graph (YAML path, built-in name, YAML text or dict); fill defaults.

    Returns
    -------
    dict
        The normalised graph: every node with ``params`` complete, ``inputs`` as
        ``{port: {"from", "maxlen", "policy", "feedback"}}``, and ``order``, the scheduling order
        (feedback edges left out).

    Raises
    ------
    ConfigError
        Naming the field: ``nodes.<node>.params.<key>``, ``nodes.<node>.inputs.<port>``, ...
    """
    raw = _read(source)
    check_keys("graph", raw, _TOP)
    from cortexlink.core.outpath import check_name

    g: dict[str, Any] = {"name": check_name(str(raw.get("name", "graph")), what="graph name")}   # names run folders
    g["bin_ms"] = _num("bin_ms", raw.get("bin_ms", 20.0))
    clock = raw.get("clock", "realtime")
    if clock not in CLOCKS:
        raise ConfigError(f"clock must be one of {list(CLOCKS)}; got {brief(clock)}")
    g["clock"] = clock
    g["seconds"] = _num("seconds", raw.get("seconds"), nullable=True)
    g["stats_after_s"] = _num("stats_after_s", raw.get("stats_after_s", 0.0), allow_zero=True)
    g["deadline_ms"] = _num("deadline_ms", raw.get("deadline_ms"), nullable=True)
    bus = raw.get("bus") or {}
    if not isinstance(bus, dict) or set(bus) - {"kind", "url", "stream_maxlen", "server_cpus", "socket", "chunk_codec",
                                                "chunk_codec_resync"}:
        raise ConfigError(f"bus must be a mapping with kind, url, stream_maxlen, server_cpus, socket, chunk_codec, "
                          f"chunk_codec_resync; got {brief(bus)}")
    if bus.get("kind", "inprocess") not in ("inprocess", "redis"):
        raise ConfigError(f"bus.kind must be 'inprocess' or 'redis'; got {brief(bus.get('kind'))}")
    if bus.get("socket", "unix") not in BUS_SOCKETS:
        raise ConfigError(f"bus.socket must be one of {list(BUS_SOCKETS)}; got {brief(bus.get('socket'))}")
    g["bus"] = {"kind": bus.get("kind", "inprocess"), "url": bus.get("url"),
                "stream_maxlen": int(bus.get("stream_maxlen", 10000)),
                "server_cpus": check_cpus("bus.server_cpus", bus.get("server_cpus")),
                "socket": bus.get("socket", "unix")}
    from cortexlink.runtime.chunk_codec import DEFAULT_RESYNC_FRAMES, check_chunk_codec
    g["bus"]["chunk_codec"], g["bus"]["chunk_codec_resync"] = check_chunk_codec(
        bus.get("chunk_codec", "none"), bus.get("chunk_codec_resync", DEFAULT_RESYNC_FRAMES))
    g["watchdog"] = _section("watchdog", raw.get("watchdog"))
    WatchdogConfig.from_dict(g["watchdog"], "watchdog")
    g["restart"] = _section("restart", raw.get("restart"))
    RestartPolicy.from_dict(g["restart"], "restart")

    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, dict) or not nodes_raw:
        raise ConfigError(f"nodes must be a non-empty mapping of node name -> node; got {brief(nodes_raw)}")
    nodes: dict[str, dict] = {}
    for name, spec in nodes_raw.items():
        path = f"nodes.{name}"
        if not isinstance(name, str) or not _NAME.match(name) or name in ("runtime", "operator"):
            raise ConfigError(f"{path}: a node name must start with a letter and hold only letters, digits, '_' "
                              f"or '-' (and not be 'runtime' or 'operator'); got {brief(name)}")
        if not isinstance(spec, dict):
            raise ConfigError(f"{path} must be a mapping; got {type(spec).__name__}")
        check_keys(path, spec, _NODE)
        if "kind" not in spec:
            raise ConfigError(f"{path}.kind is required")
        if not isinstance(spec["kind"], str):
            raise ConfigError(f"{path}.kind must be a node kind's name; got {brief(spec['kind'])}")
        try:
            cls = node_class(spec["kind"])
        except ConfigError as exc:
            raise ConfigError(f"{path}.kind: {exc}") from exc
        params = check_params(f"{path}.params", cls.PARAMS, spec.get("params"))
        inject = check_params(f"{path}.inject", cls.INJECT, spec.get("inject"))
        where = spec.get("where", "main")
        if where not in PLACEMENTS:
            raise ConfigError(f"{path}.where must be one of {list(PLACEMENTS)}; got {brief(where)}")
        if inject.get("exit_at_steps") and where != "subprocess":
            raise ConfigError(f"{path}.inject.exit_at_steps ends the node's whole process: use it on a node with "
                              f"where: subprocess (this one runs {brief(where)})")
        group = spec.get("group", name)
        if not isinstance(group, str) or not _NAME.match(group):
            raise ConfigError(f"{path}.group must be a name (letters, digits, '_', '-'); got {brief(group)}")
        crit = spec.get("critical", cls.CRITICAL)
        if not isinstance(crit, bool):
            raise ConfigError(f"{path}.critical must be true or false; got {brief(crit)}")
        cpus = check_cpus(f"{path}.cpus", spec.get("cpus"))
        restart = _section(f"{path}.restart", spec.get("restart"))
        RestartPolicy.from_dict({**g["restart"], **restart}, f"{path}.restart")
        nodes[name] = {"kind": spec["kind"], "params": params, "inputs": spec.get("inputs") or {},
                       "where": where, "group": group if where == "subprocess" else (name if where == "external" else "main"),
                       "critical": crit, "restart": {**g["restart"], **restart}, "inject": inject, "cpus": cpus}
    g["nodes"] = nodes

    # inputs
    for name, n in nodes.items():
        cls = node_class(n["kind"])
        ins = n["inputs"]
        if not isinstance(ins, dict):
            raise ConfigError(f"nodes.{name}.inputs must be a mapping port -> 'node.port'; got {brief(ins)}")
        out: dict[str, dict] = {}
        for port, src in ins.items():
            path = f"nodes.{name}.inputs.{port}"
            if port not in cls.INPUTS:
                raise ConfigError(f"{path}: {n['kind']} has no input {brief(port)}; inputs: {sorted(cls.INPUTS)}")
            spec = cls.INPUTS[port]
            if isinstance(src, str):
                src = {"from": src}
            if not isinstance(src, dict) or "from" not in src or set(src) - {"from", "maxlen", "policy", "feedback"}:
                raise ConfigError(f"{path} must be 'node.port' or {{from: node.port, maxlen: N, policy: P}}; got {brief(src)}")
            frm = src["from"]
            if not isinstance(frm, str) or "." not in frm:
                raise ConfigError(f"{path}.from must be 'node.port'; got {brief(frm)}")
            pn, pp = frm.split(".", 1)
            if frm not in BUILTIN_TOPICS:
                if pn not in nodes:
                    raise ConfigError(f"{path}.from names node {brief(pn)}, which is not in the graph; nodes: {sorted(nodes)}")
                pcls = node_class(nodes[pn]["kind"])
                if pp not in pcls.OUTPUTS:
                    raise ConfigError(f"{path}.from: {pn} ({nodes[pn]['kind']}) has no output {brief(pp)}; "
                                      f"outputs: {list(pcls.OUTPUTS)}")
                sent = pcls.OUTPUTS.get(pp) if isinstance(pcls.OUTPUTS, dict) else None
            else:
                sent = _BUILTIN_KINDS.get(frm)
            if not accepts(spec.message, sent):
                raise ConfigError(f"{path}: a {n['kind']} node's {brief(port)} input takes {spec.message!r} messages, "
                                  f"but {frm} sends {brief(sent)}")
            maxlen = src.get("maxlen", spec.maxlen)
            if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
                raise ConfigError(f"{path}.maxlen must be an integer >= 1; got {brief(maxlen)}")
            policy = src.get("policy", spec.policy)
            if policy not in POLICIES:
                raise ConfigError(f"{path}.policy must be one of {list(POLICIES)}; got {brief(policy)}")
            fb = src.get("feedback", spec.feedback)
            if not isinstance(fb, bool):
                raise ConfigError(f"{path}.feedback must be true or false; got {brief(fb)}")
            out[port] = {"from": frm, "maxlen": maxlen, "policy": policy, "feedback": fb}
        if "faults" in cls.INPUTS and "faults" not in out:
            spec = cls.INPUTS["faults"]
            out["faults"] = {"from": FAULTS_TOPIC, "maxlen": spec.maxlen, "policy": spec.policy, "feedback": False}
        for port, spec in cls.INPUTS.items():
            if spec.required and port not in out:
                raise ConfigError(f"nodes.{name}.inputs.{port} is required for a {n['kind']} node")
        n["inputs"] = out
    g["order"] = _order(nodes)
    for name, n in nodes.items():
        node_class(n["kind"]).validate_config(name, n["params"], g)
    return g


def _order(nodes: dict[str, dict]) -> list[str]:
    """Topological order over non-feedback edges (ties in file order); error on a cycle."""
    deps = {n: {s["from"].split(".", 1)[0] for s in v["inputs"].values()
                if not s["feedback"] and s["from"] not in BUILTIN_TOPICS} for n, v in nodes.items()}
    order: list[str] = []
    done: set[str] = set()
    names = list(nodes)
    while len(order) < len(names):
        progressed = False
        for n in names:
            if n not in done and deps[n] <= done:
                order.append(n)
                done.add(n)
                progressed = True
        if not progressed:
            left = [n for n in names if n not in done]
            raise ConfigError(f"nodes {left} form a cycle; mark the input that closes the loop with "
                              "'feedback: true' (it is then read on the next tick)")
    return order
