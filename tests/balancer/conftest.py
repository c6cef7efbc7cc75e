"""Fixtures for the balancer tests: two pbgreen server processes behind a real HAProxy.

``backends``
    Two ``pbgreen serve balanced_app:Service --proxy-protocol --port 0``
    processes on 127.0.0.1 (``processes.Child``, with ``.port``); both are
    stopped after the test, whatever it did to them.
``serve_backend(*extra)``
    Start one more such server, with extra options (e.g. ``--workers 2``);
    each is stopped after the test.
``balancer``
    A running ``pbgreen.testing.haproxy.HAProxy`` in front of ``backends``,
    with the configuration ``docs/deploying.md`` shows; connect to its
    ``address``. Stopped after the test.

HAProxy must be installed (``make test`` installs it). Where it is missing
these tests fail with a message saying how to install it; set
``PBGREEN_SKIP_HAPROXY=1`` to skip them instead, on a machine where you
cannot install it (never on CI: a skip is not a pass).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import gevent
import pytest

from pbgreen.testing.haproxy import HAProxy, HAProxyMissing, find_haproxy
from pbgreen.testing.processes import Child, start

HERE = Path(__file__).resolve().parent
SERVING = r" on 127\.0\.0\.1:(\d+)"   # pbgreen serve's ready line
SKIP_VARIABLE = "PBGREEN_SKIP_HAPROXY"


@pytest.fixture
def haproxy_installed() -> str:
    """The path of ``haproxy``; fails the test if it is missing (skips with the opt-out)."""
    try:
        return find_haproxy()
    except HAProxyMissing as error:
        missing = str(error)
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{missing} ({SKIP_VARIABLE}=1)")
    pytest.fail(f"{missing}; or set {SKIP_VARIABLE}=1 to skip these tests on this machine",
                pytrace=False)


def start_backend(*extra: str) -> Child:
    """``pbgreen serve balanced_app:Service --proxy-protocol EXTRA...`` on a free port of 127.0.0.1."""
    return start([sys.executable, "-m", "pbgreen", "serve", "balanced_app:Service",
                  "--proxy-protocol", "--host", "127.0.0.1", "--port", "0", *extra],
                 SERVING, timeout=30, cwd=HERE, sleep=gevent.sleep)


@pytest.fixture
def backends(haproxy_installed: str) -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        for _ in range(2):
            started.append(start_backend())
        yield started
    finally:
        for child in started:
            child.stop(timeout=10)


@pytest.fixture
def serve_backend(haproxy_installed: str) -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def serve(*extra: str) -> Child:
        started.append(start_backend(*extra))
        return started[-1]

    yield serve
    for child in started:
        child.stop(timeout=10)


@pytest.fixture
def balancer(backends: list[Child]) -> Iterator[HAProxy]:
    with HAProxy([("127.0.0.1", child.port) for child in backends],
                 sleep=gevent.sleep) as proxy:
        yield proxy
