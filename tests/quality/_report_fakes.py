"""A small fake pipeline for the report / CLI tests: recordings and checks built directly, so the
runner, the HTML, the figures and the CLI are tested without the real readers and checks."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np

from cortexlink.quality import runner
from cortexlink.quality.model import (ChannelStats, CheckResult, Event, Finding, Recording, RecordingSummary)

HOSTILE = '<script>alert("x")</script>'


def make_recording(root: Path, name: str, *, subject: str = "1", n_ch: int = 4, fs: float = 100.0,
                   seconds: float = 20.0, seed: int = 0, kind: str = "eeg") -> Recording:
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 10.0, (n_ch, int(seconds * fs)))
    events = [Event(float(t), 1.0, "T1" if i % 2 else "T2") for i, t in enumerate(np.arange(1.0, seconds - 3, 1.5))]
    return Recording(path=root / name, name=name, kind=kind, fmt="edf", fs_hz=fs, n_samples=data.shape[1],
                     channel_names=[f"C{i}" for i in range(n_ch)], channel_types=[kind] * n_ch,
                     units=["uV"] * n_ch, subject=subject, events=events,
                     reader=lambda a, b: data[:, a:b].copy())


def fake_summarise(rec: Recording, *, line_hz=None) -> RecordingSummary:
    if rec.extra.get("explode"):
        raise OSError("disk on fire")
    if rec.extra.get("no_stats"):
        return RecordingSummary(name=rec.name, stats=None, content_hash=None, fingerprint=None)
    x = rec.read(0, rec.n_samples)
    n = rec.n_channels
    nan = np.full(n, np.nan)
    stats = ChannelStats(rms_uv=x.std(axis=1), ptp_uv=np.ptp(x, axis=1), flat_fraction=np.zeros(n),
                         clip_fraction=np.linspace(0, 0.1, n), line_ratio=np.ones(n), artefact_fraction=nan,
                         snr_db=nan)
    return RecordingSummary(name=rec.name, stats=stats, content_hash=str(hash(x.tobytes())),
                            fingerprint=x.std(axis=1))


def fake_extract_epochs(rec: Recording, labels, window_s) -> dict:
    fs = rec.fs_hz
    evs = [e for e in rec.events if e.label in labels]
    a, b = int(window_s[0] * fs), int(window_s[1] * fs)
    data = np.stack([rec.read(int(e.onset_s * fs) + a, int(e.onset_s * fs) + b) for e in evs])
    return {"y": np.asarray([e.label for e in evs]), "X": data, "onsets_s": np.asarray([e.onset_s for e in evs])}


class Calls:
    """What the fake checks saw."""

    def __init__(self) -> None:
        self.n_permutations: int | None = None
        self.fitness_ran = False
        self.epochs_seen: dict[str, int] = {}


def fake_modules(recordings: list[Recording], *, open_findings=(), calls: Calls | None = None,
                 warn: bool = True) -> dict[str, types.SimpleNamespace]:
    calls = calls if calls is not None else Calls()

    def open_dataset(path, progress=False):
        return list(recordings), list(open_findings)

    def load_split(path, recs):
        return {"subject:1": "train", "b.edf": "test"}

    def missing_channels(ctx):
        fs = [Finding("missing_channels", "completeness", "warning" if warn else "info",
                      f"channel {HOSTILE} missing", file=ctx.recordings[0].name if ctx.recordings else None,
                      channel="C<3>")] if ctx.recordings else []
        return [CheckResult("missing_channels", "completeness", 0.5 if fs else None, fs,
                            metrics={"nan": float("nan"), "odd": {"obj": object, "arr": np.array([1.5, np.inf])}})]

    def sampling_rate(ctx):
        raise RuntimeError("boom <b>")

    def event_bounds(ctx):
        for r in ctx.recordings:
            s = ctx.summaries[r.name]
            calls.epochs_seen[r.name] = 0 if s.epochs is None else len(s.epochs["labels"])
            assert s.epochs is None or s.epochs["data"] is s.epochs["X"]
        return CheckResult("event_bounds", "accuracy", float("nan"),
                           [Finding("event_bounds", "accuracy", "info", "late event", file="a.edf", start_s=3.25)])

    def baseline_decoder(ctx, n_permutations=100):
        calls.fitness_ran = True
        calls.n_permutations = n_permutations
        if not ctx.recordings:
            return [CheckResult("baseline_decoder", "fitness", None, summary="no trials")]
        return [CheckResult("baseline_decoder", "fitness", 0.9,
                            metrics={"rows": [{"subject": "1", "task": "all", "accuracy": 0.9, "chance": 0.5,
                                               "chance_p95": 0.62}]})]

    return {
        "sources": types.SimpleNamespace(open_dataset=open_dataset, load_split=load_split),
        "scan": types.SimpleNamespace(summarise=fake_summarise),
        "epochs": types.SimpleNamespace(extract_epochs=fake_extract_epochs),
        "checks_dataset": types.SimpleNamespace(CHECKS=[missing_channels, sampling_rate]),
        "checks_meta": types.SimpleNamespace(CHECKS=[]),
        "checks_signal": types.SimpleNamespace(CHECKS=[]),
        "checks_labels": types.SimpleNamespace(CHECKS=[event_bounds]),
        "fitness": types.SimpleNamespace(CHECKS=[baseline_decoder]),
    }


def install(monkeypatch, modules: dict[str, types.SimpleNamespace]) -> None:
    """Make the runner use ``modules`` instead of cortexlink.quality's."""
    monkeypatch.setattr(runner, "_quality_module", lambda name: modules[name])
