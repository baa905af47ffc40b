"""``report.html``: the sort at a glance, with PNG figures in ``report/`` beside it.

Summary: a drift map (each spike's estimated depth against time, coloured by amplitude), the
histogram of every quality metric with its curation threshold, units by label. Per unit (good
first, then mua, then noise): mean waveform ± SD on the main channel and its neighbours, the
ISI histogram, amplitude over time, and the unit's metrics, label and reason.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_report"]

_RULE_LINES = {"snr": "snr_min", "isi_violations_ratio": "isi_violations_ratio_max",
               "presence_ratio": "presence_ratio_min", "firing_rate": "firing_rate_min_hz",
               "amplitude_cutoff": "amplitude_cutoff_max"}
_COLORS = {"good": "#2a9d3a", "mua": "#d98e04", "noise": "#999999"}
_SHOWN = ("snr", "firing_rate", "isi_violations_ratio", "presence_ratio", "amplitude_cutoff", "amplitude_median",
          "drift_ptp", "silhouette", "nn_hit_rate")


def _plt() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _drift_map(an: Any, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4))
    spikes = an.sorting.to_spike_vector()
    if len(spikes) and an.has_extension("spike_locations") and an.has_extension("spike_amplitudes"):
        loc = an.get_extension("spike_locations").get_data()
        amp = np.abs(an.get_extension("spike_amplitudes").get_data())
        t = spikes["sample_index"] / an.sampling_frequency
        n = len(t)
        keep = np.random.default_rng(0).choice(n, size=min(n, 100_000), replace=False) if n > 100_000 else slice(None)
        hi = np.percentile(amp, 95) if len(amp) else 1.0
        sc = ax.scatter(t[keep], loc["y"][keep], c=amp[keep], s=2, cmap="viridis", vmin=0, vmax=hi, rasterized=True)
        fig.colorbar(sc, ax=ax, label="amplitude (µV)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("depth y (µm)")
    ax.set_title("drift map: spike depth over time")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _metric_hists(table: Any, rules: dict, path: Path) -> None:
    plt = _plt()
    shown = [m for m in _SHOWN if m in table.columns]
    cols = 3
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(10, 2.6 * rows), squeeze=False)
    for ax, m in zip(axes.ravel(), shown):
        v = table[m].to_numpy(float)
        v = v[np.isfinite(v)]
        if len(v):
            ax.hist(v, bins=min(30, max(5, len(v))), color="#4c72b0")
        if m in _RULE_LINES and _RULE_LINES[m] in rules:
            ax.axvline(rules[_RULE_LINES[m]], color="red", ls="--", lw=1)
        ax.set_title(f"{m} (n={len(v)})", fontsize=9)
    for ax in axes.ravel()[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _unit_figure(an: Any, uid: Any, i: int, label: str, path: Path, ext: dict) -> None:
    plt = _plt()
    fs = an.sampling_frequency
    avg, sd = ext["avg"][i], ext["sd"][i]
    main = int(np.argmax(np.max(np.abs(avg), axis=0)))
    pos = an.get_channel_locations()
    near = np.argsort(np.linalg.norm(pos - pos[main], axis=1))[:4]
    fig, axes = plt.subplots(1, 3, figsize=(11, 2.6))
    t_ms = (np.arange(avg.shape[0]) - ext["nbefore"]) / fs * 1000.0
    for k, ch in enumerate(near):
        off = -k * max(1.0, float(np.ptp(avg[:, main])))
        axes[0].fill_between(t_ms, avg[:, ch] - sd[:, ch] + off, avg[:, ch] + sd[:, ch] + off,
                             color=_COLORS[label], alpha=0.25)
        axes[0].plot(t_ms, avg[:, ch] + off, color=_COLORS[label], lw=1.2 if ch == main else 0.8)
    axes[0].set_title(f"unit {uid} ({label}): waveform, 4 nearest channels", fontsize=9)
    axes[0].set_xlabel("ms")
    axes[0].set_ylabel("µV (channels offset)")
    st = an.sorting.get_unit_spike_train(uid, segment_index=0) / fs
    isi_ms = np.diff(st) * 1000.0
    axes[1].hist(isi_ms[isi_ms < 50], bins=np.arange(0, 50.5, 1.0), color="#4c72b0")
    axes[1].axvspan(0, 1.5, color="red", alpha=0.15)
    axes[1].set_title(f"ISI histogram ({len(st)} spikes)", fontsize=9)
    axes[1].set_xlabel("ms")
    amps = ext["amps"].get(uid)
    if amps is not None and len(amps):
        axes[2].scatter(st[:len(amps)], amps, s=2, color=_COLORS[label], rasterized=True)
    axes[2].set_title("amplitude over time", fontsize=9)
    axes[2].set_xlabel("s")
    axes[2].set_ylabel("µV")
    fig.tight_layout()
    fig.savefig(path, dpi=75)
    plt.close(fig)


def _fmt(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    return "nan" if not math.isfinite(f) else f"{f:.3g}"


def write_report(out: str | Path, analyzer: Any, table: Any, summary: dict, *, progress: bool = False) -> Path:
    """Write ``out/report.html`` and its figures in ``out/report/``; return the HTML path.

    ``table``: the metrics DataFrame with ``label``, ``label_reason``, ``main_channel``.
    """
    from tqdm import tqdm

    out = Path(out)
    figs = out / "report"
    figs.mkdir(parents=True, exist_ok=True)
    _drift_map(analyzer, figs / "drift_map.png")
    _metric_hists(table, summary.get("curation_rules", {}), figs / "metrics.png")
    ids = list(analyzer.unit_ids)
    tmpl = analyzer.get_extension("templates") if ids else None
    ext = {} if tmpl is None else {"avg": tmpl.get_data(operator="average"), "sd": tmpl.get_data(operator="std"), "nbefore": tmpl.nbefore,
           "amps": analyzer.get_extension("spike_amplitudes").get_data(outputs="by_unit")[0]}
    order = {"good": 0, "mua": 1, "noise": 2}
    units = [] if not ids else sorted(range(len(ids)), key=lambda i: (order.get(table.loc[ids[i], "label"], 3), i))
    rows = []
    for i in tqdm(units, desc="report", unit="unit", disable=not progress):
        uid = ids[i]
        lab = str(table.loc[uid, "label"])
        name = f"unit_{uid}.png"
        _unit_figure(analyzer, uid, i, lab, figs / name, ext)
        mets = " · ".join(f"{m} {_fmt(table.loc[uid, m])}" for m in _SHOWN if m in table.columns)
        rows.append(f'<div class="unit"><h3 style="color:{_COLORS.get(lab, "#000")}">unit {html.escape(str(uid))}: '
                    f'{lab}</h3><p>{html.escape(str(table.loc[uid, "label_reason"]))} — main channel '
                    f'{html.escape(str(table.loc[uid, "main_channel"]))}</p><p class="m">{mets}</p>'
                    f'<img src="report/{name}" alt="unit {html.escape(str(uid))}"></div>')
    counts = summary.get("n_units_by_label", {})
    rec = summary.get("recording", {})
    rules = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>"
                    for k, v in summary.get("curation_rules", {}).items())
    timings = ", ".join(f"{k} {v:.1f}" for k, v in summary.get("timings_s", {}).items())
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>cortexlink sort report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}} .unit{{border-top:1px solid #ddd;padding:.5em 0}}
.m{{font-size:90%;color:#444}} img{{max-width:100%}} td{{padding:0 1em 0 0}}</style></head><body>
<h1>Spike sorting report</h1>
<p>source <code>{html.escape(str(summary.get("source")))}</code> · {rec.get("n_channels")} channels ·
{_fmt(rec.get("duration_s"))} s at {_fmt(rec.get("fs_hz"))} Hz · sorter <b>{html.escape(str(summary.get("sorter")))}</b></p>
<p><b>{summary.get("n_units", 0)} units</b>: <span style="color:{_COLORS['good']}">{counts.get("good", 0)} good</span>,
<span style="color:{_COLORS['mua']}">{counts.get("mua", 0)} mua</span>,
<span style="color:{_COLORS['noise']}">{counts.get("noise", 0)} noise</span> · timings (s): {html.escape(timings)}</p>
<h2>Drift map</h2><img src="report/drift_map.png" alt="drift map">
<h2>Quality metrics</h2><img src="report/metrics.png" alt="metric histograms">
<h2>Curation rules</h2><table>{rules}</table>
<h2>Units</h2>{''.join(rows) or '<p>no units found</p>'}
</body></html>"""
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
