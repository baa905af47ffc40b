"""Pronunciation lexicon: a prefix tree (trie) over phoneme class ids.

Every pronunciation of every word becomes a path from the root; the node reached by the last
phoneme is *terminal* and lists the ids of the words it spells (homophones share one node, a word
with two pronunciations ends at two nodes). The tree is stored as flat arrays (compressed sparse
rows), so the whole CMU dictionary (about 124,000 words, 133,000 pronunciations) takes a few
megabytes and builds in about two seconds; the beam search asks for one node's children at a time
and those small dictionaries are built on first use.

Examples
--------
>>> lex = Lexicon.from_words(["red", "read"])
>>> node = lex.walk([28, 11, 9])     # R EH D
>>> sorted(lex.word(i) for i in lex.words_at(node))
['read', 'red']
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from cortexlink.core.errors import ValidationError
from cortexlink.core.phonemes import CLASS_NAMES, N_CLASSES, SIL, phonemes_to_ids, pronunciations

__all__ = ["Lexicon", "ROOT"]

ROOT = 0
_SHIFT = 6  # 64 > N_CLASSES: edge key = (parent << 6) | class id


class Lexicon:
    """A phoneme prefix tree over a vocabulary. Build with :meth:`from_cmudict` or :meth:`from_words`.

    Attributes
    ----------
    words : tuple of str
        The vocabulary, sorted; a word's id is its index here.
    n_nodes : int
        Number of tree nodes (the root is node 0).
    parent, label, depth : ndarray of int32
        Per node: its parent (-1 for the root), the class id on the edge into it, its depth.
    """

    def __init__(self, words: Sequence[str], prons: Sequence[Sequence[Sequence[int]]]):
        if len(words) != len(prons):
            raise ValidationError(f"words and prons must have the same length; got {len(words)} and {len(prons)}")
        if not words:
            raise ValidationError("a lexicon needs at least one word; got none")
        order = sorted(range(len(words)), key=lambda i: words[i])
        self.words: tuple[str, ...] = tuple(words[i] for i in order)
        if len(set(self.words)) != len(self.words):
            raise ValidationError("words must be unique")
        self._index = {w: i for i, w in enumerate(self.words)}
        edges: dict[int, int] = {}
        parent = [-1]
        label = [0]
        ends: list[tuple[int, int]] = []  # (node, word id)
        for wid, i in enumerate(order):
            if not prons[i]:
                raise ValidationError(f"word {words[i]!r} has no pronunciation")
            for p in prons[i]:
                node = ROOT
                for c in p:
                    if not 0 < c < SIL:
                        raise ValidationError(
                            f"pronunciation of {words[i]!r} holds class id {c}; allowed: phoneme ids 1..{SIL - 1}")
                    key = (node << _SHIFT) | c
                    nxt = edges.get(key)
                    if nxt is None:
                        nxt = len(parent)
                        edges[key] = nxt
                        parent.append(node)
                        label.append(c)
                    node = nxt
                if node == ROOT:
                    raise ValidationError(f"word {words[i]!r} has an empty pronunciation")
                ends.append((node, wid))
        n = len(parent)
        self.n_nodes = n
        self.parent = np.asarray(parent, np.int32)
        self.label = np.asarray(label, np.int32)
        depth = [0] * n
        for v in range(1, n):  # parents are created before children
            depth[v] = depth[parent[v]] + 1
        self.depth = np.asarray(depth, np.int32)
        # children in CSR form, ordered by parent then label
        child_ids = np.arange(1, n, dtype=np.int32)
        o = np.lexsort((self.label[1:], self.parent[1:]))
        self._child = child_ids[o]
        self._child_start = np.searchsorted(self.parent[1:][o], np.arange(n + 1)).astype(np.int32)
        e = np.asarray(ends, np.int64).reshape(-1, 2)
        o = np.lexsort((e[:, 1], e[:, 0]))
        e = e[o]
        keep = np.ones(len(e), bool)
        keep[1:] = np.any(e[1:] != e[:-1], axis=1)  # a word listed twice at one node
        e = e[keep]
        self._word_ids = e[:, 1].astype(np.int32)
        self._word_start = np.searchsorted(e[:, 0], np.arange(n + 1)).astype(np.int32)
        self.is_terminal = self._word_start[1:] > self._word_start[:-1]
        self._kids: list[dict[int, int] | None] = [None] * n
        self._ends: list[tuple[int, ...] | None] = [None] * n

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_cmudict(cls, words: Iterable[str] | None = None) -> "Lexicon":
        """The lexicon of the CMU dictionary: all pronunciations of ``words`` (default: every word).

        Raises
        ------
        ValidationError
            If a requested word has no pronunciation (the message lists up to ten of them).
        """
        d = pronunciations()
        vocab = sorted(d) if words is None else sorted(set(words))
        missing = [w for w in vocab if w not in d]
        if missing:
            raise ValidationError(
                f"{len(missing)} word(s) are not in the CMU dictionary: {', '.join(missing[:10])}")
        idx = {name: i for i, name in enumerate(CLASS_NAMES)}
        prons = [[tuple(idx[ph] for ph in p) for p in d[w]] for w in vocab]
        return cls(vocab, prons)

    @classmethod
    def from_words(cls, words: Iterable[str] | Mapping[str, Sequence[Sequence[str]]]) -> "Lexicon":
        """A small lexicon: CMU pronunciations of ``words``, or a mapping word -> list of phoneme-name lists."""
        if isinstance(words, Mapping):
            vocab = list(words)
            prons = [[tuple(phonemes_to_ids(p).tolist()) for p in words[w]] for w in vocab]
            return cls(vocab, prons)
        return cls.from_cmudict(words)

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def word(self, word_id: int) -> str:
        """The word with id ``word_id``."""
        return self.words[word_id]

    def word_id(self, word: str) -> int:
        """The id of ``word``; raises :class:`ValidationError` if it is not in the vocabulary."""
        try:
            return self._index[word]
        except KeyError:
            raise ValidationError(f"word {word!r} is not in the lexicon ({len(self.words)} words)") from None

    def children(self, node: int) -> dict[int, int]:
        """Class id -> child node, for ``node`` (cached; do not modify the returned dict)."""
        kids = self._kids[node]
        if kids is None:
            a, b = self._child_start[node], self._child_start[node + 1]
            ch = self._child[a:b]
            kids = dict(zip(self.label[ch].tolist(), ch.tolist()))
            self._kids[node] = kids
        return kids

    def words_at(self, node: int) -> tuple[int, ...]:
        """Ids of the words whose pronunciation ends at ``node`` (empty when it is not terminal)."""
        w = self._ends[node]
        if w is None:
            w = tuple(self._word_ids[self._word_start[node]:self._word_start[node + 1]].tolist())
            self._ends[node] = w
        return w

    def walk(self, class_ids: Iterable[int], node: int = ROOT) -> int:
        """The node reached from ``node`` along ``class_ids``, or -1 when the path leaves the tree."""
        for c in class_ids:
            node = self.children(node).get(int(c), -1)
            if node < 0:
                return -1
        return node

    def lookup(self, class_ids: Iterable[int]) -> list[str]:
        """The words pronounced exactly as ``class_ids`` (phoneme ids, no SIL)."""
        node = self.walk(class_ids)
        return [] if node <= ROOT else [self.words[i] for i in self.words_at(node)]

    def pronunciation_nodes(self, word: str) -> list[int]:
        """The terminal nodes of ``word`` (one per pronunciation)."""
        wid = self.word_id(word)
        nodes = np.searchsorted(self._word_start, np.flatnonzero(self._word_ids == wid), side="right") - 1
        return nodes.tolist()

    def node_phonemes(self, node: int) -> list[int]:
        """The class ids on the path from the root to ``node``."""
        out = []
        while node > ROOT:
            out.append(int(self.label[node]))
            node = int(self.parent[node])
        return out[::-1]

    def subtree_max(self, node_values: np.ndarray) -> np.ndarray:
        """For each node, the maximum of ``node_values`` over the node and all its descendants.

        Used for language-model look-ahead: pass each node's best word score (``-inf`` where no word
        ends) and get, per node, the best score any word below it can reach.
        """
        v = np.array(node_values, dtype=np.float64, copy=True)
        if v.shape != (self.n_nodes,):
            raise ValidationError(f"node_values must have shape ({self.n_nodes},); got {v.shape}")
        for d in range(int(self.depth.max()), 0, -1):
            nodes = np.flatnonzero(self.depth == d)
            np.maximum.at(v, self.parent[nodes], v[nodes])
        return v

    def nbytes(self) -> int:
        """Bytes held by the tree's arrays (not counting the word strings or the caches)."""
        return sum(a.nbytes for a in (self.parent, self.label, self.depth, self._child, self._child_start,
                                      self._word_ids, self._word_start, self.is_terminal))

    def __repr__(self) -> str:
        return f"Lexicon({len(self.words)} words, {self.n_nodes} nodes)"


def _check_classes() -> None:  # pragma: no cover - guards the edge-key packing
    if N_CLASSES > (1 << _SHIFT) or CLASS_NAMES[SIL] != "SIL":
        raise RuntimeError("phoneme classes do not fit the lexicon's edge keys")


_check_classes()
