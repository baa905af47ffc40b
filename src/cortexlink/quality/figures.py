"""Figures people would rather look at than read: crossing rasters and per-channel maps.

matplotlib is imported inside the functions (Agg backend), so importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cortexlink.core.types import BinnedFeatures, ChannelMap


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def electrode_map(fig, ax, pos: np.ndarray, values: np.ndarray, good: np.ndarray, label: str, cmap: str, *,
                  missing_label: str = "no value", title: str | None = None, size: float = 12) -> None:
    """Draw per-electrode ``values`` on the array at ``pos`` (µm) in ``ax``: electrodes not ``good``
    as red crosses, a colour bar labelled ``label``."""
    v = np.asarray(values, float)
    good = np.asarray(good, bool)
    sc = ax.scatter(pos[good, 0], pos[good, 1], c=v[good], s=size, marker="s", cmap=cmap)
    if (~good).any():
        ax.scatter(pos[~good, 0], pos[~good, 1], s=size + 8, marker="x", c="red", label=missing_label)
        ax.legend(loc="upper right", fontsize=8)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_title(label if title is None else title, fontsize=9 if title else None)
    fig.colorbar(sc, ax=ax, label=label)


def feature_overview(features: BinnedFeatures, channel_map: ChannelMap, noise_rms_uv: np.ndarray,
                     bad: np.ndarray, path: Path, *, max_channels: int = 256, title: str = "") -> Path:
    """Write a PNG: threshold-crossing raster (top) and per-channel noise / rate maps on the array.

    Parameters
    ----------
    features : BinnedFeatures
        Must hold ``*/tx`` features.
    channel_map : ChannelMap
        Gives electrode positions for the maps.
    noise_rms_uv : array (n_channels,)
        Per-channel noise RMS in µV (NaN where unknown).
    bad : array of bool (n_channels,)
        Channels left out (dead, saturated, flagged).
    path : Path
        Output PNG.
    max_channels : int
        Raster shows the first ``max_channels`` channels.
    """
    plt = _plt()
    tx = features.select("tx")
    counts = np.nan_to_num(np.asarray(tx.data, dtype=float))
    t_s = tx.bin_times_s()
    rate_hz = counts.sum(axis=0) / max(features.n_bins * features.bin_width_s, 1e-9)
    pos = channel_map.positions_um

    fig = plt.figure(figsize=(13, 8), constrained_layout=True)
    gs = fig.add_gridspec(2, 2, height_ratios=[1.2, 1])
    ax = fig.add_subplot(gs[0, :])
    n_show = min(max_channels, counts.shape[1])
    extent = [t_s[0], t_s[-1] + features.bin_width_s, n_show, 0] if len(t_s) else None
    im = ax.imshow(counts[:, :n_show].T, aspect="auto", interpolation="nearest", cmap="Greys",
                   extent=extent, vmin=0, vmax=max(1.0, np.percentile(counts[:, :n_show], 99.5)))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("channel")
    ax.set_title(f"threshold crossings per {features.bin_width_s * 1e3:.0f} ms bin (first {n_show} channels)")
    fig.colorbar(im, ax=ax, label="crossings / bin")

    for k, (values, label, cmap) in enumerate([(noise_rms_uv, "noise RMS (µV)", "viridis"),
                                               (rate_hz, "crossing rate (Hz)", "magma")]):
        electrode_map(fig, fig.add_subplot(gs[1, k]), pos, values, ~np.asarray(bad, bool), label, cmap,
                      missing_label="bad / left out")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
