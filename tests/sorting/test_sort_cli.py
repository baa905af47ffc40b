"""`cortexlink sort` end to end on a small ground-truth recording (one sorter run, shared)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cortexlink.cli.main import main
from cortexlink.sorting.curation import LABELS
from cortexlink.sorting.sorters import available_sorters, resolve_matching

from _sortdata import write_raw

#: The sorter the test runs: spykingcircus2 (45-63 s here, most of it just-in-time compilation),
#: else whichever runs. mountainsort5 takes 7 s on this recording but finds only 2 of its 4 units.
SORTER = "spykingcircus2" if available_sorters()["spykingcircus2"] is None else \
    next(k for k, v in available_sorters().items() if v is None)


@pytest.fixture(scope="module")
def sorted_out(tmp_path_factory):
    d = tmp_path_factory.mktemp("sort")
    path, gt, _ = write_raw(d, n_channels=8, seconds=10.0, n_units=4, seed=1)
    out = d / "out"
    rules = d / "rules.yaml"
    rules.write_text("snr_min: 3.5\n")
    params = d / "params.yaml"                  # the sorter's own parameters, passed through
    params.write_text("seed: 7\n" if SORTER == "spykingcircus2" else "{}\n")
    rc = main(["sort", str(path), "--out", str(out), "--sorter", SORTER, "--curation", str(rules),
               "--params", str(params),
               "--rule", "firing_rate_min_hz=0.2", "--species", "Homo sapiens", "--json"])
    assert rc == 0
    return path, gt, out


def test_outputs_and_summary(sorted_out, capsys):
    _path, _gt, out = sorted_out
    for name in ("units.nwb", "sorting", "analyzer", "metrics.csv", "report.html", "summary.json"):
        assert (out / name).exists(), name
    assert not (out / "sorter").exists() and not (out / "cache").exists()
    s = json.loads((out / "summary.json").read_text())
    assert s["sorter"] == SORTER and s["format"] == "cortexlink-sort"
    assert s["params"] == ({"seed": 7} if SORTER == "spykingcircus2" else {})
    assert s["matching"] == resolve_matching(SORTER)           # cortexlink's template-matching settings
    assert s["curation_rules"]["snr_min"] == 3.5 and s["curation_rules"]["firing_rate_min_hz"] == 0.2
    assert sum(s["n_units_by_label"].values()) == s["n_units"] > 0
    assert s["peak_rss_mb"]["self"] > 0 and s["timings_s"]["sort_s"] > 0
    for m in ("snr", "isi_violations_ratio", "presence_ratio", "amplitude_cutoff", "firing_rate", "amplitude_median",
              "drift_ptp", "silhouette", "nn_hit_rate"):
        assert m in s["metrics"], m


def test_units_nwb_valid_with_labels_metrics_and_spikes(sorted_out):
    import pynwb
    from nwbinspector import Importance, inspect_nwbfile
    from spikeinterface.core import load

    _path, gt, out = sorted_out
    nwbf = out / "units.nwb"
    assert not pynwb.validate(path=str(nwbf))
    bad = [m for m in inspect_nwbfile(nwbfile_path=str(nwbf)) if m.importance.value >= Importance.BEST_PRACTICE_VIOLATION.value]
    assert not bad, [(m.check_function_name, m.message) for m in bad]
    with pynwb.NWBHDF5IO(str(nwbf), "r") as io:
        nwb = io.read()
        df = nwb.units.to_dataframe()
        n_el = len(nwb.electrodes)
        wm = nwb.units["waveform_mean"].data[:]
    s = json.loads((out / "summary.json").read_text())
    assert len(df) == s["n_units"] and n_el == 8
    assert set(df["label"]) <= set(LABELS) and all(df["label_reason"].str.len() > 0)
    for lab, n in s["n_units_by_label"].items():
        assert (df["label"] == lab).sum() == n
    for m in ("snr", "isi_violations_ratio", "presence_ratio", "firing_rate", "silhouette", "nn_hit_rate"):
        assert m in df.columns
    assert np.all(df["snr"].to_numpy(float)[df["label"] == "good"] >= 3.5)
    sorting = load(out / "sorting")
    for i, uid in enumerate(df["sorter_unit_id"]):
        st = np.asarray(df["spike_times"].iloc[i])
        np.testing.assert_allclose(st, sorting.get_unit_spike_train(sorting.unit_ids[
            [str(u) for u in sorting.unit_ids].index(uid)]) / 30000.0)
        assert 0 <= st.min() and st.max() < 10.0
    assert wm.shape[0] == len(df) and np.all(np.min(wm, axis=1) < 0)       # negative-going spikes, in volts
    assert np.all(np.abs(wm) < 1e-2)


def test_sorting_recovers_ground_truth(sorted_out):
    from spikeinterface.comparison import compare_sorter_to_ground_truth
    from spikeinterface.core import load

    _path, gt, out = sorted_out
    cmp = compare_sorter_to_ground_truth(gt, load(out / "sorting"), exhaustive_gt=True)
    acc = cmp.get_performance()["accuracy"].to_numpy(float)
    assert (acc >= 0.8).sum() >= 3, acc            # 4 well separated units: at least 3 found


def test_report_has_every_figure(sorted_out):
    _path, _gt, out = sorted_out
    html = (out / "report.html").read_text()
    imgs = re.findall(r'src="(report/[^"]+\.png)"', html)
    assert "report/drift_map.png" in imgs and "report/metrics.png" in imgs
    s = json.loads((out / "summary.json").read_text())
    assert len([i for i in imgs if "/unit_" in i]) == s["n_units"]
    for i in imgs:
        assert (out / i).stat().st_size > 1000, i


def test_out_folder_refusals(sorted_out, tmp_path, capsys):
    path, _gt, out = sorted_out
    assert main(["sort", str(path), "--out", str(out)]) == 2           # not empty, no --overwrite
    assert "not empty" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["sort", str(path), "--out", str(other), "--overwrite"]) == 2
    assert "notes.txt" in capsys.readouterr().err and (other / "notes.txt").exists()
    assert main(["sort", str(tmp_path / "missing.nwb"), "--out", str(tmp_path / "o2")]) == 2
    assert "missing.nwb" in capsys.readouterr().err
    assert main(["sort", str(path), "--out", str(tmp_path / "o3"), "--sorter", "nope"]) == 2
    assert "sorter must be one of" in capsys.readouterr().err
    assert main(["sort", str(path), "--out", str(tmp_path / "o4"), "--sorter", SORTER, "--matching", "radius=3"]) == 2
    assert "no matching setting 'radius'" in capsys.readouterr().err and not (tmp_path / "o4").exists()


def test_list_sorters(capsys):
    assert main(["sort", "--list-sorters", "--json"]) == 0
    av = json.loads(capsys.readouterr().out)
    assert av == available_sorters()
