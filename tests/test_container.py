"""The container image (SPEC section 6): non-root, a health check, configuration from a mounted
file and secrets from mounted files.

The Dockerfile is read on every run. Building and running the image needs a container engine
(Docker or Podman) that answers and can get the ``python:3.11-slim-bookworm`` base image; where there is
none, that test is skipped and says why (a skip is never a pass).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.net import free_port

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile"
BASE_IMAGE = "python:3.11-slim-bookworm"


def instructions(stage: str = "final") -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile's last stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), rest.strip()))
    return stages[-1]


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [args for keyword, args in instructions() if keyword == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "a numeric non-root uid (Kubernetes runAsNonRoot checks it)"


def test_the_image_has_a_health_check_on_the_admin_listener() -> None:
    checks = [args for keyword, args in instructions() if keyword == "HEALTHCHECK"]
    assert checks and "NONE" not in checks[-1].upper()
    env = " ".join(args for keyword, args in instructions() if keyword == "ENV")
    assert "AUTHPROXY_HEALTH_URL=http://127.0.0.1:9180/healthz" in env
    assert "AUTHPROXY_HEALTH_URL" in checks[-1]


def test_the_configuration_comes_from_a_mounted_file_and_no_secret_is_baked_in() -> None:
    env = " ".join(args for keyword, args in instructions() if keyword == "ENV")
    assert "AUTHPROXY_CONFIG=/etc/authproxy/authproxy.yaml" in env
    assert not re.search(r"(SECRET|PASSWORD|TOKEN)\w*=", env, re.IGNORECASE)
    copied = " ".join(args for keyword, args in instructions() if keyword in ("COPY", "ADD"))
    assert "yaml" not in copied and "secret" not in copied.lower()
    assert ("ENTRYPOINT", '["authproxy"]') in instructions()


# ---------------------------------------------------------------- building and running it


def container_engine() -> str:
    """A container CLI whose engine answers, or skip saying why."""
    for name in ("docker", "podman"):
        cli = shutil.which(name)
        if cli is None:
            continue
        try:
            answer = subprocess.run([cli, "info"], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            continue
        if answer.returncode == 0:
            return cli
    pytest.skip("no container engine answers here (a docker/podman client without a running engine is not enough)")


def run(cli: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cli, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[str, str]]:
    cli = container_engine()
    if (
        run(cli, "image", "inspect", BASE_IMAGE).returncode != 0
        and run(cli, "pull", BASE_IMAGE, timeout=300).returncode
    ):
        pytest.skip(f"the base image {BASE_IMAGE} is not available (no registry reachable)")
    tag = f"authproxy-test:{uuid.uuid4().hex[:12]}"
    built = run(cli, "build", "-t", tag, str(ROOT), timeout=600)
    assert built.returncode == 0, built.stderr[-4000:]
    yield cli, tag
    run(cli, "image", "rm", "-f", tag)


def wait_for(url: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.status
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    return 0


@pytest.mark.slow
def test_the_image_builds_and_serves_from_a_mounted_config_with_file_secrets(
    image: tuple[str, str], tmp_path: Path
) -> None:
    cli, tag = image
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "session_secrets").write_text("container-test-session-secret-0123456789abcdef\n")
    config = {
        "server": {"listen": "0.0.0.0:4180", "admin_listen": "0.0.0.0:9180"},
        "session": {"secrets_file": "/run/secrets/authproxy/session_secrets"},
        "routes": [{"name": "public", "upstream": "http://127.0.0.1:9", "auth": "none"}],
    }
    (tmp_path / "authproxy.yaml").write_text(yaml.safe_dump(config))
    for path in (tmp_path / "authproxy.yaml", secrets / "session_secrets"):
        path.chmod(0o644)  # readable by the image's non-root user
    secrets.chmod(0o755)
    mounts = [
        "-v", f"{tmp_path / 'authproxy.yaml'}:/etc/authproxy/authproxy.yaml:ro",
        "-v", f"{secrets}:/run/secrets/authproxy:ro",
    ]  # fmt: skip
    checked = run(cli, "run", "--rm", *mounts, tag, "check")
    assert checked.returncode == 0, checked.stderr
    port, admin = free_port(), free_port()
    name = f"authproxy-test-{uuid.uuid4().hex[:12]}"
    started = run(
        cli, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:4180", "-p", f"127.0.0.1:{admin}:9180", *mounts, tag
    )
    assert started.returncode == 0, started.stderr
    try:
        assert wait_for(f"http://127.0.0.1:{admin}/healthz") == 200, run(cli, "logs", name).stderr
        assert run(cli, "exec", name, "id", "-u").stdout.strip() == "10001"
        deadline = time.monotonic() + 60
        health = ""
        while time.monotonic() < deadline and health != "healthy":
            state = json.loads(run(cli, "inspect", name).stdout)[0]["State"]
            health = state.get("Health", {}).get("Status", "")
            time.sleep(1)
        assert health == "healthy", "the image's HEALTHCHECK should pass"
        stopped = run(cli, "stop", "-t", "30", name)
        assert stopped.returncode == 0
        exit_code = json.loads(run(cli, "inspect", name).stdout)[0]["State"]["ExitCode"]
        assert exit_code == 0, "SIGTERM should drain and exit 0"
    finally:
        run(cli, "rm", "-f", name)
