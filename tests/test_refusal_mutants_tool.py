"""scripts/refusal_mutants.py: which statements it changes, and how."""

from __future__ import annotations

import ast

from scripts.refusal_mutants import first_line, refusals, with_pass

SOURCE = """def check(value):
    if value is None:
        return None
    if value < 0:
        raise ValueError(f"negative: {value}")
    if value > 10:
        raise ValueError(
            "too large"
        )
    try:
        number = int(value)
    except TypeError as error:
        raise ValueError("not a number") from error
    if number == 5: return "five is refused"
    if number == 6:
        return self._refuse(request, "six")
    if number == 7:
        return
    return number > 1
"""


def test_every_refusal_is_chosen_and_nothing_else() -> None:
    chosen = [first_line(SOURCE, refusal) for refusal in refusals(SOURCE)]
    assert chosen == [
        "return None",
        'raise ValueError(f"negative: {value}")',
        "raise ValueError(",
        'raise ValueError("not a number") from error',
        'return "five is refused"',
        'return self._refuse(request, "six")',
    ]


def test_a_refusal_becomes_pass_where_it_stood() -> None:
    one_line, many_lines, after_a_colon = (refusals(SOURCE)[index] for index in (0, 2, 4))
    assert with_pass(SOURCE, one_line).split("\n")[2] == "        pass"
    changed = with_pass(SOURCE, many_lines)
    assert changed.split("\n")[5:8] == ["    if value > 10:", "        pass", "    try:"]
    assert "    if number == 5: pass\n" in with_pass(SOURCE, after_a_colon)


def test_every_changed_version_is_still_python_and_loses_only_its_refusal() -> None:
    found = refusals(SOURCE)
    for refusal in found:
        changed = with_pass(SOURCE, refusal)
        ast.parse(changed)
        assert len(refusals(changed)) == len(found) - 1
