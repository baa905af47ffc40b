"""cortexlink.sorting.merging: a unit the sorter split in two is merged back, in the pipeline too."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.sorting.merging import DEFAULT_MERGE, MERGE_PRESETS, check_merge, merge_units

from _sortdata import write_raw


def _split(gt, seed: int = 0):
    """``gt`` with its busiest unit's spikes dealt at random to two new units (100, 101): the
    over-split a sorter makes of one neuron. Returns (sorting, the split unit's id)."""
    import spikeinterface.core as si

    counts = {u: len(gt.get_unit_spike_train(u)) for u in gt.unit_ids}
    big = max(counts, key=counts.get)
    rng = np.random.default_rng(seed)
    trains = {u: gt.get_unit_spike_train(u) for u in gt.unit_ids if u != big}
    st = gt.get_unit_spike_train(big)
    half = rng.random(st.size) < 0.5
    trains[100], trains[101] = st[half], st[~half]
    return si.NumpySorting.from_unit_dict([{str(k): v for k, v in trains.items()}], gt.sampling_frequency), big


def test_check_merge_names_the_presets():
    assert DEFAULT_MERGE in MERGE_PRESETS
    assert check_merge(None) is None and check_merge("none") is None
    assert check_merge("temporal_splits") == "temporal_splits"
    with pytest.raises(ConfigError, match="x_contaminations"):
        check_merge("everything")


def test_a_split_unit_is_merged_back_and_the_others_are_left(tmp_path):
    from cortexlink.sorting.metrics import analyze
    from cortexlink.sorting.recording import to_si_recording
    from cortexlink.sorting.sorters import preprocess_recording

    path, gt, _ = write_raw(tmp_path, n_channels=8, seconds=30.0, n_units=4)
    sorting, big = _split(gt)
    with warnings.catch_warnings():          # SpikeInterface's (provenance, amplitude fallbacks)
        warnings.simplefilter("ignore")
        rec = preprocess_recording(to_si_recording(path))
        an = analyze(sorting, rec, tmp_path / "an")
        merged, groups, new_ids = merge_units(an, DEFAULT_MERGE, tmp_path / "merged")
        same, g0, _ = merge_units(an, "none", tmp_path / "unused")
    assert [sorted(map(str, g)) for g in groups] == [["100", "101"]]
    assert len(new_ids) == 1 and merged.sorting.get_num_units() == sorting.get_num_units() - 1
    np.testing.assert_array_equal(np.sort(merged.sorting.get_unit_spike_train(new_ids[0])),
                                  np.sort(gt.get_unit_spike_train(big)))
    assert (tmp_path / "merged").is_dir()
    assert same is an and g0 == [] and not (tmp_path / "unused").exists()


def test_the_pipeline_merges_before_metrics_and_says_so(tmp_path, monkeypatch):
    import pynwb

    import cortexlink.sorting.sorters as sorters
    from cortexlink.sorting.pipeline import sort_recording

    path, gt, _ = write_raw(tmp_path, n_channels=8, seconds=30.0, n_units=4)
    split, big = _split(gt)
    monkeypatch.setattr(sorters, "run_sorter", lambda recording, sorter, folder, **kw: split)
    s = sort_recording(path, tmp_path / "out", sorter=sorters.default_sorter(), pca_metrics=False, report=False)
    assert s["merge"]["preset"] == DEFAULT_MERGE
    assert [sorted(g) for g in s["merge"]["groups"]] == [["100", "101"]]
    assert s["n_units"] == 4 and json.loads((tmp_path / "out" / "summary.json").read_text())["merge"] == s["merge"]
    with pynwb.NWBHDF5IO(str(tmp_path / "out" / "units.nwb"), "r") as io:
        assert len(io.read().units) == 4
    assert not (tmp_path / "out" / "cache").exists()       # the merged analyzer moved into out/analyzer
    import spikeinterface.core as si

    assert si.load_sorting_analyzer(tmp_path / "out" / "analyzer").sorting.get_num_units() == 4
    off = sort_recording(path, tmp_path / "off", sorter=sorters.default_sorter(), pca_metrics=False, report=False,
                         merge="none")
    assert off["merge"]["groups"] == [] and off["n_units"] == 5
