"""Details of the API.md contract that an outside test would try."""

from __future__ import annotations

import gc
import time
import types

import gevent
import pytest
from gevent import socket

import pbgreen as pb
from pbgreen import banana


class Thing(pb.Referenceable):
    pass


class Root(pb.Root):
    def rootObject(self, connection):
        self.connection = connection
        return self

    def remote_add(self, a, b):
        return a + b

    def remote_thing(self):
        return Thing()

    def remote_boom(self):
        raise ValueError("boom")

    def remote_group(self):
        raise ExceptionGroup("several", [ValueError("a"), KeyError("b")])

    def remote_ownTimeout(self):
        with gevent.Timeout(0.01):
            gevent.sleep(5)

    def remote_echo(self, value):
        return value


def table_size(root):
    return len(root.connection.protocol.local_objects)


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


def test_async_answers_nobody_reads_give_their_references_back(pb_server, pb_client):
    root = Root()
    ref = pb_client(pb_server(root)).getRootObject()
    base = table_size(root)
    for _ in range(20):
        ref.callRemoteAsync("thing")  # dropped unread
    with gevent.Timeout(5):
        while True:
            ref.callRemote("add", 1, 1)
            gc.collect()
            if table_size(root) == base:
                break
            gevent.sleep(0.01)


def test_a_send_interrupted_by_a_timeout_abandons_the_call():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def mute_server():  # does the handshake, then never reads again
        conn, _ = listener.accept()
        conn.sendall(bytes.fromhex("02 80 02 82 70 62 04 82 6e 6f 6e 65 02 80 13 87 06 81"))
        gevent.sleep(30)
        conn.close()
    job = gevent.spawn(mute_server)
    client = pb.PBClient("127.0.0.1", listener.getsockname()[1], timeout=5)
    try:
        ref = client.getRootObject()
        for _ in range(40):
            with pytest.raises(gevent.Timeout):
                with gevent.Timeout(0.02):
                    ref.callRemote("echo", b"x" * 600_000)
        assert client.connection.protocol.pending == {}
    finally:
        client.close()
        job.kill()
        listener.close()


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
    registry = pb.jelly.globalSecurity
    assert registry.unjellyableFor(b"shapes_tree.Shape") is Shape  # the base too
    assert registry.unjellyableFor(b"shapes_tree.Alias") is Square  # by attribute name
    ref = pb_client(pb_server(Root())).getRootObject()
    assert type(ref.callRemote("echo", Shape())) is Shape


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


def test_logins_leave_no_disconnect_hooks_behind(pb_server, pb_client):
    class Realm:
        def requestAvatar(self, avatar_id, mind, *interfaces):
            return interfaces[0], pb.Avatar(), lambda: None
    server = pb_server(pb.Portal(Realm(), [pb.InMemoryPasswordChecker(a=b"b")]))
    client = pb_client(server)
    for _ in range(20):
        avatar = client.login(pb.UsernamePassword(b"a", b"b"))
        del avatar
    gc.collect()
    connection = next(iter(server.connections))
    with gevent.Timeout(5):
        while connection.protocol._on_lost:
            client.getRootObject()  # give the decrefs a chance to go out
            gc.collect()
            gevent.sleep(0.01)


def test_the_first_refusal_already_slows_the_next_attempt(pb_server, pb_client):
    class Realm:
        def requestAvatar(self, avatar_id, mind, *interfaces):
            return interfaces[0], pb.Avatar(), lambda: None
    server = pb_server(pb.Portal(Realm(), [pb.InMemoryPasswordChecker(a=b"b")]))
    client = pb_client(server)
    with pytest.raises(pb.UnauthorizedLogin):
        client.login(pb.UsernamePassword(b"a", b"wrong"))
    root = next(iter(server.connections)).protocol.local_objects[b"root"].object
    assert root._next_turn > time.monotonic()  # the second attempt will wait


def test_encode_errors_name_the_limit():
    with pytest.raises(banana.EncodeError, match="too long"):
        banana.encode(b"x" * (banana.SIZE_LIMIT + 1))
