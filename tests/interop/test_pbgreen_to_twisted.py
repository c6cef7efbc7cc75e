"""pbgreen client -> real Twisted PB server (twisted_server.py in a subprocess)."""

import gc
import socket
import weakref

import gevent
import gevent.event
import pytest

import pbgreen as pb


@pytest.fixture
def root(twisted_server):
    """The Twisted server's root object over a fresh pbgreen connection."""
    with pb.PBClient(twisted_server.host, twisted_server.port, timeout=10) as client:
        yield client.getRootObject()


class Pinger(pb.Referenceable):
    """A client-side object the Twisted server calls back."""

    def __init__(self, root=None):
        self.root = root
        self.calls = []

    def remote_ping(self, value):
        self.calls.append(value)
        if self.root is not None:
            # Re-entrant: call the server while the server waits for us,
            # and while our own outer callRemote is still blocked.
            return self.root.callRemote("add", value, 1)
        return value * 2


class Unregistered(pb.Copyable):
    """A Copyable class the Twisted side never registered."""

    def __init__(self):
        self.x = 1


# --- handshake ----------------------------------------------------------------


def _recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_twisted_server_handshake_bytes(twisted_server):
    # What pbgreen's client must understand: the dialect list (no VOCAB yet),
    # then, once the connector picked 'pb', the acceptor's ['version', 6].
    with socket.create_connection(
        (twisted_server.host, twisted_server.port), timeout=10
    ) as sock:
        dialects = _recv_exactly(sock, 12)
        assert dialects == bytes.fromhex("02 80 02 82 70 62 04 82 6e 6f 6e 65")
        sock.sendall(bytes.fromhex("02 82 70 62") + bytes.fromhex("02 80 13 87 06 81"))
        assert _recv_exactly(sock, 6) == bytes.fromhex("02 80 13 87 06 81")


def test_client_completes_handshake_and_calls(twisted_server):
    with pb.PBClient(twisted_server.host, twisted_server.port, timeout=10) as client:
        root = client.getRootObject()
        assert isinstance(root, pb.RemoteReference)
        assert root.callRemote("add", 1, 2, c=3) == 6


def test_client_close_disconnects(twisted_server):
    client = pb.PBClient(twisted_server.host, twisted_server.port, timeout=10)
    root = client.getRootObject()
    assert root.callRemote("add", 2, 2) == 4
    client.close()
    with pytest.raises(pb.DeadReferenceError):
        root.callRemote("add", 1, 1)


# --- values -------------------------------------------------------------------


def test_echo_every_basic_type(root, values):
    pairs = [
        (name, [[value], {}], root.callRemote("echo", value))
        for name, value in values.basic_values()
    ]
    assert values.mismatches(pairs) == []


def test_echo_args_and_kwargs(root, values):
    named = values.basic_values()
    args = [value for _, value in named]
    kwargs = {name: value for name, value in named}
    result = root.callRemote("echo", *args, **kwargs)
    assert values.mismatches([("all", [args, kwargs], result)]) == []
    assert root.callRemote("add", 1, 2, c=3) == 6
    assert root.callRemote("add", 1, b=2) == 3
    assert root.callRemote("add", c=300, b=20, a=1) == 321


def test_shared_and_cyclic_structure(root):
    shared = [1]
    cyclic = [shared, shared]
    cyclic.append(cyclic)
    (echoed,), kwargs = root.callRemote("echo", cyclic)
    assert kwargs == {}
    assert echoed[0] == [1]
    assert echoed[0] is echoed[1]
    assert echoed[2] is echoed


def test_values_at_twisted_size_limits(root):
    big_bytes = b"x" * 655360
    big_str = "\u00e9" * (655360 // 2)  # 655360 bytes of UTF-8
    big_list = [0] * 655359  # plus the 'list' tag: 655360 elements
    assert root.callRemote("echo", big_bytes) == [[big_bytes], {}]
    assert root.callRemote("echo", big_str) == [[big_str], {}]
    assert root.callRemote("echo", big_list) == [[big_list], {}]


@pytest.mark.parametrize(
    "too_big",
    [b"x" * 655361, "y" * 655361, [0] * 655360, 2**448, -(2**448)],
    ids=["bytes", "str", "list", "int", "negative-int"],
)
def test_values_past_twisted_limits_are_refused_before_sending(root, too_big):
    # Twisted would drop the connection on receiving these; pbgreen must
    # refuse them locally and keep the connection.
    with pytest.raises(Exception) as info:
        root.callRemote("echo", too_big)
    assert not isinstance(info.value, pb.CopiedFailure), "it was sent"
    assert not isinstance(info.value, (pb.PBConnectionLost, pb.DeadReferenceError))
    assert root.callRemote("add", 1, 2) == 3


def test_many_calls_in_flight_are_matched(root):
    calls = [root.callRemoteAsync("echo", i, tag=str(i)) for i in range(30)]
    assert [call.get(timeout=10) for call in calls] == [
        [[i], {"tag": str(i)}] for i in range(30)
    ]


def test_answers_out_of_order_are_matched(root):
    # The Twisted server answers the waiters in reverse order.
    waiting = [root.callRemoteAsync("waitRelease", i) for i in range(5)]
    assert root.callRemote("release") == 5
    assert [w.get(timeout=10) for w in waiting] == [0, 1, 2, 3, 4]


def test_abandoned_call_late_answer_is_dropped(root):
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.3):
            root.callRemote("hang")
    assert root.callRemote("hangers") == 1
    # Now the server answers the abandoned call; pbgreen must drop the
    # late answer and keep the connection.
    assert root.callRemote("releaseHung", "late") == 1
    assert root.callRemote("add", 5, 6) == 11
    assert root.callRemote("echo", "still fine") == [["still fine"], {}]


# --- references ---------------------------------------------------------------


def test_returned_referenceable_is_called(root):
    ref = root.callRemote("getRef")
    assert isinstance(ref, pb.RemoteReference)
    assert ref.callRemote("hello", "bob") == "hello bob"


def test_reference_comes_back_as_same_object(root):
    ref = root.callRemote("getRef")
    # Twisted compares `x is self.child` on its side.
    assert root.callRemote("isChild", ref) is True
    assert root.callRemote("isChild", "not a ref") is False


def test_same_object_twice_in_one_answer(root):
    refs = root.callRemote("getTwoRefs")
    assert len(refs) == 2
    assert all(isinstance(r, pb.RemoteReference) for r in refs)
    assert [r.callRemote("hello", "x") for r in refs] == ["hello x", "hello x"]
    assert [root.callRemote("isChild", r) for r in refs] == [True, True]
    # Twisted counted two registrations of the child.
    assert root.callRemote("childRefcount") == 2


def test_own_referenceable_comes_back_as_original(root):
    mine = Pinger()
    # The server keeps its RemoteReference, so the luid stays alive and the
    # answer ['local', luid] must resolve to this very object.
    assert root.callRemote("keepAndReturn", mine) is mine
    assert root.callRemote("releaseKept") == 1


def test_server_calls_client_back_during_call(root):
    pinger = Pinger()
    assert root.callRemote("callback", pinger, 21) == 42
    assert pinger.calls == [21]


def test_reentrant_calls_both_ways(root):
    # Client -> server.callback -> client.ping -> server.add, all while the
    # outer callRemote blocks.
    pinger = Pinger(root)
    assert root.callRemote("callback", pinger, 20) == 21
    assert pinger.calls == [20]


# --- reference counting --------------------------------------------------------


def test_decref_returns_twisted_table_to_its_size(root, wait_for):
    baseline = root.callRemote("tableSize")
    ref = root.callRemote("getRef")
    assert root.callRemote("tableSize") == baseline + 1
    assert ref.callRemote("hello", "a") == "hello a"
    del ref
    gc.collect()
    assert wait_for(lambda: root.callRemote("tableSize") == baseline)
    assert root.callRemote("childRefcount") == 0


def test_decref_once_per_received_reference(root, wait_for):
    baseline = root.callRemote("tableSize")
    first, second = root.callRemote("getTwoRefs")
    assert root.callRemote("childRefcount") == 2
    del first
    gc.collect()
    # Still referenced once: the object must stay usable on the server.
    assert second.callRemote("hello", "still") == "hello still"
    assert root.callRemote("childRefcount") in (1, 2)
    assert root.callRemote("tableSize") == baseline + 1
    del second
    gc.collect()
    assert wait_for(lambda: root.callRemote("childRefcount") == 0)
    assert root.callRemote("tableSize") == baseline


def test_repeated_references_do_not_grow_the_table(root, wait_for):
    baseline = root.callRemote("tableSize")
    for i in range(50):
        ref = root.callRemote("getRef")
        assert ref.callRemote("hello", str(i)) == "hello %d" % i
        del ref
    index, fresh = root.callRemote("makeFresh")
    del fresh
    gc.collect()
    assert wait_for(lambda: root.callRemote("tableSize") == baseline)
    assert wait_for(lambda: root.callRemote("freshAlive", index) is False)


def test_twisted_decref_releases_client_object(root, wait_for):
    # Twisted decrefs our pinger when its method is done; pbgreen must then
    # forget it, so nothing keeps it alive on this side.
    pinger = Pinger()
    assert root.callRemote("callback", pinger, 1) == 2
    alive = weakref.ref(pinger)
    del pinger

    def collected():
        gc.collect()
        return alive() is None

    assert wait_for(collected)


# --- errors -------------------------------------------------------------------


def test_pb_error_subclass_with_local_class(root, my_error):
    with pytest.raises(my_error) as info:
        root.callRemote("raiseMyError")
    e = info.value
    assert isinstance(e, pb.CopiedFailure)
    assert isinstance(e, pb.Error)
    assert e.type == "interop_errors.MyError"
    assert e.getErrorMessage() == "my message"
    assert isinstance(e.remoteTraceback, str)
    assert e.trap(KeyError, my_error) is my_error
    with pytest.raises(pb.CopiedFailure) as again:
        e.trap(KeyError)
    assert again.value is e
    # Errors do not break the connection.
    assert root.callRemote("add", 1, 2) == 3


def test_except_clause_catches_pb_error_subclass(root, my_error):
    try:
        root.callRemote("raiseMyError")
    except my_error as e:
        caught = e
    else:
        pytest.fail("MyError was not raised")
    assert caught.getErrorMessage() == "my message"


def test_pb_error_subclass_without_local_class(root, my_error):
    with pytest.raises(pb.CopiedFailure) as info:
        root.callRemote("raiseOtherError")
    e = info.value
    assert not isinstance(e, my_error)
    assert e.type == "interop_errors.OtherError"
    assert e.getErrorMessage() == "other message"


def test_twisted_pb_error_is_pbgreen_error(root):
    with pytest.raises(pb.Error) as info:
        root.callRemote("raisePbError")
    e = info.value
    assert isinstance(e, pb.CopiedFailure)
    assert e.type == "twisted.spread.pb.Error"
    assert e.getErrorMessage() == "base error"


def test_plain_exception(root):
    with pytest.raises(ValueError) as info:
        root.callRemote("raisePlain")
    e = info.value
    assert isinstance(e, pb.CopiedFailure)
    assert not isinstance(e, pb.Error)
    assert e.type == "builtins.ValueError"
    assert e.getErrorMessage() == "plain failure"
    assert e.trap(ValueError) is ValueError
    assert root.callRemote("add", 1, 1) == 2


def test_deferred_failure_with_extra_keys(root):
    # Twisted's async failure path adds 'pickled' and '_frames' keys.
    with pytest.raises(KeyError) as info:
        root.callRemote("failLater")
    e = info.value
    assert isinstance(e, pb.CopiedFailure)
    assert e.type == "builtins.KeyError"
    assert e.getErrorMessage() == "'k'"
    assert root.callRemote("add", 1, 1) == 2


def test_no_such_method(root):
    with pytest.raises(AttributeError) as info:
        root.callRemote("nosuch", 1)
    e = info.value
    assert isinstance(e, pb.CopiedFailure)
    assert e.type == "twisted.spread.flavors.NoSuchMethod"
    assert e.getErrorMessage() == "No such method: remote_nosuch"
    assert root.callRemote("add", 1, 1) == 2


def test_refused_argument_is_insecure_jelly(root):
    # Twisted refuses the unregistered Copyable and answers with
    # twisted.spread.jelly.InsecureJelly, which pbgreen raises as its own.
    with pytest.raises(pb.InsecureJelly) as info:
        root.callRemote("echo", Unregistered())
    e = info.value
    assert isinstance(e, pb.CopiedFailure)
    assert e.type == "twisted.spread.jelly.InsecureJelly"
    assert "Unregistered" in e.getErrorMessage()
    assert root.callRemote("add", 1, 1) == 2


# --- the server going away -----------------------------------------------------


def test_dead_reference_after_server_killed(fresh_twisted_server):
    server = fresh_twisted_server
    with pb.PBClient(server.host, server.port, timeout=10) as client:
        root = client.getRootObject()
        child = root.callRemote("getRef")
        assert child.callRemote("hello", "x") == "hello x"
        gone = gevent.event.Event()
        notified = []

        def on_disconnect(ref):
            notified.append(ref)
            gone.set()

        root.notifyOnDisconnect(on_disconnect)

        server.kill()
        assert gone.wait(timeout=10)
        assert notified == [root]

        with pytest.raises(pb.DeadReferenceError):
            root.callRemote("add", 1, 2)
        with pytest.raises(pb.DeadReferenceError):
            child.callRemote("hello", "y")
        with pytest.raises(pb.DeadReferenceError):
            root.callRemoteAsync("add", 1, 2)
    # Closing the already-dead client does not notify again.
    assert notified == [root]


def test_call_in_flight_gets_connection_lost(fresh_twisted_server):
    server = fresh_twisted_server
    with pb.PBClient(server.host, server.port, timeout=10) as client:
        root = client.getRootObject()
        pending = root.callRemoteAsync("hang")
        # Calls are handled in order: once this answers, 'hang' is waiting
        # on the server.
        assert root.callRemote("hangers") == 1

        server.kill()
        with pytest.raises(pb.PBConnectionLost):
            pending.get(timeout=10)
        with pytest.raises(pb.DeadReferenceError):
            root.callRemote("add", 1, 2)


def test_blocked_caller_gets_connection_lost(fresh_twisted_server, wait_for):
    server = fresh_twisted_server
    with pb.PBClient(server.host, server.port, timeout=10) as client:
        root = client.getRootObject()
        outcome = []

        def caller():
            try:
                root.callRemote("hang")
            except pb.PBConnectionLost as e:
                outcome.append(e)

        g = gevent.spawn(caller)
        try:
            # The greenlet sends 'hang' once it first runs.
            assert wait_for(lambda: root.callRemote("hangers") == 1)
            server.kill()
            g.join(timeout=10)
            assert g.dead
        finally:
            g.kill()
        assert len(outcome) == 1
        assert isinstance(outcome[0], pb.PBConnectionLost)
