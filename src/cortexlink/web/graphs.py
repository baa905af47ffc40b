"""The graphs the operator UI runs: built from a session, shipped, or given, and checked.

:func:`operator_graph` compiles a session (:func:`~cortexlink.runtime.session.load_session`:
implant, participant, decoder, click decoder; its blocks give the default length and task
parameters of ``calibrate`` and ``start``) into the interactive closed loop the UI drives:

``participant`` → ``implant`` (sim_source) → ``dsp`` → ``decoder`` → ``cursor`` (interactive: no
schedule, reading ``operator.commands``), an idle ``recorder`` (``record_start``/``record_stop``)
and a ``ui`` feed (``ui_feed`` with ``operator: true``) that publishes what the page shows. The
shipped graph ``operator`` (``runtime/graphs/operator.yaml``) is this graph for the demo session.

:func:`check_operator_graph` refuses a graph the UI cannot drive safely: the UI never runs
without a working E-STOP, so a graph needs a cursor node that reads ``operator.commands``, and
an operator ``ui_feed`` reading that cursor's state.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ConfigError
from cortexlink.runtime.graph import OPERATOR_TOPIC

__all__ = ["operator_graph", "check_operator_graph", "resolve_graph", "OPERATOR_TOPIC"]


def _block_defaults(blocks: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for b in blocks:
        if b["kind"] == "calibration" and "calibration" not in out:
            out["calibration"] = {"seconds": b.get("seconds"), "task_params": b.get("task_params") or {}}
        elif b["kind"] in ("closed_loop", "evaluation") and b.get("task") not in out:
            out[b["task"]] = {"seconds": b.get("seconds"), "max_seconds": b.get("max_seconds"),
                              "task_params": b.get("task_params") or {}}
    return out


def operator_graph(session: Any = None, *, n_channels: int | None = None, record_dir: str | Path | None = None,
                   participant_id: str = "sim-0001", chunk_ms: float = 5.0, max_hz: float = 60.0) -> dict:
    """The interactive graph of a session (see the module docstring).

    Parameters
    ----------
    session : path, YAML text, dict or None
        None: the demo session (:data:`~cortexlink.runtime.session.DEFAULT_SESSION`).
    n_channels : int, optional
        Override the implant's channel count.
    record_dir : path, optional
        Parent folder of recordings started from the UI (default ``runs/recordings``).
    participant_id : str
    chunk_ms : float
        Source chunk length.
    max_hz : float
        Most snapshots per second the ``ui`` node publishes.
    """
    from cortexlink.core.validation import check_positive
    from cortexlink.runtime.session import load_session, loop_nodes

    cfg = load_session(session)
    if n_channels is not None:
        cfg["implant"]["n_channels"] = check_positive("n_channels", n_channels, integer=True)
        cfg = load_session(cfg)
    dt_ms = cfg["loop"]["dt_s"] * 1000.0
    op = OPERATOR_TOPIC
    nodes = loop_nodes(cfg, chunk_ms=chunk_ms)
    cursor = nodes["cursor"]
    cursor["params"]["block_defaults"] = _block_defaults(cfg["blocks"])
    cursor["inputs"]["operator"] = op
    ui = {"kind": "ui_feed", "params": {"operator": True, "max_hz": max_hz, "session": cfg["name"]},
          "inputs": {"cursor": "cursor.state"}}
    if "dsp" in nodes:
        nodes["dsp"]["params"]["full_rows"] = True
        nodes["dsp"]["inputs"]["operator"] = op
        nodes["recorder"] = {"kind": "recorder", "params": {
            "record_dir": None if record_dir is None else str(record_dir), "participant_id": participant_id},
            "inputs": {"raw": "implant.raw", "features": "dsp.features", "intent": "decoder.intent",
                       "bins": "cursor.bins", "events": "cursor.events", "operator": op}}
        ui["inputs"]["activity"] = "dsp.features"
    nodes["cursor"] = nodes.pop("cursor")          # the shipped graph's order: recorder, cursor, ui
    nodes["ui"] = ui
    return {"name": cfg["name"], "bin_ms": dt_ms, "clock": "realtime", "stats_after_s": 1.0,
            # the watchdog's stall limit leaves room for a busy machine running a browser too
            "watchdog": {"stall_ms": 250, "output_timeout_ms": 250}, "nodes": nodes}


def resolve_graph(graph: Any = None, *, session: Any = None, n_channels: int | None = None,
                  record_dir: str | Path | None = None, participant_id: str = "sim-0001") -> dict:
    """The graph to serve: ``graph`` (a shipped name such as ``operator``, a YAML file, YAML text
    or a dict), or the operator graph of ``session`` (``graph`` None). ``n_channels`` overrides the
    simulated implant's channels and ``record_dir`` the idle recorder's folder in either case.

    Raises
    ------
    ConfigError
        Both ``graph`` and ``session`` given, an invalid graph, or one the UI cannot drive
        (:func:`check_operator_graph`).
    """
    from cortexlink.runtime.graph import _read

    if graph is not None and session is not None:
        raise ConfigError("give a graph or a session, not both")
    if graph is None:
        g = operator_graph(session, n_channels=n_channels, record_dir=record_dir, participant_id=participant_id)
    else:
        g = _read(str(graph) if isinstance(graph, Path) else graph)
        for spec in (g.get("nodes") or {}).values():
            if not isinstance(spec, dict):
                continue
            if n_channels is not None and spec.get("kind") == "sim_source":
                spec.setdefault("params", {}).setdefault("config", {})["n_channels"] = int(n_channels)
            if spec.get("kind") == "recorder" and OPERATOR_TOPIC in (spec.get("inputs") or {}).values():
                if record_dir is not None:
                    spec.setdefault("params", {})["record_dir"] = str(record_dir)
                spec.setdefault("params", {}).setdefault("participant_id", participant_id)
    check_operator_graph(g)
    return copy.deepcopy(g)


def _reads_operator(spec: dict) -> bool:
    for src in (spec.get("inputs") or {}).values():
        frm = src.get("from") if isinstance(src, dict) else src
        if frm == OPERATOR_TOPIC:
            return True
    return False


def check_operator_graph(graph: Any) -> dict:
    """Validate ``graph`` (:func:`~cortexlink.runtime.graph.load_graph`) and find the nodes the UI
    talks to: ``{"graph", "cursor", "ui", "dsp", "recorder"}`` (dsp and recorder: the nodes that
    read ``operator.commands``, or None).

    Raises
    ------
    ConfigError
        No interactive cursor reading ``operator.commands`` (then the UI would have no E-STOP),
        or no ``ui_feed`` with ``operator: true`` reading that cursor's state.
    """
    from cortexlink.runtime.graph import load_graph

    g = load_graph(graph)
    name = g.get("name", "graph")
    cursors = [n for n, s in g["nodes"].items() if s["kind"] == "cursor"]
    ok = [n for n in cursors if _reads_operator(g["nodes"][n])]
    if not ok:
        raise ConfigError(f"graph {name!r} cannot be served: the operator UI needs a cursor node whose input "
                          f"'operator' reads {OPERATOR_TOPIC!r} (for the emergency stop and the controls), and "
                          f"it has {'no cursor node' if not cursors else 'none: cursor node(s) ' + str(cursors)}; "
                          "the UI never runs without a working E-STOP (see the shipped graph 'operator')")
    cursor = ok[0]
    if g["nodes"][cursor]["params"]["blocks"]:
        raise ConfigError(f"graph {name!r} cannot be served: its cursor node {cursor!r} runs a fixed block "
                          "schedule (params.blocks); the operator UI drives an interactive cursor (no blocks)")
    uis = [n for n, s in g["nodes"].items() if s["kind"] == "ui_feed" and s["params"]["operator"]
           and s["inputs"].get("cursor", {}).get("from") == f"{cursor}.state"]
    if not uis:
        raise ConfigError(f"graph {name!r} cannot be served: it needs a ui_feed node with params.operator: true "
                          f"whose input 'cursor' reads {cursor}.state (what the page shows)")
    dsp = next((n for n, s in g["nodes"].items() if s["kind"] == "dsp" and _reads_operator(s)), None)
    rec = next((n for n, s in g["nodes"].items() if s["kind"] == "recorder" and _reads_operator(s)), None)
    return {"graph": g, "cursor": cursor, "ui": uis[0], "dsp": dsp, "recorder": rec}
