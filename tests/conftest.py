"""Shared test fixtures, and the summary line that counts the project's own tests apart from
scikit-learn's generic estimator checks."""

from pathlib import Path

import pytest

from _shared_data import SHARED_DATA, need

REPO = Path(__file__).resolve().parents[1]

#: The marker of scikit-learn's generic estimator checks (``parametrize_with_checks``); the
#: terminal summary counts them apart from cortexlink's own tests.
SKLEARN_CHECK = "sklearn_check"


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a reason when it is absent, fails it under CI=true."""
    return need(SHARED_DATA, "real recordings (a fresh clone has no ../shared)")


def _outcomes(reports) -> dict:
    """``{outcome: count}`` of test outcomes (setup/teardown errors and the call's result), one per test id."""
    out: dict[str, int] = {}
    for outcome, reps in reports:
        seen = set()
        for r in reps:
            if getattr(r, "nodeid", None) is None or r.nodeid in seen:
                continue
            if outcome in ("passed", "xpassed") and getattr(r, "when", "call") != "call":
                continue
            seen.add(r.nodeid)
            out[outcome] = out.get(outcome, 0) + 1
    return out


def _line(counts: dict) -> str:
    order = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    return ", ".join(parts) or "none ran"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line: cortexlink's own tests, then scikit-learn's generic estimator checks, counted apart.

    Runs on the controller under pytest-xdist (its ``stats`` hold every worker's reports); a test
    is a scikit-learn check when it carries the ``sklearn_check`` marker (the keyword is in its
    report's ``keywords``)."""
    own: dict[str, list] = {}
    sk: dict[str, list] = {}
    for outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for r in terminalreporter.stats.get(outcome, []):
            if getattr(r, "nodeid", None) is None:
                continue
            (sk if SKLEARN_CHECK in getattr(r, "keywords", {}) else own).setdefault(outcome, []).append(r)
    mine, theirs = _outcomes(own.items()), _outcomes(sk.items())
    if not mine and not theirs:
        return
    terminalreporter.write_line(f"cortexlink tests: {_line(mine)}; "
                                f"scikit-learn generic estimator checks: {_line(theirs)}")


def pytest_collection_modifyitems(config, items):
    """Copy each test's requirement ids (``@pytest.mark.req("SR-01")``) into its user properties,
    so that they reach the controller under pytest-xdist and the JUnit XML report
    (``<property name="req" value="SR-01"/>``) that ``cortexlink evidence`` traces from."""
    for item in items:
        ids = []
        for mark in item.iter_markers("req"):
            for rid in mark.args:
                if not isinstance(rid, str) or not rid.startswith("SR-"):
                    raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.req takes ids like 'SR-01'; got {rid!r}")
                if rid not in ids:
                    ids.append(rid)
        for rid in ids:
            item.user_properties.append(("req", rid))
        if item.get_closest_marker(SKLEARN_CHECK) is not None:
            item.user_properties.append((SKLEARN_CHECK, "1"))
