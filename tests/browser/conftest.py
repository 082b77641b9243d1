"""The browser tier (``make test-browser``): pages rendered by a real headless Chromium.

Collected only when ``TOKEN_FETCHER_BROWSER`` names the browser to run (the make target
sets it), so ``make test`` never starts a browser, even where one is installed.
"""

from __future__ import annotations

import os
import shutil

import pytest

BROWSER = os.environ.get("TOKEN_FETCHER_BROWSER", "")
collect_ignore_glob = ["test_*.py"] if not BROWSER else []


@pytest.fixture(scope="session")
def browser() -> str:
    path = shutil.which(BROWSER)
    if path is None:
        pytest.fail(f"TOKEN_FETCHER_BROWSER={BROWSER!r} is not a program on PATH")
    return path
