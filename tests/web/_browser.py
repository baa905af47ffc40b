"""The headless browser of the UI tests: skipped with the reason where there is none, a failure under CI."""

from __future__ import annotations

import os

import pytest


def browser_or_skip():
    from cortexlink.web.browser import find_browser, launch

    chrome, driver, reason = find_browser()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(f"no headless browser: {reason}")
    return launch(width=1500, height=1000)


def assert_no_js_errors(driver) -> None:
    """The page logged no error of its own (network errors of a stopped server are not its fault)."""
    import time

    time.sleep(0.1)
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
    assert errors == [], errors
