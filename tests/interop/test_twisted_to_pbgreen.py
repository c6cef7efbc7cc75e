"""Real Twisted PB client (twisted_client.py in a subprocess) -> pbgreen server.

The pbgreen server runs in the pytest process; the test waits for the Twisted
client cooperatively, so the server keeps serving meanwhile.
"""

import gc
import time
import weakref

import gevent
import gevent.event
import gevent.socket
import pytest

import pbgreen as pb

class Child(pb.Referenceable):
    def remote_hello(self, name):
        return "hello " + name


class InteropRoot(pb.Root):
    """The same methods as twisted_server.py's root, written for pbgreen."""

    def __init__(self, error_class):
        # interop_errors.MyError, a pbgreen.Error under the qualified name
        # the Twisted client checks for.
        self.error_class = error_class
        self.child = Child()
        self.fresh = []
        self.kept = []
        self.notes = []
        self.waiting = 0
        self.released = gevent.event.Event()
        self.hang_entered = gevent.event.Event()
        self.hang_release = gevent.event.Event()

    def remote_echo(self, *args, **kwargs):
        return [list(args), kwargs]

    def remote_add(self, a, b, c=0):
        return a + b + c

    def remote_returnIt(self, x):
        return x

    def remote_note(self, x):
        self.notes.append(x)
        return x

    def remote_notes(self):
        return self.notes

    def remote_raiseAndNote(self, x):
        self.notes.append(x)
        raise ValueError("noted %r" % (x,))

    def remote_getRef(self):
        return self.child

    def remote_isChild(self, x):
        return x is self.child

    def remote_getTwoRefs(self):
        return [self.child, self.child]

    def remote_makeFresh(self):
        child = Child()
        self.fresh.append(weakref.ref(child))
        return len(self.fresh) - 1, child

    def remote_makeFreshTwice(self):
        child = Child()
        self.fresh.append(weakref.ref(child))
        return len(self.fresh) - 1, [child, child]

    def remote_freshAlive(self, index):
        gc.collect()
        return self.fresh[index]() is not None

    def remote_callback(self, ref, value):
        # Blocks this call's greenlet until the Twisted client answers.
        return ref.callRemote("ping", value)

    def remote_keepAndReturn(self, x):
        self.kept.append(x)
        return x

    def remote_releaseKept(self):
        n = len(self.kept)
        del self.kept[:]
        return n

    def remote_raiseMyError(self):
        raise self.error_class("my message")

    def remote_raisePlain(self):
        raise ValueError("plain failure")

    def remote_waitRelease(self, value):
        self.waiting += 1
        if not self.released.wait(timeout=10):
            return "never released"
        return value

    def remote_release(self, expected):
        # Only returns once every waiter is blocked in its own greenlet: a
        # server that ran calls one at a time would never get here.
        deadline = time.monotonic() + 10
        while self.waiting < expected and time.monotonic() < deadline:
            gevent.sleep(0.01)
        self.released.set()
        return self.waiting

    def remote_hang(self):
        self.hang_entered.set()
        self.hang_release.wait(timeout=20)
        return "released"


@pytest.fixture
def served(serve_pbgreen, my_error):
    """(root, server) with a pbgreen PBServer serving a fresh InteropRoot."""
    root = InteropRoot(my_error)
    server = serve_pbgreen(root)
    yield root, server
    root.hang_release.set()
    root.released.set()


@pytest.fixture
def scenario(served, twisted_client):
    """scenario(name) -> the Twisted client's JSON result against pbgreen."""
    _, server = served

    def run(name):
        host, port = server.address
        return twisted_client(name, host, port).result()

    return run


# --- handshake, byte level -------------------------------------------------------


def _read_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError("connection closed after %r" % data)
        data += chunk
    return data


def _read_element(sock):
    """Read one banana element (only LIST, INT, STRING are expected here)."""
    prefix = b""
    while True:
        byte = _read_exactly(sock, 1)
        if byte[0] >= 0x80:
            break
        prefix += byte
    value = sum(b << (7 * i) for i, b in enumerate(prefix))
    kind = byte[0]
    if kind == 0x80:
        return [_read_element(sock) for _ in range(value)]
    if kind == 0x81:
        return value
    if kind == 0x82:
        return _read_exactly(sock, value)
    raise AssertionError("unexpected banana type byte %#x" % kind)


def _read_to_eof(sock):
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def _connect(server):
    sock = gevent.socket.create_connection(server.address, timeout=10)
    dialects = _read_element(sock)
    assert isinstance(dialects, list)
    assert b"pb" in dialects, dialects
    return sock


def test_handshake_and_call_bytes(served):
    _, server = served
    sock = _connect(server)
    try:
        # Pick 'pb' and send our version, as a Twisted connector does.
        sock.sendall(bytes.fromhex("02 82 70 62") + bytes.fromhex("02 80 13 87 06 81"))
        assert _read_exactly(sock, 6) == bytes.fromhex("02 80 13 87 06 81")
        # root.callRemote("add", 1, 2, c=3), exactly as Twisted writes it.
        sock.sendall(
            bytes.fromhex(
                "07 80 1a 87 01 81 04 82 72 6f 6f 74 03 82 61 64 64 01 81"
                " 03 80 0b 87 01 81 02 81"
                " 02 80 05 87 02 80 02 80 07 82 75 6e 69 63 6f 64 65 01 82 63 03 81"
            )
        )
        assert _read_exactly(sock, 8) == bytes.fromhex("03 80 1b 87 01 81 06 81")
    finally:
        sock.close()


def test_wrong_version_closes_connection(served):
    _, server = served
    sock = _connect(server)
    try:
        sock.sendall(bytes.fromhex("02 82 70 62") + bytes.fromhex("02 80 13 87 05 81"))
        with gevent.Timeout(10, AssertionError("pbgreen kept a version-5 peer")):
            rest = _read_to_eof(sock)
        # At most pbgreen's own version message came before the close.
        assert rest in (b"", bytes.fromhex("02 80 13 87 06 81"))
    finally:
        sock.close()


# --- scenarios driven by a real Twisted client -------------------------------------


def test_echo_every_basic_type(scenario, values):
    result = scenario("echo")
    assert result["mismatches"] == []
    assert result["checked"] == len(values.basic_values()) + 1
    assert result["shared_value"] is True
    assert result["shared_identity"] is True
    assert result["cycle_identity"] is True


def test_args_and_kwargs(scenario):
    result = scenario("args")
    assert result["add"] == 6
    assert result["echo_same"] is True, result["echo_repr"]


def test_returned_references(scenario):
    result = scenario("refs")
    assert result == {
        "is_remote_reference": True,
        "hello": "hello bob",
        "is_child": True,  # pbgreen's `x is self.child` held
        "two_refs": 2,
        "two_refs_remote": True,
        "two_hellos": ["hello x", "hello x"],
        "two_refs_are_child": [True, True],
    }


def test_server_calls_twisted_client_back(scenario):
    result = scenario("callback")
    assert result["answer"] == 42
    assert result["pings"] == [21]
    # pbgreen dropped its reference to the Twisted client's object: decref.
    assert result["table_before"] == 0
    assert result["table_restored"] is True
    # A reference handed back to Twisted arrives as the original object.
    assert result["returned_is_original"] is True
    assert result["released"] == 1
    # ... also when pbgreen does not keep it (Twisted itself yields None
    # here: it decrefs before answering; WIRE 4.3 says pbgreen must not).
    assert result["returned_unkept"] == "original"


def test_no_answer_required(scenario, served):
    root, _ = served
    result = scenario("noanswer")
    assert result == {
        "first": "None",
        "second": "None",
        "notes": ["one", "two"],
        "after": 3,
    }
    assert root.notes == ["one", "two"]


def test_values_at_twisted_size_limits(scenario):
    assert scenario("limits") == {"bytes": True, "str": True, "list": True}


def test_reentrant_calls_both_ways(scenario):
    # Twisted -> pbgreen.callback -> Twisted.ping -> pbgreen.add, while the
    # pbgreen method is blocked in its own callRemote.
    result = scenario("reentrant")
    assert result == {"answer": 21, "pings": [20]}


def test_decref_from_twisted_frees_server_objects(scenario):
    result = scenario("decref")
    assert result == {
        "alive_while_held": True,
        "hello": "hello one",
        "freed": True,
        "alive_with_one_left": True,
        "hello_second": ["ok", "hello two"],
        "freed_after_both": True,
    }


def test_errors_seen_by_twisted(scenario):
    result = scenario("errors")

    myerror = result["myerror"]
    assert myerror["kind"] == "err"
    assert myerror["is_copied"] is True
    assert myerror["type"] == repr(b"interop_errors.MyError")
    assert myerror["message"] == "my message"
    assert myerror["check_own_class"] is True
    assert myerror["check_pb_error"] is True  # parents name twisted.spread.pb.Error
    assert myerror["check_exception"] is True
    assert myerror["check_unrelated"] is True

    plain = result["plain"]
    assert plain["kind"] == "err"
    assert plain["is_copied"] is True
    assert plain["type"] == repr(b"builtins.ValueError")
    assert plain["message"] == "plain failure"
    assert plain["check_value_error"] is True
    assert plain["check_exception"] is True
    assert plain["not_pb_error"] is True

    nosuch = result["nosuch"]
    assert nosuch["kind"] == "err"
    assert nosuch["check_no_such_method"] is True
    assert nosuch["check_attribute_error"] is True
    assert nosuch["message"] == "No such method: remote_nosuch"

    insecure = result["insecure"]
    assert insecure["kind"] == "err"
    assert insecure["check_insecure_jelly"] is True
    assert "Unregistered" in insecure["message"]

    assert result["add_after_errors"] == 5


def test_calls_run_concurrently(scenario):
    # Five calls block in pbgreen until a sixth releases them.
    result = scenario("concurrent")
    assert result == {"released": 5, "results": [0, 1, 2, 3, 4]}


def test_server_stop_loses_call_in_flight(served, twisted_client):
    root, server = served
    host, port = server.address
    run = twisted_client("hang", host, port)
    assert root.hang_entered.wait(timeout=20), "the Twisted client never called hang"
    server.stop(timeout=5)
    result = run.result()
    assert result["kind"] == "err"
    assert result["connection_lost"] is True
    assert result["after"] == "DeadReferenceError"
