"""Damaged copies of the real EEG recordings, for the tests of ``cortexlink quality``.

Each function writes one damaged copy of an EDF+ file of ../shared/data/eeg_motor_imagery
(PhysioNet EEGMMIDB, subject 1, 64 channels, 160 Hz, annotations T0 / T1 / T2) and returns a
:class:`Damage` saying exactly where the damage is (file, channel, time), so a test can check that
the finding of the check meant for it points at that place.

Files are rewritten with edfio (the EDF writer ``mne.export`` uses) keeping the original
physical and digital ranges, so an untouched signal is written back bit for bit and only the
damage differs; header damage (the patient field) and truncation are byte edits, because that is
what they are in the wild.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Imagined fists (T1) vs feet (T2), subject 1 of EEGMMIDB.
IMAGERY_RUNS: tuple[str, ...] = ("S001R06.edf", "S001R10.edf", "S001R14.edf")
TRIAL_LABELS: tuple[str, str] = ("T1", "T2")

#: The EDF header's local patient identification: 80 ASCII characters at bytes 8..88.
PATIENT_FIELD = slice(8, 88)
#: EDF+ patient field (code, sex, birth date, name) of an identifiable patient.
IDENTIFYING_PATIENT = "MCH-0234567 M 02-AUG-1951 John_Smith"


@dataclass
class Damage:
    """What was damaged and where (the evidence a finding should point at)."""

    kind: str
    files: list[str]
    channel: str | None = None
    start_s: float | None = None
    region_s: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _read(path: Path):
    import edfio
    return edfio.read_edf(path)


def _signal(edf, channel: str):
    for s in edf.signals:
        if s.label == channel:
            return s
    raise KeyError(f"channel {channel!r} not in {[s.label for s in edf.signals]}")


def pick_channel(src: Path, index: int) -> str:
    """The name of the ``index``-th signal of an EDF file (names carry EEGMMIDB's dots)."""
    return _read(src).signals[index].label


def copy_clean(src: Path, dst: Path) -> Damage:
    """A byte copy of the original (no damage)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return Damage("clean", [dst.name])


def reexport_clean(src: Path, dst: Path) -> Damage:
    """The original read and written again by edfio with nothing changed (the writer's control)."""
    edf = _read(src)
    edf.write(dst)
    return Damage("clean_reexport", [dst.name])


def drop_channel(src: Path, dst: Path, channel: str) -> Damage:
    """The file written without one of its channels."""
    edf = _read(src)
    edf.drop_signals([channel])
    edf.write(dst)
    return Damage("dropped_channel", [dst.name], channel=channel)


def flip_labels(src: Path, dst: Path, fraction: float = 0.2, seed: int = 0) -> Damage:
    """``fraction`` of the file's trials (T1/T2) swapped T1 <-> T2 in the annotations; samples untouched."""
    import edfio
    edf = _read(src)
    anns = list(edf.annotations)
    trial_idx = [i for i, a in enumerate(anns) if a.text in TRIAL_LABELS]
    n_flip = max(1, int(round(fraction * len(trial_idx))))
    rng = np.random.default_rng(seed)
    flipped = sorted(int(i) for i in rng.choice(trial_idx, size=n_flip, replace=False))
    swap = {TRIAL_LABELS[0]: TRIAL_LABELS[1], TRIAL_LABELS[1]: TRIAL_LABELS[0]}
    new = [edfio.EdfAnnotation(a.onset, a.duration, swap[a.text]) if i in flipped else a
           for i, a in enumerate(anns)]
    edf.set_annotations(new)
    edf.write(dst)
    return Damage("flipped_labels", [dst.name],
                  extra={"flipped_onsets_s": [float(anns[i].onset) for i in flipped],
                         "n_trials": len(trial_idx), "n_flipped": n_flip})


def duplicate(src: Path, dst_a: Path, dst_b: Path) -> Damage:
    """The same file twice, under two names."""
    shutil.copyfile(src, dst_a)
    shutil.copyfile(src, dst_b)
    return Damage("duplicate", [dst_a.name, dst_b.name])


def patient_name(src: Path, dst: Path, patient: str = IDENTIFYING_PATIENT) -> Damage:
    """A name and a birth date written into the EDF header's patient field (a byte edit)."""
    raw = bytearray(Path(src).read_bytes())
    width = PATIENT_FIELD.stop - PATIENT_FIELD.start
    raw[PATIENT_FIELD] = patient.ljust(width).encode("ascii")
    Path(dst).write_bytes(bytes(raw))
    return Damage("patient_name", [dst.name], extra={"patient": patient})


def resample(src: Path, dst: Path, fs_hz: float = 128.0) -> Damage:
    """Every signal resampled (MNE's polyphase resampling) to ``fs_hz``; ranges kept."""
    import mne
    edf = _read(src)
    for s in edf.signals:
        up = mne.filter.resample(np.asarray(s.data, dtype=np.float64), up=fs_hz,
                                 down=s.sampling_frequency, method="polyphase", verbose="error")
        lo, hi = s.physical_range
        s.update_data(np.clip(up, lo, hi), keep_physical_range=True, sampling_frequency=fs_hz)
    edf.write(dst)
    return Damage("resampled", [dst.name], extra={"fs_hz": fs_hz})


def clip_channel(src: Path, dst: Path, channel: str, rail_uv: float = 100.0) -> Damage:
    """One channel clipped at +-``rail_uv`` (an amplifier rail inside the declared physical range)."""
    edf = _read(src)
    s = _signal(edf, channel)
    data = np.asarray(s.data, dtype=np.float64)
    clipped = np.clip(data, -rail_uv, rail_uv)
    s.update_data(clipped, keep_physical_range=True)
    edf.write(dst)
    return Damage("clipped_channel", [dst.name], channel=channel,
                  extra={"rail_uv": rail_uv, "fraction_on_rail": float(np.mean(np.abs(clipped) >= rail_uv))})


def line_noise(src: Path, dst: Path, channel: str, line_hz: float = 60.0, factor: float = 10.0) -> Damage:
    """One channel swamped by a mains sinusoid whose RMS is ``factor`` times the channel's RMS."""
    edf = _read(src)
    s = _signal(edf, channel)
    data = np.asarray(s.data, dtype=np.float64)
    rms = float(np.sqrt(np.mean((data - data.mean()) ** 2)))
    t = np.arange(data.size) / s.sampling_frequency
    noisy = data + factor * rms * np.sqrt(2.0) * np.sin(2 * np.pi * line_hz * t)
    lo, hi = s.physical_range
    if noisy.min() < lo or noisy.max() > hi:
        raise ValueError(f"line noise of {factor}x RMS would exceed the physical range {lo}..{hi} µV")
    s.update_data(noisy, keep_physical_range=True)
    edf.write(dst)
    return Damage("line_noise", [dst.name], channel=channel,
                  extra={"line_hz": line_hz, "channel_rms_uv": rms, "noise_rms_uv": factor * rms})


def truncate(src: Path, dst: Path, keep_fraction: float = 0.6) -> Damage:
    """The file cut short: only the first ``keep_fraction`` of its bytes (header intact)."""
    raw = Path(src).read_bytes()
    Path(dst).write_bytes(raw[: int(len(raw) * keep_fraction)])
    header_bytes = int(raw[184:192].decode("ascii").strip())
    n_records = int(raw[236:244].decode("ascii").strip())
    record_s = float(raw[244:252].decode("ascii").strip())
    # a reader keeps only whole data records: the damaged region starts after the last whole one
    kept_records = (int(len(raw) * keep_fraction) - header_bytes) // ((len(raw) - header_bytes) // n_records)
    return Damage("truncated", [dst.name], start_s=kept_records * record_s,
                  region_s=(kept_records * record_s, n_records * record_s),
                  extra={"declared_duration_s": n_records * record_s})


def events_past_end(src: Path, dst: Path, past_s: float = 10.0, label: str = "T1") -> Damage:
    """One trial annotation added ``past_s`` after the end of the recording."""
    import edfio
    edf = _read(src)
    onset = float(edf.duration) + past_s
    anns = list(edf.annotations) + [edfio.EdfAnnotation(onset, 4.1, label)]
    edf.set_annotations(anns)
    edf.write(dst)
    return Damage("events_past_end", [dst.name], start_s=onset, extra={"duration_s": float(edf.duration)})



# ---------------------------------------------------------------------------------------------
# The catalogue: each damage, the check meant to catch it, how to build its data set, and how to
# judge the report. The tests and the README's table both run this, so the table is what ran.
# ---------------------------------------------------------------------------------------------

#: The ten checks that target the damages (the clean data must give none of them >= warning).
TARGET_CHECKS: tuple[str, ...] = ("missing_channels", "label_disagreement", "duplicates",
                                  "identifying_text", "sampling_rate", "clipped_channels",
                                  "line_noise", "split_leakage", "missing_samples", "event_bounds")

#: The channel the channel damages hit (index into the 64 EEGMMIDB channels: "Cz..").
DAMAGED_CHANNEL_IDX = 10

INTENDED_USE_YAML = """\
intended_use: imagined left/right fist vs both feet, subject 1 of EEGMMIDB (damage tests)
classes: [T1, T2]
rest_labels: [T0]
window_s: [0.5, 2.5]
"""


@dataclass(frozen=True)
class Case:
    """One damage: its id, the README wording, the check meant to catch it, whether it needs the
    classifier (label disagreement runs on cross-validated predictions)."""

    name: str
    title: str
    check: str
    needs_classifier: bool = False


CASES: tuple[Case, ...] = (
    Case("dropped_channel", "one file written without one channel (Cz)", "missing_channels"),
    Case("flipped_labels", "20 % of one file's trial labels flipped (T1 <-> T2)", "label_disagreement",
         needs_classifier=True),
    Case("duplicate", "the same file twice under two names", "duplicates"),
    Case("patient_name", "a name and birth date in one EDF header's patient field", "identifying_text"),
    Case("resampled", "one file resampled to 128 Hz (others 160 Hz)", "sampling_rate"),
    Case("clipped_channel", "one channel clipped at +-100 µV", "clipped_channels"),
    Case("line_noise", "one channel swamped by 60 Hz (10x its RMS)", "line_noise"),
    Case("split_leakage", "subject 1 in both train and test (split file)", "split_leakage"),
    Case("truncated", "one file cut to 60 % of its bytes", "missing_samples"),
    Case("events_past_end", "an annotation 10 s past the end of the recording", "event_bounds"),
)
CASE_BY_NAME = {c.name: c for c in CASES}


def build_case(name: str, data_dir: Path, folder: Path, *, seed: int = 0) -> tuple[Damage, dict[str, Any]]:
    """Write the data set of damage ``name`` into ``folder`` (created) and return the damage and
    the extra keyword arguments for ``run_quality`` (split / intended_use files).

    Every data set holds the three imagined fists-vs-feet runs; run 6 carries the damage
    (the duplicate case adds a renamed copy of it; the leakage case damages only the split).
    ``seed`` draws the flipped trials.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir)
    target, others = IMAGERY_RUNS[0], IMAGERY_RUNS[1:]
    src, dst = data_dir / target, folder / target
    channel = pick_channel(src, DAMAGED_CHANNEL_IDX)
    kwargs: dict[str, Any] = {}
    if name == "clean":
        damage = copy_clean(src, dst)
    elif name == "clean_reexport":
        damage = reexport_clean(src, dst)
    elif name == "dropped_channel":
        damage = drop_channel(src, dst, channel)
    elif name == "flipped_labels":
        damage = flip_labels(src, dst, seed=seed)
    elif name == "duplicate":
        damage = duplicate(src, dst, folder / "S001R06_backup_copy.edf")
    elif name == "patient_name":
        damage = patient_name(src, dst)
    elif name == "resampled":
        damage = resample(src, dst)
    elif name == "clipped_channel":
        damage = clip_channel(src, dst, channel)
    elif name == "line_noise":
        damage = line_noise(src, dst, channel)
    elif name == "truncated":
        damage = truncate(src, dst)
    elif name == "events_past_end":
        damage = events_past_end(src, dst)
    elif name == "split_leakage":
        copy_clean(src, dst)
        assignment = {IMAGERY_RUNS[0]: "train", IMAGERY_RUNS[1]: "train", IMAGERY_RUNS[2]: "test"}
        damage = Damage("split_leakage", [IMAGERY_RUNS[0], IMAGERY_RUNS[1], IMAGERY_RUNS[2]],
                        extra={"subject": "1", "assignment": assignment})
        kwargs["split"] = write_split(folder.parent / f"{folder.name}_split.csv", assignment)
    else:
        raise KeyError(f"unknown damage {name!r}; known: clean, clean_reexport, "
                       f"{', '.join(c.name for c in CASES)}")
    for other in others:
        if name == "clean_reexport":
            reexport_clean(data_dir / other, folder / other)
        else:
            copy_clean(data_dir / other, folder / other)
    use = folder.parent / f"{folder.name}_intended_use.yaml"
    use.write_text(INTENDED_USE_YAML)
    kwargs["intended_use"] = use
    return damage, kwargs


def write_split(path: Path, assignment: dict[str, str]) -> Path:
    """A split file: CSV with the header ``file,split`` and one row per recording."""
    lines = ["file,split"] + [f"{name},{split}" for name, split in assignment.items()]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def at_least_warning(findings, check: str | None = None) -> list:
    """Findings of severity >= warning (of ``check`` when given)."""
    from cortexlink.quality.model import severity_rank
    return [f for f in findings if severity_rank(f.severity) >= 1 and (check is None or f.check == check)]


def _norm(name: str | None) -> str:
    return "".join(ch for ch in (name or "").lower() if ch.isalnum())


def _names(finding) -> str:
    """Everything a finding says about where (file, channel, detail), for name look-ups."""
    return " ".join(str(x) for x in (finding.file, finding.channel, finding.detail) if x)


@dataclass
class Verdict:
    """Whether a damage was caught, the evidence that says so, and what was wrong with it."""

    caught: bool
    evidence: str
    problems: list[str]


def judge(case: Case, damage: Damage, findings) -> Verdict:
    """Judge a report's findings for one damage: the check meant for it must report it at
    severity >= warning, pointing at the damaged place (file, channel, time), and must not point
    at an undamaged file."""
    hits = at_least_warning(findings, case.check)
    problems: list[str] = []
    if not hits:
        return Verdict(False, "", [f"no finding of {case.check} with severity >= warning"])
    damaged = set(damage.files)
    on_target = [f for f in hits if f.file in damaged] or [f for f in hits if f.file is None]
    if case.name == "duplicate":
        said = " ".join(_names(f) for f in hits)
        for fname in damage.files:
            if fname not in said:
                problems.append(f"duplicates does not name {fname}")
    elif case.name == "split_leakage":
        said = " ".join(_names(f) for f in hits)
        if not any(f"subject {s}" in said.lower() or f"subject:{s}" in said.lower() or f"'{s}'" in said
                   for s in ("1", "001", "s001")):
            problems.append(f"split_leakage does not name subject 1: {said[:200]!r}")
        named = [fname for fname in damage.files if fname in said]
        if not ({"train", "test"} <= set(said.lower().replace(",", " ").split()) or len(named) >= 2):
            problems.append(f"split_leakage names neither both splits nor the files: {said[:200]!r}")
    else:
        if not any(f.file in damaged for f in hits):
            problems.append(f"{case.check} names {sorted({str(f.file) for f in hits})}, "
                            f"not the damaged {sorted(damaged)}")
    stray = sorted({f.file for f in hits if f.file is not None and f.file not in damaged})
    if stray and case.name != "split_leakage":
        problems.append(f"{case.check} also flags undamaged files {stray}")
    if damage.channel is not None:
        if not any(_norm(f.channel) == _norm(damage.channel) for f in on_target):
            problems.append(f"{case.check} names channels {sorted({str(f.channel) for f in on_target})}, "
                            f"not the damaged {damage.channel}")
        stray_ch = sorted({f.channel for f in hits if f.channel and _norm(f.channel) != _norm(damage.channel)})
        if stray_ch:
            problems.append(f"{case.check} also flags undamaged channels {stray_ch}")
    if case.name == "flipped_labels":
        named_trials = sorted({round(f.start_s, 1) for f in findings if f.check == case.check and f.file in damaged
                        and f.start_s is not None
                        and any(abs(f.start_s - o) < 0.05 for o in damage.extra["flipped_onsets_s"])})
        if not named_trials:
            problems.append(f"no label_disagreement finding names a flipped trial "
                            f"(flipped at {damage.extra['flipped_onsets_s']} s)")
    if case.name == "events_past_end":
        if not any(f.start_s is not None and abs(f.start_s - damage.start_s) < 0.5 for f in on_target):
            problems.append(f"event_bounds start_s {[f.start_s for f in on_target]}, expected {damage.start_s}")
    if case.name == "truncated" and damage.region_s is not None:
        lo, hi = damage.region_s
        starts = [f.start_s for f in on_target if f.start_s is not None]
        if starts and not any(lo - 1.0 <= s <= hi for s in starts):
            problems.append(f"missing_samples start_s {starts} outside the cut region {lo:.1f}..{hi:.1f} s")
    best = on_target[0] if on_target else hits[0]
    where = ", ".join(x for x in (best.file and f"`{best.file}`", best.channel and f"`{best.channel}`",
                                  best.start_s is not None and f"{best.start_s:.1f} s") if x)
    detail = best.detail if len(best.detail) <= 150 else best.detail[:147] + "..."
    evidence = f"{best.severity}: {where}{' — ' if where else ''}{detail}"
    if case.name == "flipped_labels":
        evidence += (f" [info findings per trial name {len(named_trials)} of the "
                     f"{len(damage.extra['flipped_onsets_s'])} flipped trials, at {named_trials} s]")
    return Verdict(not problems, evidence, problems)


def markdown_table(rows: list[tuple[Case, Verdict]]) -> str:
    """The README's damage table."""
    out = ["| damage | check | caught? | evidence (first finding) |", "|---|---|---|---|"]
    for case, v in rows:
        caught = "yes" if v.caught else ("partly: " + "; ".join(v.problems) if v.evidence else "**no**: "
                                         + "; ".join(v.problems))
        ev = v.evidence.replace("|", "\\|").replace("\n", " ")
        out.append(f"| {case.title} | `{case.check}` | {caught} | {ev} |")
    return "\n".join(out)


def run_case(name: str, data_dir: Path, workdir: Path, *, n_permutations: int = 20, seed: int = 0):
    """Build damage ``name`` under ``workdir`` and run the report on it; returns (damage, report)."""
    from cortexlink.quality.runner import run_quality
    folder = Path(workdir) / (name if seed == 0 else f"{name}_seed{seed}")
    damage, kwargs = build_case(name, data_dir, folder, seed=seed)
    case = CASE_BY_NAME.get(name)
    baseline = name == "clean" or (case is not None and case.needs_classifier)
    report = run_quality(folder, Path(workdir) / f"{folder.name}_report", baseline=baseline, figures=False,
                         n_permutations=n_permutations, **kwargs)
    return damage, report


def main(argv: list[str] | None = None) -> int:
    """``python tests/quality/_damage.py [DATA_DIR] [--flip-draws N]``: run every damage and print the
    README's table; with ``--flip-draws N`` also how many of N random draws of flipped trials
    (seeds 0..N-1) the label check catches."""
    import argparse
    import logging
    import sys
    import tempfile
    import time
    import os
    shared = os.environ.get("CORTEXLINK_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
    default = Path(shared) / "eeg_motor_imagery"
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("data_dir", nargs="?", type=Path, default=default)
    ap.add_argument("--flip-draws", type=int, default=0)
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for case in CASES:
            damage, report = run_case(case.name, args.data_dir, Path(tmp))
            rows.append((case, judge(case, damage, report.findings)))
        _, clean = run_case("clean", args.data_dir, Path(tmp))
        false = [f for f in at_least_warning(clean.findings) if f.check in TARGET_CHECKS]
        wall_s = time.perf_counter() - t0
        sys.stdout.write(markdown_table(rows) + "\n\n")
        sys.stdout.write(f"Undamaged runs 6, 10, 14: {len(false)} finding(s) >= warning from the ten checks "
                         f"above. {len(rows) + 1} reports in {wall_s:.1f} s.\n")
        if args.flip_draws:
            case = CASE_BY_NAME["flipped_labels"]
            caught = trials = 0
            for seed in range(args.flip_draws):
                damage, report = run_case(case.name, args.data_dir, Path(tmp), seed=seed)
                v = judge(case, damage, report.findings)
                caught += v.caught
                trials += sum(1 for f in report.findings if f.check == case.check and f.file in damage.files
                              and f.start_s is not None
                              and any(abs(f.start_s - o) < 0.05 for o in damage.extra["flipped_onsets_s"]))
            sys.stdout.write(f"Flipped labels, {args.flip_draws} random draws of 3 of 15 trials (seeds "
                             f"0..{args.flip_draws - 1}): file flagged >= warning in {caught}; "
                             f"{trials} of {3 * args.flip_draws} flipped trials named.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
