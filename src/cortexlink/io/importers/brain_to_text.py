"""The public Brain-to-Text data layout (Card et al. 2024, NEJM; the Brain-to-Text '25 competition).

What the layout is, and where each fact comes from
--------------------------------------------------
Sources (read for facts only; no code taken): the repository ``Neuroprosthetics-Lab/nejm-brain-to-text``
-- ``README.md`` ("Data" section), ``model_training/dataset.py`` (``BrainToTextDataset.__getitem__``),
``model_training/evaluate_model_helpers.py`` (``load_h5py_file``, ``LOGIT_TO_PHONEME``),
``model_training/evaluate_model.py`` and ``model_training/rnn_args.yaml``.

* One folder per session, named ``t15.YYYY.MM.DD`` (rnn_args.yaml ``sessions``), under a root
  (``hdf5_data_final``); in it ``data_train.hdf5``, ``data_val.hdf5``, ``data_test.hdf5`` -- not
  every session has all three (evaluate_model.py checks which exist).
* One HDF5 group per trial, ``trial_NNNN`` (four digits, from 0; dataset.py ``f'trial_{t:04d}'``).
* Datasets in a trial group: ``input_features`` (time bins x 512, 20 ms bins), ``seq_class_ids``
  (phoneme class ids, zero-padded), ``transcription`` (character codes, zero-padded; the text is
  the codes before the first 0, ``_extract_transcription``).
* Attributes: ``n_time_steps``, ``seq_len`` (number of valid ``seq_class_ids``), ``sentence_label``
  (the sentence as a string), ``session``, ``block_num``, ``trial_num``.
* Test files carry no labels: ``seq_class_ids``, ``seq_len``, ``transcription`` and
  ``sentence_label`` are absent (load_h5py_file reads each "if present"; README: "The test set does
  not include ground truth sentence or phoneme labels").
* The 512 features (README): 256 electrodes' -4.5 x RMS threshold crossings first, then the same
  256 electrodes' spike-band power, both in electrode order ventral 6v (0-63), area 4 (64-127),
  55b (128-191), dorsal 6v (192-255). Here they are named as :mod:`cortexlink.dsp` names its
  features: ``"ch0000/tx"`` ... ``"ch0255/tx"``, ``"ch0000/sbp"`` ... ``"ch0255/sbp"``
  (:data:`T15_ARRAYS` gives the array of each channel).
* Phoneme classes (``LOGIT_TO_PHONEME``): 0 blank, 1-39 the ARPAbet phonemes in alphabetical
  order, 40 silence (``" | "``) -- exactly :mod:`cortexlink.core.phonemes` (``BLANK``, ``PHONEMES``,
  ``SIL``), so ids are used as they are.

Not pinned down by the sources (so the reader does not depend on them): the padded length of
``seq_class_ids``/``transcription`` (the writer pads both to :data:`PAD_LEN` = 500, the
``max_seq_elements`` of rnn_args.yaml) and the integer width of the label arrays (any integer
dtype is read; the writer writes int32). The Brain-to-Text '24 data (Willett et al. 2023) are
MATLAB ``.mat`` files (``spikePow``, ``tx1``..``tx4``, ``sentenceText``), a different layout not
read here.

Usage
-----
>>> ds = read_brain_to_text("hdf5_data_final")               # root, one session folder, or one file
>>> train = ds.select(split="train")
>>> X = [t.features for t in train]                           # (T, 512) float32 each
>>> y = [t.phoneme_ids for t in train]                        # int32 class ids 1..40, no padding
>>> days = [t.day for t in train]                             # sessions in date order -> 0, 1, 2 ...
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.outpath import check_name
from cortexlink.core.phonemes import N_CLASSES

__all__ = ["SpeechTrial", "SpeechDataset", "read_brain_to_text", "write_brain_to_text", "feature_names",
           "BIN_S", "PAD_LEN", "SPLITS", "T15_ARRAYS"]

BIN_S = 0.02
PAD_LEN = 500
SPLITS = ("train", "val", "test")
#: (array, first channel, end channel) of participant T15's four 64-electrode arrays, in file order.
T15_ARRAYS = (("6v_ventral", 0, 64), ("4", 64, 128), ("55b", 128, 192), ("6v_dorsal", 192, 256))

_FILE = re.compile(r"^data_([A-Za-z0-9]+)\.hdf5$")
_TRIAL = re.compile(r"^trial_(\d+)$")
_DATE = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})")


def feature_names(n_channels: int = 256) -> tuple[str, ...]:
    """Feature names of the layout as dsp names them: every channel's ``/tx``, then every ``/sbp``."""
    if isinstance(n_channels, bool) or not isinstance(n_channels, (int, np.integer)) or n_channels < 1:
        raise ValidationError(f"n_channels must be an integer >= 1; got {n_channels!r}")
    return (tuple(f"ch{i:04d}/tx" for i in range(n_channels))
            + tuple(f"ch{i:04d}/sbp" for i in range(n_channels)))


@dataclass(frozen=True)
class SpeechTrial:
    """One attempted sentence: its features and (unless a test trial) its labels.

    Attributes
    ----------
    features : ndarray (T, F) float32, read-only
        One row per 20 ms bin.
    phoneme_ids : ndarray of int32 (read-only) or None
        Class ids 1..40 (39 phonemes + ``SIL``), unpadded, no blanks; ``None`` when unlabelled.
    sentence : str or None
        The sentence as prompted; ``None`` when unlabelled.
    day : int
        Index of the session among the data set's sessions in date order (0, 1, ...).
    session : str
        Session name (``t15.2023.08.11``).
    block : int, trial : int
        Block and trial numbers as recorded.
    split : str
        ``"train"``, ``"val"``, ``"test"`` (from the file name ``data_<split>.hdf5``) or another name.
    """

    features: np.ndarray
    phoneme_ids: np.ndarray | None
    sentence: str | None
    day: int
    session: str
    block: int
    trial: int
    split: str

    def __post_init__(self) -> None:
        x = np.asarray(self.features)
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
            raise ValidationError(f"features must be a 2-D float array (bins x features); got shape {x.shape}, "
                                  f"dtype {x.dtype}")
        x = np.array(x, dtype=np.float32, copy=True)
        x.setflags(write=False)
        object.__setattr__(self, "features", x)
        if self.phoneme_ids is not None:
            ids = np.asarray(self.phoneme_ids)
            if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
                raise ValidationError(f"phoneme_ids must be a 1-D integer array; got shape {ids.shape}, dtype {ids.dtype}")
            if ids.size and (ids.min() < 1 or ids.max() >= N_CLASSES):
                raise ValidationError(f"phoneme_ids must be class ids in 1..{N_CLASSES - 1} (no blanks, no padding); "
                                      f"got values {int(ids.min())}..{int(ids.max())}")
            ids = np.array(ids, dtype=np.int32, copy=True)
            ids.setflags(write=False)
            object.__setattr__(self, "phoneme_ids", ids)
        if self.sentence is not None and not isinstance(self.sentence, str):
            raise ValidationError(f"sentence must be a string or None; got {type(self.sentence).__name__}")
        for name in ("day", "block", "trial"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValidationError(f"{name} must be an integer; got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.day < 0:
            raise ValidationError(f"day must be >= 0; got {self.day}")
        for name in ("session", "split"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValidationError(f"{name} must be a non-empty string; got {getattr(self, name)!r}")

    @property
    def n_bins(self) -> int:
        """Number of 20 ms bins."""
        return int(self.features.shape[0])

    @property
    def labelled(self) -> bool:
        """Whether the trial carries its phonemes."""
        return self.phoneme_ids is not None


@dataclass(frozen=True)
class SpeechDataset:
    """Trials of one or more sessions with the names of their feature columns.

    ``sessions`` lists the session names by day index (``sessions[t.day] == t.session``). Build it
    from trials with :meth:`from_trials` (days assigned from the session dates) or directly.
    """

    trials: tuple[SpeechTrial, ...]
    feature_names: tuple[str, ...]
    sessions: tuple[str, ...] = ()
    bin_s: float = BIN_S
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        trials = tuple(self.trials)
        names = tuple(self.feature_names)
        sessions = tuple(self.sessions)
        for i, t in enumerate(trials):
            if not isinstance(t, SpeechTrial):
                raise ValidationError(f"trials[{i}] must be a SpeechTrial; got {type(t).__name__}")
            if t.features.shape[1] != len(names):
                raise ValidationError(f"trials[{i}] has {t.features.shape[1]} features; feature_names has {len(names)}")
        if not sessions:
            by_day = {}
            for t in trials:
                by_day.setdefault(t.day, t.session)
            sessions = tuple(by_day[d] for d in sorted(by_day))
            if sorted(by_day) != list(range(len(by_day))):
                raise ValidationError(f"trial days must be 0..n-1 when sessions is not given; got {sorted(by_day)}")
        for i, t in enumerate(trials):
            if t.day >= len(sessions) or sessions[t.day] != t.session:
                raise ValidationError(f"trials[{i}] (session {t.session!r}, day {t.day}) does not match "
                                      f"sessions[{t.day}] of {list(sessions)}")
        if not (isinstance(self.bin_s, (int, float)) and np.isfinite(self.bin_s) and self.bin_s > 0):
            raise ValidationError(f"bin_s must be a positive number of seconds; got {self.bin_s!r}")
        object.__setattr__(self, "trials", trials)
        object.__setattr__(self, "feature_names", names)
        object.__setattr__(self, "sessions", sessions)

    @classmethod
    def from_trials(cls, trials: Sequence[SpeechTrial], feature_names: Sequence[str], **kw) -> "SpeechDataset":
        """A data set whose day indices are re-assigned from the sessions in date order."""
        order = _session_order({t.session for t in trials})
        day = {s: d for d, s in enumerate(order)}
        out = [t if t.day == day[t.session] else SpeechTrial(t.features, t.phoneme_ids, t.sentence, day[t.session],
                                                                 t.session, t.block, t.trial, t.split)
               for t in trials]
        return cls(tuple(out), tuple(feature_names), tuple(order), **kw)

    def __len__(self) -> int:
        return len(self.trials)

    def __iter__(self) -> Iterator[SpeechTrial]:
        return iter(self.trials)

    def __getitem__(self, i: int) -> SpeechTrial:
        return self.trials[i]

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits present, in first-seen order."""
        return tuple(dict.fromkeys(t.split for t in self.trials))

    def select(self, *, split: str | Sequence[str] | None = None, day: int | Sequence[int] | None = None,
               labelled: bool | None = None) -> "SpeechDataset":
        """The trials of the given split(s) / day(s) / labelled state; day indices and sessions unchanged."""
        splits = None if split is None else ({split} if isinstance(split, str) else set(split))
        days = None if day is None else ({int(day)} if isinstance(day, (int, np.integer)) else {int(d) for d in day})
        keep = tuple(t for t in self.trials if (splits is None or t.split in splits)
                     and (days is None or t.day in days) and (labelled is None or t.labelled == labelled))
        return SpeechDataset(keep, self.feature_names, self.sessions, self.bin_s, self.source)


def _session_order(sessions) -> list[str]:
    def key(s: str):
        m = _DATE.search(s)
        return (0, m.groups(), s) if m else (1, (), s)
    return sorted(sessions, key=key)


def _files_of(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"path must be a Brain-to-Text .hdf5 file, a session folder or a folder of sessions; "
                          f"{path} does not exist")
    here = sorted(p for p in path.glob("*.hdf5") if p.is_file())
    if here:
        return here
    files = sorted(p for p in path.glob("*/*.hdf5") if p.is_file())
    if not files:
        raise ConfigError(f"path must hold Brain-to-Text files (<session>/data_<split>.hdf5 or data_<split>.hdf5); "
                          f"found no .hdf5 file in {path} or its sub-folders")
    return files


def _split_of(p: Path) -> str:
    m = _FILE.match(p.name)
    return m.group(1) if m else p.stem


def _attr_str(v) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _attr_str(v[()])
    return str(v)


def _attr_int(g, name: str, where: str) -> int:
    if name not in g.attrs:
        raise ValidationError(f"{where}: attribute {name!r} is missing")
    v = np.asarray(g.attrs[name])
    if v.size != 1 or not np.issubdtype(v.dtype, np.integer):
        raise ValidationError(f"{where}: attribute {name!r} must be one integer; got {g.attrs[name]!r}")
    return int(v.reshape(()))


def _int_dataset(g, name: str, where: str) -> np.ndarray:
    d = g[name]
    if not hasattr(d, "dtype") or d.ndim != 1 or not np.issubdtype(d.dtype, np.integer):
        raise ValidationError(f"{where}: {name!r} must be a 1-D integer dataset; got "
                              f"{getattr(d, 'shape', type(d).__name__)}, dtype {getattr(d, 'dtype', None)}")
    return np.asarray(d[()])


def _read_trial(g, where: str, split: str, session_default: str, require_labels: bool):
    if "input_features" not in g:
        raise ValidationError(f"{where}: dataset 'input_features' is missing")
    d = g["input_features"]
    if not hasattr(d, "dtype") or d.ndim != 2 or not np.issubdtype(d.dtype, np.floating):
        raise ValidationError(f"{where}: 'input_features' must be a 2-D float dataset (bins x features); got "
                              f"shape {getattr(d, 'shape', None)}, dtype {getattr(d, 'dtype', None)}")
    x = np.asarray(d[()], dtype=np.float32)
    if "n_time_steps" in g.attrs:
        n = _attr_int(g, "n_time_steps", where)
        if not 0 <= n <= x.shape[0]:
            raise ValidationError(f"{where}: attribute 'n_time_steps' must be in 0..{x.shape[0]} (the rows of "
                                  f"input_features); got {n}")
        x = x[:n]
    session = _attr_str(g.attrs["session"]) if "session" in g.attrs else session_default
    block = _attr_int(g, "block_num", where)
    trial = _attr_int(g, "trial_num", where)
    ids = sentence = None
    if "seq_class_ids" in g:
        padded = _int_dataset(g, "seq_class_ids", where)
        n = _attr_int(g, "seq_len", where)
        if not 0 <= n <= padded.size:
            raise ValidationError(f"{where}: attribute 'seq_len' must be in 0..{padded.size} (the length of "
                                  f"seq_class_ids); got {n}")
        ids = padded[:n]
        if ids.size and (ids.min() < 1 or ids.max() >= N_CLASSES):
            raise ValidationError(f"{where}: 'seq_class_ids' must hold class ids 1..{N_CLASSES - 1} in its first "
                                  f"seq_len={n} entries; got values {int(ids.min())}..{int(ids.max())}")
    elif require_labels:
        raise ValidationError(f"{where}: dataset 'seq_class_ids' is missing (a {split!r} file must be labelled; "
                              f"only test files may lack labels -- pass require_labels=False to read it anyway)")
    if "sentence_label" in g.attrs:
        sentence = _attr_str(g.attrs["sentence_label"])
    elif "transcription" in g:
        codes = _int_dataset(g, "transcription", where)
        end = np.flatnonzero(codes == 0)
        codes = codes[: end[0] if end.size else codes.size]
        if codes.size and (codes.min() < 1 or codes.max() > 127):
            raise ValidationError(f"{where}: 'transcription' must hold ASCII codes 1..127 before its 0 padding; "
                                  f"got values {int(codes.min())}..{int(codes.max())}")
        sentence = "".join(map(chr, codes.tolist()))
    if ids is not None and sentence is None:
        raise ValidationError(f"{where}: labelled trial without its text: neither attribute 'sentence_label' "
                              f"nor dataset 'transcription' is present")
    return x, ids, sentence, session, block, trial


def read_brain_to_text(path: str | os.PathLike, *, splits: Sequence[str] | None = None,
                       sessions: Sequence[str] | None = None,
                       require_labels: bool | None = None) -> SpeechDataset:
    """Read Brain-to-Text HDF5 files into a :class:`SpeechDataset`.

    Parameters
    ----------
    path : path-like
        One ``.hdf5`` file, one session folder (``t15.2023.08.11/``) or the root holding session
        folders (``hdf5_data_final/``).
    splits : sequence of str, optional
        Read only these splits (``"train"``, ``"val"``, ``"test"``); default all files found.
    sessions : sequence of str, optional
        Read only these sessions: session folders of other names are skipped, then trials are kept
        by their ``session`` attribute (the folder name where it is absent); default all.
    require_labels : bool, optional
        Refuse trials without ``seq_class_ids``. Default: required in ``train`` and ``val`` files,
        optional elsewhere (test files carry no labels: their trials get ``phoneme_ids=None``,
        ``sentence=None``).

    Returns
    -------
    SpeechDataset
        Trials in session-date, split, trial-group order. Day indices number *all* sessions under
        ``path`` (their folder names, plus any other ``session`` attribute met) in date order (the
        date ``YYYY.MM.DD`` in the name; names without one sort after, by name), whatever
        ``splits``/``sessions`` select -- so a session keeps its day index whether the train, val or
        test files are read, and ``dataset.sessions`` may list sessions without trials here. For
        the published root this is the order of the baseline's session list (rnn_args.yaml).

    Raises
    ------
    ConfigError
        ``path`` missing or holding no ``.hdf5`` file; a file h5py cannot open; ``h5py`` missing.
    ValidationError
        A missing dataset or attribute, a wrong dtype or shape, labels out of range, trials with
        different feature counts, an odd feature count, or nothing left after the filters.
    """
    try:
        import h5py
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError("reading Brain-to-Text files needs h5py: pip install h5py") from None
    root = Path(path)
    files = _files_of(root)
    folders = {f.parent.name for f in files}  # every session under path numbers the days, whatever is selected
    if splits is not None:
        files = [f for f in files if _split_of(f) in set(splits)]
    if sessions is not None and not root.is_file():
        files = [f for f in files if f.parent.name in set(sessions) or f.parent == root]
    if not files:
        raise ValidationError(f"no file of {root} matches splits={splits!r}, sessions={sessions!r}")
    raw = []
    n_feat = None
    for f in files:
        split = _split_of(f)
        need = split in ("train", "val") if require_labels is None else bool(require_labels)
        try:
            h = h5py.File(f, "r")
        except OSError as exc:
            raise ConfigError(f"{f} is not a readable HDF5 file: {exc}") from None
        with h:
            keys = sorted((k for k in h.keys() if _TRIAL.match(k) and isinstance(h[k], h5py.Group)),
                          key=lambda k: int(_TRIAL.match(k).group(1)))
            if not keys:
                raise ValidationError(f"{f}: no trial_NNNN groups (is this a Brain-to-Text file?)")
            for k in keys:
                x, ids, sentence, session, block, trial = _read_trial(h[k], f"{f}:{k}", split, f.parent.name, need)
                if n_feat is None:
                    n_feat, first = x.shape[1], f"{f}:{k}"
                elif x.shape[1] != n_feat:
                    raise ValidationError(f"{f}:{k}: 'input_features' has {x.shape[1]} features; {first} has {n_feat}")
                raw.append((x, ids, sentence, session, block, trial, split))
    if sessions is not None:
        raw = [r for r in raw if r[3] in set(sessions)]
        if not raw:
            raise ValidationError(f"no trial of {root} belongs to sessions={list(sessions)!r}")
    if n_feat % 2:
        raise ValidationError(f"the layout has threshold crossings then spike-band power per electrode, an even "
                              f"number of features; got {n_feat}")
    order = _session_order(folders | {r[3] for r in raw})
    day = {s: d for d, s in enumerate(order)}
    split_rank = {s: i for i, s in enumerate(SPLITS)}
    raw.sort(key=lambda r: (day[r[3]], split_rank.get(r[6], len(SPLITS)), r[6]))  # stable: file order kept
    trials = tuple(SpeechTrial(x, ids, s, day[sess], sess, b, t, sp) for x, ids, s, sess, b, t, sp in raw)
    return SpeechDataset(trials, feature_names(n_feat // 2), tuple(order), BIN_S, str(root))


def write_brain_to_text(dataset: SpeechDataset, path: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Write ``dataset`` in the Brain-to-Text layout: ``path/<session>/data_<split>.hdf5``.

    Trials of each (session, split) become ``trial_0000``, ``trial_0001``, ... in dataset order,
    with ``input_features`` (float32), and for labelled trials ``seq_class_ids`` and
    ``transcription`` (int32, zero-padded to ``max(PAD_LEN, longest + 1)``), attributes
    ``n_time_steps``, ``seq_len``, ``sentence_label``, ``session``, ``block_num``, ``trial_num``.
    Unlabelled trials get only ``input_features`` and the non-label attributes (as test files).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    ConfigError
        A file exists and ``overwrite`` is false; a session or split that cannot name a folder/file.
    ValidationError
        ``dataset`` is not a SpeechDataset; a sentence that is not ASCII; a labelled trial without
        its sentence.
    """
    import h5py

    if not isinstance(dataset, SpeechDataset):
        raise ValidationError(f"dataset must be a SpeechDataset; got {type(dataset).__name__}")
    root = Path(path)
    groups: dict[tuple[str, str], list[SpeechTrial]] = {}
    for t in dataset.trials:
        groups.setdefault((t.session, t.split), []).append(t)
    for (session, split), trials in groups.items():
        check_name(session, what="session")
        check_name(f"data_{split}.hdf5", what="split")
        for t in trials:
            if t.labelled and t.sentence is None:
                raise ValidationError(f"a labelled trial needs its sentence (session {session}, block {t.block}, "
                                      f"trial {t.trial})")
            if t.sentence is not None and not t.sentence.isascii():
                raise ValidationError(f"sentence must be ASCII (the layout stores character codes); got {t.sentence!r}")
        target = root / session / f"data_{split}.hdf5"
        if target.exists() and not overwrite:
            raise ConfigError(f"{target} exists; pass overwrite=True to replace it")
    written = []
    for (session, split), trials in groups.items():
        target = root / session / f"data_{split}.hdf5"
        target.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(target, "w") as h:
            for i, t in enumerate(trials):
                g = h.create_group(f"trial_{i:04d}")
                g.create_dataset("input_features", data=t.features.astype(np.float32))
                g.attrs["n_time_steps"] = np.int64(t.n_bins)
                if t.labelled:
                    ids = t.phoneme_ids
                    codes = np.frombuffer(t.sentence.encode("ascii"), dtype=np.uint8).astype(np.int32)
                    n_pad = max(PAD_LEN, ids.size + 1, codes.size + 1)
                    g.create_dataset("seq_class_ids", data=np.pad(ids.astype(np.int32), (0, n_pad - ids.size)))
                    g.create_dataset("transcription", data=np.pad(codes, (0, n_pad - codes.size)))
                    g.attrs["seq_len"] = np.int64(ids.size)
                    g.attrs["sentence_label"] = t.sentence
                g.attrs["session"] = session
                g.attrs["block_num"] = np.int64(t.block)
                g.attrs["trial_num"] = np.int64(t.trial)
        written.append(target)
    return written
