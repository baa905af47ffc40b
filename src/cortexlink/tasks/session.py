"""A closed-loop session described in YAML: calibration, decoder fit, closed loop, ReFIT, evaluation.

A session file names the implant, the participant, the decoder and a list of blocks run in
order::

    name: demo
    seed: 0
    implant: {preset: default, n_channels: 1024}     # a cortexlink.sim preset + ImplantConfig overrides
    participant: {}                                   # ParticipantConfig overrides
    loop: {dt_s: 0.02}                                # also feature_kinds: [sbp] / [tx, sbp]
    effector: {gain: 1.0, smoothing: 0.0}             # CursorEffector: gain, EMA smoothing, refractory_s
    decoder: {kind: refit_kalman, params: {}}         # wiener | kalman | refit_kalman | gru | perfect
    click_decoder: {enabled: true, params: {}}
    blocks:
      - {kind: calibration, task: centre_out, seconds: 60}
      - {kind: fit}
      - {kind: closed_loop, task: centre_out, seconds: 40}
      - {kind: refit}
      - {kind: evaluation, task: webgrid, seconds: 120, task_params: {n: 30}}
      - {kind: evaluation, task: chess, task_params: {max_moves: 10}, max_seconds: 900}

Block kinds: ``calibration`` (open loop: the cursor moves to the targets by itself while the
participant intends along; its bins train the decoders), ``fit`` (fit the velocity and click
decoders on every calibration block so far), ``closed_loop`` (the decoder drives the cursor;
its bins are kept for ReFIT), ``refit`` (ReFIT-Kalman: re-estimate from the closed-loop
blocks since the last fit), ``evaluation`` (closed loop, measured). With ``decoder.kind:
perfect`` the cursor follows the participant's intent exactly (the ceiling).

:func:`load_session` validates a file or dict and raises :class:`~cortexlink.ConfigError`
naming the field (``blocks[3].task``) for anything wrong; :func:`run_session` runs it.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cortexlink.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["load_session", "run_session", "make_task", "make_decoder", "DEFAULT_SESSION", "TASKS",
           "DECODERS", "BLOCK_KINDS", "SessionResult"]

TASKS = ("centre_out", "webgrid", "chess")
DECODERS = ("wiener", "kalman", "refit_kalman", "gru", "perfect")
BLOCK_KINDS = ("calibration", "fit", "closed_loop", "refit", "evaluation")

#: The session ``cortexlink demo`` runs (issue 4): 1024 channels, calibration, ReFIT-Kalman,
#: two minutes of Webgrid, ten moves of chess.
DEFAULT_SESSION: dict[str, Any] = {
    "name": "demo",
    "seed": 0,
    "implant": {"preset": "default", "n_channels": 1024},
    "participant": {},
    "loop": {"dt_s": 0.02},
    "decoder": {"kind": "refit_kalman", "params": {}},
    "click_decoder": {"enabled": True, "params": {}},
    "blocks": [
        {"name": "calibration", "kind": "calibration", "task": "centre_out", "seconds": 60.0,
         "task_params": {"click": True}},
        {"name": "fit", "kind": "fit"},
        {"name": "closed-loop", "kind": "closed_loop", "task": "centre_out", "seconds": 40.0,
         "task_params": {"click": True}},
        {"name": "refit", "kind": "refit"},
        {"name": "webgrid", "kind": "evaluation", "task": "webgrid", "seconds": 120.0, "task_params": {"n": 30}},
        {"name": "chess", "kind": "evaluation", "task": "chess", "task_params": {"max_moves": 10},
         "max_seconds": 300.0},
    ],
}

_TOP_KEYS = {"name", "seed", "implant", "participant", "loop", "effector", "decoder", "click_decoder", "blocks"}
_BLOCK_KEYS = {"name", "kind", "task", "seconds", "max_seconds", "task_params"}


def _where(path: str, msg: str) -> ConfigError:
    return ConfigError(f"session.{path} {msg}")


def _check_mapping(path: str, value: Any, allowed: set[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise _where(path, f"must be a mapping; got {type(value).__name__}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise _where(path, f"has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return value


def _check_number(path: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise _where(path, f"must be a number; got {value!r}")
    if positive and value <= 0:
        raise _where(path, f"must be > 0; got {value!r}")
    return float(value)


def load_session(source: str | Path | dict | None = None) -> dict:
    """Read and validate a session (YAML path, YAML text or dict); fill defaults.

    Raises
    ------
    ConfigError
        Naming the field (``session.blocks[2].task``), what is allowed and what was given.
    """
    import yaml

    if source is None:
        raw: Any = copy.deepcopy(DEFAULT_SESSION)
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    elif isinstance(source, str) and ("\n" in source or ":" in source.split("/")[-1]):
        text = source                                  # YAML text
    else:
        p = Path(source)
        if not p.is_file():
            raise ConfigError(f"session file {p} does not exist")
        text = p.read_text()
    if not isinstance(source, dict) and source is not None:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"session file is not valid YAML: {exc}") from exc
    cfg = _check_mapping("(top level)", raw, _TOP_KEYS)
    out: dict[str, Any] = {"name": str(cfg.get("name", "session"))}
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _where("seed", f"must be an integer >= 0; got {seed!r}")
    out["seed"] = seed

    from cortexlink.sim import PRESETS, ImplantConfig

    imp = dict(_check_mapping("implant", cfg.get("implant", {"preset": "default"})))
    preset = imp.pop("preset", "default")
    if preset not in PRESETS:
        raise _where("implant.preset", f"must be one of {sorted(PRESETS)}; got {preset!r}")
    fields = {f for f in ImplantConfig.__dataclass_fields__}
    unknown = sorted(set(imp) - fields)
    if unknown:
        raise _where("implant", f"has unknown field(s) {unknown}; ImplantConfig fields: {sorted(fields)}")
    try:
        PRESETS[preset].replace(**imp)
    except ConfigError as exc:
        raise _where("implant", f"is invalid: {exc}") from exc
    out["implant"] = {"preset": preset, **imp}

    part = dict(_check_mapping("participant", cfg.get("participant", {}) or {}))
    from cortexlink.sim.participant import ParticipantConfig

    try:
        ParticipantConfig().replace(**part)
    except (ConfigError, TypeError) as exc:
        raise _where("participant", f"is invalid: {exc}") from exc
    out["participant"] = part

    loop = dict(_check_mapping("loop", cfg.get("loop", {}) or {}, {"dt_s", "feature_kinds"}))
    loop["dt_s"] = _check_number("loop.dt_s", loop.get("dt_s", 0.02))
    fk = loop.get("feature_kinds")
    if fk is not None:
        if not isinstance(fk, list) or not fk or any(k not in ("tx", "sbp") for k in fk):
            raise _where("loop.feature_kinds", f"must be a non-empty list drawn from ['tx', 'sbp']; got {fk!r}")
    out["loop"] = loop

    eff = dict(_check_mapping("effector", cfg.get("effector", {}) or {}, {"gain", "smoothing", "refractory_s"}))
    from cortexlink.tasks.cursor import CursorEffector

    try:
        CursorEffector(dt_s=loop["dt_s"], **eff)
    except (ConfigError, TypeError) as exc:
        raise _where("effector", f"is invalid: {exc}") from exc
    out["effector"] = eff

    dec = dict(_check_mapping("decoder", cfg.get("decoder", {"kind": "refit_kalman"}), {"kind", "params"}))
    if dec.get("kind", "refit_kalman") not in DECODERS:
        raise _where("decoder.kind", f"must be one of {list(DECODERS)}; got {dec.get('kind')!r}")
    dec.setdefault("kind", "refit_kalman")
    dec["params"] = dict(_check_mapping("decoder.params", dec.get("params", {}) or {}))
    try:
        make_decoder(dec["kind"], dec["params"])
    except (ConfigError, TypeError) as exc:
        raise _where("decoder.params", f"is invalid for {dec['kind']}: {exc}") from exc
    out["decoder"] = dec

    clk = dict(_check_mapping("click_decoder", cfg.get("click_decoder", {}) or {}, {"enabled", "params"}))
    if not isinstance(clk.get("enabled", True), bool):
        raise _where("click_decoder.enabled", f"must be true or false; got {clk.get('enabled')!r}")
    clk.setdefault("enabled", True)
    clk["params"] = dict(_check_mapping("click_decoder.params", clk.get("params", {}) or {}))
    out["click_decoder"] = clk

    blocks = cfg.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        raise _where("blocks", f"must be a non-empty list of blocks; got {blocks!r}")
    out_blocks = []
    fitted = False
    n_closed = 0
    for i, b in enumerate(blocks):
        path = f"blocks[{i}]"
        b = dict(_check_mapping(path, b, _BLOCK_KEYS))
        kind = b.get("kind")
        if kind not in BLOCK_KINDS:
            raise _where(f"{path}.kind", f"must be one of {list(BLOCK_KINDS)}; got {kind!r}")
        b.setdefault("name", f"{i:02d}-{kind}")
        if kind in ("calibration", "closed_loop", "evaluation"):
            task = b.get("task")
            if task not in TASKS:
                raise _where(f"{path}.task", f"must be one of {list(TASKS)}; got {task!r}")
            b["task_params"] = dict(_check_mapping(f"{path}.task_params", b.get("task_params", {}) or {}))
            if "seconds" in b and b["seconds"] is not None:
                b["seconds"] = _check_number(f"{path}.seconds", b["seconds"])
            elif task != "chess":
                raise _where(f"{path}.seconds", f"is required for a {task} block")
            b["max_seconds"] = _check_number(f"{path}.max_seconds", b.get("max_seconds", 3600.0))
            try:
                make_task(task, b["task_params"], seed=out["seed"])
            except (ConfigError, TypeError) as exc:
                raise _where(f"{path}.task_params", f"is invalid for {task}: {exc}") from exc
        else:
            extra = sorted(set(b) - {"name", "kind"})
            if extra:
                raise _where(path, f"({kind}) takes only 'name' and 'kind'; got also {extra}")
        needs_decoder = kind in ("closed_loop", "evaluation") and dec["kind"] != "perfect"
        if needs_decoder and not fitted:
            raise _where(f"{path}.kind", f"is {kind!r} but no 'fit' block comes before it")
        if kind == "fit":
            if not any(x["kind"] == "calibration" for x in out_blocks):
                raise _where(f"{path}.kind", "is 'fit' but no 'calibration' block comes before it")
            fitted = True
            n_closed = 0
        if kind == "closed_loop":
            n_closed += 1
        if kind == "refit":
            if dec["kind"] != "refit_kalman":
                raise _where(f"{path}.kind", f"'refit' needs decoder.kind 'refit_kalman'; got {dec['kind']!r}")
            if n_closed == 0:
                raise _where(f"{path}.kind", "is 'refit' but no 'closed_loop' block comes before it since the fit")
        out_blocks.append(b)
    out["blocks"] = out_blocks
    return out


def make_task(kind: str, params: dict, *, seed: int = 0) -> Any:
    """A task from its session name and parameters."""
    if kind == "centre_out":
        from cortexlink.tasks.centre_out import CentreOutTask

        return CentreOutTask(**{"seed": seed, **params})
    if kind == "webgrid":
        from cortexlink.tasks.webgrid import WebgridTask

        return WebgridTask(**{"seed": seed, **params})
    if kind == "chess":
        from cortexlink.tasks.chess_task import ChessTask

        return ChessTask(**{"seed": seed, **params})
    raise ConfigError(f"task must be one of {list(TASKS)}; got {kind!r}")


def make_decoder(kind: str, params: dict | None = None) -> Any:
    """A velocity decoder from its session name (None for ``perfect``)."""
    from cortexlink.decoders import GRUDecoder, KalmanFilter, ReFITKalmanFilter, WienerFilter

    params = dict(params or {})
    cls = {"wiener": WienerFilter, "kalman": KalmanFilter, "refit_kalman": ReFITKalmanFilter,
           "gru": GRUDecoder}.get(kind)
    if kind == "perfect":
        if params:
            raise ConfigError(f"decoder 'perfect' takes no params; got {sorted(params)}")
        return None
    if cls is None:
        raise ConfigError(f"decoder.kind must be one of {list(DECODERS)}; got {kind!r}")
    dec = cls()
    valid = set(dec.get_params())
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown} for {cls.__name__}; valid: {sorted(valid)}")
    return dec.set_params(**params)


class SessionResult(dict):
    """``summary`` (JSON-able figures), ``traces`` (BlockTrace per run block), ``tasks``."""


def build_loop(cfg: dict) -> Any:
    """The :class:`~cortexlink.tasks.loop.ClosedLoop` a validated session config describes."""
    return _build_loop(cfg)


def _build_loop(cfg: dict) -> Any:
    from cortexlink.sim import SimulatedImplant
    from cortexlink.sim.participant import ParticipantConfig, SimulatedParticipant
    from cortexlink.tasks.loop import ClosedLoop

    imp_cfg = dict(cfg["implant"])
    preset = imp_cfg.pop("preset")
    implant = None
    if cfg["decoder"]["kind"] != "perfect":
        implant = SimulatedImplant.from_preset(preset, **{"seed": cfg["seed"], **imp_cfg})
    dt = cfg["loop"]["dt_s"]
    part_cfg = ParticipantConfig(**cfg["participant"]) if cfg["participant"] else None
    participant = SimulatedParticipant(part_cfg, seed=cfg["seed"], dt_s=dt)
    fk = cfg["loop"].get("feature_kinds")
    from cortexlink.tasks.cursor import CursorEffector

    effector = CursorEffector(dt_s=dt, **cfg.get("effector", {}))
    return ClosedLoop(implant, participant=participant, effector=effector, dt_s=dt,
                      feature_kinds=tuple(fk) if fk else None, seed=cfg["seed"])


def run_session(source: str | Path | dict | None = None, *, progress: bool = True,
                on_block: Callable[[dict, Any], None] | None = None, recorder: Any = None,
                realtime: bool = False, taps: tuple = (), record_raw: bool = True) -> SessionResult:
    """Run every block of a session; return the traces, the tasks and a JSON-able summary.

    Parameters
    ----------
    source : path, YAML text, dict or None
        The session (None: :data:`DEFAULT_SESSION`).
    progress : bool
        tqdm progress bars on stderr.
    on_block : callable, optional
        ``on_block(block_cfg, trace_or_None)`` after each block (for recording, live views).
    recorder : cortexlink.io.session_log.SessionRecorder, optional
        Record everything (raw samples, features, cursor, decoder outputs, intent, task and
        block events, decoders as they go live) through a
        :class:`~cortexlink.io.session_log.RecorderTap`. The caller closes it.
    record_raw : bool
        With ``recorder``: also record every raw sample (default True).
    realtime : bool
        Pace the loop to the wall clock (one bin per ``dt_s``) instead of running as fast as
        possible.
    taps : sequence of LoopTap
        More :class:`~cortexlink.tasks.loop.LoopTap` objects to attach to the loop.
    """
    from tqdm.auto import tqdm

    from cortexlink.decoders import ClickDecoder
    from cortexlink.tasks.loop import refit_set, training_set

    cfg = load_session(source)
    loop = _build_loop(cfg)
    if recorder is not None:
        from cortexlink.io.session_log import RecorderTap

        loop.taps.append(RecorderTap(recorder, raw=record_raw))
    if realtime:
        loop.taps.append(_Pacer())
    loop.taps.extend(taps)
    dec_kind = cfg["decoder"]["kind"]
    decoder = make_decoder(dec_kind, cfg["decoder"]["params"])
    click_dec = None
    traces: list = []
    tasks: dict[str, Any] = {}
    calib: list = []
    closed: list = []
    summary: dict[str, Any] = {"session": cfg["name"], "seed": cfg["seed"], "decoder": dec_kind,
                               "channels": None if loop.implant is None else loop.implant.channel_map.n_channels,
                               "blocks": []}
    t_wall = time.perf_counter()
    if loop.implant is not None:
        n_warm = int(np.ceil(loop.fx.calibration_s / loop.dt_s)) + 1
        with tqdm(total=n_warm, desc="warm-up (noise calibration)", disable=not progress, leave=False) as bar:
            loop.warm_up(progress=bar)
        summary["n_features"] = loop.n_features
        summary["bad_channels"] = int(np.count_nonzero(loop.fx.bad_channels_))
    for b in cfg["blocks"]:
        kind = b["kind"]
        t0 = time.perf_counter()
        info: dict[str, Any] = {"name": b["name"], "kind": kind}
        trace = None
        if kind == "fit" and dec_kind == "perfect":
            info["note"] = "perfect decoder: nothing to fit"
        elif kind == "fit":
            X, y, c = training_set(calib)
            decoder.fit(X, y, feature_names=loop.feature_names_)
            info.update({"n_bins": int(X.shape[0]), "n_features": int(X.shape[1])})
            if cfg["click_decoder"]["enabled"]:
                if c.min() == c.max():
                    raise ConfigError("click_decoder.enabled is true but the calibration blocks hold no click "
                                      "intent (use a click task, e.g. centre_out with task_params: {click: true})")
                click_dec = ClickDecoder(**cfg["click_decoder"]["params"]).fit(X, c)
                info["n_click_bins"] = int(c.sum())
            closed = []
        elif kind == "refit":
            Xr, dv, cur, tgt, ont = refit_set(closed)
            decoder.refit(Xr, dv, cur, tgt, ont)
            info["n_bins"] = int(Xr.shape[0])
            closed = []
        else:
            task = make_task(b["task"], b["task_params"], seed=cfg["seed"])
            mode = "perfect" if dec_kind == "perfect" else ("open" if kind == "calibration" else "closed")
            secs = b.get("seconds")
            n_total = int(round((secs if secs is not None else b["max_seconds"]) / loop.dt_s))
            with tqdm(total=n_total, desc=f"{b['name']} ({b['task']}, {mode})", disable=not progress,
                      unit="bin", leave=True) as bar:
                trace = loop.run_block(task, mode=mode, seconds=secs, max_seconds=b["max_seconds"],
                                       decoder=decoder if mode == "closed" else None,
                                       click_decoder=click_dec if mode == "closed" else None,
                                       name=b["name"], progress=bar)
            traces.append(trace)
            tasks[b["name"]] = task
            if kind == "calibration":
                calib.append(trace)
            elif kind == "closed_loop":
                closed.append(trace)
            info.update({"task": b["task"], "mode": mode, "seconds": trace.n_bins * loop.dt_s,
                         "metrics": _jsonable(trace.metrics)})
            lat = trace.decode_latency_us[np.isfinite(trace.decode_latency_us)]
            if lat.size:
                info["decode_latency_us"] = {"p50": float(np.percentile(lat, 50)),
                                             "p99": float(np.percentile(lat, 99)), "max": float(lat.max())}
            ll = trace.loop_latency_us[np.isfinite(trace.loop_latency_us)]
            if ll.size:
                info["loop_latency_us"] = {"p50": float(np.percentile(ll, 50)),
                                           "p99": float(np.percentile(ll, 99)), "max": float(ll.max())}
        info["wall_s"] = time.perf_counter() - t0
        summary["blocks"].append(info)
        if on_block is not None:
            on_block(b, trace)
    summary["wall_s"] = time.perf_counter() - t_wall
    res = SessionResult(config=cfg, summary=summary, traces=traces, tasks=tasks, decoder=decoder,
                        click_decoder=click_dec)
    return res


class _Pacer:  # noqa: D101 - a LoopTap
    """A loop tap that holds each bin until its wall-clock time (``realtime=True``)."""

    def __init__(self) -> None:
        self._t0: float | None = None
        self._sim0 = 0.0

    def samples(self, loop: Any, chunk: Any, features: Any) -> None:
        self._wait(loop)

    def block_started(self, loop: Any, run: Any) -> None:
        pass

    def bin_done(self, loop: Any, run: Any, out: dict) -> None:
        if run.mode == "perfect":
            self._wait(loop)

    def block_ended(self, loop: Any, run: Any, trace: Any) -> None:
        pass

    def _wait(self, loop: Any) -> None:
        now = time.perf_counter()
        if self._t0 is None:
            self._t0, self._sim0 = now, loop.t_s
            return
        ahead = (loop.t_s - self._sim0) - (now - self._t0)
        if ahead > 0:
            time.sleep(ahead)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v
