"""The proxy fixes glibc's malloc thresholds unless the operator set their own."""

import platform

import pytest

from authproxy import allocator


def test_on_glibc_large_blocks_stay_on_a_heap_that_keeps_its_top() -> None:
    settings = allocator.thresholds({}, "glibc")

    assert settings == {
        allocator.M_MMAP_THRESHOLD: allocator.MMAP_THRESHOLD,
        allocator.M_TRIM_THRESHOLD: allocator.TRIM_THRESHOLD,
    }
    # an upstream read is up to 256 KiB: it must fall under the mmap threshold
    assert allocator.MMAP_THRESHOLD > 256 * 1024
    assert allocator.TRIM_THRESHOLD > allocator.MMAP_THRESHOLD


@pytest.mark.parametrize("variable", allocator.OPERATOR_VARIABLES)
def test_an_operators_own_malloc_setting_is_kept(variable: str) -> None:
    assert allocator.thresholds({variable: "1"}, "glibc") == {}


@pytest.mark.parametrize("libc", ["", "musl"])
def test_another_c_library_is_left_alone(libc: str) -> None:
    assert allocator.thresholds({}, libc) == {}


# platform.libc_ver reads the interpreter's binary: a second opinion on the C library
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_settings_take_in_a_real_process() -> None:
    assert allocator.c_library() == "glibc"
    assert allocator.tune({}) is True
    assert allocator.tune({"MALLOC_TRIM_THRESHOLD_": "131072"}) is False
