"""Run folder of a closed-loop session: config, traces, events, PGN, figures and an HTML report.

Every figure of a session may be missing or empty — a Webgrid block without a selection has no
accuracy, a block that ended at once has no bins, a chess block no moves — and the report says
"n/a" for it (or leaves the figure out) rather than failing: a run that finished always gets its
run folder.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["write_run_folder", "summary_table", "fmt"]


def fmt(value: Any, spec: str = ".2f", missing: str = "n/a") -> str:
    """``value`` formatted with ``spec``, or ``missing`` when it is None, not a number or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return missing
    if not np.isfinite(value):
        return missing
    return format(float(value), spec)


def _fig():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _plot_trajectories(traces: list, tasks: dict, path: Path) -> Path | None:
    shown = [t for t in traces if t.task in ("centre_out", "webgrid")][:4]
    if not shown:
        return None
    plt = _fig()
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4.4), squeeze=False)
    for ax, tr in zip(axes[0], shown):
        task = tasks.get(tr.name)
        if task is not None and tr.task == "centre_out":
            task.draw(ax)
        n = min(tr.n_bins, int(30.0 / tr.dt_s)) if tr.task == "webgrid" else tr.n_bins
        xy = tr.cursor_xy[:n]
        ax.plot(xy[:, 0], xy[:, 1], lw=0.6, color="tab:blue", alpha=0.8)
        tg = tr.target_xy[:n]
        ok = np.all(np.isfinite(tg), axis=1)
        ax.scatter(tg[ok, 0], tg[ok, 1], s=12, color="tab:orange", zorder=3, label="targets")
        c = tr.clicks[:n]
        ax.scatter(xy[c, 0], xy[c, 1], s=14, marker="x", color="k", zorder=4, label="clicks")
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_aspect("equal")
        extra = " (first 30 s)" if tr.task == "webgrid" else ""
        ax.set_title(f"{tr.name}: {tr.mode}{extra}", fontsize=10)
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_bps(traces: list, tasks: dict, path: Path) -> Path | None:
    from cortexlink.tasks.webgrid import bitrate_over_time

    wg = [t for t in traces if t.task == "webgrid" and t.mode != "open" and tasks.get(t.name) is not None]
    if not wg:
        return None
    plt = _fig()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for tr in wg:
        task = tasks[tr.name]
        t, bps = bitrate_over_time(tr.events, task.n_targets_total, window_s=30.0, step_s=1.0)
        t0 = tr.t_s[0] - tr.dt_s if tr.n_bins else 0.0
        ax.plot(np.asarray(t) - t0, bps, label=f"{tr.name} ({tr.mode}): {fmt((tr.metrics or {}).get('bps'))} bps")
    ax.set_xlabel("time in block (s)")
    ax.set_ylabel("bits per second (30 s window)")
    ax.set_title("Webgrid bitrate over time")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_raster(traces: list, path: Path) -> Path | None:
    tr = next((t for t in traces if t.tx_raster is not None and t.mode == "closed"), None)
    tr = tr or next((t for t in traces if t.tx_raster is not None), None)
    n = 0 if tr is None else min(tr.n_bins, int(10.0 / tr.dt_s))
    if tr is None or tr.tx_raster.size == 0 or n == 0:
        return None
    plt = _fig()
    r = tr.tx_raster[:n].T.astype(float)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ext = (0, n * tr.dt_s, r.shape[0], 0)
    ax.imshow(r, aspect="auto", cmap="Greys", interpolation="nearest", extent=ext, vmin=0, vmax=max(2.0, r.max()))
    ax.set_ylabel("channel")
    ax.set_title(f"threshold crossings per {tr.dt_s * 1000:.0f} ms bin, first {r.shape[0]} channels ({tr.name})")
    t = np.arange(n) * tr.dt_s
    ax2.plot(t, tr.intended_velocity[:n, 0], lw=0.8, label="intended vx")
    if np.isfinite(tr.decoded_velocity[:n]).any():
        ax2.plot(t, tr.decoded_velocity[:n, 0], lw=0.8, label="decoded vx")
    ax2.set_xlabel("time in block (s)")
    ax2.set_ylabel("screen units/s")
    ax2.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_table(summary: dict) -> list[tuple[str, str]]:
    """The headline figures of a session as (label, value) rows ("n/a" for a figure the session
    did not produce, e.g. the accuracy of a Webgrid block without a selection)."""
    rows: list[tuple[str, str]] = [("decoder", str(summary.get("decoder"))),
                                   ("channels", str(summary.get("channels")))]
    lat = []
    for b in summary.get("blocks") or []:
        m = b.get("metrics") or {}
        name = b.get("name", "?")
        if b.get("mode") == "open":
            continue                    # calibration: the cursor moved by itself
        if b.get("task") == "webgrid":
            rows.append((f"{name}: bits per second", fmt(m.get("bps"))))
            rows.append((f"{name}: net targets per minute", fmt(m.get("ntpm"), ".1f")))
            rows.append((f"{name}: selection accuracy", fmt(m.get("accuracy"), ".3f")))
        elif b.get("task") == "chess":
            spm = m.get("seconds_per_move")
            mean = spm.get("mean") if isinstance(spm, dict) else spm
            rows.append((f"{name}: moves", str(m.get("n_moves", "n/a"))))
            if mean is not None:
                rows.append((f"{name}: seconds per move", fmt(mean, ".1f")))
            rows.append((f"{name}: wrong selections", str(m.get("wrong_selections", "n/a"))))
        elif b.get("task") == "centre_out":
            sr = m.get("success_rate")
            if sr is not None:
                rows.append((f"{name}: centre-out success", fmt(sr, ".3f")))
        if isinstance(b.get("decode_latency_us"), dict):
            lat.append(b["decode_latency_us"].get("p99"))
        loop = b.get("loop_latency_us")
        if isinstance(loop, dict) and b.get("mode") == "closed":
            rows.append((f"{name}: chunk → cursor latency p50/p99 (µs)",
                         f"{fmt(loop.get('p50'), '.0f')} / {fmt(loop.get('p99'), '.0f')}"))
    lat = [x for x in lat if fmt(x) != "n/a"]
    if lat:
        rows.append(("decode step latency p99 (µs, worst block)", fmt(max(lat), ".1f")))
    st = summary.get("stimulation")
    if isinstance(st, dict):
        lock = st.get("interlock") or {}
        dev = st.get("stimulator") or {}
        reasons = lock.get("reasons") or {}
        rows.append(("stimulation: pulses approved / refused / clamped",
                     f"{lock.get('approved', 'n/a')} / {lock.get('refused', 'n/a')} / {lock.get('clamped', 'n/a')}"))
        rows.append(("stimulation: pulses delivered", str(dev.get("pulses_delivered", "n/a"))))
        if reasons:
            rows.append(("stimulation: refusals by reason",
                         ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))))
    rows.append(("wall time (s)", fmt(summary.get("wall_s"), ".1f")))
    return rows


def write_run_folder(result: dict, out: str | Path) -> Path:
    """Write config, traces, events, PGN, figures, summary and ``report.html`` into ``out``."""
    import yaml

    out = Path(out)
    (out / "traces").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    (out / "session.yaml").write_text(yaml.safe_dump(result["config"], sort_keys=False))
    traces, tasks = result["traces"], result["tasks"]
    with open(out / "events.jsonl", "w") as fh:
        for tr in traces:
            tr.save_npz(out / "traces" / f"{tr.name}.npz")
            for ev in tr.events:
                fh.write(json.dumps({"block": tr.name, "t_s": ev.t_s, "kind": ev.kind, "data": ev.data}) + "\n")
    figs: list[tuple[str, Path]] = []
    for title, fn in (("Cursor trajectories", lambda p: _plot_trajectories(traces, tasks, p)),
                      ("Webgrid bitrate", lambda p: _plot_bps(traces, tasks, p)),
                      ("Neural activity and decoding", lambda p: _plot_raster(traces, p))):
        name = title.lower().replace(" ", "_") + ".png"
        p = fn(out / "figures" / name)
        if p is not None:
            figs.append((title, p))
    for name, task in tasks.items():
        if hasattr(task, "pgn"):
            (out / f"{name}.pgn").write_text(task.pgn())
            if hasattr(task, "save_board_png"):
                p = out / "figures" / f"{name}_board.png"
                task.save_board_png(p)
                figs.append((f"Chess ({name}): final position", p))
    (out / "summary.json").write_text(json.dumps(result["summary"], indent=2) + "\n")
    rows = summary_table(result["summary"])
    body = ["<h1>cortexlink session: " + html.escape(str(result["summary"].get("session", ""))) + "</h1>",
            "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
            + "</table>"]
    for title, p in figs:
        body.append(f"<h2>{html.escape(title)}</h2><img src='figures/{p.name}' style='max-width:100%'>")
    body.append("<h2>Session</h2><pre>" + html.escape(yaml.safe_dump(result["config"], sort_keys=False)) + "</pre>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}")
    (out / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>cortexlink session"
                                     f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    return out
