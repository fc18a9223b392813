"""A real Debian ``nginx`` on a free 127.0.0.1 port, for the forward-auth tests (tests only).

    conf = render_example(EXAMPLE.read_text(), listen=port, authproxy="127.0.0.1:4180", app="127.0.0.1:8080")
    with run_nginx(conf, tmp_path, port) as nginx:
        ... nginx.url, nginx.error_log()

``render_example`` turns ``deploy/nginx/authproxy.conf`` (what operators copy) into a config for
this machine by replacing only its addresses, each of which must occur exactly once, so the test
runs the example itself and fails loudly if the example changes shape. ``run_nginx`` wraps a
server block in a minimal main config whose pid file, logs and temp paths all live in the test's
directory, runs ``nginx -p <dir> -c <conf> -g 'daemon off;'`` and kills it by PID at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

EXAMPLE: Final = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "authproxy.conf"
START_TIMEOUT: Final = 10.0

# The addresses in the example, as an operator would edit them.
EXAMPLE_LISTEN: Final = "listen 80;"
EXAMPLE_AUTHPROXY: Final = "server 127.0.0.1:4180;"
EXAMPLE_APP: Final = "server 127.0.0.1:8080;"

_MAIN_CONF: Final = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{server}
}}
"""


def nginx_binary() -> str:
    """The path of ``nginx``; fails the test with the fix when it is missing."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        pytest.fail("nginx is not installed: `apt-get install -y nginx` (or `make system-deps`)")
    return binary


def _replace_once(text: str, old: str, new: str) -> str:
    count = text.count(old)
    if count != 1:
        raise AssertionError(f"the nginx example should contain {old!r} exactly once, found {count}")
    return text.replace(old, new)


def render_example(example: str, *, listen: int, authproxy: str, app: str) -> str:
    """The example with this test's addresses: nginx on 127.0.0.1:``listen``, the two upstreams."""
    text = _replace_once(example, EXAMPLE_LISTEN, f"listen 127.0.0.1:{listen};")
    text = _replace_once(text, EXAMPLE_AUTHPROXY, f"server {authproxy};")
    return _replace_once(text, EXAMPLE_APP, f"server {app};")


def main_config(server_block: str, directory: Path) -> str:
    """``server_block`` (plus its upstreams) inside a main config confined to ``directory``."""
    # As root, nginx's workers would otherwise switch to "nobody", who cannot use a 0700 tmp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    indented = "\n".join("    " + line if line else line for line in server_block.splitlines())
    return _MAIN_CONF.format(user=user, dir=directory, server=indented)


@dataclass
class Nginx:
    """One nginx master process (and its worker) serving on 127.0.0.1:``port``."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        # SIGQUIT would wait for open keep-alive connections; the master takes its worker along on TERM
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_nginx(server_block: str, directory: Path, port: int) -> Nginx:
    """Write the config, check it with ``nginx -t``, start nginx and wait until it accepts connections."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(main_config(server_block, directory))
    command = [nginx_binary(), "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30, check=False)
    if checked.returncode != 0:
        raise AssertionError(f"nginx -t refused the config:\n{checked.stderr}\n{conf.read_text()}")
    with (directory / "nginx.out").open("wb") as out:
        process = subprocess.Popen([*command, "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT)
    nginx = Nginx(process, port, directory)
    deadline = time.monotonic() + START_TIMEOUT
    while not _listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            nginx.kill()
            raise RuntimeError(f"nginx did not start:\n{nginx.error_log()}")
        time.sleep(0.05)
    return nginx


@contextmanager
def run_nginx(server_block: str, directory: Path, port: int) -> Iterator[Nginx]:
    """nginx serving ``server_block`` until the block ends; killed by its PID."""
    nginx = start_nginx(server_block, directory, port)
    try:
        yield nginx
    finally:
        nginx.kill()
