"""Reading callgrind's dumps: the total, and each object file's own share."""

from __future__ import annotations

import pytest

from bench.instructions import cost_by_object, library_shares, summary_cost

# the shape callgrind writes: compressed names (first "(id) name", then "(id)"), shared by ob=
# and cob=; a calls= line followed by the callee's inclusive cost, which is not the caller's own
DUMP = """\
version: 1
creator: callgrind-3.19.0
events: Ir
summary: 1000
fl=(1) ceval.c
ob=(1) /usr/lib/libpython3.11.so.1.0
fn=(1) _PyEval_EvalFrameDefault
10 300
+2 200
cob=(2) /venv/cryptography/_rust.abi3.so
cfi=(2) ???
cfn=(2) bn_mul_mont
calls=16 0
12 450
* 100
fl=(2)
ob=(2)
fn=(2)
0 350
ob=(3) /usr/lib/libc.so.6
fn=(3) memcpy
0 50
totals: 1000
"""


def test_the_total_is_the_summary_line() -> None:
    assert summary_cost(DUMP) == 1000


def test_a_file_without_a_summary_is_refused() -> None:
    with pytest.raises(ValueError, match="not a callgrind dump"):
        summary_cost("events: Ir\n")


def test_each_object_keeps_its_own_cost_and_not_its_callees() -> None:
    assert cost_by_object(DUMP) == {
        "/usr/lib/libpython3.11.so.1.0": 600,
        "/venv/cryptography/_rust.abi3.so": 350,
        "/usr/lib/libc.so.6": 50,
    }


def test_the_shares_name_the_largest_libraries_and_the_rest() -> None:
    costs = {"/a/libpython.so": 700, "/b/_rust.abi3.so": 200, "/c/libc.so.6": 60, "/d/x.so": 40}
    assert library_shares(costs, shown=2) == "libpython.so 70%, _rust.abi3.so 20%, other 10%"
    assert library_shares(costs, shown=4) == "libpython.so 70%, _rust.abi3.so 20%, libc.so.6 6%, x.so 4%"
    assert library_shares({}) == "nothing counted"
