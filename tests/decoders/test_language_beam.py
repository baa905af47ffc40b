"""Lexicon prefix tree and lexicon-constrained CTC beam search (small vocabularies; the full one is in test_language_full)."""

import math

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.phonemes import BLANK, N_CLASSES, SIL, phonemes_to_ids, sentence_phonemes
from cortexlink.decoders.language import Lexicon, NgramLM, WordBeamSearch, synthetic_ctc_logprobs

WORDS = ["i", "read", "red", "a", "book", "the", "wine", "is", "glue", "sheet", "to", "dark", "blue", "background",
         "back", "ground", "two", "too", "reed", "bead", "shoot", "sheep"]


def perfect_stream(ids, frames=4):
    """Greedy-perfect CTC log-probs: each class on one frame, blanks between (prob 0.97 / 0.03 spread)."""
    rows = []
    for c in list(ids):
        for f in range(frames):
            p = np.full(N_CLASSES, 0.03 / (N_CLASSES - 1))
            p[c if f == 0 else BLANK] = 0.97
            rows.append(np.log(p))
    return np.array(rows)


@pytest.fixture(scope="module")
def lex():
    return Lexicon.from_words(WORDS)


def test_lexicon_tree(lex):
    assert len(lex) == len(WORDS) and "wine" in lex and "zebra" not in lex
    red = phonemes_to_ids(["R", "EH", "D"])
    assert sorted(lex.lookup(red)) == ["read", "red"]  # homophones share a node
    assert lex.lookup(phonemes_to_ids(["R", "IY", "D"])) == ["read", "reed"]
    assert len(lex.pronunciation_nodes("read")) == 2
    assert lex.lookup(phonemes_to_ids(["R", "EH"])) == [] and lex.walk([SIL]) == -1
    node = lex.walk(red)
    assert lex.node_phonemes(node) == red.tolist() and lex.is_terminal[node]
    # "back" is a prefix of "background": its node is terminal and has children
    back = lex.walk(phonemes_to_ids(["B", "AE", "K"]))
    assert lex.lookup(phonemes_to_ids(["B", "AE", "K"])) == ["back"] and lex.children(back)
    vals = np.full(lex.n_nodes, -np.inf)
    vals[lex.pronunciation_nodes("background")[0]] = -1.0
    vals[back] = -5.0
    m = lex.subtree_max(vals)
    assert m[back] == -1.0 and m[0] == -1.0 and m[lex.walk(red)] == -np.inf


def test_lexicon_bad_inputs():
    with pytest.raises(ValidationError, match="not in the CMU dictionary: qwzx"):
        Lexicon.from_words(["the", "qwzx"])
    with pytest.raises(ValidationError, match="at least one word"):
        Lexicon.from_words([])
    with pytest.raises(ValidationError, match="class id 40"):
        Lexicon.from_words({"odd": [["AH", "SIL"]]})
    with pytest.raises(ValidationError, match="unknown phoneme"):
        Lexicon.from_words({"odd": [["QQ"]]})
    with pytest.raises(ValidationError, match="empty pronunciation"):
        Lexicon.from_words({"odd": [[]]})
    with pytest.raises(ValidationError, match="not in the lexicon"):
        Lexicon.from_words(["the"]).word_id("cat")


@pytest.mark.parametrize("sil", [True, False])
def test_perfect_stream_decodes_exactly(lex, sil):
    text = "glue the sheet to the dark blue background"
    ids, oov = sentence_phonemes(text, sil=sil)
    assert not oov
    # without an LM "back ground" and "background" sound the same (SIL is optional between words):
    # a per-word penalty prefers the reading with fewer words
    hyps = WordBeamSearch(lex, word_insertion_penalty=0.0).decode(perfect_stream(ids))
    dec = WordBeamSearch(lex, word_insertion_penalty=-1.0)
    hyp = dec.decode(perfect_stream(ids))
    assert hyp.text == text and hyp.words == tuple(text.split()) and hyp.lm == 0.0
    assert hyp.score == pytest.approx(hyp.acoustic - len(hyp.words))
    assert hyps.acoustic == pytest.approx(hyp.acoustic, abs=0.01)  # the same sounds


def test_synthetic_stream_decodes_and_chunking_does_not_matter(lex):
    text = "the wine is red"
    x = synthetic_ctc_logprobs(sentence_phonemes(text)[0], seed=3, noise=1.0)
    assert x.shape[1] == N_CLASSES and np.allclose(np.exp(x).sum(axis=1), 1.0)
    assert (x.argmax(axis=1) == BLANK).mean() > 0.7  # mostly blank, as a CTC decoder's output
    dec = WordBeamSearch(lex, beam_size=16, n_best=5)
    whole = dec.decode(x)
    assert set(whole.words) - {"read", "red"} == {"the", "wine", "is"}
    for chunk in (1, 7):
        dec.reset()
        for i in range(0, len(x), chunk):
            dec.step(x[i:i + chunk])
        assert dec.n_frames == len(x)
        hyps = dec.finish()
        assert hyps[0] == whole
        assert len(hyps) <= 5 and all(a.score >= b.score for a, b in zip(hyps, hyps[1:]))


def test_lm_resolves_homophones_the_lexicon_alone_cannot(lex):
    lm = NgramLM.fit(["i read a book", "i read the book", "the wine is red", "the book is red",
                      "the sheet is blue"] * 3, vocabulary=WORDS)
    streams = {t: synthetic_ctc_logprobs(sentence_phonemes(t)[0], seed=1) for t in ("i read a book", "the wine is red")}
    # "read" is R IY D or R EH D: here it is spoken R EH D, a homophone of "red"
    streams["i read a book"] = synthetic_ctc_logprobs(phonemes_to_ids(
        ["AY", "SIL", "R", "EH", "D", "SIL", "AH", "SIL", "B", "UH", "K", "SIL"]), seed=1)
    plain = WordBeamSearch(lex)
    with_lm = WordBeamSearch(lex, lm, lm_weight=1.0)
    no_lm = {t: plain.decode(x).words for t, x in streams.items()}
    assert no_lm["i read a book"][1] == no_lm["the wine is red"][3]  # the same word both times: one is wrong
    for t, x in streams.items():
        hyp = with_lm.decode(x)
        assert hyp.text == t
        assert hyp.lm == pytest.approx(lm.sentence_logprob(t))
        assert hyp.score == pytest.approx(hyp.acoustic + hyp.lm)


def test_noisy_stream_lm_lowers_errors(lex):
    sents = ["glue the sheet to the dark blue background", "the wine is red", "i read the book", "the sheet is blue"]
    lm = NgramLM.fit(sents * 2, vocabulary=WORDS)
    errs = {False: 0, True: 0}
    decoders = {False: WordBeamSearch(lex, beam_size=16), True: WordBeamSearch(lex, lm, beam_size=16)}
    for seed in range(3):
        for s in sents:
            x = synthetic_ctc_logprobs(sentence_phonemes(s)[0], seed=seed, confusion=0.25, noise=1.5)
            for use_lm in (False, True):
                words = decoders[use_lm].decode(x).words
                errs[use_lm] += sum(a != b for a, b in zip(words, s.split())) + abs(len(words) - len(s.split()))
    assert errs[True] < errs[False]


def test_partial_grows_while_streaming(lex):
    text = "glue the sheet to the dark blue background"
    x = synthetic_ctc_logprobs(sentence_phonemes(text)[0], seed=0)
    dec = WordBeamSearch(lex, word_insertion_penalty=-1.0)
    assert dec.partial() == ""
    counts = []
    for i in range(0, len(x), 5):
        dec.step(x[i:i + 5])
        counts.append(len(dec.partial().split()))
    assert counts[0] == 0 and counts[-1] == 8
    assert len(set(counts)) >= 6  # words appear one after another, not all at the end
    assert dec.partial() == dec.finish()[0].text == text


def test_finish_without_frames_and_with_an_unfinished_word(lex):
    dec = WordBeamSearch(lex)
    assert dec.decode(np.zeros((0, N_CLASSES))).text == ""
    # "background" cut after "B AE K G R": the best finished reading ("back") is kept
    x = perfect_stream(phonemes_to_ids(["B", "AE", "K", "G", "R"]))
    hyps = WordBeamSearch(lex).decode(x)
    assert hyps.words[0] == "back"


def test_bad_inputs(lex):
    dec = WordBeamSearch(lex)
    with pytest.raises(ValidationError, match=r"shape \(n, 41\)"):
        dec.step(np.zeros((3, 40)))
    with pytest.raises(ValidationError, match="log-probabilities"):
        dec.step(np.full((2, N_CLASSES), np.nan))
    with pytest.raises(ValidationError, match="log-probabilities"):
        dec.step(np.ones((2, N_CLASSES)))
    dec.step(np.log(np.full(N_CLASSES, 1 / N_CLASSES)))  # one row is fine
    assert dec.n_frames == 1
    with pytest.raises(ConfigError, match="lexicon must be a Lexicon"):
        WordBeamSearch(["the"])
    with pytest.raises(ConfigError, match="lm must be an NgramLM"):
        WordBeamSearch(lex, lm="lm.npz")
    with pytest.raises(ConfigError, match="beam_size must be an integer >= 1"):
        WordBeamSearch(lex, beam_size=0)
    with pytest.raises(ConfigError, match="n_best"):
        WordBeamSearch(lex, n_best=2.0)
    with pytest.raises(ConfigError, match="lm_weight must be >= 0"):
        WordBeamSearch(lex, lm_weight=-1)
    with pytest.raises(ConfigError, match="prune_logprob must be a finite number"):
        WordBeamSearch(lex, prune_logprob=math.nan)
    with pytest.raises(ValidationError, match="class_ids must be in 1..40"):
        synthetic_ctc_logprobs([0, 3])
    with pytest.raises(ConfigError, match="frames_per_class"):
        synthetic_ctc_logprobs([3], frames_per_class=(4, 2))
