"""Shared fixtures live in tests/support/*; each module registers here."""

pytest_plugins = [
    "tests.support.net",
    "tests.support.redis_server",
    "tests.support.node_provider",
    "tests.support.proxy_process",
    "tests.support.fault_provider",
    "tests.support.browser",
]
