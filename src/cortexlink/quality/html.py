"""``report.html``: the quality report a reviewer reads (one self-contained page plus PNG figures).

Rendered with Jinja2 with autoescaping on: every text that comes from the data set (file and
channel names, header fields quoted in findings, labels) is HTML-escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cortexlink.quality.model import CHARACTERISTICS, SEVERITIES, Report

__all__ = ["render_html", "write_html", "MAX_FINDINGS_PER_CHECK"]

#: Findings listed per check in the page (all of them are in report.json).
MAX_FINDINGS_PER_CHECK = 300

_FIGURE_TITLES = {
    "scores": "Scores per characteristic",
    "channel_quality_eeg": "Per-channel quality map (EEG)",
    "channel_quality_implant": "Per-channel quality map (implant)",
    "implant_grid": "Implant electrode grid: noise and crossing rate",
    "class_balance": "Class balance per task",
    "split_membership": "Split membership (subjects × splits)",
    "baseline": "Baseline decoder against permutation chance",
}

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Data-set quality report: {{ root }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.sev-info { color: #1565c0; } .sev-warning { color: #ef6c00; font-weight: 600; }
.sev-error { color: #c62828; font-weight: 600; } .sev-critical { color: #fff; background: #b71c1c; font-weight: 700; }
.na { color: #999; } .small { font-size: 0.85em; color: #555; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
</style></head>
<body>
<h1>Data-set quality report</h1>
<table>
<tr><th>data set</th><td>{{ root }}</td></tr>
<tr><th>created (UTC)</th><td>{{ created }}</td></tr>
<tr><th>software</th><td>{% for k, v in software %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>
<tr><th>options</th><td>{% for k, v in options %}{{ k }}={{ v }}{% if not loop.last %}; {% endif %}{% endfor %}</td></tr>
<tr><th>recordings</th><td>{{ n_recordings }}</td></tr>
<tr><th>findings</th><td>{% for s, n in severity_counts %}<span class="{{ 'sev-' ~ s if n else 'na' }}">{{ n }} {{ s }}</span>{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>
</table>

<h2>Scores</h2>
<table>
<tr><th>characteristic</th><th>score</th><th>checks (applicable / run)</th><th>findings</th><th>clauses</th></tr>
{% for c in characteristics %}
<tr><td><a href="#{{ c.name }}">{{ c.name }}</a></td>
<td class="num">{% if c.score is none %}<span class="na">n/a</span>{% else %}{{ "%.3f"|format(c.score) }}{% endif %}</td>
<td class="num">{{ c.n_scored }} / {{ c.n_checks }}</td><td class="num">{{ c.n_findings }}</td>
<td class="small">{{ c.clause }}</td></tr>
{% endfor %}
</table>
{% if figures.scores %}<figure><img src="{{ figures.scores }}" alt="scores per characteristic"></figure>{% endif %}

{% for c in characteristics %}
<h2 id="{{ c.name }}">{{ c.name }} {% if c.score is none %}<span class="na">(n/a)</span>{% else %}({{ "%.3f"|format(c.score) }}){% endif %}</h2>
<p class="small">Clauses: {{ c.clause }}</p>
{% if not c.checks %}<p class="na">No check of this characteristic ran.</p>{% endif %}
{% for chk in c.checks %}
<h3>{{ chk.check }} — {% if chk.score is none %}<span class="na">n/a</span>{% else %}{{ "%.3f"|format(chk.score) }}{% endif %}</h3>
{% if chk.summary %}<p>{{ chk.summary }}</p>{% endif %}
{% if chk.findings %}
<table>
<tr><th>severity</th><th>file</th><th>channel</th><th>start_s</th><th>detail</th><th>clause</th></tr>
{% for f in chk.findings %}
<tr><td class="sev-{{ f.severity }}">{{ f.severity }}</td><td>{{ f.file or "" }}</td><td>{{ f.channel or "" }}</td>
<td class="num">{% if f.start_s is not none %}{{ "%.3f"|format(f.start_s) }}{% endif %}</td>
<td>{{ f.detail }}</td><td class="small">{{ f.clause }}</td></tr>
{% endfor %}
</table>
{% if chk.n_more %}<p class="small">… {{ chk.n_more }} more finding(s) of this check in report.json.</p>{% endif %}
{% else %}<p class="small">No finding.</p>{% endif %}
{% endfor %}
{% endfor %}

<h2 id="recordings">Recordings</h2>
{% if recordings %}
<table>
<tr><th>name</th><th>kind</th><th>format</th><th>fs (Hz)</th><th>channels</th><th>duration (s)</th><th>subject</th>
<th>session</th><th>events</th><th>split</th><th>problems</th></tr>
{% for r in recordings %}
<tr><td>{{ r.name }}</td><td>{{ r.kind }}</td><td>{{ r.format }}</td>
<td class="num">{% if r.fs_hz is not none %}{{ "%g"|format(r.fs_hz) }}{% endif %}</td>
<td class="num">{{ r.channels }}</td><td class="num">{% if r.duration_s is not none %}{{ "%.1f"|format(r.duration_s) }}{% endif %}</td>
<td>{{ r.subject or "" }}</td><td>{{ r.session or "" }}</td><td class="num">{{ r.n_events }}</td><td>{{ r.split or "" }}</td>
<td class="small">{{ r.problems|join("; ") }}</td></tr>
{% endfor %}
</table>
{% else %}<p class="na">No recording could be opened.</p>{% endif %}

<h2 id="figures">Figures</h2>
{% for name, src, title in figure_list %}
<figure><img src="{{ src }}" alt="{{ title }}"><figcaption>{{ title }}</figcaption></figure>
{% else %}<p class="na">No figure (nothing to draw).</p>{% endfor %}
<p class="small">Generated by cortexlink quality. Every score and finding is also in report.json.</p>
</body></html>
"""


def _context(report: Report) -> dict[str, Any]:
    findings = report.findings
    counts = {s: 0 for s in SEVERITIES}
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    scores = report.scores
    chars = []
    for c, clause in CHARACTERISTICS.items():
        checks = []
        for r in report.results:
            if r.characteristic != c:
                continue
            order = sorted(r.findings, key=lambda f: (-SEVERITIES.index(f.severity), f.file or "", f.channel or ""))
            checks.append({"check": r.check, "score": r.score, "summary": r.summary,
                           "findings": order[:MAX_FINDINGS_PER_CHECK],
                           "n_more": max(0, len(order) - MAX_FINDINGS_PER_CHECK)})
        chars.append({"name": c, "clause": clause, "score": scores.get(c), "checks": checks,
                      "n_checks": len(checks), "n_scored": sum(1 for k in checks if k["score"] is not None),
                      "n_findings": sum(len(r.findings) for r in report.results if r.characteristic == c)})
    figs = dict(report.figures)
    options = [(k, v) for k, v in report.options.items() if k != "timings_s"]
    if report.options.get("timings_s"):
        options.append(("timings_s", ", ".join(f"{k} {v}" for k, v in report.options["timings_s"].items())))
    return {"root": str(report.root), "created": report.created_utc, "software": list(report.software.items()),
            "options": options, "n_recordings": len(report.recordings),
            "severity_counts": [(s, n) for s, n in counts.items()], "characteristics": chars,
            "recordings": report.recordings, "figures": figs,
            "figure_list": [(k, v, _FIGURE_TITLES.get(k, k)) for k, v in figs.items() if k != "scores"]}


def render_html(report: Report) -> str:
    """The report as one HTML page (figures referenced by their paths in ``report.figures``)."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    return env.from_string(_TEMPLATE).render(**_context(report))


def write_html(report: Report, path: Path) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8)."""
    path = Path(path)
    path.write_text(render_html(report), encoding="utf-8")
    return path
