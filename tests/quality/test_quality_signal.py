"""Signal-quality scan and checks: the real EEG stays clean, damaged copies are caught at the place."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from _shared_data import SHARED_DATA, need

from cortexlink.core.errors import ConfigError
from cortexlink.quality import checks_signal, scan
from cortexlink.quality.model import DatasetContext, FeatureAccess, Recording, severity_rank

EEG_DIR = SHARED_DATA / "eeg_motor_imagery"
#: skips a test without the real EDF files (fails it under CI=true)
needs_eeg = pytest.mark.usefixtures("_eeg_files")
DAMAGE_CHECKS = ("flat_channels", "clipped_channels", "line_noise")



@pytest.fixture
def _eeg_files():
    need(EEG_DIR, "the real EEG recordings", glob="*.edf")

def _mne_recording(path: Path, opener=None, name: str | None = None, damage=None) -> Recording:
    import mne

    opener = opener or mne.io.read_raw_edf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = opener(path, preload=False, verbose="error")

    def reader(start: int, stop: int) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = raw.get_data(start=start, stop=stop) * 1e6
        return damage(x, start) if damage is not None else x

    n = len(raw.ch_names)
    return Recording(path=Path(path), name=name or Path(path).name, kind="eeg", fmt="edf",
                     fs_hz=float(raw.info["sfreq"]), n_samples=int(raw.n_times),
                     channel_names=list(raw.ch_names), channel_types=["eeg"] * n, units=["uV"] * n,
                     reader=reader)


def _array_recording(x: np.ndarray, fs: float, name: str = "synth.edf", kind: str = "eeg",
                     names: list[str] | None = None) -> Recording:
    c = x.shape[0]
    return Recording(path=Path(name), name=name, kind=kind, fmt="edf", fs_hz=fs, n_samples=x.shape[1],
                     channel_names=names or [f"C{i:02d}" for i in range(c)],
                     channel_types=[kind if kind == "implant" else "eeg"] * c, units=["uV"] * c,
                     reader=lambda a, b: x[:, a:b].copy())


def _run(recs: list[Recording], **iu) -> dict[str, list]:
    ctx = DatasetContext(root=Path("."), recordings=recs, summaries={r.name: scan.summarise(r) for r in recs},
                         intended_use=iu)
    out = {}
    for fn in checks_signal.CHECKS:
        for res in fn(ctx):
            out[res.check] = res
    return out


def _bad(results, check: str, level: str = "warning") -> list:
    return [f for f in results[check].findings if severity_rank(f.severity) >= severity_rank(level)]


def _eeg_like(fs: float = 160.0, seconds: float = 60.0, c: int = 8, seed: int = 0) -> np.ndarray:
    """1/f-ish noise plus a 10 Hz rhythm, ~20 µV RMS, quantised to 0.1 µV."""
    rng = np.random.default_rng(seed)
    n = int(fs * seconds)
    white = rng.normal(0.0, 1.0, (c, n))
    pink = np.cumsum(white, axis=1)
    pink -= np.linspace(pink[:, :1], pink[:, -1:], n, axis=1).reshape(c, n)
    x = 20.0 * pink / pink.std(axis=1, keepdims=True) + 10.0 * np.sin(2 * np.pi * 10.0 * np.arange(n) / fs)
    x += 3.0 * rng.normal(size=(c, n))
    return np.round(x, 1)


# --- the real EEG ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_results():
    recs = [_mne_recording(p) for p in sorted(EEG_DIR.glob("*.edf"))]
    return recs, _run(recs)


@needs_eeg
def test_real_eeg_has_no_flat_clipped_or_line_noise_findings(real_results):
    recs, res = real_results
    assert len(recs) == 12
    for check in DAMAGE_CHECKS + ("bad_channels", "snr"):
        assert _bad(res, check) == [], check
        assert res[check].score == 1.0
    # the figures behind it: clip fraction and line ratio stay far below the thresholds
    assert max(res["clipped_channels"].metrics["max_per_file"].values()) < checks_signal.CLIP_FRACTION_WARN
    assert max(res["line_noise"].metrics["max_per_file"].values()) < checks_signal.LINE_RATIO_WARN


@pytest.mark.req("SR-51")
@needs_eeg
def test_real_eeg_clipped_channel_is_caught_with_file_channel_and_start():
    path = sorted(EEG_DIR.glob("*.edf"))[3]
    clean = _mne_recording(path)
    x = clean.read(0, clean.n_samples)
    k = 10
    rail = 1.5 * float(np.std(x[k]))

    def clip(block: np.ndarray, start: int) -> np.ndarray:
        block = block.copy()
        block[k] = np.clip(block[k], -rail, rail)
        return block

    rec = _mne_recording(path, damage=clip, name="damaged/" + path.name)
    res = _run([clean, rec])
    found = _bad(res, "clipped_channels")
    assert [(f.file, f.channel) for f in found] == [(rec.name, clean.channel_names[k])]
    first = np.flatnonzero(np.abs(x[k]) >= rail)[0] / clean.fs_hz
    assert found[0].start_s == pytest.approx(first, abs=2 / clean.fs_hz)
    assert f"{rail:.6g}" in found[0].detail or f"{-rail:.6g}" in found[0].detail
    assert res["clipped_channels"].score == pytest.approx(1 - 1 / (2 * clean.n_channels))


@needs_eeg
@pytest.mark.parametrize("mains", [60.0, 50.0])
def test_real_eeg_line_noise_channel_is_caught(mains):
    path = sorted(EEG_DIR.glob("*.edf"))[5]
    clean = _mne_recording(path)
    k = 33
    rms = float(np.std(clean.read(0, clean.n_samples)[k]))
    amp = 10.0 * rms * np.sqrt(2.0)

    def hum(block: np.ndarray, start: int) -> np.ndarray:
        block = block.copy()
        t = (start + np.arange(block.shape[1])) / clean.fs_hz
        block[k] += amp * np.sin(2 * np.pi * mains * t)
        return block

    rec = _mne_recording(path, damage=hum, name="hum.edf")
    assert scan.summarise(clean).line_hz == 60.0        # the lab's own (weak) mains, US
    summary = scan.summarise(rec)
    assert summary.line_hz == 60.0
    assert summary.extra["line_hz_per_channel"][k] == mains
    res = _run([rec])
    found = _bad(res, "line_noise")
    assert [(f.file, f.channel) for f in found] == [("hum.edf", clean.channel_names[k])]
    assert found[0].severity == "error" and found[0].start_s == 0.0
    assert found[0].detail.endswith(f"at {mains:g} Hz")


@needs_eeg
def test_content_hash_same_samples_same_hash_across_names_and_fif(tmp_path):
    import mne

    path = sorted(EEG_DIR.glob("*.edf"))[1]
    a = scan.summarise(_mne_recording(path))
    b = scan.summarise(_mne_recording(path, name="copy_under_other_name.edf"))
    assert a.content_hash == b.content_hash and len(a.content_hash) == 64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
        raw.save(tmp_path / "same_raw.fif", verbose="error")
        mne.export.export_raw(tmp_path / "same.edf", raw, fmt="edf", verbose="error")
    fif = scan.summarise(_mne_recording(tmp_path / "same_raw.fif", opener=mne.io.read_raw_fif))
    assert fif.content_hash == a.content_hash          # float32 in FIF: values round the same
    # MNE's EDF export rescales (values move by < 0.01 µV, some cross a rounding edge): the hash may
    # differ, the fingerprint stays next to the original's and far from another run's
    edf = scan.summarise(_mne_recording(tmp_path / "same.edf"))
    other = scan.summarise(_mne_recording(sorted(EEG_DIR.glob("*.edf"))[2]))
    assert np.abs(edf.fingerprint - a.fingerprint).max() < 1e-3
    assert np.abs(other.fingerprint - a.fingerprint).max() > 0.05
    changed = _mne_recording(path, damage=lambda x, s: x + (np.arange(x.shape[1]) + s == 1000) * 1.0)
    assert scan.summarise(changed).content_hash != a.content_hash


# --- synthetic EEG -----------------------------------------------------------------------------------

def test_streaming_is_independent_of_block_and_group_size(monkeypatch):
    x = _eeg_like(fs=250.0, seconds=23.4, c=12)
    x[3, 1000:1500] = x[3].max()                       # a rail spanning block edges
    rec = _array_recording(x, 250.0)
    ref = scan.summarise(rec, block_s=10.0)
    monkeypatch.setattr(scan, "MAX_GROUP_VALUES", 2000)
    other = scan.summarise(rec, block_s=3.0)
    assert other.content_hash == ref.content_hash
    for f in ("rms_uv", "ptp_uv", "clip_fraction", "flat_fraction", "artefact_fraction"):
        np.testing.assert_allclose(getattr(other.stats, f), getattr(ref.stats, f), rtol=1e-9, err_msg=f)
    np.testing.assert_allclose(other.stats.line_ratio, ref.stats.line_ratio, rtol=0.3)
    assert ref.stats.clip_fraction[3] == pytest.approx(500 / x.shape[1], rel=0.01)
    assert ref.extra["clip_first_s"][3] == pytest.approx(1000 / 250.0)
    w = 250                                             # RMS after removing each 1-s window's mean
    full = x[:, : 23 * w].reshape(12, 23, w)
    dev = np.concatenate([(full - full.mean(axis=-1, keepdims=True)).reshape(12, -1),
                          x[:, 23 * w:] - x[:, 23 * w:].mean(axis=1, keepdims=True)], axis=1)
    np.testing.assert_allclose(ref.stats.rms_uv, np.sqrt((dev ** 2).mean(axis=1)), rtol=1e-9)


@pytest.mark.req("SR-51")
def test_flat_and_bad_channels_on_synthetic_eeg():
    fs = 200.0
    x = _eeg_like(fs=fs, seconds=40.0, c=10, seed=3)
    x[2, int(12 * fs):] = 7.0                           # goes flat 12 s in
    x[6] *= 12.0                                        # a channel 12x too loud
    res = _run([_array_recording(x, fs, name="s.edf")])
    flat = _bad(res, "flat_channels")
    assert [(f.channel, f.start_s, f.severity) for f in flat] == [("C02", 12.0, "error")]
    bad = _bad(res, "bad_channels")
    assert [f.channel for f in bad] == ["C06"]
    assert _bad(res, "clipped_channels") == []          # a flat channel is flat, not clipped
    assert res["flat_channels"].score == pytest.approx(0.9)


def test_artefacts_and_snr_on_synthetic_eeg():
    fs = 200.0
    rng = np.random.default_rng(5)
    x = _eeg_like(fs=fs, seconds=30.0, c=6, seed=4)
    x[1] += np.where((np.arange(x.shape[1]) // int(fs)) % 10 != 0, 400.0, 0.0) * \
        (np.arange(x.shape[1]) % int(fs) == 50)        # a 400 µV spike in 9 of every 10 seconds
    x[4] = rng.normal(0.0, 20.0, x.shape[1])           # white noise: no EEG band above the floor
    res = _run([_array_recording(x, fs, name="a.edf")])
    art = _bad(res, "artefacts")
    assert [(f.channel, f.start_s) for f in art] == [("C01", 1.0)]
    assert res["artefacts"].metrics["mean_fraction_by_type"]["eeg"]["a.edf"] == pytest.approx(0.9 / 6, abs=0.02)
    snr = {f.channel for f in _bad(res, "snr")}
    assert "C04" in snr and not snr & {"C00", "C02", "C03", "C05"}   # (C01's spikes are broadband too)


def test_thresholds_can_be_overridden_and_are_validated():
    fs = 200.0
    x = _eeg_like(fs=fs, seconds=20.0, c=4)
    x[0] += 200.0 * np.sin(2 * np.pi * 50.0 * np.arange(x.shape[1]) / fs)
    rec = _array_recording(x, fs)
    assert len(_bad(_run([rec]), "line_noise")) == 1
    assert _bad(_run([rec], thresholds={"LINE_RATIO_WARN": 1e9, "line_ratio_error": 1e10}), "line_noise") == []
    with pytest.raises(ConfigError, match="line_ratio_warn"):
        _run([rec], thresholds={"line_ratio_warn": "high"})
    with pytest.raises(ConfigError, match="block_s"):
        scan.summarise(rec, block_s=0)
    with pytest.raises(ConfigError, match="line_hz"):
        scan.summarise(rec, line_hz=-50)


def test_recording_without_samples_or_features_gives_no_stats():
    rec = Recording(path=Path("e.edf"), name="e.edf", kind="eeg", fmt="edf", fs_hz=None, n_samples=0,
                    channel_names=["a"], channel_types=["eeg"], units=[None])
    s = scan.summarise(rec)
    assert s.stats is None and s.content_hash is None
    res = _run([rec])
    assert all(r.score is None for r in res.values())


# --- implant -----------------------------------------------------------------------------------------

@pytest.mark.req("SR-51")
def test_implant_raw_noise_crossings_dead_saturated():
    fs, seconds, c = 30000.0, 3.0, 16
    rng = np.random.default_rng(11)
    n = int(fs * seconds)
    x = rng.normal(0.0, 10.0, (c, n))
    x[5] *= 0.05                                        # dead electrode
    x[9] = np.clip(x[9] * 8.0, -60.0, 60.0)             # saturated
    spikes = np.zeros(n)
    spikes[rng.choice(n - 40, 900, replace=False)] = 1.0
    x[12] += np.convolve(spikes, -120.0 * np.hanning(30), mode="same")   # 300 spikes/s of -120 µV
    rec = _array_recording(x, fs, name="ses", kind="implant")
    s = scan.summarise(rec)
    band = 10.0 * np.sqrt((5000.0 - 300.0) / (fs / 2))   # white noise seen through the spike band
    quiet = [i for i in range(c) if i not in (5, 9, 12)]
    np.testing.assert_allclose(s.stats.noise_rms_uv[quiet], band, rtol=0.15)
    assert np.all(s.stats.crossing_rate_hz[quiet] < 5.0)
    assert 150.0 < s.stats.crossing_rate_hz[12] < 350.0
    assert np.all(s.stats.snr_db[quiet] > 8.0) and s.stats.snr_db[12] > s.stats.snr_db[quiet].max()
    res = _run([rec])
    by_channel = {f.channel: f.detail for f in res["implant_noise"].findings}
    assert set(by_channel) == {"C05", "C09", "C12"}
    assert "dead" in by_channel["C05"] and "saturated" in by_channel["C09"]
    assert "implausibly high" in by_channel["C12"]
    assert res["implant_noise"].score == pytest.approx(1 - 3 / 16)
    assert [f.channel for f in _bad(res, "clipped_channels")] == ["C09"]
    assert res["bad_channels"].score is None            # implant electrodes are implant_noise's


def _features_recording(tx: np.ndarray, sbp: np.ndarray, bin_s: float, block: int = 37,
                        gap_after: int | None = None, gap: int = 0) -> Recording:
    n_bins, c = tx.shape
    names = [f"ch{i:04d}" for i in range(c)]
    data = np.concatenate([tx, sbp], axis=1)

    def blocks():
        for s in range(0, n_bins, block):
            yield s + (gap if gap_after is not None and s >= gap_after else 0), data[s:s + block]

    fa = FeatureAccess(bin_s=bin_s, names=[f"{n}/tx" for n in names] + [f"{n}/sbp" for n in names],
                       n_bins=n_bins, iter_blocks=blocks, behaviour=lambda: None)
    return Recording(path=Path("ses"), name="ses", kind="implant", fmt="session", fs_hz=None, n_samples=0,
                     channel_names=names, channel_types=["implant"] * c, units=["uV"] * c, features=fa)


@pytest.mark.req("SR-51")
def test_implant_features_rates_levels_dead_and_hot_electrodes():
    bin_s, n_bins, c = 0.02, 1500, 8
    rng = np.random.default_rng(2)
    tx = rng.poisson(0.2, (n_bins, c)).astype(float)    # 10 Hz
    sbp = rng.normal(8.0, 0.5, (n_bins, c))
    tx[:, 3], sbp[:, 3] = 0.0, 4.0                       # dead: no crossing, constant sbp
    tx[:, 6] = rng.poisson(6.0, n_bins)                 # 300 Hz: implausible
    tx[:, 7], sbp[:, 7] = np.nan, np.nan                # left out by the recording pipeline
    tx[:50], sbp[:50] = np.nan, np.nan                  # no complete bin in the first second
    rec = _features_recording(tx, sbp, bin_s)
    s = scan.summarise(rec)
    np.testing.assert_allclose(s.stats.crossing_rate_hz[:7], tx[50:, :7].mean(axis=0) / bin_s)
    np.testing.assert_allclose(s.stats.rms_uv[:7], sbp[50:, :7].mean(axis=0) * np.sqrt(np.pi / 2))
    np.testing.assert_allclose(s.stats.noise_rms_uv, s.stats.rms_uv)      # a spike-band noise estimate
    assert np.isnan(s.stats.crossing_rate_hz[7]) and np.isnan(s.stats.rms_uv[7])
    np.testing.assert_allclose(s.extra["missing_fraction"], [50 / n_bins] * 7 + [1.0])
    assert s.stats.flat_fraction[3] == 1.0 and np.all(s.stats.flat_fraction[[0, 1, 2, 4, 5, 6]] == 0.0)
    assert np.isnan(s.stats.flat_fraction[7]) and s.extra["flat_first_s"][3] == 1.0
    assert np.isnan(s.stats.line_ratio).all() and s.content_hash and s.fingerprint.shape == (2 * c,)
    # the same features in other blocks: same hash and stats
    s2 = scan.summarise(_features_recording(tx, sbp, bin_s, block=500))
    assert s2.content_hash == s.content_hash
    np.testing.assert_allclose(s2.fingerprint, s.fingerprint)
    res = _run([rec])
    found = {f.channel: f for f in res["implant_noise"].findings}
    assert set(found) == {"ch0003", "ch0006", "ch0007"}
    assert found["ch0003"].severity == "error" and found["ch0003"].start_s == 1.0
    assert "no data" in found["ch0007"].detail
    assert "implausibly high" in found["ch0006"].detail
    assert [f.channel for f in _bad(res, "flat_channels")] == ["ch0003"]
    assert res["implant_noise"].metrics["per_file"]["ses"]["level_source"].startswith("spike-band level")


def test_many_channels_are_processed_in_groups(monkeypatch):
    fs, c = 2000.0, 1024
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 10.0, (c, int(fs * 2.5)))
    x[700] = 0.0
    rec = _array_recording(x, fs, name="big", kind="implant")
    monkeypatch.setattr(scan, "MAX_GROUP_VALUES", 200_000)      # ~40 channels per group
    s = scan.summarise(rec)
    assert s.stats.rms_uv.shape == (c,)
    assert s.stats.flat_fraction[700] == 1.0 and np.count_nonzero(s.stats.flat_fraction) == 1
    np.testing.assert_allclose(np.delete(s.stats.rms_uv, 700), 10.0, rtol=0.05)


def test_implant_features_times_follow_bin_indices_across_a_gap():
    bin_s, n_bins, c = 0.02, 1000, 4
    rng = np.random.default_rng(8)
    tx = rng.poisson(0.3, (n_bins, c)).astype(float)
    sbp = rng.normal(6.0, 0.4, (n_bins, c))
    tx[500:, 0], sbp[500:, 0] = 0.0, 3.0               # electrode 0 dies at stored bin 500
    s = scan.summarise(_features_recording(tx, sbp, bin_s, block=50, gap_after=250, gap=100))
    assert s.extra["flat_first_s"][0] == pytest.approx((500 + 100) * bin_s)   # 100 bins missing before it
    assert s.stats.flat_fraction[0] == pytest.approx(10 / 20)
    assert np.isnan(s.extra["flat_first_s"][1:]).all()


def test_nan_samples_are_counted_and_read_as_zero():
    fs = 200.0
    x = _eeg_like(fs=fs, seconds=20.0, c=4, seed=9)
    x[1, 1000:2000] = np.nan                            # 5 s of NaN
    s = scan.summarise(_array_recording(x, fs))
    np.testing.assert_allclose(s.extra["missing_fraction"], [0.0, 0.25, 0.0, 0.0])
    assert s.stats.flat_fraction[1] == pytest.approx(5 / 20) and s.extra["flat_first_s"][1] == 5.0
    assert np.isfinite(s.stats.rms_uv).all() and np.isfinite(s.stats.line_ratio).all()
    # below 2.5 x 50 Hz no mains can be measured: NaN, not a guess
    low = scan.summarise(_array_recording(x[:, ::2], fs / 2))
    assert np.isnan(low.stats.line_ratio).all() and low.line_hz is None


@pytest.mark.req("SR-51")
def test_simulated_implant_dead_and_saturating_electrodes_are_the_ones_found():
    from cortexlink.sim.implant import SimulatedImplant

    imp = SimulatedImplant(n_channels=32, seed=3, n_dead=3, n_saturating=2)
    x = imp.read_seconds(2.0).data.T.astype(np.float64) * imp.channel_map.gain_uv[:, None]
    gt = imp.ground_truth()
    rec = _array_recording(x, imp.fs_hz, name="sim", kind="implant", names=[f"e{i}" for i in range(32)])
    s = scan.summarise(rec)
    assert s.line_hz == imp.config.line_noise_hz                   # the simulator's mains
    res = _run([rec])
    dead = {f.channel for f in res["implant_noise"].findings if "dead" in f.detail}
    saturated = {f.channel for f in res["implant_noise"].findings if "saturated" in f.detail}
    assert dead == {f"e{i}" for i in gt.dead_channels}
    assert saturated == {f"e{i}" for i in gt.saturating_channels}
    assert {f.channel for f in _bad(res, "clipped_channels")} == saturated
    good = np.setdiff1d(np.arange(32), np.r_[gt.dead_channels, gt.saturating_channels])
    assert np.all(s.stats.crossing_rate_hz[good] < checks_signal.IMPLANT_MAX_RATE_HZ)
