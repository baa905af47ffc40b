"""Word n-gram language model with interpolated modified Kneser-Ney smoothing.

Chen & Goodman (1998) "An empirical study of smoothing techniques for language modeling":
three discounts per order (for counts 1, 2 and 3+) estimated from the counts of counts; lower
orders use continuation counts (how many distinct words precede an n-gram), except n-grams that
begin with ``<s>``, which keep their raw counts (nothing can precede them). The unigram level is
interpolated with the uniform distribution over the vocabulary, so every vocabulary word - also
one never seen in the text - has a finite probability.

The vocabulary is fixed when the model is built (by default every word of the CMU dictionary, the
lexicon the beam search spells with); text words outside it are counted as ``<unk>``. All counting
is vectorised with numpy: n-gram ``k`` is keyed ``index of its (k-1)-gram prefix * V + last word``,
so any order fits in int64. Models are saved as a compressed ``.npz`` without pickle.

Probabilities are natural logarithms throughout.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.phonemes import normalize_text, pronunciations, words

__all__ = ["NgramLM", "build_lm", "read_corpus_text", "split_sentences", "UNK", "BOS", "EOS"]

log = logging.getLogger(__name__)

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
_SPECIALS = (UNK, BOS, EOS)
_FORMAT = 1
_START = re.compile(r"^\*\*\* ?START OF.*$", re.M | re.I)
_END = re.compile(r"^(\*\*\* ?END OF|End of (the )?Project Gutenberg).*$", re.M | re.I)
_ABBREV = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Messrs|Mme|Mlle|Col|Capt|Gen|Rev|Jr|Sr|Prof)\.")
_SPLIT = re.compile(r"[.!?;]+|\n\s*\n")


def read_corpus_text(path: str | os.PathLike) -> str:
    """A text file as one string: BOM and CR removed, a Project Gutenberg header and footer stripped.

    The body starts after a ``*** START OF`` line when there is one and ends before the first
    ``*** END OF`` or ``End of (the) Project Gutenberg`` line.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"LM text file {str(p)!r} does not exist")
    text = p.read_bytes().decode("utf-8-sig", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    m = _START.search(text)
    if m:
        text = text[m.end():]
    m = _END.search(text)
    if m:
        text = text[:m.start()]
    return text


def split_sentences(text: str) -> list[list[str]]:
    """Sentences of ``text`` as word lists: split on ``. ! ? ;`` and blank lines (paragraphs, headings).

    Common title abbreviations (``Mr.``, ``Mrs.``, ``Dr.`` ...) do not end a sentence. Words are
    cut by :func:`cortexlink.core.phonemes.words`; empty sentences are dropped.
    """
    out = []
    for chunk in _SPLIT.split(_ABBREV.sub(r"\1", text)):
        w = words(chunk)
        if w:
            out.append(w)
    return out


class NgramLM:
    """An interpolated modified Kneser-Ney word n-gram model. Build with :meth:`fit` or :func:`build_lm`.

    Attributes
    ----------
    order : int
        n of the n-grams.
    vocab : tuple of str
        ``<unk>``, ``<s>``, ``</s>`` then the vocabulary, sorted; a word's LM id is its index.
    discounts : ndarray (order, 3)
        D1, D2, D3+ of each order (row 0 = unigrams).
    stats : dict
        ``n_sentences``, ``n_tokens`` (words + ``</s>``), ``n_unk_tokens``, ``n_ngrams`` per order,
        ``build_s``.
    """

    def __init__(self, vocab: Sequence[str], order: int, keys: list[np.ndarray], part: list[np.ndarray],
                 gamma: list[np.ndarray], p1: np.ndarray, discounts: np.ndarray, stats: dict):
        self.vocab = tuple(vocab)
        self.order = int(order)
        self._id = {w: i for i, w in enumerate(self.vocab)}
        self._keys, self._part, self._gamma = keys, part, gamma
        self._p1 = p1
        self._logp1 = np.log(np.where(p1 > 0, p1, 1.0))
        self._logp1[p1 <= 0] = -np.inf
        self.discounts = discounts
        self.stats = dict(stats)
        self._V = len(self.vocab)

    # ----------------------------------------------------------------- building
    @classmethod
    def fit(cls, sentences: Iterable[str | Sequence[str]], vocabulary: Iterable[str] | None = None,
            order: int = 3) -> "NgramLM":
        """Count ``sentences`` (strings or word lists) and smooth.

        Parameters
        ----------
        sentences : iterable of str or of word lists
            Training text, one sentence each.
        vocabulary : iterable of str, optional
            The words the model predicts; others become ``<unk>``. Default: every CMU dictionary word.
        order : int
            1..6 (default 3, a trigram model).
        """
        t0 = time.perf_counter()
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= 6:
            raise ConfigError(f"order must be an integer in 1..6; got {order!r}")
        order = int(order)
        vocab_words = sorted(set(pronunciations()) if vocabulary is None else set(vocabulary))
        bad = [w for w in vocab_words if not isinstance(w, str) or not w or w in _SPECIALS]
        if bad:
            raise ValidationError(f"vocabulary holds invalid entries (empty, non-string or special): {bad[:5]}")
        vocab = _SPECIALS + tuple(vocab_words)
        ids = {w: i for i, w in enumerate(vocab)}
        unk, bos, eos = 0, 1, 2
        seqs: list[list[int]] = []
        n_unk = 0
        for s in sentences:
            ws = words(s) if isinstance(s, str) else [str(w) for w in s]
            if not ws:
                continue
            row = [ids.get(w, unk) for w in ws]
            n_unk += row.count(unk)
            seqs.append([bos] + row + [eos])
        if not seqs:
            raise ValidationError("an n-gram model needs at least one non-empty training sentence; got none")
        V = len(vocab)
        tok = np.fromiter((t for s in seqs for t in s), np.int64)
        sid = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
        T = tok.size
        # level k: unique keys, per-position index (-1 where the k-gram would cross a sentence)
        keys, pos_idx, first, raw = [], [], [], []
        k1, inv, cnt = np.unique(tok, return_inverse=True, return_counts=True)
        keys.append(k1)
        pos_idx.append(inv.astype(np.int64))
        raw.append(cnt)
        first.append(k1)  # first token of each unigram is itself
        for k in range(2, order + 1):
            valid = np.zeros(T, bool)
            valid[:T - k + 1] = sid[:T - k + 1] == sid[k - 1:]
            pos = np.flatnonzero(valid)
            if pos.size == 0:
                keys.append(np.zeros(0, np.int64))
                pos_idx.append(np.full(T, -1, np.int64))
                raw.append(np.zeros(0, np.int64))
                first.append(np.zeros(0, np.int64))
                continue
            key = pos_idx[-1][pos] * V + tok[pos + k - 1]
            kk, fi, inv, cnt = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
            idx = np.full(T, -1, np.int64)
            idx[pos] = inv
            keys.append(kk)
            pos_idx.append(idx)
            raw.append(cnt)
            first.append(tok[pos[fi]])
        # counts: raw at the top order, continuation counts below (raw for n-grams starting with <s>)
        counts = []
        for k in range(1, order + 1):
            c = raw[k - 1].astype(np.float64)
            if k < order and keys[k].size:
                up_first = np.unique(pos_idx[k][pos_idx[k] >= 0], return_index=True)[1]
                up_pos = np.flatnonzero(pos_idx[k] >= 0)[up_first]
                suffix = pos_idx[k - 1][up_pos + 1]
                cont = np.bincount(suffix, minlength=keys[k - 1].size).astype(np.float64)
                c = np.where(first[k - 1] == bos, c, cont)
            counts.append(c)
        discounts = np.zeros((order, 3))
        # unigrams, over the whole vocabulary (<s> is never predicted)
        c1 = np.zeros(V)
        c1[keys[0]] = counts[0]
        c1[bos] = 0.0
        d = discounts[0] = _discounts(c1[c1 > 0])
        p1 = _interpolate_uniform(c1, d, bos)
        part, gamma = [np.zeros(0)], [np.zeros(0)]
        for k in range(2, order + 1):
            a = counts[k - 1]
            d = discounts[k - 1] = _discounts(a)
            hist = keys[k - 1] // V
            n_hist = keys[k - 2].size
            S = np.bincount(hist, weights=a, minlength=n_hist)
            dd = np.where(a >= 3, d[2], np.where(a >= 2, d[1], d[0]))
            mass = np.bincount(hist, weights=dd, minlength=n_hist)
            with np.errstate(divide="ignore", invalid="ignore"):
                part.append(((a - dd) / S[hist]).astype(np.float64))
                gamma.append(np.where(S > 0, mass / np.where(S > 0, S, 1.0), 1.0))
        stats = {"n_sentences": len(seqs), "n_tokens": int(T - len(seqs)), "n_unk_tokens": int(n_unk),
                 "n_ngrams": [int(k.size) for k in keys], "build_s": time.perf_counter() - t0}
        return cls(vocab, order, keys, part, gamma, p1, discounts, stats)

    # ----------------------------------------------------------------- queries
    def word_id(self, word: str) -> int:
        """LM id of ``word`` (the id of ``<unk>`` for a word outside the vocabulary)."""
        return self._id.get(word, 0)

    def _find(self, level: int, key: int) -> int:
        arr = self._keys[level - 1]
        i = int(arr.searchsorted(key))
        return i if i < arr.size and arr[i] == key else -1

    def logprob_ids(self, word_id: int, context: Sequence[int]) -> float:
        """ln P(word | context) for LM ids; only the last ``order - 1`` context ids are used."""
        V = self._V
        p = float(self._p1[word_id])
        ctx = tuple(context)[len(context) - self.order + 1:] if self.order > 1 else ()
        for j in range(1, len(ctx) + 1):
            h = ctx[len(ctx) - j:]
            hidx = self._find(1, h[0])
            for lvl in range(2, j + 1):
                if hidx < 0:
                    break
                hidx = self._find(lvl, hidx * V + h[lvl - 1])
            if hidx < 0:
                break
            gi = self._find(j + 1, hidx * V + word_id)
            p = (float(self._part[j][gi]) if gi >= 0 else 0.0) + float(self._gamma[j][hidx]) * p
        return float(np.log(p)) if p > 0 else float("-inf")

    def logprob(self, word: str, history: Sequence[str] = ()) -> float:
        """ln P(``word`` | ``history``): history holds the preceding words, ``<s>`` first for a sentence start."""
        return self.logprob_ids(self.word_id(word), [self.word_id(w) for w in history])

    def sentence_logprob(self, sentence: str | Sequence[str], eos: bool = True) -> float:
        """ln P of a whole sentence, from ``<s>`` through ``</s>`` (``eos=False`` leaves the end out)."""
        ws = words(sentence) if isinstance(sentence, str) else list(sentence)
        ctx = [1]
        total = 0.0
        for w in ws + ([EOS] if eos else []):
            i = self.word_id(w)
            total += self.logprob_ids(i, ctx)
            ctx.append(i)
        return total

    def perplexity(self, sentences: Iterable[str | Sequence[str]]) -> float:
        """exp(-mean ln P) per predicted token (words and ``</s>``; ``<unk>`` counted as a token)."""
        total, n = 0.0, 0
        for s in sentences:
            ws = words(s) if isinstance(s, str) else list(s)
            total += self.sentence_logprob(ws)
            n += len(ws) + 1
        if n == 0:
            return float("nan")
        return float(np.exp(-total / n))

    def unigram_logprobs(self) -> np.ndarray:
        """ln P(word) of every LM id (``-inf`` for ``<s>``)."""
        return self._logp1.copy()

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write a compressed ``.npz`` (no pickle); returns the path written."""
        p = Path(path)
        arrays = {"format": np.int64(_FORMAT), "order": np.int64(self.order),
                  "vocab": np.frombuffer("\n".join(self.vocab).encode("utf-8"), np.uint8),
                  "p1": self._p1, "discounts": self.discounts,
                  "stats": np.frombuffer(repr(self.stats).encode("utf-8"), np.uint8)}
        for k in range(1, self.order + 1):
            arrays[f"keys{k}"] = self._keys[k - 1]
            if k > 1:
                arrays[f"part{k}"] = self._part[k - 1]
                arrays[f"gamma{k}"] = self._gamma[k - 1]
        with open(p, "wb") as f:
            np.savez_compressed(f, **arrays)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NgramLM":
        """Read a model written by :meth:`save`."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"language model file {str(p)!r} does not exist")
        try:
            z = np.load(p, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file
            raise ValidationError(f"{str(p)!r} is not a language model file: {e}") from None
        with z:
            if "format" not in z or int(z["format"]) != _FORMAT:
                raise ValidationError(f"{str(p)!r} is not a cortexlink n-gram model (format {_FORMAT})")
            order = int(z["order"])
            vocab = bytes(z["vocab"]).decode("utf-8").split("\n")
            keys = [z[f"keys{k}"] for k in range(1, order + 1)]
            part = [np.zeros(0)] + [z[f"part{k}"] for k in range(2, order + 1)]
            gamma = [np.zeros(0)] + [z[f"gamma{k}"] for k in range(2, order + 1)]
            stats = _parse_stats(bytes(z["stats"]).decode("utf-8"))
            return cls(vocab, order, keys, part, gamma, z["p1"], z["discounts"], stats)

    def __repr__(self) -> str:
        return f"NgramLM(order={self.order}, vocab={len(self.vocab)}, ngrams={self.stats.get('n_ngrams')})"


def _parse_stats(text: str) -> dict:
    import ast
    try:
        out = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {}
    return out if isinstance(out, dict) else {}


def _discounts(counts: np.ndarray) -> np.ndarray:
    """Modified Kneser-Ney D1, D2, D3+ from counts of counts (Chen & Goodman 1998, eq. 26)."""
    n = [float(np.count_nonzero(counts == i)) for i in (1, 2, 3, 4)]
    default = np.array([0.5, 1.0, 1.5])
    if n[0] == 0 or n[1] == 0:
        return default
    y = n[0] / (n[0] + 2 * n[1])
    d = np.array([1 - 2 * y * n[1] / n[0],
                  2 - 3 * y * n[2] / n[1],
                  3 - 4 * y * n[3] / n[2] if n[2] > 0 else default[2]])
    ok = np.isfinite(d) & (d > 0) & (d < np.array([1.0, 2.0, 3.0]))
    return np.where(ok, d, default)


def _interpolate_uniform(c: np.ndarray, d: np.ndarray, skip: int) -> np.ndarray:
    S = c.sum()
    n_pred = c.size - 1
    dd = np.where(c >= 3, d[2], np.where(c >= 2, d[1], np.where(c >= 1, d[0], 0.0)))
    p = (c - dd) / S + dd.sum() / S / n_pred
    p[skip] = 0.0
    return p


def build_lm(paths: Sequence[str | os.PathLike] | str | os.PathLike, *, vocabulary: Iterable[str] | None = None,
             order: int = 3, exclude_sentences: Iterable[str] = (), on_excluded: str = "raise") -> NgramLM:
    """An n-gram model from text files (Project Gutenberg books or plain text).

    Parameters
    ----------
    paths : path or sequence of paths
        Text files (or folders: their ``*.txt`` files, sorted).
    vocabulary : iterable of str, optional
        See :meth:`NgramLM.fit` (default: the CMU dictionary).
    order : int
        n (default 3).
    exclude_sentences : iterable of str
        Held-out sentences. If the words of one occur anywhere in the text (after
        :func:`~cortexlink.core.phonemes.normalize_text`, across sentence breaks too), the build
        refuses with a :class:`ValidationError` naming it and the file.
    on_excluded : {"raise", "drop"}
        ``"drop"`` leaves out the text sentences that overlap an occurrence instead (counted in
        ``stats["n_dropped_sentences"]``).
    """
    if on_excluded not in ("raise", "drop"):
        raise ConfigError(f"on_excluded must be 'raise' or 'drop'; got {on_excluded!r}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        files.extend(sorted(p.glob("*.txt")) if p.is_dir() else [p])
    if not files:
        raise ConfigError(f"build_lm needs at least one text file; got {list(paths)!r}")
    excl = _ExclusionIndex(exclude_sentences)
    all_sents: list[list[str]] = []
    n_dropped = 0
    for f in files:
        sents = split_sentences(read_corpus_text(f))
        hits = excl.find(sents)
        if hits:
            if on_excluded == "raise":
                ex = sorted({h[1] for h in hits})
                raise ValidationError(
                    f"LM text {str(f)!r} contains {len(ex)} excluded (held-out) sentence(s), e.g. {ex[0]!r}; "
                    "held-out sentences must never be in the LM text (use on_excluded='drop' to leave them out)")
            drop = {i for h in hits for i in h[0]}
            n_dropped += len(drop)
            sents = [s for i, s in enumerate(sents) if i not in drop]
        all_sents.extend(sents)
    lm = NgramLM.fit(all_sents, vocabulary=vocabulary, order=order)
    lm.stats["n_files"] = len(files)
    lm.stats["n_dropped_sentences"] = n_dropped
    log.info("built %r from %d files in %.1f s", lm, len(files), lm.stats["build_s"])
    return lm


class _ExclusionIndex:
    """Finds occurrences of whole word sequences in a stream of sentences (across sentence breaks)."""

    def __init__(self, sentences: Iterable[str]):
        if isinstance(sentences, str):
            raise ConfigError("exclude_sentences must be a list of sentences, not one string")
        self._by_start: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        for s in sentences:
            ws = tuple(normalize_text(s).split())
            if ws:
                self._by_start.setdefault(ws[:2], []).append(ws)

    def find(self, sents: list[list[str]]) -> list[tuple[range, str]]:
        """(indices of the sentences an occurrence spans, the excluded sentence) for each occurrence."""
        if not self._by_start:
            return []
        stream: list[str] = []
        owner: list[int] = []
        for i, s in enumerate(sents):
            stream.extend(s)
            owner.extend([i] * len(s))
        out = []
        n = len(stream)
        for i in range(n):
            for key in ((stream[i],), tuple(stream[i:i + 2])) if i + 1 < n else ((stream[i],),):
                for ws in self._by_start.get(key, ()):
                    if len(ws) == len(key) or tuple(stream[i:i + len(ws)]) == ws:
                        if i + len(ws) <= n:
                            out.append((range(owner[i], owner[i + len(ws) - 1] + 1), " ".join(ws)))
        return out
