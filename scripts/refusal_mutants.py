"""Which refusals in a module no test notices: each one turned into a no-op, the tests run.

    .venv/bin/python scripts/refusal_mutants.py authproxy/oidc/tokens.py tests/test_id_token.py
    .venv/bin/python scripts/refusal_mutants.py authproxy/oidc/flow.py tests/test_login.py -k bad_state

Every refusal of the module is replaced, one at a time, by ``pass``, and the given tests run
against that version (``pytest -x``; arguments after the module are pytest's). A refusal is a
statement, on one line or several, as Python's own parser finds it: every ``raise``, a
``return`` of ``None``, ``False``, ``True`` or a string (a reason), and a ``return`` of a call
to something named ``*refuse*`` (a handler's refusal page). A refusal whose change leaves the
tests green is printed as SURVIVED: either no test depends on that check, or the change makes
no difference (a ``return None`` that ends a function, a check another one repeats). Each
survivor needs a look, not necessarily a test.

The work happens in a temporary ``git worktree`` of HEAD, removed at the end, so the checkout
you run it from is never modified (and uncommitted changes are not part of the run).
"""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
PYTEST_TIMEOUT: Final = 900  # seconds, for one run of the chosen tests
PYTEST_STOP_TIMEOUT: Final = 60  # seconds pytest has to end its fixtures' processes when interrupted


@dataclass(frozen=True)
class Refusal:
    """Where a refusing statement stands: lines counted from 1, columns from 0 (as ``ast`` counts)."""

    line: int
    column: int
    end_line: int
    end_column: int


def _refuses(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Raise):
        return True
    if not isinstance(statement, ast.Return) or statement.value is None:
        return False
    value = statement.value
    if isinstance(value, ast.Constant):
        return value.value is None or isinstance(value.value, bool | str)
    if isinstance(value, ast.Call):
        called = value.func
        name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
        return "refuse" in name
    return False


def refusals(text: str) -> list[Refusal]:
    """The refusing statements of the module ``text``, in the order they stand."""
    found = [
        Refusal(node.lineno, node.col_offset, node.end_lineno or node.lineno, node.end_col_offset or 0)
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.stmt) and _refuses(node)
    ]
    return sorted(found, key=lambda refusal: (refusal.line, refusal.column))


def with_pass(text: str, refusal: Refusal) -> str:
    """``text`` with the statement at ``refusal`` replaced by ``pass`` (where it began)."""
    lines = text.split("\n")
    head = lines[refusal.line - 1][: refusal.column]
    tail = lines[refusal.end_line - 1][refusal.end_column :]
    return "\n".join([*lines[: refusal.line - 1], head + "pass" + tail, *lines[refusal.end_line :]])


def first_line(text: str, refusal: Refusal) -> str:
    """The statement's first line, for the report."""
    return text.split("\n")[refusal.line - 1][refusal.column :].strip()


def tests_pass(worktree: Path, pytest_args: list[str]) -> bool:
    """Whether the tests pass in ``worktree``.

    Interrupted (Ctrl-C, or a timeout), pytest is asked to stop as Ctrl-C asks it, so that its
    fixtures end the servers and proxies they started; only one that does not stop in time is
    killed.
    """
    pytest = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *pytest_args],
        cwd=worktree,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C reaches this script only, which passes it on once
    )
    try:
        return pytest.wait(timeout=PYTEST_TIMEOUT) == 0
    except BaseException:
        pytest.send_signal(signal.SIGINT)
        try:
            pytest.wait(timeout=PYTEST_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.kill()
            pytest.wait()
        raise


def imports_from(worktree: Path) -> bool:
    """Whether ``python`` started in ``worktree`` imports authproxy from it (not from an install)."""
    found = subprocess.run(
        [sys.executable, "-c", "import authproxy; print(authproxy.__file__)"],
        cwd=worktree,
        capture_output=True,
        text=True,
    )
    return found.returncode == 0 and Path(found.stdout.strip()).resolve().is_relative_to(worktree.resolve())


def main(argv: list[str]) -> int:
    # started in the background, a shell has this process ignore SIGINT (and its pytest would
    # inherit that): take it back, so that an interrupt ends the run cleanly wherever it started
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if len(argv) < 2:
        print("usage: scripts/refusal_mutants.py MODULE.py TEST... [pytest options]", file=sys.stderr)
        return 2
    module, pytest_args = Path(argv[0]), argv[1:]
    if not (REPO / module).is_file():
        print(f"refusal_mutants: no file {module} in {REPO}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="authproxy-mutants-") as scratch:
        worktree = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(worktree), "HEAD"], check=True)
        try:
            if not imports_from(worktree):
                print("refusal_mutants: python does not import authproxy from the worktree", file=sys.stderr)
                return 2
            if not tests_pass(worktree, pytest_args):
                print("refusal_mutants: the tests fail without any change; fix them first", file=sys.stderr)
                return 2
            target = worktree / module
            original = target.read_text()
            found = refusals(original)
            survivors = 0
            for refusal in found:
                target.write_text(with_pass(original, refusal))
                try:
                    caught = not tests_pass(worktree, pytest_args)
                finally:
                    target.write_text(original)
                survivors += not caught
                verdict = "caught" if caught else "SURVIVED"
                print(f"{module}:{refusal.line}: {verdict}: {first_line(original, refusal)}", flush=True)
            print(f"{survivors} of {len(found)} changes survived")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("refusal_mutants: interrupted; the worktree and the tests' processes are gone", file=sys.stderr)
        raise SystemExit(130) from None
