"""Which refusals in a module no test notices: each one turned into a no-op, the tests run.

    .venv/bin/python scripts/refusal_mutants.py authproxy/oidc/tokens.py tests/test_id_token.py
    .venv/bin/python scripts/refusal_mutants.py authproxy/oidc/flow.py tests/test_login.py -k bad_state

Every one-line ``raise SomeError(...)``, ``return None``, ``return False``, ``return True`` and
``return "reason"`` of the module is replaced, one at a time, by ``pass``, and the given tests
run against that version (``pytest -x``; arguments after the module are pytest's). A line whose
change leaves the tests green is printed as SURVIVED: either no test depends on that check, or
the change makes no difference (a ``return None`` that ends a function, a check another one
repeats). Each survivor needs a look, not necessarily a test.

The work happens in a temporary ``git worktree`` of HEAD, removed at the end, so the checkout
you run it from is never modified (and uncommitted changes are not part of the run).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
REFUSAL: Final = re.compile(
    r"^(\s+)(return None|return False|return True|return \"[^\"]*\"|raise \w+\(.*\)( from e)?)$"
)
PYTEST_TIMEOUT: Final = 900  # seconds, for one run of the chosen tests


def refusal_lines(source: list[str]) -> list[int]:
    """Indexes of the lines that are whole one-line refusals (brackets balanced)."""
    return [index for index, line in enumerate(source) if REFUSAL.match(line) and line.count("(") == line.count(")")]


def with_pass(source: list[str], index: int) -> str:
    """``source`` with line ``index`` replaced by ``pass`` at the same indentation."""
    line = source[index]
    changed = list(source)
    changed[index] = line[: len(line) - len(line.lstrip())] + "pass"
    return "\n".join(changed)


def tests_pass(worktree: Path, pytest_args: list[str]) -> bool:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *pytest_args],
        cwd=worktree,
        capture_output=True,
        timeout=PYTEST_TIMEOUT,
    )
    return run.returncode == 0


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
            source = original.split("\n")
            lines = refusal_lines(source)
            survivors = 0
            for index in lines:
                target.write_text(with_pass(source, index))
                try:
                    caught = not tests_pass(worktree, pytest_args)
                finally:
                    target.write_text(original)
                survivors += not caught
                verdict = "caught" if caught else "SURVIVED"
                print(f"{module}:{index + 1}: {verdict}: {source[index].strip()}", flush=True)
            print(f"{survivors} of {len(lines)} changes survived")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
