"""The commands of SPEC section 1: exit codes and what they print."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SECRET = "k" * 32
VALID = f"""
server: {{public_url: https://app.example.com}}
provider: {{issuer: https://idp.example.com, client_id: app, client_secret: x}}
session: {{secrets: ["{SECRET}"]}}
routes:
  - name: app
    upstream: http://127.0.0.1:8080
"""


def authproxy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authproxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "authproxy.yaml"
    path.write_text(text)
    return str(path)


def test_check_accepts_the_example_with_a_one_line_summary() -> None:
    result = authproxy("check", "-c", str(ROOT / "config" / "authproxy.example.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("ok: 2 routes")


def test_check_config_from_environment_variable(tmp_path: Path) -> None:
    result = authproxy("check", env={"AUTHPROXY_CONFIG": write(tmp_path, VALID)})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("text", "env", "workers", "expected"),
    [
        pytest.param(VALID + "    tiemout: 5s\n", {}, "1", "routes[0].tiemout: unknown key", id="unknown-key"),
        pytest.param(VALID.replace("http://127.0.0.1:8080", "not-a-url"), {}, "1", "routes[0].upstream:", id="bad-url"),
        pytest.param(VALID + "    timeout: soon\n", {}, "1", "routes[0].timeout:", id="bad-duration"),
        pytest.param(
            VALID.replace("client_id: app", "client_id: '${SSO_ID}'"),
            {},
            "1",
            "provider.client_id: environment variable SSO_ID is not set",
            id="missing-env",
        ),
        pytest.param(VALID.replace(SECRET, "tooshort"), {}, "1", "session.secrets[0]:", id="short-secret"),
        pytest.param(VALID, {}, "2", "session.store:", id="memory-store-with-2-workers"),
    ],
)
def test_check_exits_2_naming_the_yaml_path(
    tmp_path: Path, text: str, env: dict[str, str], workers: str, expected: str
) -> None:
    result = authproxy("check", "-c", write(tmp_path, text), "--workers", workers, env=env)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_memory_store_with_two_workers_and_serves_nothing(tmp_path: Path) -> None:
    result = authproxy("run", "-c", write(tmp_path, VALID), "--workers", "2")
    assert result.returncode == 2
    assert "session.store:" in result.stderr and "--workers 2" in result.stderr


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    result = authproxy("check", "-c", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_no_config_file_at_all_says_how_to_give_one() -> None:
    result = authproxy("check")
    assert result.returncode == 2
    assert result.stderr.startswith("(command line): no configuration file: give -c FILE or set AUTHPROXY_CONFIG")


def test_gen_secret_prints_32_random_bytes_base64url() -> None:
    first, second = authproxy("gen-secret").stdout.strip(), authproxy("gen-secret").stdout.strip()
    assert first != second
    assert len(base64.urlsafe_b64decode(first + "=")) == 32


def test_check_online_fails_with_exit_1_when_the_provider_is_unreachable(tmp_path: Path) -> None:
    from tests.support.net import free_port

    text = VALID.replace("https://idp.example.com", f"http://127.0.0.1:{free_port()}")
    result = authproxy("check", "-c", write(tmp_path, text), "--online")
    assert result.returncode == 1
    assert "provider.issuer: discovery failed" in result.stderr


def test_check_online_passes_against_a_live_provider(tmp_path: Path) -> None:
    from authproxy.demo.provider import DemoProvider
    from tests.support.fault_provider import serve_app
    from tests.support.net import free_port

    port = free_port()
    provider = DemoProvider(f"http://127.0.0.1:{port}", [])
    with serve_app(provider.create_app(), "127.0.0.1", port) as issuer:
        result = authproxy("check", "-c", write(tmp_path, VALID.replace("https://idp.example.com", issuer)), "--online")
    assert result.returncode == 0, result.stderr
    assert provider.stats.jwks_requests == 1
