"""The speech task: sentences prompted one by one, a wait, a go cue, the attempt, the decoded text.

One trial (as in the published attempted-speech studies): the sentence appears with a wait cue
(``prep``, a jittered delay), then the go cue; the participant attempts the sentence and signals
when done; the task waits a short tail (so the last phoneme's neural activity reaches the
decoder), ends the trial and, in a decoded block, waits for the word decoder's final text before
the next prompt (or gives up after ``final_timeout_s``). A trial that runs past
``max_trial_s`` is ended anyway and marked ``timed_out``.

:class:`SpeechBlock` is that state machine for one block, stepped once per bin; it knows nothing
of the graph (the runtime's ``speech_task`` node drives it). The schedule of a speech session:

    blocks:
      - {kind: calibration, task: speech, sentences: 300}     # attempted, features kept for the fit
      - {kind: fit}                                           # train the phoneme decoder
      - {kind: evaluation, task: speech, sentences: 100}      # held-out sentences, decoded live

:func:`check_speech_blocks` validates such a list.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.phonemes import words
from cortexlink.core.yamlfile import brief

__all__ = ["SpeechBlock", "SpeechTrialResult", "check_speech_blocks", "SPEECH_BLOCK_KINDS", "TIMING_DEFAULTS"]

SPEECH_BLOCK_KINDS = ("calibration", "fit", "evaluation")
_KEYS = {"name", "kind", "task", "sentences", "split", "task_params"}
#: The trial timing (``task_params`` of a speech block may change any of them).
TIMING_DEFAULTS: dict[str, Any] = {"prep_s": (1.0, 1.6), "iti_s": 0.6, "tail_s": 0.3, "max_trial_s": 20.0,
                                   "final_timeout_s": 3.0}


def check_speech_blocks(blocks: Any, prefix: str = "session.blocks") -> list[dict]:
    """Validated copies of a speech session's blocks (names filled in), or :class:`ConfigError`
    naming the block and field."""
    if not isinstance(blocks, list) or not blocks:
        raise ConfigError(f"{prefix} must be a non-empty list of blocks; got {brief(blocks)}")
    out, fitted, names = [], False, set()
    for i, b in enumerate(blocks):
        where = f"{prefix}[{i}]"
        if not isinstance(b, dict):
            raise ConfigError(f"{where} must be a mapping; got {brief(b)}")
        unknown = sorted(str(k) for k in b if k not in _KEYS)
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")
        kind = b.get("kind")
        if kind not in SPEECH_BLOCK_KINDS:
            raise ConfigError(f"{where}.kind must be one of {list(SPEECH_BLOCK_KINDS)}; got {brief(kind)}")
        blk = dict(b)
        blk["name"] = str(b.get("name", f"{kind}-{i}"))
        if blk["name"] in names:
            raise ConfigError(f"{where}.name {blk['name']!r} is used twice")
        names.add(blk["name"])
        if kind == "fit":
            if set(b) - {"name", "kind"}:
                raise ConfigError(f"{where}: a fit block takes only name and kind; got {sorted(b)}")
            if not any(o["kind"] == "calibration" for o in out):
                raise ConfigError(f"{where}: a fit needs a calibration block before it")
            fitted = True
            out.append(blk)
            continue
        if b.get("task", "speech") != "speech":
            raise ConfigError(f"{where}.task must be 'speech'; got {brief(b.get('task'))}")
        blk["task"] = "speech"
        n = b.get("sentences")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100000:
            raise ConfigError(f"{where}.sentences must be a whole number of sentences in 1..100000; got {brief(n)}")
        split = b.get("split", "train" if kind == "calibration" else "test")
        if split not in ("train", "test"):
            raise ConfigError(f"{where}.split must be 'train' or 'test'; got {brief(split)}")
        if kind == "calibration" and split == "test":
            raise ConfigError(f"{where}: a calibration block never uses the held-out test sentences")
        blk["split"] = split
        if kind == "evaluation" and not fitted:
            raise ConfigError(f"{where}: an evaluation block needs a fit block before it")
        tp = b.get("task_params", {})
        if not isinstance(tp, dict):
            raise ConfigError(f"{where}.task_params must be a mapping; got {brief(tp)}")
        bad = sorted(str(k) for k in tp if k not in TIMING_DEFAULTS)
        if bad:
            raise ConfigError(f"{where}.task_params has unknown key(s) {bad}; allowed: {sorted(TIMING_DEFAULTS)}")
        blk["task_params"] = _timing(where + ".task_params", tp)
        out.append(blk)
    return out


def _timing(where: str, tp: dict) -> dict:
    t = {**TIMING_DEFAULTS, **tp}
    p = t["prep_s"]
    p = (p, p) if isinstance(p, (int, float)) and not isinstance(p, bool) else p
    try:
        lo, hi = (float(v) for v in p)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.prep_s must be seconds or [min, max]; got {brief(t['prep_s'])}") from None
    if not (0.0 <= lo <= hi <= 30.0):
        raise ConfigError(f"{where}.prep_s must satisfy 0 <= min <= max <= 30; got {brief(t['prep_s'])}")
    t["prep_s"] = (lo, hi)
    for k, lo_, hi_ in (("iti_s", 0.0, 60.0), ("tail_s", 0.0, 5.0), ("max_trial_s", 1.0, 600.0),
                        ("final_timeout_s", 0.1, 60.0)):
        v = t[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo_ <= v <= hi_):
            raise ConfigError(f"{where}.{k} must be a number in [{lo_:g}, {hi_:g}]; got {brief(v)}")
        t[k] = float(v)
    return t


@dataclasses.dataclass
class SpeechTrialResult:
    """One attempted sentence and what was decoded (bins are the graph's bin indices)."""

    trial: int
    block: str
    sentence: str
    n_words: int
    train: bool
    prompt_bin: int
    go_bin: int = -1
    speech_end_bin: int = -1
    end_bin: int = -1
    final_bin: int = -1
    text: str | None = None
    text_no_lm: str | None = None
    finish_ms: float = math.nan
    timed_out: bool = False
    n_best: tuple = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["n_best"] = list(self.n_best)
        return d


class SpeechBlock:
    """One speech block's trials, stepped once per bin.

    Parameters
    ----------
    name : str
    sentences : list of str
        The sentences to attempt, in order.
    train : bool
        A calibration block (no decoded text is waited for).
    first_trial : int
        Trial index of the first sentence (trials are numbered across the session).
    bin_s : float
    timing : dict
        ``prep_s`` (min, max), ``iti_s``, ``tail_s``, ``max_trial_s``, ``final_timeout_s``.
    seed : int
        Seed of the jittered waits.
    """

    def __init__(self, name: str, sentences: list[str], *, train: bool, first_trial: int, bin_s: float,
                 timing: dict | None = None, seed: int = 0) -> None:
        if not sentences:
            raise ConfigError(f"speech block {name!r} has no sentences to attempt")
        self.name = name
        self.sentences = list(sentences)
        self.train = bool(train)
        self.bin_s = float(bin_s)
        self.timing = _timing(f"speech block {name!r}", timing or {})
        self._rng = np.random.default_rng([int(seed), 17, int(first_trial)])
        self._next = 0
        self._first = int(first_trial)
        self.phase = "rest"
        self._left = self._bins(self.timing["iti_s"])
        self.results: list[SpeechTrialResult] = []
        self.current: SpeechTrialResult | None = None
        self._waiting_final: SpeechTrialResult | None = None
        self._wait_left = 0
        self._done_seen = False

    def _bins(self, s: float) -> int:
        return max(1, int(round(s / self.bin_s)))

    @property
    def done(self) -> bool:
        """Every sentence attempted and (in a decoded block) its final text received or given up."""
        return self._next >= len(self.sentences) and self.current is None and self._waiting_final is None

    def step(self, bin_idx: int, participant_done: bool) -> tuple[dict, list[tuple[str, SpeechTrialResult]]]:
        """Advance one bin.

        Parameters
        ----------
        bin_idx : int
            The bin just completed.
        participant_done : bool
            The participant reported the current sentence finished in this bin.

        Returns
        -------
        cue : dict
            ``phase``, ``trial``, ``sentence``, ``begin`` for the next bin.
        transitions : list of (str, SpeechTrialResult)
            ``"begin"``, ``"go"``, ``"end"`` of trials in this bin.
        """
        out: list[tuple[str, SpeechTrialResult]] = []
        nxt = bin_idx + 1
        if self._waiting_final is not None:
            self._wait_left -= 1
            if self._wait_left <= 0:                          # the word decoder never answered
                self._waiting_final = None
        cur = self.current
        if cur is not None:
            if self.phase == "prep":
                self._left -= 1
                if self._left <= 0:
                    self.phase = "go"
                    cur.go_bin = nxt
                    self._left = self._bins(self.timing["max_trial_s"])
                    self._done_seen = False
                    out.append(("go", cur))
            elif self.phase == "go":
                self._left -= 1
                if participant_done and not self._done_seen:
                    self._done_seen = True
                    cur.speech_end_bin = bin_idx
                    self._left = min(self._left, self._bins(self.timing["tail_s"]))
                if self._left <= 0:
                    cur.end_bin = bin_idx
                    cur.timed_out = not self._done_seen
                    if cur.timed_out:
                        cur.speech_end_bin = bin_idx
                    self.results.append(cur)
                    out.append(("end", cur))
                    self.current = None
                    self.phase = "rest"
                    self._left = self._bins(self.timing["iti_s"])
                    if not self.train:
                        self._waiting_final = cur
                        self._wait_left = self._bins(self.timing["final_timeout_s"])
        elif self._next < len(self.sentences):
            self._left -= 1
            if self._left <= 0 and self._waiting_final is None:
                s = self.sentences[self._next]
                cur = SpeechTrialResult(self._first + self._next, self.name, s, len(words(s)), self.train, nxt)
                self._next += 1
                self.current = cur
                self.phase = "prep"
                lo, hi = self.timing["prep_s"]
                self._left = self._bins(float(self._rng.uniform(lo, hi)))
                out.append(("begin", cur))
        cue = {"phase": self.phase, "trial": -1 if self.current is None else self.current.trial,
               "sentence": "" if self.current is None else self.current.sentence,
               "begin": bool(out and out[-1][0] == "begin")}
        return cue, out

    def abort(self) -> SpeechTrialResult | None:
        """Drop the trial in progress (an E-STOP): it is not kept in :attr:`results` and not redone;
        the block rests for ``iti_s`` before its next sentence. Returns the aborted trial."""
        cur = self.current
        self.current = None
        self.phase = "rest"
        self._left = self._bins(self.timing["iti_s"])
        return cur

    def final_text(self, trial: int, bin_idx: int, text: str, text_no_lm: str, finish_ms: float,
                   n_best: tuple = ()) -> SpeechTrialResult | None:
        """Record the word decoder's final text of ``trial``; returns its result (None if unknown)."""
        for r in reversed(self.results):
            if r.trial == trial:
                r.text, r.text_no_lm, r.finish_ms, r.final_bin, r.n_best = text, text_no_lm, float(finish_ms), \
                    int(bin_idx), tuple(n_best)
                if self._waiting_final is r:
                    self._waiting_final = None
                return r
        return None
