"""Recordings of the real EEG (EEGMMIDB subject 1) built directly with MNE, for the label and fitness tests.

These tests must not wait for ``quality.sources``: each file becomes a :class:`Recording` here,
read lazily (``preload=False``) and converted from volts to µV.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from cortexlink.quality.model import Event, Recording

#: Runs of imagined opening/closing of both fists (T1) vs both feet (T2).
IMAGINED_FISTS_FEET = (6, 10, 14)


def edf_recording(path: Path, root: Path) -> Recording:
    """One EDF file as a lazily read :class:`Recording` (samples in µV)."""
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw_edf(path, preload=False, verbose="ERROR")
    types = raw.get_channel_types()

    def reader(start: int, stop: int) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return raw.get_data(start=start, stop=stop) * 1e6

    events = [Event(float(o), float(d), str(lab)) for o, d, lab in
              zip(raw.annotations.onset, raw.annotations.duration, raw.annotations.description)]
    return Recording(path=path, name=path.relative_to(root).as_posix(), kind="eeg", fmt="edf",
                     fs_hz=float(raw.info["sfreq"]), n_samples=int(raw.n_times),
                     channel_names=list(raw.ch_names), channel_types=list(types), units=["uV"] * len(types),
                     subject="S001", events=events, reader=reader)


def shared_data_dir() -> Path:
    """``$CORTEXLINK_SHARED_DATA`` or ``../shared/data`` beside the repository (as tests/conftest.py's)."""
    import os

    return Path(os.environ.get("CORTEXLINK_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def imagined_fists_feet(shared_data: Path | None = None) -> list[Recording]:
    """Runs 6, 10 and 14 of subject 1 (skips the test when the files are absent; fails it under CI=true)."""
    from _shared_data import need

    root = (shared_data_dir() if shared_data is None else shared_data) / "eeg_motor_imagery"
    paths = [need(root / f"S001R{r:02d}.edf", f"EEGMMIDB runs {IMAGINED_FISTS_FEET}") for r in IMAGINED_FISTS_FEET]
    return [edf_recording(p, root) for p in paths]


def synthetic_mi(name: str, seed: int, *, informative: bool = True, n_trials: int = 30, fs: float = 160.0,
                 n_ch: int = 6, extra_label: str | None = None, subject: str = "1") -> Recording:
    """Synthetic motor-imagery EEG: T1/T2 trials every 5 s; in T2 trials a 12 Hz rhythm grows on
    channel 0 when ``informative``; ``extra_label`` relabels the first 10 trials."""
    rng = np.random.default_rng(seed)
    spacing_s = 5.0
    n = int((n_trials * spacing_s + 5) * fs)
    data = rng.normal(0, 5, (n_ch, n))
    labels = np.array(["T1", "T2"] * (n_trials // 2))
    rng.shuffle(labels)
    if extra_label:
        labels[:10] = extra_label
    t = np.arange(int(3 * fs)) / fs
    events = []
    for i, lab in enumerate(labels):
        on = 2.0 + i * spacing_s
        events.append(Event(on, 4.0, str(lab)))
        if informative and lab == "T2":
            a = int(on * fs)
            data[0, a:a + len(t)] += 8 * np.sin(2 * np.pi * 12 * t + rng.uniform(0, 6.3))
    return Recording(path=Path(name), name=name, kind="eeg", fmt="edf", fs_hz=fs, n_samples=n,
                     channel_names=[f"C{i}" for i in range(n_ch)], channel_types=["eeg"] * n_ch,
                     units=["uV"] * n_ch, subject=subject, events=events, reader=lambda a, b: data[:, a:b])
