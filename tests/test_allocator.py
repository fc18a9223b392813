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


@pytest.mark.parametrize(
    "tunables", ["glibc.malloc.trim_threshold=131072", "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=4096"]
)
def test_an_operators_own_threshold_tunable_is_kept(tunables: str) -> None:
    assert allocator.thresholds({"GLIBC_TUNABLES": tunables}, "glibc") == {}


def test_an_unrelated_tunable_leaves_the_thresholds_to_the_proxy() -> None:
    assert allocator.thresholds({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "glibc") == allocator.thresholds(
        {}, "glibc"
    )


@pytest.mark.parametrize("libc", ["", "musl"])
def test_another_c_library_is_left_alone(libc: str) -> None:
    assert allocator.thresholds({}, libc) == {}


# platform.libc_ver reads the interpreter's binary: a second opinion on the C library
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_settings_take_in_a_real_process() -> None:
    assert allocator.c_library() == "glibc"
    assert allocator.tune({}) is True
    assert allocator.tune({"MALLOC_TRIM_THRESHOLD_": "131072"}) is False
