"""The test harness's port helper: two servers of one test never get the same port."""

from tests.support.net import free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    ports = [free_port() for _ in range(500)]

    assert len(set(ports)) == len(ports)
