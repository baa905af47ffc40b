"""n-best rescoring with a causal LM: a tiny torch GRU LM trained inside the test."""

import numpy as np
import pytest
import torch

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.phonemes import phonemes_to_ids
from cortexlink.decoders.language import CausalLMScorer, Hypothesis, Lexicon, WordBeamSearch, rescore
from cortexlink.decoders.language import synthetic_ctc_logprobs

TRAIN = ["the wine is red", "i read a book", "the book is red"]
TOKENS = ["<s>", "</s>", "the", "wine", "is", "red", "read", "i", "a", "book", "reed"]
TOK = {w: i for i, w in enumerate(TOKENS)}


class TinyLM(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.emb = torch.nn.Embedding(n, 16)
        self.gru = torch.nn.GRU(16, 32, batch_first=True)
        self.out = torch.nn.Linear(32, n)

    def forward(self, ids):
        h, _ = self.gru(self.emb(ids))
        return self.out(h)


@pytest.fixture(scope="module")
def tiny_lm():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only add overhead on a shared machine
    try:
        return _train()
    finally:
        torch.set_num_threads(threads)


def _train():
    torch.manual_seed(0)
    model = TinyLM(len(TOKENS))
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    seqs = [[TOK["<s>"]] + [TOK[w] for w in s.split()] + [TOK["</s>"]] for s in TRAIN]
    n = max(map(len, seqs))
    x = torch.tensor([s[:-1] + [1] * (n - len(s)) for s in seqs])
    y = torch.tensor([s[1:] + [-100] * (n - len(s)) for s in seqs])  # padding ignored by the loss
    for _ in range(80):
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, len(TOKENS)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def test_rescoring_moves_the_trained_sentence_up(tiny_lm):
    lex = Lexicon.from_words(["the", "wine", "is", "red", "read", "reed"])
    # "the wine is R EH D": without an LM "red" and "read" tie; the beam prefers one of them
    x = synthetic_ctc_logprobs(phonemes_to_ids(["DH", "AH", "SIL", "W", "AY", "N", "SIL", "IH", "Z", "SIL",
                                                "R", "EH", "D", "SIL"]), seed=0)
    dec = WordBeamSearch(lex, n_best=5, word_insertion_penalty=-1.0)
    dec.step(x)
    nbest = dec.finish()
    texts = [h.text for h in nbest]
    assert "the wine is red" in texts and "the wine is read" in texts
    # put the trained sentence last, whatever the beam's tie-break was
    nbest = sorted(nbest, key=lambda h: h.text == "the wine is red")
    nbest = [Hypothesis(h.text, h.words, h.acoustic, h.lm, -float(i)) for i, h in enumerate(nbest)]
    scorer = CausalLMScorer(tiny_lm, TOK, bos=TOK["<s>"], eos=TOK["</s>"])
    lps = scorer([h.words for h in nbest])
    assert lps.shape == (len(nbest),) and np.all(lps < 0)
    out = rescore(nbest, scorer, weight=1.0)
    assert out[0].text == "the wine is red" and nbest[0].text != "the wine is red"
    assert [h.score for h in out] == sorted((h.score for h in out), reverse=True)
    top = out[0]
    assert top.rescore_lm == pytest.approx(lps[-1]) and top.rescore_weight == 1.0
    # rescoring again replaces the earlier rescoring instead of adding it twice
    again = rescore(out, scorer, weight=0.0)
    assert {h.text: h.score for h in again} == {h.text: h.score for h in nbest}
    assert rescore([], scorer) == []


def test_scorer_matches_manual_sum(tiny_lm):
    scorer = CausalLMScorer(tiny_lm, lambda w: TOK.get(w), bos=0, eos=1, unk=TOK["reed"])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_lm(torch.tensor([[0, TOK["the"], TOK["reed"]]]))[0].double(), -1)
    expect = float(logp[0, TOK["the"]] + logp[1, TOK["reed"]] + logp[2, 1])
    assert scorer([["the", "zebra"]])[0] == pytest.approx(expect)


def test_bad_inputs(tiny_lm):
    scorer = CausalLMScorer(tiny_lm, TOK, bos=0, eos=1)
    with pytest.raises(ValidationError, match="'zebra' has no token"):
        scorer([["the", "zebra"]])
    h = Hypothesis("the", ("the",), -1.0, 0.0, -1.0)
    with pytest.raises(ValidationError, match="one log-probability per hypothesis"):
        rescore([h, h], lambda ws: [0.0])
    with pytest.raises(ValidationError, match="NaN"):
        rescore([h], lambda ws: [float("nan")])
    with pytest.raises(ValidationError, match="Hypothesis objects"):
        rescore(["the"], lambda ws: [0.0])
    with pytest.raises(ConfigError, match="weight must be a finite number >= 0"):
        rescore([h], lambda ws: [0.0], weight=-1)
    with pytest.raises(ConfigError, match="model must be callable"):
        CausalLMScorer("gpt", TOK, bos=0, eos=1)
    with pytest.raises(ConfigError, match="bos must be a token id"):
        CausalLMScorer(tiny_lm, TOK, bos=-1, eos=1)
    with pytest.raises(ConfigError, match="token_of_word"):
        CausalLMScorer(tiny_lm, 3, bos=0, eos=1)
    with pytest.raises(ValidationError, match="rows of logits"):
        CausalLMScorer(lambda ids: torch.zeros(1, 1, 4), TOK, bos=0, eos=1)([["the", "wine"]])
