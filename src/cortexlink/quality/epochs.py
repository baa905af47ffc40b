"""Trials of a data set: which events are trials, how files group into tasks, event-locked windows.

The label checks (``checks_labels``) and the baseline decoder (``fitness``) work per
(subject, task) group on epochs cut around the trial events. Only the trial windows are read
(through :meth:`Recording.read`), so memory grows with the number of trials, never with the
length of the recordings.

Intended-use keys used here (all optional):

``classes``
    Labels that are trials. Default: every label with at least :data:`MIN_EVENTS_FOR_CLASS`
    events in the data set, except the rest labels.
``rest_labels``
    Labels that are rest / baseline, never trials. Default: :data:`DEFAULT_REST_LABELS`.
``tasks``
    ``{task name: [glob patterns of recording names]}``. Default: all files of a subject are
    one task. With ``tasks``, a recording that matches no pattern takes part in no group.
``window_s``
    ``[start, stop]`` of the analysis window in seconds after each event's onset
    (default :data:`DEFAULT_WINDOW_S`).
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.quality.model import DatasetContext, Recording

__all__ = ["DEFAULT_WINDOW_S", "DEFAULT_REST_LABELS", "MIN_EVENTS_FOR_CLASS", "trial_labels", "window_of",
           "task_of", "groups", "extract_epochs", "bandpass_epochs", "trial_covariances", "group_epochs"]

#: Analysis window after event onset (motor imagery: 0.5-2.5 s after the cue).
DEFAULT_WINDOW_S: tuple[float, float] = (0.5, 2.5)
#: Labels treated as rest when the intended use names none (EEGMMIDB's T0 and common spellings).
DEFAULT_REST_LABELS: tuple[str, ...] = ("T0", "rest", "Rest", "REST", "baseline", "Baseline")
#: A label needs this many events in the data set to count as a class when none are named.
MIN_EVENTS_FOR_CLASS = 10
#: Channel types used as EEG signal for epochs (never stim / misc / ecg).
SIGNAL_TYPES = ("eeg",)


def trial_labels(recordings: list[Recording], intended_use: dict[str, Any] | None = None) -> list[str]:
    """The labels that are trials, sorted.

    ``intended_use["classes"]`` when given; otherwise every label with at least
    :data:`MIN_EVENTS_FOR_CLASS` events over all recordings, rest labels excluded.
    """
    iu = intended_use or {}
    classes = iu.get("classes")
    if classes is not None:
        if isinstance(classes, str) or not all(isinstance(c, (str, int)) for c in classes):
            raise ConfigError(f"intended use 'classes' must be a list of labels, got {classes!r}")
        return sorted(str(c) for c in classes)
    rest = {str(r) for r in iu.get("rest_labels", DEFAULT_REST_LABELS)}
    counts = Counter(e.label for r in recordings for e in r.events)
    return sorted(lab for lab, n in counts.items() if n >= MIN_EVENTS_FOR_CLASS and lab not in rest)


def window_of(intended_use: dict[str, Any] | None) -> tuple[float, float]:
    """The analysis window (seconds after onset) from the intended use, validated."""
    w = (intended_use or {}).get("window_s", DEFAULT_WINDOW_S)
    try:
        w0, w1 = (float(w[0]), float(w[1]))
    except (TypeError, ValueError, IndexError, KeyError):
        raise ConfigError(f"intended use 'window_s' must be [start_s, stop_s], got {w!r}") from None
    if not (np.isfinite(w0) and np.isfinite(w1) and w1 > w0):
        raise ConfigError(f"intended use 'window_s' must have stop_s > start_s, got {w!r}")
    return w0, w1


def task_of(rec: Recording, intended_use: dict[str, Any] | None = None) -> str | None:
    """The task a recording belongs to: the first ``tasks`` entry with a matching glob.

    Without ``tasks`` every recording is task ``"all"``; with ``tasks``, ``None`` for a
    recording no pattern matches. Patterns are matched against the recording's name (its path
    relative to the data-set root) and against its base name.
    """
    tasks = (intended_use or {}).get("tasks")
    if not tasks:
        return "all"
    if not isinstance(tasks, dict):
        raise ConfigError(f"intended use 'tasks' must map task names to lists of glob patterns, got {tasks!r}")
    base = PurePosixPath(rec.name).name
    for task, patterns in tasks.items():
        pats = [patterns] if isinstance(patterns, str) else list(patterns or [])
        if any(fnmatch.fnmatchcase(rec.name, str(p)) or fnmatch.fnmatchcase(base, str(p)) for p in pats):
            return str(task)
    return None


def groups(ctx: DatasetContext) -> dict[tuple[str, str], list[Recording]]:
    """EEG recordings with samples and events, grouped by (subject, task), in name order.

    A recording without a declared subject is grouped under subject ``"?"``.
    """
    out: dict[tuple[str, str], list[Recording]] = {}
    for rec in sorted(ctx.recordings, key=lambda r: r.name):
        if rec.kind != "eeg" or rec.reader is None or not rec.fs_hz or not rec.events:
            continue
        task = task_of(rec, ctx.intended_use)
        if task is None:
            continue
        out.setdefault((rec.subject or "?", task), []).append(rec)
    return out


def _signal_channels(rec: Recording) -> np.ndarray:
    idx = [i for i, t in enumerate(rec.channel_types) if t in SIGNAL_TYPES]
    return np.asarray(idx, dtype=int)


def extract_epochs(rec: Recording, labels: list[str] | set[str] | tuple[str, ...],
                   window_s: tuple[float, float] = DEFAULT_WINDOW_S, *, band_hz: tuple[float, float] | None = None,
                   margin_s: float = 1.0) -> dict[str, Any]:
    """Event-locked windows of the trials of one recording (EEG channels only).

    Only the trial windows are read (one :meth:`Recording.read` per trial). Trials whose
    window does not lie wholly inside the recording are left out (``event_bounds`` reports
    them) and counted in ``n_dropped``.

    Parameters
    ----------
    rec : Recording
        An EEG recording with samples.
    labels : collection of str
        The labels that are trials.
    window_s : (start_s, stop_s)
        Window relative to each event's onset.
    band_hz : (low_hz, high_hz) or None
        When given, each window is band-passed (4th-order Butterworth, zero phase) on a
        window read ``margin_s`` wider on each side, then cropped, so the filter's edge
        transients fall outside the kept window.
    margin_s : float
        The extra seconds read on each side for filtering (clipped at the recording's ends).

    Returns
    -------
    dict
        ``X`` (n_trials × n_eeg_channels × n_samples, float32, µV), ``y`` (labels, array of
        str), ``onsets_s`` (float array), ``file`` (the recording's name), ``channels``
        (names), ``fs_hz``, ``window_s``, ``n_dropped``.
    """
    if rec.reader is None or not rec.fs_hz:
        raise ConfigError(f"{rec.name}: extract_epochs needs a recording with samples and a sampling rate")
    w0, w1 = float(window_s[0]), float(window_s[1])
    if not w1 > w0:
        raise ConfigError(f"window_s must have stop_s > start_s, got {window_s!r}")
    fs = float(rec.fs_hz)
    chans = _signal_channels(rec)
    n_win = int(round((w1 - w0) * fs))
    sos = None
    if band_hz is not None:
        lo, hi = float(band_hz[0]), float(band_hz[1])
        if not 0 < lo < hi < fs / 2:
            raise ConfigError(f"band_hz must satisfy 0 < low < high < fs/2 = {fs / 2:g}, got {band_hz!r}")
        import scipy.signal

        sos = scipy.signal.butter(4, [lo, hi], btype="bandpass", fs=fs, output="sos")
    m = int(round(max(0.0, margin_s) * fs)) if sos is not None else 0
    labset = {str(x) for x in labels}
    X, y, onsets = [], [], []
    n_dropped = 0
    for ev in rec.events:
        if ev.label not in labset:
            continue
        a = int(round((ev.onset_s + w0) * fs))
        b = a + n_win
        if a < 0 or b > rec.n_samples or n_win <= 0 or len(chans) == 0:
            n_dropped += 1
            continue
        ra, rb = max(0, a - m), min(rec.n_samples, b + m)
        seg = np.asarray(rec.read(ra, rb), dtype=np.float64)[chans]
        if seg.shape[1] != rb - ra or not np.all(np.isfinite(seg)):
            n_dropped += 1
            continue
        if sos is not None:
            import scipy.signal

            seg = scipy.signal.sosfiltfilt(sos, seg, axis=-1)
        X.append(seg[:, a - ra:a - ra + n_win].astype(np.float32))
        y.append(ev.label)
        onsets.append(ev.onset_s)
    shape = (0, len(chans), max(n_win, 0))
    return {"X": np.stack(X) if X else np.zeros(shape, dtype=np.float32), "y": np.asarray(y, dtype=str),
            "onsets_s": np.asarray(onsets, dtype=float), "file": rec.name,
            "channels": [rec.channel_names[i] for i in chans], "fs_hz": fs, "window_s": (w0, w1),
            "n_dropped": n_dropped}


def trial_covariances(X: np.ndarray) -> np.ndarray:
    """Per-trial spatial covariance (trials × channels × channels) of epochs (trials × channels × samples)."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=2, keepdims=True)
    return np.einsum("ncs,nds->ncd", Xc, Xc, optimize=True) / max(X.shape[2] - 1, 1)


def bandpass_epochs(rec: Recording, labels: list[str], window_s: tuple[float, float],
                    band_hz: tuple[float, float] = (7.0, 30.0)) -> dict[str, Any]:
    """:func:`extract_epochs` band-passed (default 7-30 Hz: mu and beta rhythms for motor imagery)."""
    return extract_epochs(rec, labels, window_s, band_hz=band_hz, margin_s=1.0)


def group_epochs(ctx: DatasetContext, band_hz: tuple[float, float] = (7.0, 30.0)) -> dict[tuple[str, str], dict]:
    """Band-passed epochs of every (subject, task) group, stacked, computed once per context.

    Returns ``{(subject, task): {"C" (trial covariances, trials × ch × ch: all the decoders
    need, so the samples are not kept), "y", "file" (per trial), "onsets_s", "files" (names in
    the group), "channels_ok" (whether every file has the same EEG channels and rate)}}``.
    Groups whose files disagree on EEG channels or sampling rate hold ``C = None`` (the
    consistency checks report why). The result is cached on the context object.
    """
    cache = ctx.__dict__.setdefault("_quality_epoch_cache", {})
    key = (tuple(band_hz), id(ctx.intended_use), len(ctx.recordings))
    if key in cache:
        return cache[key]
    labels = trial_labels(ctx.recordings, ctx.intended_use)
    window = window_of(ctx.intended_use)
    out: dict[tuple[str, str], dict] = {}
    for gkey, recs in groups(ctx).items():
        eps = [bandpass_epochs(r, labels, window, band_hz) for r in recs if r.fs_hz and r.fs_hz / 2 > band_hz[1]]
        eps = [e for e in eps if len(e["y"])]
        shapes = {(tuple(e["channels"]), e["fs_hz"], e["X"].shape[2]) for e in eps}
        ok = len(shapes) == 1
        g: dict[str, Any] = {"files": [e["file"] for e in eps], "channels_ok": ok, "labels": labels,
                             "window_s": window}
        if eps and ok:
            g["C"] = np.concatenate([trial_covariances(e["X"]) for e in eps])
            g["y"] = np.concatenate([e["y"] for e in eps])
            g["file"] = np.concatenate([np.full(len(e["y"]), e["file"], dtype=object) for e in eps])
            g["onsets_s"] = np.concatenate([e["onsets_s"] for e in eps])
        else:
            g["C"] = g["y"] = g["file"] = g["onsets_s"] = None
        out[gkey] = g
    cache[key] = out
    return out
