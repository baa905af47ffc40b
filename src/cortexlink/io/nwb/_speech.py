"""Speech (brain-to-text) sessions in the NWB file.

A session recorded from the speech graph (:mod:`cortexlink.runtime.speech_session`) holds a
``phonemes`` stream (one row of 41 CTC class log-probabilities per decoder output: blank, the 39
ARPAbet phonemes, SIL; :data:`cortexlink.core.phonemes.CLASS_NAMES`) and the speech task's events
(``speech_trial_begin``, ``speech_go``, ``speech_trial_end``, ``speech_decoded``, and
``block_start``/``block_end`` with the block's metrics). :func:`add_speech` writes them as:

==========================================  ================================================
what                                        where in the file
==========================================  ================================================
phoneme log-probabilities                   ``processing/behavior/phoneme_logprobs``
                                            (TimeSeries, rows x 41, natural log, timestamps)
the 41 class names                          ``processing/behavior/PhonemeClasses`` (table)
one row per attempted sentence              ``intervals/speech_trials`` (TimeIntervals: prompt,
                                            go and speech-end times, decoded text with and
                                            without the language model, greedy phonemes,
                                            phoneme errors, the trial's log-probability rows)
one row per speech block                    ``intervals/speech_blocks`` (the block's metrics,
                                            nested ones flattened, and the phoneme error rate)
==========================================  ================================================

Times are seconds of the source clock (``sample / fs_hz``) like everything else in the file. A
trial runs from its ``speech_trial_begin`` (the prompt appears) to its ``speech_trial_end``; the
decoded text arrives a bin or so later (``decoded_time``). The speech end is a bin index in the
event; it becomes a time relative to the trial's begin event (``(speech_end_bin - begin_bin) x
samples_per_bin``), so it is on the same clock as the event samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cortexlink.core.errors import ValidationError

#: Streams this module exports (the generic ``stream_<name>`` export leaves them out).
SPEECH_STREAMS = ("phonemes",)
SPEECH_EVENTS = ("speech_trial_begin", "speech_go", "speech_trial_end", "speech_decoded")
PHONEME_SERIES = "phoneme_logprobs"

_TRIAL_COLUMNS = {
    "block": "block the trial belongs to",
    "trial": "trial number in the session (the speech task's counter)",
    "sentence": "the prompted sentence (reference text)",
    "train": "calibration trial (its features trained the phoneme decoder; not decoded to text)",
    "go_time": "go cue (s; NaN when the trial ended before it)",
    "speech_end_time": "end of the attempted speech as the task saw it (s; NaN when unknown)",
    "timed_out": "the trial ended at its time limit instead of at the end of speech",
    "completed": "the trial has its speech_trial_end event (False: it stops at its block's end or the last event)",
    "decoded": "the word decoder returned a final text for the trial",
    "decoded_text": "final decoded text with the language model ('' when none)",
    "decoded_text_no_lm": "final decoded text with the lexicon alone, no language model ('' when none)",
    "decoded_time": "time the final text arrived (s; NaN when none)",
    "finish_ms": "time the word decoder took to finish the sentence (ms; NaN when none)",
    "reference_phonemes": "phonemes of the sentence (first CMU pronunciation of each word, SIL after each word)",
    "decoded_phonemes": "greedy CTC read-out of the trial's rows of phoneme_logprobs (argmax per row, repeats "
                        "merged, blanks dropped); '' when the trial has no rows",
    "n_reference_phonemes": "phonemes in reference_phonemes, SIL not counted",
    "n_phoneme_errors": "edit distance between decoded_phonemes and reference_phonemes, SIL left out of both "
                        "(NaN when the trial has no rows or the sentence has words outside the dictionary)",
}


def has_speech(streams: list[str], events: list[dict]) -> bool:
    """The session ran the speech task: it has a ``phonemes`` stream or speech task events."""
    return any(s in streams for s in SPEECH_STREAMS) or any(e.get("kind") in SPEECH_EVENTS for e in events)


def _field(e: dict, key: str, i: int, kind: type | tuple, what: str) -> Any:
    v = e.get(key)
    if isinstance(v, bool) or not isinstance(v, kind):
        raise ValidationError(f"events stream, event {i} ({e.get('kind')!r}): field {key!r} must be {what}; "
                              f"got {v!r}")
    return v


def speech_trials(events: list[dict], samples_per_bin: int) -> list[dict]:
    """The speech trials of a session's events, in order of their begin.

    Each trial: ``block``, ``trial``, ``sentence``, ``train``, ``start_sample``, ``stop_sample``,
    ``go_sample`` (-1 none), ``speech_end_sample`` (-1 none), ``timed_out``, ``decoded``,
    ``text``, ``text_no_lm``, ``decoded_sample`` (-1 none), ``finish_ms``, ``completed`` (False
    when the trial had no ``speech_trial_end``: it then stops at its block's end or at the last
    event). Raises :class:`ValidationError` naming the event for a speech event without its
    fields.
    """
    trials: list[dict] = []
    by_id: dict[int, dict] = {}
    open_: dict[str, dict] = {}                 # block -> trial in progress
    block, last = "", 0
    for i, e in enumerate(events):
        kind = e.get("kind")
        s = int(e.get("sample", -1))
        last = max(last, s)
        if kind == "block_start":
            block = str(e.get("name", ""))
        elif kind == "block_end":
            t = open_.pop(str(e.get("name", "")), None)
            if t is not None:
                t["stop_sample"] = max(s, t["start_sample"])
        elif kind == "speech_trial_begin":
            n = int(_field(e, "trial", i, (int, np.integer), "an integer"))
            t = {"block": block, "trial": n, "sentence": str(_field(e, "sentence", i, str, "a string")),
                 "train": bool(e.get("train", False)), "begin_bin": e.get("bin"), "start_sample": s,
                 "stop_sample": None, "go_sample": -1, "speech_end_sample": -1, "timed_out": False,
                 "decoded": False, "text": "", "text_no_lm": "", "decoded_sample": -1, "finish_ms": math.nan,
                 "completed": False}
            prev = open_.pop(block, None)
            if prev is not None:                # a new trial begins: the previous one stopped here
                prev["stop_sample"] = s
            trials.append(t)
            by_id[n] = open_[block] = t
        elif kind in ("speech_go", "speech_trial_end", "speech_decoded"):
            t = by_id.get(int(_field(e, "trial", i, (int, np.integer), "an integer")))
            if t is None:
                continue                        # the recording began after this trial's begin
            if kind == "speech_go":
                t["go_sample"] = s
            elif kind == "speech_trial_end":
                t["stop_sample"] = max(s, t["start_sample"])
                t["completed"] = True
                t["timed_out"] = bool(e.get("timed_out", False))
                end_bin, begin_bin = e.get("speech_end_bin"), t["begin_bin"]
                if isinstance(end_bin, (int, np.integer)) and isinstance(begin_bin, (int, np.integer)) \
                        and end_bin >= 0:
                    t["speech_end_sample"] = t["start_sample"] + (int(end_bin) - int(begin_bin)) * samples_per_bin
                if open_.get(t["block"]) is t:
                    del open_[t["block"]]
            else:
                t["decoded"] = True
                t["text"] = str(e.get("text") or "")
                t["text_no_lm"] = str(e.get("text_no_lm") or "")
                t["decoded_sample"] = s
                f = e.get("finish_ms")
                t["finish_ms"] = float(f) if isinstance(f, (int, float)) and not isinstance(f, bool) else math.nan
    for t in trials:
        if t["stop_sample"] is None:
            t["stop_sample"] = max(last, t["start_sample"])
    return trials


def _phoneme_columns(trials: list[dict], samples: np.ndarray, rows: np.ndarray) -> None:
    """Per trial: its rows of the phoneme stream, greedy phonemes, reference, phoneme errors."""
    from rapidfuzz.distance import Levenshtein

    from cortexlink.core.phonemes import SIL, collapse_ctc, ids_to_phonemes, sentence_phonemes

    for t in trials:
        a = int(np.searchsorted(samples, t["start_sample"], side="left"))
        b = int(np.searchsorted(samples, t["stop_sample"], side="right"))
        t["row_start"], t["row_count"] = a, b - a
        ref, oov = sentence_phonemes(t["sentence"])
        t["reference_phonemes"] = " ".join(ids_to_phonemes(ref))
        t["n_reference_phonemes"] = int(np.count_nonzero(ref != SIL))
        if b > a:
            hyp = collapse_ctc(np.argmax(rows[a:b], axis=1))
            t["decoded_phonemes"] = " ".join(ids_to_phonemes(hyp))
            t["n_phoneme_errors"] = (math.nan if oov else
                                     float(Levenshtein.distance(ref[ref != SIL].tolist(), hyp[hyp != SIL].tolist())))
        else:
            t["decoded_phonemes"] = ""
            t["n_phoneme_errors"] = math.nan


def _blocks(events: list[dict], trials: list[dict]) -> list[dict]:
    """Speech blocks (``block_start`` with ``task == "speech"``) with their flattened metrics."""
    ends = {e.get("name"): e for e in events if e.get("kind") == "block_end"}
    last = max((int(e.get("sample", 0)) for e in events), default=0)
    out = []
    for e in events:
        if e.get("kind") != "block_start" or e.get("task") != "speech":
            continue
        name = str(e.get("name", ""))
        end = ends.get(name)
        metrics = (end or {}).get("metrics") or {}
        flat: dict[str, float] = {}
        for k, v in metrics.items():
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    if isinstance(v2, (int, float)):
                        flat[f"{k}_{k2}"] = float(v2)
            elif isinstance(v, (int, float)):
                flat[str(k)] = float(v)
        scored = [t for t in trials if t["block"] == name and not math.isnan(t.get("n_phoneme_errors", math.nan))]
        n_ref = sum(t["n_reference_phonemes"] for t in scored)
        per = sum(t["n_phoneme_errors"] for t in scored) / n_ref if n_ref else math.nan
        start = int(e.get("sample", 0))
        out.append({"block": name, "block_kind": str(e.get("block_kind") or ""), "completed": end is not None,
                    "start_sample": start, "stop_sample": max(int(end["sample"]) if end else last, start),
                    "phoneme_error_rate": per, "n_scored_trials": len(scored), "metrics": flat})
    return out


def add_speech(nwbfile: Any, reader: Any, events: list[dict], fs: float, compression: str | None,
               written: list) -> dict | None:
    """Write the speech part of a session (see the module docstring); None when it has none.

    Returns ``{"n_speech_trials", "n_phoneme_rows", "n_speech_blocks"}``.
    """
    from hdmf.common import DynamicTable, VectorData
    from pynwb import TimeSeries
    from pynwb.base import TimeSeriesReference, TimeSeriesReferenceVectorData
    from pynwb.epoch import TimeIntervals

    from cortexlink.core.phonemes import CLASS_NAMES, N_CLASSES
    from cortexlink.io.nwb._common import _data_io, _time_kwargs

    if not has_speech(reader.streams, events):
        return None
    m = reader.manifest
    spb = int((m.get("loop") or {}).get("samples_per_bin") or 0)
    if spb <= 0:
        begin = next((e for e in events if e.get("kind") == "speech_trial_begin" and e.get("bin")), None)
        spb = int(round(int(begin["sample"]) / int(begin["bin"]))) if begin is not None else 1
    trials = speech_trials(events, spb)
    series = None
    samples = np.zeros(0, np.int64)
    if "phonemes" in reader.streams:
        path = reader.path / "streams" / "phonemes.clog"
        cols = reader.columns("phonemes")
        if len(cols) != N_CLASSES:
            raise ValidationError(f"{path}: {len(cols)} columns; a phoneme stream has {N_CLASSES} "
                                  f"({', '.join(CLASS_NAMES[:3])}, ..., {CLASS_NAMES[-1]})")
        samples, rows = reader.read_array("phonemes")
        if samples.size and np.any(np.diff(samples) < 0):
            i = int(np.flatnonzero(np.diff(samples) < 0)[0])
            raise ValidationError(f"{path}: row {i + 1} is at sample {samples[i + 1]}, before row {i} "
                                  f"(sample {samples[i]}); rows must be in time order")
        _phoneme_columns(trials, samples, rows)
        mod = nwbfile.processing.get("behavior")
        if mod is None:
            mod = nwbfile.create_processing_module(name="behavior", description=(
                "attempted speech decoded by the phoneme decoder: its outputs and the class names"))
        if samples.size:
            tk = _time_kwargs(samples, fs)
            if "timestamps" in tk:
                tk = {"timestamps": _data_io(tk["timestamps"], compression=compression)}
            series = TimeSeries(
                name=PHONEME_SERIES, data=_data_io(rows, compression=compression), unit="log-probability",
                description=("phoneme decoder (CTC) output: natural-log probabilities of the 41 classes per row, "
                             "columns " + ", ".join(f"{i} {c}" for i, c in enumerate(CLASS_NAMES))
                             + " (BLANK = CTC blank, SIL = silence between words; ARPAbet phonemes without "
                               "stress; see PhonemeClasses)"),
                comments=("one row per decoder output while a sentence was decoded (a row every stride bins); "
                          "the time is the end of the last feature bin the row used; no rows between trials "
                          "nor during calibration"), **tk)
            mod.add(series)
            written.append(f"processing/behavior/{PHONEME_SERIES} ({samples.size} rows x {N_CLASSES})")
        kinds = ["CTC blank"] + ["ARPAbet phoneme"] * (N_CLASSES - 2) + ["silence between words"]
        mod.add(DynamicTable(name="PhonemeClasses", description="the columns of phoneme_logprobs", columns=[
            VectorData(name="class_id", description="column index in phoneme_logprobs", data=list(range(N_CLASSES))),
            VectorData(name="class_name", description="class name (cortexlink.core.phonemes.CLASS_NAMES)",
                       data=list(CLASS_NAMES)),
            VectorData(name="class_kind", description="blank, phoneme or silence", data=kinds)]))
    if trials:
        tab = TimeIntervals(name="speech_trials", description=(
            "attempted sentences of the speech task: prompt at start_time, go cue, end of speech, decoded text; "
            "times in s of the source clock"))
        cols = dict(_TRIAL_COLUMNS)
        if "reference_phonemes" not in trials[0]:
            for k in ("reference_phonemes", "decoded_phonemes", "n_reference_phonemes", "n_phoneme_errors"):
                cols.pop(k)
        for k, d in cols.items():
            tab.add_column(name=k, description=d)
        if series is not None:
            tab.add_column(name="timeseries", description="the trial's rows of processing/behavior/phoneme_logprobs "
                           "(idx_start, count); none for a trial without rows", index=True,
                           col_cls=TimeSeriesReferenceVectorData)
        for t in trials:
            row = {k: t[k] for k in ("block", "trial", "sentence", "train", "timed_out", "completed", "decoded",
                                     "finish_ms")}
            row.update(decoded_text=t["text"], decoded_text_no_lm=t["text_no_lm"],
                       go_time=t["go_sample"] / fs if t["go_sample"] >= 0 else math.nan,
                       speech_end_time=t["speech_end_sample"] / fs if t["speech_end_sample"] >= 0 else math.nan,
                       decoded_time=t["decoded_sample"] / fs if t["decoded_sample"] >= 0 else math.nan)
            for k in ("reference_phonemes", "decoded_phonemes", "n_reference_phonemes", "n_phoneme_errors"):
                if k in cols:
                    row[k] = t[k]
            if series is not None:
                row["timeseries"] = ([TimeSeriesReference(t["row_start"], t["row_count"], series)]
                                     if t["row_count"] else [])
            tab.add_row(start_time=t["start_sample"] / fs, stop_time=t["stop_sample"] / fs, **row)
        nwbfile.add_time_intervals(tab)
        written.append(f"intervals/speech_trials ({len(trials)})")
    blocks = _blocks(events, trials)
    if blocks:
        tab = TimeIntervals(name="speech_blocks", description=(
            "speech blocks with the numeric metrics the task computed at block_end (nested ones flattened as "
            "metric_<metric>_<field>; every event as recorded is in scratch/cortexlink_events) and the phoneme "
            "error rate of the recorded log-probabilities"))
        for k, d in (("block", "block name (the epochs table has the same blocks)"),
                     ("block_kind", "calibration or evaluation"), ("completed", "the block has a block_end event"),
                     ("phoneme_error_rate", "sum of n_phoneme_errors / sum of n_reference_phonemes over the "
                                            "block's speech_trials with rows (SIL excluded); NaN when none"),
                     ("n_scored_trials", "trials counted in phoneme_error_rate")):
            tab.add_column(name=k, description=d)
        mkeys = sorted({k for b in blocks for k in b["metrics"]})
        for k in mkeys:
            tab.add_column(name=f"metric_{k}", description=f"block metric {k} (NaN when not computed)")
        for b in blocks:
            tab.add_row(start_time=b["start_sample"] / fs, stop_time=b["stop_sample"] / fs,
                        **{k: b[k] for k in ("block", "block_kind", "completed", "phoneme_error_rate",
                                             "n_scored_trials")},
                        **{f"metric_{k}": b["metrics"].get(k, math.nan) for k in mkeys})
        nwbfile.add_time_intervals(tab)
        written.append(f"intervals/speech_blocks ({len(blocks)})")
    return {"n_speech_trials": len(trials), "n_phoneme_rows": int(samples.size), "n_speech_blocks": len(blocks)}

