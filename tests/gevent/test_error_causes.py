"""Connection errors say who broke the connection, through ``__cause__``.

The peer broke PB (``ProtocolError``), the peer closed it (``ClosedByPeer``),
this side closed it (``ClosedLocally``): each reaches a waiting call as the
cause of ``PBConnectionLost`` and a later call as the cause of
``DeadReferenceError``.
"""

from __future__ import annotations

import gevent
import pytest
from gevent import socket
from gevent.event import Event

import pbgreen as pb
from pbgreen import banana


class Waits(pb.Root):
    def __init__(self):
        self.entered = Event()
        self.release = Event()

    def remote_wait(self):
        self.entered.set()
        self.release.wait(30)
        return "done"


def _call_in_background(root):
    call = gevent.spawn(root.callRemote, "wait")
    return call


def _lost(call):
    with gevent.Timeout(10, AssertionError("the waiting call was not failed")):
        call.join()
    error = call.exception
    assert isinstance(error, pb.PBConnectionLost), repr(error)
    return error


def _waiting_call(pb_server):
    """A server, a client, and a call of the client's that the server is running."""
    root_object = Waits()
    server = pb_server(root_object)
    client = pb.PBClient("127.0.0.1", server.address[1], timeout=10)
    root = client.getRootObject()
    call = _call_in_background(root)
    assert root_object.entered.wait(10)
    return root_object, server, client, root, call


def test_closed_locally_is_the_cause_when_this_side_closes(pb_server):
    root_object, server, client, root, call = _waiting_call(pb_server)
    client.close()
    error = _lost(call)
    assert isinstance(error.__cause__, pb.ClosedLocally)
    with pytest.raises(pb.DeadReferenceError) as dead:
        root.callRemote("wait")
    assert isinstance(dead.value.__cause__, pb.ClosedLocally)
    root_object.release.set()


def test_closed_by_peer_is_the_cause_when_the_server_goes(pb_server):
    root_object, server, client, root, call = _waiting_call(pb_server)
    server.stop()
    error = _lost(call)
    assert isinstance(error.__cause__, (pb.ClosedByPeer, ConnectionResetError)), \
        repr(error.__cause__)
    with pytest.raises(pb.DeadReferenceError) as dead:
        root.callRemote("wait")
    assert dead.value.__cause__ is error.__cause__
    root_object.release.set()
    client.close()


def test_protocol_error_is_the_cause_when_the_peer_breaks_pb():
    """A fake server answers the handshake, then sends bytes that are not PB."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    got_call = Event()

    def fake_server():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(banana.encode([b"pb", b"none"], vocab=False))
            received = b""
            while b"wait" not in received:  # the dialect choice, version, then the call
                data = conn.recv(1024)
                assert data, "the client hung up before calling"
                received += data
            got_call.set()
            conn.sendall(banana.encode([b"version", 6]))
            conn.sendall(banana.encode([b"no-such-command", 1]))
            conn.recv(1024)  # until the client hangs up

    server = gevent.spawn(fake_server)
    try:
        client = pb.PBClient("127.0.0.1", listener.getsockname()[1], timeout=10)
        root = client.getRootObject()
        call = _call_in_background(root)
        error = _lost(call)
        assert got_call.is_set()
        assert isinstance(error.__cause__, pb.ProtocolError)
        assert "unknown PB command" in str(error.__cause__)
        with pytest.raises(pb.DeadReferenceError) as dead:
            root.callRemote("wait")
        assert isinstance(dead.value.__cause__, pb.ProtocolError)
        client.close()
    finally:
        server.join(10)
        server.kill()
        listener.close()
