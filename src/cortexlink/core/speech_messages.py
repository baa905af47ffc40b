"""The messages of the speech loop (brain-to-text), typed like those of :mod:`cortexlink.core.messages`.

=====================  ====================  =====================================================
type                   port kind             from -> to
=====================  ====================  =====================================================
:class:`SpeechCue`     ``speech_cue``        speech task -> speaking participant, UI feed
:class:`SpeechIntent`  ``speech_intent``     speaking participant -> implant, speech task
:class:`SpeechControl` ``speech_control``    speech task -> phoneme and word decoders
:class:`PhonemeFrame`  ``phoneme_frame``     phoneme decoder -> word decoder, recorder
:class:`SpeechText`    ``speech_text``       word decoder -> speech task, UI feed
=====================  ====================  =====================================================

Every one of them is sent once per bin (a :class:`PhonemeFrame` with no rows, a
:class:`SpeechText` with ``text=""`` when there is nothing new), so the graph runs in lock step
in ``clock: fast`` as the cursor loop does. ``to_dict``/``from_dict`` carry them over Redis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cortexlink.core.errors import ValidationError

__all__ = ["SpeechCue", "SpeechIntent", "SpeechControl", "PhonemeFrame", "SpeechText", "CUE_PHASES",
           "SPEECH_CONTROLS"]

#: What the participant is shown: nothing (``rest``), the sentence with a wait cue (``prep``),
#: the go cue (``go``: speak now).
CUE_PHASES = ("rest", "prep", "go")
#: speech task -> decoders: a trial begins / ends, fit the phoneme decoder on the calibration trials.
SPEECH_CONTROLS = ("trial_begin", "trial_end", "fit")


def _keys(cls: type, d: Any, required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ValidationError(f"{cls.__name__}.from_dict needs a dict; got {type(d).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    missing = [k for k in required if k not in d]
    if unknown or missing:
        raise ValidationError(f"{cls.__name__}: unknown keys {unknown}, missing keys {missing}")
    return d


@dataclasses.dataclass(frozen=True)
class SpeechCue:
    """What the speech task shows for the next bin.

    Attributes
    ----------
    bin : int
        The bin this cue is for.
    phase : str
        One of :data:`CUE_PHASES`.
    trial : int
        Trial index in the session (-1 at rest).
    sentence : str
        The sentence to attempt ("" at rest).
    block : str or None
        The block's name (None between blocks).
    begin : bool
        First bin of a trial (the participant plans the sentence now).
    """

    bin: int
    phase: str = "rest"
    trial: int = -1
    sentence: str = ""
    block: str | None = None
    begin: bool = False

    def __post_init__(self) -> None:
        if self.phase not in CUE_PHASES:
            raise ValidationError(f"phase must be one of {CUE_PHASES}; got {self.phase!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpeechCue":
        d = _keys(cls, d, ("bin",))
        return cls(int(d["bin"]), str(d.get("phase", "rest")), int(d.get("trial", -1)), str(d.get("sentence", "")),
                   d.get("block"), bool(d.get("begin", False)))


@dataclasses.dataclass(frozen=True, eq=False)
class SpeechIntent:
    """The speaking participant in one bin.

    Attributes
    ----------
    bin : int
    trial : int
        -1 at rest.
    articulators : ndarray (speech_dims,) or None
        The articulator state the implant's speech-tuned units encode (None at rest: no drive).
    speaking : bool
        Speech is under way (between the first phoneme's onset and the last one's end).
    done : bool
        The participant has finished the sentence (the task may end the trial).
    """

    bin: int
    trial: int = -1
    articulators: np.ndarray | None = None
    speaking: bool = False
    done: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"bin": int(self.bin), "trial": int(self.trial), "articulators": self.articulators,
                "speaking": bool(self.speaking), "done": bool(self.done)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpeechIntent":
        d = _keys(cls, d, ("bin",))
        a = d.get("articulators")
        return cls(int(d["bin"]), int(d.get("trial", -1)), None if a is None else np.asarray(a, np.float64),
                   bool(d.get("speaking", False)), bool(d.get("done", False)))


@dataclasses.dataclass(frozen=True)
class SpeechControl:
    """speech task -> decoders.

    Attributes
    ----------
    cmd : str
        One of :data:`SPEECH_CONTROLS`.
    trial : int
    sentence : str
        ``trial_begin``: the sentence attempted.
    block : str
        The block's name.
    train : bool
        ``trial_begin``: a calibration trial (its features and phonemes are kept for the fit)
        rather than an evaluated one (decoded as it goes).
    phonemes : tuple of int
        ``trial_begin`` of a calibration trial: the sentence's class ids (with SIL).
    bin : int
        The bin at which the command applies.
    """

    cmd: str
    trial: int = -1
    sentence: str = ""
    block: str = ""
    train: bool = False
    phonemes: tuple[int, ...] = ()
    bin: int = 0

    def __post_init__(self) -> None:
        if self.cmd not in SPEECH_CONTROLS:
            raise ValidationError(f"cmd must be one of {SPEECH_CONTROLS}; got {self.cmd!r}")
        object.__setattr__(self, "phonemes", tuple(int(p) for p in self.phonemes))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["phonemes"] = list(self.phonemes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpeechControl":
        d = _keys(cls, d, ("cmd",))
        return cls(str(d["cmd"]), int(d.get("trial", -1)), str(d.get("sentence", "")), str(d.get("block", "")),
                   bool(d.get("train", False)), tuple(d.get("phonemes") or ()), int(d.get("bin", 0)))


@dataclasses.dataclass(frozen=True, eq=False)
class PhonemeFrame:
    """The phoneme decoder's output for one bin.

    Attributes
    ----------
    bin : int
    trial : int
        The trial being decoded (-1: none).
    logprobs : ndarray (n, 41) float32
        Log-probabilities of the CTC classes (blank, 39 phonemes, SIL); ``n`` is 0 or more (a
        decoder with stride s gives a row every s bins).
    ready : bool
        A fitted decoder produced them.
    step_us : float
        Time the decoder's step took.
    """

    bin: int
    trial: int = -1
    logprobs: np.ndarray | None = None
    ready: bool = False
    step_us: float = 0.0

    @property
    def n_rows(self) -> int:
        return 0 if self.logprobs is None else int(len(self.logprobs))

    def to_dict(self) -> dict[str, Any]:
        return {"bin": int(self.bin), "trial": int(self.trial), "logprobs": self.logprobs, "ready": bool(self.ready),
                "step_us": float(self.step_us)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PhonemeFrame":
        d = _keys(cls, d, ("bin",))
        lp = d.get("logprobs")
        return cls(int(d["bin"]), int(d.get("trial", -1)), None if lp is None else np.asarray(lp, np.float32),
                   bool(d.get("ready", False)), float(d.get("step_us", 0.0)))


@dataclasses.dataclass(frozen=True)
class SpeechText:
    """The word decoder's text after a bin.

    Attributes
    ----------
    bin : int
    trial : int
    text : str
        The best hypothesis so far (partial) or the final sentence.
    final : bool
        The trial has ended and this is its decoded sentence.
    text_no_lm : str
        ``final`` only: the same frames decoded with the lexicon and no language model.
    finish_ms : float
        ``final`` only: time from the trial's end reaching the word decoder to its final text.
    n_best : tuple of str
        ``final`` only: the n-best sentences, best first.
    ready : bool
        The phoneme decoder is fitted (the speech task waits for it after a fit).
    """

    bin: int
    trial: int = -1
    text: str = ""
    final: bool = False
    text_no_lm: str = ""
    finish_ms: float = 0.0
    n_best: tuple[str, ...] = ()
    ready: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["n_best"] = list(self.n_best)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpeechText":
        d = _keys(cls, d, ("bin",))
        return cls(int(d["bin"]), int(d.get("trial", -1)), str(d.get("text", "")), bool(d.get("final", False)),
                   str(d.get("text_no_lm", "")), float(d.get("finish_ms", 0.0)), tuple(d.get("n_best") or ()),
                   bool(d.get("ready", False)))
