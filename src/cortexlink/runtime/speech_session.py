"""A speech (brain-to-text) session: YAML -> the runtime graph of the speech loop -> its figures.

A session whose blocks have ``task: speech`` is a speech session::

    name: speech
    seed: 0
    implant: {preset: default, n_channels: 256, speech_dims: 16}   # ImplantConfig overrides
    speaker: {drive: 1.0}                                          # SpeakerConfig overrides
    loop: {dt_s: 0.02}
    decoder: {params: {hidden_size: 256}}                          # PhonemeDecoder hyperparameters
    language: {lm_order: 3, beam: {beam_size: 16, lm_weight: 1.0}, lm_path: null}
    sentences: {path: null, n_test: 100, split_seed: 0}            # default: the Harvard sentences
    blocks:
      - {kind: calibration, task: speech, sentences: 400}
      - {kind: fit}
      - {kind: evaluation, task: speech, sentences: 100}

:func:`cortexlink.runtime.session.load_session`, ``session_to_graph`` and ``run_session`` hand
such a session to :func:`load_speech_session`, :func:`speech_session_to_graph` and
:func:`run_speech_session`; ``cortexlink session run speech.yaml`` runs it like any other.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_choice, check_keys

__all__ = ["SPEECH_SESSION", "SPEECH_DECODER_DEFAULTS", "SPEAKER_DEFAULTS", "is_speech_session", "load_speech_session", "speech_session_to_graph",
           "run_speech_session"]

#: The phoneme decoder's hyperparameters in a speech session unless the session sets them: one GRU
#: layer of 192, light augmentation, 60 epochs of batches of 8 (chosen on training-split sentences of
#: the simulated participant at 256 electrodes: the PhonemeDecoder class defaults, made for larger
#: data sets, left it near all-blank after 100-400 sentences).
SPEECH_DECODER_DEFAULTS: dict[str, Any] = {"hidden_size": 192, "n_layers": 1, "dropout": 0.3, "batch_size": 8,
                                           "n_epochs": 60, "learning_rate": 0.005, "white_noise_sd": 0.2,
                                           "offset_sd": 0.05, "n_time_masks": 1}
#: The speaker unless the session sets it: ``drive`` 1.5 (see the README's speech figures for where
#: this puts the phoneme error rate against the published ones).
SPEAKER_DEFAULTS: dict[str, Any] = {"drive": 1.5}

#: The default speech session: 256 electrodes, 400 calibration sentences, 100 held out.
SPEECH_SESSION: dict[str, Any] = {
    "name": "speech",
    "task": "speech",
    "seed": 0,
    "implant": {"preset": "default", "n_channels": 256, "speech_dims": 16},
    "speaker": {},
    "loop": {"dt_s": 0.02},
    "decoder": {"params": {}},
    "language": {},
    "sentences": {},
    "blocks": [
        {"name": "calibration", "kind": "calibration", "task": "speech", "sentences": 400},
        {"name": "fit", "kind": "fit"},
        {"name": "evaluation", "kind": "evaluation", "task": "speech", "sentences": 100},
    ],
}
_TOP = {"name", "seed", "task", "implant", "speaker", "loop", "decoder", "language", "sentences", "blocks"}
_LANG = {"lm_order", "beam", "lm_path", "corpus", "cache_dir", "no_lm", "no_lm_word_insertion_penalty"}
_SENT = {"path", "n_test", "split_seed"}


def is_speech_session(cfg: Any) -> bool:
    """True for a session dict that says ``task: speech`` or whose blocks run the speech task."""
    if not isinstance(cfg, dict):
        return False
    if "task" in cfg:
        return cfg["task"] == "speech"
    blocks = cfg.get("blocks")
    return isinstance(blocks, list) and any(isinstance(b, dict) and b.get("task") == "speech" for b in blocks)


def _mapping(path: str, v: Any, allowed: set[str]) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"session.{path} must be a mapping; got {type(v).__name__}")
    check_keys(f"session.{path}", v, allowed)
    return dict(v)


def load_speech_session(cfg: dict) -> dict:
    """A speech session dict validated (defaults filled in); :class:`ConfigError` names the field."""
    from cortexlink.decoders.phoneme_ctc import PhonemeDecoder
    from cortexlink.runtime._session_common import check_implant
    from cortexlink.sim import PRESETS
    from cortexlink.sim.speech import SpeakerConfig
    from cortexlink.tasks.speech import check_speech_blocks

    if not isinstance(cfg, dict):
        raise ConfigError(f"a session must be a mapping; got {type(cfg).__name__}")
    check_keys("session", cfg, _TOP)
    out = copy.deepcopy(SPEECH_SESSION)
    out.update({k: copy.deepcopy(v) for k, v in cfg.items()})
    out["task"] = "speech"
    seed = out["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"session.seed must be an integer >= 0; got {seed!r}")
    if not isinstance(out["implant"], dict):
        raise ConfigError(f"session.implant must be a mapping; got {type(out['implant']).__name__}")
    imp = dict(out["implant"])
    imp.setdefault("speech_dims", 16)
    out["implant"] = check_implant(imp, PRESETS)
    dims = out["implant"]["speech_dims"]
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
        raise ConfigError(f"session.implant.speech_dims must be an integer >= 1 for a speech session; got {dims!r}")
    sp = out["speaker"]
    if not isinstance(sp, dict):
        raise ConfigError(f"session.speaker must be a mapping; got {type(sp).__name__}")
    sp = out["speaker"] = {**SPEAKER_DEFAULTS, **sp}
    try:
        SpeakerConfig(**{"speech_dims": dims, **sp})
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"session.speaker is invalid: {exc}") from exc
    loop = _mapping("loop", out["loop"], {"dt_s"})
    dt = loop.get("dt_s", 0.02)
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not 0.001 <= dt <= 0.2:
        raise ConfigError(f"session.loop.dt_s must be a number of seconds in [0.001, 0.2]; got {dt!r}")
    out["loop"] = {"dt_s": float(dt)}
    dec = _mapping("decoder", out["decoder"], {"params"})
    params = dec.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"session.decoder.params must be a mapping; got {type(params).__name__}")
    params = {**SPEECH_DECODER_DEFAULTS, **params}
    try:
        PhonemeDecoder(**params)._check_params()
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"session.decoder.params is invalid: {exc}") from exc
    out["decoder"] = {"params": params}
    out["language"] = _mapping("language", out["language"], _LANG)
    out["sentences"] = _mapping("sentences", out["sentences"], _SENT)
    out["blocks"] = check_speech_blocks(out["blocks"])
    return out


def speech_session_to_graph(cfg: dict, *, clock: str = "fast", chunk_ms: float | None = None,
                            recorder: bool | dict = False) -> dict:
    """The runtime graph of a (validated) speech session; see the module docstring."""
    check_choice("clock", clock, ("fast", "realtime"))
    dt_ms = cfg["loop"]["dt_s"] * 1000.0
    imp = dict(cfg["implant"])
    preset = imp.pop("preset")
    sent = cfg["sentences"]
    corpus = {"sentences_path": sent.get("path"), "n_test": sent.get("n_test", 100),
              "split_seed": sent.get("split_seed", 0)}
    lang = dict(cfg["language"])
    nodes: dict[str, Any] = {
        "task": {"kind": "speech_task", "params": {"blocks": cfg["blocks"], "seed": cfg["seed"], **corpus},
                 "inputs": {"text": "words.text", "participant": "participant.speech"}},
        "participant": {"kind": "speaking_participant",
                        "params": {"seed": cfg["seed"], "config": cfg["speaker"], "speech_dims": imp["speech_dims"]},
                        "inputs": {"cue": "task.cue"}},
        "implant": {"kind": "sim_source", "params": {"preset": preset, "seed": cfg["seed"], "config": imp,
                                                     "chunk_ms": dt_ms if chunk_ms is None else chunk_ms},
                    "inputs": {"speech": "participant.speech"}},
        "dsp": {"kind": "dsp", "params": {"feature_kinds": ["tx", "sbp"], "full_rows": bool(recorder)},
                "inputs": {"raw": "implant.raw"}},
        "phonemes": {"kind": "phoneme_decoder", "params": {"decoder_params": cfg["decoder"]["params"]},
                     "inputs": {"features": "dsp.features", "control": "task.control"}},
        "words": {"kind": "word_decoder", "params": {**{k: lang[k] for k in lang}, **corpus},
                  "inputs": {"frames": "phonemes.frames", "control": "task.control"}},
    }
    if recorder:
        big = {"maxlen": 1 << 16, "policy": "fail"}
        nodes["recorder"] = {"kind": "recorder", "params": dict(recorder) if isinstance(recorder, dict) else {},
                             "inputs": {"raw": {"from": "implant.raw", **big}, "features": {"from": "dsp.features", **big},
                                        "phonemes": {"from": "phonemes.frames", **big},
                                        "events": {"from": "task.events", **big}}}
    n = sum(b.get("sentences", 0) for b in cfg["blocks"])
    worst = max((b["task_params"]["prep_s"][1] + b["task_params"]["max_trial_s"] + b["task_params"]["iti_s"]
                 + b["task_params"]["final_timeout_s"]) for b in cfg["blocks"] if b["kind"] != "fit")
    limit = 60.0 + n * worst
    return {"name": cfg["name"], "bin_ms": dt_ms, "clock": clock, "seconds": limit, "bus": {"kind": "inprocess"},
            "nodes": nodes}


def run_speech_session(cfg: dict, *, realtime: bool = False, recorder: Any = None, record_raw: bool = True) -> Any:
    """Run a validated speech session; returns a :class:`~cortexlink.runtime.session.SessionResult`
    whose ``summary`` holds each block's metrics, the decoder's fit and the decoders' costs."""
    from cortexlink.runtime.runner import GraphRunner
    from cortexlink.runtime._session_common import SessionResult, check_finished

    graph = speech_session_to_graph(cfg, clock="realtime" if realtime else "fast",
                                    recorder={"use": "recorder", "raw": bool(record_raw)} if recorder is not None else False)
    objects = {"recorder": recorder} if recorder is not None else {}
    t0 = time.perf_counter()
    runner = GraphRunner(graph, objects=objects)
    rr = runner.run()
    wall = time.perf_counter() - t0
    check_finished(cfg["name"], rr, "task: schedule finished")
    task = runner.by_name["task"].node
    ph = runner.by_name["phonemes"].node
    words = runner.by_name["words"].node
    summary: dict[str, Any] = {
        "session": cfg["name"], "seed": cfg["seed"], "task": "speech",
        "electrodes": int(cfg["implant"].get("n_channels", 1024)),
        "blocks": task.results, "n_trials": len(task.trials), "n_repeated_sentences": task.n_repeated,
        "phoneme_decoder": ph.summary(), "word_decoder": words.summary(), "wall_s": wall,
        "runtime": {"clock": rr["clock"], "stop_reason": rr["stop_reason"]},
    }
    per = phoneme_error_rates(task, ph, cfg)
    summary.update(per)
    return SessionResult(config=cfg, summary=summary, traces=[], tasks={}, decoder=ph.decoder, click_decoder=None,
                         run=rr, trials=[r.to_dict() for r in task.trials])


def phoneme_error_rates(task: Any, ph: Any, cfg: dict) -> dict:
    """Phoneme error rates (greedy CTC read-out of the streamed log-probabilities, SIL excluded, as
    the phoneme decoder node kept them per trial): ``per`` over the evaluation blocks on held-out
    sentences, and each evaluation block's own ``per`` added to its metrics."""
    from cortexlink.core.phonemes import sentence_phonemes
    from cortexlink.tasks.speech_metrics import phoneme_error_rate

    decoded = getattr(ph, "decoded_phonemes", {})
    split = {b["name"]: b.get("split") for b in cfg["blocks"]}
    by_block: dict[str, tuple[list, list]] = {}
    for r in task.trials:
        if r.trial in decoded:
            refs, hyps = by_block.setdefault(r.block, ([], []))
            refs.append(sentence_phonemes(r.sentence)[0])
            hyps.append(decoded[r.trial])
    all_refs, all_hyps = [], []
    for res in task.results:
        pair = by_block.get(res["name"])
        if pair is None or "metrics" not in res:
            continue
        res["metrics"]["per"] = float(phoneme_error_rate(*pair))
        if split.get(res["name"]) == "test":
            all_refs += pair[0]
            all_hyps += pair[1]
    return {"per": float(phoneme_error_rate(all_refs, all_hyps)) if all_refs else math.nan,
            "n_per_trials": len(all_refs)}
