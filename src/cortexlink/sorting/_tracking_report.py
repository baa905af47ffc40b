"""What :func:`cortexlink.sorting.tracking.write_tracking` writes: ``tracking.csv``,
``tracking.json``, ``tracking.png`` (units present per session by tracked id, coloured by the
confidence of the match that carried the id there; the confidence histogram; the cumulative shift
of the probe per session) and ``tracking.html`` (the figure and a table per session)."""

from __future__ import annotations

import html
import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["write_outputs", "bar"]


@contextmanager
def bar(total: int, desc: str, enabled: bool) -> Iterator[Any]:
    """A tqdm progress bar on stderr (a no-op when not ``enabled``)."""
    from tqdm import tqdm

    pb = tqdm(total=total, desc=desc, unit="session", file=sys.stderr, disable=not enabled)
    try:
        yield pb
    finally:
        pb.close()


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


def _per_session(table: Any, sessions: list, shifts: list[dict]) -> list[dict]:
    """Per session (in the order tracked): units, matched, new, the shift against the previous
    session of the same participant (None: the first, or not compared) and the cumulative shift
    (through the nearest earlier session it was compared with)."""
    order = table.attrs.get("sessions") or [
        dict(session=s, participant=table.loc[table["session"] == s, "participant"].iloc[0])
        for s in table["session"].drop_duplicates()]
    by_pair = {(d["session_a"], d["session_b"]): (d.get("gap", 1), d["shift_um"]) for d in shifts}
    known = {s.session: s for s in sessions}
    out, prev, cum_at = [], {}, {}
    for o in order:
        s, part = o["session"], o["participant"]
        t = table[table["session"] == s]
        before = prev.get(part)
        shift = by_pair.get((before, s), (None, None))[1] if before is not None else None
        links = sorted((g, a, v) for (a, b), (g, v) in by_pair.items() if b == s and a in cum_at)
        cum = round(cum_at[links[0][1]] + links[0][2], 2) if links else 0.0
        cum_at[s] = cum
        prev[part] = s
        su = known.get(s)
        out.append(dict(session=s, participant=_clean(part),
                        order_key=_clean(su.order_key) if su is not None else None,
                        n_units=int(len(t)), n_matched=int(t["matched_session"].notna().sum()),
                        n_new=int(t["matched_session"].isna().sum()),
                        shift_vs_previous_um=_clean(shift), cumulative_shift_um=cum))
    return out


def _figure(table: Any, per_session: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sessions = [d["session"] for d in per_session]
    tids = sorted(table["tracked_id"].unique())
    fig, axes = plt.subplots(1, 3, figsize=(14, max(3.5, min(12, 0.12 * len(tids) + 2))),
                             gridspec_kw=dict(width_ratios=[2.2, 1, 1]))
    ax = axes[0]
    if len(tids):
        row = {t: i for i, t in enumerate(tids)}
        col = {s: i for i, s in enumerate(sessions)}
        x = table["session"].map(col).to_numpy(float)
        y = table["tracked_id"].map(row).to_numpy(float)
        c = table["confidence"].to_numpy(float)
        new = ~np.isfinite(c)
        for t in tids:           # a line through each id's sessions
            m = (table["tracked_id"] == t).to_numpy()
            if m.sum() > 1:
                ax.plot(np.sort(x[m]), y[m][np.argsort(x[m])], color="#cccccc", lw=0.8, zorder=1)
        sc = ax.scatter(x[~new], y[~new], c=c[~new], cmap="viridis", vmin=0, vmax=1, s=18, zorder=2)
        ax.scatter(x[new], y[new], facecolors="none", edgecolors="k", s=18, zorder=2, label="new id")
        fig.colorbar(sc, ax=ax, label="match confidence")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(range(len(sessions)))
    ax.set_xticklabels(sessions, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("tracked id (index)")
    ax.set_title("units present per session")
    conf = table["confidence"].to_numpy(float)
    conf = conf[np.isfinite(conf)]
    axes[1].hist(conf, bins=np.linspace(0, 1, 21), color="#457b9d")
    axes[1].set_xlabel("confidence of the match")
    axes[1].set_ylabel("units")
    axes[1].set_title(f"{len(conf)} matches")
    axes[2].plot(range(len(sessions)), [d["cumulative_shift_um"] for d in per_session], "o-")
    axes[2].set_xticks(range(len(sessions)))
    axes[2].set_xticklabels(sessions, rotation=45, ha="right", fontsize=7)
    axes[2].set_ylabel("cumulative shift along the probe (µm)")
    axes[2].set_title("estimated probe shift")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _html(summary: dict, path: Path) -> None:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(str(d['session']))}</td><td>{e(str(d['participant']))}</td><td>{d['n_units']}</td>"
        f"<td>{d['n_matched']}</td><td>{d['n_new']}</td><td>{'' if d['shift_vs_previous_um'] is None else d['shift_vs_previous_um']}</td>"
        f"<td>{d['cumulative_shift_um']}</td></tr>" for d in summary["sessions"])
    params = e(json.dumps(summary.get("params", {})))
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>cortexlink units track</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>"
        f"<h1>Units across sessions</h1><p>{summary['n_sessions']} sessions, {summary['n_units']} units, "
        f"{summary['n_tracked_ids']} tracked ids, {summary['n_matches']} matches (median confidence "
        f"{summary['confidence_median'] if summary['confidence_median'] is not None else '-'}). Parameters: "
        f"{params}</p><img src='tracking.png' style='max-width:100%'>"
        "<h2>Sessions</h2><table><tr><th>session</th><th>participant</th><th>units</th><th>matched</th>"
        f"<th>new ids</th><th>shift vs previous (µm)</th><th>cumulative shift (µm)</th></tr>{rows}</table>"
        "<p>Table of every unit: tracking.csv; everything: tracking.json.</p></body></html>")


def write_outputs(out: Path, table: Any, sessions: list) -> dict:
    """Write the four files into ``out`` (created) and return the summary (tracking.json
    without its ``units`` table)."""
    from cortexlink.core.errors import ConfigError

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot be created ({exc.strerror or exc})") from None
    shifts = list(table.attrs.get("shifts", []))
    per_session = _per_session(table, sessions, shifts)
    conf = table["confidence"].to_numpy(float)
    conf = conf[np.isfinite(conf)]
    summary = dict(format="cortexlink-units-track", n_sessions=len(per_session), n_units=int(len(table)),
                   n_tracked_ids=int(table["tracked_id"].nunique()), n_matches=int(len(conf)),
                   confidence_median=round(float(np.median(conf)), 3) if len(conf) else None,
                   params=dict(table.attrs.get("params", {})), sessions=per_session, shifts=shifts)
    table.to_csv(out / "tracking.csv", index=False)
    records = [{k: _clean(v) for k, v in r.items()} for r in table.to_dict(orient="records")]
    (out / "tracking.json").write_text(json.dumps(dict(summary, units=records), indent=1, default=str))
    _figure(table, per_session, out / "tracking.png")
    _html(summary, out / "tracking.html")
    summary["outputs"] = {"csv": "tracking.csv", "json": "tracking.json", "figure": "tracking.png",
                          "html": "tracking.html"}
    return summary
