"""Fixtures shared by the whole suite, and the leak check every test runs under.

The leak check fails a test that leaves behind live greenlets, open sockets
(file descriptors) or child processes. Cleanup in gevent is asynchronous, so
it waits for them to go, with a deadline, before failing.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Iterator

import gevent
import pytest
from gevent.hub import Hub
from gevent.threadpool import _WorkerGreenlet
from greenlet import greenlet

import pbgreen as pb

LEAK_DEADLINE = 3.0


def _live_greenlets() -> set[int]:
    # Hubs and the resolver's thread-pool workers are gevent's own, not ours.
    found = set()
    for obj in gc.get_objects():
        if isinstance(obj, greenlet) and not isinstance(obj, (Hub, _WorkerGreenlet)) \
                and not obj.dead and obj.parent is not None and bool(obj):
            found.add(id(obj))
    return found


def _open_fds() -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def _children() -> set[int]:
    me = str(os.getpid())
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            kids.add(int(entry))
    return kids


def _settle(check: Any, before: set[Any]) -> set[Any]:
    deadline = time.monotonic() + LEAK_DEADLINE
    while True:
        extra = check() - before
        if not extra or time.monotonic() > deadline:
            return extra
        gc.collect()
        gevent.sleep(0.01)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves greenlets, sockets or child processes behind."""
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    gc.collect()
    greenlets, sockets, kids = _live_greenlets(), _open_fds(), _children()
    yield
    leaked = []
    extra = _settle(_live_greenlets, greenlets)
    if extra:
        leaked.append(f"{len(extra)} live greenlet(s)")
    extra = _settle(_open_fds, sockets)
    if extra:
        leaked.append(f"{len(extra)} open socket(s)")
    extra = _settle(_children, kids)
    if extra:
        leaked.append(f"child process(es) {sorted(extra)}")
    if leaked:
        pytest.fail("test left behind: " + ", ".join(leaked), pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leaks: skip the leak check (for leak-check tests)")


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(root, **kw)`` starts a PBServer on 127.0.0.1:0; all stop after the test."""
    servers: list[pb.PBServer] = []

    def start(root: Any, **kwargs: Any) -> pb.PBServer:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        server = pb.PBServer(root, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def connect() -> Iterator[Any]:
    """``connect(server_or_port)`` opens a PBClient; all close after the test."""
    clients: list[pb.PBClient] = []

    def open_client(target: Any, **kwargs: Any) -> pb.PBClient:
        port = target if isinstance(target, int) else target.address[1]
        kwargs.setdefault("timeout", 10)
        client = pb.PBClient("127.0.0.1", port, **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
