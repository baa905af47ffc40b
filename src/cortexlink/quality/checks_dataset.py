"""Data-set-level checks of completeness and consistency.

Completeness (YY/T 1833.2-2022; ISO/IEC 25012; ISO/IEC 5259-2): channels a recording lacks
that its peers have (or the intended use requires), samples that cannot be read (truncated
files, recordings much shorter than their peers, NaN runs), recordings without annotations or
with unlabelled trials, and required metadata (sampling rate, units, channel positions, subject
descriptors, device).

Consistency: sampling rates, units, channel names and order, label vocabulary across files of
one task, and the same data under two or more names.

Every check takes a :class:`~cortexlink.quality.model.DatasetContext` and returns a list of
:class:`~cortexlink.quality.model.CheckResult`; they read only headers and the per-file
summaries, never samples.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from cortexlink.quality.intended_use import (group_by_task, norm_channel, norm_label, subject_of,
                                             validate_intended_use)
from cortexlink.quality.model import CheckResult, DatasetContext, Finding, Recording

__all__ = ["CHECKS", "missing_channels", "missing_samples", "missing_annotations", "missing_metadata",
           "sampling_rate", "units", "channel_set", "label_vocabulary", "duplicates"]

#: A recording shorter than this fraction of its peers' median duration is reported.
SHORT_FRACTION = 0.5
#: SHA-256 of nothing: a hash of no samples says nothing about duplication.
_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_NON_DATA_TYPES = {"stim"}

C, K = "completeness", "consistency"


def _by_kind(recs: list[Recording]) -> dict[str, list[Recording]]:
    out: dict[str, list[Recording]] = defaultdict(list)
    for r in recs:
        out[r.kind].append(r)
    return dict(out)


def _fmt_list(items: list[str], n: int = 8) -> str:
    items = [str(x) for x in items]
    return ", ".join(items) if len(items) <= n else ", ".join(items[:n]) + f", ... ({len(items)} in all)"


def _end_s(rec: Recording) -> float | None:
    return rec.n_samples / rec.fs_hz if rec.fs_hz else None


def _iu(ctx: DatasetContext) -> dict[str, Any]:
    return validate_intended_use(ctx.intended_use or {}, strict=False)


def _frac(good: int, total: int) -> float | None:
    return None if total == 0 else good / total


# ---------------------------------------------------------------------------------------------
# completeness
# ---------------------------------------------------------------------------------------------

def missing_channels(ctx: DatasetContext) -> list[CheckResult]:
    """Channels most recordings of the same kind have (present in at least half of them) that a
    recording lacks, and the intended use's ``channels_required`` a recording lacks: an error per
    (file, channel)."""
    findings: list[Finding] = []
    required = _iu(ctx).get("channels_required", [])
    n_slots = n_missing = 0
    for kind, recs in _by_kind(ctx.recordings).items():
        counts: Counter[str] = Counter()
        first_name: dict[str, str] = {}
        for r in recs:
            keys = {norm_channel(c) for c in r.channel_names}
            counts.update(keys)
            for c in r.channel_names:
                first_name.setdefault(norm_channel(c), c)
        expected = [k for k, n in counts.items() if 2 * n >= len(recs)] if len(recs) >= 2 else []
        order = {k: i for i, k in enumerate(first_name)}
        for r in recs:
            have = {norm_channel(c) for c in r.channel_names}
            n_slots += len(expected)
            lacking = [k for k in expected if k not in have]
            n_missing += len(lacking)
            for k in sorted(lacking, key=order.__getitem__):
                findings.append(Finding("missing_channels", C, "error",
                                        f"channel {first_name[k]} is missing: {counts[k]} of {len(recs)} "
                                        f"{kind} recordings have it ({r.n_channels} channels here)",
                                        file=r.name, channel=first_name[k]))
    for r in ctx.recordings:
        if not required:
            break
        have = {norm_channel(c) for c in r.channel_names}
        n_slots += len(required)
        for ch in required:
            if norm_channel(ch) not in have:
                n_missing += 1
                findings.append(Finding("missing_channels", C, "error",
                                        f"channel {ch} is required by the intended use but missing",
                                        file=r.name, channel=ch))
    score = None if n_slots == 0 else 1.0 - n_missing / n_slots
    return [CheckResult("missing_channels", C, score, findings,
                        {"expected_channel_slots": n_slots, "missing": n_missing},
                        f"{n_missing} of {n_slots} expected channel slots missing")]


def _runs(items: Any) -> list[dict[str, Any]]:
    out = []
    for run in items or []:
        if isinstance(run, dict) and run.get("start_s") is not None:
            out.append({"start_s": float(run["start_s"]), "duration_s": run.get("duration_s"),
                        "channel": run.get("channel")})
        elif isinstance(run, (list, tuple)) and len(run) >= 2:
            out.append({"start_s": float(run[0]), "duration_s": run[1], "channel": run[2] if len(run) > 2 else None})
    return out


def missing_samples(ctx: DatasetContext) -> list[CheckResult]:
    """Samples a recording lacks: reader problems ``truncated`` / ``unreadable``, fewer samples than
    the header declares (``extra["declared_n_samples"]``), recordings shorter than
    :data:`SHORT_FRACTION` of their peers' median (same task, same kind), and NaN runs or gaps
    (``extra["nan_runs"]`` / ``extra["gaps"]`` of the recording or its summary: dicts with
    ``start_s``, ``duration_s``, optional ``channel``, or tuples in that order). Each finding names
    the file and the time where the data stop."""
    findings: list[Finding] = []
    flagged: set[str] = set()

    def add(rec: Recording, sev: str, detail: str, start_s: float | None = None, channel: str | None = None):
        flagged.add(rec.name)
        findings.append(Finding("missing_samples", C, sev, detail, file=rec.name, channel=channel, start_s=start_s))

    for rec in ctx.recordings:
        end = _end_s(rec)
        at = f"{end:.3f} s" if end is not None else f"sample {rec.n_samples}"
        declared = rec.extra.get("declared_n_samples")
        short = isinstance(declared, (int, np.integer)) and declared > rec.n_samples
        said = "; ".join(f"{k}: {m}" for k, m in rec.problems if k in ("truncated", "unreadable"))
        if short:
            lost = int(declared) - rec.n_samples
            secs = f" ({lost / rec.fs_hz:.3f} s)" if rec.fs_hz else ""
            add(rec, "error", f"the header declares {int(declared)} samples, {rec.n_samples} can be read: "
                              f"{lost} samples{secs} missing, data stop at {at}" + (f" ({said})" if said else ""), end)
        elif said:
            unreadable = any(k == "unreadable" for k, _ in rec.problems)
            add(rec, "error", said + ("" if unreadable else f"; readable data stop at {at}"),
                None if unreadable else end)
        summ = ctx.summaries.get(rec.name)
        nan = _runs(rec.extra.get("nan_runs")) + _runs(summ.extra.get("nan_runs") if summ is not None else None)
        gaps = _runs(rec.extra.get("gaps")) + _runs(summ.extra.get("gaps") if summ is not None else None)
        for what, runs in (("NaN samples", nan), ("a gap in the samples", gaps)):
            for run in runs:
                dur = run["duration_s"]
                add(rec, "error", f"{what} from {run['start_s']:.3f} s"
                                  + (f" for {float(dur):.3f} s" if dur is not None else ""),
                    run["start_s"], run["channel"])
    iu = _iu(ctx)
    for kind, recs in _by_kind(ctx.recordings).items():
        for task, trecs in group_by_task(recs, iu).items():
            durs = [(r, r.duration_s) for r in trecs if r.duration_s > 0]
            if len(durs) < 3:
                continue
            med = float(np.median([d for _, d in durs]))
            for r, d in durs:
                if d < SHORT_FRACTION * med and r.name not in flagged:
                    add(r, "warning", f"{d:.3f} s long, the {len(durs)} {kind} recordings of task {task!r} have a "
                                      f"median of {med:.3f} s: data stop at {d:.3f} s", d)
    for r in ctx.recordings:
        if r.n_samples == 0 and r.features is None and r.name not in flagged:
            add(r, "error", "no samples and no features can be read")
    n = len(ctx.recordings)
    return [CheckResult("missing_samples", C, _frac(n - len(flagged), n), findings,
                        {"n_recordings": n, "n_incomplete": len(flagged)},
                        f"{len(flagged)} of {n} recordings miss samples")]


def missing_annotations(ctx: DatasetContext) -> list[CheckResult]:
    """EEG recordings without events when other EEG recordings have them (an error when most have
    them, else a warning), and events whose label is empty (an error per file, with the first)."""
    findings: list[Finding] = []
    eeg = [r for r in ctx.recordings if r.kind == "eeg"]
    with_events = [r for r in eeg if r.events]
    bad: set[str] = set()
    if with_events:
        sev = "error" if 2 * len(with_events) > len(eeg) else "warning"
        for r in eeg:
            if not r.events:
                bad.add(r.name)
                findings.append(Finding("missing_annotations", C, sev,
                                        f"no events, while {len(with_events)} of {len(eeg)} EEG recordings "
                                        "have them", file=r.name))
    for r in ctx.recordings:
        empty = [e for e in r.events if not str(e.label).strip()]
        if empty:
            bad.add(r.name)
            findings.append(Finding("missing_annotations", C, "error",
                                    f"{len(empty)} of {len(r.events)} events have an empty label "
                                    f"(first at {empty[0].onset_s:.3f} s)", file=r.name, start_s=empty[0].onset_s))
    scored = {r.name for r in eeg} | {r.name for r in ctx.recordings if r.events}
    return [CheckResult("missing_annotations", C, _frac(len(scored - bad), len(scored)), findings,
                        {"n_eeg": len(eeg), "n_with_events": len(with_events)},
                        f"{len(with_events)} of {len(eeg)} EEG recordings have events")]


_META_ITEMS = (("sampling rate", "error"), ("units", "error"), ("channel positions", "warning"),
               ("subject descriptors", "warning"), ("device", "warning"))


def _meta_missing(r: Recording) -> dict[str, str]:
    out: dict[str, str] = {}
    if not r.fs_hz and not (r.features is not None and r.features.bin_s):
        out["sampling rate"] = "the sampling rate is not declared"
    data_ch = [c for c, t, u in zip(r.channel_names, r.channel_types, r.units) if t not in _NON_DATA_TYPES]
    no_unit = [c for c, t, u in zip(r.channel_names, r.channel_types, r.units)
               if t not in _NON_DATA_TYPES and not (u and str(u).strip())]
    if no_unit:
        out["units"] = (f"no unit declared for {len(no_unit)} of {len(data_ch)} channels ({_fmt_list(no_unit)})")
    if not r.positions_present:
        out["channel positions"] = "no channel positions (montage / electrode geometry) declared"
    if not (r.subject and str(r.subject).strip()):
        sid, _ = subject_of(r)
        out["subject descriptors"] = "no subject identifier declared" + (
            f" in the file (its name suggests subject {sid})" if sid else "")
    if not (r.device and str(r.device).strip()):
        out["device"] = "no recording device declared"
    return out


def missing_metadata(ctx: DatasetContext) -> list[CheckResult]:
    """Required metadata per recording: sampling rate and units (error when missing), channel
    positions, subject descriptors and device (warning). An item missing from every recording of
    a data set of several is one data-set-wide finding; otherwise one finding per file."""
    recs = ctx.recordings
    missing = {r.name: _meta_missing(r) for r in recs}
    findings: list[Finding] = []
    for item, sev in _META_ITEMS:
        lacking = [r for r in recs if item in missing[r.name]]
        if len(recs) >= 2 and len(lacking) == len(recs):
            findings.append(Finding("missing_metadata", C, sev,
                                    f"{item}: missing in all {len(recs)} recordings ("
                                    f"{missing[lacking[0].name][item]})"))
            continue
        for r in lacking:
            no_unit = [c for c, t, u in zip(r.channel_names, r.channel_types, r.units)
                       if t not in _NON_DATA_TYPES and not (u and str(u).strip())]
            ch = no_unit[0] if item == "units" and len(no_unit) == 1 else None
            findings.append(Finding("missing_metadata", C, sev, f"{item}: {missing[r.name][item]}",
                                    file=r.name, channel=ch))
    total = len(recs) * len(_META_ITEMS)
    n_missing = sum(len(m) for m in missing.values())
    per_item = {item: sum(item in m for m in missing.values()) for item, _ in _META_ITEMS}
    return [CheckResult("missing_metadata", C, _frac(total - n_missing, total), findings,
                        {"missing_per_item": per_item, "n_recordings": len(recs)},
                        f"{n_missing} of {total} required metadata items missing")]


# ---------------------------------------------------------------------------------------------
# consistency
# ---------------------------------------------------------------------------------------------

def _majority(values: list) -> tuple[Any, int]:
    c = Counter(values)
    best = max(c.values())
    for v in values:                       # ties: the first seen
        if c[v] == best:
            return v, best
    raise AssertionError("unreachable")


def sampling_rate(ctx: DatasetContext) -> list[CheckResult]:
    """A recording whose sampling rate differs from the majority of its kind: an error naming the
    file and both rates."""
    findings: list[Finding] = []
    n = n_bad = 0
    rates: dict[str, dict[str, float]] = {}
    for kind, recs in _by_kind(ctx.recordings).items():
        with_fs = [r for r in recs if r.fs_hz]
        if not with_fs:
            continue
        fs, count = _majority([float(r.fs_hz) for r in with_fs])
        rates[kind] = {"majority_hz": fs, "n_at_majority": count, "n": len(with_fs)}
        n += len(with_fs)
        for r in with_fs:
            if abs(float(r.fs_hz) - fs) > 1e-6 * fs:
                n_bad += 1
                findings.append(Finding("sampling_rate", K, "error",
                                        f"sampled at {float(r.fs_hz):g} Hz while {count} of {len(with_fs)} "
                                        f"{kind} recordings are at {fs:g} Hz", file=r.name))
    return [CheckResult("sampling_rate", K, _frac(n - n_bad, n), findings, {"per_kind": rates},
                        f"{n_bad} of {n} recordings off the majority rate")]


_UNIT_ALIASES = {"uv": "µV", "µv": "µV", "μv": "µV", "microvolt": "µV", "microvolts": "µV", "mv": "mV",
                 "v": "V", "volt": "V", "volts": "V", "nv": "nV"}


def _norm_unit(u: str) -> str:
    s = str(u).strip()
    return _UNIT_ALIASES.get(s.casefold(), s)


def units(ctx: DatasetContext) -> list[CheckResult]:
    """Mixed declared units among channels of one type (across files or within one): a warning per
    file whose channels of that type are not in the majority unit, naming the channels."""
    findings: list[Finding] = []
    per_type: dict[tuple[str, str], list[tuple[Recording, str, str]]] = defaultdict(list)
    for r in ctx.recordings:
        for c, t, u in zip(r.channel_names, r.channel_types, r.units):
            if u and str(u).strip() and t not in _NON_DATA_TYPES:
                per_type[(r.kind, t)].append((r, c, _norm_unit(u)))
    bad_files: set[str] = set()
    files_seen: set[str] = set()
    seen_units: dict[str, dict[str, int]] = {}
    for (kind, typ), items in per_type.items():
        files_seen |= {r.name for r, _, _ in items}
        unit, count = _majority([u for _, _, u in items])
        seen_units[f"{kind}/{typ}"] = dict(Counter(u for _, _, u in items))
        off: dict[str, list[tuple[str, str]]] = defaultdict(list)
        recs = {}
        for r, c, u in items:
            if u != unit:
                off[r.name].append((c, u))
                recs[r.name] = r
        for name, chans in off.items():
            bad_files.add(name)
            findings.append(Finding("units", K, "warning",
                                    f"{len(chans)} {typ} channel(s) in {_fmt_list(sorted({u for _, u in chans}))} "
                                    f"({_fmt_list([c for c, _ in chans])}) while {count} of {len(items)} {typ} "
                                    f"channels of the data set are in {unit}", file=name,
                                    channel=chans[0][0] if len(chans) == 1 else None))
    return [CheckResult("units", K, _frac(len(files_seen) - len(bad_files), len(files_seen)), findings,
                        {"units_per_type": seen_units}, f"{len(bad_files)} files with units off the majority")]


def channel_set(ctx: DatasetContext) -> list[CheckResult]:
    """Channel names and order against the majority of the recordings of the same kind: an error
    for other names (naming those missing and extra), a warning for the same names in another
    order (naming the first position that differs)."""
    findings: list[Finding] = []
    n = n_bad = 0
    for kind, recs in _by_kind(ctx.recordings).items():
        if len(recs) < 2:
            n += len(recs)
            continue
        ref, count = _majority([tuple(r.channel_names) for r in recs])
        n += len(recs)
        for r in recs:
            names = tuple(r.channel_names)
            if names == ref:
                continue
            n_bad += 1
            if set(names) != set(ref):
                lacks = [c for c in ref if c not in set(names)]
                extra = [c for c in names if c not in set(ref)]
                parts = ([f"lacks {_fmt_list(lacks)}"] if lacks else []) + ([f"has extra {_fmt_list(extra)}"]
                                                                           if extra else [])
                findings.append(Finding("channel_set", K, "error",
                                        f"{len(names)} channels, {' and '.join(parts)} compared with the "
                                        f"{len(ref)}-channel set of {count} of {len(recs)} {kind} recordings",
                                        file=r.name, channel=(lacks or extra)[0]
                                        if len(lacks) + len(extra) == 1 else None))
            else:
                i = next(i for i, (a, b) in enumerate(zip(names, ref)) if a != b)
                findings.append(Finding("channel_set", K, "warning",
                                        f"same channels in another order: position {i} holds {names[i]}, "
                                        f"{count} of {len(recs)} {kind} recordings have {ref[i]} there",
                                        file=r.name, channel=names[i]))
    return [CheckResult("channel_set", K, _frac(n - n_bad, n), findings, {"n_recordings": n, "n_differing": n_bad},
                        f"{n_bad} of {n} recordings differ from the majority channel set")]


def label_vocabulary(ctx: DatasetContext) -> list[CheckResult]:
    """Event labels across the files of one task: variants of one label (case, spaces: ``"T1"`` and
    ``"t1 "``) are an error per file using a minority spelling; a label in most files of the
    task but absent from some, or in only a few, is a warning per file concerned."""
    findings: list[Finding] = []
    iu = _iu(ctx)
    bad: set[str] = set()
    scored: set[str] = set()
    vocab: dict[str, dict[str, int]] = {}
    groups = [(f"{task}" if len(kinds) == 1 else f"{task} ({kind})", recs)
              for kinds in [_by_kind([r for r in ctx.recordings if r.events])]
              for kind, krecs in kinds.items() for task, recs in group_by_task(krecs, iu).items()]
    for task, recs in groups:
        if not recs:
            continue
        scored |= {r.name for r in recs}
        spellings: dict[str, Counter[str]] = defaultdict(Counter)
        files_with: dict[str, set[str]] = defaultdict(set)
        for r in recs:
            for e in r.events:
                if str(e.label).strip():
                    spellings[norm_label(e.label)][e.label] += 1
                    files_with[norm_label(e.label)].add(r.name)
        vocab[task] = {k: sum(v.values()) for k, v in spellings.items()}
        for key, spells in spellings.items():
            if len(spells) > 1:
                main = spells.most_common(1)[0][0]
                for r in recs:
                    odd = sorted({e.label for e in r.events if norm_label(e.label) == key and e.label != main})
                    if odd:
                        bad.add(r.name)
                        first = next(e for e in r.events if e.label in odd)
                        findings.append(Finding("label_vocabulary", K, "error",
                                                f"label spelled {_fmt_list([repr(x) for x in odd])} here, "
                                                f"{main!r} elsewhere in task {task!r}", file=r.name,
                                                start_s=first.onset_s))
            if len(recs) < 2:
                continue
            have = files_with[key]
            shown = spells.most_common(1)[0][0]
            if 2 * len(have) >= len(recs):
                for r in recs:
                    if r.name not in have:
                        bad.add(r.name)
                        findings.append(Finding("label_vocabulary", K, "warning",
                                                f"no {shown!r} events, while {len(have)} of {len(recs)} files of "
                                                f"task {task!r} have them", file=r.name))
            else:
                for name in sorted(have):
                    bad.add(name)
                    findings.append(Finding("label_vocabulary", K, "warning",
                                            f"label {shown!r} occurs here and in only {len(have)} of {len(recs)} "
                                            f"files of task {task!r}", file=name))
    return [CheckResult("label_vocabulary", K, _frac(len(scored - bad), len(scored)), findings,
                        {"labels_per_task": vocab}, f"{len(bad)} of {len(scored)} files off the task vocabulary")]


def duplicates(ctx: DatasetContext) -> list[CheckResult]:
    """The same data under two or more names: recordings sharing a summary ``content_hash`` (the
    samples as read) or a provenance ``sha256`` (the file's bytes). An error per file of each
    group, naming every file of the group."""
    parent = {r.name: r.name for r in ctx.recordings}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    how: dict[str, set[str]] = defaultdict(set)
    for label, key_of in (("samples", lambda r: getattr(ctx.summaries.get(r.name), "content_hash", None)),
                          ("file bytes", lambda r: r.provenance.get("sha256"))):
        first: dict[str, str] = {}
        for r in ctx.recordings:
            h = key_of(r)
            if not h or h == _EMPTY_SHA256:
                continue
            if h in first:
                a, b = find(first[h]), find(r.name)
                if a != b:
                    parent[b] = a
                how[first[h]].add(label)
                how[r.name].add(label)
            else:
                first[h] = r.name
    groups: dict[str, list[str]] = defaultdict(list)
    for r in ctx.recordings:
        groups[find(r.name)].append(r.name)
    findings: list[Finding] = []
    dup_groups = [g for g in groups.values() if len(g) > 1]
    for g in dup_groups:
        what = " and ".join(sorted(set().union(*(how[x] for x in g))))
        for name in g:
            others = [x for x in g if x != name]
            findings.append(Finding("duplicates", K, "error",
                                    f"same {what} as {_fmt_list(others)} ({len(g)} files: {_fmt_list(g)})",
                                    file=name))
    n = len(ctx.recordings)
    n_dup = sum(len(g) - 1 for g in dup_groups)
    return [CheckResult("duplicates", K, _frac(n - n_dup, n), findings,
                        {"groups": [sorted(g) for g in dup_groups]}, f"{len(dup_groups)} groups of duplicates")]


CHECKS = [missing_channels, missing_samples, missing_annotations, missing_metadata,
          sampling_rate, units, channel_set, label_vocabulary, duplicates]
