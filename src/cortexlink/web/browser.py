"""A headless Chromium driven by Selenium, for the UI tests and ``cortexlink bench ui``.

Selenium (a test/bench dependency, not a runtime one) is imported only here. The browser and
the driver are the system's (Debian's ``chromium`` and ``chromedriver`` by default, or
``$CORTEXLINK_CHROMIUM`` / ``$CORTEXLINK_CHROMEDRIVER``): the driver path is always passed
explicitly, so Selenium Manager never runs and nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["find_browser", "launch", "HEADLESS_ARGS"]

HEADLESS_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-default-apps", "--disable-sync",
                 "--mute-audio", "--disable-dev-shm-usage")


def find_browser() -> tuple[str | None, str | None, str | None]:
    """``(chromium, chromedriver, reason)``: the two paths, or None and why they are unusable."""
    import importlib.util

    if importlib.util.find_spec("selenium") is None:
        return None, None, "selenium is not installed (pip install 'cortexlink[test]')"
    chrome = os.environ.get("CORTEXLINK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") \
        or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    driver = os.environ.get("CORTEXLINK_CHROMEDRIVER") or shutil.which("chromedriver") \
        or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None)
    if chrome is None or not Path(chrome).is_file():
        return None, None, "chromium not found (apt-get install chromium, or set CORTEXLINK_CHROMIUM)"
    if driver is None or not Path(driver).is_file():
        return None, None, "chromedriver not found (apt-get install chromium-driver, or set CORTEXLINK_CHROMEDRIVER)"
    return chrome, driver, None


class Browser:
    """A headless Chromium session (``driver``) with its own throw-away profile folder."""

    def __init__(self, driver: Any, profile: tempfile.TemporaryDirectory) -> None:
        self.driver = driver
        self._profile = profile

    def quit(self) -> None:
        """Close the browser and delete its profile."""
        try:
            self.driver.quit()
        finally:
            self._profile.cleanup()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.quit()


def launch(width: int = 1500, height: int = 1000, page_load_timeout_s: float = 30.0) -> Browser:
    """Start a headless Chromium with a fresh profile.

    Raises
    ------
    RuntimeError
        When chromium, chromedriver or selenium are missing (the message says which).
    """
    chrome, driver_path, reason = find_browser()
    if reason is not None:
        raise RuntimeError(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.TemporaryDirectory(prefix="cortexlink-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in HEADLESS_ARGS:
        opts.add_argument(a)
    opts.add_argument(f"--user-data-dir={profile.name}")
    opts.add_argument(f"--window-size={int(width)},{int(height)}")
    try:
        drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    except BaseException:
        profile.cleanup()
        raise
    drv.set_page_load_timeout(page_load_timeout_s)
    drv.set_script_timeout(page_load_timeout_s)
    return Browser(drv, profile)
