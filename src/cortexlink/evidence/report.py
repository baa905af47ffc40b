"""``evidence/report.html``: the evidence file as one self-contained page an auditor can read.

Sections: the verdict and headline figures; the hazard analysis (ISO 14971 form, each risk control
linked to its requirement and the verification); requirements with their tests and outcomes;
coverage of the safety-critical files; mutation scores; static analysis; SOUP. Every value is
escaped; missing figures show as "not measured", never as zero.
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f3f3f3}.ok{color:#0a6b2d;font-weight:600}.bad{color:#b00020;font-weight:600}
.muted{color:#777}.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em}
.card b{font-size:1.3em;display:block}details summary{cursor:pointer}code{font-size:.92em}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _pct(x: Any) -> str:
    return "not measured" if x is None else f"{float(x):.1f} %"


def _flag(ok: bool | None, yes: str = "met", no: str = "NOT met") -> str:
    if ok is None:
        return '<span class="muted">not measured</span>'
    return f'<span class="ok">{_e(yes)}</span>' if ok else f'<span class="bad">{_e(no)}</span>'


def _cards(ev: dict[str, Any]) -> str:
    reqs = ev.get("requirements") or []
    safety = [r for r in reqs if r.get("safety")]
    cov = ev.get("coverage") or {}
    muts = [m for m in ev.get("mutation") or [] if m.get("score") is not None]
    counts = (ev.get("tests") or {}).get("counts") or {}
    own = counts.get("cortexlink") or {}
    sk = counts.get("sklearn_generic_checks") or {}
    mut_min = min((m["score"] for m in muts), default=None)
    items = [
        ("requirements with a passing test", f"{sum(bool(r.get('passed')) for r in reqs)} / {len(reqs)}"),
        ("safety requirements with a passing test", f"{sum(bool(r.get('passed')) for r in safety)} / {len(safety)}"),
        ("cortexlink tests passed", f"{own.get('passed', 0)} (failed {own.get('failed', 0) + own.get('error', 0)}, "
                                    f"skipped {own.get('skipped', 0)})"),
        ("scikit-learn generic checks passed (apart)", f"{sk.get('passed', 0)}"),
        ("branch coverage, all code", _pct(cov.get("total_pct"))),
        ("branch coverage, safety code", _pct(cov.get("safety_pct"))),
        ("lowest mutation score (safety files)", _pct(mut_min)),
        ("SOUP packages", str(len(ev.get("soup") or []))),
    ]
    return '<div class="cards">' + "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in items) + "</div>"


def _residual(h: dict[str, Any], reqs: dict[str, Any]) -> str:
    """The residual risk holds only when every control of the hazard is verified."""
    if not h.get("acceptable_after"):
        return '<span class="bad">NOT acceptable</span>'
    if all(reqs.get(c, {}).get("passed") for c in h.get("controls", [])):
        return '<span class="ok">acceptable</span>'
    return '<span class="bad">not shown: a control is not verified</span>'


def _hazards(ev: dict[str, Any]) -> str:
    reqs = {r["id"]: r for r in ev.get("requirements") or []}
    rows = []
    for h in ev.get("hazards") or []:
        ctrl = "<br>".join(
            f'<a href="#{_e(c)}">{_e(c)}</a> {_flag(reqs.get(c, {}).get("passed"), "verified", "not verified")}'
            for c in h.get("controls", []))
        rows.append(f"<tr><td>{_e(h['id'])}</td><td>{_e(h['hazard'])}</td><td>{_e(h['sequence'])}</td>"
                    f"<td>{_e(h['harm'])}</td><td>{_e(h['severity'])}</td><td>{_e(h['probability_before'])}</td>"
                    f"<td>{ctrl}</td><td>{_e(h['probability_after'])} {_residual(h, reqs)}</td></tr>")
    return ("<table><tr><th>id</th><th>hazard</th><th>sequence of events</th><th>harm</th><th>severity</th>"
            "<th>probability</th><th>risk controls (verification)</th><th>residual</th></tr>" + "".join(rows) + "</table>")


def _requirements(ev: dict[str, Any]) -> str:
    rows = []
    for r in ev.get("requirements") or []:
        tests = r.get("tests") or []
        lst = "".join(f"<li><code>{_e(t['id'])}</code> — {_e(t['outcome'])}</li>" for t in tests)
        cell = (f"<details><summary>{len(tests)} test(s): {r.get('n_passed', 0)} passed</summary><ul>{lst}</ul>"
                "</details>") if tests else '<span class="bad">no test</span>'
        rows.append(f'<tr id="{_e(r["id"])}"><td>{_e(r["id"])}</td><td>{_e(r["title"])}</td>'
                    f"<td>{'safety' if r.get('safety') else ''}</td><td>{_e(', '.join(r.get('hazards', [])))}</td>"
                    f"<td>{cell}</td><td>{_flag(r.get('passed'), 'passed', 'FAILED' if r.get('n_failed') else 'no passing test')}"
                    "</td></tr>")
    return ("<table><tr><th>id</th><th>requirement</th><th>class</th><th>hazards</th><th>tests</th><th>status</th></tr>"
            + "".join(rows) + "</table>")


def _coverage(ev: dict[str, Any]) -> str:
    cov = ev.get("coverage") or {}
    goal = (ev.get("goals") or {}).get("safety_coverage_pct")
    rows = []
    for f in cov.get("files") or []:
        pct = f.get("pct") if f.get("measured") else None
        ok = None if pct is None or goal is None else pct >= goal
        rows.append(f"<tr><td><code>{_e(f['path'])}</code></td><td class=num>{_pct(pct)}</td><td>{_flag(ok)}</td>"
                    f"<td class=muted>{_e(len(f.get('missing_lines', [])))} lines, "
                    f"{_e(len(f.get('missing_branches', [])))} branches not covered</td></tr>")
    return (f"<p>Statements and branches together (coverage.py with branch coverage), over the whole test run. "
            f"All code: <b>{_pct(cov.get('total_pct'))}</b>; safety code: <b>{_pct(cov.get('safety_pct'))}</b>"
            f" (goal {_e(goal)} %).</p><table><tr><th>file</th><th>coverage</th><th>goal</th><th>missing</th></tr>"
            + "".join(rows) + "</table>")


def _mutation(ev: dict[str, Any]) -> str:
    goal = (ev.get("goals") or {}).get("mutation_score_pct")
    rows = []
    for m in ev.get("mutation") or []:
        ok = None if m.get("score") is None or goal is None else m["score"] >= goal
        surv = "".join(f"<li><code>{_e(s)}</code></li>" for s in (m.get("survivors") or [])[:200])
        rows.append(f"<tr><td><code>{_e(m['module'])}</code></td><td class=num>{_e(m.get('killed'))}</td>"
                    f"<td class=num>{_e(m.get('survived'))}</td><td class=num>{_e(m.get('no_tests'))}</td>"
                    f"<td class=num>{_pct(m.get('score'))}</td><td>{_flag(ok)}</td>"
                    f"<td>{_e(', '.join(m.get('tests', [])))}<br><span class=muted>{_e(m.get('message'))}</span>"
                    f"{'<details><summary>survivors</summary><ul>' + surv + '</ul></details>' if surv else ''}</td></tr>")
    if not rows:
        return '<p class="muted">Mutation testing was not run (make evidence runs it; --no-mutation skips it).</p>'
    return (f"<p>mutmut; score = killed / (killed + survived + no tests); goal {_e(goal)} %.</p><table><tr>"
            "<th>module</th><th>killed</th><th>survived</th><th>no tests</th><th>score</th><th>goal</th>"
            "<th>tests run against the mutants</th></tr>" + "".join(rows) + "</table>")


def _static(ev: dict[str, Any]) -> str:
    rows = [f"<tr><td>{_e(k)}</td><td>{_flag(v.get('ok'), 'clean', 'findings')}</td><td><code>{_e(v.get('command'))}"
            f"</code></td><td class=muted>{_e(v.get('summary'))}</td></tr>" for k, v in (ev.get("static_analysis") or {}).items()]
    if not rows:
        return '<p class="muted">Static analysis was not run.</p>'
    return "<table><tr><th>tool</th><th>result</th><th>command</th><th>summary</th></tr>" + "".join(rows) + "</table>"


def _soup(ev: dict[str, Any]) -> str:
    audit = ev.get("audit") or {}
    rows = []
    for s in ev.get("soup") or []:
        v = s.get("known_vulnerabilities")
        vul = ('<span class="muted">not audited</span>' if v is None else
               ('<span class="ok">none known</span>' if not v else
                '<span class="bad">' + _e(", ".join(str(x.get("id")) for x in v)) + "</span>"))
        rows.append(f"<tr><td>{_e(s['name'])}</td><td>{_e(s['version'])}</td><td>{_e(s['licence'])}</td>"
                    f"<td>{_e(s['purpose'])}</td><td>{vul}</td></tr>")
    sbom = ev.get("sbom") or {}
    return (f"<p>Runtime dependencies of cortexlink (and their dependencies), from the installed metadata. "
            f"Vulnerabilities: {_e(audit.get('message', 'pip-audit not run'))}. SBOM: "
            f"{_e(sbom.get('message', 'not generated'))} (<code>{_e(sbom.get('path'))}</code>).</p>"
            "<table><tr><th>package</th><th>version</th><th>licence</th><th>purpose</th><th>known vulnerabilities</th>"
            "</tr>" + "".join(rows) + "</table>")


def render_html(ev: dict[str, Any]) -> str:
    """The report page for an evidence document (``evidence.json``'s content)."""
    verdict = ev.get("verdict") or {}
    problems = verdict.get("problems") or []
    head = (f'<p class="{"ok" if verdict.get("ok") else "bad"}">'
            f'{"All safety requirements verified; goals met." if verdict.get("ok") else "Evidence incomplete:"}</p>')
    if problems:
        head += "<ul>" + "".join(f"<li>{_e(p)}</li>" for p in problems) + "</ul>"
    meta = ev.get("meta") or {}
    return ("<!doctype html><html><head><meta charset=utf-8><title>cortexlink evidence</title>"
            f"<style>{_CSS}</style></head><body><h1>cortexlink — safety evidence</h1>"
            f"<p class=muted>cortexlink {_e(meta.get('version'))}, commit {_e(meta.get('git_commit'))}, "
            f"generated {_e(meta.get('generated'))} on {_e(meta.get('host'))} (python {_e(meta.get('python'))}). "
            f"Regenerate with <code>make evidence</code>.</p>{head}{_cards(ev)}"
            f"<h2>Hazard analysis (ISO 14971)</h2>{_hazards(ev)}"
            f"<h2>Requirements and their verification</h2>{_requirements(ev)}"
            f"<h2>Coverage of the safety-critical code</h2>{_coverage(ev)}"
            f"<h2>Mutation testing</h2>{_mutation(ev)}"
            f"<h2>Static analysis</h2>{_static(ev)}"
            f"<h2>SOUP (software of unknown provenance)</h2>{_soup(ev)}"
            "</body></html>")
