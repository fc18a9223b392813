"""The test harness's port helper: two servers of one test never get the same port."""

from tests.support.net import free_port, ours


def test_free_port_never_hands_out_a_port_twice() -> None:
    ports = [free_port() for _ in range(500)]

    assert len(set(ports)) == len(ports)


def test_two_test_processes_take_ports_from_shares_that_do_not_meet() -> None:
    workers = [{"PYTEST_XDIST_WORKER_COUNT": "2", "PYTEST_XDIST_WORKER": f"gw{i}"} for i in range(2)]

    for port in range(32768, 33768):
        assert [ours(port, environ) for environ in workers].count(True) == 1
