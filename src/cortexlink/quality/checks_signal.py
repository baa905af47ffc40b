"""Signal-quality checks: flat, clipped, noisy and artefact-laden channels, line noise, SNR, implant noise.

Every check reads the per-channel statistics :func:`cortexlink.quality.scan.summarise` kept in
``ctx.summaries[rec.name].stats`` (one streaming pass per file, done before the checks) and
returns one :class:`~cortexlink.quality.model.CheckResult` of characteristic
``"signal_quality"``. Each finding names the file and the channel and, where the scan kept it,
the start of the first 1-s window where the problem was seen (``start_s``).

Score of each check: ``1 - (channel-files affected) / (channel-files examined)`` (``None`` when
no recording had statistics the check can use).

Thresholds are the module constants below; an intended-use YAML may override any of them under
``thresholds:`` with the constant's name in lower case, e.g. ``thresholds: {line_ratio_warn: 30}``.

Channels examined: types in :data:`SIGNAL_TYPES` (stimulus and misc channels are skipped).
``bad_channels`` compares channels of one type within one recording and leaves implant
electrodes to ``implant_noise``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.quality.model import CheckResult, DatasetContext, Finding, Recording, RecordingSummary

CHARACTERISTIC = "signal_quality"

#: Channel types the checks examine.
SIGNAL_TYPES = frozenset({"eeg", "eog", "emg", "ecg", "seeg", "ecog", "implant"})
#: flat_channels: fraction of flat 1-s windows for a warning / an error.
FLAT_FRACTION_WARN = 0.05
FLAT_FRACTION_ERROR = 0.5
#: clipped_channels: fraction of samples on a rail for a warning / an error.
CLIP_FRACTION_WARN = 0.001
CLIP_FRACTION_ERROR = 0.01
#: line_noise: mains band power over its neighbourhood for a warning / an error (20 = 13 dB).
LINE_RATIO_WARN = 20.0
LINE_RATIO_ERROR = 200.0
#: bad_channels: RMS above / below these multiples of the median channel of its type makes a
#: channel an outlier; so does a robust z of log-RMS beyond BAD_ROBUST_Z when the RMS is also
#: beyond BAD_Z_RATIO x (or 1/BAD_Z_RATIO x) the median (EEG channels differ by 2x without being
#: bad: on the real EEG the z alone reaches 10 at 0.44x, from frontal and quiet channels).
BAD_RMS_HIGH = 5.0
BAD_RMS_LOW = 0.2
BAD_ROBUST_Z = 6.0
BAD_Z_RATIO = 3.0
#: artefacts: fraction of 1-s windows with an artefact: one info finding per file (worst channel
#: named) at or above the first, one warning per channel at or above the second.
ARTEFACT_FRACTION_INFO = 0.2
ARTEFACT_FRACTION_WARN = 0.8
#: snr: EEG-band SNR (dB) below which a channel gets a warning.
SNR_WARN_DB = 2.0
#: implant_noise: noise (or spike-band level) below / above these multiples of the recording's
#: median electrode is dead / noisy; crossing rates above this are implausible.
IMPLANT_DEAD_REL = 0.2
IMPLANT_NOISY_REL = 5.0
IMPLANT_MAX_RATE_HZ = 200.0
#: implant_noise: an electrode whose feature bins are NaN in at least this fraction has no data.
IMPLANT_EMPTY_FRACTION = 0.99

_DEFAULTS = {k.lower(): v for k, v in dict(globals()).items()
             if k.isupper() and isinstance(v, float)}


def thresholds(ctx: DatasetContext) -> dict[str, float]:
    """The thresholds in force: module defaults updated by ``intended_use["thresholds"]``."""
    out = dict(_DEFAULTS)
    given = (ctx.intended_use or {}).get("thresholds") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"intended use 'thresholds' must be a mapping, got {type(given).__name__}")
    for k, v in given.items():
        key = str(k).lower()
        if key not in out:
            continue            # thresholds of other checks
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"thresholds.{key} must be a finite number, got {v!r}")
        out[key] = float(v)
    return out


def _items(ctx: DatasetContext) -> list[tuple[Recording, RecordingSummary, list[str], list[str]]]:
    """(recording, summary, channel names, channel types) for every recording with statistics."""
    out = []
    for rec in ctx.recordings:
        s = ctx.summaries.get(rec.name)
        if s is None or s.stats is None:
            continue
        names = list(s.extra.get("channel_names") or rec.channel_names)
        n = len(np.asarray(s.stats.rms_uv))
        types = list(rec.channel_types) if len(rec.channel_types) == n else \
            ["implant" if rec.kind == "implant" else "eeg"] * n
        if len(names) != n:
            names = [f"ch{i}" for i in range(n)]
        out.append((rec, s, names, types))
    return out


def _first_s(s: RecordingSummary, key: str, i: int) -> float | None:
    arr = s.extra.get(key)
    if arr is None:
        return None
    v = float(np.asarray(arr, dtype=float)[i])
    return v if math.isfinite(v) else None


def _num(v: Any) -> float | None:
    v = float(v)
    return round(v, 6) if math.isfinite(v) else None


def _score(n_affected: int, n_total: int) -> float | None:
    return None if n_total == 0 else 1.0 - n_affected / n_total


def _per_channel(ctx: DatasetContext, check: str, field: str, first_key: str | None,
                 judge: Callable[[float], str | None], describe: Callable[[float, str], str],
                 types: frozenset = SIGNAL_TYPES) -> CheckResult:
    """A check that judges one ChannelStats field channel by channel."""
    findings: list[Finding] = []
    n_total, affected = 0, 0
    per_file: dict[str, float | None] = {}
    for rec, s, names, ctypes in _items(ctx):
        vals = np.asarray(getattr(s.stats, field), dtype=float)
        use = np.array([t in types for t in ctypes]) & np.isfinite(vals)
        if not use.any():
            continue
        per_file[rec.name] = _num(np.max(vals[use]))
        for i in np.flatnonzero(use):
            n_total += 1
            sev = judge(float(vals[i]))
            if sev is None:
                continue
            affected += 1
            findings.append(Finding(check=check, characteristic=CHARACTERISTIC, severity=sev,
                                    detail=describe(float(vals[i]), names[i]), file=rec.name,
                                    channel=names[i], start_s=_first_s(s, first_key, i) if first_key else None))
    return CheckResult(check=check, characteristic=CHARACTERISTIC, score=_score(affected, n_total),
                       findings=findings,
                       metrics={"n_channel_files": n_total, "n_affected": affected, "max_per_file": per_file},
                       summary=(f"{affected} of {n_total} channel-files affected" if n_total
                                else "no recording with samples to examine"))


def _grade(v: float, warn: float, error: float) -> str | None:
    if v >= error:
        return "error"
    if v >= warn:
        return "warning"
    return None


def check_flat_channels(ctx: DatasetContext) -> list[CheckResult]:
    """Channels flat (peak-to-peak below the scan's flat level) in a fraction of their 1-s windows."""
    t = thresholds(ctx)
    return [_per_channel(
        ctx, "flat_channels", "flat_fraction", "flat_first_s",
        lambda v: _grade(v, t["flat_fraction_warn"], t["flat_fraction_error"]),
        lambda v, ch: (f"channel {ch} is flat in {v:.1%} of its 1-s windows "
                       f"(warning from {t['flat_fraction_warn']:.0%}); start_s is the first flat window"))]


def check_clipped_channels(ctx: DatasetContext) -> list[CheckResult]:
    """Channels whose samples sit on a rail (repeated extreme values) for a fraction of the recording."""
    t = thresholds(ctx)
    out = _per_channel(
        ctx, "clipped_channels", "clip_fraction", "clip_first_s",
        lambda v: _grade(v, t["clip_fraction_warn"], t["clip_fraction_error"]),
        lambda v, ch: (f"channel {ch} sits on its extreme values (a rail) in {v:.2%} of its samples "
                       f"(warning from {t['clip_fraction_warn']:.2%}); start_s is the first clipped run"))
    # name the rail in the evidence
    by_name = {s.name: s for s in ctx.summaries.values()}
    for k, f in enumerate(out.findings):
        s = by_name.get(f.file or "")
        names = list(s.extra.get("channel_names") or []) if s else []
        rec = next((r for r in ctx.recordings if r.name == f.file), None)
        names = names or (rec.channel_names if rec else [])
        if s is not None and f.channel in names and "max_uv" in s.extra:
            i = names.index(f.channel)
            detail = (f"{f.detail}; rails at {float(s.extra['min_uv'][i]):.6g} / "
                      f"{float(s.extra['max_uv'][i]):.6g} µV")
            out.findings[k] = Finding(check=f.check, characteristic=f.characteristic, severity=f.severity,
                                      detail=detail, file=f.file, channel=f.channel, start_s=f.start_s)
    return [out]


def check_line_noise(ctx: DatasetContext) -> list[CheckResult]:
    """Channels with mains interference far above their spectral neighbourhood."""
    t = thresholds(ctx)
    mains = {s.name: s.line_hz for s in ctx.summaries.values()}
    out = _per_channel(
        ctx, "line_noise", "line_ratio", "line_first_s",
        lambda v: _grade(v, t["line_ratio_warn"], t["line_ratio_error"]),
        lambda v, ch: (f"channel {ch}: mains band power is {v:.1f}x its 5-15 Hz neighbourhood "
                       f"({10 * math.log10(max(v, 1e-12)):.1f} dB; warning from {t['line_ratio_warn']:g}x)"))
    out.metrics["line_hz_per_file"] = {k: v for k, v in mains.items() if v is not None}
    items = {rec.name: (s, names) for rec, s, names, _ in _items(ctx)}
    for k, f in enumerate(out.findings):
        s, names = items[f.file]
        at = s.extra.get("line_hz_per_channel")
        hz = float(np.asarray(at, dtype=float)[names.index(f.channel)]) if at is not None else float("nan")
        where = f"{hz:g} Hz" if math.isfinite(hz) else "the mains"
        out.findings[k] = Finding(check=f.check, characteristic=f.characteristic, severity=f.severity,
                                  detail=f"{f.detail} at {where}", file=f.file, channel=f.channel,
                                  start_s=f.start_s)
    return [out]


def check_bad_channels(ctx: DatasetContext) -> list[CheckResult]:
    """Channels whose RMS is an outlier among the channels of their type in the same recording."""
    t = thresholds(ctx)
    findings: list[Finding] = []
    n_total, affected = 0, 0
    zmax: dict[str, float | None] = {}
    for rec, s, names, ctypes in _items(ctx):
        rms = np.asarray(s.stats.rms_uv, dtype=float)
        flat = np.asarray(s.stats.flat_fraction, dtype=float)
        for typ in sorted(set(ctypes) & (SIGNAL_TYPES - {"implant"})):
            idx = np.flatnonzero((np.array(ctypes) == typ) & np.isfinite(rms) & (rms > 0)
                                 & ~(flat >= t["flat_fraction_error"]))
            if idx.size < 4:
                continue
            lg = np.log(rms[idx])
            med = float(np.median(lg))
            mad = float(np.median(np.abs(lg - med))) * 1.4826
            z = (lg - med) / mad if mad > 0 else np.zeros_like(lg)
            ratio = np.exp(lg - med)
            zmax[rec.name] = _num(np.max(np.abs(z)))
            n_total += idx.size
            for j, i in enumerate(idx):
                high = ratio[j] > t["bad_rms_high"]
                low = ratio[j] < t["bad_rms_low"]
                far = abs(z[j]) > t["bad_robust_z"] and not (
                    1.0 / t["bad_z_ratio"] <= ratio[j] <= t["bad_z_ratio"])
                if not (high or low or far):
                    continue
                affected += 1
                findings.append(Finding(
                    check="bad_channels", characteristic=CHARACTERISTIC, severity="warning", file=rec.name,
                    channel=names[i],
                    detail=(f"channel {names[i]} ({typ}): RMS {rms[i]:.3g} µV is {ratio[j]:.2f}x the median "
                            f"{typ} channel (robust z of log-RMS {z[j]:+.1f}; outlier beyond "
                            f"{t['bad_rms_low']:g}x-{t['bad_rms_high']:g}x, or |z| > {t['bad_robust_z']:g} "
                            f"beyond {t['bad_z_ratio']:g}x)")))
    return [CheckResult(check="bad_channels", characteristic=CHARACTERISTIC, score=_score(affected, n_total),
                        findings=findings, metrics={"n_channel_files": n_total, "n_affected": affected,
                                                    "max_abs_z_per_file": zmax},
                        summary=f"{affected} of {n_total} channel-files are RMS outliers" if n_total
                        else "no recording with non-implant channels to compare")]


def check_artefacts(ctx: DatasetContext) -> list[CheckResult]:
    """Amplitude / gradient artefacts: the fraction of 1-s windows of each channel that carry one.

    Metrics keep the mean fraction per file and per channel type, so EOG (eye movements) and EMG
    channels, where a recording has them, are read apart from the EEG."""
    t = thresholds(ctx)
    findings: list[Finding] = []
    n_total, affected = 0, 0
    per_file: dict[str, float | None] = {}
    by_type: dict[str, dict[str, float | None]] = {}
    for rec, s, names, ctypes in _items(ctx):
        frac = np.asarray(s.stats.artefact_fraction, dtype=float)
        use = np.flatnonzero(np.array([c in SIGNAL_TYPES for c in ctypes]) & np.isfinite(frac))
        if not use.size:
            continue
        n_total += use.size
        per_file[rec.name] = _num(np.mean(frac[use]))
        for typ in sorted({ctypes[i] for i in use}):       # EOG / EMG windows apart from EEG ones
            sel = [i for i in use if ctypes[i] == typ]
            by_type.setdefault(typ, {})[rec.name] = _num(np.mean(frac[sel]))
        many = [i for i in use if frac[i] >= t["artefact_fraction_warn"]]
        some = [i for i in use if t["artefact_fraction_info"] <= frac[i] < t["artefact_fraction_warn"]]
        affected += len(many) + len(some)
        for i in many:
            findings.append(Finding(
                check="artefacts", characteristic=CHARACTERISTIC, severity="warning", file=rec.name,
                channel=names[i], start_s=_first_s(s, "artefact_first_s", i),
                detail=(f"channel {names[i]}: {frac[i]:.0%} of its 1-s windows carry an amplitude or "
                        f"gradient artefact (warning from {t['artefact_fraction_warn']:.0%})")))
        if some:
            worst = max(some, key=lambda i: frac[i])
            listed = ", ".join(f"{names[i]} {frac[i]:.0%}" for i in sorted(some, key=lambda i: -frac[i])[:12])
            findings.append(Finding(
                check="artefacts", characteristic=CHARACTERISTIC, severity="info", file=rec.name,
                channel=names[worst], start_s=_first_s(s, "artefact_first_s", worst),
                detail=(f"{len(some)} channel(s) with artefacts in {t['artefact_fraction_info']:.0%}-"
                        f"{t['artefact_fraction_warn']:.0%} of their 1-s windows: {listed}")))
    return [CheckResult(check="artefacts", characteristic=CHARACTERISTIC, score=_score(affected, n_total),
                        findings=findings, metrics={"n_channel_files": n_total, "n_affected": affected,
                                                    "mean_fraction_per_file": per_file,
                                                    "mean_fraction_by_type": by_type},
                        summary=f"{affected} of {n_total} channel-files with artefacts in >= "
                                f"{t['artefact_fraction_info']:.0%} of windows" if n_total
                        else "no recording with samples to examine")]


def check_snr(ctx: DatasetContext) -> list[CheckResult]:
    """EEG-band SNR per channel (mean 1-40 Hz PSD over the high-frequency floor); implant SNR as metrics."""
    t = thresholds(ctx)
    eeg_types = SIGNAL_TYPES - {"implant"}
    out = _per_channel(
        ctx, "snr", "snr_db", None,
        lambda v: "warning" if v < t["snr_warn_db"] else None,
        lambda v, ch: (f"channel {ch}: the 1-40 Hz band stands only {v:.1f} dB above the "
                       f"high-frequency floor (warning below {t['snr_warn_db']:g} dB): noise, not EEG?"),
        types=eeg_types)
    implant = [float(v) for rec, s, names, ctypes in _items(ctx)
               for v, c in zip(np.asarray(s.stats.snr_db, dtype=float), ctypes)
               if c == "implant" and math.isfinite(float(v))]
    if implant:
        out.metrics["implant_spike_snr_db_quantiles"] = {
            q: _num(np.quantile(implant, float(q))) for q in ("0.05", "0.5", "0.95")}
    return [out]


def check_implant_noise(ctx: DatasetContext) -> list[CheckResult]:
    """Implant electrodes: noise RMS (or spike-band level) and crossing-rate distributions; dead,
    saturated / noisy electrodes; implausibly high crossing rates."""
    t = thresholds(ctx)
    findings: list[Finding] = []
    n_total, affected = 0, 0
    dist: dict[str, dict[str, Any]] = {}
    for rec, s, names, ctypes in _items(ctx):
        imp = np.array([c == "implant" for c in ctypes])
        if not imp.any():
            continue
        st = s.stats
        noise = np.asarray(st.noise_rms_uv if st.noise_rms_uv is not None else st.rms_uv, dtype=float)
        source = "spike-band level (from /sbp)" if s.extra.get("level_source") == "sbp" else "noise RMS"
        if not np.isfinite(noise[imp]).any():
            noise, source = np.asarray(st.rms_uv, dtype=float), "RMS"
        rate = np.asarray(st.crossing_rate_hz if st.crossing_rate_hz is not None
                          else np.full(len(names), np.nan), dtype=float)
        flat = np.asarray(st.flat_fraction, dtype=float)
        clip = np.asarray(st.clip_fraction, dtype=float)
        missing = np.asarray(s.extra.get("missing_fraction", np.zeros(len(names))), dtype=float)
        ok = imp & np.isfinite(noise)
        med = float(np.median(noise[ok])) if ok.any() else float("nan")
        dist[rec.name] = {"level_source": source, "median_level_uv": _num(med),
                          "level_quantiles_uv": [_num(np.quantile(noise[ok], q)) for q in (0.05, 0.5, 0.95)]
                          if ok.any() else None,
                          "rate_quantiles_hz": [_num(np.nanquantile(rate[imp], q)) for q in (0.05, 0.5, 0.95)]
                          if np.isfinite(rate[imp]).any() else None}
        for i in np.flatnonzero(imp):
            n_total += 1
            why, sev = [], "warning"
            if missing[i] >= IMPLANT_EMPTY_FRACTION:
                why.append(f"no data: {missing[i]:.0%} of its feature bins are NaN (left out by the recording "
                           f"pipeline?)")
            if np.isfinite(flat[i]) and flat[i] >= t["flat_fraction_error"]:
                why.append(f"dead: flat in {flat[i]:.0%} of its 1-s windows")
                sev = "error"
            elif math.isfinite(med) and med > 0 and np.isfinite(noise[i]) and noise[i] < t["implant_dead_rel"] * med:
                why.append(f"dead: {source} {noise[i]:.3g} µV is {noise[i] / med:.2f}x the median electrode")
            if np.isfinite(clip[i]) and clip[i] >= t["clip_fraction_warn"]:
                why.append(f"saturated: {clip[i]:.2%} of samples on a rail")
            if math.isfinite(med) and med > 0 and np.isfinite(noise[i]) and noise[i] > t["implant_noisy_rel"] * med:
                why.append(f"noisy: {source} {noise[i]:.3g} µV is {noise[i] / med:.1f}x the median electrode")
            if np.isfinite(rate[i]) and rate[i] > t["implant_max_rate_hz"]:
                why.append(f"crossing rate {rate[i]:.1f} Hz is implausibly high (> {t['implant_max_rate_hz']:g} Hz)")
            if not why:
                continue
            affected += 1
            start = _first_s(s, "flat_first_s", i) if "dead: flat" in why[0] else \
                _first_s(s, "clip_first_s", i) if any(w.startswith("saturated") for w in why) else None
            findings.append(Finding(check="implant_noise", characteristic=CHARACTERISTIC, severity=sev,
                                    file=rec.name, channel=names[i], start_s=start,
                                    detail=f"electrode {names[i]}: " + "; ".join(why)))
    return [CheckResult(check="implant_noise", characteristic=CHARACTERISTIC, score=_score(affected, n_total),
                        findings=findings, metrics={"n_electrode_files": n_total, "n_affected": affected,
                                                    "per_file": dist},
                        summary=f"{affected} of {n_total} electrode-files dead, saturated, noisy or "
                                f"implausibly active" if n_total else "no implant recording")]


#: The signal-quality checks, in report order.
CHECKS: list[Callable[[DatasetContext], list[CheckResult]]] = [
    check_flat_channels, check_clipped_channels, check_line_noise, check_bad_channels,
    check_artefacts, check_snr, check_implant_noise,
]
