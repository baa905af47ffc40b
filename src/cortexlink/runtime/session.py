"""A closed-loop session described in YAML, compiled to a runtime graph and run there.

A session file names the implant, the participant, the decoder and a list of blocks run in
order::

    name: demo
    seed: 0
    implant: {preset: default, n_channels: 1024}     # a cortexlink.sim preset + ImplantConfig overrides
    participant: {}                                   # ParticipantConfig overrides
    stimulation: {touch: {}}                          # optional: feedback through the safety
                                                      # interlock (runtime.stim_session)
    loop: {dt_s: 0.02}                                # also feature_kinds: [sbp] / [tx, sbp], and
                                                      # link: {codec: rice, max_error_uv: 0} (raw
                                                      # chunks through the codec before the dsp),
                                                      # units: T.npz (sorted units, feature kind su;
                                                      # `cortexlink units fit`)
    effector: {gain: 1.0, smoothing: 0.0}             # CursorEffector: gain, EMA smoothing, refractory_s,
                                                      # dwell_s (dwell-to-select fallback; default off)
    decoder: {kind: refit_kalman, params: {}}         # wiener | kalman | refit_kalman | gru | perfect
      # also: labels (target | cursor | intent), label_lag_s (null: from the data),
      # speed_gain (null | auto | half-gain speed in units/s), velocity_tau_s (Kalman
      # kinds: the velocity prior's correlation time, default 0.06 s; null: fitted to the labels),
      # refit_with_calibration (ReFIT refits on the calibration bins too; default true),
      # refit_intent_lag_s (ReFIT's intention from the cursor this long before: auto | s | null),
      # bias_tau_s (bias correction's time constant, s; default null: off),
      # refit_half_life_s (SmoothBatch: each refit blended with the model it follows; null: ReFIT)
    click_decoder: {enabled: true, params: {}}        # also: freeze_proba (hold the cursor while a click
                                                      # builds up; default 0.3, null: never)
    blocks:
      - {kind: calibration, task: webgrid, seconds: 60, task_params: {n: 30, seed: 1000}}
      - {kind: fit}
      - {kind: closed_loop, task: centre_out, seconds: 40}
      - {kind: refit}
      - {kind: evaluation, task: webgrid, seconds: 120, task_params: {n: 30}}
      - {kind: evaluation, task: chess, task_params: {max_moves: 10}, max_seconds: 900}

Block kinds are those of :mod:`cortexlink.tasks.schedule`. With ``decoder.kind: perfect`` the
cursor follows the participant's intent exactly (the ceiling) and no implant runs.

:func:`load_session` validates a file or dict and raises :class:`~cortexlink.ConfigError`
naming the field (``session.blocks[3].task``) — files are read by the bounded loader of
:mod:`cortexlink.core.yamlfile` (at most 1 MB, no alias bombs), and the decoders' own parameter
checks run here, so that ``session check`` refuses what ``session run`` would; :func:`session_to_graph` compiles it into the
runtime graph (participant, implant, dsp, decoder, cursor, and trace or recorder nodes);
:func:`run_session` runs that graph, in this process by default or with the dsp and decoder in
a child process over Redis (``redis="auto"``), and returns the traces, the tasks and a summary.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.validation import check_choice, check_keys
from cortexlink.runtime._session_common import SessionResult, SessionStopped  # re-exported
from cortexlink.runtime._session_common import check_finished
from cortexlink.runtime._session_common import check_implant as _implant

logger = logging.getLogger(__name__)
__all__ = ["load_session", "session_to_graph", "loop_nodes", "run_session", "DEFAULT_SESSION", "SessionResult",
           "SessionStopped"]


#: The session ``cortexlink demo`` runs: 1024 channels, open-loop calibration on the kind of Webgrid
#: it is evaluated on (other targets: grid seed 1000), ReFIT-Kalman (refitted after 40 s of
#: closed-loop centre-out), two minutes of Webgrid, ten moves of chess. Calibrating on Webgrid
#: rather than centre-out: 8.01 / 7.69 / 7.52 vs 5.48 / 7.52 / 7.28 bps on seeds 0-2 (2026-12-03;
#: 1,024 ch, ``default`` preset, 60 ms velocity prior, ReFIT with the calibration's bins).
DEFAULT_SESSION: dict[str, Any] = {
    "name": "demo",
    "seed": 0,
    "implant": {"preset": "default", "n_channels": 1024},
    "participant": {},
    "loop": {"dt_s": 0.02},
    "decoder": {"kind": "refit_kalman", "params": {}},
    "click_decoder": {"enabled": True, "params": {}},
    "blocks": [
        {"name": "calibration", "kind": "calibration", "task": "webgrid", "seconds": 60.0,
         "task_params": {"n": 30, "seed": 1000}},
        {"name": "fit", "kind": "fit"},
        {"name": "closed-loop", "kind": "closed_loop", "task": "centre_out", "seconds": 40.0,
         "task_params": {"click": True}},
        {"name": "refit", "kind": "refit"},
        {"name": "webgrid", "kind": "evaluation", "task": "webgrid", "seconds": 120.0, "task_params": {"n": 30}},
        {"name": "chess", "kind": "evaluation", "task": "chess", "task_params": {"max_moves": 10},
         "max_seconds": 300.0},
    ],
}

_TOP_KEYS = {"name", "seed", "implant", "participant", "loop", "effector", "decoder", "click_decoder", "blocks",
             "stimulation"}


def _where(path: str, msg: str) -> ConfigError:
    return ConfigError(f"session.{path} {msg}")


def _mapping(path: str, value: Any, allowed: set[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise _where(path, f"must be a mapping; got {type(value).__name__}")
    if allowed is not None:
        check_keys(f"session.{path}", value, allowed)
    return value


def _read(source: Any) -> Any:
    from cortexlink.core.yamlfile import load_yaml, read_yaml_file

    if source is None:
        return copy.deepcopy(DEFAULT_SESSION)
    if isinstance(source, dict):
        return copy.deepcopy(source)
    if isinstance(source, str) and ("\n" in source or ":" in source.split("/")[-1]):
        return load_yaml(source, what="session")             # YAML text
    if not isinstance(source, (str, Path)):
        raise ConfigError(f"a session is a YAML file, YAML text or a dict; got {type(source).__name__}")
    return read_yaml_file(source, what="session file")


def _link(link: Any) -> dict:
    """``session.loop.link`` checked: the ``raw_link`` node's codec, error bound and resync interval."""
    from cortexlink.core.yamlfile import brief
    from cortexlink.runtime.nodes.link import LINK_CODECS

    link = dict(_mapping("loop.link", link, {"codec", "max_error_uv", "resync_frames"}))
    codec = link.setdefault("codec", "rice")
    if codec not in LINK_CODECS:
        raise _where("loop.link.codec", f"must be one of {list(LINK_CODECS)}; got {brief(codec)}")
    err = link.setdefault("max_error_uv", 0.0)
    if isinstance(err, bool) or not isinstance(err, (int, float)) or not np.isfinite(err) or err < 0:
        raise _where("loop.link.max_error_uv", f"must be a number >= 0 (µV; 0: lossless); got {brief(err)}")
    link["max_error_uv"] = float(err)
    rs = link.setdefault("resync_frames", 100)
    if isinstance(rs, bool) or not isinstance(rs, int) or rs < 1:
        raise _where("loop.link.resync_frames", f"must be an integer >= 1; got {brief(rs)}")
    return link


#: Decoder settings of a session passed to its decoder node as they are (see
#: :class:`~cortexlink.runtime.nodes.decoder.DecoderNode`).
DECODER_FIT_OPTIONS = ("labels", "label_lag_s", "speed_gain", "velocity_tau_s", "refit_with_calibration",
                       "refit_intent_lag_s", "bias_tau_s", "refit_half_life_s")


def _node_param(node_cls: Any, key: str, path: str, value: Any) -> Any:
    """``value`` checked as the node's parameter ``key`` would be, errors naming ``session.path``."""
    return node_cls.PARAMS[key].check(f"session.{path}", value)


def _decoder_fit_options(dec: dict) -> None:
    """Check ``decoder.labels``, ``label_lag_s``, ``velocity_tau_s`` and ``speed_gain`` (in place), as
    the decoder node will."""
    from cortexlink.decoders.speed_gain import check_speed_gain
    from cortexlink.runtime.nodes.decoder import DecoderNode

    from cortexlink.decoders.fitting import check_intent_lag

    for key in DECODER_FIT_OPTIONS:
        if key in dec and key not in ("speed_gain", "refit_intent_lag_s"):
            dec[key] = _node_param(DecoderNode, key, f"decoder.{key}", dec[key])
    if "speed_gain" in dec:
        dec["speed_gain"] = check_speed_gain("session.decoder.speed_gain", dec["speed_gain"])
    if "refit_intent_lag_s" in dec:
        dec["refit_intent_lag_s"] = check_intent_lag("session.decoder.refit_intent_lag_s", dec["refit_intent_lag_s"])


def load_session(source: str | Path | dict | None = None) -> dict:
    """Read and validate a session (YAML path, YAML text or dict); fill defaults.

    Raises
    ------
    ConfigError
        Naming the field (``session.blocks[2].task``), what is allowed and what was given.
    """
    from cortexlink.core.yamlfile import brief
    from cortexlink.decoders.fitting import DECODER_KINDS, make_click_decoder, make_decoder
    from cortexlink.sim import PRESETS
    from cortexlink.sim.participant import ParticipantConfig
    from cortexlink.tasks.cursor import AUTOPILOT_SPEED, CursorEffector
    from cortexlink.tasks.schedule import check_blocks

    from cortexlink.runtime.speech_session import is_speech_session, load_speech_session

    raw = _read(source)
    if is_speech_session(raw):
        return load_speech_session(raw)               # a speech (brain-to-text) session
    cfg = _mapping("(top level)", raw, _TOP_KEYS)
    name = cfg.get("name", "session")
    if isinstance(name, bool) or not isinstance(name, (str, int, float)) or not str(name) or len(str(name)) > 100:
        raise _where("name", f"must be a short text (1 to 100 characters); got {brief(name)}")
    from cortexlink.core.outpath import check_name
    out: dict[str, Any] = {"name": check_name(str(name), what="session.name")}   # it names the run folder
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _where("seed", f"must be an integer >= 0; got {brief(seed)}")
    out["seed"] = seed

    out["implant"] = _implant(_mapping("implant", cfg.get("implant", {"preset": "default"})), PRESETS)

    part = dict(_mapping("participant", cfg.get("participant", {}) or {}))
    try:
        ParticipantConfig().replace(**part)
    except (ConfigError, TypeError, ValueError) as exc:
        raise _where("participant", f"is invalid: {exc}") from exc
    out["participant"] = part

    loop = dict(_mapping("loop", cfg.get("loop", {}) or {}, {"dt_s", "feature_kinds", "link", "autopilot_speed",
                                                             "units"}))
    dt = loop.get("dt_s", 0.02)
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not np.isfinite(dt) or not 0 < dt <= 1.0:
        raise _where("loop.dt_s", f"must be a number in (0, 1] seconds; got {brief(dt)}")
    loop["dt_s"] = float(dt)
    fk = loop.get("feature_kinds")
    units = loop.get("units")
    if units is not None:
        if not isinstance(units, str) or not units:
            raise _where("loop.units", f"must be the path of a unit templates file (.npz); got {brief(units)}")
        from cortexlink.dsp.units import UnitTemplates

        try:
            UnitTemplates.load(Path(units).expanduser())
        except ValidationError as exc:
            raise _where("loop.units", str(exc)) from exc
    kinds = ("tx", "sbp", "su") if units is not None else ("tx", "sbp")
    if fk is not None and (not isinstance(fk, list) or not fk or any(k not in kinds for k in fk)):
        raise _where("loop.feature_kinds", f"must be a non-empty list drawn from {list(kinds)}"
                     f"{'' if units is not None else ' (su: with loop.units)'}; got {brief(fk)}")
    if loop.get("link") is not None:
        loop["link"] = _link(loop["link"])
    from cortexlink.runtime.nodes.cursor import CursorNode

    loop["autopilot_speed"] = _node_param(CursorNode, "autopilot_speed", "loop.autopilot_speed",
                                          loop.get("autopilot_speed", AUTOPILOT_SPEED))
    out["loop"] = loop

    eff = dict(_mapping("effector", cfg.get("effector", {}) or {}, {"gain", "smoothing", "refractory_s", "dwell_s"}))
    try:
        CursorEffector(dt_s=loop["dt_s"], **eff)
    except (ConfigError, TypeError, ValueError) as exc:
        raise _where("effector", f"is invalid: {exc}") from exc
    out["effector"] = eff

    dec = dict(_mapping("decoder", cfg.get("decoder", {"kind": "refit_kalman"}),
                        {"kind", "params", *DECODER_FIT_OPTIONS}))
    dec.setdefault("kind", "refit_kalman")
    if not isinstance(dec["kind"], str) or dec["kind"] not in DECODER_KINDS:
        raise _where("decoder.kind", f"must be one of {list(DECODER_KINDS)}; got {brief(dec.get('kind'))}")
    dec["params"] = dict(_mapping("decoder.params", dec.get("params", {}) or {}))
    try:                                 # the checks the decoder's fit makes, made now (check = run)
        make_decoder(dec["kind"], dec["params"])
    except (ConfigError, TypeError, ValueError) as exc:
        raise _where("decoder.params", f"is invalid for {dec['kind']}: {exc}") from exc
    _decoder_fit_options(dec)
    out["decoder"] = dec

    clk = dict(_mapping("click_decoder", cfg.get("click_decoder", {}) or {}, {"enabled", "params", "freeze_proba"}))
    if "freeze_proba" in clk:
        from cortexlink.runtime.nodes.decoder import DecoderNode

        clk["freeze_proba"] = _node_param(DecoderNode, "click_freeze_proba", "click_decoder.freeze_proba",
                                          clk["freeze_proba"])
    if not isinstance(clk.get("enabled", True), bool):
        raise _where("click_decoder.enabled", f"must be true or false; got {brief(clk.get('enabled'))}")
    clk.setdefault("enabled", True)
    clk["params"] = dict(_mapping("click_decoder.params", clk.get("params", {}) or {}))
    try:
        make_click_decoder(clk["params"])
    except (ConfigError, TypeError, ValueError) as exc:
        raise _where("click_decoder.params", f"is invalid: {exc}") from exc
    out["click_decoder"] = clk

    out["blocks"] = check_blocks(cfg.get("blocks"), decoder_kind=dec["kind"], seed=seed)
    if cfg.get("stimulation") is not None:
        from cortexlink.runtime.stim_session import load_stimulation

        if dec["kind"] == "perfect":
            raise _where("stimulation", "needs an implant (decoder.kind 'perfect' runs none)")
        n_ch = int(out["implant"].get("n_channels", PRESETS[out["implant"]["preset"]].n_channels))
        out["stimulation"] = load_stimulation(cfg["stimulation"], n_channels=n_ch,
                                              block_names=[b["name"] for b in out["blocks"]])
    return out


def loop_nodes(cfg: dict, *, chunk_ms: float, placement: str = "main") -> dict[str, Any]:
    """The closed loop's nodes for a validated session ``cfg``: participant, implant (``sim_source``),
    dsp, decoder and cursor — or, with the perfect decoder, participant, ``bin_clock`` and cursor.
    The cursor has no block schedule yet; :func:`session_to_graph` gives it the session's, the
    operator UI's graph makes it interactive. ``placement="subprocess"``: dsp and decoder in one
    child process."""
    dec_kind = cfg["decoder"]["kind"]
    nodes: dict[str, Any] = {
        "participant": {"kind": "participant", "params": {"seed": cfg["seed"], "config": cfg["participant"]},
                        "inputs": {"cursor": "cursor.state"}},
    }
    cursor = {"kind": "cursor", "params": {"seed": cfg["seed"], "effector": cfg.get("effector", {}),
                                           "decoder_kind": dec_kind,
                                           **{k: cfg["loop"][k] for k in ("autopilot_speed",) if k in cfg["loop"]}},
              "inputs": {"intent": "decoder.intent", "participant": "participant.intent"}}
    if dec_kind == "perfect":
        nodes["clock"] = {"kind": "bin_clock", "inputs": {"after": "participant.intent"}}
        cursor["inputs"]["intent"] = "clock.tick"
    else:
        imp = dict(cfg["implant"])
        preset = imp.pop("preset")
        sub = {"where": "subprocess", "group": "pipeline"} if placement == "subprocess" else {}
        nodes["implant"] = {"kind": "sim_source", "params": {"preset": preset, "seed": cfg["seed"], "config": imp,
                                                             "chunk_ms": chunk_ms},
                            "inputs": {"intent": "participant.intent"}}
        raw = "implant.raw"
        if cfg["loop"].get("link"):
            nodes["link"] = {"kind": "raw_link", "params": dict(cfg["loop"]["link"]), "inputs": {"raw": raw}}
            raw = "link.raw"
        nodes["dsp"] = {"kind": "dsp", "params": {"feature_kinds": cfg["loop"].get("feature_kinds"),
                                                  "units": cfg["loop"].get("units")},
                        "inputs": {"raw": raw}, **sub}
        nodes["decoder"] = {"kind": "decoder", "params": {"decoder": dec_kind,
                                                          "decoder_params": cfg["decoder"]["params"],
                                                          "click": cfg["click_decoder"]["enabled"],
                                                          "click_params": cfg["click_decoder"]["params"],
                                                          **{k: cfg["decoder"][k] for k in DECODER_FIT_OPTIONS
                                                             if k in cfg["decoder"]},
                                                          **({"click_freeze_proba": cfg["click_decoder"]["freeze_proba"]}
                                                             if "freeze_proba" in cfg["click_decoder"] else {})},
                            "inputs": {"features": "dsp.features", "labels": "participant.intent",
                                       "control": "cursor.control"}, **sub}
    nodes["cursor"] = cursor
    return nodes


def session_to_graph(session: Any, *, clock: str = "fast", chunk_ms: float | None = None, placement: str = "main",
                     recorder: bool | dict = False, trace: bool = False, progress: bool = False) -> dict:
    """The runtime graph that runs a session.

    Parameters
    ----------
    session : path, YAML text or dict
        A session (:func:`load_session`).
    clock : {"fast", "realtime"}
    chunk_ms : float, optional
        Source chunk length; default one bin (``loop.dt_s``).
    placement : {"main", "subprocess"}
        ``subprocess``: the dsp and decoder run in one child process (needs the Redis bus).
    recorder : bool or dict
        Add a recorder node (raw, every feature, decoder output, cursor, intent, events, faults,
        decoders as they go live); a dict gives its ``params`` (e.g. ``{"use": "recorder"}`` for a
        recorder object handed to the runner, ``{"raw": false}``).
    trace : bool
        Add a ``trace`` node that collects each block as a
        :class:`~cortexlink.tasks.trace.BlockTrace` (what :func:`run_session` returns).
    progress : bool
        A progress bar per block (with ``trace``).

    Returns
    -------
    dict
        A graph (validate and run it with :func:`~cortexlink.runtime.runner.run_graph`).
    """
    cfg = load_session(session)
    if cfg.get("task") == "speech":
        from cortexlink.runtime.speech_session import speech_session_to_graph

        return speech_session_to_graph(cfg, clock=clock, chunk_ms=chunk_ms, recorder=recorder)
    check_choice("clock", clock, ("fast", "realtime"))
    check_choice("placement", placement, ("main", "subprocess"))
    dt_ms = cfg["loop"]["dt_s"] * 1000.0
    dec_kind = cfg["decoder"]["kind"]
    if dec_kind == "perfect":
        if recorder:
            raise ConfigError("decoder.kind 'perfect' runs no implant: there is nothing to record")
        if placement != "main":
            raise ConfigError("decoder.kind 'perfect' has no dsp or decoder to place in a subprocess")
    rec_params = dict(recorder) if isinstance(recorder, dict) else {}
    nodes = loop_nodes(cfg, chunk_ms=dt_ms if chunk_ms is None else chunk_ms, placement=placement)
    nodes["cursor"]["params"]["blocks"] = cfg["blocks"]
    if "dsp" in nodes:
        nodes["dsp"]["params"].update(raster=128 if trace else 0, full_rows=bool(recorder))
    if cfg.get("stimulation"):
        from cortexlink.runtime.stim_session import add_stimulation

        add_stimulation(nodes, cfg["stimulation"])
    if trace:
        tr = {"kind": "trace", "params": {"progress": bool(progress)},
              "inputs": {"bins": "cursor.bins", "events": "cursor.events"}}
        if dec_kind != "perfect":
            tr["inputs"]["features"] = {"from": "dsp.features", "maxlen": 1 << 12, "policy": "fail"}
        nodes["trace"] = tr
    if recorder:
        big = {"maxlen": 1 << 16, "policy": "fail"}
        nodes["recorder"] = {"kind": "recorder", "params": rec_params, "inputs": {
            "raw": {"from": "implant.raw", **big}, "features": {"from": "dsp.features", **big},
            "intent": {"from": "decoder.intent", **big},
            "bins": {"from": "cursor.bins", **big}, "events": {"from": "cursor.events", **big}}}
        if "stim" in nodes:                                    # delivered pulses, the interlock's status
            nodes["recorder"]["inputs"].update(stim={"from": "implant.stim", **big},
                                               stim_status={"from": "stim.status", **big})
    # an upper bound of the schedule's source time, so that a run whose schedule cannot finish
    # (a decoder that keeps failing, say) ends instead of running for ever
    limit = sum(b.get("seconds") or b["max_seconds"] for b in cfg["blocks"] if "max_seconds" in b) + 60.0
    if clock == "realtime":
        limit += 300.0 * sum(b["kind"] in ("fit", "refit") for b in cfg["blocks"])   # fits in a thread
    return {"name": cfg["name"], "bin_ms": dt_ms, "clock": clock, "seconds": limit,
            "bus": {"kind": "redis" if placement == "subprocess" else "inprocess"}, "nodes": nodes}


def _percentiles(a: np.ndarray) -> dict | None:
    a = a[np.isfinite(a)]
    if not a.size:
        return None
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def run_session(source: str | Path | dict | None = None, *, progress: bool = True,
                on_block: Callable[[dict, Any], None] | None = None, recorder: Any = None,
                realtime: bool = False, record_raw: bool = True, redis: str | None = None,
                on_bin: Callable[[Any], None] | None = None, out_dir: str | Path | None = None) -> SessionResult:
    """Run every block of a session on the runtime graph; return its traces, tasks and summary.

    Parameters
    ----------
    source : path, YAML text, dict or None
        The session (None: :data:`DEFAULT_SESSION`).
    progress : bool
        A tqdm progress bar per block on stderr.
    on_block : callable, optional
        ``on_block(block_cfg, trace_or_None)`` after each block (fit and refit blocks too).
    recorder : cortexlink.io.session_log.SessionRecorder, optional
        Record everything (raw samples, every feature, cursor, decoder outputs, intent, task and
        block events, decoders as they go live) through a recorder node. The caller closes it.
    record_raw : bool
        With ``recorder``: also record every raw sample (default True).
    realtime : bool
        Pace the loop to the wall clock (one bin per ``dt_s``) instead of running as fast as
        possible.
    redis : str, optional
        ``"auto"`` (a private redis-server) or a Redis URL: the dsp and decoder run in a child
        process and talk to the rest over Redis Streams. Default: everything in this process.
    on_bin : callable, optional
        Called with each bin's row of a task block (a :class:`~cortexlink.core.messages.BinRow`).
    out_dir : path, optional
        The run folder: nodes that write files put them there (the stimulation interlock's audit
        log, ``stim_audit.jsonl``, which a recording also copies in).

    The same seed gives the same figures in one process and across processes with
    ``realtime=False`` (the graph runs in lock step).
    """
    from cortexlink.runtime.runner import GraphRunner

    cfg = load_session(source)
    if cfg.get("task") == "speech":
        from cortexlink.runtime.speech_session import run_speech_session

        if redis:
            raise ConfigError("a speech session runs in one process for now (no --redis)")
        return run_speech_session(cfg, realtime=realtime, recorder=recorder, record_raw=record_raw)
    # in real time the implant delivers 1 ms chunks, as a device does (the watchdog's source-stall
    # check is in milliseconds); as fast as possible, one chunk per bin gives the same figures
    graph = session_to_graph(cfg, clock="realtime" if realtime else "fast", chunk_ms=1.0 if realtime else None,
                             placement="subprocess" if redis else "main",
                             recorder={"use": "recorder", "raw": bool(record_raw)} if recorder is not None else False,
                             trace=True, progress=progress)
    if recorder is not None and "decoder" in graph["nodes"]:
        # decoders as they go live are saved in the recording (replay steps them again)
        graph["nodes"]["decoder"]["params"]["save_dir"] = str(Path(recorder.path) / "decoders")
    by_name = {b["name"]: b for b in cfg["blocks"]}
    done: list[str] = []

    def block_done(info: dict, trace: Any) -> None:
        # fit/refit blocks between the previous task block and this one come first
        i = next(k for k, b in enumerate(cfg["blocks"]) if b["name"] == info["name"])
        if on_block is not None:
            for b in cfg["blocks"][len(done):i]:
                on_block(b, None)
            on_block(by_name[info["name"]], trace)
        done[:] = [b["name"] for b in cfg["blocks"][:i + 1]]

    objects: dict[str, Any] = {"trace.on_block": block_done}
    if on_bin is not None:
        objects["trace.on_bin"] = on_bin
    if recorder is not None:
        objects["recorder"] = recorder
    t_wall = time.perf_counter()
    runner = GraphRunner(graph, redis_url=redis, objects=objects, out_dir=out_dir)
    rr = runner.run()
    if on_block is not None:
        for b in cfg["blocks"][len(done):]:
            on_block(b, None)
    wall = time.perf_counter() - t_wall
    check_finished(cfg["name"], rr, "cursor: schedule finished")
    trace_node = runner.by_name["trace"].node
    cursor = runner.by_name["cursor"].node
    traces = {t.name: t for t in trace_node.traces}
    from cortexlink.sim.participant import ParticipantConfig
    from cortexlink.tasks.loop_metrics import control_metrics

    delay_s = ParticipantConfig().replace(**cfg.get("participant", {})).visual_delay_s
    dec_slot = runner.by_name.get("decoder")
    dec_node = dec_slot.node if dec_slot is not None else None
    fits = list((rr["nodes"].get("decoder") or {}).get("summary", {}).get("fits", []))
    summary: dict[str, Any] = {"session": cfg["name"], "seed": cfg["seed"], "decoder": cfg["decoder"]["kind"],
                               "channels": None, "blocks": [], "runtime": {"bus": rr["bus"], "clock": rr["clock"],
                                                                           "stop_reason": rr["stop_reason"]}}
    if cfg["decoder"]["kind"] != "perfect":
        from cortexlink.sim import PRESETS

        imp = dict(cfg["implant"])
        summary["channels"] = int(imp.get("n_channels", PRESETS[imp["preset"]].n_channels))
        feat = trace_node.feature_info or {}
        summary["n_features"] = len(feat.get("names", ()))
        summary["bad_channels"] = len(feat.get("bad_channels", ()))
        if "link" in rr["nodes"]:                              # the raw link's bytes and error
            summary["link"] = rr["nodes"]["link"].get("summary")
        if "stim" in rr["nodes"]:                              # the interlock, the device, the blanking
            summary["stimulation"] = {
                "interlock": rr["nodes"]["stim"].get("summary"),
                "stimulator": (rr["nodes"]["implant"].get("summary") or {}).get("stimulator"),
                "artifacts": (rr["nodes"]["dsp"].get("summary") or {}).get("artifacts")}
    results = {r["name"]: r for r in cursor.results}
    for b in cfg["blocks"]:
        info: dict[str, Any] = {"name": b["name"], "kind": b["kind"]}
        r = results.get(b["name"])
        if b["kind"] in ("fit", "refit"):
            if r is not None and "note" in r:
                info["note"] = r["note"]
            elif fits:
                f = fits.pop(0)
                info.update({k: f[k] for k in ("n_bins", "n_features", "n_click_bins", "fit_s", "labels",
                                               "label_lag_bins", "velocity_tau_bins", "speed_gain", "n_prior_bins",
                                               "intent_lag_bins", "keep", "bias_correction")
                            if k in f})
        elif b["name"] in traces:
            tr = traces[b["name"]]
            info.update({"task": b["task"], "mode": tr.mode, "seconds": tr.n_bins * tr.dt_s, "metrics": tr.metrics})
            if tr.mode != "open":
                info["control"] = control_metrics(tr, delay_s)
            for key in ("decode_latency_us", "loop_latency_us"):
                p = _percentiles(getattr(tr, key))
                if p is not None:
                    info[key] = p
            if r is not None:
                info["n_halted_bins"] = r.get("n_halted_bins", 0)
            ti = next((e for e in trace_node.infos if e["name"] == b["name"]), {})
            if "wall_s" in ti:
                info["wall_s"] = ti["wall_s"]
        summary["blocks"].append(info)
    summary["wall_s"] = wall
    return SessionResult(config=cfg, summary=summary, traces=list(traces.values()), tasks=dict(cursor.tasks),
                         decoder=None if dec_node is None else getattr(dec_node, "decoder", None),
                         click_decoder=None if dec_node is None else getattr(dec_node, "click_dec", None), run=rr)
