"""Hostile or broken bytes close only the offending connection."""

from __future__ import annotations

import logging
import tracemalloc

import gevent
import pytest
from gevent import socket

import pbgreen as pb
from pbgreen import banana

SERVER_OFFER = banana.encode(list(banana.DIALECTS), vocab=False)  # a PBServer's
CHOOSE_PB = bytes.fromhex("02 82 70 62")
VERSION = bytes.fromhex("02 80 13 87 06 81")


class Root(pb.Root):
    """Records the server's side of each connection (``conn.connected`` is public)."""

    def __init__(self):
        self.connections = []

    def rootObject(self, connection):
        self.connections.append(connection)
        return self

    def remote_add(self, a, b):
        return a + b


def _raw(server, handshake=True):
    sock = socket.create_connection(server.address, timeout=10)
    received = b""
    with gevent.Timeout(10):
        while len(received) < len(SERVER_OFFER):
            received += sock.recv(100)
    assert received.startswith(SERVER_OFFER)
    if handshake:
        sock.sendall(CHOOSE_PB + VERSION)
    return sock


def _wait_closed_by_peer(sock):
    """Read until the server closes the connection; fail after 10 s."""
    with gevent.Timeout(10, AssertionError("the server kept the connection open")):
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return
            if not data:
                return


HOSTILE = {
    "garbage type byte": b"\x05\xff\x00\x00",
    "ten GB string": banana.encode_b128(10 * 1024 ** 3) + b"\x82",
    "oversized list": bytes.fromhex("02 01 01 01 01 80"),
    "long prefix": b"\x01" * 65,
    "100000 nested lists": b"\x01\x80" * 100_000,
    "not a list": bytes.fromhex("05 81"),
    "unknown command": banana.encode([b"bogus", 1]),
    "wrong version": banana.encode([b"version", 5]),
    "wrong field count": banana.encode([b"message", 1]),
    "answer nobody asked for": banana.encode([b"answer", 99, 1]),
    "decref of unknown id": banana.encode([b"decref", 12345]),
}


# What the server may allocate, at its peak, while it reads one hostile
# message: a few receive buffers. A declared length believed before it is
# checked ("ten GB string") costs far more, or a MemoryError.
HOSTILE_PEAK_LIMIT = 8 * 1024 * 1024


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bytes_close_only_that_connection(name, pb_server, pb_client, caplog,
                                                  wait_until):
    root = Root()
    server = pb_server(root)
    bystander = pb_client(server).getRootObject()
    tracemalloc.start()  # the server runs in this process: its allocations are traced
    try:
        with caplog.at_level(logging.WARNING, logger="pbgreen"):
            sock = _raw(server)
            try:
                baseline = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                sock.sendall(HOSTILE[name])
                _wait_closed_by_peer(sock)
                peak = tracemalloc.get_traced_memory()[1] - baseline
            finally:
                sock.close()
    finally:
        tracemalloc.stop()
    assert any("protocol error" in r.getMessage() or "Version" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert peak < HOSTILE_PEAK_LIMIT, f"reading {name!r} took {peak} bytes at its peak"
    assert bystander.callRemote("add", 2, 3) == 5
    bystander_side, hostile_side = root.connections
    wait_until(lambda: not hostile_side.connected, message="the server kept the connection")
    assert bystander_side.connected


@pytest.mark.parametrize("garbage", [b"\x00\xff\xfe binary", b"GET / HTTP/1.0\r\n\r\n"])
def test_garbage_before_the_handshake(pb_server, pb_client, garbage, caplog):
    # Binary garbage fails at once; text is all "prefix" bytes to banana, so
    # it is the handshake deadline that ends it.
    server = pb_server(Root(), handshake_timeout=0.3)
    sock = _raw(server, handshake=False)
    try:
        with caplog.at_level(logging.WARNING, logger="pbgreen"):
            sock.sendall(garbage)
            _wait_closed_by_peer(sock)
    finally:
        sock.close()
    assert any("closing connection" in r.getMessage() for r in caplog.records)
    assert pb_client(server).getRootObject().callRemote("add", 1, 1) == 2


def test_truncated_frame_then_hang_up(pb_server, pb_client, wait_until):
    root = Root()
    server = pb_server(root)
    sock = _raw(server)
    whole = banana.encode([b"message", 1, b"root", b"add", 1, [b"tuple", 1, 2], [b"dictionary"]])
    sock.sendall(whole[:-3])
    sock.close()
    (server_side,) = root.connections
    wait_until(lambda: not server_side.connected, message="the server never saw the hang-up")
    assert pb_client(server).getRootObject().callRemote("add", 1, 1) == 2


def test_invalid_object_id_is_an_error_answer_not_a_disconnect(pb_server):
    server = pb_server(Root())
    sock = _raw(server)
    try:
        decoder = banana.Decoder(vocab=True)
        sock.sendall(banana.encode([b"message", 1, 77, b"add", 1, [b"tuple"], [b"dictionary"]]))
        sock.sendall(banana.encode([b"message", 2, b"root", b"add", 1, [b"tuple", 1, 2],
                                    [b"dictionary"]]))
        replies = []
        with gevent.Timeout(10):
            while len([r for r in replies if r[0] != b"version"]) < 2:
                replies += decoder.feed(sock.recv(65536))
        replies = [r for r in replies if r[0] != b"version"]
        assert replies[0][:2] == [b"error", 1]
        assert b"Invalid Object ID" in banana.encode(replies[0][2], vocab=False)
        assert replies[1] == [b"answer", 2, 3]
    finally:
        sock.close()


@pytest.mark.parametrize("reply,hang_up", [
    (b"HTTP/1.0 400 Bad Request\r\n\r\n", True),  # text, then the server hangs up
    (b"\x00\xff\xfe binary", False),  # not banana, and the server stays
], ids=["http-then-close", "binary-garbage"])
def test_a_pb_client_against_a_non_pb_server_fails_cleanly(reply, hang_up):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client_gone = gevent.event.Event()

    def other_server():
        conn, _ = listener.accept()
        try:
            conn.sendall(reply)
            if not hang_up:
                with gevent.Timeout(10):
                    while conn.recv(100):  # until the client closes
                        pass
                client_gone.set()
        finally:
            conn.close()
    job = gevent.spawn(other_server)
    try:
        with pytest.raises(pb.ProtocolError):
            pb.PBClient("127.0.0.1", listener.getsockname()[1], timeout=5)
        if not hang_up:
            assert client_gone.wait(5), "the client kept the socket open"
    finally:
        job.join(timeout=5)
        listener.close()


def test_calls_past_the_running_limit_wait_their_turn_then_are_refused(pb_server,
                                                                       pb_client):
    release = gevent.event.Event()
    five_running = gevent.event.Event()
    running = []

    class Slow(pb.Root):
        def remote_wait(self):
            running.append(1)
            if len(running) == 5:
                five_running.set()
            release.wait(10)
            return "done"
    server = pb_server(Slow(), max_calls=5)
    ref = pb_client(server).getRootObject()
    jobs = [gevent.spawn(ref.callRemote, "wait") for _ in range(55)]  # 5 run, 50 queue
    # The 55 calls were sent (their greenlets ran first) before the one
    # below, and the server reads them in order.
    assert five_running.wait(10)
    with pytest.raises(pb.Error, match="too many calls waiting"):
        ref.callRemote("wait")
    assert len(running) == 5  # the others waited their turn
    release.set()
    gevent.joinall(jobs, timeout=10, raise_error=True)
    assert [job.value for job in jobs] == ["done"] * 55
