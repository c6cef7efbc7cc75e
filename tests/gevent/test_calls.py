"""Calls, references and concurrency over real sockets on 127.0.0.1."""

from __future__ import annotations

import gc
import weakref

import gevent
import pytest

import pbgreen as pb


class Child(pb.Referenceable):
    def remote_hello(self, name):
        return "hello " + name


class Root(pb.Root):
    def __init__(self):
        self.child = Child()
        self.connections = []
        self.release = gevent.event.Event()
        self.handed_out = []  # weakrefs to the fresh Child objects sent by reference
        self.slow_calls = []  # values of the calls that entered remote_slow

    def fresh_child(self):
        child = Child()
        self.handed_out.append(weakref.ref(child))
        return child

    def released(self):
        """Whether every fresh Child handed out is gone (the peer gave it back)."""
        return all(child() is None for child in self.handed_out)

    def rootObject(self, connection):
        self.connections.append(connection)
        return self

    def remote_echo(self, *args, **kwargs):
        return [list(args), kwargs]

    def remote_add(self, a, b, c=0):
        return a + b + c

    def remote_getChild(self):
        return self.child

    def remote_getChildTwice(self):
        return [self.child, self.child]

    def remote_getFreshChildTwice(self):
        child = self.fresh_child()
        return [child, child]

    def remote_isChild(self, x):
        return x is self.child

    def remote_returnIt(self, x):
        return x

    def remote_callback(self, ref, value):
        return ref.callRemote("ping", value)

    def remote_slow(self, value):
        self.slow_calls.append(value)
        self.release.wait(10)
        return value

    def remote_slowFreshChild(self):
        self.release.wait(10)
        return self.fresh_child()


class Pinger(pb.Referenceable):
    def __init__(self):
        self.seen = []

    def remote_ping(self, value):
        self.seen.append(value)
        return value * 2


@pytest.fixture
def root():
    return Root()


def test_echo_args_kwargs_and_basic_types(pb_server, pb_client, root):
    ref = pb_client(pb_server(root)).getRootObject()
    value = ["text", b"bytes", 0, -1, 2 ** 31, -(2 ** 70), 1.5, None, True, False,
             (1, 2), {"k": [1]}, {3}, frozenset([4])]
    assert ref.callRemote("echo", *value, key="word") == [value, {"key": "word"}]
    assert ref.callRemote("add", 1, 2, c=3) == 6


def test_returned_reference_is_callable_and_comes_back_as_the_original(pb_server, pb_client, root):
    ref = pb_client(pb_server(root)).getRootObject()
    child = ref.callRemote("getChild")
    assert isinstance(child, pb.RemoteReference)
    assert child.callRemote("hello", "bob") == "hello bob"
    assert ref.callRemote("isChild", child) is True
    assert ref.callRemote("getChild") is child  # one live handle per peer object


def test_client_object_sent_and_returned_is_the_same_object(pb_server, pb_client, root):
    ref = pb_client(pb_server(root)).getRootObject()
    mine = Pinger()
    assert ref.callRemote("returnIt", mine) is mine


def test_server_calls_back_into_client_during_clients_call(pb_server, pb_client, root):
    ref = pb_client(pb_server(root)).getRootObject()
    pinger = Pinger()
    assert ref.callRemote("callback", pinger, 21) == 42
    assert pinger.seen == [21]


def test_decref_lets_the_server_release_the_object(pb_server, pb_client, root, wait_until):
    ref = pb_client(pb_server(root)).getRootObject()
    children = ref.callRemote("getFreshChildTwice")
    assert children[0] is children[1]
    gc.collect()
    # held for as long as the client holds it
    assert children[0].callRemote("hello", "bob") == "hello bob"
    assert not root.released()
    del children

    def released():
        ref.callRemote("add", 0, 0)  # traffic, in case decrefs wait for the next write
        return root.released()
    wait_until(released, message="the server still holds the child")


def test_a_released_object_is_not_kept_alive_by_the_last_call_it_received(pb_server, pb_client,
                                                                            root, wait_until):
    """The last call a connection received must not pin its target once released.

    No traffic follows the decref here: a connection that goes quiet after
    its peer let go of an object must not keep that object (or the last
    call's arguments) alive until the next message arrives.
    """
    ref = pb_client(pb_server(root)).getRootObject()
    child = ref.callRemote("getFreshChildTwice")[0]
    assert child.callRemote("hello", "bob") == "hello bob"  # the last call: on the child
    del child
    wait_until(root.released, message="the server still holds the child after its decref")


def test_many_calls_in_flight_are_matched_to_their_callers(pb_server, pb_client, root):
    ref = pb_client(pb_server(root)).getRootObject()
    jobs = [gevent.spawn(ref.callRemote, "add", i, i) for i in range(200)]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    assert [job.value for job in jobs] == [2 * i for i in range(200)]


def test_call_remote_async(pb_server, pb_client, root):
    ref = pb_client(pb_server(root)).getRootObject()
    results = [ref.callRemoteAsync("add", i, 1) for i in range(50)]
    assert [r.get(timeout=10) for r in results] == list(range(1, 51))
    failing = ref.callRemoteAsync("nosuch")
    with pytest.raises(pb.NoSuchMethod):
        failing.get(timeout=10)


def test_pbanswer_false_returns_none_and_still_runs(pb_server, pb_client, root):
    ref = pb_client(pb_server(root)).getRootObject()
    pinger = Pinger()
    assert ref.callRemote("callback", pinger, 5, pbanswer=False) is None
    with gevent.Timeout(5):
        while not pinger.seen:
            gevent.sleep(0.01)
    assert pinger.seen == [5]


def test_timeout_abandons_the_call_and_the_late_answer_is_dropped(pb_server, pb_client, root):
    # test_contract.py checks that an abandoned call the server never
    # answers is not left waiting.
    ref = pb_client(pb_server(root)).getRootObject()
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            ref.callRemote("slow", "late")
    root.release.set()
    assert ref.callRemote("slow", "on time") == "on time"  # the late answer was not taken
    assert [ref.callRemote("add", i, 1) for i in range(10)] == list(range(1, 11))
    assert root.slow_calls == ["late", "on time"]


def test_late_answer_with_a_reference_is_given_back(pb_server, pb_client, root, wait_until):
    ref = pb_client(pb_server(root)).getRootObject()
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            ref.callRemote("slowFreshChild")
    root.release.set()
    wait_until(lambda: root.handed_out, message="the slow call never finished")

    def released():
        ref.callRemote("add", 0, 0)  # traffic, in case decrefs wait for the next write
        return root.released()
    wait_until(released, message="the server still holds the child nobody received")


def test_dead_reference_raises_at_once_after_close(pb_server, pb_client, root):
    client = pb_client(pb_server(root))
    ref = client.getRootObject()
    client.close()
    with pytest.raises(pb.DeadReferenceError):
        ref.callRemote("add", 1, 2)
    with pytest.raises(pb.DeadReferenceError):
        ref.callRemoteAsync("add", 1, 2)


def test_connection_lost_fails_every_call_in_flight(pb_server, pb_client, root, wait_until):
    server = pb_server(root)
    ref = pb_client(server).getRootObject()
    jobs = [gevent.spawn(ref.callRemote, "slow", i) for i in range(5)]
    wait_until(lambda: len(root.slow_calls) == 5, message="the calls never reached the server")
    server.stop()
    gevent.joinall(jobs, timeout=5)
    for job in jobs:
        assert isinstance(job.exception, pb.PBConnectionLost)


def test_notify_on_disconnect_runs_exactly_once(pb_server, pb_client, root, wait_until):
    server = pb_server(root)
    client = pb_client(server)
    ref = client.getRootObject()
    seen = []
    dropped = []
    ref.notifyOnDisconnect(seen.append)
    ref.notifyOnDisconnect(dropped.append)
    ref.dontNotifyOnDisconnect(dropped.append)
    client.close()
    client.close()
    wait_until(lambda: seen, message="the callback never ran")
    # Later than any second run of the callback could come: the server
    # noticed the disconnect too.
    (server_side,) = root.connections
    wait_until(lambda: not server_side.connected, message="the server never noticed")
    assert seen == [ref]
    assert dropped == []


def test_connect_refused_names_the_address():
    import socket
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(ConnectionRefusedError, match=f"127.0.0.1:{port}"):
        pb.PBClient("127.0.0.1", port, timeout=5)


def test_serve_forever_returns_after_stop(root):
    server = pb.PBServer(root, port=0, host="127.0.0.1")
    runner = gevent.spawn(server.serve_forever)
    gevent.sleep(0)
    with pb.PBClient("127.0.0.1", server.address[1], timeout=5) as client:
        assert client.getRootObject().callRemote("add", 1, 1) == 2
    server.stop()
    runner.join(timeout=5)
    assert runner.dead and runner.successful()


def test_connect_shorthand(pb_server, root):
    server = pb_server(root)
    ref = pb.connect("127.0.0.1", server.address[1], timeout=5)
    try:
        assert ref.callRemote("add", 40, 2) == 42
    finally:
        ref.broker.close()


def test_log_records_name_the_peer_and_nothing_goes_to_stdout(pb_server, pb_client, root,
                                                               caplog, capfd):
    import logging

    class Boom(pb.Root):
        def rootObject(self, connection):
            self.peer = connection.peer  # the client's address, as the server sees it
            return self

        def remote_boom(self):
            raise KeyError("k")
    boom = Boom()
    client = pb_client(pb_server(boom))
    with caplog.at_level(logging.DEBUG, logger="pbgreen"):
        with pytest.raises(KeyError):
            client.getRootObject().callRemote("boom")
    records = [r for r in caplog.records if "Peer Will Receive PB Traceback" in r.getMessage()]
    assert len(records) == 1 and records[0].name.startswith("pbgreen")
    assert str(boom.peer[1]) in records[0].getMessage()
    assert capfd.readouterr().out == ""


def test_stop_from_inside_a_remote_method_stops_the_server():
    class Stoppable(pb.Root):
        def remote_shutdown(self):
            self.server.stop()
            return "stopping"
    root = Stoppable()
    server = root.server = pb.PBServer(root, port=0, host="127.0.0.1")
    runner = gevent.spawn(server.serve_forever)
    gevent.sleep(0)
    client = pb.PBClient("127.0.0.1", server.address[1], timeout=5)
    try:
        try:
            client.getRootObject().callRemote("shutdown")
        except pb.PBConnectionLost:
            pass  # the answer may not get out before the connection closes
        runner.join(timeout=5)
        assert runner.dead and runner.successful()
        with pytest.raises(ConnectionRefusedError):
            pb.PBClient("127.0.0.1", server.address[1], timeout=2)
    finally:
        client.close()


def test_serve_forever_after_stop_returns_and_start_explains(root):
    server = pb.PBServer(root, port=0, host="127.0.0.1")
    runner = gevent.spawn(server.serve_forever)
    server.stop()
    runner.join(timeout=5)
    assert runner.dead and runner.successful()
    with pytest.raises(RuntimeError, match="create a new one"):
        server.start()


def test_a_root_must_be_a_flavor_or_a_portal():
    class NotARoot:
        def remote_x(self):
            return 1
    with pytest.raises(TypeError, match="pb.Root"):
        pb.PBServer(NotARoot(), port=0)
    server = pb.PBServer(root_or_portal=pb.Root(), port=0, host="127.0.0.1")
    server.stop()


def test_a_call_still_running_when_its_client_leaves_finishes(pb_server, pb_client,
                                                              wait_until):
    started, proceed, done = gevent.event.Event(), gevent.event.Event(), gevent.event.Event()
    server_sides = []

    class Slow(pb.Root):
        def rootObject(self, connection):
            server_sides.append(connection)
            return self

        def remote_work(self):
            started.set()
            proceed.wait(10)
            done.set()
    client = pb_client(pb_server(Slow()))
    client.getRootObject().callRemote("work", pbanswer=False)
    assert started.wait(5)
    client.close()
    wait_until(lambda: not server_sides[0].connected, message="the server never noticed")
    proceed.set()  # the call goes on only once its connection is gone
    assert done.wait(5)


def test_calls_and_answers_start_in_arrival_order(pb_server, pb_client):
    """The reader hands calls (and answers) straight to a waiting greenlet when
    nothing is queued ahead, and queues them otherwise: either way they start
    in the order they arrived, within one read and across reads."""
    started = []

    class Ordered(pb.Root):
        def remote_note(self, n):
            started.append(n)
            if n % 7 == 0:
                gevent.sleep(0)  # some yield, so later ones find workers busy
            return n

    root = pb_client(pb_server(Ordered())).getRootObject()
    for rounds in range(3):
        del started[:]
        results = [root.callRemoteAsync("note", n) for n in range(200)]
        assert [r.get(timeout=10) for r in results] == list(range(200))
        assert started == list(range(200))
