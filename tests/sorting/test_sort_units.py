"""cortexlink.sorting without running a sorter: recordings, sorters' availability, curation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.sorting.curation import CurationRules, label_units
from cortexlink.sorting.recording import to_si_recording
from cortexlink.sorting.sorters import SORTERS, available_sorters, default_sorter, run_sorter

from _sortdata import GAIN_UV, write_raw


def test_raw_file_becomes_lazy_uv_recording_with_probe(tmp_path):
    path, _gt, counts = write_raw(tmp_path, n_channels=8, seconds=2.0)
    rec = to_si_recording(path)
    assert rec.get_num_channels() == 8 and rec.get_sampling_frequency() == 30000.0
    assert rec.has_probe()
    x = rec.get_traces(start_frame=1000, end_frame=1300)
    np.testing.assert_allclose(x, counts[1000:1300] * np.float32(GAIN_UV), rtol=1e-6)
    import json
    pos = json.loads((tmp_path / "rec.raw.json").read_text())["positions_um"]
    np.testing.assert_allclose(rec.get_channel_locations(), pos)
    # serialisable: SpikeInterface rebuilds it from its kwargs (worker processes, analyzer provenance)
    from spikeinterface.core import load
    again = load(rec.to_dict(recursive=True))
    np.testing.assert_array_equal(again.get_traces(start_frame=0, end_frame=50),
                                  rec.get_traces(start_frame=0, end_frame=50))


def test_session_folder_raw_stream_decoded_to_binary(tmp_path):
    from cortexlink.cli.main import main
    from cortexlink.io.session_log import SessionReader

    sess = tmp_path / "sess"
    assert main(["record", "--sim", "--channels", "4", "--seconds", "1", "--out", str(sess),
                 "--catalogue", "none", "--status-interval", "0"]) == 0
    rec = to_si_recording(sess, cache_dir=tmp_path / "cache")
    r = SessionReader(sess)
    s, rows = r.read_array("raw")
    assert rec.get_num_samples() == s[-1] - s[0] + 1 == len(s)
    uv = rows.astype(np.float32) * r.channel_map.gain_uv.astype(np.float32) + r.channel_map.offset_uv
    np.testing.assert_allclose(rec.get_traces(start_frame=0, end_frame=500), uv[:500], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(rec.get_channel_locations(), r.channel_map.positions_um[:, :2])
    with pytest.raises(ValidationError, match="cache_dir"):
        to_si_recording(sess)
    # the same session exported to NWB reads back to the same µV samples and positions
    nwb = tmp_path / "s.nwb"
    assert main(["export", str(sess), "--to", str(nwb)]) == 0
    rn = to_si_recording(nwb)
    assert rn.get_num_samples() == rec.get_num_samples()
    np.testing.assert_allclose(rn.get_traces(start_frame=0, end_frame=500), uv[:500], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(rn.get_channel_locations(), rec.get_channel_locations())


def test_bad_inputs_are_refused_naming_the_file(tmp_path):
    with pytest.raises(ValidationError, match="no_such.nwb"):
        to_si_recording(tmp_path / "no_such.nwb")
    png = tmp_path / "image.nwb"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(ValidationError, match="image.nwb"):
        to_si_recording(png)
    path, _gt, _ = write_raw(tmp_path, n_channels=8, seconds=0.5)
    with open(path, "ab") as f:             # half a sample at the end: a truncated file
        f.write(b"\x01\x02\x03")
    with pytest.raises(ValidationError, match="rec.raw"):
        to_si_recording(path)
    rec = to_si_recording(path, allow_truncated=True)
    assert rec.get_num_samples() == 15000
    empty = tmp_path / "sess"
    empty.mkdir()
    (empty / "manifest.json").write_text("{not json")
    with pytest.raises(ValidationError, match="sess"):
        to_si_recording(empty, cache_dir=tmp_path / "c")


def test_available_sorters_and_refusals(tmp_path):
    av = available_sorters()
    assert list(av) == list(SORTERS)
    assert all(v is None or isinstance(v, str) and v for v in av.values())
    assert sum(v is None for v in av.values()) >= 2          # two CPU sorters from PyPI run here
    assert default_sorter() == next(k for k, v in av.items() if v is None)
    path, _gt, _ = write_raw(tmp_path, n_channels=8, seconds=0.5)
    rec = to_si_recording(path)
    with pytest.raises(ConfigError, match="sorter must be one of"):
        run_sorter(rec, "klustakwik", tmp_path / "s")
    with pytest.raises(ConfigError, match="no parameter"):
        run_sorter(rec, default_sorter(), tmp_path / "s", params={"not_a_param": 1})
    from spikeinterface.core import NumpyRecording
    bare = NumpyRecording(np.zeros((100, 2), np.float32), 30000.0)
    with pytest.raises(ValidationError, match="probe"):
        run_sorter(bare, default_sorter(), tmp_path / "s")


def _metrics(**cols):
    return pd.DataFrame(cols, index=list(range(len(next(iter(cols.values()))))))


def test_curation_labels_and_reasons():
    m = _metrics(snr=[8.0, 3.0, 1.0, 9.0, 6.0], num_spikes=[500, 400, 300, 5, 200],
                 isi_violations_ratio=[0.0, 0.1, 0.0, 0.0, 2.0], presence_ratio=[1.0, 0.95, 1.0, 1.0, 0.5],
                 firing_rate=[5.0, 4.0, 3.0, 0.5, 2.0], amplitude_cutoff=[0.01, np.nan, 0.0, 0.0, 0.3])
    lab = label_units(m)
    assert lab[0] == ("good", "passes every rule")
    assert lab[1][0] == "mua" and lab[1][1] == "snr 3 < 4"        # NaN amplitude_cutoff is not held against it
    assert lab[2][0] == "noise" and "snr 1 < 2" in lab[2][1]
    assert lab[3][0] == "noise" and "num_spikes 5 < 10" in lab[3][1]
    assert lab[4][0] == "mua"
    for part in ("isi_violations_ratio 2 > 0.5", "presence_ratio 0.5 < 0.8", "amplitude_cutoff 0.3 > 0.1"):
        assert part in lab[4][1]
    loose = CurationRules().with_overrides(["snr_min=2.5"])
    assert label_units(m, loose)[1][0] == "good"
    m2 = m.drop(columns=["presence_ratio"])
    assert label_units(m2)[0] == ("mua", "presence_ratio not computable")


def test_curation_rules_from_yaml_and_bad_rules(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("snr_min: 5\nfiring_rate_min_hz: 0.5\n")
    r = CurationRules.from_yaml(f)
    assert r.snr_min == 5 and r.firing_rate_min_hz == 0.5 and r.presence_ratio_min == 0.8
    f.write_text("snr_minimum: 5\n")
    with pytest.raises(ConfigError, match="snr_minimum"):
        CurationRules.from_yaml(f)
    with pytest.raises(ConfigError, match="presence_ratio_min"):
        CurationRules(presence_ratio_min=2.0)
    with pytest.raises(ConfigError, match="snr_min"):
        CurationRules(snr_min=float("nan"))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        CurationRules().with_overrides(["snr_min"])
    with pytest.raises(ConfigError, match="must be a number"):
        CurationRules().with_overrides(["snr_min=high"])


def test_a_sort_that_finds_no_units_still_writes_valid_outputs(tmp_path, monkeypatch):
    import json

    import pynwb
    from spikeinterface.core import NumpySorting

    import cortexlink.sorting.sorters as sorters
    from cortexlink.sorting.pipeline import sort_recording

    def no_units(recording, sorter, folder, **kw):
        return NumpySorting.from_samples_and_labels([np.zeros(0, int)], [np.zeros(0, int)], 30000.0, unit_ids=[])

    monkeypatch.setattr(sorters, "run_sorter", no_units)
    path, _gt, _ = write_raw(tmp_path, n_channels=8, seconds=1.0)
    s = sort_recording(path, tmp_path / "out", sorter=default_sorter(), pca_metrics=False)
    assert s["n_units"] == 0 and s["n_units_by_label"] == {"good": 0, "mua": 0, "noise": 0}
    assert not pynwb.validate(path=str(tmp_path / "out" / "units.nwb"))
    assert "no units found" in (tmp_path / "out" / "report.html").read_text()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_units"] == 0


def test_presence_ratio_counts_ten_bins_up_to_a_minute(tmp_path):
    import warnings

    import spikeinterface.core as si

    from cortexlink.sorting.metrics import PRESENCE_BINS, analyze, presence_bin_s, quality_metrics

    assert PRESENCE_BINS == 10
    assert presence_bin_s(30.0) == 3.0 and presence_bin_s(3600.0) == 60.0 and presence_bin_s(4.0) == 1.0
    fs = 30000.0
    rec = si.generate_recording(num_channels=4, durations=[20.0], sampling_frequency=fs, seed=0)
    rng = np.random.default_rng(0)
    a = np.sort(rng.choice(np.arange(100, int(20 * fs) - 100), 60, replace=False))       # 3 Hz, all along
    b = np.arange(int(0.05 * fs), int(14 * fs), int(0.2 * fs))                           # 5 Hz, silent after 14 s
    c = np.arange(int(0.5 * fs), int(20 * fs), int(2.0 * fs))                            # one spike every 2 s
    times = np.concatenate([a, b, c])
    labels = np.concatenate([np.zeros(a.size, int), np.ones(b.size, int), np.full(c.size, 2)])
    order = np.argsort(times, kind="stable")
    sorting = si.NumpySorting.from_samples_and_labels([times[order]], [labels[order]], fs)
    with warnings.catch_warnings():          # SpikeInterface's (no provenance to save, amplitude fallbacks)
        warnings.simplefilter("ignore")
        m = quality_metrics(analyze(sorting, rec, tmp_path / "an"), pca=False)
    # 2 s bins: the unit silent for the last 6 of 20 s is present in 7 of 10; the slow regular one in
    # every bin (in half of 1 s bins)
    assert m.loc[1, "presence_ratio"] == pytest.approx(0.7)
    assert m.loc[2, "presence_ratio"] == pytest.approx(1.0)
    assert m.loc[0, "presence_ratio"] >= 0.9
