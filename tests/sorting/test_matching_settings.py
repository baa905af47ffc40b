"""cortexlink.sorting.sorters: the sorters' template-matching settings (resolve_matching,
matching_overrides).

A bursting neuron's later spikes are smaller than its template; tridesclous2's peeler drops a
spike whose fitted amplitude is under 0.7 of the template or whose peak is under 5 noise SDs.
The settings are checked on SpikeInterface's own peeler (small spikes found with them, dropped
without), and on what reaches each sorter's matching call.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.sorting.sorters import MATCHING_DEFAULTS, matching_overrides, resolve_matching, run_sorter


def _small_and_large_spikes(small: float = 0.55):
    """8 channels x 6 s of 10 µV noise with one unit injected every 50 ms, alternately at its
    template's amplitude (20 noise SDs) and at ``small`` of it (the later spike of a burst). Returns the recording,
    the SpikeInterface Templates, the spike samples and their amplitudes."""
    import spikeinterface.core as si
    from probeinterface import generate_linear_probe

    fs, n_ch = 30_000.0, 8
    n = int(6.0 * fs)
    rng = np.random.default_rng(0)
    probe = generate_linear_probe(num_elec=n_ch, ypitch=25)
    probe.set_device_channel_indices(np.arange(n_ch))
    noise = si.NumpyRecording([rng.normal(0.0, 10.0, (n, n_ch)).astype("float32")], fs)
    t_ms = np.arange(-30, 60) / fs * 1e3
    wave = -np.exp(-(t_ms / 0.25) ** 2) + 0.35 * np.exp(-((t_ms - 0.6) / 0.4) ** 2)
    decay = np.exp(-np.abs(np.arange(n_ch) - 3) * 25.0 / 30.0)
    templates = (200.0 * wave[:, None] * decay[None, :]).astype("float32")[None]
    times = np.arange(3000, n - 3000, 1500)
    amps = np.where(np.arange(times.size) % 2 == 0, 1.0, small)
    truth = si.NumpySorting.from_samples_and_labels([times], [np.zeros(times.size, np.int64)], fs)
    rec = si.InjectTemplatesRecording(truth, templates, nbefore=30, amplitude_factor=amps, parent_recording=noise)
    rec.set_probe(probe)
    tpl = si.Templates(templates_array=templates, sampling_frequency=fs, nbefore=30, channel_ids=rec.channel_ids,
                       unit_ids=np.array([0]), probe=probe, is_in_uV=False)
    return rec, tpl, times, amps


def _found(rec, tpl, times):
    """Which of ``times`` the peeler assigned to the unit (within 0.2 ms), as the sorters call it:
    through the matching package's attribute, looked up at call time."""
    import spikeinterface.sortingcomponents.matching as matching

    spikes = matching.find_spikes_from_templates(rec, tpl, method="tdc-peeler",
                                                 method_kwargs=dict(noise_levels=np.full(8, 10.0)),
                                                 job_kwargs=dict(n_jobs=1, progress_bar=False))
    got = spikes["sample_index"][spikes["cluster_index"] == 0]
    return np.array([np.any(np.abs(got - t) <= 6) for t in times])


def test_the_floor_lets_tridesclous2s_peeler_keep_a_bursts_smaller_spikes():
    rec, tpl, times, amps = _small_and_large_spikes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        own = _found(rec, tpl, times)
        with matching_overrides("tridesclous2", {"min_amplitude": 0.4}):
            floored = _found(rec, tpl, times)
        after = _found(rec, tpl, times)
    large, small = amps == 1.0, amps < 1.0
    assert own[large].mean() >= 0.95 and floored[large].mean() >= 0.95
    assert own[small].mean() <= 0.1            # the peeler's own 0.7 floor drops them
    assert floored[small].mean() >= 0.9         # 0.4 keeps them
    assert np.array_equal(after, own)           # the sorter's own floor is back after the block


def test_the_lower_threshold_finds_spikes_the_peelers_detectors_missed():
    # 0.07 of the template: 1.4 noise SDs at the trough, at the edge of what the peeler's
    # matched-filter pass detects over 5 (measured: 21 % found at 5, 57 % at 4, 95 % at 3)
    rec, tpl, times, amps = _small_and_large_spikes(small=0.07)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with matching_overrides("tridesclous2", {"min_amplitude": 0.02}):
            floor_only = _found(rec, tpl, times)
        with matching_overrides("tridesclous2", {"min_amplitude": 0.02, "detect_threshold": 4.0}):
            both = _found(rec, tpl, times)
    small = amps < 1.0
    assert floor_only[small].mean() <= 0.35 and both[small].mean() >= 0.45
    assert both[~small].mean() >= 0.95


def test_the_settings_reach_only_the_sorters_own_matching_method(monkeypatch):
    import spikeinterface.sortingcomponents.matching as matching

    calls = []

    def recorder(recording, templates, method=None, method_kwargs=None, **kwargs):
        calls.append((method, dict(method_kwargs or {}), kwargs))
        return "spikes"

    monkeypatch.setattr(matching, "find_spikes_from_templates", recorder)
    with matching_overrides("spykingcircus2", {"min_amplitude": 0.5}):
        # spykingcircus2 passes the method positionally and its own kwargs
        assert matching.find_spikes_from_templates("rec", "tpl", "circus-omp", method_kwargs={"rank": 5},
                                                   job_kwargs={}) == "spikes"
        matching.find_spikes_from_templates("rec", "tpl", method="tdc-peeler", method_kwargs={})
    with matching_overrides("tridesclous2", {"min_amplitude": 0.45, "detect_threshold": 4.0}):
        matching.find_spikes_from_templates("rec", "tpl", method="tdc-peeler",
                                            method_kwargs={"amplitude_limits": (0.7, 1.3)})
    with matching_overrides("mountainsort5", {"min_amplitude": 0.5}):      # no template matching: untouched
        matching.find_spikes_from_templates("rec", "tpl", method="tdc-peeler", method_kwargs={})
    with matching_overrides("tridesclous2", {}):                              # the sorter's own
        matching.find_spikes_from_templates("rec", "tpl", method="tdc-peeler", method_kwargs={})
    assert matching.find_spikes_from_templates is recorder
    assert calls[0] == ("circus-omp", {"rank": 5, "amplitudes": [0.5, float("inf")]}, {"job_kwargs": {}})
    assert calls[1][1] == {}                                                     # another method: left alone
    assert calls[2][1] == {"amplitude_limits": (0.45, 1.3), "detect_threshold": 4.0}  # the upper limit given stays
    assert calls[3][1] == {} and calls[4][1] == {}


def test_the_floor_is_restored_when_the_sort_fails(monkeypatch):
    import spikeinterface.sortingcomponents.matching as matching

    own = matching.find_spikes_from_templates
    with pytest.raises(RuntimeError):
        with matching_overrides("tridesclous2", {"min_amplitude": 0.5}):
            assert matching.find_spikes_from_templates is not own
            raise RuntimeError("sorter failed")
    assert matching.find_spikes_from_templates is own


def test_resolve_matching():
    assert resolve_matching("tridesclous2") == MATCHING_DEFAULTS["tridesclous2"] == resolve_matching("tridesclous2", "auto")
    assert resolve_matching("tridesclous2", "own") == {} == resolve_matching("tridesclous2", None)
    assert resolve_matching("spykingcircus2") == {} and resolve_matching("mountainsort5") == {}
    assert resolve_matching("tridesclous2", "min_amplitude=0.45") == dict(MATCHING_DEFAULTS["tridesclous2"],
                                                                         min_amplitude=0.45)
    assert resolve_matching("tridesclous2", "detect_threshold=own") == {"min_amplitude": 0.5}
    assert resolve_matching("tridesclous2", {"min_amplitude": 0.6}) == {"min_amplitude": 0.6}   # a dict: exactly
    assert resolve_matching("spykingcircus2", "min_amplitude=0.4") == {"min_amplitude": 0.4}
    # one setting for several sorters (bench sort): what a sorter lacks is left out when not strict
    assert resolve_matching("mountainsort5", "min_amplitude=0.4", strict=False) == {}
    assert resolve_matching("spykingcircus2", "detect_threshold=4", strict=False) == {}


@pytest.mark.parametrize("sorter, bad, match", [
    ("tridesclous2", "min_amplitude=0", "min_amplitude must be a number in"),
    ("tridesclous2", "min_amplitude=1.2", "min_amplitude must be a number in"),
    ("tridesclous2", {"min_amplitude": True}, "min_amplitude must be a number in"),
    ("tridesclous2", "detect_threshold=half", "detect_threshold must be a number in"),
    ("tridesclous2", "detect_threshold=1", "detect_threshold must be a number in"),
    ("tridesclous2", "everything", "KEY=VALUE"),
    ("tridesclous2", 0.5, "matching must be"),
    ("tridesclous2", "radius=3", "no matching setting 'radius'"),
    ("spykingcircus2", "detect_threshold=4", "no matching setting 'detect_threshold'"),
    ("mountainsort5", "min_amplitude=0.5", "no template matching"),
])
def test_bad_matching_settings_are_refused(sorter, bad, match):
    with pytest.raises(ConfigError, match=match):
        resolve_matching(sorter, bad)


def test_bad_settings_are_refused_before_sorting(tmp_path):
    rec, _, _, _ = _small_and_large_spikes()
    with pytest.raises(ConfigError, match="min_amplitude"):
        run_sorter(rec, "tridesclous2", tmp_path / "sorter", matching={"min_amplitude": 2.0})
    assert not (tmp_path / "sorter").exists()
