"""``speech_task`` and ``speaking_participant``: the brain-to-text loop's task and simulated speaker.

The loop (``runtime/graphs/speech.yaml``; a speech session compiles to it)::

    speech_task ──cue──► speaking_participant ──speech──► implant ──raw──► dsp ──features──►
         ▲   │                    │                                        phoneme_decoder ──frames──►
         │   └──control──► (phoneme_decoder, word_decoder)                 word_decoder ──text──┐
         └──────────────────────────── text (one message per bin) ◄─────────────────────────────┘

The task is stepped once per ``text`` message (one per bin, decoded or not), so in ``clock: fast``
the loop runs in lock step like the cursor loop.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.speech_messages import SpeechControl, SpeechCue, SpeechIntent
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node
from cortexlink.runtime.nodes._speech_operator import SpeechOperatorMixin

__all__ = ["SpeechTaskNode", "SpeakingParticipantNode", "speech_sentences"]


def speech_sentences(path: str | None, n_test: int, split_seed: int) -> tuple[list[str], list[str]]:
    """(train, test) sentences: the corpus at ``path`` (default: the Harvard sentences of
    ``../shared/data``) split by :func:`cortexlink.tasks.speech_metrics.speech_split`."""
    from cortexlink.tasks.speech_metrics import load_harvard, speech_split

    sentences = load_harvard(path)
    return speech_split(sentences, n_test=n_test, seed=split_seed)


@register_node
class SpeechTaskNode(SpeechOperatorMixin, Node):
    """The speech task's block schedule: prompts, go cues, trial boundaries for the decoders,
    the decoded sentences and their metrics.

    Parameters (``params``)
    -----------------------
    blocks : list of dict
        ``calibration`` (sentences attempted, their features kept), ``fit``, ``evaluation``
        (held-out sentences decoded live); see :mod:`cortexlink.tasks.speech`.
    sentences_path : str or None
        One sentence per line (default: the Harvard sentences in ``../shared/data/text_corpus``).
    n_test : int
        Sentences held out for evaluation (never attempted in calibration, never in the LM text).
    split_seed : int
        Seed of the held-out split (fixed: the same test set in every session).
    seed : int
        Seed of the sentence order and the jittered waits.
    warmup_s : float
        Rest before the first block (the dsp's calibration window).
    stop_when_done : bool
        End the run when the schedule is finished.

    Each trial's transitions are ``events`` (``speech_trial_begin``, ``speech_go``,
    ``speech_trial_end``, ``speech_decoded``) and ``block_start``/``block_end`` carry the block's
    metrics (phoneme and word error rates, words per minute), so a recording holds them.

    With an ``operator`` input (``operator.commands``) it takes the operator's E-STOP
    (:mod:`cortexlink.runtime.nodes._speech_operator`).
    """

    kind = "speech_task"
    INPUTS = {
        "text": PortSpec(maxlen=1024, policy="fail", required=True, message="speech_text",
                         doc="the word decoder's text, one message per bin (clocks the task)"),
        "participant": PortSpec(maxlen=1024, policy="drop_oldest", message="speech_intent",
                                doc="the participant's state (done with a sentence)"),
        "operator": PortSpec(maxlen=256, policy="drop_oldest", message="operator_command",
                             doc="operator commands (estop, release)"),
    }
    OUTPUTS = {"cue": "speech_cue", "control": "speech_control", "events": "events"}
    PARAMS = {
        "blocks": Param("list", []),
        "sentences_path": Param("str", None, nullable=True),
        "n_test": Param("int", 100, lo=1),
        "split_seed": Param("int", 0, lo=0),
        "seed": Param("int", 0, lo=0),
        "warmup_s": Param("float", 1.5, lo=0.0),
        "stop_when_done": Param("bool", True),
    }

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        from cortexlink.tasks.speech import check_speech_blocks

        check_speech_blocks(params["blocks"], prefix=f"nodes.{name}.params.blocks")

    def setup(self) -> None:
        from cortexlink.tasks.speech import check_speech_blocks

        if getattr(self, "blocks", None) is not None:          # a restart keeps the schedule
            return
        self.bin_s = self.ctx.bin_ms / 1000.0
        self.blocks = check_speech_blocks(self.params["blocks"], prefix=f"nodes.{self.name}.params.blocks")
        p = self.params
        train, test = speech_sentences(p["sentences_path"], p["n_test"], p["split_seed"])
        rng = np.random.default_rng([p["seed"], 23])
        self._pools = {"train": [train[i] for i in rng.permutation(len(train))], "test": list(test)}
        self._pos = {"train": 0, "test": 0}
        self._i = 0
        self._trial = 0
        self.block = None
        self.finished = False
        self.fitting = False
        self._warm_left = int(round(p["warmup_s"] / self.bin_s))
        self.results: list[dict] = []
        self.trials: list[Any] = []
        self.n_repeated = 0
        self._done_trials: set[int] = set()        # trials whose participant reported the sentence done
        self._taken: set[str] = set()              # sentences given to a block so far
        self._op_setup()

    # -- schedule -----------------------------------------------------------------------------
    def _take(self, split: str, n: int) -> list[str]:
        pool = self._pools[split]
        out = []
        for _ in range(n):
            if self._pos[split] >= len(pool):
                if split == "test":
                    break                                   # the held-out set is attempted once
                self._pos[split] = 0                        # calibration repeats the training sentences
            if self._pos[split] < len(pool):
                s = pool[self._pos[split]]
                self.n_repeated += int(s in self._taken)
                self._taken.add(s)
                out.append(s)
                self._pos[split] += 1
        return out

    def _begin_next(self, bin_idx: int, sample: int, t_enter: int) -> None:
        from cortexlink.tasks.speech import SpeechBlock

        while self._i < len(self.blocks):
            b = self.blocks[self._i]
            self._i += 1
            if b["kind"] == "fit":
                self.emit("control", SpeechControl("fit", block=b["name"], bin=bin_idx), sample=sample, t_enter_ns=t_enter)
                self.results.append({"name": b["name"], "kind": "fit"})
                self.fitting = True
                return
            sentences = self._take(b["split"], b["sentences"])
            if not sentences:
                self.results.append({"name": b["name"], "kind": b["kind"], "note": "no sentences left"})
                continue
            self.block = SpeechBlock(b["name"], sentences, train=b["kind"] == "calibration", first_trial=self._trial,
                                     bin_s=self.bin_s, timing=b["task_params"], seed=self.params["seed"])
            self._trial += len(sentences)
            self._block_start_bin = bin_idx
            self.emit("events", {"kind": "block_start", "name": b["name"], "block_kind": b["kind"], "task": "speech",
                                 "split": b["split"], "n_sentences": len(sentences), "bin": bin_idx},
                      sample=sample, t_enter_ns=t_enter)
            return
        self.block = None
        self.finished = True

    def _end_block(self, bin_idx: int, sample: int, t_enter: int) -> None:
        blk = self.block
        metrics = block_metrics(blk.results, self.bin_s)
        info = {"name": blk.name, "kind": "calibration" if blk.train else "evaluation", "task": "speech",
                "n_trials": len(blk.results), "seconds": (bin_idx - self._block_start_bin) * self.bin_s,
                "metrics": metrics}
        self.results.append(info)
        self.emit("events", {**info, "kind": "block_end", "block_kind": info["kind"]}, sample=sample, t_enter_ns=t_enter)
        self._op_block_end(info)
        self.block = None

    # -- per bin ------------------------------------------------------------------------------
    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        self._op_commands(inbox)
        for m in inbox.get("participant", ()):
            if m.payload.done:
                self._done_trials.add(int(m.payload.trial))
        for m in inbox.get("text", ()):                   # a step may bring only commands or the participant
            self._bin(m)

    def _bin(self, m: Message) -> None:
        t = m.payload
        b, sample, t_enter = int(t.bin), m.sample, m.t_enter_ns
        if self._op_hold(t, b, sample, t_enter):            # E-STOP: rest cues, no trial, no text passed on
            return
        if t.final and self.block is not None and not self.block.train:
            r = self.block.final_text(t.trial, b, t.text, t.text_no_lm, t.finish_ms, t.n_best)
            if r is not None:
                self.emit("events", {"kind": "speech_decoded", "trial": r.trial, "sentence": r.sentence,
                                     "text": r.text, "text_no_lm": r.text_no_lm, "finish_ms": r.finish_ms,
                                     "bin": b}, sample=sample, t_enter_ns=t_enter)
                self._op_final(r)
        if self._warm_left > 0:
            self._warm_left -= 1
        elif self.fitting:
            if t.ready:
                self.fitting = False
        elif self.block is None and not self.finished:
            self._begin_next(b + 1, sample, t_enter)
        cue = SpeechCue(b + 1, block=None if self.block is None else self.block.name)
        if self.block is not None:
            trial = self.block.current.trial if self.block.current is not None else -1
            done = trial in self._done_trials
            c, transitions = self.block.step(b, done)
            for kind, r in transitions:
                self._transition(kind, r, b, sample, t_enter)
            cue = SpeechCue(b + 1, c["phase"], c["trial"], c["sentence"], self.block.name, c["begin"])
            if self.block.done:
                self._end_block(b, sample, t_enter)
                self._begin_next(b + 1, sample, t_enter)
        self.emit("cue", cue, sample=sample, t_enter_ns=t_enter)
        self._op_publish()
        if self.finished and self.params["stop_when_done"]:
            self.ctx.request_stop(f"{self.name}: schedule finished")

    def _transition(self, kind: str, r: Any, b: int, sample: int, t_enter: int) -> None:
        from cortexlink.core.phonemes import sentence_phonemes

        if kind == "begin":
            self.trials.append(r)
            ids, _ = sentence_phonemes(r.sentence)
            self.emit("control", SpeechControl("trial_begin", r.trial, r.sentence, r.block, r.train,
                                               tuple(int(i) for i in ids) if r.train else (), b + 1),
                      sample=sample, t_enter_ns=t_enter)
            self.emit("events", {"kind": "speech_trial_begin", "trial": r.trial, "sentence": r.sentence,
                                 "train": r.train, "bin": b + 1}, sample=sample, t_enter_ns=t_enter)
        elif kind == "go":
            self.emit("events", {"kind": "speech_go", "trial": r.trial, "bin": b + 1}, sample=sample, t_enter_ns=t_enter)
        elif kind == "end":
            self._done_trials.discard(r.trial)
            self.emit("control", SpeechControl("trial_end", r.trial, r.sentence, r.block, r.train, (), b),
                      sample=sample, t_enter_ns=t_enter)
            self.emit("events", {"kind": "speech_trial_end", "trial": r.trial, "bin": b,
                                 "speech_end_bin": r.speech_end_bin, "timed_out": r.timed_out},
                      sample=sample, t_enter_ns=t_enter)

    def summary(self) -> dict:
        return {"blocks": self.results, "finished": self.finished, "n_trials": len(self.trials),
                "n_repeated_sentences": self.n_repeated,
                "trials": [r.to_dict() for r in self.trials]}


def block_metrics(results: list, bin_s: float) -> dict:
    """Phoneme-free metrics of a block's trials: word error rate with and without the language
    model, words per minute, the latency from the end of the attempt to the final text."""
    from cortexlink.tasks.speech_metrics import word_error_rate

    decoded = [r for r in results if r.text is not None]
    out: dict[str, Any] = {"n_trials": len(results), "n_decoded": len(decoded),
                           "n_timed_out": sum(bool(r.timed_out) for r in results)}
    if not decoded:
        return out
    refs = [r.sentence for r in decoded]
    out["wer_lm"] = float(word_error_rate(refs, [r.text for r in decoded]))
    out["wer_no_lm"] = float(word_error_rate(refs, [r.text_no_lm or "" for r in decoded]))
    spoken = [(r.speech_end_bin - r.go_bin) * bin_s for r in decoded if r.go_bin >= 0 and r.speech_end_bin > r.go_bin]
    n_words = sum(r.n_words for r in decoded if r.go_bin >= 0 and r.speech_end_bin > r.go_bin)
    out["words_per_min"] = float(60.0 * n_words / sum(spoken)) if spoken and sum(spoken) > 0 else math.nan
    lat = [((r.final_bin - r.speech_end_bin) * bin_s * 1000.0) for r in decoded if r.final_bin >= 0]
    out["latency_to_text_ms"] = {"median": float(np.median(lat)), "max": float(np.max(lat))} if lat else None
    fin = [r.finish_ms for r in decoded if math.isfinite(r.finish_ms)]
    out["finish_ms"] = {"median": float(np.median(fin)), "max": float(np.max(fin))} if fin else None
    return out


@register_node
class SpeakingParticipantNode(Node):
    """The simulated speaking participant (:class:`cortexlink.sim.speech.SpeakingParticipant`):
    reads the task's cue and drives the implant's speech-tuned units one bin ahead.

    Parameters (``params``)
    -----------------------
    seed : int
    config : dict
        :class:`~cortexlink.sim.speech.SpeakerConfig` overrides (``drive``, speaking rate, ...).
    speech_dims : int
        Dimension of the articulator state (the implant's ``speech_dims``).

    At a trial's first bin it plans the sentence; during the wait cue it holds its preparatory
    state; at the go cue it speaks the plan bin by bin and reports ``done`` at its end.
    """

    kind = "speaking_participant"
    INPUTS = {"cue": PortSpec(maxlen=64, policy="drop_oldest", required=True, feedback=True, message="speech_cue")}
    OUTPUTS = {"speech": "speech_intent"}
    PARAMS = {"seed": Param("int", 0, lo=0), "config": Param("dict", {}), "speech_dims": Param("int", 16, lo=1, hi=64)}

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        from cortexlink.sim.speech import SpeakerConfig

        try:
            SpeakerConfig(**{"speech_dims": params["speech_dims"], **params["config"]})
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"nodes.{name}.params.config is invalid: {exc}") from exc

    def setup(self) -> None:
        from cortexlink.sim.speech import SpeakerConfig, SpeakingParticipant

        if getattr(self, "speaker", None) is not None:
            return
        cfg = SpeakerConfig(**{"speech_dims": self.params["speech_dims"], **self.params["config"]})
        self.speaker = SpeakingParticipant(cfg, seed=self.params["seed"])
        self.dt = self.ctx.bin_ms / 1000.0
        self._traj: np.ndarray | None = None
        self._trial = -1
        self._k = 0
        self._go_k = 0
        self._end_k = 0
        self.n_refused = 0

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        for m in inbox.get("cue", ()):
            c = m.payload
            out = SpeechIntent(c.bin)
            if c.phase != "rest" and (c.begin or c.trial != self._trial):
                self._plan(c)
            if c.phase == "prep" and self._traj is not None:
                k = min(self._k, self._go_k - 1)
                self._k += 1
                out = SpeechIntent(c.bin, c.trial, self._traj[max(k, 0)], False, False)
            elif c.phase == "go" and self._traj is not None:
                if self._k < self._go_k:
                    self._k = self._go_k
                k = min(self._k, len(self._traj) - 1)
                self._k += 1
                out = SpeechIntent(c.bin, c.trial, self._traj[k], self._go_k <= k < self._end_k, k >= self._end_k)
            elif c.phase == "rest":
                self._traj = None
            self.emit("speech", out, sample=m.sample, t_enter_ns=m.t_enter_ns)

    def _plan(self, c: SpeechCue) -> None:
        from cortexlink.core.errors import ValidationError

        self._trial = c.trial
        try:
            plan = self.speaker.plan(c.sentence, c.trial)
        except ValidationError as exc:                      # words it cannot pronounce: it stays silent
            self.n_refused += 1
            self.fault("speech_refused", severity="warning", message=str(exc))
            self._traj = None
            return
        self._traj = np.asarray(self.speaker.trajectory(plan, dt_s=self.dt), np.float64)
        self._go_k = int(plan.go_step(self.dt))
        self._end_k = int(plan.end_step(self.dt))
        self._k = 0
