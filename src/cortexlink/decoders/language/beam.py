"""CTC prefix beam search constrained to a pronunciation lexicon, with a word n-gram LM at word ends.

A hypothesis is (the words so far, a node of the lexicon's prefix tree, the last emitted class);
each keeps two CTC log-probabilities, ending in blank and ending in a label (Graves 2012 ch. 7;
Hannun et al. 2014 "First-pass large vocabulary continuous speech recognition using
bi-directional recurrent DNNs" for the prefix search with a word LM). Per frame, every
hypothesis may take blank, repeat its last class, or emit a class whose log-prob exceeds
``prune_logprob``:

* a phoneme that continues a path of the tree;
* at a terminal node (a word's last phoneme), ``SIL`` or the first phoneme of the next word ends
  the word: one new hypothesis per word ending there (homophones), scored
  ``lm_weight * ln P(word | history) + word_insertion_penalty``;
* ``SIL`` at the root (between words, before the first word) changes nothing but the alignment.

While a word is unfinished its hypothesis carries the best unigram log-prob of any word below its
node (language-model look-ahead), replaced by the real conditional log-prob when the word ends, so
unfinished and finished hypotheses compete fairly. :meth:`WordBeamSearch.finish` ends the words,
adds ``ln P(</s> | history)`` and returns the n best sentences.

Examples
--------
>>> from cortexlink.core.phonemes import sentence_phonemes
>>> lex = Lexicon.from_words(["red", "wine"])
>>> ids, _ = sentence_phonemes("red wine")
>>> WordBeamSearch(lex).decode(synthetic_ctc_logprobs(ids, seed=0)).text
'red wine'
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.phonemes import BLANK, N_CLASSES, SIL
from cortexlink.decoders.language.lexicon import ROOT, Lexicon
from cortexlink.decoders.language.ngram import NgramLM

__all__ = ["Hypothesis", "WordBeamSearch", "synthetic_ctc_logprobs"]

_NEG = float("-inf")


@dataclass(frozen=True)
class Hypothesis:
    """One decoded sentence.

    Attributes
    ----------
    text : str
        The words joined by spaces.
    words : tuple of str
    acoustic : float
        CTC log-probability of the frames given this hypothesis' label path (summed over the
        alignments the beam kept).
    lm : float
        ln P(words, ``</s>``) under the n-gram model (0 without a model).
    score : float
        ``acoustic + lm_weight * lm + word_insertion_penalty * len(words)`` (+ ``rescore_weight *
        rescore_lm`` after :func:`~cortexlink.decoders.language.rescore.rescore`).
    rescore_lm : float
        ln P from a rescoring model (0 when not rescored).
    rescore_weight : float
        The weight ``rescore_lm`` entered ``score`` with (0 when not rescored).
    """

    text: str
    words: tuple[str, ...]
    acoustic: float
    lm: float
    score: float
    rescore_lm: float = 0.0
    rescore_weight: float = 0.0


def _lae(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == _NEG:
        return a
    return a + math.log1p(math.exp(b - a))


class WordBeamSearch:
    """Lexicon-constrained CTC beam search over 41-class log-probs, streaming or offline.

    Parameters
    ----------
    lexicon : Lexicon
        The vocabulary and its pronunciations.
    lm : NgramLM, optional
        Word language model; ``None`` decodes with the lexicon alone.
    beam_size : int
        Hypotheses kept after each frame (default 32).
    lm_weight : float
        Weight of the LM log-probabilities against the acoustic ones (default 1.0).
    word_insertion_penalty : float
        Added per word (default 0.0; positive favours more, shorter words).
    prune_logprob : float
        Classes with a frame log-prob below this are not emitted on that frame (default -10.0;
        the frame's best class is always tried).
    beam_threshold : float
        An emission is not tried when its score would fall more than this many nats below the
        previous frame's best score plus this frame's best log-prob (default 25.0; ``inf`` = off).
    n_best : int
        Hypotheses returned by :meth:`finish` (default 10).
    """

    def __init__(self, lexicon: Lexicon, lm: NgramLM | None = None, beam_size: int = 32, lm_weight: float = 1.0,
                 word_insertion_penalty: float = 0.0, prune_logprob: float = -10.0, n_best: int = 10,
                 beam_threshold: float = 25.0):
        if not isinstance(lexicon, Lexicon):
            raise ConfigError(f"lexicon must be a Lexicon; got {type(lexicon).__name__}")
        if lm is not None and not isinstance(lm, NgramLM):
            raise ConfigError(f"lm must be an NgramLM or None; got {type(lm).__name__}")
        for name, v in (("beam_size", beam_size), ("n_best", n_best)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1; got {v!r}")
        for name, v in (("lm_weight", lm_weight), ("word_insertion_penalty", word_insertion_penalty),
                        ("prune_logprob", prune_logprob)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number; got {v!r}")
        if isinstance(beam_threshold, bool) or not isinstance(beam_threshold, (int, float, np.floating, np.integer)) \
                or not beam_threshold > 0:
            raise ConfigError(f"beam_threshold must be a number > 0 (inf to switch it off); got {beam_threshold!r}")
        if lm_weight < 0:
            raise ConfigError(f"lm_weight must be >= 0; got {lm_weight!r}")
        self.lexicon = lexicon
        self.lm = lm
        self.beam_size = int(beam_size)
        self.lm_weight = float(lm_weight)
        self.word_insertion_penalty = float(word_insertion_penalty)
        self.prune_logprob = float(prune_logprob)
        self.n_best = int(n_best)
        self.beam_threshold = float(beam_threshold)
        if lm is not None:
            self._lm_ids = [lm.word_id(w) for w in lexicon.words]
            uni = lm.unigram_logprobs()[np.asarray(self._lm_ids, np.int64)]
            node_best = np.full(lexicon.n_nodes, _NEG)
            for node in np.flatnonzero(lexicon.is_terminal).tolist():
                node_best[node] = max(uni[w] for w in lexicon.words_at(node))
            look = lexicon.subtree_max(node_best) * self.lm_weight
            look[ROOT] = 0.0
            self._lookahead = look.tolist()
            self._ctx0: tuple[int, ...] = (lm.word_id("<s>"),)
            self._eos = lm.word_id("</s>")
        else:
            self._lm_ids = []
            self._lookahead = [0.0] * lexicon.n_nodes
            self._ctx0 = ()
            self._eos = -1
        self._root_kids = lexicon.children(ROOT)
        self._K = lexicon.n_nodes * 64
        self.reset()

    # ----------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget the sentence: start again before the first frame."""
        self._h_parent = [-1]
        self._h_word = [-1]
        self._h_ctx = [self._ctx0]
        self._h_lm = [0.0]
        self._h_n = [0]
        self._h_score = [0.0]
        self._h_index: dict[tuple[int, int], int] = {}
        self._lm_cache: dict[tuple[tuple[int, ...], int], float] = {}
        self._h_ctxid = [0]
        self._ctx_ids: dict[tuple[int, ...], int] = {self._ctx0: 0}
        self._pb: dict[int, float] = {0: 0.0}  # key 0 = (no words, root, nothing emitted)
        self._pnb: dict[int, float] = {0: _NEG}
        self._best = 0.0
        self.n_frames = 0

    def _extend(self, hid: int, wid: int) -> int:
        key = (hid, wid)
        h = self._h_index.get(key)
        if h is not None:
            return h
        lm_lp = 0.0
        ctx = ()
        if self.lm is not None:
            ctx0 = self._h_ctx[hid]
            lid = self._lm_ids[wid]
            lm_lp = self._lm_cache.get((ctx0, lid))
            if lm_lp is None:
                lm_lp = self._lm_cache[(ctx0, lid)] = self.lm.logprob_ids(lid, ctx0)
            ctx = (ctx0 + (lid,))[1 - self.lm.order:] if self.lm.order > 1 else ()
        h = len(self._h_parent)
        self._h_parent.append(hid)
        self._h_word.append(wid)
        self._h_ctx.append(ctx)
        self._h_ctxid.append(self._ctx_ids.setdefault(ctx, len(self._ctx_ids)))
        self._h_lm.append(self._h_lm[hid] + lm_lp)
        self._h_n.append(self._h_n[hid] + 1)
        self._h_score.append(self._h_score[hid] + self.lm_weight * lm_lp + self.word_insertion_penalty)
        self._h_index[key] = h
        return h

    def _words(self, hid: int) -> tuple[str, ...]:
        out = []
        while hid > 0:
            out.append(self.lexicon.words[self._h_word[hid]])
            hid = self._h_parent[hid]
        return tuple(out[::-1])

    # ----------------------------------------------------------------- streaming
    def step(self, logprob_rows: np.ndarray) -> None:
        """Advance by frames of CTC log-probabilities, shape (n, 41) or (41,) (natural log, rows sum to 1 in prob)."""
        rows = np.asarray(logprob_rows, dtype=np.float64)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != N_CLASSES:
            raise ValidationError(f"logprob_rows must have shape (n, {N_CLASSES}) or ({N_CLASSES},); got {rows.shape}")
        if np.isnan(rows).any() or (rows > 1e-3).any():
            raise ValidationError("logprob_rows must be log-probabilities (<= 0, no NaN)")
        if rows.shape[0] == 0:
            return
        ok = rows > self.prune_logprob
        ok[np.arange(rows.shape[0]), rows.argmax(axis=1)] = True
        ok[:, BLANK] = False
        for row, mask in zip(rows.tolist(), ok):
            self._frame(row, np.flatnonzero(mask).tolist())
        self.n_frames += rows.shape[0]

    def _frame(self, lp: list[float], cand: list[int]) -> None:
        # Hypothesis keys are ints (hid * K + node * 64 + last) and values floats, so a frame
        # allocates no objects the cyclic garbage collector tracks (its full passes cost ~100 ms).
        lex = self.lexicon
        K = self._K
        root_kids = self._root_kids
        lp_blank = lp[BLANK]
        nb: dict[int, float] = {}
        nn: dict[int, float] = {}
        hs, look = self._h_score, self._lookahead
        cut = self._best + max(lp) - self.beam_threshold
        pnb_old = self._pnb
        for key, pb in self._pb.items():
            pnb = pnb_old[key]
            hid, r = divmod(key, K)
            node, last = divmod(r, 64)
            ptot = _lae(pb, pnb)
            nb[key] = ptot + lp_blank  # keys are unique here: the first write to nb
            if last and pnb != _NEG:
                v = pnb + lp[last]
                old = nn.get(key)
                nn[key] = v if old is None else _lae(old, v)
            kids = lex.children(node)
            ends = lex.words_at(node) if node != ROOT else ()
            base = hs[hid] + look[node]
            for c in cand:
                v = (pb if c == last else ptot) + lp[c]
                if v + base < cut:
                    continue
                if c == SIL:
                    if node == ROOT:
                        k = hid * K + SIL
                        old = nn.get(k)
                        nn[k] = v if old is None else _lae(old, v)
                    else:
                        for w in ends:
                            k = self._extend(hid, w) * K + SIL
                            old = nn.get(k)
                            nn[k] = v if old is None else _lae(old, v)
                    continue
                ch = kids.get(c)
                if ch is not None:
                    k = hid * K + ch * 64 + c
                    old = nn.get(k)
                    nn[k] = v if old is None else _lae(old, v)
                if ends:
                    ch0 = root_kids.get(c)
                    if ch0 is not None:
                        for w in ends:
                            k = self._extend(hid, w) * K + ch0 * 64 + c
                            old = nn.get(k)
                            nn[k] = v if old is None else _lae(old, v)
        self._prune(nb, nn)

    def _prune(self, nb: dict[int, float], nn: dict[int, float]) -> None:
        # Hypotheses with the same LM context, tree node and last class have the same future:
        # keep the best of each such group (recombination), then the beam_size best groups.
        K = self._K
        hs, look, hctx = self._h_score, self._lookahead, self._h_ctxid
        for k in nn:
            if k not in nb:
                nb[k] = _NEG
        score = {k: _lae(pb, nn.get(k, _NEG)) + hs[k // K] + look[(k % K) >> 6] for k, pb in nb.items()}
        if len(score) > 4 * self.beam_size:
            order = heapq.nlargest(4 * self.beam_size, score, key=score.__getitem__)
        else:
            order = sorted(score, key=score.__getitem__, reverse=True)
        self._best = score[order[0]] if order else 0.0
        pb_out: dict[int, float] = {}
        pnb_out: dict[int, float] = {}
        seen = set()
        for k in order:
            hid, r = divmod(k, K)
            g = hctx[hid] * K + r
            if g in seen:
                continue
            seen.add(g)
            pb_out[k] = nb[k]
            pnb_out[k] = nn.get(k, _NEG)
            if len(pb_out) >= self.beam_size:
                break
        self._pb, self._pnb = pb_out, pnb_out

    def _items(self):
        """(hid, node, last, acoustic log-prob, total score) of each live hypothesis, best first."""
        K = self._K
        out = []
        for k, pb in self._pb.items():
            hid, r = divmod(k, K)
            node, last = divmod(r, 64)
            ac = _lae(pb, self._pnb[k])
            out.append((hid, node, last, ac, ac + self._h_score[hid] + self._lookahead[node]))
        out.sort(key=lambda t: -t[4])
        return out

    def partial(self) -> str:
        """The best text so far: the best hypothesis' finished words, plus its current word if one ends at its node."""
        items = self._items()
        if not items:
            return ""
        hid, node = items[0][0], items[0][1]
        if node != ROOT and self.lexicon.is_terminal[node]:
            hid = max((self._extend(hid, w) for w in self.lexicon.words_at(node)), key=lambda h: self._h_score[h])
        return " ".join(self._words(hid))

    def finish(self) -> list[Hypothesis]:
        """End the sentence: the ``n_best`` hypotheses, best first (the state is kept until :meth:`reset`).

        Hypotheses whose last word is unfinished are dropped; if none is finished, the finished
        words of the best ones are returned.
        """
        done: dict[tuple[str, ...], Hypothesis] = {}
        fallback: list[tuple[int, float]] = []
        for hid, node, _, ac, _ in self._items():
            if node == ROOT:
                finals = [hid]
            elif self.lexicon.is_terminal[node]:
                finals = [self._extend(hid, w) for w in self.lexicon.words_at(node)]
            else:
                fallback.append((hid, ac))
                continue
            for h in finals:
                self._add_final(done, h, ac)
        if not done:
            for h, ac in fallback:
                self._add_final(done, h, ac)
        out = sorted(done.values(), key=lambda hy: -hy.score)
        return out[:self.n_best]

    def _add_final(self, done: dict, h: int, ac: float) -> None:
        lm_total = self._h_lm[h]
        if self.lm is not None:
            lm_total += self.lm.logprob_ids(self._eos, self._h_ctx[h])
        ws = self._words(h)
        score = ac + self.lm_weight * lm_total + self.word_insertion_penalty * len(ws)
        old = done.get(ws)
        if old is None or score > old.score:
            done[ws] = Hypothesis(" ".join(ws), ws, ac, lm_total, score)

    def decode(self, logprobs: np.ndarray) -> Hypothesis:
        """Offline: reset, step through all frames (n, 41), finish; the best hypothesis."""
        self.reset()
        self.step(logprobs)
        hyps = self.finish()
        return hyps[0] if hyps else Hypothesis("", (), _NEG, 0.0, _NEG)


def synthetic_ctc_logprobs(class_ids: Sequence[int] | np.ndarray, *, seed: int = 0,
                           frames_per_class: tuple[int, int] = (5, 12), peak: float = 8.0, noise: float = 1.0,
                           confusion: float = 0.0, lead_frames: int = 5) -> np.ndarray:
    """A CTC-like (n, 41) log-prob stream for class ids 1..40 (tests and benchmarks).

    Each class occupies ``frames_per_class`` frames (uniform, inclusive): one frame where the class
    gets ``peak`` extra logit, the rest blank-dominated; Gaussian ``noise`` (sd, logits) on every
    class. With probability ``confusion`` a class' emission frame favours a competitor
    (a random other phoneme) slightly more than the true one, which stays 0.5-3 nats below (a
    substitution a decoder's second choice would fix). Deterministic for a seed.
    """
    ids = np.asarray(class_ids, np.int64).ravel()
    if ids.size and (ids.min() < 1 or ids.max() >= N_CLASSES):
        raise ValidationError(f"class_ids must be in 1..{N_CLASSES - 1}; got {ids.min()}..{ids.max()}")
    lo, hi = frames_per_class
    if not 1 <= lo <= hi:
        raise ConfigError(f"frames_per_class must be (lo, hi) with 1 <= lo <= hi; got {frames_per_class!r}")
    rng = np.random.default_rng(seed)
    durs = rng.integers(lo, hi + 1, ids.size)
    n = int(durs.sum()) + 2 * lead_frames
    logits = rng.normal(0.0, noise, (n, N_CLASSES))
    logits[:, BLANK] += peak
    t = lead_frames
    for c, d in zip(ids.tolist(), durs.tolist()):
        e = t + int(rng.integers(0, d))
        if confusion > 0 and rng.random() < confusion:
            logits[e, int(rng.integers(1, SIL))] += 2 * peak
            logits[e, c] += 2 * peak - rng.uniform(0.5, 3.0)
        else:
            logits[e, c] += 2 * peak
        t += d
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
