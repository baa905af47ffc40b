"""Loaders for real recordings used to evaluate decoders.

``monkey_m1_center_out`` (Miller lab via KordingLab/DAD, Dyer et al. 2017): binned spike
counts from monkey primary motor cortex during 8-target centre-out reaching, with 2-D
hand velocity and the target id of each bin. **Its authors name the splits the other
way round**: ``Yte``/``Xte``/``Tte`` are the *training* split and ``Ytr``/``Xtr``/``Ttr``
the *test* split; in their files ``Y`` holds the neural data and ``X`` the kinematics.
:func:`load_monkey_m1` returns them under unambiguous names.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from cortexlink.core.errors import ValidationError

logger = logging.getLogger(__name__)

__all__ = ["MonkeyM1Session", "load_monkey_m1", "MONKEY_M1_FILES"]

MONKEY_M1_FILES = ("chewie_demo.mat", "mihi_demo.mat")


@dataclasses.dataclass(frozen=True, eq=False)
class MonkeyM1Session:
    """One monkey's centre-out session, split as its authors split it.

    Attributes
    ----------
    name : str
        ``"chewie"`` or ``"mihi"``.
    X_train, X_test : ndarray (n_bins, n_units), float64
        Binned spike counts (features) of the training and test splits.
    y_train, y_test : ndarray (n_bins, 2), float64
        Hand velocity (vx, vy).
    target_train, target_test : ndarray (n_bins,), int64
        Target id of each bin.
    feature_names_train, feature_names_test : tuple of str
        ``"unitNNN/count"``; the two splits may hold different unit counts (Mihi's
        test split was sorted separately: 187 vs 174 units), see ``same_units``.
    source : str
        File the session was read from.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    target_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    target_test: np.ndarray
    feature_names_train: tuple[str, ...]
    feature_names_test: tuple[str, ...]
    source: str

    @property
    def same_units(self) -> bool:
        """Whether the train and test splits have the same units (columns)."""
        return self.X_train.shape[1] == self.X_test.shape[1]

    def blocked_split(self, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(X_tr, y_tr, X_te, y_te)`` from the training split alone, time-ordered.

        For sessions whose test split has other units (``same_units`` False).
        """
        n = self.X_train.shape[0]
        n_test = int(round(n * test_fraction))
        return (self.X_train[:n - n_test], self.y_train[:n - n_test],
                self.X_train[n - n_test:], self.y_train[n - n_test:])


def _load_one(path: Path) -> MonkeyM1Session:
    import scipy.io

    try:
        d = scipy.io.loadmat(str(path))
    except (OSError, ValueError) as exc:
        raise ValidationError(f"{path} is not a readable MATLAB file: {exc}") from exc
    missing = [k for k in ("Xte", "Yte", "Tte", "Xtr", "Ytr", "Ttr") if k not in d]
    if missing:
        raise ValidationError(f"{path} lacks {missing}; expected a DAD centre-out demo file")
    # their naming: Y = neural, X = kinematics; *te = TRAINING split, *tr = TEST split
    X_train = np.asarray(d["Yte"], dtype=np.float64)
    y_train = np.asarray(d["Xte"], dtype=np.float64)
    X_test = np.asarray(d["Ytr"], dtype=np.float64)
    y_test = np.asarray(d["Xtr"], dtype=np.float64)
    for nm, a, b in (("train", X_train, y_train), ("test", X_test, y_test)):
        if a.shape[0] != b.shape[0] or b.shape[1] != 2:
            raise ValidationError(f"{path}: {nm} split has {a.shape[0]} neural bins and kinematics of "
                                  f"shape {b.shape}; expected the same bin count and 2 velocity columns")
    name = path.stem.replace("_demo", "")
    if X_train.shape[1] != X_test.shape[1]:
        logger.info("%s: train split has %d units, test split %d (sorted separately)", name,
                    X_train.shape[1], X_test.shape[1])
    return MonkeyM1Session(
        name=name, X_train=X_train, y_train=y_train,
        target_train=np.asarray(d["Tte"]).ravel().astype(np.int64),
        X_test=X_test, y_test=y_test, target_test=np.asarray(d["Ttr"]).ravel().astype(np.int64),
        feature_names_train=tuple(f"unit{i:03d}/count" for i in range(X_train.shape[1])),
        feature_names_test=tuple(f"unit{i:03d}/count" for i in range(X_test.shape[1])),
        source=str(path))


def load_monkey_m1(path: str | os.PathLike) -> dict[str, MonkeyM1Session] | MonkeyM1Session:
    """Load the monkey M1 centre-out data.

    Parameters
    ----------
    path : path-like
        The ``monkey_m1_center_out`` folder (returns every session in it) or one
        ``*_demo.mat`` file (returns that session).

    Returns
    -------
    dict of name -> MonkeyM1Session, or MonkeyM1Session
        With ``X_train/y_train`` taken from the files' ``Yte/Xte`` (their training split)
        and ``X_test/y_test`` from ``Ytr/Xtr`` (their test split).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or the folder holds no ``*_demo.mat`` file.
    ValidationError
        A file does not have the expected variables.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"monkey M1 data not found at {p}")
    if p.is_file():
        return _load_one(p)
    files = [p / f for f in MONKEY_M1_FILES if (p / f).is_file()]
    files += sorted(f for f in p.glob("*_demo.mat") if f not in files)
    if not files:
        raise FileNotFoundError(f"no *_demo.mat files in {p}")
    return {s.name: s for s in (_load_one(f) for f in files)}
