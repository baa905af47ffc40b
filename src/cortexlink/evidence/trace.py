"""Requirements traced to tests: read the JUnit XML of a pytest run and join it with the risk file.

Each test names what it verifies with ``@pytest.mark.req("SR-01", ...)``; the project's
``tests/conftest.py`` copies those ids into the test's user properties, which pytest writes into
the JUnit XML (``<property name="req" value="SR-01"/>``), also under pytest-xdist. A requirement
is *passed* when at least one of its tests ran and passed and none failed; a requirement whose
only tests were skipped has no passing test.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET  # nosec B405 - parses the JUnit XML this tool's own pytest run wrote
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ValidationError
from cortexlink.evidence.riskfile import RiskFile

__all__ = ["TestResult", "read_junit", "trace_requirements", "suite_counts"]

_OUTCOMES = ("passed", "failed", "error", "skipped")


@dataclasses.dataclass(frozen=True)
class TestResult:
    """One test case of the run: its id, outcome, duration and the requirements it verifies."""

    __test__ = False  # not a pytest test class

    nodeid: str
    outcome: str
    seconds: float
    requirements: tuple[str, ...]
    sklearn_check: bool = False


def _nodeid(case: ET.Element) -> str:
    cls = case.get("classname", "")
    name = case.get("name", "")
    file = case.get("file")
    if file:
        parts = cls.split(".")
        # classname is "tests.runtime.test_x" or "tests.runtime.test_x.TestClass"
        mod = file[:-3].replace("/", ".") if file.endswith(".py") else file
        rest = cls[len(mod) + 1:] if cls.startswith(mod + ".") else ""
        return "::".join(p for p in (file, *([rest] if rest else []), name) if p) if parts else name
    return f"{cls.replace('.', '/')}.py::{name}" if cls else name


def read_junit(path: str | Path) -> list[TestResult]:
    """Every test case of a JUnit XML report (pytest's), with its outcome and requirement ids.

    Raises
    ------
    ValidationError
        The file is missing or not a JUnit XML report.
    """
    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"no JUnit XML report at {p}: run the tests with --junitxml first")
    try:
        root = ET.parse(p).getroot()  # nosec B314 - our own pytest run's report, not untrusted input
    except ET.ParseError as exc:
        raise ValidationError(f"{p} is not a JUnit XML report: {exc}") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise ValidationError(f"{p} is not a JUnit XML report (root element <{root.tag}>)")
    out: list[TestResult] = []
    for case in root.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                # pytest writes xfail as <skipped type="pytest.xfail">: not a pass, not a failure
                break
        reqs: list[str] = []
        sk = False
        props = case.find("properties")
        if props is not None:
            for prop in props.iter("property"):
                if prop.get("name") == "req" and prop.get("value"):
                    reqs.append(str(prop.get("value")))
                elif prop.get("name") == "sklearn_check":
                    sk = True
        out.append(TestResult(_nodeid(case), outcome, float(case.get("time") or 0.0), tuple(dict.fromkeys(reqs)), sk))
    return out


def trace_requirements(risk: RiskFile, results: list[TestResult]) -> tuple[list[dict[str, Any]], list[str]]:
    """``requirements[]`` entries ``{id, title, safety, hazards, tests[], passed}``, and the problems.

    A test's outcome is listed with it; ``passed`` is True when at least one linked test passed and
    none failed or errored. Problems: a safety requirement with no passing test, a failed linked
    test, a test naming an id that is not in the risk file.
    """
    by_req: dict[str, list[TestResult]] = {r.id: [] for r in risk.requirements}
    problems: list[str] = []
    for t in results:
        for rid in t.requirements:
            if rid not in by_req:
                problems.append(f"{t.nodeid} names {rid}, which is not a requirement in the risk file")
                continue
            by_req[rid].append(t)
    reqs: list[dict[str, Any]] = []
    for r in risk.requirements:
        tests = by_req[r.id]
        n_pass = sum(t.outcome == "passed" for t in tests)
        n_fail = sum(t.outcome in ("failed", "error") for t in tests)
        passed = n_pass > 0 and n_fail == 0
        reqs.append({"id": r.id, "title": r.title, "safety": r.safety, "hazards": list(r.hazards),
                     "tests": [{"id": t.nodeid, "outcome": t.outcome} for t in tests],
                     "n_passed": n_pass, "n_failed": n_fail, "passed": passed})
        if n_fail:
            problems.append(f"{r.id}: {n_fail} linked test(s) failed")
        elif r.safety and not passed:
            problems.append(f"{r.id} is a safety requirement with no passing test")
    return reqs, problems


def suite_counts(results: list[TestResult]) -> dict[str, dict[str, int]]:
    """Outcome counts of the project's own tests and of scikit-learn's generic checks, apart."""
    own = {k: 0 for k in _OUTCOMES}
    sk = {k: 0 for k in _OUTCOMES}
    for t in results:
        (sk if t.sklearn_check else own)[t.outcome] = (sk if t.sklearn_check else own).get(t.outcome, 0) + 1
    return {"cortexlink": own, "sklearn_generic_checks": sk}
