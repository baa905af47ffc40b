"""The ``stimulation:`` section of a session file: encoders, the interlock and artefact removal.

::

    stimulation:
      limits_file: limits.yaml        # or limits: {…} inline (cortexlink.stim.limits); default:
                                      # the default limits for every channel of the implant
      n_electrodes: 64                # without limits: default limits for electrodes 0..n-1
                                      # (default: every channel of the implant)
      policy: refuse                  # override the file's policy (refuse | clamp)
      touch: {force_max_n: 5.0, config: {}}          # touch feedback: the cursor in its target
                                      # (config: TouchConfig; here sync_hz and freq_max_hz default
                                      # to 100 so that all electrodes pulse together)
      auditory: {text: "The birch canoe…", config: {rate_hz: 300}}   # or wav: file.wav
      artifacts: {mode: blank+template}  # removal before the dsp (blank | template | none);
                                      # compensate: true scales rates to the unblanked time
      blocks: [closed-loop, webgrid]  # blocks with stimulation (default: every block)

:func:`load_stimulation` validates it (every error names ``session.stimulation.<field>``) and
:func:`add_stimulation` adds the nodes to a session's graph: ``touch_encoder`` and/or
``audio_encoder`` (clocked by the cursor, one bin ahead), ``stim_interlock`` between them and the
stimulator, the implant's ``stim`` input (the simulated stimulator) and the dsp's ``stim`` input
(artefact removal). See :mod:`cortexlink.runtime.nodes.stim`.
"""

from __future__ import annotations

from typing import Any

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_keys

__all__ = ["load_stimulation", "add_stimulation", "STIM_KEYS"]

STIM_KEYS = {"limits", "limits_file", "n_electrodes", "policy", "touch", "auditory", "artifacts", "blocks"}
_TOUCH_KEYS = {"config", "force_max_n"}
#: Touch pulses on a common 100 Hz grid unless the session says otherwise: one blanking window per
#: tick instead of one per electrode's pulse (0.72-0.79x the samples blanked of asynchronous trains
#: in `bench stim --closed-loop`).
TOUCH_DEFAULTS = {"sync_hz": 100.0, "freq_max_hz": 100.0}
_AUDIO_KEYS = {"wav", "text", "config", "loop", "start_s"}
_ART_KEYS = {"mode", "blank_pre_ms", "blank_post_ms", "template_ms", "n_template_pulses", "scale_by_amplitude",
             "compensate"}


def _err(path: str, msg: str) -> ConfigError:
    return ConfigError(f"session.stimulation.{path} {msg}")


def _section(path: str, value: Any, keys: set[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(path, f"must be a mapping; got {type(value).__name__}")
    check_keys(f"session.stimulation.{path}", value, keys)
    return dict(value)


def load_stimulation(raw: Any, *, n_channels: int, block_names: list[str]) -> dict | None:
    """Validate a session's ``stimulation`` section (None: no stimulation).

    Raises
    ------
    ConfigError
        Naming the field: unknown keys, invalid limits, encoder or artefact settings, block names
        that are not the session's, or a section with no encoder.
    """
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"session.stimulation must be a mapping; got {type(raw).__name__}")
    check_keys("session.stimulation", raw, STIM_KEYS)
    from cortexlink.runtime.nodes.stim import StimInterlockNode
    from cortexlink.stim.auditory import CISConfig
    from cortexlink.stim.touch import TouchConfig

    n_el = raw.get("n_electrodes", n_channels)
    if isinstance(n_el, bool) or not isinstance(n_el, int) or not 1 <= n_el <= n_channels:
        raise _err("n_electrodes", f"must be an integer in [1, {n_channels}] (the implant's channels); got {n_el!r}")
    out: dict[str, Any] = {"limits": raw.get("limits"), "limits_file": raw.get("limits_file"),
                           "n_electrodes": int(n_el), "policy": raw.get("policy")}
    if out["policy"] not in (None, "refuse", "clamp"):
        raise _err("policy", f"must be refuse or clamp; got {out['policy']!r}")
    try:
        StimInterlockNode.build_limits(out)
    except ConfigError as exc:
        raise ConfigError(f"session.stimulation: {exc}") from None
    if "touch" in raw:
        touch = _section("touch", raw["touch"], _TOUCH_KEYS)
        try:
            cfg = TouchConfig(**{**TOUCH_DEFAULTS, **(touch.get("config") or {})})
        except (ConfigError, TypeError) as exc:
            raise _err("touch.config", f"is invalid: {exc}") from None
        bad = [e for e in cfg.electrodes if e >= n_channels]
        if bad:
            raise _err("touch.config.sensor_electrodes", f"names electrode(s) {bad[:5]} beyond the implant's "
                                                         f"{n_channels} channels")
        out["touch"] = touch
    if "auditory" in raw:
        aud = _section("auditory", raw["auditory"], _AUDIO_KEYS)
        try:
            cfg = CISConfig(**(aud.get("config") or {}))
        except (ConfigError, TypeError) as exc:
            raise _err("auditory.config", f"is invalid: {exc}") from None
        bad = [e for e in cfg.electrodes if e >= n_channels] if cfg.electrodes is not None else []
        if bad:
            raise _err("auditory.config.electrodes", f"names electrode(s) {bad[:5]} beyond the implant's "
                                                     f"{n_channels} channels")
        out["auditory"] = aud
    if "touch" not in out and "auditory" not in out:
        raise ConfigError("session.stimulation needs an encoder: touch and/or auditory")
    art = _section("artifacts", raw.get("artifacts", {"mode": "blank+template"}), _ART_KEYS)
    art.setdefault("mode", "blank+template")
    if not isinstance(art.get("compensate", False), bool):
        raise _err("artifacts.compensate", f"must be true or false; got {art['compensate']!r}")
    if art["mode"] != "none":
        from cortexlink.dsp.artifacts import StimArtifactRemover

        try:
            StimArtifactRemover(1, 30000.0, **{k: v for k, v in art.items() if k != "compensate"})
        except (ConfigError, TypeError) as exc:
            raise _err("artifacts", f"is invalid: {exc}") from None
    out["artifacts"] = art
    blocks = raw.get("blocks")
    if blocks is not None:
        if not isinstance(blocks, list) or not all(isinstance(b, str) for b in blocks):
            raise _err("blocks", f"must be a list of block names; got {blocks!r}")
        unknown = [b for b in blocks if b not in block_names]
        if unknown:
            raise _err("blocks", f"names block(s) {unknown} that the session does not have; blocks: {block_names}")
    out["blocks"] = blocks
    return out


def add_stimulation(nodes: dict, stim: dict) -> None:
    """Add the stimulation nodes of a validated ``stim`` section to a session graph's ``nodes``."""
    if "implant" not in nodes or "dsp" not in nodes:
        raise ConfigError("session.stimulation needs an implant (decoder.kind 'perfect' runs none)")
    plans: dict[str, str] = {}
    if "touch" in stim:
        t = stim["touch"]
        cfg = {**TOUCH_DEFAULTS, **(t.get("config") or {})}
        nodes["touch"] = {"kind": "touch_encoder",
                          "params": {"config": cfg, "force_max_n": t.get("force_max_n", 5.0),
                                     "blocks": stim["blocks"]},
                          "inputs": {"cursor": "cursor.state"}}
        plans["touch"] = "touch.plan"
    if "auditory" in stim:
        a = stim["auditory"]
        params = {k: a[k] for k in ("wav", "text", "loop", "start_s") if k in a}
        nodes["audio"] = {"kind": "audio_encoder",
                          "params": {**params, "config": a.get("config") or {}, "blocks": stim["blocks"]},
                          "inputs": {"cursor": "cursor.state"}}
        plans["audio"] = "audio.plan"
    lim = {k: stim[k] for k in ("limits", "limits_file", "n_electrodes", "policy")}
    nodes["stim"] = {"kind": "stim_interlock", "params": lim,
                     "inputs": {**plans, "cursor": "cursor.state"}}
    nodes["implant"]["inputs"]["stim"] = "stim.command"
    nodes["dsp"]["inputs"]["stim"] = {"from": "implant.stim", "maxlen": 1 << 14, "policy": "drop_oldest"}
    nodes["dsp"]["params"]["artifacts"] = dict(stim["artifacts"])
