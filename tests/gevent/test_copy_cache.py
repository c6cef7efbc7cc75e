"""Objects by value: Copyable/RemoteCopy, security, Cacheable/RemoteCache."""

from __future__ import annotations

import gc
import logging
import types
import weakref

import gevent
import pytest
from gevent.event import Event

import pbgreen as pb
from pbgreen.jelly import SecurityOptions


class Pond(pb.Copyable):
    def __init__(self, frogs, color="green"):
        self.frogs = frogs
        self.color = color


class PondCopy(pb.RemoteCopy):
    def __init__(self, required_argument):  # never called: copies are built blank
        raise AssertionError("RemoteCopy.__init__ must not be called")


class Secret(pb.Copyable):
    def __init__(self):
        self.public = "for everyone"
        self.private = "for alice"

    def getStateToCopyFor(self, perspective):
        return {"public": self.public, "seen_by": repr(perspective)}


class Unregistered(pb.Copyable):
    def __init__(self):
        self.x = 1


class Both(pb.Copyable, pb.RemoteCopy):
    def __init__(self, n):
        self.n = n


pb.setUnjellyableForClass(Pond, PondCopy)
pb.setUnjellyableForClass(Secret, pb.RemoteCopy)
pb.setUnjellyableForClass(Both, Both)


class Counter(pb.Cacheable):
    def __init__(self, value=0):
        self.value = value
        self.observers = []
        self.stopped = []
        self.stop_event = Event()

    def set(self, value):
        self.value = value
        for observer in self.observers:
            observer.callRemote("setValue", value)

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)
        self.stopped.append(observer)
        self.stop_event.set()


class Lifetime:
    """Lives exactly as long as the receiver's copy of one cache (its shared state)."""


class CounterCache(pb.RemoteCache):
    lifetimes: list = []  # weakrefs, one per cache the receiver ever built

    def __init__(self):
        self.updates = []
        self.lifetime = Lifetime()
        CounterCache.lifetimes.append(weakref.ref(self.lifetime))

    def observe_setValue(self, value):
        self.value = value
        self.updates.append(value)

    def observe_fail(self):
        raise RuntimeError("observer broke")


pb.setUnjellyableForClass(Counter, CounterCache)


class Root(pb.Root):
    def __init__(self):
        self.counter = Counter(3)
        self.kept = None

    def remote_takePond(self, pond):
        return [type(pond).__name__, pond.frogs, pond.color]

    def remote_givePond(self):
        return Pond(7)

    def remote_twoPonds(self):
        pond = Pond(2)
        return [pond, pond]

    def remote_secret(self):
        return Secret()

    def remote_unregistered(self):
        return Unregistered()

    def remote_roundTrip(self, both):
        return Both(both.n + 1)

    def remote_counter(self):
        return self.counter

    def remote_counterTwice(self):
        return [self.counter, self.counter]

    def remote_set(self, value):
        self.counter.set(value)
        return value

    def remote_isCounter(self, x):
        return x is self.counter

    def remote_failingUpdate(self):
        for observer in self.counter.observers:
            observer.callRemote("fail")
        return "setter went on"


@pytest.fixture
def ref(pb_server, pb_client):
    return pb_client(pb_server(Root())).getRootObject()


def test_copy_goes_by_value_without_init(ref):
    assert ref.callRemote("takePond", Pond(5, "blue")) == ["PondCopy", 5, "blue"]
    pond = ref.callRemote("givePond")
    assert type(pond) is PondCopy and pond.frogs == 7


def test_same_copy_twice_in_one_message_is_one_object(ref):
    first, second = ref.callRemote("twoPonds")
    assert first is second


def test_state_to_copy_for_a_perspective(ref):
    secret = ref.callRemote("secret")
    assert secret.public == "for everyone" and secret.seen_by == "None"
    assert not hasattr(secret, "private")


def test_one_class_both_copyable_and_remote_copy(ref):
    result = ref.callRemote("roundTrip", Both(1))
    assert type(result) is Both and result.n == 2


def test_unregistered_class_in_an_answer_raises_insecure_jelly_and_connection_lives(ref):
    with pytest.raises(pb.InsecureJelly, match="setUnjellyableForClass") as info:
        ref.callRemote("unregistered")
    assert "Unregistered" in str(info.value)
    assert ref.callRemote("givePond").frogs == 7


def test_unregistered_class_sent_is_refused_by_the_receiver(pb_server, pb_client):
    class Lonely(pb.Copyable):
        pass
    ref = pb_client(pb_server(Root())).getRootObject()
    with pytest.raises(pb.InsecureJelly) as info:
        ref.callRemote("takePond", Lonely())
    assert isinstance(info.value, pb.CopiedFailure)  # refused on the far side
    assert "Lonely" in info.value.getErrorMessage()
    assert ref.callRemote("takePond", Pond(1))[1] == 1


def test_registration_can_be_per_server(pb_server, pb_client):
    class Local(pb.Copyable):
        def __init__(self):
            self.n = 1

    class LocalCopy(pb.RemoteCopy):
        pass
    allowing = SecurityOptions()
    allowing.setUnjellyableForClass(Local, LocalCopy)
    open_server = pb_server(Root(), security=allowing)
    closed_server = pb_server(Root(), security=SecurityOptions())
    assert pb_client(open_server).getRootObject().callRemote("takePond", _frogs(Local()))[0] == \
        "LocalCopy"
    with pytest.raises(pb.InsecureJelly):
        pb_client(closed_server).getRootObject().callRemote("takePond", Pond(1))


def _frogs(obj):
    obj.frogs = 9
    obj.color = "red"
    return obj


def test_registration_by_name_and_class_tree(pb_server, pb_client):
    module = types.ModuleType("pond_tree")

    class Base(pb.RemoteCopy):
        pass

    class Lily(Base):
        pass
    Base.__module__ = Lily.__module__ = "pond_tree"
    module.Base, module.Lily = Base, Lily
    pb.setUnjellyableForClassTree(module, Base, prefix="elsewhere")  # Lily as "elsewhere.Lily"

    class Sent(pb.Copyable):
        def getTypeToCopy(self):
            return "elsewhere.Lily"
    sent = Sent()
    sent.frogs, sent.color = 4, "white"
    ref = pb_client(pb_server(Root())).getRootObject()
    assert ref.callRemote("takePond", sent) == ["Lily", 4, "white"]


def test_cache_first_send_then_cached_then_updates(ref):
    cache = ref.callRemote("counter")
    assert isinstance(cache, CounterCache) and cache.value == 3
    assert cache.updates == []  # __init__() ran with no arguments
    again = ref.callRemote("counter")
    assert again.value == 3 and again.__dict__ is cache.__dict__
    one, two = ref.callRemote("counterTwice")
    assert one is two
    assert ref.callRemote("set", 10) == 10
    # the update was written before the answer, so it is already applied
    assert cache.value == 10 and cache.updates == [10]
    for value in range(11, 20):
        ref.callRemote("set", value)
    assert cache.updates == list(range(10, 20))


def test_cache_sent_back_is_the_original(ref):
    cache = ref.callRemote("counter")
    assert ref.callRemote("isCounter", cache) is True


def test_dropping_the_last_handle_stops_observing(pb_server, pb_client, wait_until):
    root = Root()
    client = pb_client(pb_server(root))
    ref = client.getRootObject()
    cache = ref.callRemote("counter")
    twice = ref.callRemote("counterTwice")
    assert len(root.counter.observers) == 1
    lifetime = weakref.ref(cache.lifetime)
    del cache, twice
    gc.collect()
    assert root.counter.stop_event.wait(5)
    assert root.counter.observers == [] and len(root.counter.stopped) == 1
    # the receiver forgets its copy too
    wait_until(lambda: lifetime() is None, message="the client still holds the dropped cache")
    built = len(CounterCache.lifetimes)
    again = ref.callRemote("counter")  # a fresh cache, full state again
    assert len(CounterCache.lifetimes) == built + 1
    assert again.value == 3 and len(root.counter.observers) == 1


def test_disconnect_stops_observing_and_dead_observer_never_raises(pb_server, pb_client):
    root = Root()
    client = pb_client(pb_server(root))
    cache = client.getRootObject().callRemote("counter")
    observer = root.counter.observers[0]
    client.close()
    assert root.counter.stop_event.wait(5)
    assert root.counter.observers == [] and root.counter.stopped == [observer]
    observer.callRemote("setValue", 99)  # its peer is gone: dropped, no exception
    assert cache.value == 3  # the receiver keeps the last state it had


def test_observer_call_returns_without_switching_greenlets(pb_server, pb_client):
    root = Root()
    client = pb_client(pb_server(root))
    client.getRootObject().callRemote("counter")
    observer = root.counter.observers[0]
    switched = []
    gevent.spawn(switched.append, True)
    for i in range(1000):
        observer.callRemote("setValue", i)
    assert switched == []  # the setter never yielded
    gevent.sleep(0)


def test_failing_observe_method_is_logged_on_the_owner_and_setter_goes_on(ref, caplog):
    cache = ref.callRemote("counter")
    with caplog.at_level(logging.WARNING, logger="pbgreen"):
        assert ref.callRemote("failingUpdate") == "setter went on"
        with gevent.Timeout(5):
            while "observer broke" not in caplog.text:
                gevent.sleep(0.01)
    assert ref.callRemote("set", 1) == 1 and cache.value == 1


def test_client_owned_cache_held_by_the_server(pb_server, pb_client):
    class Holder(pb.Root):
        def remote_take(self, cache):
            self.cache = cache
            return cache.value

        def remote_look(self):
            return self.cache.value

        def remote_drop(self):
            self.cache = None
            gc.collect()
    counter = Counter(1)
    ref = pb_client(pb_server(Holder())).getRootObject()
    assert ref.callRemote("take", counter) == 1
    counter.set(2)
    assert ref.callRemote("look") == 2
    ref.callRemote("drop")
    assert counter.stop_event.wait(5)


def test_thousands_of_updates_to_one_holder_all_arrive_in_order(pb_server, pb_client):
    root = Root()
    ref = pb_client(pb_server(root)).getRootObject()
    cache = ref.callRemote("counter")
    for value in range(5000):  # far past the per-connection limit on concurrent calls
        root.counter.set(value)
    assert ref.callRemote("set", 5000) == 5000
    assert cache.updates == list(range(5001))
