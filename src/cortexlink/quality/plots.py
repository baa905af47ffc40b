"""The quality report's figures (PNG) and its PDF.

Each figure is drawn from what the report already holds (per-recording summaries, events, the
split, the checks' metrics); a figure with nothing to show is left out, and a figure that fails
is logged and left out — never the report. matplotlib is imported inside the functions (Agg).
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cortexlink.quality.figures import _plt, electrode_map
from cortexlink.quality.model import CHARACTERISTICS, DatasetContext, Recording, RecordingSummary, Report

logger = logging.getLogger(__name__)

__all__ = ["make_figures", "write_pdf", "scores_figure", "channel_quality_figure", "implant_grid_figure",
           "class_balance_figure", "split_figure", "baseline_figure", "label_counts_by_task"]

#: Rows (recordings) drawn at most in a quality map; the rest are named in the title.
MAX_MAP_ROWS = 120
#: Implant recordings drawn on their electrode grid at most.
MAX_GRIDS = 4


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def scores_figure(scores: dict[str, float | None], path: Path) -> Path:
    """Bar plot of each characteristic's score (``n/a`` where no check applied)."""
    plt = _plt()
    names = list(CHARACTERISTICS)
    vals = [scores.get(c) for c in names]
    fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    y = np.arange(len(names))
    v = np.array([np.nan if s is None else float(s) for s in vals])
    colors = ["#bbbbbb" if np.isnan(s) else ("#2e7d32" if s >= 0.9 else "#f9a825" if s >= 0.7 else "#c62828")
              for s in v]
    ax.barh(y, np.nan_to_num(v), color=colors)
    for i, s in enumerate(v):
        ax.text(0.01 if np.isnan(s) else min(s, 0.9) + 0.01, i, "n/a" if np.isnan(s) else f"{s:.2f}",
                va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("score (1 = no problem found)")
    ax.set_title("quality score per characteristic")
    return _save(fig, path)


def _stat(summary: RecordingSummary | None, name: str) -> np.ndarray | None:
    if summary is None or summary.stats is None:
        return None
    v = getattr(summary.stats, name, None)
    if v is None:
        return None
    v = np.asarray(v, dtype=float).ravel()
    return v if v.size and np.isfinite(v).any() else None


_EEG_MAPS = (("rms_uv", "RMS (µV)", "viridis", True), ("flat_fraction", "flat fraction", "Reds", False),
             ("clip_fraction", "clipped fraction", "Reds", False), ("line_ratio", "line-noise ratio", "magma", True))
_IMPLANT_MAPS = (("noise_rms_uv", "noise RMS (µV)", "viridis", False),
                 ("crossing_rate_hz", "crossing rate (Hz)", "magma", False),
                 ("rms_uv", "RMS (µV)", "viridis", True))


def channel_quality_figure(ctx: DatasetContext, kind: str, path: Path) -> Path | None:
    """Heatmaps recordings × channels of the per-channel statistics of one kind of recording."""
    recs = [r for r in ctx.recordings if r.kind == kind and ctx.summaries.get(r.name) is not None
            and ctx.summaries[r.name].stats is not None]
    if not recs:
        return None
    maps = [m for m in (_EEG_MAPS if kind == "eeg" else _IMPLANT_MAPS)
            if any(_stat(ctx.summaries[r.name], m[0]) is not None for r in recs)]
    if not maps:
        return None
    shown = recs[:MAX_MAP_ROWS]
    channels: list[str] = []
    index: dict[str, int] = {}
    for r in shown:
        for ch in r.channel_names:
            if ch not in index:
                index[ch] = len(channels)
                channels.append(ch)
    plt = _plt()
    height = min(3.0 + 0.16 * len(shown), 9.0)
    fig, axes = plt.subplots(len(maps), 1, figsize=(12, height * len(maps) * 0.6 + 1), squeeze=False,
                             constrained_layout=True)
    for ax, (attr, label, cmap, log) in zip(axes[:, 0], maps):
        grid = np.full((len(shown), len(channels)), np.nan)
        for i, r in enumerate(shown):
            v = _stat(ctx.summaries[r.name], attr)
            if v is None:
                continue
            for j, ch in enumerate(r.channel_names[:v.size]):
                grid[i, index[ch]] = v[j]
        data = grid
        shown_label = label
        if log:
            with np.errstate(divide="ignore", invalid="ignore"):
                data = np.log10(np.where(grid > 0, grid, np.nan))
            shown_label = f"log10 {label}"
        finite = data[np.isfinite(data)]
        if attr.endswith("_fraction"):        # fractions: 0 is "no problem", a fixed scale from 0
            vmin, vmax = 0.0, max(float(finite.max()) if finite.size else 0.0, 0.01)
        else:
            vmin, vmax = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
            if vmax <= vmin:
                vmax = vmin + 1e-9
        masked = np.ma.masked_invalid(data)
        import matplotlib

        cm = matplotlib.colormaps[cmap].with_extremes(bad="#eeeeee")
        im = ax.imshow(masked, aspect="auto", interpolation="nearest", cmap=cm, vmin=vmin, vmax=vmax)
        ax.set_title(shown_label)
        ax.set_ylabel("recording")
        if len(shown) <= 40:
            ax.set_yticks(range(len(shown)), [r.name for r in shown], fontsize=6)
        if len(channels) <= 80:
            ax.set_xticks(range(len(channels)), channels, rotation=90, fontsize=5)
        else:
            ax.set_xlabel("channel index")
        fig.colorbar(im, ax=ax, label=shown_label)
    more = f" (first {len(shown)} of {len(recs)} recordings)" if len(recs) > len(shown) else ""
    fig.suptitle(f"per-channel quality, {kind}{more}; grey: no value")
    return _save(fig, path)


def electrode_positions(rec: Recording) -> np.ndarray | None:
    """Electrode positions (µm, n_channels × 2) in the recording's channel order:
    ``rec.extra["positions_um"]``, else a session folder's channel map; ``None`` if unknown."""
    pos = rec.extra.get("positions_um")
    if pos is None and rec.fmt == "session" and rec.positions_present:
        from cortexlink.io.session_log import SessionReader

        try:
            cm = SessionReader(rec.path).channel_map
        except Exception:  # noqa: BLE001 - no grid is drawn, nothing else is lost
            logger.info("%s: no channel map for the grid figure", rec.name, exc_info=True)
            return None
        if cm is None:
            return None
        index = {c: i for i, c in enumerate(cm.channel_ids)}
        if not all(c in index for c in rec.channel_names):
            return None
        pos = np.asarray(cm.positions_um, dtype=float)[[index[c] for c in rec.channel_names]]
    return None if pos is None else np.asarray(pos, dtype=float)


def implant_grid_figure(ctx: DatasetContext, path: Path) -> Path | None:
    """Noise RMS and crossing rate on the electrode grid of implant recordings whose positions are
    known (:func:`electrode_positions`)."""
    recs = []
    for r in ctx.recordings:
        summ = ctx.summaries.get(r.name)
        if r.kind != "implant" or summ is None or summ.stats is None:
            continue
        pos = electrode_positions(r)
        if pos is None:
            continue
        if pos.ndim != 2 or pos.shape[0] != r.n_channels or pos.shape[1] < 2:
            continue
        vals = [(_stat(summ, "noise_rms_uv"), "noise RMS (µV)"),
                (_stat(summ, "crossing_rate_hz"), "crossing rate (Hz)")]
        vals = [(v, lab) for v, lab in vals if v is not None and v.size == r.n_channels]
        if vals:
            recs.append((r, pos, vals))
        if len(recs) >= MAX_GRIDS:
            break
    if not recs:
        return None
    plt = _plt()
    ncol = max(len(v) for _, _, v in recs)
    fig, axes = plt.subplots(len(recs), ncol, figsize=(5.5 * ncol, 4.5 * len(recs)), squeeze=False,
                             constrained_layout=True)
    for i, (r, pos, vals) in enumerate(recs):
        for k in range(ncol):
            ax = axes[i, k]
            if k >= len(vals):
                ax.axis("off")
                continue
            v, lab = vals[k]
            electrode_map(fig, ax, pos, v, np.isfinite(v), lab, "viridis" if "noise" in lab else "magma",
                          title=f"{r.name}: {lab}", size=10)
    return _save(fig, path)


def label_counts_by_task(ctx: DatasetContext) -> dict[str, dict[str, int]]:
    """Event counts per label in each task of the intended use (``tasks``: name -> globs of
    recording names; without tasks one task ``all``). Rest labels are counted too."""
    from cortexlink.quality.intended_use import group_by_task

    out: dict[str, dict[str, int]] = {}
    for task, recs in group_by_task(ctx.recordings, ctx.intended_use).items():
        counts: dict[str, int] = {}
        for rec in recs:
            for ev in rec.events:
                counts[ev.label] = counts.get(ev.label, 0) + 1
        if counts:
            out[str(task)] = counts
    return out


def class_balance_figure(ctx: DatasetContext, path: Path) -> Path | None:
    """Bars of event counts per label, one panel per task."""
    counts = label_counts_by_task(ctx)
    if not counts:
        return None
    plt = _plt()
    tasks = list(counts)[:12]
    ncol = min(3, len(tasks))
    nrow = (len(tasks) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.5 * ncol, 3.2 * nrow), squeeze=False, constrained_layout=True)
    classes = {str(c) for c in ctx.intended_use.get("classes") or []}
    for ax, t in zip(axes.ravel(), tasks):
        labs = sorted(counts[t])[:30]
        ax.bar(range(len(labs)), [counts[t][lab] for lab in labs],
               color=["#1565c0" if (not classes or lab in classes) else "#9e9e9e" for lab in labs])
        ax.set_xticks(range(len(labs)), labs, rotation=45 if len(labs) > 6 else 0, fontsize=7)
        ax.set_ylabel("events")
        ax.set_title(f"task {t}", fontsize=9)
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    fig.suptitle("class balance (grey: not a class of the intended use)" if classes else "class balance")
    return _save(fig, path)


def split_figure(ctx: DatasetContext, path: Path) -> Path | None:
    """Files per subject (rows) and split (columns): a subject in two columns is leakage."""
    if not ctx.split:
        return None
    from cortexlink.quality.intended_use import subject_of

    table: dict[str, dict[str, int]] = {}
    for rec in ctx.recordings:
        s = ctx.split_of(rec)
        if s is None:
            continue
        sid, inferred = subject_of(rec)
        subj = f"({rec.name})" if sid is None else (f"{sid} (from name)" if inferred else sid)
        table.setdefault(subj, {})
        table[subj][s] = table[subj].get(s, 0) + 1
    if not table:
        return None
    order = ["train", "validation", "test"]
    splits = [s for s in order if any(s in v for v in table.values())]
    splits += sorted({s for v in table.values() for s in v} - set(splits))
    subjects = sorted(table)[:60]
    m = np.array([[table[subj].get(s, 0) for s in splits] for subj in subjects], dtype=float)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(2.0 + 1.4 * len(splits), 1.5 + 0.22 * len(subjects)), constrained_layout=True)
    ax.imshow(np.where(m > 0, 1.0, 0.0), aspect="auto", cmap="Blues", vmin=0, vmax=1.6)
    for i in range(m.shape[0]):
        leak = (m[i] > 0).sum() > 1
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                        color="#c62828" if leak else "black", fontweight="bold" if leak else "normal")
    ax.set_xticks(range(len(splits)), splits)
    ax.set_yticks(range(len(subjects)), subjects, fontsize=7)
    ax.set_ylabel("subject")
    ax.set_title("files per subject and split (red: in more than one split)", fontsize=9)
    return _save(fig, path)


def _baseline_rows(report: Report) -> list[dict[str, Any]]:
    """Rows ``{name, score, chance, ...}`` from the fitness checks' metrics.

    Accepts ``metrics["rows"]`` (or ``"per_subject"`` / ``"per_task"``) as a list of dicts with a
    score (``score``/``accuracy``/``r2``/``balanced_accuracy``) and a chance level
    (``chance``/``chance_level``/``perm_mean``), or a dict of such dicts keyed by name.
    """
    rows = []
    for r in report.results:
        if r.characteristic != "fitness":
            continue
        m = r.metrics or {}
        for key in ("rows", "per_subject", "per_task", "groups"):
            items = m.get(key)
            if isinstance(items, dict):
                items = [{"name": k, **v} for k, v in items.items() if isinstance(v, dict)]
            if not isinstance(items, list):
                continue
            for it in items:
                if not isinstance(it, dict):
                    continue
                score = next((it[k] for k in ("score", "accuracy", "balanced_accuracy", "r2") if
                              isinstance(it.get(k), (int, float))), None)
                chance = next((it[k] for k in ("chance", "chance_level", "perm_mean", "chance_mean")
                               if isinstance(it.get(k), (int, float))), None)
                hi = next((it[k] for k in ("chance_p95", "perm_p95", "chance_95") if
                           isinstance(it.get(k), (int, float))), None)
                if score is None:
                    continue
                name = it.get("name") or "/".join(str(it[k]) for k in ("subject", "task") if it.get(k) is not None)
                rows.append({"name": str(name or r.check), "score": float(score),
                             "chance": None if chance is None else float(chance),
                             "chance_p95": None if hi is None else float(hi),
                             "metric": next((k for k in ("accuracy", "balanced_accuracy", "r2", "score")
                                             if k in it), "score")})
            break
    return rows


def baseline_figure(report: Report, path: Path) -> Path | None:
    """The baseline decoder's cross-validated score per subject / task beside permutation chance."""
    rows = [r for r in _baseline_rows(report) if np.isfinite(r["score"])][:40]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(rows) + 2), 3.8), constrained_layout=True)
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["score"] for r in rows], width=0.4, color="#1565c0", label="baseline (cross-validated)")
    ch = [np.nan if r["chance"] is None else r["chance"] for r in rows]
    ax.bar(x + 0.2, ch, width=0.4, color="#9e9e9e", label="permutation chance (mean)")
    hi = [r["chance_p95"] for r in rows]
    if any(h is not None for h in hi):
        ax.scatter(x + 0.2, [np.nan if h is None else h for h in hi], marker="_", s=200, c="black",
                   label="chance 95th percentile")
    names = [r["name"] if len(r["name"]) <= 28 else r["name"][:12] + "…" + r["name"][-15:] for r in rows]
    ax.set_xticks(x, names, rotation=30 if len(rows) > 3 else 0, fontsize=7, ha="right" if len(rows) > 3 else "center")
    ax.set_ylabel(rows[0]["metric"])
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("fitness: baseline decoder against label-permutation chance", fontsize=9)
    return _save(fig, path)


def make_figures(report: Report, ctx: DatasetContext, folder: Path) -> dict[str, Path]:
    """Every figure that has something to show, as ``{name: png path}``."""
    folder = Path(folder)
    jobs: list[tuple[str, Callable[[Path], Path | None]]] = [
        ("scores", lambda p: scores_figure(report.scores, p)),
        ("channel_quality_eeg", lambda p: channel_quality_figure(ctx, "eeg", p)),
        ("channel_quality_implant", lambda p: channel_quality_figure(ctx, "implant", p)),
        ("implant_grid", lambda p: implant_grid_figure(ctx, p)),
        ("class_balance", lambda p: class_balance_figure(ctx, p)),
        ("split_membership", lambda p: split_figure(ctx, p)),
        ("baseline", lambda p: baseline_figure(report, p)),
    ]
    out: dict[str, Path] = {}
    for name, job in jobs:
        try:
            p = job(folder / f"{name}.png")
        except Exception:  # noqa: BLE001 - a figure that fails is left out, not the report
            logger.error("quality figure %s failed", name, exc_info=True)
            _plt().close("all")
            continue
        if p is not None:
            out[name] = p
    return out


def _text_pages(report: Report, lines_per_page: int = 96, max_findings: int = 600) -> list[list[str]]:
    lines = [f"cortexlink data-set quality report — {report.root}", f"created {report.created_utc} (UTC)"]
    lines += textwrap.wrap("software: " + ", ".join(f"{k} {v}" for k, v in report.software.items()), 110,
                           subsequent_indent="      ")
    lines += ["", f"recordings: {len(report.recordings)}; findings: {len(report.findings)}", "", "scores:"]
    for c, s in report.scores.items():
        lines.append(f"  {c:18s} {'n/a' if s is None else f'{s:.3f}'}")
    lines += ["", "findings (severity, check, file, channel, start_s: detail):"]
    fs = sorted(report.findings, key=lambda f: (-["info", "warning", "error", "critical"].index(f.severity),
                                                f.characteristic, f.check))
    for f in fs[:max_findings]:
        where = ", ".join(x for x in (f.file, f.channel, None if f.start_s is None else f"{f.start_s:.2f} s") if x)
        lines += textwrap.wrap(f"[{f.severity}] {f.check} ({where or 'data set'}): {f.detail}", 110,
                               subsequent_indent="      ") or [""]
    if len(fs) > max_findings:
        lines.append(f"... {len(fs) - max_findings} more findings: see report.json")
    return [lines[i:i + lines_per_page] for i in range(0, len(lines), lines_per_page)] or [[""]]


def write_pdf(report: Report, ctx: DatasetContext, path: Path) -> Path:
    """``report.pdf``: text pages (scores, findings), then each figure of ``report.figures``."""
    plt = _plt()
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    with PdfPages(path) as pdf:
        for page in _text_pages(report):
            fig = plt.figure(figsize=(8.27, 11.69))
            fig.text(0.05, 0.97, "\n".join(page), va="top", ha="left", family="monospace", fontsize=6.5)
            pdf.savefig(fig)
            plt.close(fig)
        for rel in report.figures.values():
            png = path.parent / rel
            if not png.is_file():
                continue
            img = plt.imread(png)
            h, w = img.shape[:2]
            fig = plt.figure(figsize=(11.69, 11.69 * h / max(w, 1)))
            ax = fig.add_axes((0, 0, 1, 1))
            ax.imshow(img)
            ax.axis("off")
            pdf.savefig(fig)
            plt.close(fig)
        info = pdf.infodict()
        info["Title"] = f"cortexlink quality report: {report.root}"
    return path
