"""Build the evidence file: run the tests, trace, measure, list SOUP, write JSON and HTML.

:func:`build_evidence` does, in order (each step logged, each optional except the trace):

1. reads and checks the risk file (``docs/safety/requirements.yaml``);
2. runs the whole test suite once with branch coverage and a JUnit XML report
   (``pytest -n 2 --dist loadfile --cov=cortexlink --cov-branch``), or reads the reports of an
   earlier run (``reuse_tests``);
3. traces requirements to tests and their outcomes; counts the project's tests apart from
   scikit-learn's generic checks; reads the coverage of the safety-critical files;
4. runs ruff, mypy (strict, per pyproject) and bandit;
5. mutation-tests each safety-critical file against its tests (mutmut);
6. lists SOUP from the installed metadata, audits it with pip-audit, writes a CycloneDX SBOM;
7. writes ``evidence.json`` and ``report.html`` and returns the document.

The verdict fails when a safety requirement has no passing test, a linked test failed, the
safety code's coverage or a file's mutation score is under its goal, or a static-analysis tool
reports findings. A figure that was not measured (a step skipped) is ``None`` in the JSON and
does not fail the verdict, but is listed as not measured.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess  # nosec B404 - runs this environment's pytest, linters and git with fixed argv lists
import sys
from pathlib import Path
from typing import Any, Callable

from cortexlink import __version__
from cortexlink.evidence.coverage import read_coverage
from cortexlink.evidence.mutation import mutate_file
from cortexlink.evidence.riskfile import load_risk_file
from cortexlink.evidence.soup import run_pip_audit, soup_list, write_sbom
from cortexlink.evidence.trace import read_junit, suite_counts, trace_requirements

__all__ = ["build_evidence", "GOALS", "STATIC_TOOLS"]

#: The issue's goals for the safety-critical code.
GOALS = {"safety_coverage_pct": 90.0, "mutation_score_pct": 80.0}

#: The static analysis ``make lint`` runs (configured in pyproject.toml).
STATIC_TOOLS = {
    "ruff": ["-m", "ruff", "check", "src", "tests"],
    "mypy": ["-m", "mypy"],
    "bandit": ["-m", "bandit", "-c", "pyproject.toml", "-r", "src", "-q"],
}


def _git_commit(repo: Path) -> str | None:
    try:
        p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,  # nosec B603 B607
                           text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,  # nosec B603 B607
                           capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    return p.stdout.strip() + ("+changes" if dirty else "")


def run_tests(repo: Path, out: Path, workers: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The whole suite once, with branch coverage and JUnit XML into ``out``; ``{returncode, command, seconds}``."""
    junit, cov = out / "junit.xml", out / "coverage.json"
    for f in (junit, cov):
        f.unlink(missing_ok=True)
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1", f"--junitxml={junit}",
            "--cov=cortexlink", "--cov-branch", f"--cov-report=json:{cov}", "--cov-report="]
    if workers > 1:
        args += ["-n", str(workers), "--dist", "loadfile"]
    log(f"running the test suite with coverage: python {' '.join(args)}")
    t0 = _dt.datetime.now()
    p = subprocess.run([sys.executable, *args], cwd=repo, check=False)  # nosec B603
    secs = (_dt.datetime.now() - t0).total_seconds()
    log(f"tests finished with exit status {p.returncode} in {secs / 60:.1f} min")
    return {"returncode": p.returncode, "command": "python " + " ".join(args), "seconds": round(secs, 1)}


def run_static(repo: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """ruff, mypy and bandit as ``make lint`` runs them; ``{tool: {ok, command, summary}}``."""
    out = {}
    for tool, args in STATIC_TOOLS.items():
        try:
            p = subprocess.run([sys.executable, *args], cwd=repo, capture_output=True, text=True,  # nosec B603
                               timeout=1800, check=False)
            lines = (p.stdout + p.stderr).strip().splitlines()
            ok = p.returncode == 0
            summary = (lines[-1] if lines else "no output") if ok else " | ".join(lines[-5:])
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, summary = False, f"did not run: {exc}"
        log(f"{tool}: {'clean' if ok else 'FINDINGS'}")
        out[tool] = {"ok": ok, "command": "python " + " ".join(args), "summary": summary[:2000]}
    return out


def verdict(ev: dict[str, Any]) -> dict[str, Any]:
    """``{ok, problems[], not_measured[]}`` for an evidence document."""
    problems = list(ev.get("trace_problems") or [])
    missing: list[str] = []
    cov = ev.get("coverage")
    if cov is None or cov.get("safety_pct") is None:
        missing.append("coverage of the safety code")
    elif cov["safety_pct"] < GOALS["safety_coverage_pct"]:
        problems.append(f"safety code coverage {cov['safety_pct']:.1f} % is under the goal of "
                        f"{GOALS['safety_coverage_pct']:.0f} %")
    muts = ev.get("mutation")
    if not muts:
        missing.append("mutation scores")
    for m in muts or []:
        if m.get("score") is None:
            missing.append(f"mutation score of {m['module']}")
        elif m["score"] < GOALS["mutation_score_pct"]:
            problems.append(f"mutation score of {m['module']} is {m['score']:.1f} %, under the goal of "
                            f"{GOALS['mutation_score_pct']:.0f} %")
    static = ev.get("static_analysis")
    if not static:
        missing.append("static analysis")
    for tool, r in (static or {}).items():
        if not r.get("ok"):
            problems.append(f"{tool} reports findings: {r.get('summary')}")
    tests = ev.get("tests") or {}
    own = ((tests.get("counts") or {}).get("cortexlink") or {})
    if own.get("failed") or own.get("error"):
        problems.append(f"{own.get('failed', 0)} test(s) failed and {own.get('error', 0)} errored")
    return {"ok": not problems, "problems": problems, "not_measured": missing}


def build_evidence(repo: str | Path = ".", out: str | Path = "evidence", *, reuse_tests: bool = False,
                   workers: int = 2, static: bool = True, mutation: bool = True, audit: bool = True,
                   mutation_children: int = 2, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build ``out/evidence.json`` and ``out/report.html`` for the checkout at ``repo`` (module docstring)."""
    repo, out = Path(repo).resolve(), Path(out)
    if not out.is_absolute():
        out = repo / out
    out.mkdir(parents=True, exist_ok=True)
    risk = load_risk_file(repo / "docs" / "safety" / "requirements.yaml")
    log(f"risk file: {len(risk.hazards)} hazards, {len(risk.requirements)} requirements "
        f"({sum(r.safety for r in risk.requirements)} safety), {len(risk.safety_code)} safety-critical files")
    test_run = None if reuse_tests else run_tests(repo, out, workers, log)
    results = read_junit(out / "junit.xml")
    reqs, trace_problems = trace_requirements(risk, results)
    safety_paths = [c.path for c in risk.safety_code]
    cov = read_coverage(out / "coverage.json", safety_paths) if (out / "coverage.json").is_file() else None
    ev: dict[str, Any] = {
        "meta": {"version": __version__, "git_commit": _git_commit(repo), "python": platform.python_version(),
                 "host": platform.node(), "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        "goals": dict(GOALS),
        "hazards": [{"id": h.id, "hazard": h.hazard, "sequence": h.sequence, "harm": h.harm, "severity": h.severity,
                     "probability_before": h.probability_before, "controls": list(h.controls),
                     "probability_after": h.probability_after, "acceptable_after": h.acceptable_after}
                    for h in risk.hazards],
        "requirements": reqs, "trace_problems": trace_problems,
        "tests": {"run": test_run, "counts": suite_counts(results), "n_linked": sum(bool(t.requirements) for t in results)},
        "coverage": cov,
        "static_analysis": run_static(repo, log) if static else None,
        "mutation": None,
    }
    if mutation:
        ev["mutation"] = [mutate_file(repo, c.path, c.tests, out / "mutation" / Path(c.path).stem,
                                      max_children=mutation_children, log=log) for c in risk.safety_code]
    aud = run_pip_audit(out / "pip-audit.json") if audit else {"ok": False, "report": None, "message": "not run"}
    log(aud["message"])
    ev["audit"] = {"ok": aud["ok"], "message": aud["message"]}
    ev["soup"] = soup_list(audit=aud["report"])
    ev["sbom"] = write_sbom(out / "sbom.cdx.json", repo / "pyproject.toml")
    log(ev["sbom"]["message"])
    ev["verdict"] = verdict(ev)
    from cortexlink.evidence.report import render_html
    (out / "evidence.json").write_text(json.dumps(ev, indent=1, default=str))
    (out / "report.html").write_text(render_html(ev))
    log(f"wrote {out / 'evidence.json'} and {out / 'report.html'}")
    return ev
