"""``cortexlink bench speech``: brain-to-text on the simulated speaking participant.

For each electrode count and seed, one speech session runs on the runtime graph (the same graph
``cortexlink session run`` compiles): the participant attempts calibration sentences from the
620 training Harvard sentences, the CTC phoneme decoder is fitted on them, then the 100 held-out
sentences are attempted and decoded live — phonemes streamed every bin, words by the lexicon
beam search over the whole CMU dictionary with the n-gram language model built from the
Gutenberg books (and, in the same run, without it). Reported per run: the phoneme error rate
(greedy CTC read-out, SIL excluded), the word error rates with and without the language model,
words per minute of attempted speech, the decoders' real-time factor (their compute time per
second of signal on one core), the latency from the end of an attempt to its final text, and
the training time.

Everything here is simulated: the published figures printed beside ours come from people with
ALS speaking with arrays in speech motor cortex.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

__all__ = ["run", "print_summary", "PUBLISHED"]

#: Published figures on real participants (word error rate with a language model, large vocabulary).
PUBLISHED = [
    {"source": "Willett et al. 2023 (Nature), 125k-word vocabulary", "electrodes": 128, "wer_lm": 0.238,
     "words_per_min": 62.0, "per_no_lm": None},
    {"source": "Card et al. 2024 (NEJM), 125k-word vocabulary, day 1 .. later", "electrodes": 256,
     "wer_lm": 0.025, "words_per_min": 32.0, "per_no_lm": None},
    {"source": "Brain-to-Text '24 baseline", "electrodes": 128, "wer_lm": 0.097, "words_per_min": None,
     "per_no_lm": None},
    {"source": "Brain-to-Text '24 winner", "electrodes": 128, "wer_lm": 0.058, "words_per_min": None,
     "per_no_lm": None},
    {"source": "Brain-to-Text '25 baseline", "electrodes": 256, "wer_lm": 0.067, "words_per_min": None,
     "per_no_lm": None},
]


def _session(electrodes: int, seed: int, n_calibration: int, n_test: int, decoder_params: dict | None,
             speaker: dict | None, language: dict | None) -> dict:
    return {
        "name": f"bench-speech-{electrodes}-s{seed}", "seed": int(seed), "task": "speech",
        "implant": {"preset": "default", "n_channels": int(electrodes), "speech_dims": 16},
        "speaker": dict(speaker or {}), "loop": {"dt_s": 0.02},
        "decoder": {"params": dict(decoder_params or {})}, "language": dict(language or {}),
        "sentences": {"n_test": 100},          # the fixed held-out set; the first n_test of it are attempted
        "blocks": [{"name": "calibration", "kind": "calibration", "task": "speech", "sentences": int(n_calibration)},
                   {"name": "fit", "kind": "fit"},
                   {"name": "evaluation", "kind": "evaluation", "task": "speech", "sentences": int(n_test)}],
    }


def run(*, electrodes: Sequence[int] = (64, 128, 256, 1024), seeds: Sequence[int] = (0,),
        calibration_sentences: int = 400, test_sentences: int = 100, decoder_params: dict | None = None,
        speaker: dict | None = None, language: dict | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the speech benchmark; returns ``{"benchmark", "machine", "results": [...], "published"}``.

    Each result: ``electrodes, seed, per, wer_no_lm, wer_lm, words_per_min, realtime_factor``
    (phoneme decoder + word decoder compute time / signal time, one core), ``latency_to_text_ms``
    (median from the end of an attempt to its final text), ``train_s``, ``n_calibration``,
    ``n_test``, ``wall_s``; or ``error`` when a run failed.
    """
    from cortexlink.bench.dsp import machine_info
    from cortexlink.runtime.session import run_session

    results: list[dict[str, Any]] = []
    runs = [(int(e), int(s)) for e in electrodes for s in seeds]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(runs), desc="speech sessions", unit="session")
    for e, s in runs:
        cfg = _session(e, s, calibration_sentences, test_sentences, decoder_params, speaker, language)
        t0 = time.perf_counter()
        try:
            res = run_session(cfg, progress=False)
        except Exception as exc:  # a failed run is a result, not the end of the benchmark
            results.append({"electrodes": e, "seed": s, "error": f"{type(exc).__name__}: {exc}",
                            "wall_s": time.perf_counter() - t0})
        else:
            results.append(_row(e, s, res["summary"], time.perf_counter() - t0))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {"benchmark": "speech", "machine": machine_info(), "results": results, "published": PUBLISHED,
            "params": {"calibration_sentences": calibration_sentences, "test_sentences": test_sentences,
                       "decoder_params": decoder_params or {}, "speaker": speaker or {}, "language": language or {}},
            "simulated": True}


def _row(e: int, s: int, summ: dict, wall: float) -> dict[str, Any]:
    ev = next((b for b in summ.get("blocks", []) if b.get("kind") == "evaluation"), {})
    m = ev.get("metrics", {}) or {}
    ph, wd = summ.get("phoneme_decoder", {}) or {}, summ.get("word_decoder", {}) or {}
    step_us = ph.get("step_us_mean")
    rtf_ph = None if step_us is None else step_us / 20000.0                  # per 20 ms bin
    rtf_w = wd.get("realtime_factor")
    rtf = None if rtf_ph is None or rtf_w is None else rtf_ph + rtf_w
    lat = m.get("latency_to_text_ms") or {}
    fits = ph.get("fit_seconds") or []
    return {"electrodes": e, "seed": s, "per": summ.get("per"), "wer_no_lm": m.get("wer_no_lm"),
            "wer_lm": m.get("wer_lm"), "words_per_min": m.get("words_per_min"), "realtime_factor": rtf,
            "realtime_factor_phonemes": rtf_ph, "realtime_factor_words": rtf_w,
            "latency_to_text_ms": lat.get("median"), "finish_ms": (m.get("finish_ms") or {}).get("median"),
            "train_s": fits[-1] if fits else None, "n_calibration": ph.get("n_train_trials"),
            "n_test": m.get("n_decoded"), "n_timed_out": m.get("n_timed_out"), "wall_s": wall}


def _fmt(v: Any, pct: bool = False, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{100 * v:.1f} %" if pct else f"{v:.{nd}f}"


def print_summary(result: dict[str, Any]) -> None:
    """A table of the runs beside the published figures (print is allowed: called from cli/)."""
    print("speech (simulated participant; phoneme decoder + lexicon beam search + n-gram LM)")
    print(f"{'electrodes':>10} {'seed':>4} {'PER':>8} {'WER noLM':>9} {'WER LM':>8} {'wpm':>6} {'RTF':>6} "
          f"{'lat ms':>7} {'train s':>8}")
    for r in result.get("results", []):
        if "error" in r:
            print(f"{r['electrodes']:>10} {r['seed']:>4}  error: {r['error']}")
            continue
        print(f"{r['electrodes']:>10} {r['seed']:>4} {_fmt(r.get('per'), True):>8} {_fmt(r.get('wer_no_lm'), True):>9} "
              f"{_fmt(r.get('wer_lm'), True):>8} {_fmt(r.get('words_per_min'), nd=1):>6} "
              f"{_fmt(r.get('realtime_factor'), nd=3):>6} {_fmt(r.get('latency_to_text_ms'), nd=0):>7} "
              f"{_fmt(r.get('train_s'), nd=0):>8}")
    print("published (real participants):")
    for p in result.get("published", []):
        print(f"  {p['source']}: WER {_fmt(p.get('wer_lm'), True)}"
              + (f", {p['words_per_min']:g} words/min" if p.get("words_per_min") else ""))
