"""call_timeout and keepalive against real Twisted PB peers (WIRE.md §4.11).

A Twisted peer speaks the plain ``pb`` dialect: no deadline travels with a
call, no ``cancel`` is sent, and the keepalive probe must be something
Twisted answers without logging anything. Each test checks Twisted's own
log (the child's stderr) for "Unhandled Error" and tracebacks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import gevent
import pytest

import pbgreen as pb
from support import outcome as _outcome

IDLE_CLIENT_SCRIPT = Path(__file__).resolve().parent / "twisted_idle_client.py"
BAD_WORDS = ("Unhandled Error", "Traceback", "Invalid Object ID")


def _twisted_log_is_quiet(child, settle=0.3):
    """Twisted's output holds no error: what it printed, after a short bounded wait."""
    gevent.sleep(settle)  # bounded: let the pipe readers take the last lines
    text = child.stdout + child.stderr
    found = [word for word in BAD_WORDS if word in text]
    assert not found, f"Twisted logged {found}:\n{child.describe()}"


def _no_pbgreen_warnings(caplog):
    loud = [r for r in caplog.records
            if r.name.startswith("pbgreen") and r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]


# --------------------------------------------------------------------------- call_timeout


def test_call_timeout_against_a_twisted_server(fresh_twisted_server, caplog):
    twisted = fresh_twisted_server
    with caplog.at_level(logging.INFO, logger="pbgreen"):
        with pb.PBClient(twisted.host, twisted.port, call_timeout=0.5) as client:
            root = client.getRootObject()
            start = time.monotonic()
            with pytest.raises(pb.CallTimeout) as info:
                root.callRemote("hang")  # a Deferred that never fires
            elapsed = time.monotonic() - start
            assert isinstance(info.value, TimeoutError)
            assert 0.45 <= elapsed < 1.5, elapsed
            # The connection is still usable.
            assert root.callRemote("add", 1, 2) == 3
            assert root.callRemote("hangers") == 1
            # The abandoned call's answer finally arrives: dropped quietly.
            assert root.callRemote("releaseHung", "late") == 1
            assert root.callRemote("add", 3, 4) == 7
            assert client.connection.connected
            assert not client.connection.protocol.pending
    _twisted_log_is_quiet(twisted)
    _no_pbgreen_warnings(caplog)


def test_call_async_timeout_against_a_twisted_server(fresh_twisted_server):
    twisted = fresh_twisted_server
    with pb.PBClient(twisted.host, twisted.port, call_timeout=0.3) as client:
        root = client.getRootObject()
        hung = root.callRemoteAsync("hang")
        quick = root.callRemoteAsync("add", 2, 2)
        assert gevent.wait([hung, quick], timeout=3) is not None
        assert hung.ready() and quick.ready()
        with pytest.raises(pb.CallTimeout):
            hung.get()
        assert quick.get() == 4
        assert root.callRemote("releaseHung", None) == 1
        assert root.callRemote("add", 5, 5) == 10
    _twisted_log_is_quiet(twisted)


# --------------------------------------------------------------------------- keepalive


def test_pbgreen_client_keepalive_idle_against_twisted(fresh_twisted_server, proxy, caplog):
    twisted = fresh_twisted_server
    path = proxy((twisted.host, twisted.port))
    with caplog.at_level(logging.INFO, logger="pbgreen"):
        with pb.PBClient("127.0.0.1", path.port, keepalive=0.2) as client:
            root = client.getRootObject()
            assert root.callRemote("add", 1, 2) == 3
            before = dict(path.forwarded)
            gevent.sleep(1.5)  # bounded wait: idle, and it must stay up
            # Probes went to Twisted and Twisted answered them.
            assert path.forwarded["up"] > before["up"], "no keepalive probe was sent"
            assert path.forwarded["down"] > before["down"], "Twisted never answered a probe"
            assert client.connection.connected
            assert root.callRemote("add", 3, 4) == 7
    _twisted_log_is_quiet(twisted)
    _no_pbgreen_warnings(caplog)


def test_pbgreen_client_keepalive_detects_a_stalled_twisted_path(fresh_twisted_server, proxy):
    twisted = fresh_twisted_server
    path = proxy((twisted.host, twisted.port))
    notified = []
    with pb.PBClient("127.0.0.1", path.port, keepalive=0.3) as client:
        root = client.getRootObject()
        assert root.callRemote("add", 1, 2) == 3
        root.notifyOnDisconnect(notified.append)
        caller = gevent.spawn(_outcome, root.callRemote, "hang")
        gevent.sleep(0.05)  # the call is on its way before the path stalls
        path.freeze()
        frozen_at = time.monotonic()
        outcome = caller.get(timeout=5)
        assert isinstance(outcome, pb.PBConnectionLost), repr(outcome)
        assert time.monotonic() - frozen_at < 2.5
        deadline = time.monotonic() + 2
        while not notified and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert notified == [root]


def test_timeout_bounds_connecting_to_a_twisted_server_over_a_stalled_path(
        fresh_twisted_server, proxy):
    """``PBClient(timeout=)`` against Twisted: a path that stalls before the
    handshake gives TimeoutError within the timeout; a healthy one connects,
    and Twisted logs nothing either way."""
    twisted = fresh_twisted_server
    healthy = proxy((twisted.host, twisted.port))
    with pb.PBClient("127.0.0.1", healthy.port, timeout=5) as client:
        assert client.getRootObject().callRemote("add", 1, 2) == 3
    stalled = proxy((twisted.host, twisted.port))
    stalled.freeze()  # TCP connects; Twisted's dialect offer never arrives
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{stalled.port}"):
        pb.PBClient("127.0.0.1", stalled.port, timeout=0.5)
    assert time.monotonic() - started < 2.0
    _twisted_log_is_quiet(twisted)


class Root(pb.Root):
    def __init__(self):
        self.connections = []

    def rootObject(self, connection):
        self.connections.append(connection)
        return self

    def remote_add(self, a, b, c=0):
        return a + b + c


def test_twisted_client_idle_against_pbgreen_server_keepalive(serve_pbgreen, twisted_client,
                                                              caplog):
    root = Root()
    with caplog.at_level(logging.INFO, logger="pbgreen"):
        server = serve_pbgreen(root, keepalive=0.2)
        run = twisted_client("1.5", "127.0.0.1", server.address[1], script=IDLE_CLIENT_SCRIPT)
        result = run.result()
    assert result["first"] == 3
    assert result["second"] == 7
    assert result["lost"] == [], result
    assert result["connected"] is True
    # The server probed the idle Twisted client (and was answered: it stayed up).
    assert result["idle_commands"], "the pbgreen server sent no keepalive probe"
    assert len(root.connections) == 1
    _twisted_log_is_quiet(run.child, settle=0)
    _no_pbgreen_warnings(caplog)
