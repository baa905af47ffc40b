"""Adaptation between and within blocks: bias correction (Jarosiewicz et al. 2015) and SmoothBatch
(Orsborn et al. 2012) — the estimators, the session options and bench ablations, and a recorded
session that replays with them."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from cortexlink import ConfigError, ValidationError
from cortexlink.decoders.fitting import fit_decoders, refit_decoder
from cortexlink.decoders.speed_gain import BiasCorrector, bias_speed_threshold, output_stage


def test_bias_corrector_learns_a_bias_from_fast_output_only():
    rng = np.random.default_rng(0)
    b = BiasCorrector(tau_s=2.0, speed_threshold=0.5, dt_s=0.02)
    bias = np.array([0.3, -0.2])
    # fast movements in every direction plus a constant bias: the running mean converges to it
    for _ in range(3000):
        a = rng.uniform(0, 2 * np.pi)
        out = b(np.array([math.cos(a), math.sin(a)]) * 1.5 + bias)
    np.testing.assert_allclose(b.bias, bias, atol=0.1)
    assert b.n_updates == 3000
    v = np.array([1.5, 0.0]) + bias
    np.testing.assert_allclose(b(v), v - b.bias)
    # slow output (the participant countering the bias) leaves the estimate alone
    before, n = b.bias.copy(), b.n_updates
    out = b(np.array([0.1, 0.1]))
    assert b.n_updates == n and np.array_equal(b.bias, before)
    np.testing.assert_allclose(out, np.array([0.1, 0.1]) - before)
    b.reset()
    assert np.array_equal(b.bias, np.zeros(2)) and b.n_updates == 0


def test_bias_corrector_settings_round_trip_and_bad_values_are_refused():
    b = BiasCorrector(30.0, 0.4, 0.02)
    c = BiasCorrector.from_dict(b.to_dict())
    assert c.to_dict() == b.to_dict() and BiasCorrector.from_dict(None) is None
    for bad in ({"tau_s": 0}, {"speed_threshold": float("nan")}, {"dt_s": True}, {"tau_s": -3.0}):
        kw = {"tau_s": 30.0, "speed_threshold": 0.4, "dt_s": 0.02, **bad}
        with pytest.raises(ConfigError, match="bias correction"):
            BiasCorrector(**kw)


def test_the_output_stage_corrects_the_bias_before_the_gain():
    from cortexlink.decoders.speed_gain import SpeedGain

    b = BiasCorrector(0.02, 0.5, 0.02)        # tau = one bin: the estimate moves 63 % of the way at once
    v, frozen = output_stage([1.0, 0.0], SpeedGain(1e-6), None, None, b)
    a = 1.0 - math.exp(-1.0)
    np.testing.assert_allclose(b.bias, [a, 0.0])
    np.testing.assert_allclose(v, [1.0 - a, 0.0], rtol=1e-6)
    assert not frozen


def _block(n=1500, seed=0, tuning_seed=1):
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 0.02
    v = np.stack([np.sin(2 * np.pi * 0.5 * t), np.cos(2 * np.pi * 0.3 * t)], axis=1)
    W = np.random.default_rng(tuning_seed).normal(size=(2, 20))
    X = v @ W + 0.3 * rng.normal(size=(n, 20))
    xy = np.cumsum(v, axis=0) * 0.02
    tgt = np.repeat(rng.uniform(-1, 1, (n // 100 + 1, 2)), 100, axis=0)[:n]       # a new target every 2 s
    return SimpleNamespace(features=X, intended_velocity=v, cursor_velocity=v, cursor_xy=xy, target_xy=tgt,
                           click_intent=np.zeros(n), decoded_velocity=v, on_target=np.zeros(n, bool), dt_s=0.02)


def test_smoothbatch_blends_the_observation_model_and_replaces_it_at_keep_zero():
    fit = fit_decoders("refit_kalman", {}, [_block()], click=False, labels="intent", bias_tau_s=30.0)
    assert fit.info["bias_correction"]["tau_s"] == 30.0
    assert fit.info["bias_correction"]["speed_threshold"] == pytest.approx(
        bias_speed_threshold(fit.decoder, _block().features))
    old = fit.decoder
    batch = _block(seed=5, tuning_seed=7)              # the tuning changed: a refit has something to learn
    new = refit_decoder(old, [batch], in_place=False).decoder
    half = refit_decoder(old, [batch], in_place=False, keep=0.5)
    assert half.info["keep"] == 0.5 and half.info["bias_correction"] is None
    for name in ("C_", "d_", "Q_"):
        np.testing.assert_allclose(getattr(half.decoder, name),
                                   0.5 * getattr(old, name) + 0.5 * getattr(new, name), rtol=1e-10, atol=1e-12)
    assert not np.allclose(new.C_, old.C_)
    for bad in (1.0, -0.1, True, "half"):
        with pytest.raises(ValidationError, match="keep"):
            refit_decoder(old, [batch], in_place=False, keep=bad)


def test_bias_correction_and_smoothbatch_are_session_options_and_bench_ablations():
    from cortexlink.bench.closed_loop import SMOOTHBATCH_BATCH_S, session
    from cortexlink.runtime.nodes.decoder import DecoderNode
    from cortexlink.runtime.session import load_session

    assert DecoderNode.PARAMS["bias_tau_s"].default is None
    assert DecoderNode.PARAMS["refit_half_life_s"].default is None
    s = session("refit_kalman", 96, 0, variant="smoothbatch", refit_s=40.0)
    names = [b["name"] for b in s["blocks"]]
    n = int(round(40.0 / SMOOTHBATCH_BATCH_S))
    assert names == ["calibration", "fit"] + [x for k in range(n) for x in (f"refit-block-{k + 1}", f"refit-{k + 1}")] \
        + ["refit_kalman"]
    assert sum(b.get("seconds", 0) for b in s["blocks"] if b["kind"] == "closed_loop") == pytest.approx(40.0)
    assert [b["name"] for b in session("refit_kalman", 96, 0)["blocks"]] == [
        "calibration", "fit", "refit-block", "refit", "refit_kalman"]
    assert session("kalman", 96, 0, variant="bias_correction")["decoder"]["bias_tau_s"] == 30.0
    assert session("refit_kalman", 96, 0, variant="refit_dynamics")["decoder"]["params"] == {"refit_dynamics": True}
    for key, bad in (("bias_tau_s", 0.0), ("refit_half_life_s", "soon")):
        cfg = session("refit_kalman", 96, 0)
        cfg["decoder"][key] = bad
        with pytest.raises(ConfigError, match=f"session.decoder.{key}"):
            load_session(cfg)


def test_a_session_with_bias_correction_and_smoothbatch_records_and_replays(tmp_path):
    from cortexlink.io.replay import replay
    from cortexlink.io.session_log import SessionRecorder
    from cortexlink.runtime.session import load_session, run_session

    cfg = load_session({"name": "adapt", "seed": 1, "implant": {"preset": "default", "n_channels": 24},
                        "decoder": {"kind": "refit_kalman", "bias_tau_s": 5.0, "refit_half_life_s": 4.0},
                        "click_decoder": {"enabled": True},
                        "blocks": [{"kind": "calibration", "task": "centre_out", "seconds": 8,
                                    "task_params": {"click": True}},
                                   {"kind": "fit"},
                                   {"name": "b1", "kind": "closed_loop", "task": "centre_out", "seconds": 4},
                                   {"name": "r1", "kind": "refit"},
                                   {"name": "b2", "kind": "closed_loop", "task": "centre_out", "seconds": 4},
                                   {"name": "r2", "kind": "refit"},
                                   {"name": "ev", "kind": "closed_loop", "task": "centre_out", "seconds": 3}]})
    rec = SessionRecorder(tmp_path / "s", config=cfg, seeds={"seed": 1}, participant_id="P-1", catalogue=False)
    res = run_session(cfg, progress=False, recorder=rec)
    rec.close()
    blocks = {b["name"]: b for b in res["summary"]["blocks"]}
    for r in ("r1", "r2"):          # 4 s batches, 4 s half-life: half of the model before is kept
        assert blocks[r]["keep"] == pytest.approx(0.5, abs=0.02)
        assert blocks[r]["n_prior_bins"] == 0                     # SmoothBatch: the batch alone
        assert blocks[r]["bias_correction"]["tau_s"] == 5.0
    r = replay(tmp_path / "s")
    assert r["compare"]["decoder"]["equal"], r["compare"]["decoder"]
    assert r["compare"]["decoder"]["rows_compared"] > 100
