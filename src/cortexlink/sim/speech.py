"""A simulated participant attempting to speak sentences: :class:`SpeakingParticipant`.

It turns a sentence into a timed phoneme plan (:meth:`SpeakingParticipant.plan`) and the plan into
an articulator state every ``dt_s`` (:meth:`SpeakingParticipant.trajectory`), which drives the
speech-tuned units of a :class:`~cortexlink.sim.SimulatedImplant` built with ``speech_dims > 0``
(:meth:`~cortexlink.sim.SimulatedImplant.set_articulators`). It stands in for the ventral
precentral gyrus of a participant with dysarthria attempting speech (Willett et al. 2023, Nature
620:1031; Card et al. 2024, NEJM 391:609), not for a model of the vocal tract.

Articulator targets
    Each of the 39 phonemes and ``SIL`` has an articulatory-feature vector (:data:`FEATURES`:
    consonant/vowel, place, manner, voicing, nasality, lateral, rhotic, vowel height, backness,
    rounding, tenseness, diphthong, silence). The values are the textbook descriptions of General
    American English segments (IPA chart; Ladefoged & Johnson, *A Course in Phonetics*, ch. 2-4),
    written out here by hand; diphthongs take the midpoint of their start and end qualities. The
    standardised features go through a seeded random projection to ``speech_dims`` and are mixed
    with a seeded phoneme-specific random vector (``feature_weight`` of the variance from the
    features): phonemes sharing features are close but never identical (mixed selectivity, as
    single electrodes in area 6v respond to several articulators). Every target has an RMS of
    ``drive`` per dimension, so a unit-norm tuning vector sees a drive of about ``drive``.
Timing
    Each phoneme lasts its inherent duration from Klatt's duration rules (Klatt 1979, in Allen,
    Hunnicutt & Klatt 1987, *From Text to Speech: the MITalk system*; e.g. AA 240 ms, IH 135 ms,
    T 75 ms, S 105 ms; CMU ``AH`` covers schwa (120) and the strut vowel (140): 130) times
    ``duration_scale`` (attempted speech is slow), times a per-sentence speaking-rate factor
    (log-normal, ``rate_sd``) and a per-phoneme jitter (log-normal, ``jitter_sd``), at least
    ``min_phoneme_s``. ``SIL`` follows every word (as in the Brain-to-Text data): ``sil_s`` at a
    word boundary, or with probability ``pause_p`` a pause drawn from ``pause_s_range``.
    Coarticulation: the step sequence of targets passes through a critically damped second-order
    low-pass (two one-pole sections of time constant ``coarticulation_tau_s``), so the articulator
    state moves smoothly from one target to the next and never jumps.
Trial structure
    ``t = 0`` is the cue (the sentence appears). A preparatory period of ``prep_s`` (+- a uniform
    ``prep_jitter_s``) follows, with a weak sentence-specific drive (``prep_drive`` x the mean
    target of the first word plus a trial-specific random part, from ``prep_onset_s`` after the
    cue). The go cue comes at ``plan.prep_s``; speech lasts ``plan.duration_s`` (the last word's
    ``SIL`` included); the trajectory ends ``tail_s`` later, at rest (zero).
Speaking rate
    With the defaults the Harvard sentences are spoken at a median of ~62 words/min (5th-95th
    percentile about 45-85), the rate of Willett et al. 2023 (62 wpm); measure it with
    ``plan(s, i).words_per_min``.

Everything is deterministic per ``(seed, trial)``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from cortexlink.core.config import ConfigMixin
from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.phonemes import CLASS_NAMES, N_CLASSES, SIL, sentence_phonemes, words
from cortexlink.core.validation import check_range

__all__ = ["SpeakerConfig", "SpeechPlan", "SpeakingParticipant", "FEATURES", "INHERENT_DURATION_MS"]

_STREAM_TARGETS, _STREAM_PLAN, _STREAM_PREP = 11, 12, 13

#: Names of the articulatory features (columns of the feature table).
FEATURES: tuple[str, ...] = (
    "consonant", "bilabial", "labiodental", "dental", "alveolar", "postalveolar", "palatal", "velar",
    "glottal", "stop", "fricative", "affricate", "nasal", "lateral", "rhotic", "glide", "voiced",
    "height", "backness", "round", "tense", "diphthong", "silence")


def _row(**kw: float) -> dict:
    return kw


# Vowels: height 0 (low) .. 1 (high), backness 0 (front) .. 1 (back); diphthongs at the midpoint.
_TABLE: dict[str, dict] = {
    "IY": _row(height=1.0, backness=0.0, tense=1, voiced=1),
    "IH": _row(height=0.8, backness=0.15, voiced=1),
    "EY": _row(height=0.65, backness=0.05, tense=1, diphthong=1, voiced=1),
    "EH": _row(height=0.4, backness=0.05, voiced=1),
    "AE": _row(height=0.1, backness=0.05, voiced=1),
    "AA": _row(height=0.0, backness=1.0, tense=1, voiced=1),
    "AO": _row(height=0.25, backness=1.0, round=1, tense=1, voiced=1),
    "AH": _row(height=0.45, backness=0.55, voiced=1),
    "UH": _row(height=0.8, backness=0.85, round=1, voiced=1),
    "UW": _row(height=1.0, backness=1.0, round=1, tense=1, voiced=1),
    "OW": _row(height=0.6, backness=1.0, round=1, tense=1, diphthong=1, voiced=1),
    "AW": _row(height=0.4, backness=0.7, round=0.5, diphthong=1, voiced=1),
    "AY": _row(height=0.4, backness=0.4, diphthong=1, voiced=1),
    "OY": _row(height=0.5, backness=0.6, round=0.5, diphthong=1, voiced=1),
    "ER": _row(height=0.5, backness=0.5, rhotic=1, tense=1, voiced=1),
    # consonants: place, manner, voicing
    "P": _row(consonant=1, bilabial=1, stop=1),
    "B": _row(consonant=1, bilabial=1, stop=1, voiced=1),
    "M": _row(consonant=1, bilabial=1, nasal=1, voiced=1),
    "F": _row(consonant=1, labiodental=1, fricative=1),
    "V": _row(consonant=1, labiodental=1, fricative=1, voiced=1),
    "TH": _row(consonant=1, dental=1, fricative=1),
    "DH": _row(consonant=1, dental=1, fricative=1, voiced=1),
    "T": _row(consonant=1, alveolar=1, stop=1),
    "D": _row(consonant=1, alveolar=1, stop=1, voiced=1),
    "N": _row(consonant=1, alveolar=1, nasal=1, voiced=1),
    "S": _row(consonant=1, alveolar=1, fricative=1),
    "Z": _row(consonant=1, alveolar=1, fricative=1, voiced=1),
    "L": _row(consonant=1, alveolar=1, lateral=1, voiced=1),
    "SH": _row(consonant=1, postalveolar=1, fricative=1, round=0.5),
    "ZH": _row(consonant=1, postalveolar=1, fricative=1, round=0.5, voiced=1),
    "CH": _row(consonant=1, postalveolar=1, affricate=1, round=0.5),
    "JH": _row(consonant=1, postalveolar=1, affricate=1, round=0.5, voiced=1),
    "R": _row(consonant=1, postalveolar=1, rhotic=1, round=0.5, voiced=1),
    "Y": _row(consonant=1, palatal=1, glide=1, height=1.0, voiced=1),
    "K": _row(consonant=1, velar=1, stop=1),
    "G": _row(consonant=1, velar=1, stop=1, voiced=1),
    "NG": _row(consonant=1, velar=1, nasal=1, voiced=1),
    "W": _row(consonant=1, bilabial=1, velar=1, glide=1, round=1, height=1.0, backness=1.0, voiced=1),
    "HH": _row(consonant=1, glottal=1, fricative=1),
    "SIL": _row(silence=1),
}

#: Inherent durations in ms (Klatt 1979 duration rules; AH = mean of schwa 120 and strut 140) and
#: the SIL entry unused (SIL timing comes from ``sil_s`` / pauses).
INHERENT_DURATION_MS: dict[str, float] = {
    "AA": 240, "AE": 230, "AH": 130, "AO": 240, "AW": 260, "AY": 250, "EH": 150, "ER": 180, "EY": 190,
    "IH": 135, "IY": 155, "OW": 220, "OY": 280, "UH": 160, "UW": 210,
    "B": 85, "CH": 70, "D": 75, "DH": 50, "F": 100, "G": 80, "HH": 80, "JH": 70, "K": 80, "L": 80,
    "M": 70, "N": 60, "NG": 95, "P": 90, "R": 80, "S": 105, "SH": 105, "T": 75, "TH": 90, "V": 60,
    "W": 80, "Y": 80, "Z": 75, "ZH": 70,
}


def _feature_matrix() -> np.ndarray:
    """(N_CLASSES, len(FEATURES)); row 0 (blank) is all zero and unused."""
    F = np.zeros((N_CLASSES, len(FEATURES)))
    for cls, name in enumerate(CLASS_NAMES):
        if name == "BLANK":
            continue
        for feat, v in _TABLE[name].items():
            F[cls, FEATURES.index(feat)] = v
    return F


def _pair(name: str, value: Any, lo: float, hi: float) -> tuple[float, float]:
    try:
        a, b = (check_range(name, v, lo, hi) for v in value)
    except (TypeError, ConfigError):
        raise ConfigError(f"{name} must be a (low, high) pair of numbers in [{lo}, {hi}] with low <= high; "
                          f"got {value!r}") from None
    if a > b:
        raise ConfigError(f"{name} must be a (low, high) pair with low <= high; got {value!r}")
    return (a, b)


@dataclasses.dataclass(frozen=True)
class SpeakerConfig(ConfigMixin):
    """Validated parameters of a :class:`SpeakingParticipant` (see the module docstring).

    Every field is checked when the config is built; an invalid value raises
    :class:`~cortexlink.ConfigError` naming the field, the allowed range and the value received.

    Parameters
    ----------
    speech_dims : int
        Dimension of the articulator vector, 1 to 64; must equal the implant's ``speech_dims``.
    drive : float
        Strength of the articulator vectors (0 to 20): RMS per dimension of a phoneme target. The
        one knob to calibrate decoding difficulty (with the implant's ``speech_depth_hz_range``).
    feature_weight : float
        Share of each target's variance from the articulatory features (0 to 1); the rest is
        phoneme-specific and random.
    duration_scale : float
        Factor on Klatt's inherent durations (0.2 to 10). Default 2.28: with the pauses this puts
        the median rate of the Harvard sentences at ~62 words/min (Willett 2023).
    rate_sd : float
        Log-normal sigma of the per-sentence speaking-rate factor (0 to 1).
    jitter_sd : float
        Log-normal sigma of each phoneme's duration jitter (0 to 1).
    min_phoneme_s : float
        Shortest phoneme, seconds (0.005 to 0.5).
    sil_s : float
        Duration of the SIL at a word boundary without a pause, seconds (0.005 to 2), scaled by
        the sentence's rate factor and jittered like a phoneme.
    pause_p : float
        Probability of a pause at each boundary between words (0 to 1).
    pause_s_range : (float, float)
        Duration of a pause, uniform, seconds (0 to 5).
    coarticulation_tau_s : float
        Time constant of the critically damped smoothing of the targets, seconds (0.001 to 0.5).
    prep_s : float
        Mean time from the cue to the go cue, seconds (0 to 10).
    prep_jitter_s : float
        Half-width of the uniform jitter of ``prep_s`` (0 to 5; the result is at least 0).
    prep_onset_s : float
        Delay from the cue to the preparatory drive, seconds (0 to 5).
    prep_drive : float
        Strength of the preparatory drive relative to ``drive`` (0 to 2).
    tail_s : float
        Rest after the end of speech in the trajectory, seconds (0 to 10).
    """

    speech_dims: int = 16
    drive: float = 1.0
    feature_weight: float = 0.7
    duration_scale: float = 2.28
    rate_sd: float = 0.15
    jitter_sd: float = 0.2
    min_phoneme_s: float = 0.04
    sil_s: float = 0.08
    pause_p: float = 0.2
    pause_s_range: tuple[float, float] = (0.15, 0.5)
    coarticulation_tau_s: float = 0.04
    prep_s: float = 1.0
    prep_jitter_s: float = 0.2
    prep_onset_s: float = 0.2
    prep_drive: float = 0.3
    tail_s: float = 0.3

    def __post_init__(self) -> None:
        s = lambda k, lo, hi: object.__setattr__(self, k, check_range(k, getattr(self, k), lo, hi))  # noqa: E731
        d = self.speech_dims
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or not 1 <= d <= 64:
            raise ConfigError(f"speech_dims must be an integer in [1, 64]; got {d!r}")
        object.__setattr__(self, "speech_dims", int(d))
        s("drive", 0.0, 20.0)
        s("feature_weight", 0.0, 1.0)
        s("duration_scale", 0.2, 10.0)
        s("rate_sd", 0.0, 1.0)
        s("jitter_sd", 0.0, 1.0)
        s("min_phoneme_s", 0.005, 0.5)
        s("sil_s", 0.005, 2.0)
        s("pause_p", 0.0, 1.0)
        object.__setattr__(self, "pause_s_range", _pair("pause_s_range", self.pause_s_range, 0.0, 5.0))
        s("coarticulation_tau_s", 0.001, 0.5)
        s("prep_s", 0.0, 10.0)
        s("prep_jitter_s", 0.0, 5.0)
        s("prep_onset_s", 0.0, 5.0)
        s("prep_drive", 0.0, 2.0)
        s("tail_s", 0.0, 10.0)


@dataclasses.dataclass(frozen=True, eq=False)
class SpeechPlan:
    """What a participant will attempt to say on one trial, and when.

    Times are seconds from the go cue; the go cue itself comes ``prep_s`` after the cue.

    Attributes
    ----------
    sentence : str
        The sentence as given.
    words : tuple of str
        Its words (:func:`cortexlink.core.phonemes.words`).
    phoneme_ids : ndarray of int32, read-only
        Class ids (1..40) as spoken: each word's first CMU pronunciation followed by ``SIL``.
    starts_s, ends_s : ndarray of float64, read-only
        Start and end of each phoneme (contiguous: ``starts_s[i+1] == ends_s[i]``, ``starts_s[0] == 0``).
    duration_s : float
        Length of speech from the go cue (``ends_s[-1]``).
    prep_s : float
        Cue to go cue.
    tail_s : float
        Rest after speech included in the trajectory.
    trial : int
        The trial index it was drawn for.
    """

    sentence: str
    words: tuple[str, ...]
    phoneme_ids: np.ndarray
    starts_s: np.ndarray
    ends_s: np.ndarray
    duration_s: float
    prep_s: float
    tail_s: float
    trial: int

    @property
    def words_per_min(self) -> float:
        """Speaking rate of this trial: words / ``duration_s`` x 60."""
        return 60.0 * len(self.words) / self.duration_s

    def go_step(self, dt_s: float = 0.01) -> int:
        """Index of the trajectory step (of ``dt_s``) at which the go cue comes."""
        return int(round(self.prep_s / _dt(dt_s)))

    def end_step(self, dt_s: float = 0.01) -> int:
        """Index of the trajectory step at which speech ends (``prep_s + duration_s``)."""
        return int(round((self.prep_s + self.duration_s) / _dt(dt_s)))

    def n_steps(self, dt_s: float = 0.01) -> int:
        """Length of :meth:`SpeakingParticipant.trajectory`: through the end of speech plus ``tail_s``."""
        return int(round((self.prep_s + self.duration_s + self.tail_s) / _dt(dt_s)))


def _dt(dt_s: Any) -> float:
    dt = check_range("dt_s", dt_s, 1e-4, 1.0)
    if dt <= 0:
        raise ConfigError(f"dt_s must be in (0, 1]; got {dt_s!r}")
    return dt


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


class SpeakingParticipant:
    """A seeded simulated participant attempting to speak (see the module docstring).

    Parameters
    ----------
    config : SpeakerConfig, optional
        Parameters; default ``SpeakerConfig()``.
    seed : int
        Seed (>= 0) of the targets and of every trial's draws. Same seed and trial, same plan and
        trajectory.
    **overrides
        Fields of ``config`` to change (validated).

    Raises
    ------
    ConfigError
        For an invalid config, override or seed.

    Examples
    --------
    >>> sp = SpeakingParticipant(seed=0, speech_dims=8)
    >>> p = sp.plan("The birch canoe slid on the smooth planks.", trial=0)
    >>> X = sp.trajectory(p)             # (p.n_steps(), 8), one row per 10 ms from the cue
    """

    def __init__(self, config: SpeakerConfig | None = None, *, seed: int = 0, **overrides: Any) -> None:
        if config is None:
            config = SpeakerConfig()
        if not isinstance(config, SpeakerConfig):
            raise ConfigError(f"config must be a SpeakerConfig or None; got {type(config).__name__}")
        if overrides:
            config = config.replace(**overrides)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0; got {seed!r}")
        self.config = config
        self.seed = int(seed)
        self._targets = _ro(self._build_targets())
        dur = np.zeros(N_CLASSES)
        for cls, name in enumerate(CLASS_NAMES):
            dur[cls] = INHERENT_DURATION_MS.get(name, 0.0) * 1e-3
        self._inherent_s = dur

    def _build_targets(self) -> np.ndarray:
        cfg = self.config
        D = cfg.speech_dims
        rng = np.random.default_rng([self.seed, _STREAM_TARGETS])
        F = _feature_matrix()[1:]
        Fz = (F - F.mean(0)) / np.maximum(F.std(0), 1e-12)
        P = rng.standard_normal((F.shape[1], D))
        rand = rng.standard_normal((N_CLASSES - 1, D))

        def rms1(x: np.ndarray) -> np.ndarray:
            return x / np.maximum(np.sqrt(np.mean(x * x, axis=1, keepdims=True)), 1e-12)

        T = rms1(math.sqrt(cfg.feature_weight) * rms1(Fz @ P) + math.sqrt(1 - cfg.feature_weight) * rms1(rand))
        return np.vstack([np.zeros((1, D)), cfg.drive * T])

    @property
    def targets(self) -> np.ndarray:
        """Read-only (41, speech_dims): the articulator target of each class id (row 0, blank, is rest: zero)."""
        return self._targets

    def plan(self, sentence: str, trial: int) -> SpeechPlan:
        """Draw the timing of one attempt at ``sentence``.

        Parameters
        ----------
        sentence : str
            The sentence; every word must be in the CMU dictionary.
        trial : int
            Trial index (>= 0); the draws come from ``(seed, trial)``.

        Returns
        -------
        SpeechPlan

        Raises
        ------
        ValidationError
            If ``sentence`` is not a string, has no words, or has words without a pronunciation
            (named in the message: count them and skip the sentence).
        ConfigError
            If ``trial`` is not an integer >= 0.
        """
        if isinstance(trial, bool) or not isinstance(trial, numbers.Integral) or trial < 0:
            raise ConfigError(f"trial must be an integer >= 0; got {trial!r}")
        ws = tuple(words(sentence))
        if not ws:
            raise ValidationError(f"sentence has no words; got {sentence!r}")
        ids, oov = sentence_phonemes(sentence)
        if oov:
            raise ValidationError(f"sentence has {len(oov)} word(s) not in the CMU dictionary: {oov}; "
                                  f"got {sentence!r}")
        cfg = self.config
        rng = np.random.default_rng([self.seed, _STREAM_PLAN, int(trial)])
        n = len(ids)
        rate = math.exp(cfg.rate_sd * rng.standard_normal())
        jitter = np.exp(cfg.jitter_sd * rng.standard_normal(n))
        pause = rng.random(n) < cfg.pause_p
        pause_s = rng.uniform(*cfg.pause_s_range, n)
        prep = max(0.0, cfg.prep_s + rng.uniform(-cfg.prep_jitter_s, cfg.prep_jitter_s))
        dur = self._inherent_s[ids] * cfg.duration_scale * rate * jitter
        is_sil = ids == SIL
        dur[is_sil] = cfg.sil_s * rate * jitter[is_sil]
        dur = np.maximum(dur, cfg.min_phoneme_s)
        between = is_sil.copy()
        between[-1] = False                      # no pause after the last word
        dur[between & pause] += pause_s[between & pause]
        ends = np.cumsum(dur)
        starts = ends - dur
        starts[0] = 0.0
        return SpeechPlan(sentence=sentence, words=ws, phoneme_ids=_ro(ids), starts_s=_ro(starts),
                          ends_s=_ro(ends), duration_s=float(ends[-1]), prep_s=float(prep),
                          tail_s=cfg.tail_s, trial=int(trial))

    def trajectory(self, plan: SpeechPlan, dt_s: float = 0.01) -> np.ndarray:
        """Articulator state every ``dt_s`` from the cue through the end of speech plus ``tail_s``.

        Parameters
        ----------
        plan : SpeechPlan
            From :meth:`plan` (of a participant with the same ``speech_dims``).
        dt_s : float
            Step, seconds (1e-4 to 1); 0.01 matches the implant's default 10 ms block.

        Returns
        -------
        ndarray (plan.n_steps(dt_s), speech_dims), float64
            Row ``k`` is the state at ``t = k * dt_s`` after the cue; feed it to
            :meth:`~cortexlink.sim.SimulatedImplant.set_articulators` one row per step.
            Rows ``plan.go_step(dt_s)`` to ``plan.end_step(dt_s)`` are speech.

        Raises
        ------
        ValidationError
            If ``plan`` is not a :class:`SpeechPlan`.
        ConfigError
            For a bad ``dt_s``.
        """
        if not isinstance(plan, SpeechPlan):
            raise ValidationError(f"plan must be a SpeechPlan (from SpeakingParticipant.plan); got {type(plan).__name__}")
        dt = _dt(dt_s)
        cfg = self.config
        n = plan.n_steps(dt)
        t = np.arange(n) * dt
        target = np.zeros((n, cfg.speech_dims))
        # preparatory drive: sentence-specific (its first word) plus a trial-specific part
        first = plan.phoneme_ids[:int(np.argmax(plan.phoneme_ids == SIL))]
        rng = np.random.default_rng([self.seed, _STREAM_PREP, plan.trial])
        prep_vec = self._targets[first].mean(0) + cfg.drive * rng.standard_normal(cfg.speech_dims) * 0.5
        prep_vec *= cfg.prep_drive * cfg.drive / max(float(np.sqrt(np.mean(prep_vec ** 2))), 1e-12)
        in_prep = (t >= min(cfg.prep_onset_s, plan.prep_s)) & (t < plan.prep_s)
        target[in_prep] = prep_vec
        # speech: the target of the phoneme under way at each step
        ts = t - plan.prep_s
        speaking = (ts >= 0) & (ts < plan.duration_s)
        idx = np.searchsorted(plan.ends_s, ts[speaking], side="right")
        target[speaking] = self._targets[plan.phoneme_ids[np.minimum(idx, len(plan.phoneme_ids) - 1)]]
        # coarticulation: critically damped second-order low-pass (two equal one-pole sections)
        a = math.exp(-dt / cfg.coarticulation_tau_s)
        from scipy.signal import lfilter
        y = lfilter([(1 - a) ** 2], [1.0, -2 * a, a * a], target, axis=0)
        return y

    def __repr__(self) -> str:
        return f"SpeakingParticipant(speech_dims={self.config.speech_dims}, seed={self.seed})"
