"""panva/oidc-provider, the OpenID Certified provider, as a real peer (``node server.mjs``).

    def test_x(node_provider):
        op = node_provider(redirect_uris=[proxy_url + "/oauth2/callback"], access_token_ttl=5)
        op.issuer, op.client("basic"), op.counters()["refresh_grants"]

The factory writes a JSON config, runs ``npm ci`` in tests/support/oidc_provider when its
node_modules is missing (from the committed package-lock.json, so a fresh clone is reproducible),
starts the provider on 127.0.0.2 and a free port (docs/testing.md: another loopback address than the
proxy keeps cookies apart), waits for its discovery document (a start that hangs is ended and tried
once more; the failure names each attempt's process state), and kills every process it started by
PID at teardown. Default clients, one per token endpoint auth method, all with PKCE and the
refresh_token grant: ``authproxy-basic`` (client_secret_basic), ``authproxy-post``
(client_secret_post), ``authproxy-public`` (none). Default users: the demo users.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from authproxy.demo.users import DEMO_USERS
from tests.support.net import free_port, proc_stat_fields, stat_cpu_seconds

PROVIDER_DIR: Final = Path(__file__).parent / "oidc_provider"
HOST: Final = "127.0.0.2"
CLIENT_SECRET: Final = "node-provider-client-secret-0123456789abcdef"
START_TIMEOUT: Final = 30.0
START_ATTEMPTS: Final = 2
AUTH_METHOD_BY_KIND: Final = {
    "basic": "client_secret_basic",
    "post": "client_secret_post",
    "public": "none",
}


def ensure_node_modules() -> None:
    """``npm ci`` once (under a lock, in case of parallel test processes) when not installed."""
    if (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: Node.js >= 20 with npm is needed for the oidc-provider tests")
    lock_path = Path(tempfile.gettempdir()) / "authproxy-oidc-provider-npm.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            return
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=PROVIDER_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci in {PROVIDER_DIR} failed:\n{result.stdout}\n{result.stderr}")


def node_client(
    client_id: str,
    *,
    auth_method: str = "client_secret_basic",
    client_secret: str | None = CLIENT_SECRET,
    redirect_uris: Sequence[str],
    post_logout_redirect_uris: Sequence[str] = (),
    backchannel_logout_uri: str | None = None,
    refresh_tokens: bool = True,
) -> dict[str, Any]:
    """One client in oidc-provider's metadata format (RFC 7591 names)."""
    client: dict[str, Any] = {
        "client_id": client_id,
        "token_endpoint_auth_method": auth_method,
        "redirect_uris": list(redirect_uris),
        "post_logout_redirect_uris": list(post_logout_redirect_uris),
        "grant_types": ["authorization_code", *(["refresh_token"] if refresh_tokens else [])],
        "response_types": ["code"],
    }
    if auth_method != "none":
        client["client_secret"] = client_secret
    if backchannel_logout_uri is not None:
        client["backchannel_logout_uri"] = backchannel_logout_uri
        client["backchannel_logout_session_required"] = True
    return client


def default_clients(
    redirect_uris: Sequence[str],
    post_logout_redirect_uris: Sequence[str] = (),
    backchannel_logout_uri: str | None = None,
) -> list[dict[str, Any]]:
    return [
        node_client(
            f"authproxy-{kind}",
            auth_method=method,
            redirect_uris=redirect_uris,
            post_logout_redirect_uris=post_logout_redirect_uris,
            backchannel_logout_uri=backchannel_logout_uri,
        )
        for kind, method in AUTH_METHOD_BY_KIND.items()
    ]


@dataclass
class NodeProvider:
    """One running oidc-provider process."""

    issuer: str
    port: int
    clients: list[dict[str, Any]]
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, kind: str = "basic") -> dict[str, Any]:
        """A registered client by auth kind (basic, post, public) or by client_id."""
        wanted = f"authproxy-{kind}" if kind in AUTH_METHOD_BY_KIND else kind
        return next(client for client in self.clients if client["client_id"] == wanted)

    def counters(self) -> dict[str, int]:
        """``refresh_grants``, ``code_grants``, ``revocations``, ``token_requests`` ..."""
        with urllib.request.urlopen(self.issuer + "/__test/counters", timeout=5) as answer:
            counters: dict[str, int] = json.load(answer)
        return counters

    def reset_counters(self) -> None:
        request = urllib.request.Request(self.issuer + "/__test/counters", method="DELETE")
        with urllib.request.urlopen(request, timeout=5):
            pass

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def _serves_discovery(provider: NodeProvider) -> bool:
    """Whether discovery answered 200 within START_TIMEOUT; a provider that exits fails the test."""
    deadline = time.monotonic() + START_TIMEOUT
    url = provider.issuer + "/.well-known/openid-configuration"
    while time.monotonic() < deadline:
        if provider.process.poll() is not None:
            pytest.fail(f"oidc-provider exited with {provider.process.returncode}:\n{provider.logs()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    return False


def _process_state(pid: int) -> str:
    """The kernel's view of a process that hangs: its state and CPU seconds, for the failure text."""
    fields = proc_stat_fields(pid)
    if fields is None:
        return "gone"
    return f"state {fields[0]}, {stat_cpu_seconds(fields):.2f} s of CPU"


def start_node_provider(
    directory: Path,
    *,
    clients: Sequence[Mapping[str, Any]] | None = None,
    redirect_uris: Sequence[str] = (),
    post_logout_redirect_uris: Sequence[str] = (),
    backchannel_logout_uri: str | None = None,
    users: Mapping[str, Mapping[str, Any]] | None = None,
    access_token_ttl: int = 5,
    id_token_ttl: int = 3600,
    refresh_token_ttl: int = 86400,
    port: int | None = None,
) -> NodeProvider:
    """A started provider; the caller stops it (the fixture does)."""
    ensure_node_modules()
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: Node.js >= 20 is needed for the oidc-provider tests")
    if clients is None:
        if not redirect_uris:
            raise ValueError("give redirect_uris (for the default clients) or clients")
        clients = default_clients(redirect_uris, post_logout_redirect_uris, backchannel_logout_uri)
    if users is None:
        users = {user.username: user.claims() for user in DEMO_USERS}
    port = port or free_port(HOST)
    issuer = f"http://{HOST}:{port}"
    client_list = [dict(client) for client in clients]
    config = {
        "issuer": issuer,
        "host": HOST,
        "port": port,
        "clients": client_list,
        "users": {name: dict(claims) for name, claims in users.items()},
        "access_token_ttl": access_token_ttl,
        "id_token_ttl": id_token_ttl,
        "refresh_token_ttl": refresh_token_ttl,
    }
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / f"oidc-provider-{port}.json"
    config_path.write_text(json.dumps(config, indent=2))
    hung: list[str] = []
    # a start that hangs (seen once on a loaded CI machine, before "listening") is retried once
    for attempt in range(1, START_ATTEMPTS + 1):
        log_path = directory / f"oidc-provider-{port}-{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [node, str(PROVIDER_DIR / "server.mjs"), str(config_path)],
                cwd=PROVIDER_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NODE_ENV": "test"},
            )
        provider = NodeProvider(issuer, port, client_list, process, config_path, log_path)
        if _serves_discovery(provider):
            return provider
        hung.append(f"attempt {attempt} ({_process_state(process.pid)}):\n{provider.logs()}")
        provider.stop()
    pytest.fail(f"oidc-provider did not serve discovery within {START_TIMEOUT}s:\n" + "\n".join(hung))


@pytest.fixture
def node_provider(tmp_path: Path) -> Iterator[Callable[..., NodeProvider]]:
    """Factory: ``node_provider(redirect_uris=[...], access_token_ttl=5, ...)`` (see above)."""
    started: list[NodeProvider] = []

    def start(**options: Any) -> NodeProvider:
        provider = start_node_provider(tmp_path / "oidc-provider", **options)
        started.append(provider)
        return provider

    yield start
    for provider in started:
        provider.stop()
