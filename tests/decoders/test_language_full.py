"""The whole CMU dictionary as the lexicon (built once for this module)."""

import numpy as np
import pytest

from cortexlink.core.phonemes import phonemes_to_ids, pronunciations, sentence_phonemes
from cortexlink.decoders.language import Lexicon, NgramLM, WordBeamSearch, synthetic_ctc_logprobs


@pytest.fixture(scope="module")
def full_lexicon():
    return Lexicon.from_cmudict()


def _spellable(words, target, prons):
    """Whether some choice of pronunciations of ``words`` concatenates to ``target`` (phoneme ids)."""
    ends = {0}
    for w in words:
        ends = {e + len(p) for e in ends for p in prons[w] if tuple(target[e:e + len(p)]) == p}
    return len(target) in ends


def test_full_lexicon_structure_and_decoding(full_lexicon):
    lex = full_lexicon
    d = pronunciations()
    assert len(lex) == len(d) > 120_000 and lex.nbytes() < 20e6
    rng = np.random.default_rng(0)
    for w in rng.choice(lex.words, 300, replace=False).tolist():
        for p in d[w]:
            assert w in lex.lookup(phonemes_to_ids(p))
    text = "the birch canoe slid on the smooth planks"
    ids, _ = sentence_phonemes(text)
    x = synthetic_ctc_logprobs(ids, seed=0)
    # lexicon alone: the words must spell the spoken phonemes (homophones and splits may differ)
    prons = {w: [tuple(phonemes_to_ids(p).tolist()) for p in d[w]] for w in d}
    hyp = WordBeamSearch(lex, word_insertion_penalty=-6.0).decode(x)
    target = tuple(int(i) for i in ids if i != 40)
    assert _spellable(hyp.words, target, prons)
    # with a (tiny) LM that knows the sentence, the exact text comes back out of ~124k words
    lm = NgramLM.fit([text, "the canoe slid on the water", "smooth planks of birch"])
    assert WordBeamSearch(lex, lm).decode(x).text == text
