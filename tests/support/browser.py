"""A real browser for the newcomer tests: Debian's headless ``chromium`` driven by Playwright.

    async with open_chromium(tmp_path / "profile") as page:
        await page.goto(url)
        await artifacts.screenshot(page, "login-page")

Playwright's own browser download cannot run here (docs/testing.md, Browsers), so the browser is the
distribution's ``/usr/bin/chromium`` (``executable_path``) with the launch arguments docs/testing.md
lists and a fresh profile directory per test (``launch_persistent_context``: Playwright refuses a
``--user-data-dir`` argument). Teardown closes the context and Playwright's driver, then ends by
PID any chromium process still running on that profile, so no browser outlives its test.

Screenshots go to ``test-artifacts/browser/<test>/`` at the repository root (gitignored), kept
after the run so a person can look at what a newcomer sees.

``run_demo`` starts ``authproxy demo`` as a subprocess on a free port and reads the URLs it
prints, since the demo's provider listens on a port only the banner names.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import pytest

from tests.support.net import free_port

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM: Final = os.environ.get("AUTHPROXY_TEST_CHROMIUM", "/usr/bin/chromium")
# docs/testing.md, Browsers: what Debian's chromium needs to run headless as root in a container
LAUNCH_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
ARTIFACTS_ROOT: Final = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
# one navigation (redirect chain included) or one expectation; local servers answer in ms
STEP_TIMEOUT_MS: Final = 15_000
VIEWPORT: Final = {"width": 1100, "height": 800}
DEMO_START_TIMEOUT: Final = 20.0
_BANNER_URL_RE: Final = re.compile(r"^\s*(open|provider|admin)\s+(http://\S+)", re.MULTILINE)


def require_chromium() -> None:
    """Fail (not skip) with the fix when the browser or Playwright is missing: CI must run these."""
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.fail("the playwright Python package is missing: pip install -e '.[dev]'")


def _profile_pids(profile: Path) -> list[int]:
    """PIDs of processes whose command line names ``profile`` (this test's browser only)."""
    marker = str(profile).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


def _end_leftover_browsers(profile: Path) -> None:
    for pid in _profile_pids(profile):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def open_chromium(profile: Path) -> AsyncIterator[Page]:
    """One headless chromium with a fresh profile at ``profile``; yields its first tab."""
    require_chromium()
    from playwright.async_api import async_playwright

    profile.mkdir(parents=True, exist_ok=True)
    try:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=CHROMIUM,
                args=list(LAUNCH_ARGS),
                viewport={"width": VIEWPORT["width"], "height": VIEWPORT["height"]},
            )
            try:
                context.set_default_timeout(STEP_TIMEOUT_MS)
                context.set_default_navigation_timeout(STEP_TIMEOUT_MS)
                page = context.pages[0] if context.pages else await context.new_page()
                yield page
            finally:
                await context.close()
    finally:
        _end_leftover_browsers(profile)


@dataclass
class Artifacts:
    """Numbered screenshots of one test under ``test-artifacts/browser/<test>/``."""

    directory: Path
    count: int = 0

    @classmethod
    def for_test(cls, node_name: str) -> Artifacts:
        directory = ARTIFACTS_ROOT / re.sub(r"[^A-Za-z0-9_.-]+", "_", node_name)
        # a rerun replaces the old pictures rather than mixing with them
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return cls(directory)

    async def screenshot(self, page: Page, name: str) -> Path:
        self.count += 1
        path = self.directory / f"{self.count:02d}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path


@dataclass
class Demo:
    """A running ``authproxy demo``: the URLs its banner printed."""

    url: str
    provider_url: str
    admin_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def _banner_urls(text: str) -> dict[str, str]:
    """``{"open": origin, "provider": origin, "admin": origin}`` from the demo's banner."""
    found = {}
    for name, url in _BANNER_URL_RE.findall(text):
        parts = urlsplit(url)
        found[name] = f"{parts.scheme}://{parts.netloc}"
    return found


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@contextlib.contextmanager
def run_demo(directory: Path) -> Iterator[Demo]:
    """``authproxy demo --port <free>`` until the block ends; waits until its public page answers."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"demo-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "authproxy", "demo", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + DEMO_START_TIMEOUT
        urls: dict[str, str] = {}
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"authproxy demo exited with {process.returncode}:\n{log_path.read_text()}")
            urls = _banner_urls(log_path.read_text(errors="replace"))
            if {"open", "provider", "admin"} <= urls.keys():
                with (
                    contextlib.suppress(urllib.error.URLError, OSError),
                    urllib.request.urlopen(urls["open"] + "/public/", timeout=1),
                ):
                    break
            time.sleep(0.1)
        else:
            pytest.fail(f"authproxy demo did not start within {DEMO_START_TIMEOUT}s:\n{log_path.read_text()}")
        yield Demo(urls["open"], urls["provider"], urls["admin"], process, log_path)
    finally:
        _stop(process)


def starts_with(url: str) -> re.Pattern[str]:
    """A URL pattern for Playwright's ``to_have_url``: anything under ``url``."""
    return re.compile("^" + re.escape(url))


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Artifacts:
    """Numbered screenshots of the requesting test."""
    return Artifacts.for_test(request.node.name)


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    """A tab of a fresh headless chromium, closed with the test."""
    async with open_chromium(tmp_path / "chromium-profile") as tab:
        yield tab
