"""Auditory CIS encoder, vocoder resynthesis and intelligibility."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import wavfile

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.stim.audio import read_wav, resample
from cortexlink.stim.auditory import CISConfig, CISEncoder, band_edges_hz, greenwood_hz, greenwood_position
from cortexlink.stim.model import StimPlan, pulse_end_s
from cortexlink.stim.vocoder import channel_envelopes, cis_intelligibility_table, intelligibility, resynthesize

FS = 16000.0


def _tones(freqs_hz, amps, seconds=0.5, fs=FS):
    t = np.arange(int(seconds * fs)) / fs
    return sum(a * np.sin(2 * np.pi * f * t) for f, a in zip(freqs_hz, amps))


def _chirp(seconds=1.0, fs=FS, seed=0):
    """A broadband test signal: a log chirp 150 Hz → 7 kHz with a slow AM and a little noise."""
    t = np.arange(int(seconds * fs)) / fs
    f0, f1 = 150.0, 7000.0
    phase = 2 * np.pi * f0 * seconds / np.log(f1 / f0) * (np.exp(t / seconds * np.log(f1 / f0)) - 1)
    am = 0.3 * (1.2 + np.sin(2 * np.pi * 3 * t)) / 2.2
    return am * np.sin(phase) + 0.01 * np.random.default_rng(seed).standard_normal(t.size)


def _concat(plans):
    return np.concatenate([p.pulses for p in plans])


# ----------------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("n_of_m", [None, 4])
@pytest.mark.parametrize("block", [1, 7, 160, 1000])
def test_stream_equals_offline(block, n_of_m):
    x = _chirp(0.25 if block > 7 else 0.08)
    cfg = CISConfig(n_of_m=n_of_m)
    whole = CISEncoder(cfg).encode(x, t0=2.0)
    enc = CISEncoder(cfg)
    plans = [enc.step(x[i:i + block], 2.0 + i / FS) for i in range(0, x.size, block)]
    got = _concat(plans)
    assert len(whole) > 250
    assert np.array_equal(got["electrode"], whole.pulses["electrode"])
    np.testing.assert_allclose(got["time_s"], whole.pulses["time_s"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["amplitude_ua"], whole.pulses["amplitude_ua"], rtol=1e-9)
    # each plan's pulses lie whole inside its window; a window runs past its block only to finish
    # a pulse that started in it
    pulse_s = (2 * cfg.width_us + cfg.gap_us) * 1e-6
    extended = 0
    for i, p in enumerate(plans):
        block_end = 2.0 + min(x.size, (i + 1) * block) / FS
        assert p.t_start_s == 2.0 + i * block / FS
        assert np.all((p.pulses["time_s"] >= p.t_start_s) & (p.pulses["time_s"] < block_end))
        assert np.all(pulse_end_s(p.pulses) <= p.t_end_s)
        assert block_end - 1e-12 <= p.t_end_s < block_end + pulse_s
        extended += p.t_end_s > block_end
    if block in (1, 7):
        assert extended > 0                                  # the case is exercised
    assert [p.seq for p in plans] == list(range(len(plans)))
    assert plans[0].source == "auditory" and plans[-1].t_end_s == pytest.approx(whole.t_end_s)
    assert enc.n_reanchors == 0


def test_plan_window_and_rate():
    cfg = CISConfig(n_channels=4, rate_hz=500.0)
    x = _tones([300, 700, 1500, 4000], [0.3] * 4, seconds=1.0)
    plan = CISEncoder(cfg).encode(x, t0=10.0)
    assert isinstance(plan, StimPlan)
    assert (plan.t_start_s, plan.t_end_s) == (10.0, pytest.approx(11.0, abs=1e-4))
    for e in range(4):
        t = plan.pulses["time_s"][plan.pulses["electrode"] == e]
        # every channel fires once per frame once its envelope has risen above the base level
        assert abs(t.size - 500) <= 5
        np.testing.assert_allclose(np.diff(t), 1 / 500.0, atol=1e-9)


def test_pulses_interleaved_never_overlap():
    cfg = CISConfig(n_channels=16, rate_hz=900.0, width_us=25.0, gap_us=8.0)
    plan = CISEncoder(cfg).encode(_chirp(0.3))
    p = plan.pulses
    assert len(np.unique(p["electrode"])) == 16
    order = np.argsort(p["time_s"], kind="stable")
    starts, ends = p["time_s"][order], pulse_end_s(p[order])
    assert np.all(starts[1:] >= ends[:-1])            # the next pulse starts after the last one ended
    # staggered by whole sub-slots within a frame
    slot = cfg.slot_s
    frac = (p["time_s"] * cfg.rate_hz * cfg.n_slots)
    np.testing.assert_allclose(frac, np.round(frac), atol=1e-6)
    assert slot == pytest.approx(1 / (900.0 * 16))


def test_pulse_shape_and_levels():
    cfg = CISConfig(n_channels=4, threshold_ua=[10, 20, 30, 40], comfort_ua=[50, 60, 70, 90],
                    electrodes=[7, 3, 11, 5], cathodic_first=False)
    x = _tones([300, 700, 1500, 4000], [0.9, 0.9, 0.9, 0.9], seconds=0.4)
    p = CISEncoder(cfg).encode(x).pulses
    assert set(np.unique(p["electrode"])) == {3, 5, 7, 11}
    assert np.all(p["width_us"] == 40.0) and np.all(p["width2_us"] == 40.0) and np.all(p["gap_us"] == 8.0)
    assert np.array_equal(p["amplitude_ua"], p["amplitude2_ua"]) and not p["cathodic_first"].any()
    for e, t, c in zip([7, 3, 11, 5], [10, 20, 30, 40], [50, 60, 70, 90]):
        a = p["amplitude_ua"][p["electrode"] == e]
        assert a.min() >= t and a.max() <= c
        # a loud tone (about -1 dBFS, above saturation) sits at comfort level once the filters settle
        assert np.median(a[a.size // 2:]) == pytest.approx(c)


def test_compression_is_logarithmic_and_invertible():
    cfg = CISConfig(n_channels=2, base_level_db=-60.0, saturation_db=-20.0, threshold_ua=20.0, comfort_ua=80.0)
    env = np.array([[1e-3, 1e-2], [10 ** (-40 / 20), 1.0], [1e-4, 0.0]])
    amp = cfg.envelope_to_ua(env)
    np.testing.assert_allclose(amp[0], [20.0, 50.0])        # -60 dB → T, -40 dB → halfway
    np.testing.assert_allclose(amp[1], [50.0, 80.0])        # above saturation → C
    assert np.isnan(amp[2]).all()                           # below base → no pulse
    back = cfg.ua_to_envelope(amp[0], [0, 1])
    np.testing.assert_allclose(back, env[0])


def test_tone_drives_its_own_band():
    cfg = CISConfig(n_channels=12)
    edges = cfg.edges_hz
    f = float(np.sqrt(edges[5] * edges[6]))                 # centre of channel 5
    p = CISEncoder(cfg).encode(_tones([f], [0.3], seconds=0.3)).pulses
    late = p[p["time_s"] > 0.1]
    by_e = {e: late["amplitude_ua"][late["electrode"] == e] for e in range(12)}
    loudest = max(by_e, key=lambda e: by_e[e].mean() if by_e[e].size else 0.0)
    assert loudest == 5
    assert by_e[0].size == 0 and by_e[11].size == 0        # far bands stay below the base level


def test_silence_gives_no_pulses():
    cfg = CISConfig()
    assert len(CISEncoder(cfg).encode(np.zeros(8000))) == 0
    # very quiet noise, below the base level in every band: still nothing
    quiet = 10 ** (-90 / 20) * np.random.default_rng(1).standard_normal(8000)
    assert len(CISEncoder(cfg).encode(quiet)) == 0
    enc = CISEncoder(cfg)
    plan = enc.step(np.zeros(160), 0.0)
    assert len(plan) == 0 and plan.t_end_s == pytest.approx(0.01) and plan.source == "auditory"


def test_n_of_m_picks_the_largest():
    cfg = CISConfig(n_channels=8, n_of_m=2)
    edges = cfg.edges_hz
    centre = np.sqrt(edges[:-1] * edges[1:])
    amps = [0.02, 0.3, 0.02, 0.02, 0.02, 0.2, 0.02, 0.02]   # channels 1 and 5 loudest
    enc = CISEncoder(cfg)
    x = _tones(centre, amps, seconds=0.4)
    p = enc.encode(x).pulses
    late = p[p["time_s"] > 0.1]
    assert set(np.unique(late["electrode"])) == {1, 5}
    # at most n_of_m pulses per frame, in ascending channel order, in the first n_of_m slots
    frame = np.floor(late["time_s"] * cfg.rate_hz + 1e-9).astype(int)
    _, counts = np.unique(frame, return_counts=True)
    assert counts.max() == 2
    # against the envelopes themselves: in every frame the chosen channels have the largest ones
    env = CISEncoder(cfg).envelopes(x)
    p_all = p
    fr = np.floor(p_all["time_s"] * cfg.rate_hz + 1e-9).astype(int)
    for k in np.unique(fr)[::50]:
        e_k = env[:, int(np.floor(k * FS / cfg.rate_hz + 1e-9))]
        chosen = set(p_all["electrode"][fr == k])
        top = set(np.argsort(-e_k, kind="stable")[:2])
        assert chosen <= top


def test_reanchor_on_clock_jump():
    enc = CISEncoder(CISConfig(n_channels=4))
    x = _tones([300, 700, 1500, 4000], [0.3] * 4, seconds=0.2)
    enc.step(x[:1600], 0.0)
    enc.step(x[1600:], 5.0)          # not back to back
    assert enc.n_reanchors == 1


def test_greenwood_spacing():
    np.testing.assert_allclose(greenwood_position(greenwood_hz([0.1, 0.5, 0.9])), [0.1, 0.5, 0.9])
    g = band_edges_hz(8, 200.0, 7000.0, "greenwood")
    lg = band_edges_hz(8, 200.0, 7000.0, "log")
    assert g[0] == 200.0 and g[-1] == 7000.0 and np.all(np.diff(g) > 0)
    assert not np.allclose(g, lg)
    assert len(CISEncoder(CISConfig(n_channels=8, spacing="greenwood")).encode(_chirp(0.2))) > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"n_channels": 0}, "n_channels must be an integer from 1 to 64; got 0"),
    ({"n_channels": 3.0}, "n_channels"),
    ({"rate_hz": -5}, "rate_hz must be a finite number > 0"),
    ({"f_hi_hz": 9000.0}, r"f_hi_hz must be a finite number > 200 and <= 7840; got 9000.0"),
    ({"f_lo_hz": 8000.0, "f_hi_hz": 7000.0}, "f_hi_hz"),
    ({"spacing": "mel"}, r"spacing must be one of \['log', 'greenwood'\]; got 'mel'"),
    ({"n_of_m": 13}, "n_of_m must be None or an integer from 1 to n_channels=12; got 13"),
    ({"width_us": 60.0}, "must fit its interleaving slot"),
    ({"threshold_ua": [20.0] * 3}, "threshold_ua must be a finite number > 0 or 12 such numbers"),
    ({"threshold_ua": 90.0}, "comfort_ua must exceed threshold_ua"),
    ({"comfort_ua": float("nan")}, "comfort_ua"),
    ({"saturation_db": -70.0}, "saturation_db must be a finite number > -60"),
    ({"electrodes": [0, 1, 2]}, "electrodes must be 12 distinct non-negative integers"),
    ({"electrodes": [0] * 12}, "electrodes must be 12 distinct"),
    ({"envelope_cutoff_hz": 0}, "envelope_cutoff_hz"),
    ({"filter_order": 0}, "filter_order"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CISConfig(**kwargs)


def test_bad_input():
    enc = CISEncoder(CISConfig())
    with pytest.raises(ValidationError, match="audio block must be a 1-D array"):
        enc.step(np.zeros((10, 2)), 0.0)
    with pytest.raises(ValidationError, match="finite"):
        enc.step(np.array([0.0, np.nan]), 0.0)
    with pytest.raises(ValidationError, match="t_start_s must be a finite number"):
        enc.step(np.zeros(10), float("inf"))
    with pytest.raises(ConfigError, match="CISEncoder config must be a CISConfig"):
        CISEncoder({"n_channels": 4})


# ------------------------------------------------------------------------------ audio helpers


def test_read_wav_scales_and_resamples(tmp_path):
    fs_file = 22050
    t = np.arange(fs_file // 2) / fs_file
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "tone.wav"
    wavfile.write(path, fs_file, np.stack([(x * 32767).astype(np.int16)] * 2, axis=1))
    y, fs = read_wav(path, 16000.0)
    assert fs == 16000.0 and y.shape == (8000,)
    assert np.max(np.abs(y)) == pytest.approx(0.5, abs=0.01)
    raw, fs_raw = read_wav(path)
    assert fs_raw == fs_file and raw.shape == (fs_file // 2,)
    with pytest.raises(ValidationError, match="cannot read WAV file"):
        read_wav(tmp_path / "missing.wav")
    with pytest.raises(ConfigError, match="sampling rates must be > 0"):
        resample(x, 0, 16000)


# ------------------------------------------------------------------- vocoder / intelligibility


def test_resynthesis_recovers_band_envelopes():
    cfg = CISConfig(n_channels=8)
    x = _chirp(0.6)
    plan = CISEncoder(cfg).encode(x)
    env_in = CISEncoder(cfg).envelopes(x)
    env_out = channel_envelopes(plan, cfg, FS, x.size / FS)
    # the decoded envelope follows the encoder's own within the compression's range (-60…-10 dB)
    lo, hi = 10 ** (-60 / 20), 10 ** (-10 / 20)
    inside = (env_in > 2 * lo) & (env_in < hi / 2)
    ratio_db = 20 * np.log10(env_out[inside] / env_in[inside])
    assert inside.sum() > 5000 and np.median(np.abs(ratio_db)) < 1.0
    # plans from streaming blocks resynthesise the same way
    enc = CISEncoder(cfg)
    plans = [enc.step(x[i:i + 320], i / FS) for i in range(0, x.size, 320)]
    np.testing.assert_allclose(resynthesize(plans, cfg, FS, x.size / FS), resynthesize(plan, cfg, FS, x.size / FS))
    with pytest.raises(ConfigError, match="carrier must be one of"):
        resynthesize(plan, cfg, FS, 0.6, carrier="pink")


def test_stoi_rises_with_channel_count(sentence_16k):
    x = sentence_16k
    scores = {n: intelligibility(x, CISConfig(n_channels=n, rate_hz=500.0))["stoi"] for n in (2, 4, 16)}
    assert 0.3 < scores[4] < scores[16] <= 1.0
    assert scores[16] - scores[4] > 0.03             # measured: 0.71 → 0.77
    assert scores[2] < scores[16] - 0.05
    # a sine-carrier vocoder keeps the trend too
    s4 = intelligibility(x, CISConfig(n_channels=4, rate_hz=500.0), carrier="sine")["stoi"]
    s16 = intelligibility(x, CISConfig(n_channels=16, rate_hz=500.0), carrier="sine")["stoi"]
    assert s16 > s4 + 0.03


def test_stoi_drops_when_the_pulses_are_scrambled(sentence_16k):
    """A null control: the same pulses, shuffled in time across the plan, convey much less."""
    x = sentence_16k
    cfg = CISConfig(n_channels=12)
    plan = CISEncoder(cfg).encode(x)
    good = intelligibility(x, cfg)["stoi"]
    from pystoi import stoi

    p = plan.pulses.copy()
    p["amplitude_ua"] = np.random.default_rng(0).permutation(p["amplitude_ua"])
    y = resynthesize(p, cfg, FS, x.size / FS)
    assert stoi(x, y, int(FS)) < good - 0.2


def test_intelligibility_table_rows(sentence_16k):
    x = sentence_16k[:24000]
    seen = []
    rows = cis_intelligibility_table(x, FS, channels=(4, 22), rates=(900.0,),
                                     progress=lambda d, t, r: seen.append((d, t)))
    assert [(r["n_channels"], r["rate_hz"]) for r in rows] == [(4, 900.0), (22, 900.0)]
    assert seen == [(1, 2), (2, 2)]
    assert rows[0]["width_us"] == 40.0 and rows[1]["width_us"] < 40.0   # 22 × 900 slots are 50.5 µs
    assert rows[1]["pulses_per_s"] > rows[0]["pulses_per_s"]
    assert all(0.0 < r["stoi"] <= 1.0 for r in rows)
    with pytest.raises(ValidationError, match="at least 0.5 s"):
        intelligibility(x[:4000], CISConfig())


def test_plans_pass_the_default_interlock_at_icms_rates():
    """Streaming plans at 300 pps fit the default ICMS limits whole; 900 pps is refused for frequency."""
    from cortexlink.stim.interlock import SafetyInterlock
    from cortexlink.stim.limits import SafetyLimits

    x = _chirp(0.5)
    for rate, expect_refused in ((300.0, False), (900.0, True)):
        lock = SafetyInterlock(SafetyLimits.default(64))
        enc = CISEncoder(CISConfig(rate_hz=rate))
        approved, reasons = 0, {}
        for i in range(0, x.size, 333):                      # blocks that do not align with frames
            d = lock.review(enc.step(x[i:i + 333], i / FS), i / FS)
            approved += d.n_approved
            for k, v in d.reasons.items():
                reasons[k] = reasons.get(k, 0) + v
        assert approved > 1000
        if expect_refused:
            assert set(reasons) == {"frequency"}
        else:
            assert reasons == {}
