"""The install path the README gives: ``pip install .`` yields a bare ``authproxy`` command that
carries everything it needs (templates included), independent of the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_pip_install_gives_a_working_authproxy_command(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "authproxy", source / "authproxy", ignore=shutil.ignore_patterns("__pycache__"))
    prefix = tmp_path / "prefix"
    # the dependencies are those of this environment already; the package itself is built afresh.
    # --ignore-installed: pip would otherwise uninstall this environment's own (editable) copy
    # first, and `make demo` or `make bench` after `make test` would find no authproxy
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--ignore-installed",
            "--prefix",
            str(prefix),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    command = prefix / "bin" / "authproxy"
    assert command.is_file(), "pip should install the authproxy console script"
    site = next(prefix.glob("lib/python*/site-packages"))
    env = {"PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(site)}
    where = subprocess.run(
        ["authproxy", "--version"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    assert where.returncode == 0 and where.stdout.startswith("authproxy "), where.stderr
    assert (site / "authproxy" / "pages" / "error.html").is_file(), "the HTML templates are package data"
    imported = subprocess.run(
        [sys.executable, "-c", "import authproxy; print(authproxy.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert imported.stdout.strip().startswith(str(site)), "the command must run the installed copy"
    checked = subprocess.run(
        ["authproxy", "check", "-c", str(ROOT / "config" / "authproxy.example.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stderr


def test_installing_elsewhere_leaves_this_environments_authproxy_in_place(tmp_path: Path) -> None:
    test_pip_install_gives_a_working_authproxy_command(tmp_path)
    still = subprocess.run(
        [sys.executable, "-c", "import authproxy, sys; sys.stdout.write(authproxy.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # not the repository: its folder on sys.path would hide a missing install
    )
    assert still.returncode == 0, still.stderr[-2000:]
    assert still.stdout.startswith(str(ROOT))
