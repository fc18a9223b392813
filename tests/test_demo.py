"""``authproxy demo`` (SPEC section 1): one command, a login that works, labelled development-only."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.support.net import free_port
from tests.support.scripted_browser import ScriptedBrowser, login_demo


@pytest.fixture
def demo() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "authproxy", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/public/", timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    try:
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


async def test_demo_login_shows_the_users_identity_on_the_echo_page(demo: tuple[str, subprocess.Popen[str]]) -> None:
    url, process = demo
    async with ScriptedBrowser(user_agent=f"demo-{uuid.uuid4()}") as browser:
        page = await login_demo(browser, url + "/", "bob")
        assert page.status == 200
        assert "bob@example.com" in page.text and "X-Forwarded-User" in page.text
        assert "development only" in page.text.lower()
        json_page = await browser.get(url + "/anything?format=json")
        identity = {name.lower(): value for name, value in json_page.json()["identity_headers"]}
        assert identity["x-forwarded-user"] == "bob"
        assert identity["x-forwarded-groups"] == "developers"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "DEVELOPMENT ONLY" in output and url in output
    assert "alice" in output and "carol" in output


async def test_demo_second_app_on_another_host_name_shares_the_sign_in(
    demo: tuple[str, subprocess.Popen[str]],
) -> None:
    url, _ = demo
    wiki = url.replace("127.0.0.1", "localhost")
    async with ScriptedBrowser(user_agent=f"demo-{uuid.uuid4()}") as browser:
        page = await login_demo(browser, url + "/", "alice")
        assert page.status == 200 and "alice@example.com" in page.text
        page = await browser.get(wiki + "/notes?format=json")
        assert page.status == 200, page
        assert not page.find_form(lambda form: form.button("username") is not None)  # no second login
        identity = {name.lower(): value for name, value in page.json()["identity_headers"]}
        assert identity["x-forwarded-user"] == "alice"
        # signing out of the second app signs out of the first
        await browser.get(wiki + "/oauth2/sign_out", follow_redirects=False)
        page = await browser.get(url + "/", headers={"Accept": "application/json"}, follow_redirects=False)
        assert page.status == 401


def test_demo_on_a_port_in_use_says_so_in_one_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "authproxy", "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "--port" in result.stderr


@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1"])
def test_demo_refuses_a_port_that_is_not_one_as_a_usage_error(port: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "authproxy", "demo", "--port", port], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr, result.stderr
    assert "--port" in result.stderr
