"""A real headless browser with the network off, for the pages the workflow writes (the linked map, the cards).

Debian's chromium and chromium-driver (`make install-browser`), driven by Selenium. Networking is cut twice: a
proxy that does not exist (every http, https and ws request fails) and the DevTools protocol's offline mode.
The DevTools performance log records every request the page made, so a test can assert that nothing but the
file itself was loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import pytest

CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _skip_or_fail(message: str) -> None:
    if _in_ci():
        pytest.fail(f"{message}; CI installs them (make install-browser) and must run the browser test", pytrace=False)
    pytest.skip(f"{message}; run `make install-browser` (root, apt-get) to run the browser test")


@contextlib.contextmanager
def offline_browser(width: int = 1200, height: int = 1400):
    """A headless Chromium with the network off; skips (fails in CI) where chromium, its driver or Selenium is
    missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _skip_or_fail("selenium is not installed")
    binary, driver_path = shutil.which(CHROMIUM), shutil.which(CHROMEDRIVER)
    if not binary or not driver_path:
        _skip_or_fail("chromium or chromedriver is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--proxy-server=http://127.0.0.1:9",
                     "--proxy-bypass-list=<-loopback>", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-default-apps"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                    "downloadThroughput": 0, "uploadThroughput": 0})
        yield driver
    finally:
        driver.quit()


def requested_urls(driver) -> list[str]:
    """Every URL the pages of this browser asked for so far (the DevTools performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls
