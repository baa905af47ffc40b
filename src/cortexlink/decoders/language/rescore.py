"""Rescoring an n-best list with a second language model (for example a larger causal transformer).

:func:`rescore` adds ``weight * scorer(words)`` to each hypothesis' score and re-sorts.
:class:`CausalLMScorer` turns any torch causal LM (``model(ids) -> logits``) into such a scorer;
torch is imported only when it is called.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.decoders.language.beam import Hypothesis

__all__ = ["rescore", "CausalLMScorer"]


def rescore(hyps: Sequence[Hypothesis], scorer: Callable[[list[list[str]]], Sequence[float]],
            weight: float = 1.0) -> list[Hypothesis]:
    """The hypotheses re-ranked with ``score + weight * scorer(words)``, best first.

    Parameters
    ----------
    hyps : sequence of Hypothesis
        An n-best list (for example :meth:`WordBeamSearch.finish`).
    scorer : callable
        Takes a list of word lists, returns one log-probability (natural log) per list.
    weight : float
        Weight of the new log-probabilities (>= 0).

    Returns
    -------
    list of Hypothesis
        Copies with ``rescore_lm`` set and ``score`` updated (a score already holding an earlier
        rescoring has that part replaced, not added twice).
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating, np.integer)) \
            or not math.isfinite(weight) or weight < 0:
        raise ConfigError(f"weight must be a finite number >= 0; got {weight!r}")
    hyps = list(hyps)
    if not hyps:
        return []
    for h in hyps:
        if not isinstance(h, Hypothesis):
            raise ValidationError(f"hyps must hold Hypothesis objects; got {type(h).__name__}")
    lps = np.asarray(scorer([list(h.words) for h in hyps]), dtype=np.float64).ravel()
    if lps.shape != (len(hyps),):
        raise ValidationError(f"scorer must return one log-probability per hypothesis ({len(hyps)}); got shape {lps.shape}")
    if np.isnan(lps).any():
        raise ValidationError("scorer returned NaN log-probabilities")
    out = []
    for h, lp in zip(hyps, lps.tolist()):
        base = h.score - h.rescore_weight * h.rescore_lm
        out.append(dataclasses.replace(h, score=base + float(weight) * lp, rescore_lm=lp, rescore_weight=float(weight)))
    out.sort(key=lambda h: -h.score)
    return out


class CausalLMScorer:
    """ln P(sentence) from a torch causal LM, for :func:`rescore`.

    Parameters
    ----------
    model : callable
        ``model(ids)`` with ``ids`` a LongTensor (1, L) returns logits (1, L, vocab) (or (L, vocab)),
        row ``i`` predicting token ``i + 1``. Put it in eval mode yourself.
    token_of_word : mapping or callable
        Word -> token id.
    bos, eos : int
        Token ids of the sentence start (fed first) and end (scored last).
    unk : int, optional
        Token id for words ``token_of_word`` does not know; without it such a word raises
        :class:`ValidationError`.
    """

    def __init__(self, model: Callable, token_of_word: Mapping[str, int] | Callable[[str], int | None],
                 bos: int, eos: int, unk: int | None = None):
        if not callable(model):
            raise ConfigError(f"model must be callable (ids -> logits); got {type(model).__name__}")
        if not (isinstance(token_of_word, Mapping) or callable(token_of_word)):
            raise ConfigError("token_of_word must be a mapping or a callable word -> token id")
        for name, v in (("bos", bos), ("eos", eos)) + ((("unk", unk),) if unk is not None else ()):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ConfigError(f"{name} must be a token id (int >= 0); got {v!r}")
        self.model = model
        self.token_of_word = token_of_word
        self.bos, self.eos, self.unk = int(bos), int(eos), unk

    def _token(self, word: str) -> int:
        if isinstance(self.token_of_word, Mapping):
            t = self.token_of_word.get(word)
        else:
            t = self.token_of_word(word)
        if t is None:
            if self.unk is None:
                raise ValidationError(f"word {word!r} has no token and no unk token was given")
            return int(self.unk)
        return int(t)

    def __call__(self, word_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """One ln P(words + eos | bos) per word list."""
        import torch

        out = np.zeros(len(word_lists))
        with torch.no_grad():
            for i, ws in enumerate(word_lists):
                toks = [self.bos] + [self._token(w) for w in ws]
                target = torch.tensor(toks[1:] + [self.eos], dtype=torch.long)
                logits = self.model(torch.tensor([toks], dtype=torch.long))
                if logits.dim() == 3:
                    logits = logits[0]
                if logits.shape[0] != len(toks):
                    raise ValidationError(f"model returned {logits.shape[0]} rows of logits for {len(toks)} tokens")
                logp = torch.log_softmax(logits.double(), dim=-1)
                out[i] = float(logp[torch.arange(len(toks)), target].sum())
        return out
