"""A server's life: capacity, backlog, idle timeout, graceful stop, SIGTERM/SIGINT.

``API.md``, "Additions (December 2026)" -> "Connections that live long"
(Capacity, Graceful stop) and issue 9, items 5 and 6.

Real sockets on 127.0.0.1, port 0. Waits are deadlines (``wait_until``,
joins with a timeout); a plain ``gevent.sleep`` is used only where the test
waits for the *absence* of something (a connection that must stay up), or
to pace a client that calls at a given interval.

The backlog burst and the signal tests run their second party in a child
process (``pbgreen.testing.processes``): the burst must reach the kernel
while this process's hub is blocked, and a signal must reach a server that
is the main thread of its own process.
"""

from __future__ import annotations

import inspect
import json
import logging
import shutil
import signal
import ssl
import subprocess
import sys
import time

import gevent
import pytest
from gevent import socket
from gevent.event import Event

import pbgreen as pb
from pbgreen import banana
from pbgreen.testing.processes import Child, start
from support import outcome as _outcome

HOST = "127.0.0.1"
SERVER_OFFER = banana.encode(list(banana.DIALECTS), vocab=False)  # what a PBServer says first
AT_CAPACITY = banana.encode([b"server at capacity"], vocab=False)  # what it says when full


# --------------------------------------------------------------------------- helpers


class Root(pb.Root):
    """Methods that block or sleep, and records of what happened to them."""

    def __init__(self):
        self.connections = []  # the server-side connection of every client
        self.entered = Event()  # remote_block / remote_sleep started
        self.release = Event()  # lets remote_block return
        self.finished = []  # "returned" or the exception type that stopped the method

    def rootObject(self, connection):
        self.connections.append(connection)
        return self

    def remote_echo(self, value):
        return value

    def remote_block(self):
        self.entered.set()
        try:
            self.release.wait(10)
        except BaseException as exc:
            self.finished.append(type(exc))
            raise
        self.finished.append("returned")
        return "released"

    def remote_sleep(self, seconds):
        self.entered.set()
        try:
            gevent.sleep(seconds)
        except BaseException as exc:
            self.finished.append(type(exc))
            raise
        self.finished.append("returned")
        return ["slept", seconds]


@pytest.fixture
def root():
    r = Root()
    yield r
    r.release.set()  # nothing stays blocked after the test


def _read_until_closed(sock, deadline=5.0):
    """Every byte the peer sends until it closes; fails the test after ``deadline``."""
    received = b""
    with gevent.Timeout(deadline, AssertionError(f"still open after {deadline} s; "
                                                 f"got {received!r}")):
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return received
            if not data:
                return received
            received += data


def _capacity_warnings(caplog):
    return [r for r in caplog.records if r.name == "pbgreen.server"
            and r.levelno == logging.WARNING and "capacity" in r.getMessage()]


# --------------------------------------------------------------------------- 1. capacity


@pytest.mark.parametrize("limit", [1, 2])
def test_one_past_max_connections_is_refused_at_once(pb_server, pb_client, root, caplog,
                                                      wait_until, limit):
    server = pb_server(root, max_connections=limit)
    port = server.address[1]
    # At the limit: every one is served.
    clients = [pb_client(server) for _ in range(limit)]
    for n, client in enumerate(clients):
        assert client.getRootObject().callRemote("echo", n) == n

    # One past it: refused, quickly, with a message that says why.
    with caplog.at_level(logging.WARNING, logger="pbgreen.server"):
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            pb.PBClient(HOST, port, timeout=10)
        elapsed = time.monotonic() - started
    assert isinstance(info.value, ConnectionRefusedError), repr(info.value)
    assert "server at capacity" in str(info.value)
    assert f"{HOST}:{port}" in str(info.value)
    assert elapsed < 1.0, elapsed
    records = _capacity_warnings(caplog)
    assert len(records) == 1, [r.getMessage() for r in caplog.records]
    assert HOST in records[0].getMessage()

    # The ones being served did not notice.
    for n, client in enumerate(clients):
        assert client.getRootObject().callRemote("echo", n) == n
    assert len(server.connections) == limit

    # A slot freed is a slot given: once the server has seen a client leave,
    # the next one is served.
    clients[0].close()
    wait_until(lambda: len(server.connections) < limit, timeout=5,
               message="the server never noticed the client leave")
    newcomer = pb_client(server)
    assert newcomer.getRootObject().callRemote("echo", "in") == "in"
    # ... and the server is at its limit again.
    with pytest.raises(ConnectionRefusedError, match="server at capacity"):
        pb.PBClient(HOST, port, timeout=10)


def test_the_capacity_warning_names_the_refused_peer(pb_server, pb_client, root, caplog):
    server = pb_server(root, max_connections=1)
    pb_client(server)
    with caplog.at_level(logging.WARNING, logger="pbgreen.server"):
        sock = socket.create_connection(server.address, timeout=5)
        try:
            peer = sock.getsockname()  # what the server sees as the peer's address
            received = _read_until_closed(sock)
        finally:
            sock.close()
    # The server tells the client before closing (a Twisted client sees an
    # offer of no dialect it speaks, and drops the connection).
    assert received == AT_CAPACITY
    records = _capacity_warnings(caplog)
    assert len(records) == 1
    assert str(peer[1]) in records[0].getMessage() and peer[0] in records[0].getMessage()


def test_a_crowd_past_capacity_is_refused_and_the_served_keep_going(pb_server, pb_client,
                                                                     root, caplog):
    server = pb_server(root, max_connections=2)
    port = server.address[1]
    served = [pb_client(server) for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="pbgreen.server"):
        started = time.monotonic()
        attempts = [gevent.spawn(_outcome, pb.PBClient, HOST, port, 10) for _ in range(30)]
        gevent.joinall(attempts, timeout=10)
        elapsed = time.monotonic() - started
    outcomes = [attempt.value for attempt in attempts]
    for outcome in outcomes:
        if isinstance(outcome, pb.PBClient):  # must not happen; don't leak it
            outcome.close()
    assert all(isinstance(o, ConnectionRefusedError) and "server at capacity" in str(o)
               for o in outcomes), outcomes
    assert elapsed < 2.0, elapsed
    assert len(_capacity_warnings(caplog)) == 30
    assert len(server.connections) == 2
    for client in served:
        assert client.getRootObject().callRemote("echo", 1) == 1


def test_a_burst_from_zero_serves_exactly_max_connections(pb_server, root):
    server = pb_server(root, max_connections=3)
    attempts = [gevent.spawn(_outcome, pb.PBClient, HOST, server.address[1], 10)
                for _ in range(20)]
    gevent.joinall(attempts, timeout=10)
    outcomes = [attempt.value for attempt in attempts]
    served = [o for o in outcomes if isinstance(o, pb.PBClient)]
    try:
        refused = [o for o in outcomes if isinstance(o, ConnectionRefusedError)
                   and "server at capacity" in str(o)]
        assert (len(served), len(refused)) == (3, 17), outcomes
        assert len(server.connections) == 3
    finally:
        for client in served:
            client.close()


# TLS: the capacity check and the refusal must hold for TLS servers too.


@pytest.fixture
def tls_contexts(certificate):
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(*certificate)
    client_context = ssl.create_default_context()
    client_context.load_verify_locations(certificate[0])
    return server_context, client_context


def test_a_tls_client_past_capacity_is_told_the_server_is_at_capacity(pb_server, root,
                                                                       tls_contexts):
    server_context, client_context = tls_contexts
    server = pb_server(root, max_connections=1, ssl_context=server_context)
    holder = pb.PBClient(HOST, server.address[1], timeout=10, ssl_context=client_context)
    try:
        started = time.monotonic()
        with pytest.raises((OSError, pb.PBConnectionLost)) as info:
            pb.PBClient(HOST, server.address[1], timeout=10, ssl_context=client_context)
        assert time.monotonic() - started < 1.0
        # Not a TLS error that suggests the port is not a TLS PB server.
        assert isinstance(info.value, pb.PBConnectionLost) or "server at capacity" in str(
            info.value), f"{info.value!r}, notes: {getattr(info.value, '__notes__', None)}"
    finally:
        holder.close()


def test_a_burst_of_tls_clients_serves_at_most_max_connections(pb_server, root,
                                                                tls_contexts):
    server_context, client_context = tls_contexts
    server = pb_server(root, max_connections=1, ssl_context=server_context)
    attempts = [gevent.spawn(_outcome, pb.PBClient, HOST, server.address[1], 10,
                             client_context) for _ in range(5)]
    gevent.joinall(attempts, timeout=10)
    served = [a.value for a in attempts if isinstance(a.value, pb.PBClient)]
    try:
        assert len(served) == 1, [a.value for a in attempts]
        assert len(server.connections) == 1
    finally:
        for client in served:
            client.close()


# --------------------------------------------------------------------------- 2. backlog


def test_backlog_default_is_1024():
    assert inspect.signature(pb.PBServer).parameters["backlog"].default == 1024


def _listen_queue_size(port):
    """The listening socket's backlog as ``ss -ltn`` reports it (its Send-Q column)."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    out = subprocess.run([ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    assert len(rows) == 1, out
    return int(rows[0][2])


def _somaxconn():
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except OSError:
        return None


@pytest.mark.parametrize("backlog", [None, 700])
def test_backlog_reaches_the_listening_socket(pb_server, root, backlog):
    server = pb_server(root) if backlog is None else pb_server(root, backlog=backlog)
    size = _listen_queue_size(server.address[1])
    if size is None:
        pytest.skip("no `ss` here to read the listen queue size")
    wanted = 1024 if backlog is None else backlog
    somaxconn = _somaxconn()
    assert size == (wanted if somaxconn is None else min(wanted, somaxconn))


BURST_CLIENT = r"""
import errno, json, selectors, socket, sys, time
port, count, busy, deadline = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
offer = bytes.fromhex(sys.argv[5])
socks = [socket.socket() for _ in range(count)]
for s in socks:
    s.setblocking(False)
print("READY", flush=True)
sys.stdin.readline()                     # "go"
started = time.monotonic()
errors, got, sel = {}, {}, selectors.DefaultSelector()


def failed(s, name):
    errors[name] = errors.get(name, 0) + 1
    sel.unregister(s)


for s in socks:                          # every SYN leaves at once
    code = s.connect_ex(("127.0.0.1", port))
    if code not in (0, errno.EINPROGRESS):
        errors[errno.errorcode[code]] = errors.get(errno.errorcode[code], 0) + 1
        continue
    got[s] = None                        # None: not connected yet
    sel.register(s, selectors.EVENT_WRITE)
# Phase 1, the server busy: how many the kernel completes (the listen queue holds them).
connected, end = 0, started + busy
while connected + sum(errors.values()) < count and time.monotonic() < end:
    for key, _ in sel.select(max(0.0, end - time.monotonic())):
        s = key.fileobj
        code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            failed(s, errno.errorcode[code])
            continue
        connected += 1
        got[s] = b""
        sel.modify(s, selectors.EVENT_READ)
print("CONNECTED", connected, round(time.monotonic() - started, 3), flush=True)
# Phase 2, the server running again: the rest connect, and every one must be greeted.
greeted, last, end = 0, None, started + deadline
while len(sel.get_map()) and time.monotonic() < end:
    for key, _ in sel.select(max(0.0, end - time.monotonic())):
        s = key.fileobj
        if got[s] is None:               # a late connect completed
            code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                failed(s, errno.errorcode[code])
            else:
                got[s] = b""
                sel.modify(s, selectors.EVENT_READ)
            continue
        try:
            data = s.recv(4096)
        except OSError as exc:
            failed(s, type(exc).__name__)
            continue
        if not data:
            failed(s, "closed before the greeting")
            continue
        got[s] += data
        if len(got[s]) < len(offer):
            continue
        if got[s].startswith(offer):
            greeted += 1
            last = time.monotonic() - started
            sel.unregister(s)
        else:
            failed(s, "wrong greeting")
never = len(sel.get_map())
sel.close()
for s in socks:
    s.close()
print(json.dumps({"connected_while_busy": connected, "greeted": greeted, "errors": errors,
                  "never_greeted": never, "last_greeting": last}), flush=True)
"""


@pytest.mark.parametrize("backlog", [None, 512])
def test_a_burst_of_connects_to_a_busy_server_is_every_one_greeted(pb_server, root,
                                                                    tmp_path, backlog):
    count = 300
    server = pb_server(root) if backlog is None else pb_server(root, backlog=backlog)
    script = tmp_path / "burst.py"
    script.write_text(BURST_CLIENT)
    child = Child([sys.executable, str(script), str(server.address[1]), str(count), "2", "20",
                   SERVER_OFFER.hex()], label="burst client")
    try:
        child.expect("^READY$", timeout=20, sleep=gevent.sleep)
        assert child.send("go\n")
        # The server is busy (this hub is blocked, it accepts nothing) while
        # the whole burst arrives: it must all fit in the listen queue.
        busy = time.monotonic()
        child.expect(r"^CONNECTED ", timeout=15)
        time.sleep(max(0.0, 0.5 - (time.monotonic() - busy)))
        rc = child.wait(30, sleep=gevent.sleep)  # the server greets them meanwhile
        assert rc == 0, child.describe()
        report = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        child.stop(grace=0)
    assert report["connected_while_busy"] == count, (
        f"only {report['connected_while_busy']} of {count} connects completed while the "
        f"server was busy: its listen queue is too short ({report})")
    assert report["greeted"] == count, report
    assert report["errors"] == {} and report["never_greeted"] == 0, report


# --------------------------------------------------------------------------- 3. idle timeout


def test_idle_timeout_default_is_none():
    assert inspect.signature(pb.PBServer).parameters["idle_timeout"].default is None


def test_an_idle_client_is_closed_by_the_server(pb_server, pb_client, root, wait_until):
    server = pb_server(root, idle_timeout=0.3)
    client = pb_client(server)
    ref = client.getRootObject()
    assert ref.callRemote("echo", 1) == 1
    lost = []
    ref.notifyOnDisconnect(lost.append)
    since = time.monotonic()
    wait_until(lambda: not client.connection.connected, timeout=3,
               message="the idle client was never closed")
    elapsed = time.monotonic() - since
    assert 0.25 <= elapsed < 2.0, elapsed
    with pytest.raises((pb.DeadReferenceError, pb.PBConnectionLost)):
        ref.callRemote("echo", 2)
    wait_until(lambda: lost == [ref], timeout=3, message="notifyOnDisconnect never ran")
    wait_until(lambda: not server.connections, timeout=3)


def test_a_client_that_never_calls_is_closed_too(pb_server, pb_client, root, wait_until):
    server = pb_server(root, idle_timeout=0.3)
    client = pb_client(server)
    wait_until(lambda: not client.connection.connected, timeout=3,
               message="the idle client was never closed")


def test_a_call_running_keeps_its_connection(pb_server, pb_client, root):
    server = pb_server(root, idle_timeout=0.3)
    client = pb_client(server)
    ref = client.getRootObject()
    call = gevent.spawn(_outcome, ref.callRemote, "block")
    assert root.entered.wait(5)
    gevent.sleep(1.0)  # more than three idle timeouts: the call still runs
    assert client.connection.connected
    assert not call.ready()
    root.release.set()
    assert call.get(timeout=5) == "released"


def test_a_client_calling_every_tenth_of_a_second_stays(pb_server, pb_client, root):
    server = pb_server(root, idle_timeout=0.3)
    client = pb_client(server)
    ref = client.getRootObject()
    end = time.monotonic() + 1.0
    calls = 0
    while time.monotonic() < end:
        assert ref.callRemote("echo", calls) == calls
        calls += 1
        gevent.sleep(0.1)
    assert client.connection.connected
    assert calls >= 5


def test_the_idle_clock_starts_when_a_long_call_ends(pb_server, pb_client, root):
    """Idle means "no call and none running for idle_timeout": a call that just
    ended leaves the connection idle for 0 s, not for as long as the call ran."""
    server = pb_server(root, idle_timeout=0.3)
    client = pb_client(server)
    ref = client.getRootObject()
    assert ref.callRemote("sleep", 0.6) == ["slept", 0.6]  # twice the idle timeout
    gevent.sleep(0.2)  # idle for less than idle_timeout (the server checks every 0.15 s)
    assert client.connection.connected, (
        f"closed {0.2} s after its call ended: {client.connection.close_reason}")
    assert ref.callRemote("echo", "still here") == "still here"


# --------------------------------------------------------------------------- 4. graceful stop


def test_graceful_stop_lets_the_running_call_answer_and_refuses_new_ones(pb_server,
                                                                         pb_client, root,
                                                                         wait_until):
    server = pb_server(root)
    port = server.address[1]
    caller = pb_client(server)
    latecomer = pb_client(server)
    slow = gevent.spawn(_outcome, caller.getRootObject().callRemote, "sleep", 0.3)
    assert root.entered.wait(5)
    since = time.monotonic()
    stopper = gevent.spawn(server.stop, timeout=2)
    gevent.sleep(0)  # the stopper runs until it waits for the running call

    # It stopped accepting at once.
    with pytest.raises(ConnectionRefusedError):
        pb.PBClient(HOST, port, timeout=2)
    # A call arriving during the grace period is answered with an error.
    with pytest.raises(pb.Error) as info:
        latecomer.getRootObject().callRemote("echo", 1)
    assert "shutting down" in str(info.value)
    assert not stopper.ready(), "stop returned while a call was still running"

    # The running call gets its answer.
    assert slow.get(timeout=5) == ["slept", 0.3]
    stopper.join(timeout=5)
    elapsed = time.monotonic() - since
    assert stopper.successful(), stopper.exception
    assert 0.25 <= elapsed < 1.5, elapsed
    assert root.finished == ["returned"]
    # When stop returned every connection was closed.
    assert not any(connection.connected for connection in root.connections)
    assert not server.connections
    wait_until(lambda: not caller.connection.connected and not latecomer.connection.connected,
               timeout=3, message="a client never saw the server close")


def test_graceful_stop_with_nothing_running_returns_at_once(pb_server, pb_client, root):
    server = pb_server(root)
    client = pb_client(server)
    assert client.getRootObject().callRemote("echo", 1) == 1
    since = time.monotonic()
    server.stop(timeout=5)
    assert time.monotonic() - since < 0.5
    assert not any(connection.connected for connection in root.connections)


def test_graceful_stop_kills_a_call_that_outlives_the_grace_period(pb_server, pb_client,
                                                                   root):
    server = pb_server(root)
    client = pb_client(server)
    long_call = gevent.spawn(_outcome, client.getRootObject().callRemote, "sleep", 10)
    assert root.entered.wait(5)
    since = time.monotonic()
    server.stop(timeout=0.3)
    elapsed = time.monotonic() - since
    assert 0.25 <= elapsed < 1.5, elapsed
    outcome = long_call.get(timeout=5)
    assert isinstance(outcome, pb.PBConnectionLost), repr(outcome)
    assert root.finished == [gevent.GreenletExit]  # the method was killed, not left running
    assert not server.connections


def test_stop_without_timeout_is_immediate(pb_server, pb_client, root):
    server = pb_server(root)
    client = pb_client(server)
    long_call = gevent.spawn(_outcome, client.getRootObject().callRemote, "sleep", 10)
    assert root.entered.wait(5)
    since = time.monotonic()
    server.stop()
    assert time.monotonic() - since < 0.5
    assert isinstance(long_call.get(timeout=5), pb.PBConnectionLost)
    assert root.finished == [gevent.GreenletExit]


def test_an_immediate_stop_during_a_graceful_one_does_not_return_early(pb_server, pb_client,
                                                                       root):
    """stop() promises every connection closed when it returns; a graceful stop
    already under way must not make it a no-op (a second Ctrl-C, `with server:`
    ending while a signal's graceful stop runs)."""
    server = pb_server(root)
    client = pb_client(server)
    long_call = gevent.spawn(_outcome, client.getRootObject().callRemote, "sleep", 10)
    assert root.entered.wait(5)
    graceful = gevent.spawn(server.stop, timeout=2)
    gevent.sleep(0)  # the graceful stop is waiting for the running call
    since = time.monotonic()
    server.stop()
    returned_after = time.monotonic() - since
    still_open = [c for c in root.connections if c.connected]
    try:
        assert not still_open, (
            f"stop() returned after {returned_after:.3f} s with {len(still_open)} connection(s) "
            f"still open and the call still running ({long_call.ready()=})")
    finally:
        graceful.join(timeout=10)
    assert isinstance(long_call.get(timeout=5), pb.PBConnectionLost)


def test_serve_forever_returns_after_a_graceful_stop(root):
    server = pb.PBServer(root, port=0, host=HOST)
    runner = gevent.spawn(server.serve_forever)
    gevent.sleep(0)
    with pb.PBClient(HOST, server.address[1], timeout=5) as client:
        slow = gevent.spawn(_outcome, client.getRootObject().callRemote, "sleep", 0.3)
        assert root.entered.wait(5)
        stopper = gevent.spawn(server.stop, timeout=2)
        assert slow.get(timeout=5) == ["slept", 0.3]
        runner.join(timeout=5)
        stopper.join(timeout=5)
    assert runner.dead and runner.successful()
    assert stopper.dead and stopper.successful()


def test_graceful_stop_from_inside_a_remote_method(pb_client):
    """stop(timeout=T) called by a remote method does not wait for that method itself."""

    class Stoppable(pb.Root):
        def remote_shutdown(self):
            self.server.stop(timeout=5)
            return "stopped"

    root = Stoppable()
    server = root.server = pb.PBServer(root, port=0, host=HOST)
    runner = gevent.spawn(server.serve_forever)
    gevent.sleep(0)
    client = pb_client(server)
    since = time.monotonic()
    outcome = _outcome(client.getRootObject().callRemote, "shutdown")
    assert outcome == "stopped" or isinstance(outcome, pb.PBConnectionLost), repr(outcome)
    runner.join(timeout=10)
    assert runner.dead and runner.successful()
    assert time.monotonic() - since < 2.0  # it did not wait out its own grace period


# --------------------------------------------------------------------------- 5. SIGTERM / SIGINT


SIGNAL_SERVER = r"""
import gevent
import pbgreen as pb


class Root(pb.Root):
    def remote_slow(self, seconds):
        print("STARTED", flush=True)
        gevent.sleep(seconds)
        return "done"


server = pb.PBServer(Root(), port=0, host="127.0.0.1")
server.start()  # bind now: before start(), server.address has port 0
print("PORT", server.address[1], flush=True)
server.serve_forever()
print("RETURNED", flush=True)
"""


@pytest.fixture
def signal_server(tmp_path):
    script = tmp_path / "server.py"
    script.write_text(SIGNAL_SERVER)
    children = []

    def start_server():
        child = start([sys.executable, str(script)], sleep=gevent.sleep,
                      stdin=subprocess.DEVNULL, label="signal server")
        children.append(child)
        return child

    yield start_server
    for child in children:
        child.stop(grace=0)


def _assert_clean_exit(child, since):
    rc = child.wait(10, sleep=gevent.sleep)
    assert rc == 0, child.describe()
    assert time.monotonic() - since < 5.0  # not the 10 s default grace period
    assert "Traceback" not in child.stderr, child.stderr
    assert "KeyboardInterrupt" not in child.stderr, child.stderr
    assert "RETURNED" in child.stdout, child.describe()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_serve_forever_gracefully(signal_server, signum, wait_until):
    child = signal_server()
    with pb.PBClient(HOST, child.port, timeout=10) as client:
        call = gevent.spawn(_outcome, client.getRootObject().callRemote, "slow", 0.5)
        child.expect("^STARTED$", timeout=10, sleep=gevent.sleep)
        since = time.monotonic()
        child.signal(signum)
        assert call.get(timeout=10) == "done"  # the running call was answered
        _assert_clean_exit(child, since)
        wait_until(lambda: not client.connection.connected, timeout=5)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_an_idle_server_exits_at_once(signal_server, signum):
    child = signal_server()
    since = time.monotonic()
    child.signal(signum)
    _assert_clean_exit(child, since)
    assert time.monotonic() - since < 2.0
