import os

import numpy as np
import pytest

from cortexlink.bench.dsp import score_detection


def test_score_detection_counts_hits_within_tolerance_on_the_right_channel():
    truth_s = np.array([100, 200, 300, 400])
    truth_c = np.array([0, 0, 1, 1])
    snr = np.array([10.0, 4.0, 10.0, 2.0])
    # hit, miss (wrong channel), hit (within tol), miss (too far); one false event
    ev_s = np.array([102, 200, 288, 420, 900])
    ev_c = np.array([0, 1, 1, 1, 0])
    r = score_detection(ev_s, ev_c, truth_s, truth_c, snr, tol_samples=12)
    assert r["recall_snr_ge_5"] == 1.0      # spikes at 100 (ch0) and 300 (ch1)
    assert r["recall_snr_3_5"] == 0.0       # 200 on ch0 has no event on ch0 nearby
    assert r["recall_snr_lt_3"] == 0.0      # 400 vs 420: 20 samples > 12
    assert r["precision"] == 2 / 5


def test_score_detection_excludes_channels_and_time_windows():
    truth_s = np.array([100, 5000])
    truth_c = np.array([0, 2])
    snr = np.array([10.0, 10.0])
    ev_s = np.array([50, 5000])
    ev_c = np.array([0, 2])
    r = score_detection(ev_s, ev_c, truth_s, truth_c, snr, tol_samples=12, exclude_channels=[2], t_min=0)
    assert r["n_true_spikes"] == 1 and r["n_events"] == 1
    assert r["recall_snr_ge_5"] == 0.0 and r["precision"] == 0.0
    r = score_detection(ev_s, ev_c, truth_s, truth_c, snr, tol_samples=12, t_min=1000)
    assert r["n_true_spikes"] == 1 and r["recall_snr_ge_5"] == 1.0 and r["precision"] == 1.0


def test_steal_share_from_two_cpu_time_readings():
    from cortexlink.bench.dsp import cpu_times, steal_share

    a = {"user": 100, "nice": 0, "system": 50, "idle": 800, "iowait": 0, "irq": 0, "softirq": 10, "steal": 40}
    b = dict(a, user=160, idle=900, steal=80)               # 200 ticks, 40 of them stolen
    assert steal_share(a, b) == pytest.approx(0.2)
    assert steal_share(a, a) is None and steal_share(None, b) is None
    now = cpu_times()
    if os.path.exists("/proc/stat"):
        assert set(now) >= {"user", "idle", "steal"} and all(v >= 0 for v in now.values())
        later = cpu_times()
        share = steal_share(now, later)
        assert share is None or 0.0 <= share <= 1.0
    else:
        assert now is None
