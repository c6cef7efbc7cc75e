"""The sans-I/O broker, driven by feeding bytes (no sockets, no hub)."""

from __future__ import annotations

import gc
import logging

import pytest

from pbgreen import banana, dispatch, errors, flavors
from pbgreen._failure import failure_from
from pbgreen.events import IncomingCall, Ready, Released, Reply
from pbgreen.banana import DIALECTS
from pbgreen.protocol import MAX_BROKER_REFS, Broker
from pbgreen.reference import RemoteReference

H = bytes.fromhex


class Child(flavors.Referenceable):
    def remote_hello(self, name):
        return "hello " + name


class Root(flavors.Root):
    def __init__(self):
        self.child = Child()

    def remote_add(self, a, b, c=0):
        return a + b + c

    def remote_getChild(self):
        return self.child

    def remote_returnIt(self, x):
        return x

    def remote_boom(self):
        raise ValueError("plain failure")

    def remote_expected(self):
        raise errors.Error("expected one")


class Pair:
    """A connector and an acceptor joined by an in-memory pump (like Twisted's IOPump)."""

    def __init__(self, root=None, **kwargs):
        # Twisted's dialects by default, so the bytes can be compared with its captures.
        kwargs.setdefault("dialects", (b"pb", b"none"))
        self.server = Broker(is_client=False, root=root or Root(), invoker="server", **kwargs)
        self.client = Broker(is_client=True, invoker="client")
        self.replies = {}
        self.callbacks = []
        self.wire = []  # (direction, bytes) in order
        self.pump()

    def pump(self):
        moved = True
        while moved:
            moved = False
            for src, dst, tag in ((self.server, self.client, "S>C"),
                                  (self.client, self.server, "C>S")):
                data = src.data_to_send()
                if data:
                    moved = True
                    self.wire.append((tag, data))
                    for event in dst.receive_data(data):
                        self._handle(dst, event)

    def _handle(self, broker, event):
        if isinstance(event, IncomingCall):
            dispatch.run_call(broker, event)
        elif isinstance(event, Reply):
            self.replies[event.request_id] = event
        elif isinstance(event, Released):
            self.callbacks.extend(event.callbacks)

    def send(self, object_id, method, *args, **kwargs):
        return dispatch.send_call(self.client, object_id, method, args, kwargs, None, True)

    def call(self, object_id, method, *args, **kwargs):
        request_id = self.send(object_id, method, *args, **kwargs)
        self.pump()
        reply = self.replies.pop(request_id)
        value = dispatch.read_reply(self.client, reply, None)
        if not reply.ok:
            raise value
        return value


def test_handshake_bytes_match_twisted():
    pair = Pair()
    assert pair.wire[0] == ("S>C", H("02 80 02 82 70 62 04 82 6e 6f 6e 65"))
    assert pair.wire[1] == ("C>S", H("02 82 70 62 02 80 13 87 06 81"))
    assert pair.wire[2] == ("S>C", H("02 80 13 87 06 81"))
    assert pair.client.dialect == pair.server.dialect == b"pb"


def test_pbgreen_peers_choose_the_pbgreen_dialect_and_twisted_ones_pb():
    pair = Pair(dialects=DIALECTS)
    assert pair.client.dialect == pair.server.dialect == b"pbgreen"
    assert pair.client.extended and pair.server.extended
    assert pair.call(b"root", "add", 1, 2) == 3
    # a connector that knows only Twisted's dialects skips the name it does not know
    twisted_like = Broker(is_client=True, dialects=(b"pb", b"none"))
    twisted_like.receive_data(Broker(is_client=False, root=Root()).data_to_send())
    assert twisted_like.dialect == b"pb" and not twisted_like.extended


def test_extended_commands_are_unknown_in_twisteds_dialect():
    pair = Pair()
    with pytest.raises(errors.ProtocolError, match="unknown PB command"):
        pair.server.receive_data(banana.encode([b"ping"]))


def test_a_deadline_travels_with_a_call_between_pbgreen_peers():
    pair = Pair(dialects=DIALECTS)
    seen = []
    pair._handle = lambda broker, event: seen.append(event) if isinstance(event, IncomingCall) \
        else Pair._handle(pair, broker, event)
    request = pair.client.send_call(b"root", "add", dispatch.prepare(pair.client, ((1, 2), {}),
                                                                     None), True, deadline=2.5)
    pair.pump()
    (call,) = seen
    assert call.request_id == request and call.deadline == 2.5
    pair.client.send_cancel(request)
    pair.client.send_ping()
    events = pair.server.receive_data(pair.client.data_to_send())
    assert [type(e).__name__ for e in events] == ["Cancelled"]
    assert banana.Decoder(vocab=True).feed(pair.server.data_to_send()) == [[b"pong"]]


def test_bytes_after_the_dialect_choice_in_one_segment_use_the_new_dialect():
    server = Broker(is_client=False, root=Root())
    server.data_to_send()
    events = server.receive_data(H("02 82 70 62 02 80 13 87 06 81"))
    assert [type(e) for e in events] == [Ready]


def test_call_and_answer_bytes_match_twisted():
    pair = Pair()
    del pair.wire[:]
    assert pair.call(b"root", "add", 1, 2, c=3) == 6
    assert pair.wire[0] == ("C>S", H("07 80 1a 87 01 81 04 82 72 6f 6f 74 03 82 61 64 64 01 81 03 80 "
                                     "0b 87 01 81 02 81 02 80 05 87 02 80 02 80 07 82 75 6e 69 63 "
                                     "6f 64 65 01 82 63 03 81"))
    assert pair.wire[1] == ("S>C", H("03 80 1b 87 01 81 06 81"))


def test_dialect_none_is_accepted_and_uses_no_vocabulary():
    server = Broker(is_client=False, root=Root())
    client = Broker(is_client=True, dialects=(b"none",))
    client.receive_data(server.data_to_send())
    out = client.data_to_send()
    assert out.startswith(H("04 82 6e 6f 6e 65"))
    server.receive_data(out)
    assert server.dialect == b"none"
    assert b"\x87" not in server.data_to_send()


def test_no_common_dialect_is_a_protocol_error():
    client = Broker(is_client=True)
    with pytest.raises(errors.ProtocolError, match="no dialect in common"):
        client.receive_data(banana.encode([b"xml", b"json"], vocab=False))


def test_wrong_version_is_a_protocol_error():
    pair = Pair()
    with pytest.raises(errors.ProtocolError, match="Version Incompatibility: 6 5"):
        pair.server.receive_data(H("02 80 13 87 05 81"))


def test_failure_payload_has_every_field_twisted_needs(caplog):
    pair = Pair()
    del pair.wire[:]
    with caplog.at_level(logging.ERROR, logger="pbgreen"):
        with pytest.raises(ValueError) as info:
            pair.call(b"root", "boom")
    assert "Peer Will Receive PB Traceback" in caplog.text
    error = banana.decode(pair.wire[1][1])
    assert error[:2] == [b"error", 1]
    tag, state = error[2]
    assert tag == b"twisted.spread.pb.CopyableFailure"
    fields = {pair_[0][1]: pair_[1] for pair_ in state[1:]}
    assert list(fields) == [b"count", b"type", b"value", b"captureVars", b"tb",
                            b"unsafeTracebacks", b"parents", b"frames", b"stack", b"traceback"]
    assert fields[b"type"] == b"builtins.ValueError"
    assert fields[b"value"] == [b"unicode", b"plain failure"]
    assert fields[b"parents"] == [b"list", [b"unicode", b"builtins.ValueError"],
                                  [b"unicode", b"builtins.Exception"],
                                  [b"unicode", b"builtins.BaseException"],
                                  [b"unicode", b"builtins.object"]]
    assert fields[b"traceback"] == [b"unicode", b"Traceback unavailable\n"]
    assert fields[b"frames"] == fields[b"stack"] == [b"list"]
    e = info.value
    assert isinstance(e, errors.CopiedFailure) and e.type == "builtins.ValueError"
    assert e.getErrorMessage() == "plain failure"


def test_unsafe_tracebacks_send_the_traceback_without_it_no_paths():
    pair = Pair(unsafe_tracebacks=True)
    with pytest.raises(ValueError) as info:
        pair.call(b"root", "boom")
    assert "Traceback (most recent call last)" in info.value.remoteTraceback
    assert "remote_boom" in info.value.remoteTraceback
    safe = Pair()
    with pytest.raises(ValueError) as info:
        safe.call(b"root", "boom")
    assert info.value.remoteTraceback == "Traceback unavailable\n"
    assert ".py" not in repr(safe.wire)


def test_pb_error_is_not_logged_as_an_error(caplog):
    pair = Pair()
    with caplog.at_level(logging.ERROR, logger="pbgreen"):
        with pytest.raises(errors.Error) as info:
            pair.call(b"root", "expected")
    assert caplog.records == []
    assert "twisted.spread.pb.Error" in info.value.parents


def test_twisted_error_names_become_pbgreen_classes():
    pair = Pair()
    for name, cls in errors.TWISTED_NAMES.items():
        payload = [b"twisted.spread.pb.CopyableFailure",
                   [b"dictionary", [[b"unicode", b"type"], name.encode()],
                    [[b"unicode", b"value"], [b"unicode", b"x"]],
                    [[b"unicode", b"parents"], [b"list", [b"unicode", name.encode()]]]]]
        exc = failure_from(payload)
        assert isinstance(exc, cls) and isinstance(exc, errors.CopiedFailure)
        assert exc.type == name


def test_reference_table_counts_and_decrefs():
    pair = Pair()
    child = pair.call(b"root", "getChild")
    again = pair.call(b"root", "getChild")
    assert child is again and isinstance(child, RemoteReference)
    luid = child.luid
    assert pair.server.tables.locals[luid].refcount == 2
    del child, again
    gc.collect()
    pair.pump()
    assert luid not in pair.server.tables.locals
    # one decref per receipt, written together
    assert pair.wire[-1] == ("C>S", banana.encode([b"decref", luid]) * 2)


def test_own_object_comes_back_as_itself_and_unknown_local_is_none():
    pair = Pair()
    mine = Child()
    assert pair.call(b"root", "returnIt", mine) is mine
    decoder = banana.Decoder(vocab=True)
    from_server = [m for tag, d in pair.wire if tag == "S>C" for m in decoder.feed(d)]
    # the callee's decref for the argument comes after its answer, as Twisted's does not
    assert [m[0] for m in from_server[-2:]] == [b"answer", b"decref"]
    assert from_server[-2][2] == [b"local", 1] and from_server[-1] == [b"decref", 1]
    assert pair.client.tables.locals == {}
    assert pair.client.tables.unjelly_local(999, None) is None


def test_max_broker_refs_exactly_1024_then_error_then_goodbye():
    class Many(flavors.Root):
        def remote_make(self, n):
            return [Child() for _ in range(n)]
    pair = Pair(Many())
    kept = pair.call(b"root", "make", MAX_BROKER_REFS)
    assert len(pair.server.tables.locals) == MAX_BROKER_REFS + 1
    for attempt in range(3):
        with pytest.raises(errors.Error, match="Maximum PB reference count exceeded.$"):
            pair.call(b"root", "make", 1)
    assert pair.server.close_reason is None
    with pytest.raises(errors.Error, match="Goodbye"):
        pair.call(b"root", "make", 1)
    assert pair.server.close_reason
    assert len(kept) == MAX_BROKER_REFS


def test_unsendable_argument_rolls_back_its_registrations():
    pair = Pair()
    mine = Child()
    with pytest.raises(errors.InsecureJelly):
        pair.send(b"root", "returnIt", mine, object())
    assert pair.client.tables.locals == {}
    assert pair.client.data_to_send() == b""


def test_abandoned_answer_gives_its_references_back():
    pair = Pair()
    request = pair.send(b"root", "getChild")
    pair.client.abandon(request)
    pair.pump()
    assert request not in pair.replies
    assert pair.server.tables.locals.keys() == {b"root"}


def test_invalid_object_id_and_bad_method_name():
    pair = Pair()
    with pytest.raises(errors.Error, match="Invalid Object ID"):
        pair.call(12345, "add")
    with pytest.raises(errors.NoSuchMethod, match="remote_nosuch"):
        pair.call(b"root", "nosuch")
    with pytest.raises(errors.NoSuchMethod):
        pair.call(b"root", "__init__")


def test_answer_for_unknown_request_is_a_protocol_error():
    pair = Pair()
    with pytest.raises(errors.ProtocolError, match="never sent"):
        pair.client.receive_data(banana.encode([b"answer", 42, 1]))


def test_a_release_goes_out_before_a_call_made_after_it():
    pair = Pair()
    child = pair.call(b"root", "getChild")
    luid = child.luid
    del child
    gc.collect()
    pair.send(b"root", "add", 1, 2)
    decoder = banana.Decoder(vocab=True)
    sent = decoder.feed(pair.client.data_to_send())
    assert [m[0] for m in sent] == [b"decref", b"message"] and sent[0][1] == luid


class HeldCopy(flavors.RemoteCache):
    pass


@pytest.mark.parametrize("count, refused", [(MAX_BROKER_REFS + 1, False),
                                            (MAX_BROKER_REFS + 2, True)])
def test_caches_held_from_one_peer_are_bounded(count, refused):
    """A holder takes as many caches as a Twisted owner may send (1,025), no more."""
    from pbgreen.jelly import SecurityOptions

    security = SecurityOptions()
    security.setUnjellyableForClass("limits.Shared", HeldCopy)
    pair = Pair()
    client = Broker(is_client=True, security=security)
    client.receive_data(pair.server.__class__(is_client=False).data_to_send())
    client.data_to_send()
    request = dispatch.send_call(client, b"root", "many", (), {}, None, True)
    client.data_to_send()
    caches = [[b"limits.Shared", n, [b"dictionary"]] for n in range(1, count + 1)]
    (reply,) = client.receive_data(banana.encode([b"answer", request, [b"list", *caches]]))
    if refused:
        with pytest.raises(errors.InsecureJelly, match="more than 1025 caches"):
            dispatch.read_reply(client, reply, None)
        # what was refused is given back: one decache per cache it named
        released = banana.Decoder(vocab=True).feed(client.data_to_send())
        assert sorted(m[1] for m in released if m[0] == b"decache") == list(range(1, count + 1))
    else:
        held = dispatch.read_reply(client, reply, None)
        assert len(held) == count and all(isinstance(c, HeldCopy) for c in held)


class Counted(flavors.Cacheable):
    def __init__(self):
        self.observers = []

    def getTypeToCopyFor(self, perspective):
        return "limits.Shared"

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return {}

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)


def test_a_value_naming_a_cache_released_meanwhile_is_prepared_again():
    from pbgreen._refs import Stale
    from pbgreen.jelly import SecurityOptions

    shared = Counted()

    class Owner(flavors.Root):
        def remote_get(self):
            return shared

    security = SecurityOptions()
    security.setUnjellyableForClass("limits.Shared", HeldCopy)
    pair = Pair(Owner())
    pair.client.security = pair.client.tables.security = security
    copy = pair.call(b"root", "get")
    assert isinstance(copy, HeldCopy) and len(shared.observers) == 1
    prepared = dispatch.prepare(pair.server, (shared,), None)  # refers to it: ['cached', id]
    assert prepared.body == banana.encode([b"cached", 1])  # vocabulary word 'cached', id 1
    del copy
    gc.collect()
    pair.pump()  # the holder let go: the owner's table forgets the cache
    with pytest.raises(Stale):
        pair.server.tables.commit(prepared.context)
    again = dispatch.prepare(pair.server, (shared,), None)  # a fresh first copy
    assert b"limits.Shared" in again.body


def test_an_object_sent_back_stays_until_its_answer_is_read():
    pair = Pair()
    mine = Child()
    request = pair.send(b"root", "returnIt", mine)
    pair.pump()  # the answer ['local', n] and the callee's decref arrive together
    (luid,) = [luid for luid, entry in pair.client.tables.locals.items()
               if entry.object is mine]
    assert pair.client.tables.locals[luid].refcount == 0  # released by the peer...
    reply = pair.replies.pop(request)
    assert dispatch.read_reply(pair.client, reply, None) is mine  # ...but pinned until read
    assert luid not in pair.client.tables.locals


@pytest.mark.parametrize("limit", [1, 7, 100, 101])
def test_receive_data_with_a_limit_reads_that_many_messages_a_pass(limit):
    """A driver bounds the events alive at once; nothing is lost or reordered."""
    pair = Pair()
    ids = [pair.send(b"root", "add", i, 1) for i in range(100)]
    data = pair.client.data_to_send()
    calls = []
    events = pair.server.receive_data(data, limit)
    while True:
        assert len(events) <= limit
        calls.extend(e for e in events if isinstance(e, IncomingCall))
        if not pair.server.more_input:
            break
        events = pair.server.receive_data(b"", limit)
    assert [c.request_id for c in calls] == ids
    assert pair.server.more_input is False
    assert pair.server.receive_data(b"", limit) == []
