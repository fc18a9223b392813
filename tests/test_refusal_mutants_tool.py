"""scripts/refusal_mutants.py: which lines it changes, and how."""

from __future__ import annotations

from scripts.refusal_mutants import refusal_lines, with_pass

SOURCE_TEXT = """def check(value):
    if value is None:
        return None
    if value < 0:
        raise ValueError(f"negative: {value}")
    if value > 10:
        raise ValueError(
            "too large"
        )
    try:
        return int(value)
    except TypeError as e:
        raise ValueError("not a number") from e
    if value == 5:
        return "five is refused"
    return True
"""
SOURCE = SOURCE_TEXT.split("\n")


def test_every_one_line_refusal_is_chosen_and_nothing_else() -> None:
    chosen = [SOURCE[index].strip() for index in refusal_lines(SOURCE)]
    assert chosen == [
        "return None",
        'raise ValueError(f"negative: {value}")',
        'raise ValueError("not a number") from e',
        'return "five is refused"',
        "return True",
    ]


def test_a_refusal_becomes_pass_at_its_own_indentation() -> None:
    changed = with_pass(SOURCE, 2).split("\n")
    assert changed[2] == "        pass"
    assert changed[:2] == SOURCE[:2] and changed[3:] == SOURCE[3:]
