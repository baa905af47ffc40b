"""``datacard.html``: the data card as one self-contained HTML page (plots embedded as PNG)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_html"]


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(idx: Any) -> list[tuple[str, str]]:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = []
    for col, title, log in (("snr", "SNR (main channel)", False), ("firing_rate", "firing rate (Hz)", True)):
        if col not in idx or not len(idx):
            continue
        fig, ax = plt.subplots(figsize=(5, 3))
        for lab, colour in (("good", "tab:green"), ("mua", "tab:orange"), ("noise", "tab:grey")):
            x = np.asarray(idx.loc[idx["label"] == lab, col], float)
            x = x[np.isfinite(x) & ((x > 0) if log else True)]
            if len(x):
                ax.hist(np.log10(x) if log else x, bins=30, alpha=0.6, label=f"{lab} ({len(x)})", color=colour)
        ax.set_xlabel(f"log10 {title}" if log else title)
        ax.set_ylabel("units")
        ax.legend(fontsize=8)
        out.append((title, _png(fig)))
        plt.close(fig)
    return out


def _table(rows: list[dict], keys: list[str]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(k, '')))}</td>" for k in keys) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(path: Path, card: dict, idx: Any) -> Path:
    """Write ``card`` (and the plots of the units index ``idx``) to ``path``."""
    c = card["counts"]
    e = html.escape
    figs = "".join(f"<figure><img alt='{e(t)}' src='data:image/png;base64,{b}'><figcaption>{e(t)}</figcaption>"
                   "</figure>" for t, b in _plots(idx))
    b = card["build"]
    parts = [
        f"<h1>{e(str(card['name']))}</h1>",
        f"<p>Licence: <b>{e(str(card['licence']))}</b>. Created {e(card['created_utc'])} by cortexlink "
        f"{e(str(card['provenance']['cortexlink_version']))} (commit {e(str(card['provenance']['git_commit']))}).</p>",
        "<h2>Counts</h2>",
        _table([{"sessions": c["sessions"], "of inputs": c["sessions_input"], "participants": c["participants"],
                 "channels (sum)": c["channels_total"], "channel-hours": c["channel_hours"], "units": c["units"],
                 "good": c["units_by_label"]["good"], "mua": c["units_by_label"]["mua"],
                 "noise": c["units_by_label"]["noise"], "tracked units": c["tracked_units"],
                 "tracked in several sessions": c["tracked_units_in_several_sessions"]}],
               ["sessions", "of inputs", "participants", "channels (sum)", "channel-hours", "units", "good", "mua",
                "noise", "tracked units", "tracked in several sessions"]),
        "<h2>Distributions</h2>", figs or "<p>no units</p>",
        "<h2>Days covered</h2>",
        _table([dict(participant=p, **v) for p, v in card["days"].items()],
               ["participant", "first", "last", "span_days", "n_distinct_days", "n_sessions"]),
        "<h2>Sessions</h2>",
        _table(card["sessions"], ["session_id", "participant", "day", "n_channels", "duration_s", "n_units",
                                  "wall_s"]),
        "<h2>Excluded</h2>",
        _table(card["excluded"]["sessions"], ["session_id", "reason", "attempts"]),
        f"<p>Noise units: {card['excluded']['units']['noise']} "
        f"({e(json.dumps(card['excluded']['units']['noise_reasons']))}). "
        f"{e(card['excluded']['units']['note'])}</p>",
        "<h2>Build</h2>",
        _table([{k: b.get(k) for k in ("wall_s", "workers", "n_sorted", "n_reused", "sessions_per_hour",
                                       "channel_hours_per_hour", "session_wall_s_median", "peak_rss_mb_max")}],
               ["wall_s", "workers", "n_sorted", "n_reused", "sessions_per_hour", "channel_hours_per_hour",
                "session_wall_s_median", "peak_rss_mb_max"]),
        "<h2>Provenance</h2>",
        f"<pre>{e(json.dumps(card['provenance'], indent=1, default=str))}</pre>",
        "<h2>Tracking</h2>", f"<pre>{e(json.dumps(card['tracking'], indent=1, default=str))}</pre>",
    ]
    style = ("body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}figure{display:inline-block}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{e(str(card['name']))}</title>"
                    f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return path
