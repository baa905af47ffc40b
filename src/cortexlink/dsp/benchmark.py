"""Throughput measurement of the feature chain against its plain scipy peer.

Benchmarks are not tests: these functions measure and return plain dicts (JSON-ready);
``cortexlink bench`` (in :mod:`cortexlink.bench` / :mod:`cortexlink.cli`) prints them.

Example (one core, as in the README figures)::

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -c "import json; \\
        from cortexlink.dsp.benchmark import measure_throughput; \\
        print(json.dumps(measure_throughput(4096), indent=1))"
"""

from __future__ import annotations

import logging
import os
import platform
import time
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.core.validation import check_positive

logger = logging.getLogger(__name__)


def synthetic_recording(n_channels: int, n_samples: int, *, fs_hz: float = 30000.0, seed: int = 0,
                        noise_uv: float = 8.0, rate_hz: float = 10.0, spike_uv: float = 80.0,
                        gain_uv: float = 0.195) -> tuple[np.ndarray, ChannelMap, list[np.ndarray]]:
    """White noise plus injected biphasic spikes, as int16 counts (a self-contained test signal).

    Parameters
    ----------
    n_channels, n_samples : int
    fs_hz : float
    seed : int
    noise_uv : float
        Broadband noise standard deviation (µV).
    rate_hz : float
        Mean firing rate of the one unit injected per channel.
    spike_uv : float
        Trough amplitude of the injected spikes (µV).
    gain_uv : float
        µV per count of the int16 output.

    Returns
    -------
    raw : ndarray (n_samples, n_channels), int16
    channel_map : ChannelMap
    spike_samples : list of ndarray
        Per channel, the samples of the injected spikes' troughs.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, noise_uv, (n_samples, n_channels)).astype(np.float32)
    t_ms = (np.arange(-12, 36) / fs_hz) * 1e3
    tmpl = (-np.exp(-t_ms ** 2 / (2 * 0.1 ** 2)) + 0.35 * np.exp(-(t_ms - 0.45) ** 2 / (2 * 0.2 ** 2)))
    tmpl = (spike_uv * tmpl / -tmpl.min()).astype(np.float32)
    i0 = 12
    refr = int(2e-3 * fs_hz)
    spikes = []
    for c in range(n_channels):
        n = rng.poisson(rate_hz * n_samples / fs_hz)
        s = np.sort(rng.integers(i0 + 1, n_samples - tmpl.size, n))
        s = s[np.r_[True, np.diff(s) > refr]] if s.size else s
        for t0 in s:
            x[t0 - i0:t0 - i0 + tmpl.size, c] += tmpl
        spikes.append(s)
    raw = np.clip(np.round(x / gain_uv), -32768, 32767).astype(np.int16)
    return raw, ChannelMap.grid(n_channels, gain_uv=gain_uv), spikes


def _best_time(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _rates(n_samples: int, n_channels: int, seconds: float, fs_hz: float) -> dict[str, float]:
    sps = n_samples * n_channels / seconds
    return {"seconds": seconds, "samples_per_s": sps, "realtime_channels": sps / fs_hz,
            "realtime_factor": (n_samples / fs_hz) / seconds}


def measure_throughput(n_channels: int = 4096, duration_s: float = 1.0, chunk_ms: float = 30.0, *,
                       fs_hz: float = 30000.0, filter_order: int = 2, reference: str = "car",
                       repeats: int = 3, peers: tuple[str, ...] = ("scipy_chain",),
                       seed: int = 0) -> dict[str, Any]:
    """Time the full chain (filter + reference + tx + sbp + bins) on one thread.

    The data (int16, ``n_channels`` x ``duration_s``) are fed to
    :class:`~cortexlink.dsp.FeatureExtractor` in ``chunk_ms`` chunks through
    :meth:`~cortexlink.dsp.FeatureExtractor.step`, after a calibration and a warm-up
    pass (numba compilation excluded); the best of ``repeats`` runs is kept. The peers
    run on the same data: ``"scipy_chain"`` (:func:`~cortexlink.dsp.scipy_chain`, whole
    array) and ``"numpy_backend"`` (the streaming numpy/scipy backend).

    Returns
    -------
    dict
        Per implementation ``seconds``, ``samples_per_s``, ``realtime_channels`` (channels
        at ``fs_hz`` sustained in real time) and ``realtime_factor``; plus the speed-up of
        the numba chain over each peer and a description of the machine.
    """
    from cortexlink.dsp.features import FeatureExtractor
    from cortexlink.dsp.reference import scipy_chain

    n_ch = check_positive("n_channels", n_channels, integer=True)
    n = int(round(check_positive("duration_s", duration_s) * fs_hz))
    cs = max(1, int(round(check_positive("chunk_ms", chunk_ms) * fs_hz / 1000.0)))
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):  # pragma: no cover - numba is a dependency
        pass
    raw, cmap, _ = synthetic_recording(n_ch, n, fs_hz=fs_hz, seed=seed)
    chunks = [Chunk(raw[i:i + cs], fs_hz, i) for i in range(0, n, cs)]
    result: dict[str, Any] = {
        "n_channels": n_ch, "fs_hz": fs_hz, "duration_s": n / fs_hz, "chunk_samples": cs,
        "filter_order": filter_order, "reference": reference,
        "machine": {"processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version()},
    }

    def streaming(backend: str) -> dict[str, float]:
        fx = FeatureExtractor(cmap, fs_hz, filter_order=filter_order, reference=reference, backend=backend)
        fx.calibrate(raw[: min(n, int(fs_hz // 2))])
        fx.reset()
        for c in chunks[:3]:  # warm-up (numba compile or cache load)
            fx.step(c)

        def run() -> None:
            fx.reset()
            for c in chunks:
                fx.step(c)

        return _rates(n, n_ch, _best_time(run, repeats), fs_hz)

    result["numba"] = streaming("numba")
    for peer in peers:
        if peer == "scipy_chain":
            res = _rates(n, n_ch, _best_time(lambda: scipy_chain(
                raw, fs_hz, gain_uv=cmap.gain_uv, filter_order=filter_order), max(1, repeats // 2)), fs_hz)
        elif peer == "numpy_backend":
            res = streaming("numpy")
        else:
            raise ConfigError(f"peers must be drawn from ('scipy_chain', 'numpy_backend'); got {peer!r}")
        result[peer] = res
        result[f"speedup_vs_{peer}"] = res["seconds"] / result["numba"]["seconds"]
    logger.info("dsp throughput at %d channels: %.0f M samples/s (%.0f real-time channels)", n_ch,
                result["numba"]["samples_per_s"] / 1e6, result["numba"]["realtime_channels"])
    return result
