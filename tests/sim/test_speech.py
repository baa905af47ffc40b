"""Tests of the simulated speaking participant (cortexlink.sim.speech) and the implant's speech
tuning and recording days (speech_dims, set_articulators, day, day_drift, day_turnover)."""

import math

import numpy as np
import pytest
from _shared_data import SHARED_DATA, need

from cortexlink import ConfigError, ValidationError
from cortexlink.core.phonemes import SIL, phonemes_to_ids
from cortexlink.sim import SimulatedImplant
from cortexlink.sim.speech import INHERENT_DURATION_MS, SpeakerConfig, SpeakingParticipant, SpeechPlan

SMALL = dict(n_channels=32, seed=5, lfp_uv=0.0, line_noise_hz=None, artifact_rate_hz=0.0, drift=0.0)
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
]


def _harvard():
    path = need(SHARED_DATA / "text_corpus" / "harvard_sentences.txt", "the Harvard sentences")
    return [s.strip() for s in path.read_text(encoding="utf-8-sig").splitlines() if s.strip()]


# ---------------------------------------------------------------- implant: speech tuning
def test_speech_tuning_off_or_idle_leaves_output_bit_identical():
    """Speech tuning draws from its own stream: with no articulators (or zeros) the samples and the
    ground truth are those of the implant without speech tuning, so speech_dims=0 is unchanged."""
    plain = SimulatedImplant(**SMALL)
    tuned = SimulatedImplant(**SMALL, speech_dims=8)
    zeros = SimulatedImplant(**SMALL, speech_dims=8)
    zeros.set_articulators(np.zeros(8))
    a, b, c = (imp.read(3000).data for imp in (plain, tuned, zeros))
    assert np.array_equal(a, b) and np.array_equal(a, c)
    ga, gb = plain.ground_truth(), tuned.ground_truth()
    assert np.array_equal(ga.spike_samples, gb.spike_samples)
    assert np.array_equal(ga.unit_baseline_hz, gb.unit_baseline_hz)
    assert plain.speech_tuning_hz is None and plain.speech_dims == 0
    assert not plain.units_replaced.any()


def test_speech_tuning_structure_and_expected_rates():
    imp = SimulatedImplant(n_channels=256, seed=2, speech_dims=16, speech_fraction=0.6, drift=0.0)
    M = imp.speech_tuning_hz
    assert M.shape == (imp.n_units, 16) and not M.flags.writeable
    depth = np.linalg.norm(M, axis=1)
    tuned = depth > 0
    assert 0.5 < tuned.mean() < 0.7
    assert depth[tuned].min() >= 4.0 - 1e-9 and depth[tuned].max() <= 20.0 + 1e-9
    a = np.random.default_rng(0).standard_normal(16)
    r0 = imp.expected_rates_hz()
    r1 = imp.expected_rates_hz(articulators=a)
    assert np.allclose(r1, np.clip(r0 + M @ a, 0, imp.config.max_rate_hz))
    assert np.array_equal(r0[~tuned], r1[~tuned])


def test_set_articulators_applies_from_the_next_generated_block_and_modulates_spikes():
    B = 300
    a = np.full(8, 3.0)
    ref = SimulatedImplant(**SMALL, speech_dims=8)
    imp = SimulatedImplant(**SMALL, speech_dims=8)
    x_ref = ref.read(450).data
    x = imp.read(450).data                        # blocks 0 and 1 are generated
    imp.set_articulators(a)
    x_ref2, x2 = ref.read(B * 40).data, imp.read(B * 40).data
    assert np.array_equal(x_ref, x)
    assert np.array_equal(x_ref2[:150], x2[:150])  # rest of block 1: generated before the call
    assert not np.array_equal(x_ref2, x2)
    # units pushed up fire more than without articulators, units pushed down less
    drive = imp.speech_tuning_hz @ a
    n = ref.n_units
    cnt_ref = np.bincount(ref.ground_truth().spike_units, minlength=n)
    cnt = np.bincount(imp.ground_truth().spike_units, minlength=n)
    up, down = drive > 20, drive < -20
    assert up.sum() >= 3 and down.sum() >= 3
    assert cnt[up].sum() > 1.5 * cnt_ref[up].sum()
    assert cnt[down].sum() < 0.8 * cnt_ref[down].sum()
    imp.set_articulators(None)                     # back to no speech drive
    imp.reset()
    assert np.array_equal(imp.read(900).data, SimulatedImplant(**SMALL, speech_dims=8).read(900).data)


def test_bad_articulators_and_speech_config():
    imp = SimulatedImplant(**SMALL, speech_dims=4)
    with pytest.raises(ValidationError, match=r"set_articulators: articulators must have shape \(4,\) \(speech_dims\); got shape \(3,\)"):
        imp.set_articulators([1.0, 2.0, 3.0])
    with pytest.raises(ValidationError, match="articulators must be finite"):
        imp.set_articulators([1.0, np.nan, 0.0, 0.0])
    with pytest.raises(ValidationError, match="articulators must be 4 numbers"):
        imp.set_articulators(["a", "b", "c", "d"])
    with pytest.raises(ValidationError, match=r"expected_rates_hz: articulators must have shape"):
        imp.expected_rates_hz(articulators=np.zeros(5))
    plain = SimulatedImplant(**SMALL)
    with pytest.raises(ValidationError, match=r"no speech tuning \(speech_dims=0\)"):
        plain.set_articulators(np.zeros(1))
    plain.set_articulators(None)                   # allowed: nothing to drive
    for kw, pattern in [
        (dict(speech_dims=65), r"speech_dims must be an integer in \[0, 64\]; got 65"),
        (dict(speech_dims=2.0), r"speech_dims must be an integer"),
        (dict(speech_fraction=1.5), r"speech_fraction must be in \[0.0, 1.0\]; got 1.5"),
        (dict(speech_depth_hz_range=(5.0, 1.0)), r"speech_depth_hz_range must be a \(low, high\) pair with low <= high"),
        (dict(day=-1), r"day must be an integer in \[0, 10000\]; got -1"),
        (dict(day=1.5), r"day must be an integer"),
        (dict(day_drift=3.0), r"day_drift must be in \[0.0, 2.0\]; got 3.0"),
        (dict(day_turnover=-0.1), r"day_turnover must be in \[0.0, 1.0\]; got -0.1"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            SimulatedImplant(**SMALL, **kw)


# ---------------------------------------------------------------- implant: recording days
def test_day_drift_changes_rates_but_keeps_most_units():
    kw = dict(n_channels=256, seed=3, speech_dims=16, drift=0.0)
    d0, d1 = SimulatedImplant(**kw), SimulatedImplant(**kw, day=1)
    g0, g1 = d0.ground_truth(), d1.ground_truth()
    kept = ~d1.units_replaced
    assert 0.85 < kept.mean() < 0.98                 # day_turnover 0.08
    # kept units: same waveform and channel; new units: new waveform and tuning
    assert np.array_equal(g0.unit_templates_uv[kept], g1.unit_templates_uv[kept])
    assert not np.any(np.all(g0.unit_templates_uv[~kept] == g1.unit_templates_uv[~kept], axis=1))
    assert np.array_equal(g0.unit_channel, g1.unit_channel)
    # baselines jitter by day_drift in log units
    lr = np.log(g1.unit_baseline_hz[kept] / g0.unit_baseline_hz[kept])
    assert 0.18 < lr.std() < 0.32
    # speech tuning of kept, tuned units turns by exactly day_drift radians; depth unchanged
    M0, M1 = d0.speech_tuning_hz, d1.speech_tuning_hz
    tuned = kept & (np.linalg.norm(M0, axis=1) > 0)
    n0, n1 = np.linalg.norm(M0[tuned], axis=1), np.linalg.norm(M1[tuned], axis=1)
    assert np.allclose(n0, n1)
    assert np.allclose((M0[tuned] * M1[tuned]).sum(1) / (n0 * n1), math.cos(0.25))
    # velocity preferred directions turn by day_drift too
    cos_pd = (g0.unit_preferred_direction[kept] * g1.unit_preferred_direction[kept]).sum(1)
    assert np.allclose(cos_pd, math.cos(0.25))
    assert not np.array_equal(d0.read(3000).data, d1.read(3000).data)


def test_days_accumulate_one_step_at_a_time():
    kw = dict(n_channels=128, seed=4, speech_dims=8, drift=0.0)
    d2, d3 = SimulatedImplant(**kw, day=2), SimulatedImplant(**kw, day=3)
    assert np.all(d3.units_replaced[d2.units_replaced])            # replaced stays replaced
    assert d3.units_replaced.sum() > d2.units_replaced.sum()
    kept = ~d3.units_replaced
    M2, M3 = d2.speech_tuning_hz, d3.speech_tuning_hz
    tuned = kept & (np.linalg.norm(M2, axis=1) > 0)
    cos = (M2[tuned] * M3[tuned]).sum(1) / np.linalg.norm(M2[tuned], axis=1) / np.linalg.norm(M3[tuned], axis=1)
    assert np.allclose(cos, math.cos(0.25))                       # day 3 = day 2 + one rotation
    # no drift, no turnover: every day is day 0
    still = SimulatedImplant(**kw, day=5, day_drift=0.0, day_turnover=0.0)
    assert np.array_equal(still.read(1200).data, SimulatedImplant(**kw).read(1200).data)


def test_day_changes_without_speech_tuning():
    kw = dict(n_channels=64, seed=1)
    d0, d2 = SimulatedImplant(**kw), SimulatedImplant(**kw, day=2)
    assert d2.speech_tuning_hz is None
    assert not np.allclose(d0.expected_rates_hz((0.5, 0.0)), d2.expected_rates_hz((0.5, 0.0)))
    assert np.array_equal(d2.read(900).data, SimulatedImplant(**kw, day=2).read(900).data)


# ---------------------------------------------------------------- speaking participant
def test_plan_and_trajectory_are_deterministic_per_seed_and_trial():
    a, b = SpeakingParticipant(seed=1, speech_dims=8), SpeakingParticipant(seed=1, speech_dims=8)
    pa, pb = a.plan(SENTENCES[0], trial=3), b.plan(SENTENCES[0], trial=3)
    assert np.array_equal(pa.ends_s, pb.ends_s) and pa.prep_s == pb.prep_s
    assert np.array_equal(a.trajectory(pa), b.trajectory(pb))
    pc = a.plan(SENTENCES[0], trial=4)
    assert np.array_equal(pa.phoneme_ids, pc.phoneme_ids) and not np.array_equal(pa.ends_s, pc.ends_s)
    other = SpeakingParticipant(seed=2, speech_dims=8)
    assert not np.allclose(a.targets, other.targets)
    assert not other.plan(SENTENCES[0], trial=3).ends_s.tolist() == pa.ends_s.tolist()


def test_plan_contents():
    sp = SpeakingParticipant(seed=0)
    p = sp.plan("The birch canoe.", trial=0)
    assert isinstance(p, SpeechPlan)
    assert p.words == ("the", "birch", "canoe")
    assert p.phoneme_ids.tolist() == phonemes_to_ids(
        "DH AH SIL B ER CH SIL K AH N UW SIL".split()).tolist()
    assert p.starts_s[0] == 0.0 and np.allclose(p.starts_s[1:], p.ends_s[:-1])
    assert np.all(p.ends_s > p.starts_s) and p.duration_s == p.ends_s[-1]
    assert not p.phoneme_ids.flags.writeable and not p.ends_s.flags.writeable
    assert p.words_per_min == pytest.approx(3 * 60 / p.duration_s)
    dt = 0.01
    assert p.go_step(dt) == round(p.prep_s / dt)
    assert p.end_step(dt) == round((p.prep_s + p.duration_s) / dt)
    assert p.n_steps(dt) == round((p.prep_s + p.duration_s + 0.3) / dt)


def test_oov_and_empty_sentences_are_refused():
    sp = SpeakingParticipant(seed=0)
    with pytest.raises(ValidationError, match=r"1 word\(s\) not in the CMU dictionary: \['zxqvbn'\]"):
        sp.plan("The zxqvbn canoe.", trial=0)
    with pytest.raises(ValidationError, match="sentence has no words"):
        sp.plan("  ... 123 ", trial=0)
    with pytest.raises(ValidationError, match="text must be a string"):
        sp.plan(42, trial=0)


def test_timing_statistics():
    sp = SpeakingParticipant(seed=0)
    plans = [sp.plan(s, i) for i, s in enumerate(SENTENCES * 5)]
    wpm = np.array([p.words_per_min for p in plans])
    assert 45 < np.median(wpm) < 80
    assert wpm.std() > 3                                     # speaking rate varies
    vowel = set(phonemes_to_ids(["AA", "AE", "AO", "AW", "AY", "EY", "IY", "OW", "UW"]).tolist())
    stop = set(phonemes_to_ids(["P", "B", "T", "D", "K", "G"]).tolist())
    durs = {"v": [], "s": [], "sil": [], "o": []}
    for p in plans:
        for cls, dd in zip(p.phoneme_ids.tolist(), p.ends_s - p.starts_s):
            durs["v" if cls in vowel else "s" if cls in stop else "sil" if cls == SIL else "o"].append(dd)
    assert np.mean(durs["v"]) > 1.8 * np.mean(durs["s"])     # tense vowels ~2-3x stops (Klatt)
    sil = np.array(durs["sil"])
    assert 0.05 < np.mean(sil > 0.25) < 0.4                  # some word boundaries have a pause
    assert min(min(v) for v in durs.values()) >= 0.04 - 1e-12
    assert max(INHERENT_DURATION_MS.values()) == 280         # OY, Klatt's longest vowel


def test_speaking_rate_of_the_harvard_sentences():
    sents = _harvard()
    sp = SpeakingParticipant(seed=0)
    wpm = np.array([sp.plan(s, i).words_per_min for i, s in enumerate(sents)])
    assert len(wpm) == len(sents) == 720
    assert 55 < np.median(wpm) < 70                           # Willett 2023: 62 wpm
    assert np.mean((wpm > 35) & (wpm < 110)) > 0.95


def test_targets_similar_phonemes_close_but_distinct():
    sp = SpeakingParticipant(seed=0, speech_dims=16, drive=1.0)
    T = sp.targets
    assert T.shape == (41, 16) and not T.flags.writeable and np.all(T[0] == 0)
    assert np.allclose(np.sqrt(np.mean(T[1:] ** 2, axis=1)), 1.0)
    i = {n: int(phonemes_to_ids([n])[0]) for n in ["P", "B", "M", "N", "IY", "IH", "AA", "S", "Z", "UW"]}
    dist = lambda a, b: np.linalg.norm(T[i[a]] - T[i[b]])  # noqa: E731
    assert dist("P", "B") < dist("P", "IY")
    assert dist("M", "N") < dist("M", "AA")
    assert dist("S", "Z") < dist("S", "UW")
    assert dist("IY", "IH") < dist("IY", "AA")
    d = np.linalg.norm(T[1:, None] - T[None, 1:], axis=-1) + 1e9 * np.eye(40)
    assert d.min() > 0.3                                      # no two classes alike
    assert np.allclose(SpeakingParticipant(seed=0, speech_dims=16, drive=2.5).targets, 2.5 * T)


def test_trajectory_is_smooth_starts_at_rest_and_scales_with_drive():
    sp = SpeakingParticipant(seed=0, speech_dims=12)
    p = sp.plan(SENTENCES[1], trial=0)
    X = sp.trajectory(p, dt_s=0.01)
    assert X.shape == (p.n_steps(0.01), 12)
    onset = int(0.2 / 0.01)
    assert np.all(X[:onset] == 0)                             # before the preparatory drive
    prep = X[onset:p.go_step()]
    assert 0.05 < np.sqrt(np.mean(prep[-10:] ** 2)) < 0.5     # weak preparatory drive (0.3)
    speech = X[p.go_step():p.end_step()]
    assert np.sqrt(np.mean(speech ** 2)) > 0.5
    # coarticulation: no jumps; the targets jump by ~1.4 x sqrt(dims) between phonemes
    step = np.linalg.norm(np.diff(X, axis=0), axis=1)
    jump = np.linalg.norm(np.diff(sp.targets[p.phoneme_ids], axis=0), axis=1)
    assert step.max() < 0.3 * jump.mean()
    # ... but the state follows the targets (it reaches them within long phonemes)
    mid = ((p.starts_s + p.ends_s) / 2 + p.prep_s) / 0.01
    long_ = (p.ends_s - p.starts_s) > 0.2
    got = X[np.round(mid[long_]).astype(int)]
    want = sp.targets[p.phoneme_ids[long_]]
    assert np.mean(np.sum(got * want, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)) > 0.8
    assert np.sqrt(np.mean(X[-3:] ** 2)) < 0.2               # back towards rest in the tail
    # a finer step gives the same curve
    Xf = sp.trajectory(p, dt_s=0.005)
    assert np.abs(Xf[::2][:len(X)] - X).max() < 0.35
    big = SpeakingParticipant(seed=0, speech_dims=12, drive=3.0)
    assert np.allclose(big.trajectory(big.plan(SENTENCES[1], trial=0)), 3 * X)


def test_trajectory_drives_the_implant():
    """Feeding the trajectory one row per 10 ms block modulates tuned units as their tuning predicts."""
    sp = SpeakingParticipant(seed=0, speech_dims=8, drive=2.0)
    imp = SimulatedImplant(**SMALL, speech_dims=8, depth_hz_range=(0.0, 0.0), click_fraction=0.0)
    p = sp.plan(SENTENCES[3], trial=1)
    X = sp.trajectory(p)
    B = imp.block_size
    for row in X:
        imp.set_articulators(row)
        imp.read(B)
    gt = imp.ground_truth()
    counts = np.zeros((len(X), imp.n_units))
    np.add.at(counts, (gt.spike_samples // B, gt.spike_units), 1)
    pred = np.clip(gt.unit_baseline_hz + X @ imp.speech_tuning_hz.T, 0, None)
    strong = np.argsort(-np.linalg.norm(imp.speech_tuning_hz, axis=1))[:8]
    r = [np.corrcoef(counts[:, u], pred[:, u])[0, 1] for u in strong]
    assert np.median(r) > 0.3


def test_bad_speaker_inputs():
    for kw, pattern in [
        (dict(speech_dims=0), r"speech_dims must be an integer in \[1, 64\]; got 0"),
        (dict(drive=-1.0), r"drive must be in \[0.0, 20.0\]; got -1.0"),
        (dict(pause_s_range=(0.5, 0.1)), r"pause_s_range must be a \(low, high\) pair with low <= high"),
        (dict(pause_s_range="ab"), r"pause_s_range must be a \(low, high\) pair of numbers"),
        (dict(coarticulation_tau_s=0.0), r"coarticulation_tau_s must be in \[0.001, 0.5\]; got 0.0"),
        (dict(bogus=1), r"SpeakerConfig has no field\(s\) \['bogus'\]"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            SpeakingParticipant(**kw)
    with pytest.raises(ConfigError, match="config must be a SpeakerConfig"):
        SpeakingParticipant(config={"drive": 1.0})
    with pytest.raises(ConfigError, match="seed must be an integer >= 0; got -2"):
        SpeakingParticipant(seed=-2)
    sp = SpeakingParticipant(config=SpeakerConfig(speech_dims=4))
    with pytest.raises(ConfigError, match="trial must be an integer >= 0; got -1"):
        sp.plan(SENTENCES[0], trial=-1)
    p = sp.plan(SENTENCES[0], trial=0)
    with pytest.raises(ConfigError, match=r"dt_s must be in \[0.0001, 1.0\]; got 0"):
        sp.trajectory(p, dt_s=0)
    with pytest.raises(ValidationError, match="plan must be a SpeechPlan"):
        sp.trajectory("The birch canoe.")
