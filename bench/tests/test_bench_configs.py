"""The servers' generated configurations are valid for the real programs (bench/configs.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from authproxy.config import load_config
from bench.configs import (
    REFRESH_EVERY_REQUEST_S,
    Client,
    apache_conf,
    authproxy_config,
    nginx_proxy_conf,
    nginx_upstream_conf,
)
from bench.suite import command_line, settings_from_env

CLIENT = Client("bench", "a-client-secret-for-the-benchmark", "http://127.0.0.1:8000/oauth2/callback")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
APACHE = shutil.which("apache2") or ("/usr/sbin/apache2" if Path("/usr/sbin/apache2").exists() else None)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
@pytest.mark.parametrize("kind", ["upstream", "proxy"])
def test_nginx_accepts_the_generated_config(tmp_path: Path, kind: str) -> None:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "temp" / sub).mkdir(parents=True)
    text = (
        nginx_upstream_conf(tmp_path, 18001, 18002, tmp_path / "big.bin", run_as_root=False)
        if kind == "upstream"
        else nginx_proxy_conf(tmp_path, 18003, 18001, run_as_root=False)
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    assert NGINX is not None
    done = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(
    APACHE is None or not Path("/usr/lib/apache2/modules/mod_auth_openidc.so").exists(),
    reason="apache2 and libapache2-mod-auth-openidc are not installed",
)
def test_apache_accepts_the_generated_config(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    conf = tmp_path / "httpd.conf"
    conf.write_text(
        apache_conf(
            tmp_path,
            port=18004,
            upstream_port=18001,
            provider_url="http://127.0.0.2:18005",
            client=CLIENT,
            passphrase="a-passphrase-for-the-benchmark",
            redis_port=18006,
            run_as_root=False,
        )
    )
    assert APACHE is not None
    done = subprocess.run([APACHE, "-t", "-f", str(conf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("refresh_every_request", [False, True], ids=["plain", "refresh-every-request"])
def test_authproxy_accepts_the_generated_config(tmp_path: Path, refresh_every_request: bool) -> None:
    tree = authproxy_config(
        port=18007,
        admin_port=18008,
        upstream_port=18001,
        provider_url="http://127.0.0.2:18005",
        client=CLIENT,
        session_secret="s" * 43,
        redis_port=18006,
        key_prefix="bench:",
        refresh_every_request=refresh_every_request,
    )
    path = tmp_path / "authproxy.yaml"
    path.write_text(yaml.safe_dump(tree))
    config = load_config(path, workers=2)
    assert config.session.store == "redis"
    assert config.session.cookie.full_name == "authproxy_session"  # plain http: no __Host- prefix
    assert (config.session.refresh_before_expiry == REFRESH_EVERY_REQUEST_S) is refresh_every_request


@pytest.mark.parametrize(
    ("env", "seconds", "rounds", "connections", "quick"),
    [
        ({}, 5.0, 3, (1, 16, 64, 256), False),
        ({"BENCH_QUICK": "1"}, 2.0, 1, (1, 16, 64, 256), True),
        ({"BENCH_QUICK": "0", "BENCH_SECONDS": "10"}, 10.0, 3, (1, 16, 64, 256), False),
        ({"BENCH_CONNECTIONS": "8, 32", "BENCH_ROUNDS": "5"}, 5.0, 5, (8, 32), False),
    ],
    ids=["default", "quick", "longer", "custom"],
)
def test_settings_from_env(
    env: dict[str, str], seconds: float, rounds: int, connections: tuple[int, ...], quick: bool
) -> None:
    settings = settings_from_env(env)
    assert (settings.seconds, settings.rounds, settings.connections, settings.quick) == (
        seconds,
        rounds,
        connections,
        quick,
    )
    # a smoke run never overwrites the committed results
    assert (settings.results_path.name == "results.md") is not quick


def test_the_results_name_the_command_with_its_bench_variables() -> None:
    env = {"PATH": "/usr/bin", "BENCH_SECONDS": "10", "BENCH_PROFILE": "10", "BENCH_CONNECTIONS": "1, 16"}
    assert command_line(env) == (
        "BENCH_CONNECTIONS='1, 16' BENCH_PROFILE=10 BENCH_SECONDS=10 .venv/bin/python bench/run.py"
    )
    assert settings_from_env({}).command == ".venv/bin/python bench/run.py"
