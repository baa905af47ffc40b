"""The evidence generator: risk file checks, requirement tracing, coverage and mutation figures,
SOUP and the report (issue 21)."""

import json
import re
import subprocess
import sys
from email.message import Message
from pathlib import Path

import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.evidence.coverage import read_coverage
from cortexlink.evidence.mutation import mutate_file, parse_results, score
from cortexlink.evidence.report import render_html
from cortexlink.evidence.riskfile import load_risk_file, parse_risk_file, risk_acceptable
from cortexlink.evidence.run import build_evidence, verdict
from cortexlink.evidence.soup import licence_of, soup_list
from cortexlink.evidence.trace import read_junit, suite_counts, trace_requirements

REPO = Path(__file__).resolve().parents[2]
RISK = REPO / "docs" / "safety" / "requirements.yaml"


def _doc():
    return {
        "hazards": [{"id": "HZ-01", "hazard": "h", "sequence": "s", "harm": "x", "severity": "S3",
                     "probability_before": "P4", "controls": ["SR-01", "SR-02"], "probability_after": "P2"}],
        "requirements": [{"id": "SR-01", "title": "a", "safety": True}, {"id": "SR-02", "title": "b", "safety": False}],
        "safety_code": [{"path": "src/x.py", "item": "x", "requirements": ["SR-01"], "tests": ["tests/t.py"]}],
    }


def test_the_projects_risk_file_holds_together_and_every_safety_requirement_has_a_marked_test():
    risk = load_risk_file(RISK)
    assert len(risk.hazards) >= 8 and all(h.controls for h in risk.hazards)
    assert all(h.acceptable_after for h in risk.hazards)
    for c in risk.safety_code:
        assert (REPO / c.path).is_file(), c.path
        assert all((REPO / t).is_file() for t in c.tests), c.tests
    # every id a test names exists, and every safety requirement is named by at least one test
    named = set()
    for f in (REPO / "tests").rglob("*.py"):
        for call in re.findall(r"mark\.req\(([^)]*)\)", f.read_text()):
            named.update(re.findall(r"SR-\d\d", call))
    assert named <= risk.ids, sorted(named - risk.ids)
    untested = [r.id for r in risk.requirements if r.safety and r.id not in named]
    assert not untested, f"safety requirements no test names: {untested}"


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["hazards"][0].update(controls=["SR-01", "SR-02", "SR-09"]), "SR-09 are not requirements"),
    (lambda d: d["hazards"][0].update(severity="S9"), "severity"),
    (lambda d: d["hazards"][0].update(probability_after="high"), "probability_after"),
    (lambda d: d["hazards"][0].update(harm=""), "harm"),
    (lambda d: d["requirements"].append({"id": "SR-01", "title": "dup", "safety": True}), "twice"),
    (lambda d: d["requirements"].append({"id": "SR-03", "title": "orphan", "safety": True}), "controls no hazard"),
    (lambda d: d["requirements"][0].update(safety="yes"), "true or false"),
    (lambda d: d["requirements"][0].update(id="R1"), "SR-01"),
    (lambda d: d["safety_code"][0].update(requirements=["SR-07"]), "SR-07 are not requirements"),
    (lambda d: d["safety_code"][0].update(tests=[]), "tests"),
    (lambda d: d.pop("safety_code"), "safety_code"),
])
def test_a_broken_risk_file_is_refused_with_the_problem_named(edit, match):
    d = _doc()
    parse_risk_file(d)
    edit(d)
    with pytest.raises(ConfigError, match=match):
        parse_risk_file(d)


def test_the_risk_matrix():
    assert risk_acceptable("S2", "P3") and not risk_acceptable("S2", "P4")
    assert risk_acceptable("S3", "P2") and not risk_acceptable("S3", "P3")
    assert risk_acceptable("S5", "P1") and not risk_acceptable("S4", "P2")


def _junit(tmp_path, cases):
    rows = []
    for name, outcome, reqs, sk in cases:
        props = "".join(f'<property name="req" value="{r}"/>' for r in reqs)
        if sk:
            props += '<property name="sklearn_check" value="1"/>'
        body = {"passed": "", "failed": "<failure message='x'/>", "error": "<error message='x'/>",
                "skipped": "<skipped message='x'/>"}[outcome]
        rows.append(f'<testcase classname="tests.a.test_m" name="{name}" file="tests/a/test_m.py" time="0.5">'
                    f'<properties>{props}</properties>{body}</testcase>')
    p = tmp_path / "junit.xml"
    p.write_text(f'<testsuites><testsuite name="pytest">{"".join(rows)}</testsuite></testsuites>')
    return p


def test_requirements_are_traced_to_their_tests_with_outcomes(tmp_path):
    risk = parse_risk_file(_doc())
    res = read_junit(_junit(tmp_path, [("t1", "passed", ["SR-01"], False), ("t2", "skipped", ["SR-02"], False),
                                       ("t3", "passed", [], True), ("t4", "failed", [], False),
                                       ("t5", "passed", ["SR-99"], False)]))
    assert res[0].nodeid == "tests/a/test_m.py::t1" and res[0].requirements == ("SR-01",)
    reqs, problems = trace_requirements(risk, res)
    by = {r["id"]: r for r in reqs}
    assert by["SR-01"]["passed"] and by["SR-01"]["tests"] == [{"id": "tests/a/test_m.py::t1", "outcome": "passed"}]
    assert not by["SR-02"]["passed"]                 # only skipped: no passing test (not a safety one here)
    assert any("SR-99" in p for p in problems)
    assert not any("SR-02" in p for p in problems)
    counts = suite_counts(res)
    assert counts["sklearn_generic_checks"]["passed"] == 1
    assert counts["cortexlink"] == {"passed": 2, "failed": 1, "error": 0, "skipped": 1}


def test_a_failed_test_fails_its_requirement_and_a_safety_requirement_without_a_pass_is_a_problem(tmp_path):
    risk = parse_risk_file(_doc())
    res = read_junit(_junit(tmp_path, [("t1", "passed", ["SR-01"], False), ("t2", "failed", ["SR-01"], False)]))
    reqs, problems = trace_requirements(risk, res)
    assert not reqs[0]["passed"] and reqs[0]["n_failed"] == 1
    assert problems == ["SR-01: 1 linked test(s) failed"]
    res = read_junit(_junit(tmp_path, [("t1", "skipped", ["SR-01"], False)]))
    assert trace_requirements(risk, res)[1] == ["SR-01 is a safety requirement with no passing test"]


def test_junit_errors_are_clear(tmp_path):
    with pytest.raises(ValidationError, match="no JUnit XML"):
        read_junit(tmp_path / "none.xml")
    (tmp_path / "bad.xml").write_text("<html>")
    with pytest.raises(ValidationError, match="not a JUnit XML"):
        read_junit(tmp_path / "bad.xml")


def test_coverage_of_the_safety_files(tmp_path):
    doc = {"meta": {"branch_coverage": True},
           "totals": {"covered_lines": 80, "num_statements": 100, "covered_branches": 10, "num_branches": 20},
           "files": {"src/a.py": {"summary": {"covered_lines": 9, "num_statements": 10, "covered_branches": 3,
                                              "num_branches": 4}, "missing_lines": [7], "missing_branches": [[3, 5]]},
                     "src/b.py": {"summary": {"covered_lines": 1, "num_statements": 2, "covered_branches": 0,
                                              "num_branches": 0}, "missing_lines": [2], "missing_branches": []}}}
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc))
    cov = read_coverage(p, ["src/a.py", "src/b.py"])
    assert cov["total_pct"] == 75.0 and cov["branch"]
    assert cov["safety_pct"] == round(100 * 13 / 16, 2)
    assert cov["files"][0]["pct"] == round(100 * 12 / 14, 2) and cov["files"][0]["missing_branches"] == [[3, 5]]
    assert read_coverage(p, ["src/a.py", "src/never_imported.py"])["safety_pct"] is None


def test_mutation_results_and_score():
    text = "    m.x__mutmut_1: killed\n    m.x__mutmut_2: survived\n    m.y__mutmut_1: no tests\n" \
           "    m.y__mutmut_2: timeout\n    m.y__mutmut_3: not checked\n"
    by = parse_results(text)
    counts = {k: len(v) for k, v in by.items()}
    assert by["survived"] == ["m.x__mutmut_2"]
    assert score(counts) == 50.0                      # (killed + timeout) / (killed + timeout + survived + no tests)
    assert score({"not checked": 3}) is None


def test_mutmut_really_runs_on_a_small_package(tmp_path):
    """A real mutmut run on a toy package: the test of one function kills its mutants (boundary and
    arithmetic), the function no test runs leaves its mutants as 'no tests'."""
    (tmp_path / "src" / "toy").mkdir(parents=True)
    (tmp_path / "src" / "toy" / "__init__.py").write_text("")
    (tmp_path / "src" / "toy" / "clamp.py").write_text(
        "def shift(x):\n    if x > 10:\n        return x - 10\n    return x + 1\n\n\n"
        "def untested(a):\n    return a * 2\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_clamp.py").write_text(
        "from toy.clamp import shift\n\n\ndef test_shift():\n    assert shift(20) == 10\n    assert shift(10) == 11\n"
        "    assert shift(11) == 1\n")
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\ntestpaths = ['tests']\n")
    r = mutate_file(tmp_path, "src/toy/clamp.py", ("tests/test_clamp.py",), tmp_path / "work", max_children=1,
                    timeout_s=600)
    assert r["module"] == "toy.clamp"
    assert r["killed"] >= 4 and r["survived"] == 0, r
    assert r["no_tests"] >= 1 and all("untested" in s for s in r["survivors"]), r
    assert r["score"] == round(100 * r["killed"] / (r["killed"] + r["no_tests"]), 1)


def test_soup_lists_the_installed_runtime_dependencies():
    import importlib.metadata as md
    soup = soup_list()
    by = {s["name"].lower(): s for s in soup}
    assert by["numpy"]["version"] == md.version("numpy") and by["numpy"]["direct"]
    assert "cortexlink" not in by and "pytest" not in by          # runtime only, not the test tools
    assert all(s["purpose"] and s["licence"] for s in soup)
    assert all(s["known_vulnerabilities"] is None for s in soup)  # no audit given: not audited, never "none"
    transitive = [s for s in soup if not s["direct"]]
    assert transitive and all(s["required_by"] for s in transitive)


def test_licence_is_read_as_the_package_states_it():
    m = Message()
    m["License-Expression"] = "MIT OR Apache-2.0"
    assert licence_of(m) == "MIT OR Apache-2.0"
    m = Message()
    m["License"] = "BSD-3-Clause"
    assert licence_of(m) == "BSD-3-Clause"
    m = Message()
    m["License"] = "Copyright (c) 2001\nlong text\nof the licence"
    m["Classifier"] = "License :: OSI Approved :: BSD License"
    assert licence_of(m) == "BSD License"
    assert licence_of(Message()) == "unknown"


def test_the_report_survives_an_empty_document_and_shows_what_was_not_measured():
    page = render_html({})
    assert "<html>" in page and "not measured" in page
    v = verdict({})
    assert v["ok"] and set(v["not_measured"]) == {"coverage of the safety code", "mutation scores", "static analysis"}


def test_evidence_from_an_earlier_run_names_each_problem(tmp_path):
    out = tmp_path / "ev"
    out.mkdir()
    _junit(out, [("t1", "passed", ["SR-01", "SR-02"], False), ("t2", "failed", ["SR-40"], False)])
    ev = build_evidence(REPO, out, reuse_tests=True, static=False, mutation=False, audit=False, log=lambda m: None)
    doc = json.loads((out / "evidence.json").read_text())
    assert doc["verdict"] == ev["verdict"] and not doc["verdict"]["ok"]
    by = {r["id"]: r for r in doc["requirements"]}
    assert by["SR-01"]["passed"] and not by["SR-40"]["passed"]
    assert "SR-40: 1 linked test(s) failed" in doc["verdict"]["problems"]
    assert "SR-10 is a safety requirement with no passing test" in doc["verdict"]["problems"]
    assert doc["soup"] and doc["audit"]["ok"] is False
    page = (out / "report.html").read_text()
    assert 'id="SR-01"' in page and "HZ-08" in page and "Evidence incomplete" in page


def test_the_cli_refuses_a_folder_that_is_not_a_checkout(tmp_path):
    p = subprocess.run([sys.executable, "-m", "cortexlink.cli.main", "evidence", "--repo", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "not a cortexlink checkout" in p.stderr
