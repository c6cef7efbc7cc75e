"""Copyable and Cacheable between pbgreen and real Twisted PB, both directions.

The shared classes are named ``interop_shapes.Point`` (a Copyable),
``interop_shapes.Secret`` (a Copyable nobody registers) and
``interop_shapes.Counter`` (a Cacheable). twisted_common.py defines the
Twisted side; this module defines pbgreen's classes under the same qualified
names (``__module__`` set in the class body) and registers them by string,
as a peer that cannot import the other side's code does.

* pbgreen client -> twisted_server.py: copies both ways, and pbgreen holding
  Twisted's Counter (initial state, ``observe_`` pushes, ``cached``,
  ``lcache``, ``decache`` -> Twisted's ``stoppedObserving``).
* twisted_client.py -> pbgreen server (``ShapesRoot``, the same methods as
  twisted_server.py's root): copies both ways, and Twisted holding pbgreen's
  Counter, down to pbgreen's ``stoppedObserving`` on decache and on
  disconnect.

Each Twisted client scenario was first checked against twisted_server.py.
"""

import gc

import gevent.socket
import pytest

import pbgreen as pb
from pbgreen.connection import Connection
from pbgreen.reference import RemoteReference

# --- the pbgreen side of interop_shapes ------------------------------------------


class Point(pb.Copyable, pb.RemoteCopy):
    """Sent and received as ``interop_shapes.Point``; ``_private`` stays home."""

    __module__ = "interop_shapes"

    def __init__(self, x=0, y=0):
        self.x = x
        self.y = y
        self._private = "never sent"

    def getStateToCopyFor(self, perspective):
        self.__dict__["state_requests"] = self.__dict__.get("state_requests", 0) + 1
        return {"x": self.x, "y": self.y}

    def setCopyableState(self, state):
        self.state_seen = dict(state)
        self.x = state["x"]
        self.y = state["y"]


class Counter(pb.Cacheable):
    """Cached by the peer as ``interop_shapes.Counter``."""

    __module__ = "interop_shapes"

    def __init__(self, value=3):
        self.value = value
        self.observers = []
        self.seen = []  # (perspective, observer) per getStateToCacheAndObserveFor
        self.stopped = []  # (perspective, observer) per stoppedObserving

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        self.seen.append((perspective, observer))
        return {"value": self.value}

    def stoppedObserving(self, perspective, observer):
        self.stopped.append((perspective, observer))
        self.observers.remove(observer)

    def setValue(self, value):
        self.value = value
        for observer in list(self.observers):
            observer.callRemote("setValue", value)  # queued; returns at once

    def stats(self):
        return {
            "value": self.value,
            "observers": len(self.observers),
            "stopped": len(self.stopped),
            "stops_match": [stop in self.seen for stop in self.stopped],
        }


class RemoteCounter(pb.RemoteCache):
    """The holder's side of ``interop_shapes.Counter``."""

    def setCopyableState(self, state):
        self.value = state["value"]
        self.initial_state = dict(state)
        self.updates = []

    def observe_setValue(self, value):
        self.value = value
        self.updates.append(value)


pb.setUnjellyableForClass("interop_shapes.Point", Point)
pb.setUnjellyableForClass("interop_shapes.Counter", RemoteCounter)


def describe_point(p):
    """What arrived as an ``interop_shapes.Point`` (as twisted_common's)."""
    return {
        "class": type(p).__name__,
        "remote_copy": isinstance(p, pb.RemoteCopy),
        "x": getattr(p, "x", None),
        "y": getattr(p, "y", None),
        "private_sent": "_private" in vars(p),
    }


POINT_1_2 = {"class": "Point", "remote_copy": True, "x": 1, "y": 2, "private_sent": False}


# --- pbgreen client -> Twisted server ----------------------------------------------


@pytest.fixture
def root(twisted_server):
    """The Twisted server's root object over a fresh pbgreen connection."""
    with pb.PBClient(twisted_server.host, twisted_server.port, timeout=10) as client:
        yield client.getRootObject()


def test_copyable_sent_to_twisted(root):
    p = Point(1, 2)
    assert root.callRemote("describePoint", p) == POINT_1_2
    # The state came from getStateToCopyFor (so _private stayed home).
    assert p.state_requests == 1
    assert root.callRemote("add", 1, 2) == 3


def test_copyable_from_twisted(root):
    got = root.callRemote("getPoint", 3, 4)
    assert type(got) is Point
    # Built from Twisted's getStateToCopy state, through setCopyableState.
    assert got.state_seen == {"x": 3, "y": 4}
    assert (got.x, got.y) == (3, 4)
    assert "_private" not in vars(got)


def test_copyable_round_trip(root):
    mine = Point(5, 6)
    back = root.callRemote("returnIt", mine)
    assert type(back) is Point
    assert back is not mine
    assert (back.x, back.y) == (5, 6)
    assert back.state_seen == {"x": 5, "y": 6}
    # A received copy can be sent on again.
    assert root.callRemote("describePoint", back) == dict(POINT_1_2, x=5, y=6)


def test_same_copyable_twice_in_one_answer(root):
    first, second = root.callRemote("getTwoPoints")
    assert first is second
    assert type(first) is Point
    assert (first.x, first.y) == (1, 2)


def test_same_copyable_twice_in_arguments(root):
    p = Point(7, 8)
    assert root.callRemote("describeTwo", [p, p]) == {
        "same": True,
        "first": dict(POINT_1_2, x=7, y=8),
    }


def test_unregistered_copyable_in_answer_is_insecure_jelly(root):
    # Twisted as the caller would drop the connection here and never fire
    # the Deferred; pbgreen raises and keeps the connection.
    for _ in range(2):
        with pytest.raises(pb.InsecureJelly) as info:
            root.callRemote("getSecret")
        assert "interop_shapes.Secret" in str(info.value)
        assert root.callRemote("add", 1, 2) == 3
    got = root.callRemote("getPoint", 1, 2)
    assert (got.x, got.y) == (1, 2)


def _stopped(root, n):
    def check():
        gc.collect()
        return root.callRemote("counterStats")["stopped"] == n

    return check


def test_cacheable_from_twisted(root, wait_for):
    c = root.callRemote("getCounter")
    assert isinstance(c, RemoteCounter)
    assert c.initial_state == {"value": 3}
    assert c.value == 3
    assert root.callRemote("counterStats") == {
        "value": 3,
        "observers": 1,
        "stopped": 0,
        "stops_match": [],
    }

    # Twisted's setCounter answers once every holder answered its
    # observe_setValue: the update has run by then.
    assert root.callRemote("setCounter", 4) == 1
    assert c.value == 4
    assert c.updates == [4]

    # ['cached', id]: the same state (possibly the very same object).
    again = root.callRemote("getCounter")
    assert isinstance(again, RemoteCounter)
    assert again.value == 4
    assert root.callRemote("setCounter", 5) == 1
    assert (c.value, again.value) == (5, 5)
    assert c.updates == again.updates == [4, 5]

    # lcache: our handles go back to Twisted as its own Counter.
    assert root.callRemote("isCounter", c) is True
    assert root.callRemote("isCounter", again) is True
    assert root.callRemote("counterStats")["observers"] == 1

    # Dropping one of two handles is not the end of the cache...
    del c
    gc.collect()
    assert root.callRemote("setCounter", 6) == 1
    assert again.value == 6
    assert root.callRemote("counterStats")["stopped"] == 0

    # ... dropping every handle is: Twisted runs stoppedObserving.
    del again
    assert wait_for(_stopped(root, 1)), root.callRemote("counterStats")
    assert root.callRemote("counterStats") == {
        "value": 6,
        "observers": 0,
        "stopped": 1,
        "stops_match": [True],
    }
    # No stray decache (Twisted drops the connection on an unknown id).
    assert root.callRemote("add", 1, 2) == 3

    # Cached anew afterwards, with the current state, and observed again.
    fresh = root.callRemote("getCounter")
    assert isinstance(fresh, RemoteCounter)
    assert fresh.initial_state == {"value": 6}
    assert root.callRemote("setCounter", 7) == 1
    assert fresh.value == 7
    assert fresh.updates == [7]
    del fresh
    assert wait_for(_stopped(root, 2)), root.callRemote("counterStats")
    assert root.callRemote("counterStats")["observers"] == 0
    assert root.callRemote("add", 1, 2) == 3


def test_cacheable_update_without_waiting(root, wait_for):
    c = root.callRemote("getCounter")
    # The cachemessage goes out before this answer; nothing waits for it.
    assert root.callRemote("setCounterNoWait", 9) == 1
    assert wait_for(lambda: c.value == 9)
    assert c.updates == [9]
    assert root.callRemote("setCounterNoWait", 10) == 1
    assert wait_for(lambda: c.value == 10)
    assert c.updates == [9, 10]


def test_same_cacheable_twice_in_one_answer(root, wait_for):
    # ['reference', n, [tag, id, state]] then ['dereference', n]: one object,
    # one count on the Twisted side, so exactly one decache.
    pair = root.callRemote("getCounterTwice")
    assert len(pair) == 2
    assert pair[0] is pair[1]
    assert isinstance(pair[0], RemoteCounter)
    assert pair[0].value == 3
    assert root.callRemote("isCounter", pair[0]) is True
    del pair
    assert wait_for(_stopped(root, 1)), root.callRemote("counterStats")
    # A second decache would have made Twisted drop the connection.
    assert root.callRemote("add", 1, 2) == 3
    assert root.callRemote("counterStats")["stopped"] == 1


def test_missing_observe_method_is_an_error_for_twisted(root):
    c = root.callRemote("getCounter")
    # Twisted's observer.callRemote("nosuch") fails with AttributeError.
    assert root.callRemote("pushUnknown") == [["err", True]]
    assert root.callRemote("setCounter", 4) == 1
    assert c.value == 4
    assert c.updates == [4]


# --- Twisted client -> pbgreen server -----------------------------------------------


class ShapesRoot(pb.Root):
    """The copy and cache methods of twisted_server.py's root, for pbgreen."""

    def __init__(self):
        self.counter = Counter()
        self.received = []

    def remote_add(self, a, b, c=0):
        return a + b + c

    def remote_returnIt(self, x):
        return x

    def remote_describePoint(self, p):
        self.received.append(p)
        return describe_point(p)

    def remote_describeTwo(self, pair):
        first, second = pair
        return {"same": first is second, "first": describe_point(first)}

    def remote_getPoint(self, x, y):
        return Point(x, y)

    def remote_getTwoPoints(self):
        p = Point(1, 2)
        return [p, p]

    def remote_getCounter(self):
        return self.counter

    def remote_getCounterTwice(self):
        return [self.counter, self.counter]

    def remote_isCounter(self, x):
        return x is self.counter

    def remote_setCounter(self, value):
        self.counter.setValue(value)
        return len(self.counter.observers)

    def remote_setAndCheck(self, value, checker):
        # The update is queued before this call to the checker, so it must
        # be written first (API.md, "Order").
        self.counter.setValue(value)
        return checker.callRemote("check")

    def remote_pushHang(self):
        for observer in self.counter.observers:
            observer.callRemote("hang")  # the holder never answers (yet)
        return "returned"

    def remote_pushUnknown(self):
        for observer in self.counter.observers:
            observer.callRemote("nosuch")  # the holder answers with an error
        return len(self.counter.observers)

    def remote_counterStats(self):
        return self.counter.stats()


@pytest.fixture
def shapes(serve_pbgreen):
    """(root, server): a pbgreen PBServer serving a fresh ShapesRoot."""
    root = ShapesRoot()
    return root, serve_pbgreen(root)


@pytest.fixture
def scenario(shapes, twisted_client):
    """scenario(name) -> the Twisted client's JSON result against pbgreen."""
    _, server = shapes

    def run(name):
        host, port = server.address
        return twisted_client(name, host, port).result()

    return run


def test_copyables_with_twisted_client(scenario, shapes):
    root, _ = shapes
    result = scenario("copy")
    # Twisted's Point arrived as pbgreen's Point, from its getStateToCopy.
    assert result["described"] == POINT_1_2
    (received,) = root.received
    assert type(received) is Point
    assert received.state_seen == {"x": 1, "y": 2}
    # pbgreen's Point arrived as Twisted's, with getStateToCopyFor's state.
    assert result["got"] == dict(POINT_1_2, x=3, y=4)
    assert result["got_state"] == {"x": 3, "y": 4}
    # Twisted -> pbgreen -> Twisted.
    assert result["returned"] == dict(POINT_1_2, x=5, y=6)
    assert result["returned_is_copy"] is True
    # The same Copyable twice in one answer, and in one argument.
    assert result["two_same"] is True
    assert result["two"] == POINT_1_2
    assert result["sent_two"] == {"same": True, "first": dict(POINT_1_2, x=7, y=8)}
    assert result["after"] == 3


def test_cacheable_to_twisted_holder(scenario, shapes):
    root, _ = shapes
    result = scenario("cache")
    counter = root.counter

    assert result["is_remote_cache"] is True
    assert result["initial_state"] == {"value": 3}
    assert result["stats_initial"] == {
        "value": 3,
        "observers": 1,
        "stopped": 0,
        "stops_match": [],
    }
    # observe_setValue ran on the Twisted holder.
    assert result["set_answer"] == 1
    assert result["updated"] is True
    assert result["updates"] == [4]
    # ['cached', id]: a Twisted borg sharing the first handle's state.
    assert result["again_is_remote_cache"] is True
    assert result["again_value"] == 4
    assert result["again_shares_state"] is True
    assert result["again_is_first"] is False
    # ['lcache', id]: pbgreen saw its own Counter.
    assert result["is_counter"] is True
    assert result["is_counter_again"] is True
    assert result["stats_held"]["observers"] == 1
    # Two handles, two decaches: observing stops only after the second.
    assert result["stats_one_dropped"]["stopped"] == 0
    assert result["stats_one_dropped"]["observers"] == 1
    assert result["stopped"] is True
    assert result["stats_dropped"] == {
        "value": 4,
        "observers": 0,
        "stopped": 1,
        "stops_match": [True],
    }
    # Cached anew after the uncache, with the current state.
    assert result["fresh_state"] == {"value": 4}
    assert result["stats_fresh"]["observers"] == 1
    assert result["fresh_updated"] is True
    assert result["fresh_stopped"] is True
    assert result["after"] == 3

    assert len(counter.seen) == 2
    assert len(counter.stopped) == 2
    # stoppedObserving got the perspective and observer it was given.
    assert counter.stopped == counter.seen
    assert counter.observers == []


def test_same_cacheable_twice_to_twisted_holder(scenario, shapes):
    root, _ = shapes
    result = scenario("cache_twice")
    assert result["same"] is True
    assert result["is_remote_cache"] is True
    assert result["value"] == 3
    assert result["both_counter"] == [True, True]
    assert result["stats_held"]["observers"] == 1
    assert result["stopped"] is True
    assert result["stats_dropped"]["observers"] == 0
    assert result["stats_dropped"]["stops_match"] == [True]
    assert result["after"] == 3
    assert len(root.counter.seen) == 1
    assert len(root.counter.stopped) == 1


def test_observer_updates_in_order_and_never_wait(scenario, shapes, wait_for):
    root, _ = shapes
    result = scenario("cache_order")
    # The update queued before the call to the checker arrived before it.
    assert result["checked"] == 11
    assert result["updates"] == [11]
    # observer.callRemote did not wait for the holder's (hung) answer.
    assert result["hang_arrived"] is True
    assert result["answered_while_hung"] is True
    assert result["hang_answer"] == ["returned"]
    # An error answer from the holder breaks nothing.
    assert result["unknown"] == 1
    assert result["updated"] is True
    assert result["all_updates"] == [11, 12, 13]
    assert result["after"] == 3
    # The Twisted client held its handle to the end: observing stops once,
    # on the disconnect, with what it was started with.
    assert wait_for(lambda: len(root.counter.stopped) == 1)
    assert root.counter.stopped == root.counter.seen


def test_disconnect_stops_observing(shapes, twisted_client, wait_for):
    root, server = shapes
    counter = root.counter
    host, port = server.address
    result = twisted_client("cache_hold", host, port).result()
    assert result == {
        "value": 3,
        "stats_held": {"value": 3, "observers": 1, "stopped": 0, "stops_match": []},
    }
    # The Twisted client left holding two handles: no decache, a disconnect.
    assert wait_for(lambda: len(counter.stopped) == 1)
    assert counter.stopped == counter.seen
    assert counter.observers == []
    # An observer whose peer is gone never raises into a setter.
    _, gone = counter.seen[0]
    gone.callRemote("setValue", 99)
    counter.setValue(100)
    server.stop(timeout=5)
    assert len(counter.stopped) == 1


# --- one update, many observers: pbgreen and Twisted holders at once -----------------


def push_series(counter):
    """Push each value to every observer in one loop, as a setter does; the values sent."""
    observers = list(counter.observers)
    sent = []

    def push(*args, **kwargs):
        for observer in observers:
            observer.callRemote("setValue", *args, **kwargs)
        sent.append(kwargs["value"] if kwargs else args[0])

    for value in [7, 2 ** 40, -3, 1.5, "héllo", b"raw\x00bytes", None, True,
                  (1, "a", (2.5, None, b"x"))]:
        push(value)
    growing = [1]
    push(growing)
    sent[-1] = [1]
    growing.append(2)  # the same list, changed: the next update carries the new content
    push(growing)
    push(value=99)
    for observer in observers:  # two updates alternate per observer
        observer.callRemote("setValue", 5)
        observer.callRemote("setValue", 6)
    sent += [5, 6]
    push("end")
    return sent


def test_one_update_reaches_pbgreen_and_twisted_observers_alike(shapes, twisted_client,
                                                                 wait_for):
    root, server = shapes
    host, port = server.address
    runs = [twisted_client("cache_fanout", host, port) for _ in range(2)]
    client = pb.PBClient(host, port)
    # A holder that speaks the 'none' dialect (no vocabulary), as an old
    # Banana peer may: PBClient has no option for it, so the driver directly.
    sock = gevent.socket.create_connection((host, port))
    plain = Connection(sock, is_client=True, dialects=(b"none",))
    plain.start()
    clients = [client, plain]
    try:
        assert plain.wait_ready(10)
        refs = [client.getRootObject(), RemoteReference(plain, b"root")]
        assert [ref.broker.protocol.dialect for ref in refs] == [b"pbgreen", b"none"]
        caches = [ref.callRemote("getCounter") for ref in refs]
        assert wait_for(lambda: len(root.counter.observers) == 4)

        sent = push_series(root.counter)

        assert wait_for(lambda: all(cache.updates[-1:] == ["end"] for cache in caches))
        for cache in caches:
            assert cache.updates == sent
            assert [type(v) for v in cache.updates] == [type(v) for v in sent]
        for run in runs:
            result = run.result()
            assert result["ended"] is True
            assert result["updates"] == [repr(v) for v in sent]
    finally:
        for client in clients:
            client.close()
