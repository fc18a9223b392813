"""Startup failures an operator can act on: one clear line naming the config key, no traceback."""

from __future__ import annotations

import errno
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from authproxy.oidc.client import describe_transport_error
from authproxy.server import describe_bind_error
from tests.support.net import connection_key, free_port
from tests.support.tls import self_signed


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process (this test) already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def run(
    tmp_path: Path, listen: int, admin: int, *args: str, listen_host: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    config = {
        "server": {"listen": f"{listen_host}:{listen}", "admin_listen": f"127.0.0.1:{admin}"},
        "session": {"store": "redis", "redis": {"url": "redis://127.0.0.1:9/0"}},
        "routes": [{"name": "app", "upstream": "http://127.0.0.1:9", "auth": "none"}],
    }
    path = tmp_path / "authproxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "authproxy", "run", "-c", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("key", ["server.listen", "server.admin_listen"])
def test_a_port_in_use_is_one_line_naming_the_key_and_exit_1(
    tmp_path: Path, taken_port: int, key: str, workers: str
) -> None:
    other = free_port()
    listen, admin = (taken_port, other) if key == "server.listen" else (other, taken_port)
    result = run(tmp_path, listen, admin, "--workers", workers, "--log-format", "text")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{key}: cannot listen on 127.0.0.1:{taken_port}: the address is already in use" in lines[0]
    assert "Traceback" not in result.stderr and "Errno" not in result.stderr


@pytest.mark.parametrize("listen_host", ["localhost", "127.1"])
def test_admin_listen_on_the_listen_address_by_another_name_is_refused_with_workers(
    tmp_path: Path, listen_host: str
) -> None:
    # "localhost:P" and "127.0.0.1:P" are one address: with --workers both listeners would take
    # the port (SO_REUSEPORT) and the public port would answer /metrics and /readyz on some connections
    port = free_port()
    result = run(tmp_path, port, port, "--workers", "2", "--log-format", "text", listen_host=listen_host)
    assert result.returncode == 2, result.stderr
    assert f"server.admin_listen: 127.0.0.1:{port} is also where server.listen serves" in result.stderr
    assert "listening" not in result.stderr, "no worker may serve"
    assert "Traceback" not in result.stderr


def _refused_certificate(code: int, message: str) -> ssl.SSLCertVerificationError:
    """A certificate error as Python's ssl raises it, with OpenSSL's X509_V_ERR code."""
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_code = code
    error.verify_message = message
    return error


@pytest.mark.parametrize(
    ("error", "words"),
    [
        pytest.param(OSError(errno.EADDRINUSE, "Address in use"), "already in use", id="in-use"),
        pytest.param(OSError(errno.EACCES, "Permission denied"), "permission denied (ports below 1024", id="perm"),
        pytest.param(OSError(errno.EADDRNOTAVAIL, "Cannot assign"), "no network interface", id="no-such-address"),
        pytest.param(socket.gaierror(socket.EAI_NONAME, "Name unknown"), "does not resolve", id="bad-host"),
    ],
)
def test_bind_failures_are_described_in_plain_words(error: OSError, words: str) -> None:
    assert words in describe_bind_error(error)


# ---------------------------------------------------------------- provider discovery


def check_online(tmp_path: Path, issuer: str) -> subprocess.CompletedProcess[str]:
    config = {
        "server": {"public_url": "https://app.example.com"},
        "provider": {"issuer": issuer, "client_id": "app", "client_secret": "x", "timeout": "2s"},
        "session": {"secrets": ["k" * 32]},
        "routes": [{"name": "app", "upstream": "http://127.0.0.1:9"}],
    }
    path = tmp_path / "authproxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "authproxy", "check", "-c", str(path), "--online"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_discovery_failure_names_the_url_and_says_connection_refused(tmp_path: Path) -> None:
    issuer = f"http://127.0.0.1:{free_port()}"
    result = check_online(tmp_path, issuer)
    assert result.returncode == 1
    problem = next(line for line in result.stderr.splitlines() if line.startswith("provider.issuer:"))
    assert f"{issuer}/.well-known/openid-configuration" in problem
    assert "connection refused" in problem
    assert "Error" not in problem, "a Python class name is no explanation"


@pytest.fixture
def hanging_up_server() -> Iterator[int]:
    """A loopback server that accepts each connection and closes it without a word."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stopped = threading.Event()

    def serve() -> None:
        while not stopped.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.recv(65536)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stopped.set()
    thread.join(timeout=5)
    listener.close()


def test_discovery_failure_when_the_server_hangs_up_says_so_in_words(tmp_path: Path, hanging_up_server: int) -> None:
    issuer = f"http://127.0.0.1:{hanging_up_server}"
    result = check_online(tmp_path, issuer)
    assert result.returncode == 1
    problem = next(line for line in result.stderr.splitlines() if line.startswith("provider.issuer:"))
    assert f"{issuer}/.well-known/openid-configuration" in problem
    assert "closed the connection without answering" in problem
    assert "Error" not in problem


@pytest.mark.parametrize(
    ("error", "words"),
    [
        pytest.param(
            aiohttp.ClientConnectorError(connection_key(), ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
            "connection refused",
            id="refused",
        ),
        pytest.param(
            aiohttp.ClientConnectorError(
                connection_key(), socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            ),
            "the host name does not resolve",
            id="dns",
        ),
        pytest.param(
            aiohttp.ClientConnectorCertificateError(
                connection_key(), ssl.SSLCertVerificationError("self-signed certificate")
            ),
            "TLS certificate is not trusted (for a private CA, set provider.ca_file)",
            id="untrusted-certificate",
        ),
        pytest.param(
            aiohttp.ClientConnectorCertificateError(connection_key(), _refused_certificate(10, "expired")),
            "its TLS certificate has expired",
            id="expired-certificate",
        ),
        pytest.param(
            aiohttp.ClientConnectorCertificateError(connection_key(), _refused_certificate(62, "Hostname mismatch")),
            "its TLS certificate is for another host name",
            id="certificate-for-another-name",
        ),
        pytest.param(aiohttp.ServerDisconnectedError(), "closed the connection without answering", id="hang-up"),
        pytest.param(aiohttp.ClientPayloadError("cut"), "the answer was cut off", id="cut-off"),
        pytest.param(ssl.SSLError(1, "[SSL] record layer failure"), "the TLS handshake failed", id="tls-after-connect"),
        pytest.param(aiohttp.InvalidURL("http://idp.example.com:99999/"), "not a usable URL", id="bad-url"),
        pytest.param(OSError(errno.EHOSTUNREACH, "No route to host"), "the host is unreachable", id="os-error"),
        pytest.param(aiohttp.ClientError(), "the connection failed", id="anything-else"),
    ],
)
def test_provider_transport_failures_are_described_in_plain_words(error: BaseException, words: str) -> None:
    assert words in describe_transport_error(error)


def test_a_yaml_error_is_reported_without_a_python_class_name(tmp_path: Path) -> None:
    path = tmp_path / "authproxy.yaml"
    path.write_text("server: {listen: 127.0.0.1:1}\nwhen: 2001-13-01\n")  # month 13: PyYAML's ValueError
    result = subprocess.run(
        [sys.executable, "-m", "authproxy", "check", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("(file): not valid YAML:"), result.stderr
    assert "ValueError" not in result.stderr and "Traceback" not in result.stderr


PROVIDER = {"issuer": "https://idp.example.com", "client_id": "app", "client_secret": "x"}


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        pytest.param(lambda f: {"provider": {**PROVIDER, "ca_file": f}}, "provider.ca_file:", id="ca-bundle"),
        pytest.param(
            lambda f: {"provider": {**PROVIDER, "client_auth_method": "private_key_jwt", "private_key_file": f}},
            "provider.private_key_file:",
            id="client-assertion-key",
        ),
        pytest.param(
            lambda f: {"identity_jwt": {"signing_key_file": f}}, "identity_jwt.signing_key_file:", id="signing-key"
        ),
        pytest.param(lambda f: {"server": {"tls": {"cert_file": f, "key_file": f}}}, "server.tls:", id="tls"),
    ],
)
@pytest.mark.parametrize("command", ["check", "run"])
def test_a_key_or_certificate_file_that_is_not_one_is_a_config_error_for_check_and_run(
    tmp_path: Path, section: Any, expected: str, command: str
) -> None:
    # readable, so the schema passes it: only loading it shows it is not a key or a bundle
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("this is not a PEM file\n")
    config = {
        "server": {"listen": f"127.0.0.1:{free_port()}", "admin_listen": f"127.0.0.1:{free_port()}"},
        "session": {"secrets": ["s" * 32], "cookie": {"secure": False}},
        "routes": [{"name": "app", "upstream": "http://127.0.0.1:9", "auth": "none"}],
    }
    for key, value in section(str(not_pem)).items():
        config[key] = {**config.get(key, {}), **value}
    if "provider" in config:
        config["server"]["public_url"] = "https://app.example.com"
    path = tmp_path / "authproxy.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "authproxy", command, "-c", str(path), *(("--log-format", "text") * (command == "run"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["check", "run"])
def test_an_encrypted_tls_key_is_a_config_error_not_a_passphrase_prompt(tmp_path: Path, command: str) -> None:
    # OpenSSL's default is to ask for the passphrase on the terminal: start-up would hang
    # waiting for it (or, without a terminal, fail with a bare "Invalid argument")
    cert, key = self_signed(tmp_path)
    encrypted = serialization.load_pem_private_key(key.read_bytes(), password=None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"a passphrase"),
    )
    key.write_bytes(encrypted)
    config = {
        "server": {
            "listen": f"127.0.0.1:{free_port()}",
            "admin_listen": f"127.0.0.1:{free_port()}",
            "tls": {"cert_file": str(cert), "key_file": str(key)},
        },
        "session": {"secrets": ["s" * 32]},
        "routes": [{"name": "app", "upstream": "http://127.0.0.1:9", "auth": "none"}],
    }
    path = tmp_path / "authproxy.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "authproxy", command, "-c", str(path), *(("--log-format", "text") * (command == "run"))],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "server.tls.key_file: the key is encrypted" in result.stderr, result.stderr
    assert "pass phrase" not in result.stderr and "Traceback" not in result.stderr, result.stderr
