"""Accuracy of the labels: events outside the recording, overlapping or implausibly timed trials, and
trials whose label the signal contradicts.

Checks (characteristic ``accuracy``):

``event_bounds``
    An event starting before 0 or after the end of its recording, or ending past the end: an
    error per event, with the file and its start.
``event_overlap``
    Trials of one file overlapping each other: two trials at the same onset are an error (one
    of the labels is wrong), a partial overlap a warning.
``event_timing``
    Negative trial durations (error); zero durations among trials that otherwise have
    durations (warning; a file whose trials are all zero-length markers is a convention, not an
    error); EEG trials shorter than the analysis window (warning: the window reads past the
    trial; implant trials are decoded bin by bin, not epoched, so their length is free);
    a trial starting less than a quarter of the file's typical inter-trial interval after the
    previous one (warning).
``label_disagreement``
    Per (subject, task) group, each file's trials are predicted by the baseline classifier
    (band-pass 7-30 Hz, CSP + LDA, see :mod:`cortexlink.quality.fitness`) trained on the
    *other* files of the group: out-of-file predictions, so a file's own wrong labels never
    teach the classifier to agree with them. A trial whose label the classifier gives a
    probability below :data:`CONFIDENT_Q` (it is at least 80 % sure of another class) is a
    confident disagreement, listed as an info finding. Per file, the count of confident
    disagreements is tested (one-sided binomial) against the rate in the other files of the
    group, ``(k + 0.5) / (n + 1)``, judged by models that left out this file's suspect trials
    (so one file's wrong labels do not inflate the rate it is compared with). A file with at
    least 10 percentage points more disagreements than expected is an error at ``p < 0.05``,
    a warning at ``p < 0.10`` -- but only where the classifier agrees with at least 85 % of the
    other files' labels (:data:`MIN_REFERENCE_ACCURACY`) and the other files hold at least 10
    trials of each class to train on (:data:`MIN_TRAIN_PER_CLASS`): a weaker classifier cannot
    tell wrong labels from its own errors (two runs of 15 trials, each judged by CSP + LDA
    trained on the other's 7 or 8 trials per class, gave a false error), and the group gets
    an info finding saying so. The
    p-values are not corrected over files (``p_holm`` is in the metrics): a file has only tens
    of trials, and with 15 trials per file a Holm correction over three files hides a file
    with 3 flipped labels. A group of one file is predicted by stratified cross-validation
    within the file and gets no per-file test.

    Measured on EEGMMIDB subject 1, runs 6, 10, 14 (15 trials each): clean, no file flagged
    (1 of 45 trials a confident disagreement); 3 of one file's 15 labels flipped at random,
    30 draws: the file is an error in 24, the other files never flagged (the 6 misses are
    draws where a flip lands on a trial the classifier already gets wrong, leaving 2 visible).
    All 12 runs 3-14 as one group (four different tasks sharing T1/T2): the classifier agrees
    with 73-78 % of the other files' labels, so no file is judged.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from cortexlink.quality.epochs import group_epochs, trial_labels, window_of
from cortexlink.quality.model import CheckResult, DatasetContext, Finding, Recording

__all__ = ["event_bounds", "event_overlap", "event_timing", "label_disagreement", "CHECKS", "CONFIDENT_Q"]

#: A trial is a confident disagreement when the classifier gives its label a probability below this.
CONFIDENT_Q = 0.2
#: Per-file binomial p-value below which a file's disagreements are an error / a warning.
P_ERROR, P_WARNING = 0.05, 0.10
#: Files are judged only where the classifier agrees with at least this fraction of the other files' labels.
MIN_REFERENCE_ACCURACY = 0.85
#: ... and only where the other files hold at least this many trials of each class to train on.
MIN_TRAIN_PER_CLASS = 10
#: ... and only if the file's disagreement rate exceeds the expected rate by at least this much.
MIN_EXCESS = 0.10
#: At most this many findings of one kind per file (the rest are counted in one summary finding).
MAX_FINDINGS_PER_FILE = 50


def _tol_s(rec: Recording) -> float:
    return max(1e-3, 1.0 / rec.fs_hz) if rec.fs_hz else 1e-3


def _capped(findings: list[Finding], check: str, rec: Recording, what: str) -> list[Finding]:
    if len(findings) <= MAX_FINDINGS_PER_FILE:
        return findings
    rest = len(findings) - MAX_FINDINGS_PER_FILE
    worst = max(findings, key=lambda f: ("info", "warning", "error", "critical").index(f.severity)).severity
    return findings[:MAX_FINDINGS_PER_FILE] + [Finding(check, "accuracy", worst, f"... and {rest} more {what}",
                                                       file=rec.name)]


# -------------------------------------------------------------------------------------- event_bounds
def event_bounds(ctx: DatasetContext) -> list[CheckResult]:
    """Events outside their recording (error per event, with file and start)."""
    findings: list[Finding] = []
    n_events = n_bad = 0
    for rec in ctx.recordings:
        dur = rec.duration_s
        if not rec.events or dur <= 0:
            continue
        tol = _tol_s(rec)
        ff: list[Finding] = []
        for ev in rec.events:
            n_events += 1
            end = ev.onset_s + max(ev.duration_s, 0.0)
            why = None
            if ev.onset_s < -tol:
                why = f"starts {-ev.onset_s:.3f} s before the recording"
            elif ev.onset_s > dur + tol:
                why = f"starts at {ev.onset_s:.3f} s, after the recording's end at {dur:.3f} s"
            elif end > dur + tol:
                why = f"ends at {end:.3f} s, {end - dur:.3f} s after the recording's end at {dur:.3f} s"
            if why:
                n_bad += 1
                ff.append(Finding("event_bounds", "accuracy", "error", f"event {ev.label!r} {why}",
                                  file=rec.name, start_s=ev.onset_s))
        findings += _capped(ff, "event_bounds", rec, "events outside the recording")
    if not n_events:
        return [CheckResult("event_bounds", "accuracy", None, [], {"n_events": 0}, "no events")]
    return [CheckResult("event_bounds", "accuracy", 1.0 - n_bad / n_events, findings,
                        {"n_events": n_events, "n_outside": n_bad},
                        f"{n_bad} of {n_events} events outside their recording")]


# ------------------------------------------------------------------------------------- event_overlap
def _trials(rec: Recording, labels: set[str]) -> list:
    return sorted((e for e in rec.events if e.label in labels), key=lambda e: e.onset_s)


def event_overlap(ctx: DatasetContext) -> list[CheckResult]:
    """Trials of one file overlapping each other."""
    labels = set(trial_labels(ctx.recordings, ctx.intended_use))
    findings: list[Finding] = []
    n_trials = n_bad = 0
    for rec in ctx.recordings:
        trials = _trials(rec, labels)
        n_trials += len(trials)
        tol = _tol_s(rec)
        ff: list[Finding] = []
        for prev, ev in zip(trials, trials[1:]):
            if abs(ev.onset_s - prev.onset_s) <= tol:
                n_bad += 1
                ff.append(Finding("event_overlap", "accuracy", "error",
                                  f"two trials at the same time: {prev.label!r} and {ev.label!r} at "
                                  f"{ev.onset_s:.3f} s (at most one label can be right)",
                                  file=rec.name, start_s=ev.onset_s))
            elif ev.onset_s < prev.onset_s + max(prev.duration_s, 0.0) - tol:
                n_bad += 1
                ff.append(Finding("event_overlap", "accuracy", "warning",
                                  f"trial {ev.label!r} at {ev.onset_s:.3f} s starts "
                                  f"{prev.onset_s + prev.duration_s - ev.onset_s:.3f} s before trial "
                                  f"{prev.label!r} (at {prev.onset_s:.3f} s) ends", file=rec.name, start_s=ev.onset_s))
        findings += _capped(ff, "event_overlap", rec, "overlapping trials")
    if not n_trials:
        return [CheckResult("event_overlap", "accuracy", None, [], {"n_trials": 0}, "no trials")]
    return [CheckResult("event_overlap", "accuracy", 1.0 - n_bad / n_trials, findings,
                        {"n_trials": n_trials, "n_overlapping": n_bad},
                        f"{n_bad} of {n_trials} trials overlap another")]


# -------------------------------------------------------------------------------------- event_timing
def event_timing(ctx: DatasetContext) -> list[CheckResult]:
    """Implausible trial durations and inter-trial intervals (see the module doc)."""
    labels = set(trial_labels(ctx.recordings, ctx.intended_use))
    w_end = window_of(ctx.intended_use)[1]
    findings: list[Finding] = []
    n_trials = 0
    bad: set[tuple[str, float]] = set()
    iti_by_file: dict[str, float] = {}
    for rec in ctx.recordings:
        trials = _trials(rec, labels)
        if not trials:
            continue
        n_trials += len(trials)
        ff: list[Finding] = []
        durs = np.array([e.duration_s for e in trials])
        has_durations = bool(np.any(durs > 0))
        for ev in trials:
            if ev.duration_s < 0:
                ff.append(Finding("event_timing", "accuracy", "error",
                                  f"trial {ev.label!r} has a negative duration ({ev.duration_s:.3f} s)",
                                  file=rec.name, start_s=ev.onset_s))
            elif ev.duration_s == 0 and has_durations:
                ff.append(Finding("event_timing", "accuracy", "warning",
                                  f"trial {ev.label!r} has zero duration while the file's other trials last "
                                  f"{float(np.median(durs[durs > 0])):.3f} s (median)", file=rec.name,
                                  start_s=ev.onset_s))
            elif 0 < ev.duration_s < w_end and rec.kind == "eeg":     # implant trials are not epoched
                ff.append(Finding("event_timing", "accuracy", "warning",
                                  f"trial {ev.label!r} lasts {ev.duration_s:.3f} s, shorter than the analysis "
                                  f"window (up to {w_end:g} s after onset): the window reads past the trial",
                                  file=rec.name, start_s=ev.onset_s))
        onsets = np.array([e.onset_s for e in trials])
        iti = np.diff(onsets)
        if len(iti) >= 4:
            typical = float(np.median(iti))
            iti_by_file[rec.name] = typical
            for ev, d in zip(trials[1:], iti):
                if typical > 0 and 0 < d < 0.25 * typical:
                    ff.append(Finding("event_timing", "accuracy", "warning",
                                      f"trial {ev.label!r} starts {d:.3f} s after the previous trial; the "
                                      f"file's typical interval is {typical:.3f} s", file=rec.name,
                                      start_s=ev.onset_s))
        bad |= {(f.file or "", f.start_s or 0.0) for f in ff}
        findings += _capped(ff, "event_timing", rec, "implausibly timed trials")
    if not n_trials:
        return [CheckResult("event_timing", "accuracy", None, [], {"n_trials": 0}, "no trials")]
    return [CheckResult("event_timing", "accuracy", 1.0 - len(bad) / n_trials, findings,
                        {"n_trials": n_trials, "n_implausible": len(bad), "typical_iti_s": iti_by_file},
                        f"{len(bad)} of {n_trials} trials implausibly timed")]


# -------------------------------------------------------------------------------- label_disagreement
def _label_probability(model: Any, C: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probability the fitted model gives each trial's own label, and its predicted label."""
    P = model.predict_proba(C)
    cls = list(model.classes_)
    q = np.array([P[i, cls.index(lab)] if lab in cls else np.nan for i, lab in enumerate(y)])   # NaN: not learned
    return q, np.asarray(model.classes_)[np.argmax(P, axis=1)]


def _fit_predict(C: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from cortexlink.quality.fitness import make_csp_lda

    model = make_csp_lda().fit(C[train], y[train])
    return _label_probability(model, C[test], y[test])


def out_of_file_predictions(C: np.ndarray, y: np.ndarray, files: np.ndarray,
                            seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Each trial's label probability and predicted label from a model that never saw its file.

    With one file (or when leaving a file out leaves fewer than two classes to train on), the
    file's trials are predicted by stratified cross-validation within the group instead. Returns
    ``(q, predicted, scheme)`` with ``scheme`` ``"leave-one-file-out"`` or ``"k-fold"``.
    """
    from sklearn.model_selection import StratifiedKFold

    from cortexlink.quality.fitness import N_FOLDS

    q = np.full(len(y), np.nan)
    pred = np.empty(len(y), dtype=object)
    uniq = list(dict.fromkeys(files))
    lofo = len(uniq) >= 2 and all(len(np.unique(y[files != f])) >= 2 for f in uniq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if lofo:
            for f in uniq:
                te = files == f
                q[te], pred[te] = _fit_predict(C, y, ~te, te)
            return q, pred, "leave-one-file-out"
        _, counts = np.unique(y, return_counts=True)
        k = int(min(N_FOLDS, counts.min()))
        for tr, te in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(C, y):
            q[te], pred[te] = _fit_predict(C, y, tr, te)
    return q, pred, "k-fold"


def reference_disagreement(C: np.ndarray, y: np.ndarray, files: np.ndarray, suspect: np.ndarray,
                           f: Any) -> tuple[int, int, int]:
    """Disagreements in the files other than ``f``, judged by models that did not learn ``f``'s suspect trials.

    For each other file ``g``: a model trained on every file but ``g``, leaving out the trials
    of ``f`` that were confident disagreements (``suspect``), predicts ``g``. So a file with
    wrong labels does not spoil the classifier that sets its own expected rate. Returns
    ``(n_confident_disagreements, n_disagreements, n_trials)`` over the other files.
    """
    k_conf = k_any = n = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for g in dict.fromkeys(files):
            if g == f:
                continue
            te = files == g
            tr = ~te & ~((files == f) & suspect)
            if len(np.unique(y[tr])) < 2:
                continue
            q, _ = _fit_predict(C, y, tr, te)
            k_conf += int(np.sum(q < CONFIDENT_Q))
            k_any += int(np.sum(q < 0.5))
            n += int(np.isfinite(q).sum())
    return k_conf, k_any, n


def _holm(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p)
    m = len(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def file_disagreement_tests(C: np.ndarray, y: np.ndarray, files: np.ndarray, q: np.ndarray) -> list[dict[str, Any]]:
    """Per file: its confident-disagreement count against the rate in the group's other files.

    Returns one dict per file (in order of first appearance) with ``file``, ``n_trials``,
    ``n_disagree``, ``rate``, ``expected_rate`` (``(k + 0.5) / (n + 1)`` over the other files,
    see :func:`reference_disagreement`), ``reference_accuracy`` (the classifier's agreement
    with the other files' labels), ``p_value`` (one-sided binomial) and ``p_holm``
    (Holm-corrected over the group's files).
    """
    from scipy.stats import binom

    suspect = q < CONFIDENT_Q                       # NaN (a label the model never learned): not judged
    rows = []
    for f in dict.fromkeys(files):
        m = files == f
        k, n = int(suspect[m].sum()), int(np.isfinite(q[m]).sum())
        k_ref, k_any, n_ref = reference_disagreement(C, y, files, suspect, f)
        p0 = (k_ref + 0.5) / (n_ref + 1.0)
        _, train_counts = np.unique(y[~m], return_counts=True)
        rows.append({"file": str(f), "n_trials": n, "n_disagree": k, "rate": k / n if n else 0.0,
                     "min_train_per_class": int(train_counts.min()) if len(train_counts) else 0,
                     "expected_rate": p0, "reference_accuracy": 1.0 - k_any / n_ref if n_ref else 0.0,
                     "p_value": float(binom.sf(k - 1, n, p0)) if k > 0 and n > 0 else 1.0})
    adj = _holm(np.array([r["p_value"] for r in rows])) if rows else []
    for r, a in zip(rows, adj):
        r["p_holm"] = float(a)
    return rows


def file_severity(row: dict[str, Any]) -> str | None:
    """The severity of a file's disagreement test (``None``: no finding). See the module doc."""
    excess = row["rate"] - row["expected_rate"]
    if (excess < MIN_EXCESS or row["reference_accuracy"] < MIN_REFERENCE_ACCURACY
            or row["min_train_per_class"] < MIN_TRAIN_PER_CLASS):
        return None
    if row["p_value"] < P_ERROR:
        return "error"
    if row["p_value"] < P_WARNING:
        return "warning"
    return None


def label_disagreement(ctx: DatasetContext) -> list[CheckResult]:
    """Trials and files whose labels the cross-validated classifier contradicts (see the module doc)."""
    from cortexlink.quality.fitness import single_threaded_blas

    with single_threaded_blas():
        return _label_disagreement(ctx)


def _label_disagreement(ctx: DatasetContext) -> list[CheckResult]:
    findings: list[Finding] = []
    per_group: dict[str, Any] = {}
    n_assessed = n_disagree = 0
    for (subject, task), g in group_epochs(ctx).items():
        if g["C"] is None or len(np.unique(g["y"])) < 2 or np.unique(g["y"], return_counts=True)[1].min() < 2:
            continue
        gname = f"{subject}/{task}"
        C, y, files, onsets = g["C"], g["y"], g["file"], g["onsets_s"]
        q, pred, scheme = out_of_file_predictions(C, y, files)
        dis = q < CONFIDENT_Q
        n_assessed += int(np.isfinite(q).sum())
        n_disagree += int(dis.sum())
        for i in np.flatnonzero(dis):
            findings.append(Finding(
                "label_disagreement", "accuracy", "info",
                f"trial labelled {str(y[i])!r}: the classifier trained on the group's other "
                f"{'files' if scheme == 'leave-one-file-out' else 'trials'} gives that label probability "
                f"{q[i]:.2f} and predicts {str(pred[i])!r}", file=str(files[i]), start_s=float(onsets[i])))
        rows = file_disagreement_tests(C, y, files, q) if scheme == "leave-one-file-out" else []
        for r in rows:
            sev = r["severity"] = file_severity(r)
            if sev:
                findings.append(Finding(
                    "label_disagreement", "accuracy", sev,
                    f"{r['n_disagree']} of {r['n_trials']} trials ({100 * r['rate']:.0f} %) have labels the "
                    f"signal contradicts (classifier trained on the other files of {gname}), against "
                    f"{100 * r['expected_rate']:.1f} % in those files (one-sided binomial p = {r['p_value']:.2g}; "
                    f"Holm-corrected over the group's {len(rows)} files: {r['p_holm']:.2g}): check this "
                    f"file's labels", file=r["file"]))
        if rows and not any(r["min_train_per_class"] >= MIN_TRAIN_PER_CLASS for r in rows):
            findings.append(Finding(
                "label_disagreement", "accuracy", "info",
                f"group {gname}: the other files hold fewer than {MIN_TRAIN_PER_CLASS} trials of some class to "
                f"train on, too few to judge any file's labels (trials are listed, files are not judged)"))
        elif rows and not any(r["reference_accuracy"] >= MIN_REFERENCE_ACCURACY for r in rows):
            findings.append(Finding(
                "label_disagreement", "accuracy", "info",
                f"group {gname}: the classifier trained on other files agrees with only "
                f"{100 * max(r['reference_accuracy'] for r in rows):.0f} % of their labels (at best), too few to "
                f"judge any file's labels (are several tasks with the same labels in one group? name them "
                f"under 'tasks' in the intended use)"))
        per_group[gname] = {"scheme": scheme, "n_trials": int(len(y)), "n_disagree": int(dis.sum()),
                            "accuracy_out_of_file": float(np.mean((pred == y)[np.isfinite(q)])) if np.isfinite(q).any() else None, "files": rows}
    if not n_assessed:
        return [CheckResult("label_disagreement", "accuracy", None, findings, {"groups": {}},
                            "no group with trials of two classes: labels not assessed against the signal")]
    return [CheckResult("label_disagreement", "accuracy", 1.0 - n_disagree / n_assessed, findings,
                        {"groups": per_group, "confident_q": CONFIDENT_Q},
                        f"{n_disagree} of {n_assessed} trials have labels the signal contradicts")]


CHECKS = [event_bounds, event_overlap, event_timing, label_disagreement]
