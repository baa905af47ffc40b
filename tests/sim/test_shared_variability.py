"""Shared (information-limiting) intent noise, overdispersed gain noise, the ``cortex`` preset family
and the centre-out intent (issue 19, item 2)."""

import hashlib

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.sim import PRESETS, ImplantConfig, SimulatedImplant
from cortexlink.sim.reach_intent import CentreOutIntent

#: sha256 of ``read(3000).data`` computed at commit 8052b6d, *before* shared_noise and overdispersion
#: existed: with both at 0 the implant must produce exactly the same samples.
_HASH_TINY_SEED3 = "d21ded0dafd2398febdd3c742526f23edd59e7245437f7557d08fdecf2815701"
_HASH_DEFAULT8_SEED3 = "25ce835802833b86538369dcf9ea1ce07fd607ca975bea0468b8917e51c1dbc2"


def _sha(imp: SimulatedImplant, n: int = 3000) -> str:
    return hashlib.sha256(imp.read(n).data.tobytes()).hexdigest()


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("field, bad, allowed", [
    ("shared_noise", -0.1, "[0.0, 10.0]"), ("shared_noise", 11.0, "[0.0, 10.0]"),
    ("shared_noise_tau_s", 0.0, "[0.001, 100.0]"), ("shared_noise_tau_s", 1e3, "[0.001, 100.0]"),
    ("overdispersion", -1.0, "[0.0, 2.0]"), ("overdispersion", 2.5, "[0.0, 2.0]"),
    ("overdispersion_tau_s", 0.0, "[0.001, 1000.0]"), ("overdispersion_tau_s", 1e4, "[0.001, 1000.0]"),
])
def test_new_fields_out_of_range_are_refused(field, bad, allowed):
    with pytest.raises(ConfigError, match=rf"{field} must be in \{allowed[:-1]}\]; got {bad!r}"):
        ImplantConfig(n_channels=4, n_dead=0, n_saturating=0, **{field: bad})


@pytest.mark.parametrize("field", ["shared_noise", "shared_noise_tau_s", "overdispersion", "overdispersion_tau_s"])
@pytest.mark.parametrize("bad", [True, "0.1", float("nan"), None])
def test_new_fields_must_be_finite_numbers(field, bad):
    with pytest.raises(ConfigError, match=rf"{field} must be a finite number; got"):
        ImplantConfig(n_channels=4, n_dead=0, n_saturating=0, **{field: bad})


def test_new_fields_default_off():
    cfg = ImplantConfig()
    assert cfg.shared_noise == 0.0 and cfg.overdispersion == 0.0
    for name, preset in PRESETS.items():
        if name != "cortex":
            assert preset.shared_noise == 0.0 and preset.overdispersion == 0.0, name


# ------------------------------------------------------------------------------ off = unchanged
def test_off_is_bit_identical_to_the_simulator_before_the_fields():
    assert _sha(SimulatedImplant.from_preset("tiny", seed=3)) == _HASH_TINY_SEED3
    assert _sha(SimulatedImplant.from_preset("default", seed=3, n_channels=8)) == _HASH_DEFAULT8_SEED3


def test_shared_noise_draws_from_its_own_stream():
    # without velocity tuning the shared noise reaches no unit: every sample must stay the same,
    # which fails if the noise took draws from any existing stream
    base = dict(n_channels=8, n_dead=0, n_saturating=0, depth_hz_range=(0.0, 0.0), seed=5)
    off = SimulatedImplant(**base)
    on = SimulatedImplant(**base, shared_noise=2.0, shared_noise_tau_s=0.01)
    assert _sha(off, 6000) == _sha(on, 6000)
    gt_off, gt_on = off.ground_truth(), on.ground_truth()
    np.testing.assert_array_equal(gt_off.spike_samples, gt_on.spike_samples)
    assert np.all(off.shared_noise_at(gt_off.intent_samples) == 0.0)
    assert np.any(on.shared_noise_at(gt_on.intent_samples) != 0.0)


def test_overdispersion_leaves_the_shared_noise_and_intent_alone():
    base = dict(n_channels=8, n_dead=0, n_saturating=0, seed=2, shared_noise=0.5)
    a = SimulatedImplant(**base)
    b = SimulatedImplant(**base, overdispersion=0.8)
    a.read(3000), b.read(3000)
    ga, gb = a.ground_truth(), b.ground_truth()
    np.testing.assert_array_equal(ga.intent_velocity, gb.intent_velocity)
    np.testing.assert_array_equal(a.shared_noise_at(ga.intent_samples), b.shared_noise_at(gb.intent_samples))
    assert not np.array_equal(ga.spike_samples, gb.spike_samples)


def test_chunk_size_invariance_with_the_noise_on():
    kw = dict(n_channels=6, n_dead=0, n_saturating=0, seed=4, shared_noise=0.3, overdispersion=0.6)
    whole = SimulatedImplant(**kw).read(2100).data
    imp = SimulatedImplant(**kw)
    parts = [imp.read(n).data for n in (1, 7, 1000, 1092)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    imp.reset()
    np.testing.assert_array_equal(imp.read(2100).data, whole)


# ------------------------------------------------------------------------------ what the noise does
def _rates_per_block(imp: SimulatedImplant, n_blocks: int, velocity=None) -> np.ndarray:
    out = np.empty((n_blocks, imp.n_units))
    gt_v = None
    for k in range(n_blocks):
        imp.read(imp.block_size)
        if velocity is None:
            gt_v = imp.ground_truth().intent_velocity[-1]
        out[k] = imp.expected_rates_hz(gt_v if velocity is None else velocity)
    return out


def _no_clip_cfg(**kw) -> dict:
    # baselines well above the tuning depth: rates never clip at 0, so the model is exactly linear
    return dict(n_channels=6, n_dead=0, n_saturating=0, units_per_channel_p=(0.0, 1.0), drift=0.0,
                baseline_hz_range=(80.0, 100.0), depth_hz_range=(5.0, 20.0), block_size=300, **kw)


def test_shared_noise_correlates_units_along_their_preferred_directions():
    imp = SimulatedImplant(**_no_clip_cfg(seed=1, shared_noise=0.5, shared_noise_tau_s=0.001))
    r = _rates_per_block(imp, 1000, velocity=(0.3, -0.2))
    resid = r - r.mean(0)
    gt = imp.ground_truth()
    pd = gt.unit_preferred_direction
    # every unit's residual (given the intent) is its tuning applied to the one shared noise
    eps = imp.shared_noise_at(gt.intent_samples)
    np.testing.assert_allclose(resid, (eps - eps.mean(0)) @ (gt.unit_depth_hz[:, None] * pd).T, atol=1e-9)
    # so two units correlate by the cosine of the angle between their preferred directions
    corr = np.corrcoef(resid.T)
    assert np.max(np.abs(corr - pd @ pd.T)) < 0.15
    assert np.max(np.abs(corr[np.triu_indices(imp.n_units, 1)])) > 0.5
    # off: no residual at all (a fixed intent, no drift, no gain noise)
    flat = _rates_per_block(SimulatedImplant(**_no_clip_cfg(seed=1)), 20, velocity=(0.3, -0.2))
    assert np.ptp(flat, axis=0).max() == 0.0


def _random_intent(seed: int):
    def fn(sample_idx: int):
        rng = np.random.default_rng([seed, sample_idx])
        vx, vy = rng.standard_normal(2) * 0.5
        return float(vx), float(vy), 0.0
    return fn


@pytest.mark.parametrize("sd", [0.0, 0.5])
def test_shared_noise_caps_the_r2_of_a_perfect_linear_read_out(sd):
    # noiseless rates of every unit: a linear read-out recovers v + eps exactly, and the best it can do
    # for v is R² = var(v) / (var(v) + sd²) whatever the number of units (0.5 here; 1 without noise)
    imp = SimulatedImplant(**_no_clip_cfg(seed=3, shared_noise=sd, shared_noise_tau_s=0.001),
                           intent_fn=_random_intent(3))
    n = 1200
    r = _rates_per_block(imp, n)
    v = imp.ground_truth().intent_velocity[:n]
    X = np.column_stack([r, np.ones(n)])
    tr, te = slice(0, 900), slice(900, n)
    coef, *_ = np.linalg.lstsq(X[tr], v[tr], rcond=None)
    pred = X[te] @ coef
    r2 = 1 - ((v[te] - pred) ** 2).sum(0) / ((v[te] - v[te].mean(0)) ** 2).sum(0)
    ceiling = 0.25 / (0.25 + sd ** 2)
    assert np.all(np.abs(r2 - ceiling) < 0.08), (r2, ceiling)


def test_shared_noise_at_is_stationary_with_the_configured_sd():
    imp = SimulatedImplant(n_channels=2, n_dead=0, n_saturating=0, seed=9, block_size=64,
                           shared_noise=0.4, shared_noise_tau_s=0.002)
    imp.read(64 * 4000)
    eps = imp.shared_noise_at(imp.ground_truth().intent_samples)
    assert eps.shape == (4000, 2)
    np.testing.assert_allclose(eps.std(0), 0.4, rtol=0.1)
    with pytest.raises(ValidationError, match=r"samples must be integer sample indices in \[0, 256000\)"):
        imp.shared_noise_at([256000])
    with pytest.raises(ValidationError, match="samples must be integer sample indices"):
        imp.shared_noise_at([-1])


def test_signal_dependent_shared_noise_grows_with_the_intended_speed():
    kw = dict(n_channels=2, n_dead=0, n_saturating=0, seed=9, block_size=64, shared_noise_speed=0.3,
              shared_noise_tau_s=0.002)
    still = SimulatedImplant(**kw)
    still.set_intent(velocity=(0.0, 0.0))
    still.read(64 * 500)
    assert np.all(still.shared_noise_at(still.ground_truth().intent_samples) == 0.0)   # rest: no shared noise
    moving = SimulatedImplant(**kw)
    moving.set_intent(velocity=(2.0, 0.0))
    moving.read(64 * 4000)
    eps = moving.shared_noise_at(moving.ground_truth().intent_samples)
    np.testing.assert_allclose(eps.std(0), 0.3 * 2.0, rtol=0.1)
    with pytest.raises(ConfigError, match="shared_noise_speed"):
        ImplantConfig(shared_noise_speed=-1.0)
    assert ImplantConfig().shared_noise_speed == 0.0
    assert PRESETS["cortex"].shared_noise_speed > PRESETS["cortex"].shared_noise     # mostly signal-dependent


def _fano(overdispersion: float) -> float:
    imp = SimulatedImplant(n_channels=8, n_dead=0, n_saturating=0, units_per_channel_p=(0.0, 1.0), seed=6,
                           drift=0.0, baseline_hz_range=(30.0, 30.0), depth_hz_range=(0.0, 0.0),
                           click_fraction=0.0, overdispersion=overdispersion, overdispersion_tau_s=1.0,
                           line_noise_hz=None, artifact_rate_hz=0.0)
    imp.read(30000 * 20)
    gt = imp.ground_truth()
    win = 3000                                       # 100 ms windows
    counts = np.zeros((imp.n_units, 200))
    np.add.at(counts, (gt.spike_units, np.minimum(gt.spike_samples // win, 199)), 1)
    return float(np.mean(counts.var(1) / counts.mean(1)))


def test_overdispersion_makes_counts_super_poisson():
    # 30 Hz, 100 ms windows: mean count 3; a 1 s gain time constant with sigma 0.6 gives a
    # Fano factor of about 1 + 3 * (exp(0.36) - 1) ~ 2.3 (a bit less: the gain also moves in a window)
    assert _fano(0.0) < 1.1                          # Poisson with a refractory period: just under 1
    assert _fano(0.6) > 1.6


# ------------------------------------------------------------------------------ the preset family
@pytest.mark.parametrize("n", [16, 96])
def test_cortex_preset_keeps_its_unit_statistics_at_any_channel_count(n):
    cfg = PRESETS["cortex"].replace(n_channels=n, n_dead=1, n_saturating=0)
    base = PRESETS["cortex"]
    for f in ("units_per_channel_p", "snr_range", "baseline_hz_range", "depth_hz_range", "click_fraction",
              "shared_noise", "overdispersion", "pitch_um", "noise_uv"):
        assert getattr(cfg, f) == getattr(base, f), f
    assert base.shared_noise > 0 and base.overdispersion > 0
    imp = SimulatedImplant(cfg, intent_fn=CentreOutIntent(seed=1))
    assert imp.read(300).data.shape == (300, n)


# ------------------------------------------------------------------------------ centre-out intent
def test_centre_out_intent_reaches_rests_and_returns():
    fn = CentreOutIntent(seed=2, fs_hz=1000.0)
    v = np.array([fn(i)[:2] for i in range(60000)])            # 60 s at 1 ms
    speed = np.hypot(v[:, 0], v[:, 1])
    assert 0.4 < speed.max() <= 1.5 + 1e-9
    still = speed == 0.0
    assert 0.2 < still.mean() < 0.6                             # rests and holds between reaches
    # 8 directions only
    moving = speed > 0.05
    ang = np.round(np.arctan2(v[moving, 1], v[moving, 0]) / (np.pi / 4)) * (np.pi / 4)
    assert len(np.unique(np.round(np.mod(ang, 2 * np.pi), 6))) == 8
    # the intended position goes out and comes back: it returns to the centre after each trial
    pos = np.cumsum(v, axis=0) / 1000.0
    ends = np.array(fn._starts[1:-1]) * 1000.0
    ends = ends[ends < 60000].astype(int) - 1
    np.testing.assert_allclose(pos[ends], 0.0, atol=1e-2)
    assert np.max(np.hypot(pos[:, 0], pos[:, 1])) > 0.1
    # bell-shaped: zero at the start of each reach, fastest in its middle
    rest, reach, hold, peak, ux, uy = fn._trial(0)
    t0 = rest
    assert fn.velocity_at_s(t0) == (0.0, 0.0)
    mid = fn.velocity_at_s(t0 + reach / 2)
    np.testing.assert_allclose(np.hypot(*mid), peak, rtol=1e-9)


def test_centre_out_intent_is_seeded_and_order_free():
    a, b = CentreOutIntent(seed=4), CentreOutIntent(seed=4)
    late = [b(i) for i in range(3_000_000, 2_000_000, -30000)]
    early = [a(i) for i in range(3_000_000, 2_000_000, -30000)]
    assert late == early
    assert CentreOutIntent(seed=5)(2_500_000) != a(2_500_000) or CentreOutIntent(seed=5)._trial(0) != a._trial(0)


@pytest.mark.parametrize("kw, msg", [
    (dict(seed=-1), "seed must be an integer >= 0"),
    (dict(n_directions=0), r"n_directions must be an integer in \[1, 64\]"),
    (dict(reach_s=(0.8, 0.3)), r"reach_s must be a \(low, high\) pair with 0.01 <= low <= high <= 100.0"),
    (dict(peak_speed="fast"), r"peak_speed must be a \(low, high\) pair of numbers"),
    (dict(fs_hz=0.0), r"fs_hz must be in \[1.0, 10000000.0\]"),
])
def test_centre_out_intent_refuses_bad_input(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        CentreOutIntent(**kw)
