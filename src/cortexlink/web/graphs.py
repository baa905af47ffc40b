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

A speech (brain-to-text) session (:mod:`cortexlink.runtime.speech_session`) compiles to its own
loop instead (:func:`speech_operator_graph`): ``task`` (``speech_task`` reading
``operator.commands``: its E-STOP ends the trial in progress and holds the schedule) →
``participant`` → ``implant`` → ``dsp`` → ``phonemes`` → ``words`` → ``task``, an idle
``recorder`` and a ``ui`` feed reading the task's cue and the word decoder's text. Its block
schedule runs by itself (the operator watches, stops, records); the graph keeps running after
the schedule is done, so the last block's figures stay on the page.

A cursor session with a ``stimulation:`` section (:mod:`cortexlink.runtime.stim_session`) gets its
encoders, the ``stim_interlock`` (the cursor's E-STOP stops stimulation) and the implant as the
simulated stimulator, as ``session run`` compiles them; the delivered pulses and the interlock's
status also go to the recorder and to the ``ui`` feed (the page's stimulation panel).
:func:`stim_operator_graph` gives a session without one touch feedback.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ConfigError
from cortexlink.runtime.graph import OPERATOR_TOPIC

__all__ = ["operator_graph", "speech_operator_graph", "stim_operator_graph", "check_operator_graph", "resolve_graph", "OPERATOR_TOPIC"]


def _block_defaults(blocks: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for b in blocks:
        if b["kind"] == "calibration" and "calibration" not in out:
            out["calibration"] = {"task": b.get("task", "centre_out"), "seconds": b.get("seconds"),
                                  "task_params": b.get("task_params") or {}}
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
    from cortexlink.runtime.speech_session import is_speech_session

    cfg = load_session(session)
    if n_channels is not None:
        cfg["implant"]["n_channels"] = check_positive("n_channels", n_channels, integer=True)
        if cfg.get("stimulation"):
            cfg["stimulation"].pop("n_electrodes", None)      # the default limits: every channel of the implant
        cfg = load_session(cfg)
    if is_speech_session(cfg):
        return speech_operator_graph(cfg, record_dir=record_dir, participant_id=participant_id, max_hz=max_hz)
    dt_ms = cfg["loop"]["dt_s"] * 1000.0
    op = OPERATOR_TOPIC
    nodes = loop_nodes(cfg, chunk_ms=chunk_ms)
    stim = cfg.get("stimulation")
    if stim:
        from cortexlink.runtime.stim_session import add_stimulation

        add_stimulation(nodes, stim)
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
    if stim:
        for n in (ui, nodes["recorder"]):
            n["inputs"].update(stim={"from": "implant.stim", "maxlen": 1 << 14}, stim_status="stim.status")
    nodes["cursor"] = nodes.pop("cursor")          # the shipped graph's order: recorder, cursor, ui
    nodes["ui"] = ui
    return {"name": cfg["name"], "bin_ms": dt_ms, "clock": "realtime", "stats_after_s": 1.0,
            # the watchdog's stall limit leaves room for a busy machine running a browser too
            "watchdog": {"stall_ms": 250, "output_timeout_ms": 250}, "nodes": nodes}


def speech_operator_graph(cfg: dict, *, record_dir: str | Path | None = None, participant_id: str = "sim-0001",
                          max_hz: float = 60.0) -> dict:
    """The operator graph of a validated speech session (see the module docstring)."""
    from cortexlink.runtime.speech_session import speech_session_to_graph

    op = OPERATOR_TOPIC
    g = speech_session_to_graph(cfg, clock="realtime")
    nodes = g["nodes"]
    nodes["task"]["params"]["stop_when_done"] = False          # the figures stay on the page
    nodes["task"]["inputs"]["operator"] = op
    nodes["dsp"]["params"]["full_rows"] = True
    nodes["dsp"]["inputs"]["operator"] = op
    nodes["recorder"] = {"kind": "recorder", "params": {
        "record_dir": None if record_dir is None else str(record_dir), "participant_id": participant_id},
        "inputs": {"raw": "implant.raw", "features": "dsp.features", "phonemes": "phonemes.frames",
                   "events": "task.events", "operator": op}}
    nodes["ui"] = {"kind": "ui_feed", "params": {"operator": True, "max_hz": max_hz, "session": cfg["name"]},
                   "inputs": {"speech_cue": "task.cue", "speech_text": "words.text", "activity": "dsp.features"}}
    return {"name": cfg["name"], "bin_ms": g["bin_ms"], "clock": "realtime", "stats_after_s": 1.0, "nodes": nodes}


def stim_operator_graph(session: Any = None, *, touch: dict | None = None, limits: dict | None = None,
                        **kw: Any) -> dict:
    """:func:`operator_graph` of ``session`` with touch feedback: its ``stimulation:`` section, or
    (without one, or with ``touch`` or ``limits`` given) ``{touch: {config: touch}, limits: limits}``
    (``touch``: :class:`~cortexlink.stim.touch.TouchConfig` fields; ``limits``: a
    :class:`~cortexlink.stim.limits.SafetyLimits` mapping, default the default limits for every
    electrode of the implant). ``kw``: :func:`operator_graph`'s.

    Raises
    ------
    ConfigError
        The session runs no implant (decoder ``perfect``) or the section is invalid (naming the field).
    """
    from cortexlink.runtime.session import load_session

    cfg = load_session(session)
    if not cfg.get("stimulation") or touch is not None or limits is not None:
        cfg["stimulation"] = {"touch": {"config": dict(touch or {})}, **({} if limits is None else {"limits": limits})}
    return operator_graph(cfg, **kw)


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
    talks to: ``{"graph", "cursor", "task", "ui", "dsp", "recorder"}`` (``cursor`` None in a speech
    graph, ``task`` its ``speech_task``, else None; dsp and recorder: the nodes that read
    ``operator.commands``, or None).

    Raises
    ------
    ConfigError
        No interactive cursor and no speech task reading ``operator.commands`` (then the UI would
        have no E-STOP), or no ``ui_feed`` with ``operator: true`` reading that cursor's state
        (that speech task's cue).
    """
    from cortexlink.runtime.graph import load_graph

    g = load_graph(graph)
    name = g.get("name", "graph")
    cursors = [n for n, s in g["nodes"].items() if s["kind"] == "cursor"]
    ok = [n for n in cursors if _reads_operator(g["nodes"][n])]
    tasks = [n for n, s in g["nodes"].items() if s["kind"] == "speech_task"]
    if not cursors and tasks:
        return _check_speech(g, name, tasks)
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
    return {"graph": g, "cursor": cursor, "task": None, "ui": uis[0], **_readers(g)}


def _readers(g: dict) -> dict:
    dsp = next((n for n, s in g["nodes"].items() if s["kind"] == "dsp" and _reads_operator(s)), None)
    rec = next((n for n, s in g["nodes"].items() if s["kind"] == "recorder" and _reads_operator(s)), None)
    return {"dsp": dsp, "recorder": rec}


def _check_speech(g: dict, name: str, tasks: list[str]) -> dict:
    ok = [n for n in tasks if _reads_operator(g["nodes"][n])]
    if not ok:
        raise ConfigError(f"graph {name!r} cannot be served: the operator UI needs its speech_task node(s) {tasks} "
                          f"to read {OPERATOR_TOPIC!r} (input 'operator', for the emergency stop); the UI never runs "
                          "without a working E-STOP (serve a speech session with --session to get one)")
    task = ok[0]
    uis = [n for n, s in g["nodes"].items() if s["kind"] == "ui_feed" and s["params"]["operator"]
           and s["inputs"].get("speech_cue", {}).get("from") == f"{task}.cue"]
    if not uis:
        raise ConfigError(f"graph {name!r} cannot be served: it needs a ui_feed node with params.operator: true "
                          f"whose input 'speech_cue' reads {task}.cue (what the page shows)")
    return {"graph": g, "cursor": None, "task": task, "ui": uis[0], **_readers(g)}
