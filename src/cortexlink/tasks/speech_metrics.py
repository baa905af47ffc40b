"""Scores of the speech task: phoneme and word error rates, speaking rate, the held-out split.

Error rates are *aggregate* rates, as the Brain-to-Text papers and competitions report them: the
edits summed over all sentences divided by the reference lengths summed over all sentences (not
a mean of per-sentence ratios, which would weigh a three-word sentence like a fifteen-word one).
Words are compared after :func:`cortexlink.core.phonemes.normalize_text` (lower case, punctuation
dropped), the same words the simulator, the lexicon and the language model use.

Empty input never raises: a rate with no reference phoneme or word is ``nan`` ("undefined", not
"perfect"); a split of no sentences is two empty lists.

Examples
--------
>>> phoneme_error_rate([[1, 2, 40, 3]], [[1, 3]])          # SIL (40) left out: 1 edit / 3
0.3333333333333333
>>> word_error_rate(["The birch canoe."], ["the birch canoes"])
0.3333333333333333
>>> train, test = speech_split(load_harvard(), n_test=100, seed=0)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.phonemes import N_CLASSES, SIL, normalize_text

__all__ = ["edit_distance", "phoneme_error_counts", "phoneme_error_rate", "word_error_counts",
           "word_error_rate", "words_per_minute", "speech_split", "load_harvard", "HARVARD_RELPATH", "shared_data_path"]

HARVARD_RELPATH = Path("text_corpus") / "harvard_sentences.txt"


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences (substitutions, deletions, insertions cost 1).

    ``a`` and ``b`` may be lists, tuples, strings or 1-D arrays; elements are compared with ``==``
    after mapping each distinct element to an integer. Empty sequences are allowed
    (``edit_distance([], b) == len(b)``).
    """
    a_list, b_list = list(a), list(b)
    if not a_list or not b_list:
        return len(a_list) + len(b_list)
    codes: dict = {}
    x = np.array([codes.setdefault(v, len(codes)) for v in a_list], dtype=np.int64)
    y = np.array([codes.setdefault(v, len(codes)) for v in b_list], dtype=np.int64)
    m = len(y)
    j = np.arange(m + 1, dtype=np.int64)
    prev = j.copy()
    for i, xi in enumerate(x, start=1):
        cand = np.empty(m + 1, dtype=np.int64)
        cand[0] = i
        # substitution/match from the diagonal, deletion from the row above
        cand[1:] = np.minimum(prev[:-1] + (y != xi), prev[1:] + 1)
        # insertions within the row: row[j] = min_k<=j cand[k] + (j - k)
        prev = np.minimum.accumulate(cand - j) + j
    return int(prev[-1])


def _check_pairs(refs, hyps, what: str) -> tuple[list, list]:
    refs_l, hyps_l = list(refs), list(hyps)
    if len(refs_l) != len(hyps_l):
        raise ValidationError(f"{what}: refs and hyps must have one entry per sentence; "
                              f"got {len(refs_l)} refs and {len(hyps_l)} hyps")
    return refs_l, hyps_l


def _phoneme_ids(seq, include_sil: bool, which: str, i: int) -> np.ndarray:
    if isinstance(seq, (str, bytes)):
        raise ValidationError(f"{which}[{i}] must be a sequence of class ids (integers 1..{N_CLASSES - 1}); "
                              f"got a {type(seq).__name__}")
    arr = np.asarray(seq)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        raise ValidationError(f"{which}[{i}] must be a 1-D sequence of integer class ids; "
                              f"got shape {arr.shape}, dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 1 or arr.max() >= N_CLASSES:
        raise ValidationError(f"{which}[{i}] must hold class ids in 1..{N_CLASSES - 1} (no blanks); "
                              f"got values {int(arr.min())}..{int(arr.max())}")
    return arr if include_sil else arr[arr != SIL]


def phoneme_error_counts(refs: Iterable[Sequence[int]], hyps: Iterable[Sequence[int]], *,
                         include_sil: bool = False) -> tuple[int, int]:
    """Total phoneme edits and total reference phonemes over all sentences.

    Parameters
    ----------
    refs, hyps : iterables of sequences of int
        Class ids per sentence (1..39 phonemes, 40 = ``SIL``; no blanks), as
        :func:`cortexlink.core.phonemes.sentence_phonemes` and ``collapse_ctc`` give them.
    include_sil : bool
        Count ``SIL`` like a phoneme. By default it is removed from both sides first, so word
        boundaries are not scored (the Brain-to-Text baselines score them; pass ``True`` to compare).

    Returns
    -------
    (n_edits, n_ref) : tuple of int
        Sum of :func:`edit_distance` and sum of reference lengths; ``(0, 0)`` for no sentences.

    Raises
    ------
    ValidationError
        Different numbers of refs and hyps; ids that are not integers in 1..40.
    """
    refs_l, hyps_l = _check_pairs(refs, hyps, "phoneme_error_rate")
    n_edits = n_ref = 0
    for i, (r, h) in enumerate(zip(refs_l, hyps_l)):
        ra = _phoneme_ids(r, include_sil, "refs", i)
        ha = _phoneme_ids(h, include_sil, "hyps", i)
        n_edits += edit_distance(ra, ha)
        n_ref += len(ra)
    return n_edits, n_ref


def phoneme_error_rate(refs: Iterable[Sequence[int]], hyps: Iterable[Sequence[int]], *,
                       include_sil: bool = False) -> float:
    """Aggregate phoneme error rate: summed edits / summed reference lengths (see
    :func:`phoneme_error_counts`). ``nan`` when there is no reference phoneme (no sentences, or
    only empty ones); it can exceed 1 when the hypotheses insert many phonemes."""
    n_edits, n_ref = phoneme_error_counts(refs, hyps, include_sil=include_sil)
    return n_edits / n_ref if n_ref else float("nan")


def _text(x, which: str, i: int) -> str:
    if isinstance(x, bytes):
        x = x.decode("ascii", errors="replace")
    if isinstance(x, (list, tuple)) and all(isinstance(w, str) for w in x):
        x = " ".join(x)
    if not isinstance(x, str):
        raise ValidationError(f"{which}[{i}] must be a sentence (a string, or a list of word strings); "
                              f"got {type(x).__name__}")
    return normalize_text(x)


def word_error_counts(refs: Iterable[str], hyps: Iterable[str]) -> tuple[int, int]:
    """Total word edits (substitutions + deletions + insertions) and total reference words.

    Sentences are strings (or lists of words) normalised by ``normalize_text``; the alignment is
    ``jiwer.process_words`` over all pairs at once. ``(0, 0)`` for no sentences; a reference that
    is empty after normalisation contributes its hypothesis' words as insertions.

    Raises
    ------
    ValidationError
        Different numbers of refs and hyps; an entry that is not text.
    """
    refs_l, hyps_l = _check_pairs(refs, hyps, "word_error_rate")
    r_norm = [_text(r, "refs", i) for i, r in enumerate(refs_l)]
    h_norm = [_text(h, "hyps", i) for i, h in enumerate(hyps_l)]
    # jiwer needs at least one reference word; pairs with an empty reference are pure insertions
    n_edits = sum(len(h.split()) for r, h in zip(r_norm, h_norm) if not r)
    kept = [(r, h) for r, h in zip(r_norm, h_norm) if r]
    if not kept:
        return n_edits, 0
    import jiwer

    out = jiwer.process_words([r for r, _ in kept], [h for _, h in kept])
    n_edits += out.substitutions + out.deletions + out.insertions
    n_ref = out.substitutions + out.deletions + out.hits
    return int(n_edits), int(n_ref)


def word_error_rate(refs: Iterable[str], hyps: Iterable[str]) -> float:
    """Aggregate word error rate: summed word edits / summed reference words (see
    :func:`word_error_counts`). ``nan`` when there is no reference word; can exceed 1."""
    n_edits, n_ref = word_error_counts(refs, hyps)
    return n_edits / n_ref if n_ref else float("nan")


def words_per_minute(n_words: int | float, seconds: float) -> float:
    """Speaking (or decoding) rate: ``60 * n_words / seconds``; ``nan`` when ``seconds`` is 0.

    Raises
    ------
    ValidationError
        ``n_words`` or ``seconds`` negative or not finite.
    """
    try:
        n, s = float(n_words), float(seconds)
    except (TypeError, ValueError):
        raise ValidationError(f"words_per_minute needs numbers; got n_words={n_words!r}, seconds={seconds!r}") from None
    if not np.isfinite(n) or n < 0:
        raise ValidationError(f"n_words must be a finite number >= 0; got {n_words!r}")
    if not np.isfinite(s) or s < 0:
        raise ValidationError(f"seconds must be a finite number >= 0; got {seconds!r}")
    return 60.0 * n / s if s > 0 else float("nan")


def _rank_key(text: str, seed: int) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16, key=str(seed).encode("ascii")[:64]).digest()


def speech_split(sentences: Iterable[str], n_test: int = 100, seed: int = 0) -> tuple[list[str], list[str]]:
    """The fixed held-out split: ``(train, test)`` lists of sentences, disjoint and deterministic.

    Each distinct sentence (after ``normalize_text``) gets a rank from a keyed hash of its text
    (BLAKE2b keyed by ``seed``); the ``n_test`` lowest ranks are the test set. The split therefore
    depends only on the texts and the seed -- not on the order of ``sentences``, the platform or
    numpy's generator -- and a sentence repeated in the input (even with other punctuation or
    case) is always on one side. Both lists keep the input order (repeats included).

    Parameters
    ----------
    sentences : iterable of str
    n_test : int
        Number of distinct sentences held out, ``0 <= n_test <= `` the number of distinct ones.
    seed : int
        Which split; ``0`` is the project's held-out set.

    Returns
    -------
    train, test : list of str
        ``([], [])`` for no sentences (any ``n_test``).

    Raises
    ------
    ValidationError
        ``n_test`` or ``seed`` not an integer, ``n_test`` out of range, a sentence that is not a
        string or has no words.
    """
    sents = list(sentences)
    if isinstance(n_test, bool) or not isinstance(n_test, (int, np.integer)):
        raise ValidationError(f"n_test must be an integer >= 0; got {n_test!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValidationError(f"seed must be an integer; got {seed!r}")
    if n_test < 0:
        raise ValidationError(f"n_test must be >= 0; got {n_test}")
    if not sents:
        return [], []
    norms = []
    for i, s in enumerate(sents):
        if not isinstance(s, str):
            raise ValidationError(f"sentences[{i}] must be a string; got {type(s).__name__}")
        n = normalize_text(s)
        if not n:
            raise ValidationError(f"sentences[{i}] has no words; got {s!r}")
        norms.append(n)
    distinct = sorted(set(norms))
    if n_test > len(distinct):
        raise ValidationError(f"n_test must be at most the number of distinct sentences ({len(distinct)}); got {n_test}")
    held = set(sorted(distinct, key=lambda t: (_rank_key(t, int(seed)), t))[:n_test])
    train = [s for s, n in zip(sents, norms) if n not in held]
    test = [s for s, n in zip(sents, norms) if n in held]
    return train, test


def shared_data_path(relpath: str) -> Path | None:
    """``relpath`` under ``$CORTEXLINK_SHARED_DATA``, else under ``../shared/data`` beside the
    repository or the working directory; None when it is in none of them."""
    candidates = []
    env = os.environ.get("CORTEXLINK_SHARED_DATA")
    if env:
        candidates.append(Path(env) / relpath)
    repo = Path(__file__).resolve().parents[3]
    candidates += [repo.parent / "shared" / "data" / relpath, Path.cwd().parent / "shared" / "data" / relpath]
    return next((c for c in candidates if c.exists()), None)


def _default_harvard() -> Path | None:
    return shared_data_path(HARVARD_RELPATH)


def load_harvard(path: str | os.PathLike | None = None) -> list[str]:
    """The Harvard sentences, one per non-blank line, stripped (a UTF-8 BOM and CRLF are removed).

    Parameters
    ----------
    path : path-like, optional
        The corpus file. Default: ``$CORTEXLINK_SHARED_DATA/text_corpus/harvard_sentences.txt``,
        else ``../shared/data/text_corpus/harvard_sentences.txt`` beside the repository or the
        working directory.

    Raises
    ------
    ConfigError
        No ``path`` given and no corpus found at the default places, or ``path`` is not a
        readable UTF-8 text file.
    """
    if path is None:
        found = _default_harvard()
        if found is None:
            raise ConfigError(f"the Harvard sentences were not found: pass path=, or set CORTEXLINK_SHARED_DATA to "
                              f"the folder holding {HARVARD_RELPATH} (default ../shared/data beside the repository)")
        path = found
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"path must be the Harvard sentences text file; {p} is not a file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"path must be a readable UTF-8 text file; reading {p} failed: {exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]
