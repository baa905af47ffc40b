"""Data-set-level checks of diversity, independence, de-identification and traceability, and the
intended-use YAML they compare against (:func:`load_intended_use`, schema in
:mod:`cortexlink.quality.intended_use`).

- Diversity (YY/T 1833.2-2022 balance / coverage; ISO/IEC 5259-2): class balance per task,
  subjects / sessions / sites / devices, coverage of what the intended use claims.
- Independence: subjects (or sessions) in more than one split, the same or nearly the same
  recording (or trial) in two splits.
- De-identification: names, birth dates, e-mail addresses, phone, national-ID and hospital
  record numbers in header fields and file names (values masked in the findings).
- Traceability (YY/T 1833.4): provenance (software, version, creation date) and checksums
  (SHA-256 of every file, declared checksums verified).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.io._common import sha256_file
from cortexlink.quality._identifying import measurement_dates, scan_header, scan_name
from cortexlink.quality.intended_use import (group_by_task, load_intended_use, norm_channel, subject_of,
                                             trial_classes, validate_intended_use)
from cortexlink.quality.model import CheckResult, DatasetContext, Finding, Recording

__all__ = ["CHECKS", "load_intended_use", "class_balance", "subjects_sessions", "coverage", "split_leakage",
           "near_duplicates", "identifying_text", "provenance", "checksums", "sha256_stream",
           "NEAR_DUPLICATE_CORR", "NEAR_DUPLICATE_REL", "BALANCE_RATIO"]

#: A minority class under this fraction of the majority class is a warning.
BALANCE_RATIO = 0.5
#: Fingerprints of the same shape correlated above this and within :data:`NEAR_DUPLICATE_REL` of
#: each other (relative Euclidean distance) are near-duplicates. Measured on the 12 EEGMMIDB runs
#: of subject 1 (distinct recordings of one person, one montage): correlation up to 0.99987 but
#: relative distance at least 0.0126, so the distance decides.
NEAR_DUPLICATE_CORR = 0.999
NEAR_DUPLICATE_REL = 1e-3
_BLOCK = 1 << 20

D, I, P, T = "diversity", "independence", "deidentification", "traceability"


def _iu(ctx: DatasetContext) -> dict[str, Any]:
    return validate_intended_use(ctx.intended_use or {}, strict=False)


def _fmt(items: list, n: int = 8) -> str:
    items = [str(x) for x in items]
    return ", ".join(items) if len(items) <= n else ", ".join(items[:n]) + f", ... ({len(items)} in all)"


# ---------------------------------------------------------------------------------------------
# diversity
# ---------------------------------------------------------------------------------------------

def class_balance(ctx: DatasetContext) -> list[CheckResult]:
    """Trials per class per task and the imbalance ratio (majority / minority). A warning per task
    whose minority class has fewer than :data:`BALANCE_RATIO` × the majority's trials, and per
    class with fewer trials than the intended ``min_trials_per_class``. Score: the mean over tasks
    of minority / majority (``None`` when no task has two classes)."""
    iu = _iu(ctx)
    findings: list[Finding] = []
    per_task: dict[str, dict[str, Any]] = {}
    ratios: list[float] = []
    min_trials = iu.get("min_trials_per_class")
    for task, recs in group_by_task(ctx.recordings, iu).items():
        classes = trial_classes(recs, iu)
        counts = Counter(e.label for r in recs for e in r.events if e.label in set(classes))
        counts = Counter({c: counts.get(c, 0) for c in classes})
        if not classes:
            continue
        hi, lo = max(counts.values()), min(counts.values())
        per_task[task] = {"counts": dict(counts), "imbalance_ratio": (hi / lo) if lo else None,
                          "n_recordings": len(recs)}
        if len(classes) >= 2:
            ratios.append(lo / hi if hi else 0.0)
            if lo < BALANCE_RATIO * hi:
                minority = [c for c, n in counts.items() if n == lo]
                majority = [c for c, n in counts.items() if n == hi]
                findings.append(Finding("class_balance", D, "warning",
                                        f"task {task!r}: class {_fmt(minority)} has {lo} trials, class "
                                        f"{_fmt(majority)} {hi} (ratio {hi / lo if lo else float('inf'):.2f}; "
                                        f"counts {dict(counts)})"))
        if min_trials:
            for c, n in counts.items():
                if n < min_trials:
                    findings.append(Finding("class_balance", D, "warning",
                                            f"task {task!r}: class {c!r} has {n} trials, the intended use asks "
                                            f"for at least {min_trials}"))
    score = float(np.mean(ratios)) if ratios else None
    return [CheckResult("class_balance", D, score, findings, {"per_task": per_task},
                        "; ".join(f"{t}: {v['counts']}" for t, v in per_task.items()) or "no trial classes")]


def _sex(rec: Recording) -> str | None:
    v = rec.extra.get("sex")
    if v is None:
        v = rec.header_text.get("subject_info.sex")
        v = {"1": "M", "2": "F"}.get(str(v).strip()) if v is not None else None
    if v is None:
        return None
    s = str(v).strip().casefold()
    return {"m": "M", "male": "M", "1": "M", "f": "F", "female": "F", "2": "F", "o": "O", "other": "O"}.get(s)


def _age(rec: Recording) -> float | None:
    v = rec.extra.get("age_years", rec.extra.get("age"))
    try:
        a = float(v) if v is not None else None
    except (TypeError, ValueError):
        return None
    return a if a is not None and np.isfinite(a) and a >= 0 else None


def subjects_sessions(ctx: DatasetContext) -> list[CheckResult]:
    """Counts of subjects, sessions, sites and devices (recordings without a subject counted
    apart). A warning when fewer subjects than the intended ``min_subjects``; an info finding for
    a single-subject data set otherwise. Score: subjects / ``min_subjects`` (capped at 1), or
    ``None`` without that claim."""
    recs = ctx.recordings
    iu = _iu(ctx)
    subj = {r.name: subject_of(r) for r in recs}
    subjects = sorted({s for s, _ in subj.values() if s})
    sessions = sorted({(subj[r.name][0] or "?", r.session) for r in recs if r.session})
    sites = sorted({r.site for r in recs if r.site})
    devices = sorted({r.device for r in recs if r.device})
    metrics = {"n_recordings": len(recs), "n_subjects": len(subjects), "n_sessions": len(sessions),
               "n_sites": len(sites), "n_devices": len(devices), "subjects": subjects[:200],
               "sites": sites, "devices": devices,
               "recordings_per_subject": dict(Counter(subj[r.name][0] or "(none)" for r in recs)),
               "n_without_subject": sum(1 for s, _ in subj.values() if not s),
               "n_subject_from_name": sum(1 for _, inferred in subj.values() if inferred)}
    findings: list[Finding] = []
    need = iu.get("min_subjects")
    if need and len(subjects) < need:
        findings.append(Finding("subjects_sessions", D, "warning",
                                f"{len(subjects)} subject(s) ({_fmt(subjects)}), the intended use asks for at "
                                f"least {need}"))
    elif not need and len(subjects) == 1:
        findings.append(Finding("subjects_sessions", D, "info",
                                f"all {len(recs)} recordings are of one subject ({subjects[0]}): results will not "
                                "generalise across people"))
    if metrics["n_without_subject"]:
        findings.append(Finding("subjects_sessions", D, "info",
                                f"{metrics['n_without_subject']} recording(s) name no subject"))
    score = min(1.0, len(subjects) / need) if need else None
    return [CheckResult("subjects_sessions", D, score, findings, metrics,
                        f"{len(subjects)} subjects, {len(sessions)} sessions, {len(sites)} sites, "
                        f"{len(devices)} devices")]


def coverage(ctx: DatasetContext) -> list[CheckResult]:
    """The intended use's claims against the data: ``sampling_rate_hz_min`` and
    ``channels_required`` (an error per claim not met, naming the files), ``subjects``, ``sites``,
    ``devices``, ``sexes`` and ``age_range`` (a warning per claim not covered). Score: the fraction
    of claims covered; ``None`` without an intended use making any of these claims."""
    iu = _iu(ctx)
    recs = ctx.recordings
    findings: list[Finding] = []
    claims: dict[str, bool] = {}

    def claim(key: str, ok: bool, sev: str, detail: str, file: str | None = None) -> None:
        claims[key] = claims.get(key, True) and ok
        if not ok:
            findings.append(Finding("coverage", D, sev, f"{key}: {detail}", file=file))

    if "sampling_rate_hz_min" in iu:
        lo = iu["sampling_rate_hz_min"]
        slow = [r for r in recs if not r.fs_hz or r.fs_hz < lo]
        claims["sampling_rate_hz_min"] = bool(recs) and not slow
        for r in slow:
            rate = "an undeclared rate" if not r.fs_hz else f"{r.fs_hz:g} Hz"
            findings.append(Finding("coverage", D, "error", f"sampling_rate_hz_min: sampled at {rate}, the "
                                    f"intended use needs at least {lo:g} Hz", file=r.name))
    if iu.get("channels_required"):
        for ch in iu["channels_required"]:
            lacking = [r.name for r in recs if norm_channel(ch) not in {norm_channel(c) for c in r.channel_names}]
            claim(f"channels_required {ch}", bool(recs) and not lacking, "error",
                  f"missing in {len(lacking)} of {len(recs)} recordings ({_fmt(lacking)})")
    for key, have in (("subjects", {s for s, _ in map(subject_of, recs) if s}),
                      ("sites", {r.site for r in recs if r.site}),
                      ("devices", {r.device for r in recs if r.device}),
                      ("sexes", {s for s in map(_sex, recs) if s})):
        if key in iu:
            missing = [x for x in iu[key] if x not in have]
            claim(key, not missing, "warning",
                  f"claimed {_fmt(iu[key])}; not in the data: {_fmt(missing)} (the data hold {_fmt(sorted(have))})"
                  if have else f"claimed {_fmt(iu[key])}; no recording declares any")
    if "age_range" in iu:
        lo, hi = iu["age_range"]
        ages = [a for a in map(_age, recs) if a is not None]
        ok = bool(ages) and min(ages) <= lo and max(ages) >= hi
        claim("age_range", ok, "warning",
              f"claimed {lo:g}-{hi:g} years; the data cover {min(ages):g}-{max(ages):g}" if ages
              else f"claimed {lo:g}-{hi:g} years; no recording declares an age")
    score = (sum(claims.values()) / len(claims)) if claims else None
    return [CheckResult("coverage", D, score, findings, {"claims": claims},
                        f"{sum(claims.values())} of {len(claims)} claims covered" if claims
                        else "no intended-use claims to cover")]


# ---------------------------------------------------------------------------------------------
# independence
# ---------------------------------------------------------------------------------------------

def split_leakage(ctx: DatasetContext) -> list[CheckResult]:
    """A subject (or, for recordings naming no subject, a session) whose recordings are in more
    than one split: an error per file of that subject, naming the subject and the files in each
    split. ``None`` score without a split."""
    if not ctx.split:
        return [CheckResult("split_leakage", I, None, [], {}, "no split given")]
    findings: list[Finding] = []
    assigned = [(r, ctx.split_of(r)) for r in ctx.recordings]
    unassigned = [r.name for r, s in assigned if s is None]
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r, s in assigned:
        if s is None:
            continue
        sid, inferred = subject_of(r)
        if sid:
            groups[f"subject {sid}" + (" (read from the file names)" if inferred else "")][s].append(r.name)
        elif r.session:
            groups[f"session {r.session}"][s].append(r.name)
    leaking: set[str] = set()
    per_split = Counter(s for _, s in assigned if s is not None)
    for who, splits in groups.items():
        if len(splits) < 2:
            continue
        where = "; ".join(f"{s}: {_fmt(sorted(names))}" for s, names in sorted(splits.items()))
        for s, names in sorted(splits.items()):
            for name in sorted(names):
                leaking.add(name)
                findings.append(Finding("split_leakage", I, "error",
                                        f"{who} is in {len(splits)} splits ({where}); this file is in {s}",
                                        file=name))
    if unassigned:
        findings.append(Finding("split_leakage", I, "info",
                                f"{len(unassigned)} recording(s) in no split: {_fmt(unassigned)}"))
    n = sum(per_split.values())
    return [CheckResult("split_leakage", I, (n - len(leaking)) / n if n else None, findings,
                        {"per_split": dict(per_split), "n_leaking_files": len(leaking),
                         "n_unassigned": len(unassigned)},
                        f"{len(leaking)} of {n} assigned recordings leak across splits")]


def _epoch_hashes(summ: Any) -> list[str]:
    ep = getattr(summ, "epochs", None) or {}
    data = ep.get("data")
    if data is None:
        return []
    arr = np.ascontiguousarray(np.asarray(data, dtype=np.float64))
    return [hashlib.sha256(arr[i].tobytes()).hexdigest() for i in range(arr.shape[0])] if arr.ndim >= 2 else []


def near_duplicates(ctx: DatasetContext) -> list[CheckResult]:
    """Recordings in different splits with the same ``content_hash``, or fingerprints of the same
    shape correlated above :data:`NEAR_DUPLICATE_CORR` and within 1 % of each other; and trials
    (epochs) with identical samples in two splits. An error per pair, naming both files."""
    if not ctx.split:
        return [CheckResult("near_duplicates", I, None, [], {}, "no split given")]
    recs = [(r, ctx.split_of(r)) for r in ctx.recordings]
    recs = [(r, s) for r, s in recs if s is not None]
    findings: list[Finding] = []
    involved: set[str] = set()
    pairs: set[tuple[str, str]] = set()

    def pair(a: Recording, sa: str, b: Recording, sb: str, how: str, start_s: float | None = None) -> None:
        key = tuple(sorted((a.name, b.name)))
        if key in pairs and start_s is None:
            return
        pairs.add(key)
        involved.update(key)
        findings.append(Finding("near_duplicates", I, "error",
                                f"{how}: {a.name} ({sa}) and {b.name} ({sb})", file=a.name, start_s=start_s))

    by_hash: dict[str, list[tuple[Recording, str]]] = defaultdict(list)
    for r, s in recs:
        h = getattr(ctx.summaries.get(r.name), "content_hash", None)
        if h:
            by_hash[h].append((r, s))
    for items in by_hash.values():
        for i, (a, sa) in enumerate(items):
            for b, sb in items[i + 1:]:
                if sa != sb:
                    pair(a, sa, b, sb, "same samples in two splits")
    by_shape: dict[tuple, list[tuple[Recording, str, np.ndarray]]] = defaultdict(list)
    for r, s in recs:
        fp = getattr(ctx.summaries.get(r.name), "fingerprint", None)
        if fp is not None:
            v = np.asarray(fp, dtype=np.float64).ravel()
            if v.size >= 2 and np.all(np.isfinite(v)):
                by_shape[np.shape(fp)].append((r, s, v))
    for items in by_shape.values():
        if len({s for _, s, _ in items}) < 2:
            continue
        m = np.stack([v for _, _, v in items])
        z = m - m.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(z, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = (z @ z.T) / np.outer(norms, norms)
        scale = np.linalg.norm(m, axis=1)
        sq = scale ** 2
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (m @ m.T), 0.0))
        close = dist <= NEAR_DUPLICATE_REL * np.maximum(np.maximum.outer(scale, scale), 1e-12)
        flat = (norms == 0)
        splits = np.array([s for _, s, _ in items], dtype=object)
        cand = close & ((corr > NEAR_DUPLICATE_CORR) | np.outer(flat, flat)) & (splits[:, None] != splits[None, :])
        for i, j in zip(*np.nonzero(np.triu(cand, 1))):
            (a, sa, va), (b, sb, vb) = items[i], items[j]
            if np.linalg.norm(va - vb) > NEAR_DUPLICATE_REL * max(scale[i], scale[j], 1e-12):
                continue                   # the expansion above rounds; the direct distance decides
            c = 1.0 if flat[i] and flat[j] else float(corr[i, j])
            pair(a, sa, b, sb, f"nearly the same recording in two splits (fingerprint correlation {c:.5f}, "
                               f"relative distance {np.linalg.norm(va - vb) / max(scale[i], scale[j], 1e-12):.1e})")
    seen: dict[str, tuple[Recording, str, int]] = {}
    n_trials = 0
    for r, s in recs:
        summ = ctx.summaries.get(r.name)
        times = list(((getattr(summ, "epochs", None) or {}).get("onsets_s")) or [])
        for k, h in enumerate(_epoch_hashes(summ)):
            if h in seen and seen[h][1] != s:
                a, sa, ka = seen[h]
                n_trials += 1
                pair(r, s, a, sa, f"trial {k} here and trial {ka} of the other file hold the same samples",
                     times[k] if k < len(times) else None)
            seen.setdefault(h, (r, s, k))
    n = len(recs)
    return [CheckResult("near_duplicates", I, (n - len(involved)) / n if n else None, findings,
                        {"n_pairs": len(pairs), "n_duplicate_trials": n_trials},
                        f"{len(pairs)} pairs of (near-)duplicates across splits")]


# ---------------------------------------------------------------------------------------------
# de-identification
# ---------------------------------------------------------------------------------------------

def identifying_text(ctx: DatasetContext) -> list[CheckResult]:
    """Personal names, birth dates (dates that are not the measurement date, birthday fields),
    e-mail addresses, phone, national-ID-like and hospital record numbers in each recording's
    header fields and file name: an error per (file, field, kind), the value masked. EDF+'s
    ``X`` (unknown) is never flagged."""
    findings: list[Finding] = []
    bad: set[str] = set()
    for r in ctx.recordings:
        known = measurement_dates(r.provenance.get("meas_date"), r.provenance.get("created"),
                                  r.provenance.get("created_utc"), r.extra.get("meas_date"))
        for field, what, masked in scan_header(r.header_text, known):
            bad.add(r.name)
            findings.append(Finding("identifying_text", P, "error",
                                    f"header field {field} holds {what} ({masked})", file=r.name))
        for what, masked in scan_name(r.name):
            bad.add(r.name)
            findings.append(Finding("identifying_text", P, "error", f"the file name holds {what} ({masked})",
                                    file=r.name))
    n = len(ctx.recordings)
    return [CheckResult("identifying_text", P, (n - len(bad)) / n if n else None, findings,
                        {"n_recordings": n, "n_with_identifying_text": len(bad)},
                        f"{len(bad)} of {n} recordings hold identifying text")]


# ---------------------------------------------------------------------------------------------
# traceability
# ---------------------------------------------------------------------------------------------

_SOFTWARE_KEYS = ("software", "software_version", "writer", "generated_by", "program", "equipment", "source_software",
                  "cortexlink_version", "source_script", "source_script_file_name")
_CREATED_KEYS = ("created", "created_utc", "creation_date", "file_create_date", "meas_date", "started_utc")


def _prov_missing(r: Recording) -> dict[str, str]:
    p = r.provenance or {}
    out = {}
    if not any(p.get(k) for k in _SOFTWARE_KEYS):
        out["software"] = "no record of the software (and version) that made the file"
    if not any(p.get(k) for k in _CREATED_KEYS):
        out["creation date"] = "no creation or measurement date"
    return out


def provenance(ctx: DatasetContext) -> list[CheckResult]:
    """Each recording's record of how it was made: the software (and version) that wrote it and
    its creation date, from :attr:`Recording.provenance` (keys such as ``software``,
    ``writer``, ``equipment``; ``created``, ``meas_date``). A warning per item missing, one
    data-set-wide finding when every recording of several lacks it."""
    recs = ctx.recordings
    missing = {r.name: _prov_missing(r) for r in recs}
    findings: list[Finding] = []
    for item in ("software", "creation date"):
        lacking = [r.name for r in recs if item in missing[r.name]]
        if len(recs) >= 2 and len(lacking) == len(recs):
            findings.append(Finding("provenance", T, "warning",
                                    f"{item}: missing in all {len(recs)} recordings ({missing[lacking[0]][item]})"))
        else:
            findings += [Finding("provenance", T, "warning", f"{item}: {missing[n][item]}", file=n) for n in lacking]
    total = 2 * len(recs)
    n_missing = sum(len(m) for m in missing.values())
    return [CheckResult("provenance", T, (total - n_missing) / total if total else None, findings,
                        {"software": {r.name: next((str(r.provenance[k]) for k in _SOFTWARE_KEYS
                                                    if r.provenance.get(k)), None) for r in recs}},
                        f"{n_missing} of {total} provenance items missing")]


def sha256_stream(path: Path, block_bytes: int = _BLOCK) -> str:
    """SHA-256 of a file read in ``block_bytes`` blocks (1 MiB by default): memory stays bounded."""
    return sha256_file(path, block_bytes)


_SUM_FILES = ("SHA256SUMS", "SHA256SUMS.txt", "sha256sums.txt", "checksums.sha256")


def _read_sums(lst: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lst.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and len(parts[0]) == 64:
            name = parts[1].lstrip("*").strip()
            out[name[2:] if name.startswith("./") else name] = parts[0].lower()
    return out


def _declared(path: Path, root: Path, cache: dict[Path, dict[str, str]]) -> tuple[str, str] | None:
    """The checksum declared for ``path`` and where: a ``<file>.sha256`` sidecar, else a
    ``SHA256SUMS`` list (by the path relative to the list's folder) in the file's folder or any
    folder above it up to one above the data-set root."""
    side = path.with_name(path.name + ".sha256")
    if side.is_file():
        parts = side.read_text(encoding="utf-8", errors="replace").split()
        if parts and len(parts[0]) == 64:
            return parts[0].lower(), side.name
    path, root = path.resolve(), Path(root).resolve()
    stop = root.parent
    for folder in path.parents:
        for fname in _SUM_FILES:
            lst = folder / fname
            if lst not in cache:
                cache[lst] = _read_sums(lst) if lst.is_file() else {}
            want = cache[lst].get(path.relative_to(folder).as_posix())
            if want:
                return want, str(lst)
        if folder == stop or folder == folder.parent:
            return None
    return None


def checksums(ctx: DatasetContext) -> list[CheckResult]:
    """SHA-256 of every file (taken from the reader's ``provenance["sha256"]`` or computed streaming
    in 1 MiB blocks), returned in ``metrics["sha256"]`` for the report's recordings list; checksums
    a session folder's ``manifest.json`` declares, ``<file>.sha256`` sidecars and ``SHA256SUMS``
    lists (in the file's folder or above, up to one folder above the data-set root) are verified:
    an error per file whose bytes do not match."""
    findings: list[Finding] = []
    digests: dict[str, Any] = {}
    cache: dict[Path, dict[str, str]] = {}
    n_checked = n_bad = n_declared = 0
    for r in ctx.recordings:
        path = Path(r.path)
        if path.is_dir():
            man = path / "manifest.json"
            files: dict[str, Any] = {}
            if man.is_file():
                try:
                    files = (json.loads(man.read_text(encoding="utf-8")).get("files") or {})
                except (ValueError, OSError, AttributeError) as exc:
                    findings.append(Finding("checksums", T, "error", f"manifest.json unreadable: {exc}", file=r.name))
                    n_bad += 1
                digests[r.name] = {"manifest.json": sha256_stream(man)}
            if not files:
                findings.append(Finding("checksums", T, "warning", "the session folder declares no checksums "
                                        "(manifest without 'files': not closed?)", file=r.name))
            for rel, meta in sorted(files.items()):
                p = path / rel
                n_checked += 1
                n_declared += 1
                if not p.is_file():
                    n_bad += 1
                    findings.append(Finding("checksums", T, "error", f"{rel}: listed in the manifest but missing",
                                            file=r.name))
                    continue
                got = sha256_stream(p)
                digests[r.name][rel] = got
                if isinstance(meta, dict) and meta.get("sha256") and got != meta["sha256"]:
                    n_bad += 1
                    findings.append(Finding("checksums", T, "error",
                                            f"{rel}: SHA-256 {got[:12]}... does not match the manifest's "
                                            f"{str(meta['sha256'])[:12]}...", file=r.name))
            continue
        if not path.is_file():
            continue
        got = r.provenance.get("sha256") or sha256_stream(path)
        digests[r.name] = got
        n_checked += 1
        decl = _declared(path, ctx.root, cache)
        if decl is None and r.provenance.get("declared_sha256"):
            decl = (str(r.provenance["declared_sha256"]).lower(), "the file's provenance")
        if decl is not None:
            n_declared += 1
            if decl[0] != got:
                n_bad += 1
                findings.append(Finding("checksums", T, "error",
                                        f"SHA-256 {got[:12]}... does not match the {decl[0][:12]}... declared in "
                                        f"{decl[1]}", file=r.name))
    return [CheckResult("checksums", T, (n_checked - n_bad) / n_checked if n_checked else None, findings,
                        {"sha256": digests, "n_checked": n_checked, "n_declared": n_declared,
                         "n_mismatched": n_bad},
                        f"{n_checked} files hashed, {n_declared} against a declared checksum, {n_bad} mismatched")]


CHECKS = [class_balance, subjects_sessions, coverage, split_leakage, near_duplicates, identifying_text,
          provenance, checksums]
