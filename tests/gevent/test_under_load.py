"""Regression tests: interrupted writes, slow and hostile peers, fairness, lifetimes.

Each test pins one defect found on main (December 2026), numbered as in the
report that found them:

1. an interrupted write loses or mangles bytes of the stream (TCP and TLS);
2. nothing bounds what a connection buffers for a peer that does not read;
3. a worker draining the backlog holds finished answers back;
4. a Cacheable's first copy can be overtaken by a later ``cached`` reference;
5. a malformed message escapes the core as ``TypeError`` (see also
   ``tests/core/test_core_regressions.py``);
6. objects outlive their calls while the connection is idle;
7. a stream of messages that produce no event starves every other connection;
8. refusing a value with many references takes quadratic time.

The servers of tests 2, 7 and 8 run in a child process, so that their memory
is theirs alone and a stalled server cannot stall the test's own clock. The
only timed assertions are generous deadlines that tell "works" from "hangs or
stalls for seconds", or ratios that hold on a slow machine as on a fast one.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
import weakref

import gevent
import gevent.event
import pytest
from gevent import socket
from gevent import subprocess as gsubprocess

import pbgreen as pb
from pbgreen import banana
from pbgreen.connection import Connection, wrap_tls

OFFER = bytes.fromhex("02 80 02 82 70 62 04 82 6e 6f 6e 65")  # ['pb', 'none']: Twisted's
SERVER_OFFER = banana.encode(list(banana.DIALECTS), vocab=False)  # a PBServer's
CHOOSE_PB = bytes.fromhex("02 82 70 62")                       # 'pb'
VERSION = bytes.fromhex("02 80 13 87 06 81")                   # ['version', 6]


# ---------------------------------------------------------------------------- helpers


def _message(request_id, method, *args, object_id=b"root", answer=1):
    """One PB ``message`` as dialect ``pb`` bytes (arguments: ints and bytes only)."""
    return banana.encode([b"message", request_id, object_id, method, answer,
                          [b"tuple", *args], [b"dictionary"]], vocab=True)


def _raw_pb(address, rcvbuf=None):
    """A plain TCP socket that did the PB handshake by hand (dialect ``pb``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(address)
        received = b""
        with gevent.Timeout(10):
            while len(received) < len(SERVER_OFFER):
                chunk = sock.recv(len(SERVER_OFFER) - len(received))
                assert chunk, "the server hung up before offering its dialects"
                received += chunk
        assert received == SERVER_OFFER
        sock.sendall(CHOOSE_PB + VERSION)
    except BaseException:
        sock.close()
        raise
    return sock


def _replies(sock, decoder):
    """The next PB messages from ``sock`` other than ``version`` ([] once it is closed)."""
    while True:
        try:
            data = sock.recv(256 * 1024)
        except ConnectionResetError:
            return []
        if not data:
            return []
        found = [m for m in decoder.feed(data) if m[:1] != [b"version"]]
        if found:
            return found


def _closed_by_peer(sock, seconds=10):
    with gevent.Timeout(seconds, AssertionError("the server did not close the connection")):
        while True:
            try:
                if not sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True


def _protocol_errors(caplog):
    return [r.getMessage() for r in caplog.records if "protocol error" in r.getMessage()]


def _wait_until(predicate, seconds, message):
    """Poll ``predicate`` (collecting garbage between tries) until true or the deadline."""
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(message)
        gc.collect()
        gevent.sleep(0.01)


# A PB server in a child process: its memory is its own (VmRSS), and while it
# stalls the test process keeps its clock.
SERVER_SCRIPT = r"""
import json, os, sys
import gevent
import pbgreen as pb

big = {}
runs = [0]


class Root(pb.Root):
    def remote_echo(self, value):
        return value

    def remote_big(self, size):
        runs[0] += 1
        data = big.get(size)
        if data is None:
            data = big[size] = b"x" * size
        return data

    def remote_count(self):
        return runs[0]

    def remote_take(self, *args):
        return len(args)


def orphaned():
    # The test holds our stdin: when it goes, so do we.
    gevent.get_hub().threadpool.apply(sys.stdin.buffer.read)
    os._exit(0)


gevent.spawn(orphaned)
server = pb.PBServer(Root(), port=0, host="127.0.0.1", **json.loads(sys.argv[1]))
server.start()
print(server.address[1], flush=True)
server.serve_forever()
"""


class ServerProcess:
    """A ``PBServer`` serving ``echo``, ``big``, ``count`` and ``take`` in a child process."""

    def __init__(self, **options):
        root = os.path.dirname(os.path.dirname(os.path.abspath(pb.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        self.proc = gsubprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, json.dumps(options)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        try:
            with gevent.Timeout(30, AssertionError("the server process did not start")):
                line = self.proc.stdout.readline()
            self.address = ("127.0.0.1", int(line))
        except BaseException:
            self.stop()
            raise

    def rss(self):
        """Current resident memory in bytes (VmRSS, not the peak)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS for the server process")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture
def server_process():
    started = []

    def start(**options):
        server = ServerProcess(**options)
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


class Echo(pb.Root):
    def remote_echo(self, value):
        return value


def _connect(sock, peer):
    """A client ``Connection`` over an already connected (maybe wrapped) socket."""
    connection = Connection(sock, is_client=True, peer=peer)
    connection.start()
    if not connection.wait_ready(10):
        connection.close()
        pytest.fail(f"no PB handshake: {connection.close_reason}")
    return connection, pb.RemoteReference(connection, b"root")


# ------------------------------------------------- 1. interrupted writes, TCP and TLS


class Trickle:
    """A socket that takes one byte per ``send`` and waits before each one.

    ``interrupt_at = n``: at the n-th ``send`` from now, a caller's own
    ``gevent.Timeout`` (registered in ``timeouts``) fires: in the greenlet
    calling ``send`` if it is a caller (before anything is sent: exactly what
    the hub does when a caller's timeout fires during ``send``), otherwise in
    a caller still waiting while some writer is half-way through the stream.
    Greenlets without a registered timeout are never interrupted.
    """

    def __init__(self, sock):
        self._sock = sock
        self.sends = 0
        self.interrupt_at = None
        self.interrupted = 0
        self.timeouts = {}

    def send(self, data, flags=0):
        self.sends += 1
        if self.sends == self.interrupt_at:
            timeout = self.timeouts.get(gevent.getcurrent())
            if timeout is not None:
                self.interrupted += 1
                raise timeout
            for victim, timeout in list(self.timeouts.items()):
                if not victim.dead:
                    self.interrupted += 1
                    victim.kill(timeout, block=False)
                    break
        gevent.sleep(0)
        return self._sock.send(bytes(memoryview(data)[:1]), flags)

    def sendall(self, data, flags=0):
        view = memoryview(data)
        while view:
            view = view[self.send(view, flags):]

    def __getattr__(self, name):
        return getattr(self._sock, name)


PAYLOADS = [b"a" * 3, "b" * 12, b"c" * 40, ["d", 7, b"e" * 5]]


def _interrupted_calls(root, trickle, payloads):
    """Rounds of concurrent calls; each round's writer is interrupted one send later.

    Every caller that was not interrupted must get its own answer back.
    """
    step_count = None
    offset = 1
    while step_count is None or offset <= step_count + 2:
        answers = {}
        errors = {}
        interrupted = []

        def caller(index, payload):
            timeout = gevent.Timeout(60)  # never fires by itself: Trickle raises it
            timeout.start()
            trickle.timeouts[gevent.getcurrent()] = timeout
            try:
                answers[index] = root.callRemote("echo", payload)
            except gevent.Timeout as exc:
                if exc is not timeout:
                    raise
                interrupted.append(index)
            except Exception as exc:
                errors[index] = exc
            finally:
                timeout.close()
                trickle.timeouts.pop(gevent.getcurrent(), None)

        trickle.interrupt_at = trickle.sends + offset
        first = trickle.sends
        jobs = [gevent.spawn(caller, i, p) for i, p in enumerate(payloads)]
        done = gevent.joinall(jobs, timeout=5)
        for job in jobs:
            job.kill()
        assert len(done) == len(jobs), (
            f"interrupt at send {offset} of a round: {len(jobs) - len(done)} call(s) never "
            f"answered (bytes lost from the stream); answered {sorted(answers)}, "
            f"interrupted {interrupted}")
        assert not errors, (f"interrupt at send {offset} of a round broke the connection: "
                            f"{errors}")
        for index, payload in enumerate(payloads):
            if index not in interrupted:
                assert answers.get(index) == payload, (
                    f"interrupt at send {offset}: call {index} got {answers.get(index)!r:.60}")
        if step_count is None:
            step_count = trickle.sends - first
        offset += 1
    return step_count


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_a_write_interrupted_at_every_send_never_loses_or_mangles_a_byte(
        transport, pb_server, caplog, server_context, client_context):
    """Defect 1: ``flush`` kept the previous chunk's count in ``sent``.

    A socket takes one byte per send; in each round four callers send at
    once, and the writer's own ``gevent.Timeout`` fires at its first send,
    then its second, ... past the round's last send. Every call that was not
    interrupted gets its answer, and the server never sees a broken frame.
    """
    tls = transport == "tls"
    server = pb_server(Echo(), ssl_context=server_context if tls else None)
    sock = socket.create_connection(server.address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one byte per segment
    if tls:
        sock = wrap_tls(sock, client_context, server_side=False, server_hostname="localhost")
        sock.do_handshake()
    sock.settimeout(None)
    trickle = Trickle(sock)
    connection, root = _connect(trickle, server.address)
    try:
        with caplog.at_level(logging.WARNING, logger="pbgreen"):
            # The writer's own message first shorter, then longer, than what
            # queued behind it: a wrong tail is then garbage, or nothing.
            steps = _interrupted_calls(root, trickle, PAYLOADS)
            steps += _interrupted_calls(root, trickle, PAYLOADS[::-1])
            trickle.interrupt_at = None
            for n in range(20):
                with gevent.Timeout(10, AssertionError("a call after the interruptions hung")):
                    assert root.callRemote("echo", [n, "x" * n]) == [n, "x" * n]
        assert steps > 160, "the rounds did not write what they were meant to"
        assert trickle.interrupted > steps // 2, "the rounds did not interrupt the callers"
        assert connection.connected
        assert not _protocol_errors(caplog), _protocol_errors(caplog)
        assert len(server.connections) == 1
    finally:
        connection.close()


class Relay:
    """A TCP relay whose client-to-server direction passes bytes only within a budget.

    ``allow(n)`` lets ``n`` more bytes through (``None``: no limit). The
    relay's receiving socket has a small buffer, so a client whose bytes are
    not let through soon blocks in ``send``.
    """

    def __init__(self, target):
        self.target = target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.address = self.listener.getsockname()
        self.budget = None
        self.forwarded = 0
        self._more = gevent.event.Event()
        self._sockets = [self.listener]
        self._jobs = [gevent.spawn(self._run)]

    def allow(self, count):
        self.budget = count
        self._more.set()

    def _run(self):
        client, _ = self.listener.accept()
        server = socket.create_connection(self.target)
        self._sockets += [client, server]
        self._jobs.append(gevent.spawn(self._pump, server, client, False))
        self._pump(client, server, True)

    def _pump(self, source, sink, limited):
        try:
            while True:
                if limited:
                    while self.budget is not None and self.budget <= 0:
                        self._more.clear()
                        self._more.wait()
                    size = 16 * 1024 if self.budget is None else min(self.budget, 16 * 1024)
                else:
                    size = 64 * 1024
                data = source.recv(size)
                if not data:
                    break
                if limited:
                    self.forwarded += len(data)
                    if self.budget is not None:
                        self.budget -= len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        gevent.killall(self._jobs, timeout=5)
        for sock in self._sockets:
            sock.close()


def test_calls_timing_out_against_a_tls_peer_slow_to_read_leave_the_stream_intact(
        pb_server, caplog, server_context, client_context):
    """Defect 1 over TLS: a timeout met while a second chunk was being written.

    The peer (behind a relay) reads the first call's bytes, then stops
    reading. Two more calls queued behind it are being written when the
    first caller's 1 s timeout fires (on main the first caller is the greenlet
    writing them). Once the peer reads again, the calls queued behind are
    answered, and later calls work.
    """
    server = pb_server(Echo(), ssl_context=server_context)
    relay = Relay(server.address)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    connection = None
    try:
        sock.connect(relay.address)
        tls = wrap_tls(sock, client_context, server_side=False, server_hostname="localhost")
        with gevent.Timeout(10):
            tls.do_handshake()
        connection, root = _connect(tls, server.address)
        with gevent.Timeout(10):
            assert root.callRemote("echo", "warm") == "warm"
        first, second, third = b"1" * 300_000, b"2" * 300_000, b"3" * 300_000

        with caplog.at_level(logging.WARNING, logger="pbgreen"):
            relay.allow(0)  # the peer stops reading

            def first_caller():
                try:
                    with gevent.Timeout(1.0):
                        return root.callRemote("echo", first)
                except gevent.Timeout:
                    return "timed out"
            first_job = gevent.spawn(first_caller)
            gevent.sleep(0)  # its bytes are being written, and wait for room
            others = [gevent.spawn(root.callRemote, "echo", data) for data in (second, third)]
            gevent.sleep(0)  # theirs are queued behind
            relay.allow(len(first) + 4096)  # the first call's bytes (and a bit) get through
            first_job.join(timeout=10)
            assert first_job.dead
            # Its answer may come (if its writing did not wait for the others'
            # bytes) or not; if its greenlet was the one writing, the timeout
            # fired in the middle of writing the calls queued behind it.
            assert first_job.get() in ("timed out", first)
            relay.allow(None)  # the peer reads everything again
            done = gevent.joinall(others, timeout=10)
            for job in others:
                job.kill()
            assert len(done) == 2, "calls queued behind the timed-out one never got answers"
            assert [job.get() for job in others] == [second, third]
            for n in range(5):
                with gevent.Timeout(10, AssertionError("a later call hung")):
                    assert root.callRemote("echo", n) == n
        assert connection.connected
        assert not _protocol_errors(caplog), _protocol_errors(caplog)
    finally:
        if connection is not None:
            connection.close()
        sock.close()
        relay.close()


# ------------------------------------------------------- 2. bounded buffers


CALLS_NOT_READ = 10_000
ANSWER_SIZE = 64 * 1024
# Growth allowed while a peer sends 10,000 calls answered with 64 KiB each and
# reads nothing: the unbounded server grows by ~650 MB. Whatever high-water
# mark is chosen, 100 MB is far above it and far below that.
MAX_GROWTH = 32 * 1024 * 1024  # docs/limits.md states this bound


@pytest.mark.timeout(120)
def test_a_peer_that_never_reads_cannot_grow_the_server_or_slow_the_others(
        server_process, pb_client):
    """Defect 2: a client that sends calls and never reads made the server keep every answer.

    A raw client sends 10,000 calls answered with 64 KiB each and reads
    nothing. The server's resident memory grows by less than ``MAX_GROWTH``,
    another client's median latency stays near idle, and once the slow client
    reads, it gets every answer (back-pressure) or is disconnected (dropped).
    """
    server = server_process()
    bystander = pb_client(server.address[1]).getRootObject()

    def timed_echo(n):
        start = time.monotonic()
        with gevent.Timeout(30, AssertionError("the bystander's call hung")):
            assert bystander.callRemote("echo", n) == n
        return time.monotonic() - start

    idle = statistics.median([timed_echo(n) for n in range(50)])
    baseline = server.rss()
    slow = _raw_pb(server.address, rcvbuf=64 * 1024)
    try:
        slow.sendall(b"".join(_message(n, b"big", ANSWER_SIZE)
                              for n in range(1, CALLS_NOT_READ + 1)))
        busy = []
        peak = 0
        end = time.monotonic() + 3
        while time.monotonic() < end:
            busy.append(timed_echo(len(busy)))
            peak = max(peak, server.rss() - baseline)
            if peak > MAX_GROWTH:
                break
            with gevent.Timeout(30):
                if bystander.callRemote("count") >= CALLS_NOT_READ:
                    peak = max(peak, server.rss() - baseline)
                    break
        assert peak < MAX_GROWTH, (
            f"the server grew by {peak / 2**20:.0f} MiB for a client that reads nothing "
            f"({bystander.callRemote('count')} of {CALLS_NOT_READ} answers of "
            f"{ANSWER_SIZE // 1024} KiB made)")
        assert statistics.median(busy) <= max(2 * idle, 0.005), (
            f"bystander median latency {statistics.median(busy) * 1000:.1f} ms while the "
            f"slow client's answers piled up (idle: {idle * 1000:.1f} ms)")

        # Now it reads: everything arrives (back-pressure) or it was dropped.
        decoder = banana.Decoder(vocab=True)
        answered = set()
        with gevent.Timeout(60, AssertionError(f"the slow client got {len(answered)} answers "
                                               "and then nothing")):
            while len(answered) < CALLS_NOT_READ:
                replies = _replies(slow, decoder)
                if not replies:
                    break  # dropped: allowed
                for reply in replies:
                    assert reply[0] == b"answer" and len(reply[2]) == ANSWER_SIZE, reply[:2]
                    answered.add(reply[1])
                peak = max(peak, server.rss() - baseline)
        if len(answered) < CALLS_NOT_READ:  # dropped, not answered: allowed, but then closed
            assert not _still_open(slow), f"only {len(answered)} answers, and no disconnect"
        else:
            assert answered == set(range(1, CALLS_NOT_READ + 1))
        assert peak < MAX_GROWTH, f"the server grew by {peak / 2**20:.0f} MiB while draining"
        assert timed_echo(-1) < 5
    finally:
        slow.close()


def _still_open(sock):
    with gevent.Timeout(5, False):
        try:
            return bool(sock.recv(1))
        except OSError:
            return False
    return True


# ------------------------------------------------- 3. answers behind the backlog


def test_answers_leave_as_each_call_finishes_while_the_backlog_drains(pb_server, pb_client):
    """Defect 3: a worker draining the backlog did not write the answers it made.

    With ``max_calls=1`` two instant calls and a slow one wait in line. The
    slow one waits until the test has seen both instant answers: the answers
    must not be held until the slow call ends.
    """
    release = gevent.event.Event()

    class Root(pb.Root):
        def remote_instant(self, n):
            return n

        def remote_slow(self):
            release.wait(10)
            return "slow"

    root = pb_client(pb_server(Root(), max_calls=1)).getRootObject()
    first = root.callRemoteAsync("instant", 1)
    second = root.callRemoteAsync("instant", 2)
    slow = root.callRemoteAsync("slow")
    try:
        ready = gevent.wait([first, second], timeout=3)
        assert len(ready) == 2, ("answers of finished calls were held back while the worker "
                                 "ran the next call from the backlog")
        assert (first.get(), second.get()) == (1, 2)
        assert not slow.ready()
    finally:
        release.set()
    assert slow.get(timeout=10) == "slow"


# ------------------------------------------------------- 4. cache overtaken


class Shared(pb.Cacheable):
    def __init__(self):
        self.value = 1
        self.observers = []

    def getStateToCacheAndObserveFor(self, perspective, observer):
        gevent.sleep(0)  # user code may yield (a log call, a lock, a callRemote)
        self.observers.append(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)

    def set(self, value):
        self.value = value
        for observer in self.observers:
            observer.callRemote("set", value)


class SharedCopy(pb.RemoteCache):
    def observe_set(self, value):
        self.value = value


pb.setUnjellyableForClass(Shared, SharedCopy)


def test_a_cache_sent_twice_at_once_arrives_whole_both_times(pb_server, pb_client):
    """Defect 4: the second answer's ``cached`` reference overtook the first copy.

    ``getStateToCacheAndObserveFor`` yields; two calls return the same
    Cacheable at once. Both callers get a working ``RemoteCache``.
    """
    shared = Shared()

    class Root(pb.Root):
        def remote_get(self):
            return shared

        def remote_set(self, value):
            shared.set(value)
            return value

    client = pb_client(pb_server(Root()))
    root = client.getRootObject()
    jobs = [gevent.spawn(root.callRemote, "get") for _ in range(2)]
    gevent.joinall(jobs, timeout=10)
    for job in jobs:
        assert job.dead, "a call returning the cache never finished"
        if job.exception is not None:
            raise AssertionError(f"a caller got {job.exception!r}") from job.exception
    copies = [job.value for job in jobs]
    assert all(type(c) is SharedCopy and c.value == 1 for c in copies), copies
    assert root.callRemote("set", 5) == 5
    _wait_until(lambda: all(c.value == 5 for c in copies), 5, "the update never arrived")
    assert client.connection.connected


# ---------------------------------------- 5. malformed messages (over a socket)


@pytest.mark.parametrize("message", [
    [b"answer", [], 1],
    [b"error", [], 1],
    [b"answer", [[1]], [b"list"]],
], ids=["answer-list-id", "error-list-id", "answer-nested-list-id"])
def test_a_malformed_message_is_a_protocol_error_that_closes_only_its_connection(
        message, pb_server, pb_client, caplog):
    """Defect 5: ``[b'answer', [], 1]`` raised ``TypeError`` in the reader greenlet."""
    server = pb_server(Echo())
    bystander = pb_client(server).getRootObject()
    with caplog.at_level(logging.WARNING, logger="pbgreen"):
        sock = _raw_pb(server.address)
        try:
            sock.sendall(banana.encode(message, vocab=True))
            assert _closed_by_peer(sock)
        finally:
            sock.close()
    assert _protocol_errors(caplog), (
        "the server logged no protocol error (the reader died of another exception?); "
        f"log: {[r.getMessage() for r in caplog.records]}")
    assert bystander.callRemote("echo", 5) == 5
    _wait_until(lambda: len(server.connections) == 1, 5, "the broken connection stayed")


# ------------------------------------------------- 6. objects outlive their calls


def test_an_object_the_client_dropped_dies_while_the_connection_stays_idle(
        pb_server, pb_client):
    """Defect 6: the idle reader still held the last call, and with it its target."""
    made = []

    class Child(pb.Referenceable):
        def remote_ping(self):
            return "pong"

    class Root(pb.Root):
        def remote_make(self):
            child = Child()
            made.append(weakref.ref(child))
            return child

    root = pb_client(pb_server(Root())).getRootObject()
    child = root.callRemote("make")
    assert child.callRemote("ping") == "pong"
    del child
    gc.collect()
    # No more traffic from the test: the decref is the last message.
    _wait_until(lambda: made[0]() is None, 1.0,
                "the server kept an object alive after its client released it")


def test_the_arguments_of_an_answered_call_are_not_kept(pb_server, pb_client):
    """Defect 6: the arguments of the last call stayed alive after it was answered."""
    marker = "argument-" + uuid.uuid4().hex

    class Root(pb.Root):
        def remote_size(self, values):
            return len(values)

    root = pb_client(pb_server(Root())).getRootObject()
    assert root.callRemote("size", [marker] + ["y" * 1000] * 100) == 101

    def kept():
        return any(type(o) is list and o and type(o[0]) is str and o[0] == marker
                   for o in gc.get_objects())
    _wait_until(lambda: not kept(), 1.0,
                "the server still holds the arguments of a call it answered")


# ------------------------------------------------- 7. one connection starves the others


FLOOD_BYTES = 16 * 1024 * 1024

# The flooder is a process of its own with blocking sockets, so that its
# sending competes with nothing in the test's hub.
FLOODER_SCRIPT = r"""
import socket, sys
port, size = int(sys.argv[1]), int(sys.argv[2])
block = bytes.fromhex(sys.argv[3])
sock = socket.create_connection(("127.0.0.1", port))
offer = b""
while len(offer) < 12:
    offer += sock.recv(12 - len(offer))
sock.sendall(bytes.fromhex("02 82 70 62 02 80 13 87 06 81"))
print("flooding", flush=True)
flood = block * (size // len(block))
sock.sendall(flood)
sock.sendall(bytes.fromhex(sys.argv[4]))  # one real call: its answer says the flood is read
answer = bytes.fromhex(sys.argv[5])
received = b""
while answer not in received:
    data = sock.recv(65536)
    if not data:
        sys.exit("the server hung up")
    received += data
print("done", flush=True)
"""


def test_a_connection_flooding_messages_that_need_no_answer_does_not_starve_the_others(
        server_process, pb_client):
    """Defect 7: the reader yielded only after an event it had to queue.

    A client (another process) writes 16 MB of valid messages that produce no
    event (``version``, a decref of the root, answer-less calls to an unknown
    object), then one real call. While the server works through them, a
    bystander calling ``echo`` gets many answers, none waiting more than a
    third of the flood (or 1 s).
    """
    server = server_process()
    bystander = pb_client(server.address[1]).getRootObject()
    assert bystander.callRemote("echo", 0) == 0
    block = (banana.encode([b"version", 6], vocab=True)
             + banana.encode([b"decref", b"root"], vocab=True)
             + _message(1, b"nothing", object_id=999_999, answer=0))
    flooder = gsubprocess.Popen(
        [sys.executable, "-c", FLOODER_SCRIPT, str(server.address[1]), str(FLOOD_BYTES),
         block.hex(), _message(2, b"echo", 7).hex(),
         banana.encode([b"answer", 2, 7], vocab=True).hex()],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        with gevent.Timeout(30, AssertionError("the flooder did not start")):
            assert flooder.stdout.readline() == b"flooding\n"
        finished = gevent.event.Event()
        waiter = gevent.spawn(lambda: (flooder.stdout.readline(), finished.set()))
        gevent.sleep(0.05)  # no event to wait for: the flood reaches the server first
        began = time.monotonic()
        latencies = []
        with gevent.Timeout(60, AssertionError("the flood was never worked through")):
            while not finished.is_set():
                start = time.monotonic()
                assert bystander.callRemote("echo", len(latencies)) == len(latencies)
                latencies.append(time.monotonic() - start)
            assert flooder.wait() == 0
        flood_time = time.monotonic() - began
        worst = max(latencies)
        assert len(latencies) >= 5 and worst < min(1.0, max(flood_time / 3, 0.1)), (
            f"while one connection sent {FLOOD_BYTES >> 20} MB in {flood_time:.1f} s, a "
            f"bystander got {len(latencies)} answers, the slowest after {worst:.2f} s")
    finally:
        if flooder.poll() is None:
            flooder.kill()
        flooder.wait()
        waiter.kill()
        flooder.stdout.close()


# ------------------------------------------------- 8. refusing many references


REFS = 30_000
REFUSAL_DEADLINE = 3.0  # Twisted takes well under a second for this


def _refused_value():
    return [b"list"] + [[b"remote", n] for n in range(1, REFS + 1)] \
        + [[b"evil.Unregistered", [b"dictionary"]]]


def test_refusing_arguments_with_many_references_is_quick_and_stalls_nobody(
        server_process, pb_client):
    """Defect 8: giving back the references of a refused value took O(N^2).

    A call whose argument holds 30,000 ``remote`` references and then an
    instance of an unregistered class is refused (``InsecureJelly``) within
    a few seconds, and a bystander is answered meanwhile.
    """
    server = server_process()
    bystander = pb_client(server.address[1]).getRootObject()
    assert bystander.callRemote("echo", 0) == 0
    sock = _raw_pb(server.address)
    try:
        sock.sendall(banana.encode([b"message", 1, b"root", b"take", 1,
                                    [b"tuple", _refused_value()], [b"dictionary"]],
                                   vocab=True))
        started = time.monotonic()
        with gevent.Timeout(REFUSAL_DEADLINE, AssertionError(
                "a bystander was not served within "
                f"{REFUSAL_DEADLINE} s while the server refused a value")):
            gevent.sleep(0.05)  # no event to wait for: the value reaches the server first
            assert bystander.callRemote("echo", 1) == 1
        decoder = banana.Decoder(vocab=True)
        left = max(0.1, REFUSAL_DEADLINE - (time.monotonic() - started))
        with gevent.Timeout(left, AssertionError(
                f"the refusal did not come within {REFUSAL_DEADLINE} s")):
            replies = []
            while not any(r[0] == b"error" for r in replies):
                found = _replies(sock, decoder)
                assert found, "the server hung up instead of refusing"
                replies += found
        error = next(r for r in replies if r[0] == b"error")
        assert error[1] == 1
        assert b"InsecureJelly" in banana.encode(error[2], vocab=False)
    finally:
        sock.close()


def test_refusing_an_answer_with_many_references_is_quick(pb_client):
    """Defect 8, caller side: an answer refused for an unregistered class."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    served = []

    def fake_server():
        conn, _ = listener.accept()
        served.append(conn)
        conn.sendall(OFFER)
        decoder = banana.Decoder(vocab=True)
        while True:
            data = conn.recv(65536)
            if not data:
                return
            for message in decoder.feed(data):
                if type(message) is list and message[:1] == [b"message"]:
                    conn.sendall(banana.encode([b"answer", message[1], _refused_value()],
                                               vocab=True))

    job = gevent.spawn(fake_server)
    try:
        client = pb_client(listener.getsockname()[1])
        root = client.getRootObject()
        started = time.monotonic()
        with pytest.raises(pb.InsecureJelly):
            with gevent.Timeout(60):
                root.callRemote("get")
        took = time.monotonic() - started
        assert took < REFUSAL_DEADLINE, (
            f"refusing an answer with {REFS} references took {took:.1f} s")
        assert client.connection.connected
        client.close()
        job.join(timeout=10)
    finally:
        job.kill()
        for conn in served:
            conn.close()
        listener.close()
