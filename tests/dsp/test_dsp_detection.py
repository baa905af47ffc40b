import numpy as np
import pytest

from cortexlink import Chunk
from cortexlink.dsp import FeatureExtractor, detect_crossings

FS = 30000.0
TOL = int(round(0.4e-3 * FS))  # 0.4 ms


def _match(detected, truth, tol=TOL):
    """(true positives, false positives, false negatives) of sorted sample arrays."""
    if detected.size == 0:
        return 0, 0, truth.size
    j = np.searchsorted(detected, truth)
    left = np.abs(truth - detected[np.clip(j - 1, 0, detected.size - 1)])
    right = np.abs(detected[np.clip(j, 0, detected.size - 1)] - truth)
    tp = int(np.sum(np.minimum(left, right) <= tol))
    return tp, detected.size - tp, truth.size - tp


@pytest.mark.parametrize("at", ["crossing", "trough"])
def test_detection_recall_and_precision_on_injected_spikes(signal, at):
    # SNR 8 in the usual sense: trough amplitude / noise RMS in the 250-5000 Hz band
    noise_uv = 10.0
    band_rms = noise_uv * np.sqrt(2 * (5000 - 250) / FS)
    data, cmap, spikes = signal(32, 60000, noise_uv=noise_uv, spike_uv=8 * band_rms, rate_hz=15.0, seed=3)
    fx = FeatureExtractor(cmap, FS, keep_events=True, calibration_s=0.5)
    fx.apply(data, chunk_size=900)
    ev = fx.events_
    per = ev.per_channel(32, at=at)
    start = fx.calibration_.n_samples + 60
    tp = fp = fn = 0
    for c in range(32):
        d = per[c][per[c] >= start]
        a, b, e = _match(d, spikes[c][spikes[c] >= start])
        tp, fp, fn = tp + a, fp + b, fn + e
    recall, precision = tp / (tp + fn), tp / (tp + fp)
    assert tp > 400
    assert recall >= 0.9 and precision >= 0.9, (recall, precision)


def test_crossing_precedes_trough_within_the_window(signal):
    data, cmap, spikes = signal(8, 30000, spike_uv=120.0, seed=4)
    fx = FeatureExtractor(cmap, FS, keep_events=True, calibration_s=0.2, trough_window_ms=0.5)
    out = fx.apply(data)
    ev = fx.events_
    lag = ev.trough_sample_idx - ev.sample_idx
    assert np.all(lag >= 0) and np.all(lag <= 14)
    assert np.all(ev.trough_uv <= fx.thresholds_uv_[ev.channel_idx] + 1e-4)
    # events and tx agree: one crossing per count, in the bin holding its crossing sample
    tx = out.select("tx")
    counts = np.zeros_like(tx.data)
    rows = (ev.sample_idx - tx.bin_start_samples[0]) // 600
    np.add.at(counts, (rows, ev.channel_idx), 1)
    ok = tx.valid
    np.testing.assert_array_equal(tx.data[ok], counts[ok])
    # dead time: no two crossings on a channel closer than 1.5 ms
    for c in range(8):
        s = ev.sample_idx[ev.channel_idx == c]
        assert np.all(np.diff(s) >= 45)


def test_pop_events_drains_and_detect_crossings_helper(signal):
    data, cmap, _ = signal(6, 12000, spike_uv=120.0, dtype=np.float32, seed=5)
    fx = FeatureExtractor(cmap, FS, keep_events=True, calibration_s=0.1)
    fx.step(Chunk(data[:6000], FS, 0))
    first = fx.pop_events()
    fx.step(Chunk(data[6000:], FS, 6000))
    rest = fx.events_
    assert len(first) > 0 and len(rest) > 0 and rest.sample_idx.min() >= first.sample_idx.max() - 15
    ev = detect_crossings(data, fs_hz=FS, calibration_s=0.1)
    both = np.sort(np.concatenate([first.sample_idx, rest.sample_idx]))
    np.testing.assert_array_equal(np.sort(ev.sample_idx), both)
    assert len(detect_crossings(Chunk(data, FS, 0), calibration_s=0.1)) == len(ev)
