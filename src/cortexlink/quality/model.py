"""The data model of a data-set quality report: recordings, findings, check results, the report.

Every check of ``cortexlink quality`` returns :class:`CheckResult` objects holding a score in
[0, 1] (or ``None`` where the check does not apply) and :class:`Finding` objects, each naming
the quality characteristic it belongs to, the place it points at (file, channel, time) and the
clause of the standards that characteristic comes from.

The characteristics follow YY/T 1833.2-2022 (AI medical device data sets: quality
characteristics), YY/T 1833.3 (annotation), YY/T 1833.4 (traceability), ISO/IEC 25012 and
ISO/IEC 5259-2. Clauses are cited by characteristic name: their numbered text is not freely
available, so no clause number is quoted that we could not check.

A :class:`Recording` is one file (or session folder) opened lazily: headers and events are read
at once, samples only through :meth:`Recording.read` in bounded blocks, so a data set never has
to fit in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from cortexlink.core.errors import ConfigError

#: Severity levels, from least to most severe (``--fail-on`` takes one of them).
SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")

#: The quality characteristics scored by the report, with the clauses they come from.
CHARACTERISTICS: dict[str, str] = {
    "completeness": "YY/T 1833.2-2022 completeness; ISO/IEC 25012 completeness; ISO/IEC 5259-2 completeness",
    "consistency": "YY/T 1833.2-2022 consistency; ISO/IEC 25012 consistency; ISO/IEC 5259-2 consistency",
    "accuracy": ("YY/T 1833.2-2022 accuracy (of annotations); YY/T 1833.3 annotation quality; "
                 "ISO/IEC 25012 accuracy; ISO/IEC 5259-2 label accuracy"),
    "signal_quality": ("YY/T 1833.2-2022 accuracy (of the data themselves); draft BCI EEG data-set "
                       "standard: signal quality; ISO/IEC 25012 precision"),
    "diversity": ("YY/T 1833.2-2022 diversity / balance and coverage; ISO/IEC 5259-2 balance, "
                  "diversity and representativeness"),
    "independence": ("YY/T 1833.2-2022 independence of training, tuning and test sets; "
                     "ISO/IEC 5259-2 independence"),
    "deidentification": ("YY/T 1833.2-2022 ethics and privacy (de-identification); "
                         "ISO/IEC 25012 confidentiality; ISO/IEC 5259-2 identifiability"),
    "traceability": "YY/T 1833.4 traceability; ISO/IEC 25012 traceability; ISO/IEC 5259-2 auditability",
    "fitness": ("YY/T 1833.2-2022 evaluation methods (fitness for the intended AI use); "
                "ISO/IEC 5259-2 effectiveness"),
}


def severity_rank(severity: str) -> int:
    """Index of ``severity`` in :data:`SEVERITIES` (raises :class:`ConfigError` for an unknown one)."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ConfigError(f"severity must be one of {list(SEVERITIES)}, got {severity!r}") from None


def clause_for(characteristic: str) -> str:
    """The standards' clause(s) a characteristic comes from."""
    try:
        return CHARACTERISTICS[characteristic]
    except KeyError:
        raise ConfigError(f"characteristic must be one of {sorted(CHARACTERISTICS)}, "
                          f"got {characteristic!r}") from None


@dataclass(frozen=True)
class Finding:
    """One thing found wrong (or worth noting), with the evidence of where.

    ``file`` is the recording's name relative to the data-set root (``None`` for data-set-wide
    findings); ``channel`` a channel name or ``None``; ``start_s`` seconds from the start of the
    file or ``None``; ``detail`` a sentence a reviewer can act on, with the measured values.
    """

    check: str
    characteristic: str
    severity: str
    detail: str
    file: str | None = None
    channel: str | None = None
    start_s: float | None = None
    clause: str = ""

    def __post_init__(self) -> None:
        severity_rank(self.severity)
        if not self.clause:
            object.__setattr__(self, "clause", clause_for(self.characteristic))
        if self.start_s is not None and not math.isfinite(self.start_s):
            object.__setattr__(self, "start_s", None)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "characteristic": self.characteristic, "severity": self.severity,
                "file": self.file, "channel": self.channel,
                "start_s": None if self.start_s is None else round(float(self.start_s), 4),
                "detail": self.detail, "clause": self.clause}


@dataclass
class CheckResult:
    """The outcome of one check: a score in [0, 1] (``None``: not applicable), findings, metrics.

    ``metrics`` holds JSON-able figures the check measured (for the report's tables and plots).
    """

    check: str
    characteristic: str
    score: float | None
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    def __post_init__(self) -> None:
        clause_for(self.characteristic)
        if self.score is not None:
            s = float(self.score)
            self.score = None if not math.isfinite(s) else min(1.0, max(0.0, s))

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "characteristic": self.characteristic,
                "score": None if self.score is None else round(self.score, 4),
                "summary": self.summary, "n_findings": len(self.findings), "metrics": self.metrics}


def characteristic_scores(results: list[CheckResult]) -> dict[str, float | None]:
    """Each characteristic's score: the mean of its applicable checks' scores (``None`` if none applied)."""
    out: dict[str, float | None] = {}
    for c in CHARACTERISTICS:
        vals = [r.score for r in results if r.characteristic == c and r.score is not None]
        out[c] = round(float(np.mean(vals)), 4) if vals else None
    return out


@dataclass(frozen=True)
class Event:
    """An annotation: onset and duration in seconds from the start of its recording, and a label."""

    onset_s: float
    duration_s: float
    label: str


@dataclass
class FeatureAccess:
    """Binned features of an implant session (threshold crossings ``/tx``, spike-band power ``/sbp``).

    ``iter_blocks()`` yields ``(first_bin_idx, block)`` with ``block`` of shape bins × features;
    ``behaviour()`` returns ``(bin_idx, velocity)`` (n × 2) of the intended movement aligned to the
    bins, or ``None`` where the session has none.
    """

    bin_s: float
    names: list[str]
    n_bins: int
    iter_blocks: Callable[[], Iterator[tuple[int, np.ndarray]]]
    behaviour: Callable[[], tuple[np.ndarray, np.ndarray] | None]


@dataclass
class Recording:
    """One file (or session folder) of the data set, opened lazily.

    Parameters
    ----------
    path : Path
        The file or folder.
    name : str
        Its path relative to the data-set root (used in findings).
    kind : str
        ``"eeg"`` or ``"implant"``.
    fmt : str
        ``"edf"``, ``"bdf"``, ``"brainvision"``, ``"fif"``, ``"bids"``, ``"session"`` or ``"nwb"``.
    fs_hz : float or None
        Sampling rate of the samples (``None`` if undeclared).
    n_samples : int
        Samples per channel that can actually be read (0 for a session without raw samples).
    channel_names, channel_types, units : list
        Per channel: name, type (``"eeg"``, ``"eog"``, ``"emg"``, ``"ecg"``, ``"stim"``,
        ``"misc"``, ``"implant"``) and declared unit (``None`` if undeclared).
    positions_present : bool
        Whether channel positions (montage, electrode geometry) are declared.
    subject, session, site, device : str or None
        Descriptors as declared (BIDS entities, EDF header, NWB subject, session manifest).
    events : list of Event
        Annotations / trial events.
    header_text : dict
        Free-text header fields as found (EDF patient and recording fields, NWB subject fields,
        BIDS sidecars), for the de-identification check.
    provenance : dict
        What the file says about how it was made (software and version, creation time, checksums).
    problems : list of (kind, message)
        What the reader noticed while opening (``"truncated"``, ``"header"``, ``"unreadable"``...).
    reader : callable or None
        ``reader(start, stop)`` returns samples ``[start, stop)`` as float64, channels × samples, in
        microvolts (``None`` when there are no samples).
    features : FeatureAccess or None
        Binned features (implant sessions).
    extra : dict
        Anything else a check may use (e.g. ``{"declared_n_samples": ...}``).
    """

    path: Path
    name: str
    kind: str
    fmt: str
    fs_hz: float | None
    n_samples: int
    channel_names: list[str]
    channel_types: list[str]
    units: list[str | None]
    positions_present: bool = False
    subject: str | None = None
    session: str | None = None
    site: str | None = None
    device: str | None = None
    events: list[Event] = field(default_factory=list)
    header_text: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)
    reader: Callable[[int, int], np.ndarray] | None = None
    features: FeatureAccess | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def duration_s(self) -> float:
        if self.fs_hz and self.n_samples:
            return self.n_samples / self.fs_hz
        if self.features is not None:
            return self.features.n_bins * self.features.bin_s
        return 0.0

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` in µV, channels × samples (clipped to the recording)."""
        if self.reader is None:
            raise ConfigError(f"{self.name}: this recording has no samples to read")
        start = max(0, int(start))
        stop = min(self.n_samples, int(stop))
        if stop <= start:
            return np.zeros((self.n_channels, 0))
        return self.reader(start, stop)

    def iter_blocks(self, block_s: float = 10.0) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_sample, block)`` over the whole recording, ``block_s`` seconds at a time."""
        if self.reader is None or not self.fs_hz:
            return
        step = max(1, int(round(block_s * self.fs_hz)))
        for s in range(0, self.n_samples, step):
            yield s, self.read(s, s + step)


@dataclass
class ChannelStats:
    """Per-channel statistics of one recording from one streaming pass (arrays of n_channels).

    Amplitudes in µV. ``flat_fraction``: fraction of 1-s windows whose peak-to-peak is below the
    flat threshold; ``clip_fraction``: fraction of samples at the channel's extreme values when
    those values repeat (a rail); ``line_ratio``: power at the mains frequency over its
    neighbourhood; ``artefact_fraction``: fraction of 1-s windows with an amplitude or gradient
    artefact; ``snr_db``: signal-to-noise estimate. Implant sessions without raw samples fill
    ``noise_rms_uv`` / ``crossing_rate_hz`` from their features and leave the others NaN.
    """

    rms_uv: np.ndarray
    ptp_uv: np.ndarray
    flat_fraction: np.ndarray
    clip_fraction: np.ndarray
    line_ratio: np.ndarray
    artefact_fraction: np.ndarray
    snr_db: np.ndarray
    noise_rms_uv: np.ndarray | None = None
    crossing_rate_hz: np.ndarray | None = None


@dataclass
class RecordingSummary:
    """What one streaming pass over a recording keeps (never the samples themselves).

    ``content_hash``: SHA-256 over the samples as read (the same data under two names share it);
    ``fingerprint``: a short vector of robust per-channel features for near-duplicate detection;
    ``epochs``: event-locked windows for the label checks and the baseline (labels, data
    n_epochs × channels × samples, times), bounded by the number of trials; ``line_hz``: the mains
    frequency found (50 or 60) or ``None``.
    """

    name: str
    stats: ChannelStats | None
    content_hash: str | None
    fingerprint: np.ndarray | None
    line_hz: float | None = None
    epochs: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetContext:
    """Everything the data-set-level checks see.

    ``split`` maps a recording name (or a subject, key ``"subject:<id>"``) to ``"train"``,
    ``"validation"`` or ``"test"``; ``intended_use`` is the parsed intended-use YAML (or ``{}``).
    """

    root: Path
    recordings: list[Recording]
    summaries: dict[str, RecordingSummary]
    split: dict[str, str] = field(default_factory=dict)
    intended_use: dict[str, Any] = field(default_factory=dict)

    def split_of(self, rec: Recording) -> str | None:
        """The split a recording belongs to (by name first, then by subject), or ``None``."""
        s = self.split.get(rec.name)
        if s is None and rec.subject is not None:
            s = self.split.get(f"subject:{rec.subject}")
        return s


@dataclass
class Report:
    """The whole report: scores per characteristic, every check's result, the inputs it saw."""

    root: Path
    results: list[CheckResult]
    recordings: list[dict[str, Any]]
    created_utc: str
    software: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)

    @property
    def findings(self) -> list[Finding]:
        return [f for r in self.results for f in r.findings]

    @property
    def scores(self) -> dict[str, float | None]:
        return characteristic_scores(self.results)

    def worst_severity(self) -> str | None:
        ranks = [severity_rank(f.severity) for f in self.findings]
        return SEVERITIES[max(ranks)] if ranks else None

    def to_dict(self) -> dict[str, Any]:
        return {"format": "cortexlink-quality-report", "format_version": 1,
                "root": str(self.root), "created_utc": self.created_utc, "software": self.software,
                "options": self.options, "scores": self.scores,
                "checks": [r.to_dict() for r in self.results],
                "findings": [f.to_dict() for f in self.findings],
                "recordings": self.recordings, "figures": self.figures}


def relname(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string (the name used in findings)."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix() or Path(path).name
    except ValueError:
        return Path(path).name
