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
