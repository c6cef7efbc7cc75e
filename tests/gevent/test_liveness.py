"""Connections that live long: ``timeout``, ``call_timeout``, cancel and ``keepalive``.

Real sockets on 127.0.0.1. Waits are deadlines (``wait_until``, joins with a
timeout); a plain ``gevent.sleep`` is used only where the test waits for the
*absence* of something (a healthy idle connection that must stay up).

The keepalive tests put a TCP proxy of their own between client and server
(``FreezableProxy``): ``freeze()`` makes it stop forwarding in both
directions without closing either socket, as a stalled middlebox or a pulled
cable does (no FIN, no RST ever reaches either end).
"""

from __future__ import annotations

import inspect
import logging
import time

import gevent
import pytest
from gevent import socket
from gevent.event import Event

import pbgreen as pb
from support import outcome as _outcome

HOST = "127.0.0.1"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections and never sends a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(8)
    accepted = []

    def accept():
        while True:
            sock, _ = listener.accept()
            accepted.append(sock)

    acceptor = gevent.spawn(accept)
    yield listener.getsockname()[1], accepted
    acceptor.kill()
    for sock in accepted:
        sock.close()
    listener.close()


class Watched(pb.Cacheable):
    """A cache the server hands out; records ``stoppedObserving``."""

    def __init__(self):
        self.observers = []
        self.stopped = []

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return {"value": 1}

    def stoppedObserving(self, perspective, observer):
        self.stopped.append(observer)


class WatchedCache(pb.RemoteCache):
    pass


pb.setUnjellyableForClass(Watched, WatchedCache)


class Root(pb.Root):
    """The server's root: a method that blocks, and records of what happened."""

    def __init__(self):
        self.connections = []  # the server-side Connection of every client
        self.entered = Event()  # remote_block started
        self.release = Event()  # lets remote_block return
        self.left = []  # pb.time_left() seen by remote_block when it started
        self.stopped = []  # the exception type that stopped remote_block
        self.finished = []  # remote_block's finally ran (value: "returned" or "stopped")
        self.minds = []
        self.mind_lost = []  # notifyOnDisconnect callbacks run for a client's mind
        self.watched = Watched()
        self.notes = []  # values of remote_note calls that ran

    def rootObject(self, connection):
        self.connections.append(connection)
        return self

    def remote_echo(self, *args, **kwargs):
        return [list(args), kwargs]

    def remote_timeLeft(self):
        return pb.time_left()

    def remote_note(self, value):
        self.notes.append(value)
        return value

    def remote_block(self):
        self.left.append(pb.time_left())
        self.entered.set()
        outcome = "stopped"
        try:
            self.release.wait(10)
            outcome = "returned"
            return "released"
        except BaseException as exc:
            self.stopped.append(type(exc))
            raise
        finally:
            self.finished.append(outcome)

    def remote_register(self, mind):
        self.minds.append(mind)
        mind.notifyOnDisconnect(self.mind_lost.append)
        return len(self.minds)

    def remote_getWatched(self):
        return self.watched


@pytest.fixture
def root():
    r = Root()
    yield r
    r.release.set()  # nothing stays blocked after the test


def _server(pb_server, root, **kwargs):
    return pb_server(root, **kwargs)


# --------------------------------------------------------------------------- 1. timeout


def test_timeout_default_is_30_seconds():
    parameters = inspect.signature(pb.PBClient).parameters
    assert parameters["timeout"].default == 30
    # The other liveness defaults the API names.
    assert parameters["call_timeout"].default is None
    assert parameters["keepalive"].default == 30
    assert inspect.signature(pb.PBServer).parameters["keepalive"].default == 30


def test_call_timeout_is_a_builtin_timeout_error():
    assert issubclass(pb.CallTimeout, TimeoutError)


def test_connect_to_a_port_that_never_speaks_times_out(silent_port):
    port, accepted = silent_port
    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        pb.PBClient(HOST, port, timeout=0.5)
    elapsed = time.monotonic() - start
    assert 0.4 <= elapsed < 2.0, elapsed
    assert f"{HOST}:{port}" in str(info.value)
    assert len(accepted) == 1  # the TCP connect succeeded: it is the PB handshake that hung


def test_connect_timeout_is_not_call_timeout(silent_port):
    """A handshake that never comes is a plain TimeoutError, not a CallTimeout."""
    port, _ = silent_port
    with pytest.raises(TimeoutError) as info:
        pb.PBClient(HOST, port, timeout=0.3, call_timeout=5)
    assert not isinstance(info.value, pb.CallTimeout)


def test_connect_to_a_silent_port_is_a_timeout_even_with_a_short_keepalive(silent_port):
    """``timeout`` governs the handshake: a short keepalive does not turn it into another error.

    (The API: a port that accepts but never speaks PB raises ``TimeoutError``
    within ``timeout``; no keepalive probe can even be sent before the
    handshake.)
    """
    port, _ = silent_port
    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        pb.PBClient(HOST, port, timeout=1.0, keepalive=0.2)
    assert time.monotonic() - start < 2.0
    assert f"{HOST}:{port}" in str(info.value)


# --------------------------------------------------------------------------- 2. call_timeout


def test_time_left_reports_the_callers_deadline(pb_server, root):
    server = _server(pb_server, root)
    with pb.PBClient(HOST, server.address[1], call_timeout=2) as client:
        left = client.getRootObject().callRemote("timeLeft")
    assert isinstance(left, float)
    assert 0 < left <= 2


def test_time_left_is_none_without_call_timeout(pb_server, root):
    server = _server(pb_server, root)
    with pb.PBClient(HOST, server.address[1]) as client:
        assert client.getRootObject().callRemote("timeLeft") is None


def test_call_timeout_raises_and_stops_the_server_method(pb_server, root, wait_until):
    server = _server(pb_server, root)
    with pb.PBClient(HOST, server.address[1], call_timeout=0.4) as client:
        ref = client.getRootObject()
        start = time.monotonic()
        with pytest.raises(pb.CallTimeout) as info:
            ref.callRemote("block")
        elapsed = time.monotonic() - start
        assert isinstance(info.value, TimeoutError)
        assert 0.35 <= elapsed < 1.5, elapsed
        assert "block" in str(info.value)

        # While it ran, the method knew how long its caller would wait.
        assert len(root.left) == 1
        assert isinstance(root.left[0], float) and 0 < root.left[0] <= 0.4

        # The server-side method was stopped (deadline or cancel), not left running.
        wait_until(lambda: root.finished, timeout=3,
                   message="the server method was never stopped")
        assert root.finished == ["stopped"]
        assert root.stopped[0] in (gevent.Timeout, gevent.GreenletExit), root.stopped

        # The connection is still good.
        assert ref.callRemote("echo", 1, k="v") == [[1], {"k": "v"}]
        assert client.connection.connected
        assert not client.connection.protocol.pending


def test_call_timeout_does_not_touch_calls_that_answer_in_time(pb_server, root):
    server = _server(pb_server, root)
    with pb.PBClient(HOST, server.address[1], call_timeout=0.3) as client:
        ref = client.getRootObject()
        for i in range(5):
            assert ref.callRemote("echo", i) == [[i], {}]
        gevent.sleep(0.5)  # bounded wait: no stray timer fires for the answered calls
        assert ref.callRemote("echo", "after") == [["after"], {}]
        assert client.connection.connected


def test_call_async_deadline_counts_from_the_call(pb_server, root):
    server = _server(pb_server, root)
    with pb.PBClient(HOST, server.address[1], call_timeout=0.5) as client:
        ref = client.getRootObject()
        start = time.monotonic()
        result = ref.callRemoteAsync("block")
        gevent.sleep(0.35)  # the caller does other things before asking for the answer
        with pytest.raises(pb.CallTimeout):
            result.get()
        elapsed = time.monotonic() - start
        # Counted from get() it would be >= 0.85 s.
        assert 0.45 <= elapsed < 0.8, elapsed
        assert ref.callRemote("echo", 2) == [[2], {}]


def test_call_async_get_after_the_deadline_raises_at_once(pb_server, root):
    server = _server(pb_server, root)
    with pb.PBClient(HOST, server.address[1], call_timeout=0.3) as client:
        ref = client.getRootObject()
        result = ref.callRemoteAsync("block")
        assert gevent.wait([result], timeout=3) == [result]  # the deadline passed
        start = time.monotonic()
        with pytest.raises(pb.CallTimeout):
            result.get()
        assert time.monotonic() - start < 0.1
        assert isinstance(result.exception, pb.CallTimeout)
        assert ref.callRemote("echo", 3) == [[3], {}]


def test_call_async_answer_before_the_deadline_is_kept(pb_server, root):
    server = _server(pb_server, root)
    with pb.PBClient(HOST, server.address[1], call_timeout=0.3) as client:
        ref = client.getRootObject()
        result = ref.callRemoteAsync("echo", 5)
        assert gevent.wait([result], timeout=3) == [result]
        gevent.sleep(0.5)  # bounded wait: well past the deadline, nothing may replace it
        assert result.get() == [[5], {}]
        assert result.successful()


def test_gevent_timeout_still_works_without_call_timeout(pb_server, root, wait_until):
    server = _server(pb_server, root)
    with pb.PBClient(HOST, server.address[1], call_timeout=None) as client:
        ref = client.getRootObject()
        timeout = gevent.Timeout(0.2)
        start = time.monotonic()
        with pytest.raises(gevent.Timeout) as info:
            with timeout:
                ref.callRemote("block")
        assert info.value is timeout
        assert time.monotonic() - start < 1.0
        assert ref.callRemote("echo", 4) == [[4], {}]
        wait_until(lambda: root.finished, timeout=3)  # the cancel stops it (see below)


def test_gevent_timeout_shorter_than_call_timeout_wins(pb_server, root, wait_until):
    server = _server(pb_server, root)
    with pb.PBClient(HOST, server.address[1], call_timeout=5) as client:
        ref = client.getRootObject()
        timeout = gevent.Timeout(0.2)
        with pytest.raises(gevent.Timeout) as info:
            with timeout:
                ref.callRemote("block")
        assert info.value is timeout
        assert not isinstance(info.value, pb.CallTimeout)
        assert ref.callRemote("echo", 5) == [[5], {}]
        wait_until(lambda: root.finished, timeout=3)


def test_time_left_counts_the_time_a_call_waited_in_the_server_queue(pb_server, root):
    """A call queued behind ``max_calls`` starts with less than the whole call_timeout left."""
    server = _server(pb_server, root, max_calls=1)
    with pb.PBClient(HOST, server.address[1], call_timeout=2) as client:
        ref = client.getRootObject()
        blocker = gevent.spawn(_outcome, ref.callRemote, "block")
        assert root.entered.wait(3)
        sent = time.monotonic()
        queued = gevent.spawn(_outcome, ref.callRemote, "timeLeft")
        gevent.sleep(0.6)  # the second call waits in the backlog meanwhile
        root.release.set()
        assert blocker.get(timeout=3) == "released"
        left = queued.get(timeout=3)
        really_left = 2 - (time.monotonic() - sent)
        assert isinstance(left, float), repr(left)
        assert left <= really_left + 0.1, (
            f"time_left() said {left:.3f} s, but the caller stops waiting in {really_left:.3f} s")


# --------------------------------------------------------------------------- 3. cancel


def test_caller_giving_up_cancels_the_server_method(pb_server, root, wait_until):
    server = _server(pb_server, root)
    with pb.PBClient(HOST, server.address[1]) as client:  # no call_timeout
        ref = client.getRootObject()
        start = time.monotonic()
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.2):
                ref.callRemote("block")
        assert root.left == [None]  # no deadline travelled with the call
        wait_until(lambda: root.finished, timeout=2,
                   message="the server method still runs: the cancel did not stop it")
        stopped_after = time.monotonic() - start
        assert root.finished == ["stopped"]
        assert root.stopped == [gevent.GreenletExit]
        assert stopped_after < 2.0
        # The server connection and the client connection both still work.
        assert ref.callRemote("echo", 6) == [[6], {}]
        assert root.connections[0].connected


def test_killed_caller_cancels_the_server_method(pb_server, root, wait_until):
    server = _server(pb_server, root)
    with pb.PBClient(HOST, server.address[1]) as client:
        ref = client.getRootObject()
        caller = gevent.spawn(ref.callRemote, "block")
        assert root.entered.wait(3)
        caller.kill(timeout=3)
        assert caller.dead
        wait_until(lambda: root.finished, timeout=2)
        assert root.finished == ["stopped"]
        assert ref.callRemote("echo", 7) == [[7], {}]


def test_cancel_of_a_call_still_queued_on_the_server_keeps_it_from_running(pb_server, root):
    """The caller gave up while its call waited behind ``max_calls``: it must not run later."""
    server = _server(pb_server, root, max_calls=1)
    with pb.PBClient(HOST, server.address[1]) as client:
        ref = client.getRootObject()
        blocker = gevent.spawn(_outcome, ref.callRemote, "block")
        assert root.entered.wait(3)
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.2):
                ref.callRemote("note", "abandoned")  # queued: the one worker is busy
        # Queued behind the abandoned call, after the cancel on the same stream.
        after = ref.callRemoteAsync("note", "after")
        gevent.sleep(0.3)  # bounded wait: the server reads the cancel before the worker frees up
        root.release.set()
        assert blocker.get(timeout=3) == "released"
        assert after.get(timeout=3) == "after"
        # remote_note("after") ran, so anything queued before it has run too.
        assert root.notes == ["after"], root.notes


# --------------------------------------------------------------------------- 5. keepalive


def test_client_keepalive_detects_a_stalled_path(pb_server, root, proxy, wait_until):
    server = _server(pb_server, root, keepalive=None)
    path = proxy(server.address)
    notified = []
    with pb.PBClient(HOST, path.port, keepalive=0.3) as client:
        ref = client.getRootObject()
        assert ref.callRemote("echo", 1) == [[1], {}]
        ref.notifyOnDisconnect(notified.append)
        caller = gevent.spawn(_outcome, ref.callRemote, "block")
        assert root.entered.wait(3)
        path.freeze()
        frozen_at = time.monotonic()
        outcome = caller.get(timeout=5)
        detected_after = time.monotonic() - frozen_at
        assert isinstance(outcome, pb.PBConnectionLost), repr(outcome)
        assert detected_after < 2.5, detected_after
        assert not client.connection.connected
        wait_until(lambda: notified, timeout=2, message="notifyOnDisconnect never ran")
        gevent.sleep(0.2)  # bounded wait: it must not run a second time
        assert notified == [ref]
        with pytest.raises(pb.DeadReferenceError):
            ref.callRemote("echo", 2)


def test_server_keepalive_drops_a_silent_client(pb_server, root, proxy, wait_until):
    server = _server(pb_server, root, keepalive=0.3)
    path = proxy(server.address)
    with pb.PBClient(HOST, path.port, keepalive=None) as client:
        ref = client.getRootObject()
        assert ref.callRemote("register", pb.Referenceable()) == 1
        cache = ref.callRemote("getWatched")
        assert isinstance(cache, WatchedCache)
        assert len(root.watched.observers) == 1
        (conn,) = root.connections
        assert conn.connected
        path.freeze()
        frozen_at = time.monotonic()
        wait_until(lambda: not conn.connected, timeout=4,
                   message="the server never dropped the silent client")
        assert time.monotonic() - frozen_at < 2.5
        wait_until(lambda: root.mind_lost and root.watched.stopped, timeout=2,
                   message="the server's disconnect callbacks did not run")
        gevent.sleep(0.2)  # bounded wait: each runs once
        assert root.mind_lost == root.minds
        assert len(root.watched.stopped) == 1
        assert conn not in server.connections
        del cache


def test_healthy_idle_connection_stays_up(pb_server, root, caplog):
    server = _server(pb_server, root, keepalive=0.2)
    with caplog.at_level(logging.INFO, logger="pbgreen"):
        with pb.PBClient(HOST, server.address[1], keepalive=0.2) as client:
            ref = client.getRootObject()
            assert ref.callRemote("echo", 1) == [[1], {}]
            gevent.sleep(1.5)  # bounded wait: idle, probed several times, never dropped
            assert client.connection.connected
            (conn,) = root.connections
            assert conn.connected
            assert ref.callRemote("echo", 2) == [[2], {}]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], \
        [r.getMessage() for r in caplog.records]


def test_healthy_idle_connection_through_the_proxy_stays_up(pb_server, root, proxy):
    """The same through the (flowing) proxy: probes and their answers pass."""
    server = _server(pb_server, root, keepalive=0.2)
    path = proxy(server.address)
    with pb.PBClient(HOST, path.port, keepalive=0.2) as client:
        ref = client.getRootObject()
        assert ref.callRemote("echo", 1) == [[1], {}]
        before = dict(path.forwarded)
        gevent.sleep(1.5)  # bounded wait
        # Something crossed while no call was made: the probes and their answers.
        assert path.forwarded["up"] > before["up"]
        assert path.forwarded["down"] > before["down"]
        assert client.connection.connected
        assert root.connections[0].connected
        assert ref.callRemote("echo", 2) == [[2], {}]


@pytest.mark.parametrize("client_keepalive, server_keepalive", [(0.2, None), (None, 0.2)],
                         ids=["only-client-probes", "only-server-probes"])
def test_healthy_idle_connections_stay_up_when_one_side_probes(pb_server, root, caplog,
                                                               client_keepalive,
                                                               server_keepalive):
    """As against a Twisted peer, which never probes: answered probes keep the link up.

    Several connections at once, their timers out of step, so that a
    keepalive that only sometimes drops a healthy connection is caught.
    """
    server = _server(pb_server, root, keepalive=server_keepalive)
    clients = []
    try:
        with caplog.at_level(logging.INFO, logger="pbgreen"):
            for _ in range(6):
                clients.append(pb.PBClient(HOST, server.address[1], keepalive=client_keepalive))
                assert clients[-1].getRootObject().callRemote("echo", 1) == [[1], {}]
                gevent.sleep(0.03)  # bounded: spreads the connections' probe timers apart
            gevent.sleep(1.8)  # bounded wait: idle, probed, and it must stay up
            dropped = [c.connection.close_reason for c in clients if not c.connection.connected]
            dropped += [c.close_reason for c in root.connections if not c.connected]
            assert not dropped, dropped
            for client in clients:
                assert client.getRootObject().callRemote("echo", 2) == [[2], {}]
    finally:
        for client in clients:
            client.close()
