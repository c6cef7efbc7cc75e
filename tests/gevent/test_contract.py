"""Details of the API.md contract that an outside test would try."""

from __future__ import annotations

import time
import types
import weakref

import gevent
import pytest
from gevent import socket

import pbgreen as pb
from pbgreen import banana
from pbgreen.testing import leftovers, snapshot


class Thing(pb.Referenceable):
    pass


class Root(pb.Root):
    def __init__(self):
        self.things = []  # weakrefs to every Thing handed out

    def remote_add(self, a, b):
        return a + b

    def remote_thing(self):
        thing = Thing()
        self.things.append(weakref.ref(thing))
        return thing

    def remote_boom(self):
        raise ValueError("boom")

    def remote_group(self):
        raise ExceptionGroup("several", [ValueError("a"), KeyError("b")])

    def remote_ownTimeout(self):
        with gevent.Timeout(0.01):
            gevent.sleep(5)

    def remote_echo(self, value):
        return value


def test_call_remote_async_is_an_async_result(pb_server, pb_client):
    ref = pb_client(pb_server(Root())).getRootObject()
    results = [ref.callRemoteAsync("add", i, 1) for i in range(20)]
    assert set(gevent.wait(results, timeout=10)) == set(results)
    assert [r.value for r in results] == list(range(1, 21))
    assert all(r.successful() and r.exception is None for r in results)
    failed = ref.callRemoteAsync("boom")
    gevent.joinall([failed], timeout=10)
    assert not failed.successful() and isinstance(failed.exception, ValueError)
    with pytest.raises(ValueError):
        failed.get_nowait()


def test_async_answers_nobody_reads_give_their_references_back(pb_server, pb_client,
                                                               wait_until):
    root = Root()
    ref = pb_client(pb_server(root)).getRootObject()
    for _ in range(20):
        ref.callRemoteAsync("thing")  # dropped unread
    wait_until(lambda: len(root.things) == 20, message="not every call ran")

    def released():
        ref.callRemote("add", 1, 1)  # traffic, in case decrefs wait for the next write
        return all(thing() is None for thing in root.things)
    wait_until(released, message=lambda: f"the server still holds "
               f"{sum(thing() is not None for thing in root.things)} of 20 Things")


def test_a_send_interrupted_by_a_timeout_abandons_the_call():
    """Calls cut short while their bytes wait to be sent: whole frames, no call left waiting.

    The server reads nothing until the 40 calls have timed out, then reads
    everything, answers only the last (fresh) call and never the abandoned
    ones: a call the client did not forget would wait forever.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    start_reading = gevent.event.Event()
    received = []

    def slow_server():  # does the handshake, reads nothing until told to
        conn, _ = listener.accept()
        try:
            conn.sendall(bytes.fromhex("02 80 02 82 70 62 04 82 6e 6f 6e 65 02 80 13 87 06 81"))
            start_reading.wait(30)
            decoder = banana.Decoder(vocab=True)
            while data := conn.recv(1 << 20):
                for message in decoder.feed(data):
                    received.append(message)
                    if message[0] == b"message" and message[5] == [b"tuple", b"fresh"]:
                        conn.sendall(banana.encode([b"answer", message[1], b"fresh"]))
        finally:
            conn.close()
    job = gevent.spawn(slow_server)
    client = pb.PBClient("127.0.0.1", listener.getsockname()[1], timeout=5)
    try:
        before = snapshot()
        ref = client.getRootObject()
        for _ in range(40):
            with pytest.raises(gevent.Timeout):
                with gevent.Timeout(0.02):
                    ref.callRemote("echo", b"x" * 600_000)
        start_reading.set()
        with gevent.Timeout(10, AssertionError("the fresh call was never answered")):
            assert ref.callRemote("echo", b"fresh") == b"fresh"
        assert leftovers(before, 3) == []  # no call waiting, no writer stuck
    finally:
        client.close()
        job.join(timeout=5)
        listener.close()
    calls = [m for m in received if m[0] == b"message"]
    assert calls[-1][5] == [b"tuple", b"fresh"]
    # Each abandoned call went out whole or not at all, in order, once.
    assert all(m[2:6] == [b"root", b"echo", 1, [b"tuple", b"x" * 600_000]] for m in calls[:-1])
    ids = [m[1] for m in calls]
    assert ids == sorted(set(ids))


def test_unknown_client_options_fail_before_connecting():
    with pytest.raises(TypeError, match="timout"):
        pb.PBClient("127.0.0.1", 1, timout=1)


def test_exception_groups_arrive_as_copied_failures(pb_server, pb_client):
    ref = pb_client(pb_server(Root())).getRootObject()
    with pytest.raises(pb.CopiedFailure) as info:
        ref.callRemote("group")
    assert info.value.type == "builtins.ExceptionGroup"


def test_a_timeout_escaping_a_remote_method_is_answered(pb_server, pb_client):
    ref = pb_client(pb_server(Root())).getRootObject()
    with pytest.raises(pb.CopiedFailure) as info:
        with gevent.Timeout(5, AssertionError("the caller was never answered")):
            ref.callRemote("ownTimeout")
    assert info.value.type == "gevent.timeout.Timeout"
    assert ref.callRemote("add", 1, 2) == 3


def test_class_tree_registration_is_twisteds(pb_server, pb_client):
    module = types.ModuleType("shapes_tree")

    class Shape(pb.Copyable, pb.RemoteCopy):
        pass

    class Square(Shape):
        pass
    for cls in (Shape, Square):
        cls.__module__ = "shapes_tree"
    module.Shape, module.Square, module.Alias = Shape, Square, Square
    pb.setUnjellyableForClassTree(module, Shape)

    class SentAsAlias(pb.Copyable):
        def getTypeToCopy(self):
            return "shapes_tree.Alias"
    ref = pb_client(pb_server(Root())).getRootObject()
    assert type(ref.callRemote("echo", Shape())) is Shape  # the base too
    assert type(ref.callRemote("echo", Square())) is Square
    assert type(ref.callRemote("echo", SentAsAlias())) is Square  # by attribute name


def test_qualified_names_are_module_and_name_as_in_twisted():
    class Outer:
        class Inner(pb.Error):
            pass
    assert pb.errors.qual(Outer.Inner) == f"{__name__}.Inner"


def test_realm_and_checker_protocols_support_isinstance():
    class Realm:
        def requestAvatar(self, avatar_id, mind, *interfaces):
            return interfaces[0], None, lambda: None
    assert isinstance(Realm(), pb.IRealm)
    assert isinstance(pb.InMemoryPasswordChecker(), pb.ICredentialsChecker)
    assert not isinstance(object(), pb.IRealm)


def test_logins_leave_nothing_behind_on_a_long_lived_connection(pb_server, pb_client,
                                                                 wait_until, pbgreen_memory):
    """Each login whose avatar is dropped logs out, and keeps no hook or table entry.

    A connection that logs in two thousand times must not hold two thousand
    disconnect hooks (or anything else) for avatars long gone: pbgreen's
    memory does not grow with the number of logins.
    """
    logouts = []

    class Realm:
        def requestAvatar(self, avatar_id, mind, *interfaces):
            return interfaces[0], pb.Avatar(), lambda: logouts.append(avatar_id)
    server = pb_server(pb.Portal(Realm(), [pb.InMemoryPasswordChecker(a=b"b")]))
    client = pb_client(server)

    def log_in_and_out(times):
        expected = len(logouts) + times
        for _ in range(times):
            client.login(pb.UsernamePassword(b"a", b"b"))  # the avatar is dropped at once
        wait_until(lambda: len(logouts) == expected,
                   message=lambda: f"{expected - len(logouts)} logouts never ran")

    log_in_and_out(300)  # warm up: caches and free lists reach their size
    before = pbgreen_memory()
    log_in_and_out(2000)
    grown = pbgreen_memory() - before
    # Even the smallest object kept per login (an int in a list) costs more
    # than 32 bytes; what a run leaves anyway, whatever its length, has been
    # up to 20 KB (objects parked for reuse).
    assert grown < 2000 * 32, f"pbgreen holds {grown} bytes more after 2000 logins"
    assert logouts == [b"a"] * 2300  # each exactly once


def test_the_first_refusal_already_slows_the_next_attempt(pb_server, pb_client, monkeypatch):
    penalty = 0.4
    monkeypatch.setattr(pb.cred.PortalRoot, "first_penalty", penalty)
    monkeypatch.setattr(pb.cred.PortalRoot, "max_penalty", penalty)

    class Realm:
        def requestAvatar(self, avatar_id, mind, *interfaces):
            return interfaces[0], pb.Avatar(), lambda: None
    server = pb_server(pb.Portal(Realm(), [pb.InMemoryPasswordChecker(a=b"b")]))
    client = pb_client(server)
    with pytest.raises(pb.UnauthorizedLogin):
        client.login(pb.UsernamePassword(b"a", b"wrong"))
    started = time.monotonic()
    client.login(pb.UsernamePassword(b"a", b"b"))
    # A lower bound only, far under the penalty: a slow machine cannot fail it.
    assert time.monotonic() - started > penalty / 2, "the second attempt did not wait"


def test_encode_errors_name_the_limit():
    with pytest.raises(banana.EncodeError, match="too long"):
        banana.encode(b"x" * (banana.SIZE_LIMIT + 1))
