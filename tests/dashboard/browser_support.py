"""Headless Chromium for the dashboard tests: Debian's `chromium` and `chromium-driver` driven by Selenium.

Nothing is downloaded at test time: scripts/test installs the two Debian packages when they are missing
(scripts/_env.sh, `saas_ensure_system_packages`), and the driver is given by path so Selenium Manager stays idle.
Chromium starts with the flags this machine needs (no sandbox as root, no GPU, no background network) and a fresh
profile folder each time."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def start_chromium(profile: Path, downloads: Path) -> Any:
    """A new headless Chromium session with an empty profile at `profile`, saving downloads to `downloads`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for program in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(program), (
            f"{program} is missing: apt-get install chromium chromium-driver (scripts/test does)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    downloads.mkdir(parents=True, exist_ok=True)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    return driver
