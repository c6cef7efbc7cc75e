"""pytest plugin: PB servers and clients in your tests, and a leak check.

Installed with pbgreen (entry point ``pytest11``), so these fixtures are
available in any test suite:

``pb_server(root_or_portal, **kwargs)``
    Start a ``PBServer`` on 127.0.0.1 with a free port, in the test's own
    process; it is stopped when the test ends. Returns the server
    (``server.address`` has the port).
``pb_client(server_or_port, **kwargs)``
    Connect a ``PBClient`` (closed when the test ends).
``pb_root``
    The root ``RemoteReference`` of a server serving your ``pb_root_object``
    fixture (define that fixture to return the root object).
``pb_leak_check``
    Fails the test if it leaves live pbgreen connections, calls waiting for
    answers, greenlets or open sockets behind. Use it with
    ``@pytest.mark.usefixtures("pb_leak_check")``, or for a whole suite with
    ``usefixtures = pb_leak_check`` in the pytest configuration.

The check looks twice: when the test body ends, before fixtures are torn
down (a connection the body opened and did not close, or any call still
waiting, is a leak even if a fixture would close it later), and after
teardown, when nothing new may be left. Leftovers are waited for (cleanup in
gevent is asynchronous) up to ``pbgreen_leak_deadline`` seconds (an ini
option, default 3) before the test fails.
"""

from __future__ import annotations

import gc
import os
import time
import weakref
from typing import Any, Callable, Iterator

import gevent
import pytest
from gevent.hub import Hub
from gevent.threadpool import _WorkerGreenlet
from greenlet import greenlet

from ..client import PBClient
from ..connection import live_connections
from ..reference import RemoteReference
from ..server import PBServer

__all__ = ["pb_server", "pb_client", "pb_root", "pb_root_object", "pb_leak_check",
           "leftovers", "snapshot"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("pbgreen_leak_deadline", "seconds pb_leak_check waits for cleanup", default="3")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leaks: pb_leak_check does not check this test")


def _greenlets() -> set[int]:
    # Hubs and the resolver's thread-pool workers are gevent's own, not the test's.
    return {id(g) for g in gc.get_objects()
            if isinstance(g, greenlet) and not isinstance(g, (Hub, _WorkerGreenlet))
            and not g.dead and g.parent is not None and bool(g)}


def _sockets() -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


# Connections the fixtures below made and will close themselves.
_owned_clients: "weakref.WeakSet[Any]" = weakref.WeakSet()
_owned_servers: "weakref.WeakSet[PBServer]" = weakref.WeakSet()


def _owned(connection: Any) -> bool:
    return connection in _owned_clients or any(
        connection in server.connections for server in list(_owned_servers))


def _connections() -> set[int]:
    return {id(c) for c in live_connections()}


def _unowned_connections() -> set[int]:
    return {id(c) for c in live_connections() if not _owned(c)}


def _pending_calls() -> set[int]:
    return {id(c) for c in live_connections() if c.protocol.pending}


# What the leak check looks at, by the name it reports.
_CHECKS: dict[str, Callable[[], set[Any]]] = {
    "live pbgreen connection(s)": _connections,
    "connection(s) with calls waiting": _pending_calls,
    "live greenlet(s)": _greenlets,
    "open socket(s)": _sockets,
}


def _wait_for(check: Callable[[], set[Any]], before: set[Any], deadline: float) -> set[Any]:
    """What ``check`` finds beyond ``before``, once it is gone or ``deadline`` s passed."""
    end = time.monotonic() + deadline
    while True:
        extra = check() - before
        if not extra or time.monotonic() > end:
            return extra
        gc.collect()
        gevent.sleep(0.01)


def leftovers(before: dict[str, set[Any]], deadline: float) -> list[str]:
    """What exists now and did not in ``before``, after waiting up to ``deadline`` s."""
    end = time.monotonic() + deadline
    found = []
    for name, check in _CHECKS.items():
        extra = _wait_for(check, before.get(name, set()), max(0.0, end - time.monotonic()))
        if extra:
            found.append(f"{len(extra)} {name}")
    return found


def snapshot() -> dict[str, set[Any]]:
    """What exists now, for ``leftovers`` to compare against."""
    gc.collect()
    return {name: check() for name, check in _CHECKS.items()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Around the test body: connections it opened and left open, calls left waiting.

    Checked before fixtures are torn down, because tearing down a server
    fixture would close a leaked client from the other side and hide it.
    Connections made by fixtures (at setup) are the fixtures' business.
    """
    watching = getattr(item, "_pbgreen_before", None) is not None
    opened_before = _unowned_connections() if watching else set()
    yield
    if watching:
        deadline = float(item.config.getini("pbgreen_leak_deadline"))
        found = []
        extra = _wait_for(_unowned_connections, opened_before, deadline)
        if extra:
            found.append(f"{len(extra)} live pbgreen connection(s) the test opened and "
                         "did not close")
        extra = _wait_for(_pending_calls, set(), deadline)
        if extra:
            found.append(f"{len(extra)} connection(s) with calls waiting")
        item._pbgreen_found = found  # type: ignore[attr-defined]


@pytest.fixture
def pb_leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves connections, waiting calls, greenlets or sockets behind."""
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    before = snapshot()
    request.node._pbgreen_before = before
    yield
    deadline = float(request.config.getini("pbgreen_leak_deadline"))
    found = getattr(request.node, "_pbgreen_found", [])
    found += [item for item in leftovers(before, deadline) if item not in found]
    if found:
        pytest.fail("test left behind: " + ", ".join(found), pytrace=False)


@pytest.fixture
def pb_server() -> Iterator[Callable[..., PBServer]]:
    """``pb_server(root_or_portal, **kwargs)``: a started PBServer on 127.0.0.1:0."""
    servers: list[PBServer] = []

    def start(root: Any, **kwargs: Any) -> PBServer:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        server = PBServer(root, **kwargs)
        server.start()
        servers.append(server)
        _owned_servers.add(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def pb_client() -> Iterator[Callable[..., PBClient]]:
    """``pb_client(server_or_port, **kwargs)``: a PBClient to 127.0.0.1, closed afterwards."""
    clients: list[PBClient] = []

    def open_client(target: PBServer | int, **kwargs: Any) -> PBClient:
        port = target if isinstance(target, int) else target.address[1]
        kwargs.setdefault("timeout", 10)
        client = PBClient("127.0.0.1", port, **kwargs)
        clients.append(client)
        _owned_clients.add(client.connection)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def pb_root_object() -> Any:
    """Override this fixture to give ``pb_root`` the object to serve."""
    raise pytest.UsageError("define a pb_root_object fixture returning the root to serve")


@pytest.fixture
def pb_root(pb_server: Callable[..., PBServer], pb_client: Callable[..., PBClient],
            pb_root_object: Any) -> RemoteReference:
    """The root reference of a server serving ``pb_root_object``."""
    return pb_client(pb_server(pb_root_object)).getRootObject()

