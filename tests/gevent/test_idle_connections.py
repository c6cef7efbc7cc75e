"""An idle server connection holds no greenlet (issue 11, "lean connections").

After the handshake, and whenever PBServer's sweep finds it waiting for
bytes, a server connection's reader greenlet ends; a watcher on the socket
starts a new one when bytes arrive. These tests check that nothing is lost
by it: calls, disconnects and server stops all still work on a parked
connection.
"""

from __future__ import annotations

import gc

import gevent
import pytest

import pbgreen as pb
import pbgreen.server as pb_server_module


class Echo(pb.Root):
    def remote_echo(self, value):
        return value


def running_greenlets() -> int:
    """gevent greenlets started and not finished, in this process."""
    gc.collect()
    return sum(1 for g in gc.get_objects() if isinstance(g, gevent.Greenlet) and bool(g))


@pytest.fixture
def fast_sweep(monkeypatch):
    monkeypatch.setattr(pb_server_module, "PARK_INTERVAL", 0.05)


def test_idle_connections_keep_no_reader_greenlet_on_the_server(pb_server, pb_client,
                                                                wait_until):
    server = pb_server(Echo())
    before = running_greenlets()
    clients = [pb_client(server) for _ in range(20)]
    # Each client has its reader; the server's twenty readers parked after the handshake.
    wait_until(lambda: running_greenlets() <= before + len(clients),
               message="server connections kept a greenlet while idle")
    assert len(server.connections) == 20
    for number, client in enumerate(clients):
        assert client.getRootObject().callRemote("echo", number) == number


def test_a_connection_parked_by_the_sweep_still_answers(fast_sweep, pb_server, pb_client,
                                                        wait_until):
    server = pb_server(Echo())
    before = running_greenlets()
    client = pb_client(server)
    root = client.getRootObject()
    for round_ in range(3):
        assert root.callRemote("echo", round_) == round_  # the reader comes back for it
        wait_until(lambda: running_greenlets() <= before + 1,
                   message="the sweep did not park the idle connection")
    results = [root.callRemoteAsync("echo", n) for n in range(200)]
    assert [r.get(timeout=10) for r in results] == list(range(200))


def test_a_client_leaving_while_parked_is_noticed(fast_sweep, pb_server, pb_client,
                                                  wait_until):
    server = pb_server(Echo())
    before = running_greenlets()
    client = pb_client(server)
    assert client.getRootObject().callRemote("echo", 1) == 1
    wait_until(lambda: running_greenlets() <= before + 1)
    client.close()
    wait_until(lambda: not server.connections, message="the parked connection stayed")


def test_stopping_a_server_closes_parked_connections(pb_server, pb_client, wait_until):
    server = pb_server(Echo())
    client = pb_client(server)
    lost = gevent.event.Event()
    client.getRootObject().notifyOnDisconnect(lambda _ref: lost.set())
    server.stop()
    assert lost.wait(5), "the client never heard that the server closed its parked connection"
    assert not server.connections
