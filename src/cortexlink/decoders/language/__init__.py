"""Words from phoneme log-probabilities: lexicon, n-gram language model, beam search, rescoring.

* :class:`Lexicon` - prefix tree over the CMU dictionary's pronunciations (class ids of
  :mod:`cortexlink.core.phonemes`).
* :class:`NgramLM`, :func:`build_lm` - interpolated modified Kneser-Ney word n-grams built from
  text files (Project Gutenberg headers stripped), refusing text that holds held-out sentences.
* :class:`WordBeamSearch` - CTC prefix beam search constrained to the lexicon, the LM applied at
  word ends; streaming (``reset``/``step``/``partial``/``finish``) or offline (``decode``).
* :func:`rescore`, :class:`CausalLMScorer` - re-rank the n-best list with a larger causal LM.

Only numpy here; torch is imported by :class:`CausalLMScorer` when called.
"""

from cortexlink.decoders.language.lexicon import ROOT, Lexicon
from cortexlink.decoders.language.ngram import NgramLM, build_lm, read_corpus_text, split_sentences
from cortexlink.decoders.language.beam import Hypothesis, WordBeamSearch, synthetic_ctc_logprobs
from cortexlink.decoders.language.rescore import CausalLMScorer, rescore

__all__ = ["Lexicon", "ROOT", "NgramLM", "build_lm", "read_corpus_text", "split_sentences", "Hypothesis",
           "WordBeamSearch", "synthetic_ctc_logprobs", "rescore", "CausalLMScorer"]
