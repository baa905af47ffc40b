"""bench sort: ground-truth adapters, hybrid injection, the row builder and a tiny end-to-end run."""

import numpy as np
import pytest
from _shared_data import SHARED_DATA, need

from cortexlink.bench import sort as S
from cortexlink.bench import sort_truth as T
from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.sim import SimulatedImplant

DATA = SHARED_DATA
SMALL = dict(n_channels=16, seed=1, pitch_um=25.0, footprint_um=30.0, amplitude_jitter=0.1, burst_fraction=0.3,
             burst_attenuation=0.2, n_dead=1, n_saturating=0, artifact_rate_hz=0.0)


def test_simulated_pair_matches_the_implant(tmp_path):
    imp = SimulatedImplant(**SMALL)
    pair = T.simulated_pair(imp, 2.0, tmp_path, chunk_s=0.3)
    ref = SimulatedImplant(**SMALL)
    raw = ref.read(int(2.0 * ref.fs_hz)).data
    gt = ref.ground_truth()
    rec, srt = pair.recording, pair.gt_sorting
    assert rec.get_num_channels() == 16 and rec.get_num_samples() == len(raw)
    # µV traces equal the implant's counts x gain, read lazily from the binary file
    np.testing.assert_allclose(rec.get_traces(start_frame=1000, end_frame=1300, return_in_uV=True),
                               raw[1000:1300] * ref.channel_map.gain_uv[None, :], rtol=1e-6)
    np.testing.assert_allclose(rec.get_channel_locations(), ref.channel_map.positions_um)
    # spike counts and trains per unit, main channel and position
    counts = srt.count_num_spikes_per_unit(outputs="array")
    np.testing.assert_array_equal(counts, np.bincount(gt.spike_units, minlength=gt.n_units))
    for u in range(gt.n_units):
        np.testing.assert_array_equal(srt.get_unit_spike_train(u), gt.unit_spike_samples(u))
    np.testing.assert_array_equal(srt.get_property("gt_channel"), gt.unit_channel)
    np.testing.assert_allclose(srt.get_property("gt_x_um"), gt.unit_position_um[:, 0])
    np.testing.assert_allclose(srt.get_property("gt_y_um"), gt.unit_position_um[:, 1])
    np.testing.assert_allclose(pair.unit_snr, gt.unit_snr)
    # the rest position is nearest its main channel
    pos = ref.channel_map.positions_um
    d = np.linalg.norm(pos[None] - gt.unit_position_um[:, None], axis=2)
    np.testing.assert_array_equal(np.argmin(d, axis=1), gt.unit_channel)
    assert pair.exhaustive and pair.info["n_spikes"] == len(gt.spike_samples)


def test_a_second_pair_in_the_same_folder_leaves_a_reader_of_the_first_intact(tmp_path):
    # a re-scoring run in a kept work folder writes the recording again while a sorter may still
    # be reading it: the reader keeps the complete file it opened
    T.simulated_pair(SimulatedImplant(**SMALL), 1.0, tmp_path)
    path = tmp_path / "traces.int16"
    size = path.stat().st_size
    with open(path, "rb") as reader:
        first = reader.read(4096)
        T.simulated_pair(SimulatedImplant(**SMALL), 2.0, tmp_path)
        rest = reader.read()
    assert len(first) + len(rest) == size
    assert path.stat().st_size == 2 * size and not list(tmp_path.glob(".traces*"))


def test_simulated_pair_refuses_a_used_implant(tmp_path):
    imp = SimulatedImplant(**SMALL)
    imp.read(10)
    with pytest.raises(ValidationError, match="fresh"):
        T.simulated_pair(imp, 1.0, tmp_path)
    with pytest.raises(ConfigError, match="seconds"):
        T.simulated_pair(SimulatedImplant(**SMALL), -1, tmp_path)


def _noise_recording(n_ch=4, seconds=3.0, fs=20000.0, seed=0):
    import spikeinterface.core as si

    x = np.random.default_rng(seed).normal(0, 10.0, (int(seconds * fs), n_ch)).astype(np.float32)
    rec = si.NumpyRecording([x], sampling_frequency=fs)
    return T._with_probe(rec, np.stack([np.zeros(n_ch), np.arange(n_ch) * 50.0], 1))


@pytest.mark.parametrize("spread", [False, True])
def test_hybrid_injection_adds_exactly_the_injected_spikes(spread):
    parent = _noise_recording()
    pair = T.hybrid_pair(parent, name="noise_hybrid", n_units=3, seed=2, spread=spread)
    diff = pair.recording.get_traces() - parent.get_traces()
    expect = np.zeros_like(diff)
    n_t = pair.templates.shape[1]
    srt = pair.gt_sorting
    n_spk = 0
    for i, u in enumerate(srt.unit_ids):
        for s in srt.get_unit_spike_train(u):
            expect[s - pair.nbefore:s - pair.nbefore + n_t] += pair.templates[i]
            n_spk += 1
    assert n_spk == pair.info["n_spikes"] > 0
    np.testing.assert_allclose(diff, expect, atol=1e-3)
    # SNR on the main channel: the trough after the 300-6000 Hz band-pass over the MAD noise
    main = srt.get_property("gt_channel")
    troughs = -pair.templates[np.arange(3), pair.nbefore, main]
    assert np.all(troughs > 3.0 * 10.0) and not pair.exhaustive
    if spread:
        assert np.all((pair.templates[:, pair.nbefore, :] < 0))


def test_hybrid_on_the_real_locust_tetrode():
    rec = T.load_locust(need(DATA / "locust_tetrode", "the locust tetrode recording"))
    assert rec.get_num_channels() == 4 and rec.sampling_frequency == 15000.0
    short = rec.frame_slice(0, 45000)
    pair = T.hybrid_pair(short, name="locust_hybrid", n_units=2, seed=0, spread=True)
    diff = pair.recording.get_traces() - short.get_traces()
    changed = np.flatnonzero(np.any(diff != 0, axis=1))
    trains = np.concatenate([pair.gt_sorting.get_unit_spike_train(u) for u in pair.gt_sorting.unit_ids])
    n_t = pair.templates.shape[1]
    # every changed sample lies within an injected waveform
    starts = np.sort(trains) - pair.nbefore
    idx = np.searchsorted(starts, changed, side="right") - 1
    assert np.all((idx >= 0) & (changed - starts[np.maximum(idx, 0)] < n_t))


def test_result_row_survives_missing_values():
    row = S.result_row("tridesclous2", "sim", None, None, None, {"error": "boom"})
    for k in S.ROW_KEYS:
        assert k in row
    assert row["n_well_detected"] is None and row["wall_s"] is None and row["error"] == "boom"
    assert row["wall_s_per_channel_hour"] is None
    row = S.result_row("mountainsort5", "n1_hybrid", 8, 5.0, {"n_true_units": 3, "false_positive_units": None},
                       {"wall_s": 2.0, "peak_rss_mb": 300.0})
    assert row["wall_s_per_channel_hour"] == pytest.approx(2.0 / (8 * 5.0 / 3600.0))
    assert row["false_positive_units"] is None and row["n_true_units"] == 3
    skipped = S.result_row("kilosort4", "sim", 16, 10.0, run={"skipped": "needs kilosort"})
    assert skipped["skipped"] == "needs kilosort" and skipped["accuracy_median_snr_ge_5"] is None


def test_score_against_itself_and_a_shifted_copy(tmp_path):
    import spikeinterface.core as si

    imp = SimulatedImplant(**SMALL)
    pair = T.simulated_pair(imp, 3.0, tmp_path)
    perfect = S.score_sorting(pair.gt_sorting, pair.gt_sorting, pair.unit_snr, exhaustive=True)
    live = int(np.sum(pair.gt_sorting.count_num_spikes_per_unit(outputs="array") > 0))
    assert perfect["n_well_detected"] == live and perfect["false_positive_units"] == 0
    # the curation check's well-detected SNR >= 5 units are the ones the score counts
    assert len(perfect["_well_snr_ge_5"]) == perfect["n_well_detected_snr_ge_5"] > 0
    # spikes 2 ms late are outside the 0.4 ms tolerance: nothing matches
    sv = pair.gt_sorting.to_spike_vector()
    late = si.NumpySorting.from_samples_and_labels([sv["sample_index"] + 60], [sv["unit_index"]], 30000.0,
                                                   unit_ids=pair.gt_sorting.unit_ids)
    bad = S.score_sorting(pair.gt_sorting, late, pair.unit_snr, exhaustive=True)
    assert bad["n_well_detected"] == 0 and bad["false_positive_units"] == bad["n_sorted_units"] > 0
    assert bad["_well_snr_ge_5"] == []
    assert sum(b["n_units"] for b in bad["by_snr"]) == bad["n_true_units"]


def test_an_empty_sorting_scores_zero(tmp_path):
    import spikeinterface.core as si

    pair = T.simulated_pair(SimulatedImplant(**SMALL), 1.0, tmp_path)
    empty = si.NumpySorting.from_samples_and_labels([np.zeros(0, np.int64)], [np.zeros(0, np.int64)], 30000.0,
                                                    unit_ids=np.zeros(0, np.int64))
    sc = S.score_sorting(pair.gt_sorting, empty, pair.unit_snr, exhaustive=True)
    assert sc["n_well_detected"] == 0 and sc["false_positive_units"] == 0 and sc["n_sorted_units"] == 0


def test_post_processing_merges_a_split_unit_and_keeps_the_figures_before(tmp_path):
    import warnings

    import spikeinterface.core as si

    pair = T.simulated_pair(SimulatedImplant(**SMALL), 20.0, tmp_path)
    gt = pair.gt_sorting
    perfect = S.score_sorting(gt, gt, pair.unit_snr, exhaustive=True)
    snr = dict(zip(gt.unit_ids, pair.unit_snr))
    big = max(perfect["_well_snr_ge_5"], key=lambda u: len(gt.get_unit_spike_train(u)))
    trains = {str(u): gt.get_unit_spike_train(u) for u in gt.unit_ids if u != big}
    st = gt.get_unit_spike_train(big)
    half = np.random.default_rng(0).random(st.size) < 0.5      # one neuron dealt to two units
    trains["a"], trains["b"] = st[half], st[~half]
    split = si.NumpySorting.from_unit_dict([trains], gt.sampling_frequency)
    with warnings.catch_warnings():          # SpikeInterface's (provenance, amplitude fallbacks)
        warnings.simplefilter("ignore")
        score, an = S._post_process(pair, split, tmp_path / "an", "x_contaminations")
        plain, none = S._post_process(pair, split, tmp_path / "an2", None)
    m = score["merge"]
    assert snr[big] >= 5 and [sorted(g) for g in m["groups"]] == [["a", "b"]]
    assert m["n_well_detected_snr_ge_5_unmerged"] == plain["n_well_detected_snr_ge_5"]
    assert score["n_well_detected_snr_ge_5"] == plain["n_well_detected_snr_ge_5"] + 1
    assert score["n_sorted_units"] == m["n_sorted_units_unmerged"] - 1 == an.sorting.get_num_units()
    assert none is None and "merge" not in plain
    row = S.result_row("x", "sim", 16, 20.0, score, {"wall_s": 1.0})
    assert row["merge"]["groups"] == m["groups"] and "_cmp" not in row


def test_bad_arguments_refused():
    with pytest.raises(ConfigError, match="datasets"):
        S.run(datasets=["nope"])
    with pytest.raises(ConfigError, match="channels"):
        S.run(datasets=["sim"], channels=2)
    with pytest.raises(ConfigError, match="merge"):
        S.run(datasets=["sim"], merge="all")
    with pytest.raises(ConfigError, match="min_amplitude"):
        S.run(datasets=["sim"], sorters=["tridesclous2"], matching="min_amplitude=1.5")


def test_tiny_end_to_end_with_mountainsort5(tmp_path):
    from cortexlink.bench.sort import _available

    if _available().get("mountainsort5") is not None:
        pytest.skip(f"mountainsort5 cannot run here: {_available()['mountainsort5']}")
    res = S.run(datasets=["sim"], sorters=["mountainsort5"], channels=32, seconds=10.0, seed=0, curation=False,
                work_dir=tmp_path, motion=False)
    (row,) = res["results"]
    assert "error" not in row, row.get("error")
    for k in S.ROW_KEYS:
        assert k in row
    assert row["channels"] == 32 and row["seconds"] == 10.0 and row["false_positive_units"] is not None
    assert row["n_true_units"] == res["datasets"][0]["n_units"] > 0
    assert row["n_well_detected"] >= 1 and row["peak_rss_mb"] > 0
    assert row["merge"]["preset"] == "x_contaminations" and row["merge"]["n_sorted_units_unmerged"] >= 1
    # the same run again in the kept folder reuses the sorting (its figures as measured) instead of sorting again
    again = S.run(datasets=["sim"], sorters=["mountainsort5"], channels=32, seconds=10.0, seed=0, curation=False,
                  work_dir=tmp_path, motion=False)
    (row2,) = again["results"]
    assert row2.get("reused") is True and "reused" not in row
    for k in ("n_well_detected", "false_positive_units", "wall_s", "peak_rss_mb"):
        assert row2[k] == row[k]
    assert row["matching"] == {} and row2["matching"] == {}        # mountainsort5 has no template matching
    # a different recording (another seed) or other matching settings are sorted, not taken from the kept run
    spec = {"sorter": "mountainsort5", "dataset": "sim", "motion": False, "n_jobs": 1, "matching": {},
            "sorting_out": str(tmp_path / "sorting_mountainsort5_sim")}
    assert S._reuse(spec, tmp_path, "sim", 32, 10.0, 1, 1200.0) is None
    assert S._reuse(dict(spec, matching={"min_amplitude": 0.3}), tmp_path, "sim", 32, 10.0, 0, 1200.0) is None
    assert S._reuse(spec, tmp_path, "sim", 32, 10.0, 0, 1200.0) is not None
