"""Word n-gram LM: modified Kneser-Ney against a plain re-implementation, normalisation, corpus reading, exclusion."""

import math
from collections import Counter, defaultdict

import numpy as np
import pytest
from _shared_data import need

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.decoders.language import NgramLM, build_lm, read_corpus_text, split_sentences

CORPUS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the cat ate the fish",
          "the dog ate", "a fish sat", "the cat sat"]
VOCAB = sorted({w for s in CORPUS for w in s.split()} | {"zebra", "log"})


def _reference_kn(sentences, vocab, order):
    """Interpolated modified Kneser-Ney written the slow, obvious way (dicts), for comparison."""
    seqs = [["<s>"] + s.split() + ["</s>"] for s in sentences]
    seqs = [[w if w in vocab or w in ("<s>", "</s>") else "<unk>" for w in s] for s in seqs]
    raw = [Counter() for _ in range(order + 1)]
    for s in seqs:
        for k in range(1, order + 1):
            for i in range(len(s) - k + 1):
                raw[k][tuple(s[i:i + k])] += 1
    cnt = [None] * (order + 1)
    cnt[order] = dict(raw[order])
    for k in range(order - 1, 0, -1):
        left = defaultdict(set)
        for g in raw[k + 1]:
            left[g[1:]].add(g[0])
        cnt[k] = {g: (c if g[0] == "<s>" else len(left[g])) for g, c in raw[k].items()}

    def disc(counts):
        n = [sum(1 for c in counts if c == i) for i in (1, 2, 3, 4)]
        dflt = [0.5, 1.0, 1.5]
        if n[0] == 0 or n[1] == 0:
            return dflt
        y = n[0] / (n[0] + 2 * n[1])
        d = [1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2] if n[2] else dflt[2]]
        return [di if 0 < di < j + 1 else dflt[j] for j, di in enumerate(d)]

    def dof(c, d):
        return 0.0 if c == 0 else d[min(int(c), 3) - 1]

    full_vocab = ["<unk>", "</s>"] + sorted(vocab)
    uni = {w: c for (w,), c in cnt[1].items() if w != "<s>"}
    d1 = disc(list(uni.values()))
    S = sum(uni.values())
    g0 = sum(dof(c, d1) for c in uni.values()) / S
    p1 = {w: (uni.get(w, 0) - dof(uni.get(w, 0), d1)) / S + g0 / len(full_vocab) for w in full_vocab}
    ds = {k: disc(list(cnt[k].values())) for k in range(2, order + 1)}

    def prob(w, ctx):
        p = p1[w]
        ctx = tuple(ctx[-(order - 1):]) if order > 1 else ()
        for j in range(1, len(ctx) + 1):
            h = ctx[len(ctx) - j:]
            k = j + 1
            rows = {g: c for g, c in cnt[k].items() if g[:-1] == h}
            if not rows:
                break
            s = sum(rows.values())
            gamma = sum(dof(c, ds[k]) for c in rows.values()) / s
            c = rows.get(h + (w,), 0)
            p = (c - dof(c, ds[k])) / s + gamma * p
        return p

    return prob, full_vocab


@pytest.mark.parametrize("order", [1, 2, 3])
def test_matches_reference_kneser_ney_and_normalises(order):
    lm = NgramLM.fit(CORPUS + ["the unicorn sat"], vocabulary=VOCAB, order=order)
    ref, full_vocab = _reference_kn(CORPUS + ["the unicorn sat"], set(VOCAB), order)
    contexts = [("<s>",), ("<s>", "the"), ("the", "cat"), ("cat", "sat"), ("zebra", "the"), ("zebra", "zebra"),
                ("on", "the"), ("<unk>", "sat")]
    for ctx in contexts:
        total = 0.0
        for w in full_vocab:
            lp = lm.logprob(w, ctx)
            assert math.isfinite(lp)
            assert lp == pytest.approx(math.log(ref(w, ctx)), abs=1e-9), (w, ctx)
            total += math.exp(lp)
        assert total == pytest.approx(1.0, abs=1e-9), ctx
    assert lm.logprob("<s>", ("the",)) == float("-inf")


def test_context_and_unknown_words():
    lm = NgramLM.fit(CORPUS, vocabulary=VOCAB)
    assert lm.logprob("sat", ["<s>", "the", "cat"]) > lm.logprob("sat", ["<s>", "the", "fish"])
    assert lm.logprob("mat", ["on", "the"]) > lm.logprob("zebra", ["on", "the"])
    assert math.isfinite(lm.logprob("zebra", ["the"]))  # in the vocabulary, never in the text
    assert lm.word_id("unicorn") == lm.word_id("<unk>")
    lm2 = NgramLM.fit(["the unicorn sat", "a unicorn"], vocabulary=VOCAB)
    assert lm2.stats["n_unk_tokens"] == 2 and lm2.stats["n_sentences"] == 2
    assert lm.perplexity(CORPUS) < lm.perplexity(["mat the on sat cat the", "fish a dog ate"])
    assert lm.sentence_logprob("the cat sat") == pytest.approx(
        lm.logprob("the", ["<s>"]) + lm.logprob("cat", ["<s>", "the"]) + lm.logprob("sat", ["the", "cat"])
        + lm.logprob("</s>", ["cat", "sat"]))
    assert math.isnan(lm.perplexity([]))


def test_default_vocabulary_is_the_cmu_dictionary():
    lm = NgramLM.fit(CORPUS)
    assert len(lm.vocab) > 100_000 and math.isfinite(lm.logprob("xylophone", ["the"]))


def test_save_load_round_trip(tmp_path):
    lm = NgramLM.fit(CORPUS, vocabulary=VOCAB)
    path = lm.save(tmp_path / "lm.npz")
    lm2 = NgramLM.load(path)
    assert lm2.vocab == lm.vocab and lm2.order == lm.order and lm2.stats["n_sentences"] == len(CORPUS)
    for s in CORPUS + ["zebra log the"]:
        assert lm2.sentence_logprob(s) == lm.sentence_logprob(s)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValidationError, match="not a language model"):
        NgramLM.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValidationError, match="not a cortexlink n-gram"):
        NgramLM.load(tmp_path / "other.npz")
    with pytest.raises(ConfigError, match="does not exist"):
        NgramLM.load(tmp_path / "missing.npz")


def test_bad_inputs():
    with pytest.raises(ConfigError, match="order must be an integer in 1..6"):
        NgramLM.fit(CORPUS, vocabulary=VOCAB, order=0)
    with pytest.raises(ConfigError, match="order"):
        NgramLM.fit(CORPUS, vocabulary=VOCAB, order=2.5)
    with pytest.raises(ValidationError, match="at least one non-empty"):
        NgramLM.fit(["", "..."], vocabulary=VOCAB)
    with pytest.raises(ValidationError, match="special"):
        NgramLM.fit(CORPUS, vocabulary=["the", "<s>"])
    with pytest.raises(ConfigError, match="on_excluded"):
        build_lm([], on_excluded="skip")
    with pytest.raises(ConfigError, match="at least one text file"):
        build_lm([])
    with pytest.raises(ConfigError, match="does not exist"):
        build_lm(["/nonexistent/book.txt"])


BOOK = ("\ufeffThe Project Gutenberg EBook of Nothing\r\nlicence text here\r\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK NOTHING ***\r\n\r\nCHAPTER I\r\n\r\n"
        "Mr. Smith saw the cat. It sat on the mat; the dog barked!\r\nWas it loud? It was\r\n"
        "very loud.\r\n\r\nEnd of the Project Gutenberg EBook of Nothing\r\n*** END OF THIS ***\r\nlegal text\r\n")


def test_corpus_reading(tmp_path):
    (tmp_path / "book.txt").write_bytes(BOOK.encode("utf-8"))
    text = read_corpus_text(tmp_path / "book.txt")
    assert "\r" not in text and "\ufeff" not in text and "licence" not in text and "legal" not in text
    assert split_sentences(text) == [["chapter", "i"], ["mr", "smith", "saw", "the", "cat"],
                                     ["it", "sat", "on", "the", "mat"], ["the", "dog", "barked"], ["was", "it", "loud"],
                                     ["it", "was", "very", "loud"]]
    lm = build_lm(tmp_path, vocabulary=VOCAB + ["barked", "loud"])
    assert lm.stats["n_sentences"] == 6 and lm.stats["n_files"] == 1


def test_build_refuses_held_out_sentences(tmp_path):
    (tmp_path / "book.txt").write_bytes(BOOK.encode("utf-8"))
    lm = build_lm(tmp_path / "book.txt", vocabulary=VOCAB, exclude_sentences=["The cat sat on the mat.", "Dogs bark"])
    assert lm.stats["n_dropped_sentences"] == 0
    # one held-out sentence inside the text (across a line break and a sentence break, other case/punctuation)
    for held_out in ["It was very loud!", "Was it loud?  It was very", "the dog barked"]:
        with pytest.raises(ValidationError, match="excluded .held-out. sentence"):
            build_lm(tmp_path / "book.txt", vocabulary=VOCAB, exclude_sentences=["a b c", held_out])
    lm = build_lm(tmp_path / "book.txt", vocabulary=VOCAB, exclude_sentences=["Was it loud? It was"],
                  on_excluded="drop")
    assert lm.stats["n_dropped_sentences"] == 2 and lm.stats["n_sentences"] == 4
    with pytest.raises(ConfigError, match="list of sentences"):
        build_lm(tmp_path / "book.txt", vocabulary=VOCAB, exclude_sentences="the dog barked")


def test_real_book_with_harvard_held_out(shared_data):
    corpus = need(shared_data / "text_corpus", "the text corpus")
    harvard = [s.strip() for s in (corpus / "harvard_sentences.txt").read_text(encoding="utf-8-sig").splitlines()
               if s.strip()]
    lm = build_lm(corpus / "gutenberg" / "the_great_gatsby.txt", exclude_sentences=harvard)
    assert lm.stats["n_sentences"] > 2000 and lm.stats["n_unk_tokens"] < 0.05 * lm.stats["n_tokens"]
    assert lm.logprob("gatsby", ["<s>", "mr"]) > lm.logprob("gatsby", ["<s>", "the"])
    assert 10 < lm.perplexity(harvard[:50]) < 1e5
