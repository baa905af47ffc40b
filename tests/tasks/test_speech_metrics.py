"""Speech metrics: edit distance, aggregate PER/WER, words per minute, the held-out split, the corpus."""

import math
import random

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.phonemes import SIL, normalize_text, sentence_phonemes
from cortexlink.tasks.speech_metrics import (edit_distance, load_harvard, phoneme_error_counts, phoneme_error_rate,
                                             speech_split, word_error_counts, word_error_rate, words_per_minute)


def _slow_levenshtein(a, b):
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[:], i
        for j, y in enumerate(b, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (x != y))
    return d[-1]


def test_edit_distance_matches_textbook_dp():
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.randrange(4) for _ in range(rng.randrange(9))]
        b = [rng.randrange(4) for _ in range(rng.randrange(9))]
        assert edit_distance(a, b) == _slow_levenshtein(a, b)
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2]) == 2 and edit_distance(np.array([5, 6]), []) == 2
    assert edit_distance(np.array([1, 2, 3]), (1, 2, 3)) == 0


def test_phoneme_error_rate_is_aggregate_and_excludes_sil_by_default():
    refs = [[1, 2, SIL, 3], [4, 5, 6, 7, 8, 9, SIL]]
    hyps = [[1, 3], [4, 5, 6, 7, 8, 9, SIL]]
    # 1 edit over 3 + 6 phonemes (a mean of ratios would give (1/3 + 0) / 2)
    assert phoneme_error_counts(refs, hyps) == (1, 9)
    assert phoneme_error_rate(refs, hyps) == pytest.approx(1 / 9)
    assert phoneme_error_counts(refs, hyps, include_sil=True) == (2, 11)
    ids, _ = sentence_phonemes("The birch canoe slid on the smooth planks.")
    assert phoneme_error_rate([ids], [ids]) == 0.0
    assert phoneme_error_rate([[1]], [[1, 2, 3, 4]]) == 3.0  # insertions may push it above 1


def test_phoneme_error_rate_empty_and_bad_input():
    assert math.isnan(phoneme_error_rate([], []))
    assert math.isnan(phoneme_error_rate([[SIL]], [[1]]))  # no reference phoneme once SIL is removed
    assert phoneme_error_counts([[]], [[2]]) == (1, 0)
    with pytest.raises(ValidationError, match="2 refs and 1 hyps"):
        phoneme_error_rate([[1], [2]], [[1]])
    with pytest.raises(ValidationError, match=r"hyps\[0\] must hold class ids in 1..40 \(no blanks\)"):
        phoneme_error_rate([[1]], [[0, 1]])
    with pytest.raises(ValidationError, match="integer class ids"):
        phoneme_error_rate([[1.5]], [[1]])
    with pytest.raises(ValidationError, match="sequence of class ids"):
        phoneme_error_rate(["AA"], [[1]])


def test_word_error_rate_normalised_and_aggregate():
    refs = ["The birch canoe slid on the smooth planks.", "Rice is often served in round bowls."]
    hyps = ["the birch canoe slid on the smooth plank", "RICE IS OFTEN SERVED IN ROUND BOWLS!"]
    assert word_error_counts(refs, hyps) == (1, 15)
    assert word_error_rate(refs, hyps) == pytest.approx(1 / 15)
    assert word_error_rate(["a b c"], [["a", "b"]]) == pytest.approx(1 / 3)  # a list of words is accepted
    assert word_error_counts(["", "a b"], ["x y", "a b"]) == (2, 2)  # empty reference: insertions only
    assert word_error_counts(["a b"], [""]) == (2, 2)
    assert word_error_counts(["it's"], ["it\u2019s"]) == (0, 1)


def test_word_error_rate_empty_and_bad_input():
    assert math.isnan(word_error_rate([], []))
    assert math.isnan(word_error_rate(["..."], ["word"]))
    assert word_error_counts(["..."], ["word"]) == (1, 0)
    with pytest.raises(ValidationError, match="1 refs and 2 hyps"):
        word_error_rate(["a"], ["a", "b"])
    with pytest.raises(ValidationError, match=r"hyps\[0\] must be a sentence"):
        word_error_rate(["a"], [3])


def test_words_per_minute():
    assert words_per_minute(62, 60.0) == pytest.approx(62.0)
    assert words_per_minute(10, 7.5) == pytest.approx(80.0)
    assert math.isnan(words_per_minute(0, 0.0))
    for bad in [(-1, 1.0), (1, -1.0), (1, float("nan")), ("x", 1.0)]:
        with pytest.raises(ValidationError):
            words_per_minute(*bad)


def test_speech_split_fixed_disjoint_order_free():
    sents = [f"Sentence number {w} is here." for w in ("one two three four five six seven eight nine ten "
                                                        "eleven twelve thirteen fourteen fifteen").split()]
    train, test = speech_split(sents, n_test=5, seed=0)
    assert len(test) == 5 and len(train) == 10 and not set(train) & set(test)
    assert set(train) | set(test) == set(sents)
    assert [s for s in sents if s in test] == test  # input order kept
    rev_train, rev_test = speech_split(sents[::-1], n_test=5, seed=0)
    assert set(rev_test) == set(test) and set(rev_train) == set(train)
    assert speech_split(sents, n_test=5, seed=0) == (train, test)
    assert set(speech_split(sents, n_test=5, seed=1)[1]) != set(test)
    # a repeat (other case/punctuation) goes with its twin
    tr2, te2 = speech_split(sents + [test[0].upper().rstrip(".")], n_test=5, seed=0)
    assert test[0].upper().rstrip(".") in te2 and len(te2) == 6
    assert speech_split([], n_test=100) == ([], [])
    assert speech_split(sents, n_test=0) == (sents, [])


def test_speech_split_bad_input():
    with pytest.raises(ValidationError, match="n_test must be at most the number of distinct sentences \\(2\\)"):
        speech_split(["a b", "c d", "A b!"], n_test=3)
    with pytest.raises(ValidationError, match="n_test must be >= 0"):
        speech_split(["a"], n_test=-1)
    with pytest.raises(ValidationError, match="n_test must be an integer"):
        speech_split(["a"], n_test=1.5)
    with pytest.raises(ValidationError, match=r"sentences\[1\] has no words"):
        speech_split(["a", "..."], n_test=1)
    with pytest.raises(ValidationError, match=r"sentences\[0\] must be a string"):
        speech_split([3], n_test=0)


def test_load_harvard_file_handling(tmp_path):
    f = tmp_path / "h.txt"
    f.write_bytes("\ufeffThe birch canoe.\r\n\r\n  Glue the sheet.  \r\n".encode("utf-8"))
    assert load_harvard(f) == ["The birch canoe.", "Glue the sheet."]
    with pytest.raises(ConfigError, match="is not a file"):
        load_harvard(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="readable UTF-8"):
        load_harvard(tmp_path / "bad.txt")


def test_load_harvard_default_missing(tmp_path, monkeypatch):
    import cortexlink.tasks.speech_metrics as sm
    monkeypatch.setattr(sm, "_default_harvard", lambda: None)
    with pytest.raises(ConfigError, match="Harvard sentences were not found.*CORTEXLINK_SHARED_DATA"):
        load_harvard()


def test_harvard_corpus_split(shared_data, monkeypatch):
    sents = load_harvard(shared_data / "text_corpus" / "harvard_sentences.txt")
    assert len(sents) == 720 and not sents[0].startswith("\ufeff")
    train, test = speech_split(sents, n_test=100, seed=0)
    assert len(test) == 100 and len(train) == 620
    assert not {normalize_text(s) for s in train} & {normalize_text(s) for s in test}
    monkeypatch.setenv("CORTEXLINK_SHARED_DATA", str(shared_data))
    assert load_harvard() == sents  # the default path
