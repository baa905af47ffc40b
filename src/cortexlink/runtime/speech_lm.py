"""The speech loop's word language model: loaded from a file, or built from text and cached.

Building the trigram model from the ten Gutenberg books takes tens of seconds; the word decoder
node asks :func:`language_model`, which keeps each built model in a cache folder under a key of
everything it depends on (the text files' names, sizes and modification times, the order, the
vocabulary's size, the held-out sentences), so a second session starts at once and a changed
input builds a new model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from cortexlink.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["language_model", "default_corpus", "GUTENBERG_RELPATH"]

GUTENBERG_RELPATH = "text_corpus/gutenberg"
#: Bumped when the model's construction changes, so that old cached models are not reused.
_CACHE_VERSION = 1


def default_corpus() -> list[Path]:
    """The Gutenberg books of ``../shared/data/text_corpus`` (or ``$CORTEXLINK_SHARED_DATA``)."""
    from cortexlink.tasks.speech_metrics import shared_data_path

    d = shared_data_path(GUTENBERG_RELPATH)
    if d is None or not d.is_dir():
        raise ConfigError(f"no text for the language model: {GUTENBERG_RELPATH} was not found under "
                          "$CORTEXLINK_SHARED_DATA or ../shared/data; give the word decoder a corpus "
                          "(text files or folders) or an lm_path")
    return [d]


def _files(corpus: Sequence[str | os.PathLike]) -> list[Path]:
    out: list[Path] = []
    for c in corpus:
        p = Path(c)
        if p.is_dir():
            out.extend(sorted(p.glob("*.txt")))
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(f"language-model corpus entry {str(p)!r} is neither a file nor a folder")
    if not out:
        raise ConfigError(f"the language-model corpus {[str(c) for c in corpus]} holds no .txt file")
    return out


def language_model(lm_path: str | None, corpus: Sequence[str] | None, cache_dir: str | None, order: int,
                   held_out: Sequence[str], lexicon: Any) -> Any:
    """The word decoder's :class:`~cortexlink.decoders.language.NgramLM`.

    Parameters
    ----------
    lm_path : str or None
        A saved model (used as it is).
    corpus : list of str or None
        Text files or folders (default :func:`default_corpus`).
    cache_dir : str or None
        Where built models are kept (default ``$XDG_CACHE_HOME/cortexlink`` or ``~/.cache/cortexlink``).
    order : int
    held_out : list of str
        Sentences that must not occur in the text (the build refuses a text holding one).
    lexicon : Lexicon
        Its words are the model's vocabulary.
    """
    from cortexlink.decoders.language import NgramLM, build_lm

    if lm_path:
        return NgramLM.load(lm_path)
    files = _files(corpus) if corpus else _files(default_corpus())
    words = list(lexicon.words)
    key_src = {"v": _CACHE_VERSION, "order": int(order), "n_vocab": len(words),
               "vocab_hash": hashlib.sha256("\n".join(words).encode()).hexdigest()[:16],
               "files": [(str(f.resolve()), f.stat().st_size, int(f.stat().st_mtime)) for f in files],
               "held_out": hashlib.sha256("\n".join(sorted(held_out)).encode()).hexdigest()[:16]}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_dir) if cache_dir else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cortexlink"
    path = root / f"lm-{order}gram-{key}.npz"
    if path.is_file():
        try:
            return NgramLM.load(path)
        except Exception as exc:  # a damaged cache file is rebuilt, never trusted
            logger.warning("cached language model %s unreadable (%s); rebuilding", path, exc)
    lm = build_lm(files, vocabulary=words, order=order, exclude_sentences=held_out)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        lm.save(tmp)
        os.replace(tmp, path)
    except OSError as exc:                       # a read-only home: the model still serves this run
        logger.warning("could not cache the language model in %s: %s", root, exc)
    return lm
