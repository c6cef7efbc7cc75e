"""Hostile or broken bytes close only the offending connection."""

from __future__ import annotations

import logging
import resource

import gevent
import pytest
from gevent import socket

import pbgreen as pb
from pbgreen import banana

OFFER = bytes.fromhex("02 80 02 82 70 62 04 82 6e 6f 6e 65")
CHOOSE_PB = bytes.fromhex("02 82 70 62")
VERSION = bytes.fromhex("02 80 13 87 06 81")


class Root(pb.Root):
    def remote_add(self, a, b):
        return a + b


def _raw(server, handshake=True):
    sock = socket.create_connection(server.address, timeout=10)
    received = b""
    with gevent.Timeout(10):
        while len(received) < len(OFFER):
            received += sock.recv(100)
    assert received.startswith(OFFER)
    if handshake:
        sock.sendall(CHOOSE_PB + VERSION)
    return sock


def _closed_by_peer(sock):
    with gevent.Timeout(10):
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return True
            if not data:
                return True


HOSTILE = {
    "garbage type byte": b"\x05\xff\x00\x00",
    "ten GB string": banana._b128(10 * 1024 ** 3) + b"\x82",
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


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bytes_close_only_that_connection(name, pb_server, pb_client, caplog):
    server = pb_server(Root())
    bystander = pb_client(server).getRootObject()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with caplog.at_level(logging.WARNING, logger="pbgreen"):
        sock = _raw(server)
        try:
            sock.sendall(HOSTILE[name])
            assert _closed_by_peer(sock)
        finally:
            sock.close()
    assert any("protocol error" in r.getMessage() or "Version" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024, f"server grew by {grown_kib} KiB"
    assert bystander.callRemote("add", 2, 3) == 5
    assert len(server.connections) == 1


@pytest.mark.parametrize("garbage", [b"\x00\xff\xfe binary", b"GET / HTTP/1.0\r\n\r\n"])
def test_garbage_before_the_handshake(pb_server, pb_client, garbage, caplog):
    # Binary garbage fails at once; text is all "prefix" bytes to banana, so
    # it is the handshake deadline that ends it.
    server = pb_server(Root(), handshake_timeout=0.3)
    sock = _raw(server, handshake=False)
    try:
        with caplog.at_level(logging.WARNING, logger="pbgreen"):
            sock.sendall(garbage)
            assert _closed_by_peer(sock)
    finally:
        sock.close()
    assert any("closing connection" in r.getMessage() for r in caplog.records)
    assert pb_client(server).getRootObject().callRemote("add", 1, 1) == 2


def test_truncated_frame_then_hang_up(pb_server, pb_client):
    server = pb_server(Root())
    sock = _raw(server)
    whole = banana.encode([b"message", 1, b"root", b"add", 1, [b"tuple", 1, 2], [b"dictionary"]])
    sock.sendall(whole[:-3])
    sock.close()
    with gevent.Timeout(5):
        while server.connections and len(server.connections) > 0:
            gevent.sleep(0.01)
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


def test_a_pb_client_against_a_non_pb_server_fails_cleanly():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def http_server():
        conn, _ = listener.accept()
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        conn.close()
    job = gevent.spawn(http_server)
    try:
        with pytest.raises((pb.ProtocolError, ConnectionError)):
            pb.PBClient("127.0.0.1", listener.getsockname()[1], timeout=5)
    finally:
        job.join(timeout=5)
        listener.close()


def test_calls_past_the_running_limit_wait_their_turn_then_are_refused(pb_server,
                                                                       pb_client):
    release = gevent.event.Event()

    class Slow(pb.Root):
        def remote_wait(self):
            release.wait(10)
            return "done"
    server = pb_server(Slow(), max_calls=5)
    ref = pb_client(server).getRootObject()
    jobs = [gevent.spawn(ref.callRemote, "wait") for _ in range(55)]  # 5 run, 50 queue
    gevent.sleep(0.1)
    with pytest.raises(pb.Error, match="too many calls waiting"):
        ref.callRemote("wait")
    release.set()
    gevent.joinall(jobs, timeout=10, raise_error=True)
    assert [job.value for job in jobs] == ["done"] * 55
