"""One encoding per update for many observers (``_fanout``), fed as bytes.

The bytes ``Broker.send_update`` queues around a shared tail must be the
same message the general path makes for that connection, in each dialect,
and the shared tail must never stand for a value that differs.
"""

from __future__ import annotations

import pytest

from pbgreen import _fanout, banana, plaincodec
from pbgreen.banana import NO_VOCAB, VOCAB_CODES
from pbgreen.protocol import Broker

VALUES = [7, 2 ** 40, -3, 1.5, "héllo", b"raw\x00", None, True, (1, "a", (2.5, None, b"x")), ()]


def open_pair(dialect):
    server = Broker(is_client=False, dialects=(dialect,))
    client = Broker(is_client=True, dialects=(dialect,))
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    return server, client


@pytest.mark.parametrize("dialect", [b"pbgreen", b"pb", b"none"])
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_shared_update_is_the_message_the_general_path_sends(dialect, value):
    server, _ = open_pair(dialect)
    tail = _fanout.shared_tail("setValue", (value,), {}, server.vocab)
    assert tail is not None
    server.send_update(5, tail)
    shared = server.data_to_send()
    request_id = server._last_request
    general = plaincodec.dumps([b"cachemessage", request_id, 5, b"setValue", 0],
                               ((value,), {}), server.vocab)
    assert shared == general
    decoded = banana.Decoder(vocab=server.vocab is VOCAB_CODES).feed(shared)
    assert len(decoded) == 1 and decoded[0][:5] == [b"cachemessage", request_id, 5,
                                                     b"setValue", 0]


def test_the_same_objects_share_one_tail_per_vocabulary():
    value = (1, "two")
    with_vocab = _fanout.shared_tail("set", (value,), {"k": 3}, VOCAB_CODES)
    without = _fanout.shared_tail("set", (value,), {"k": 3}, NO_VOCAB)
    assert with_vocab is _fanout.shared_tail("set", (value,), {"k": 3}, VOCAB_CODES)
    assert without is _fanout.shared_tail("set", (value,), {"k": 3}, NO_VOCAB)
    assert with_vocab != without  # 'tuple' and 'dictionary' are vocabulary words


def test_equal_values_with_other_encodings_are_not_taken_for_each_other():
    tails = [_fanout.shared_tail("set", (v,), {}, VOCAB_CODES) for v in (1, 1.0, True)]
    assert len(set(tails)) == 3
    assert _fanout.shared_tail("set", (1,), {}, VOCAB_CODES) == tails[0]
    assert _fanout.shared_tail("other", (1,), {}, VOCAB_CODES) != tails[0]


def test_a_keyword_or_a_second_argument_is_not_taken_for_the_one_argument_update():
    value = 12345
    one = _fanout.shared_tail("set", (value,), {}, VOCAB_CODES)
    with_keyword = _fanout.shared_tail("set", (value,), {"k": 1}, VOCAB_CODES)
    two = _fanout.shared_tail("set", (value, value), {}, VOCAB_CODES)
    assert len({one, with_keyword, two}) == 3
    assert _fanout.shared_tail("set", (value,), {}, VOCAB_CODES) == one
    assert _fanout.shared_tail("set", (value,), {}, NO_VOCAB) != one  # the other dialect's own


def test_update_ids_past_the_small_int_table_are_encoded_in_full():
    server, _ = open_pair(b"pbgreen")
    tail = _fanout.shared_tail("set", (1,), {}, server.vocab)
    first = server._last_request + 1
    count = 20_000  # request ids cross 2**11 (the table) and 2**14 (three bytes)
    for _ in range(count):
        server.send_update(3000, tail)
    decoded = banana.Decoder(vocab=True).feed(server.data_to_send())
    assert [message[1] for message in decoded] == list(range(first, first + count))
    assert {message[2] for message in decoded} == {3000}
    assert all(message[3:] == [b"set", 0, [b"tuple", 1], [b"dictionary"]] for message in decoded)


@pytest.mark.parametrize("args", [([1, 2],), ({"a": 1},), ((1, [2]),), ({1, 2},),
                                  (object(),)], ids=repr)
def test_mutable_or_non_plain_arguments_are_encoded_per_connection(args):
    assert _fanout.shared_tail("set", args, {}, VOCAB_CODES) is None
    assert _fanout.shared_tail("set", (1,), {"k": [1]}, VOCAB_CODES) is None


def test_a_value_banana_cannot_carry_is_left_to_the_general_path():
    assert _fanout.shared_tail("set", (2 ** 5000,), {}, VOCAB_CODES) is None




def _call_bytes(name):
    return plaincodec.dumps([b"message", 1, b"root", name, 0], ((), {}), VOCAB_CODES)


def test_remembered_method_names_stay_bounded(monkeypatch):
    from pbgreen import flavors, protocol

    names: dict = {}
    monkeypatch.setattr(protocol, "_METHOD_NAMES", names)  # this test's own, left empty after
    server, client = open_pair(b"pb")
    server.set_root(flavors.Root())
    at_limit, past_limit = b"m" * 64, b"n" * 65
    server.receive_data(_call_bytes(at_limit) + _call_bytes(past_limit))
    assert names[at_limit] == at_limit.decode() and past_limit not in names
    for k in range(protocol._MAX_METHOD_NAMES + 10):  # a peer inventing names
        server.receive_data(_call_bytes(b"x%d" % k))
    assert len(names) == protocol._MAX_METHOD_NAMES
    events = server.receive_data(_call_bytes(b"not_remembered"))
    assert [e.method for e in events] == ["not_remembered"]  # still decoded and delivered


@pytest.mark.parametrize("n", [0, 2047, 2048, 2 ** 14 - 1, 2 ** 14, 2 ** 21 - 1, 2 ** 21,
                               10 ** 12])
def test_update_ids_are_banana_integers(n):
    server, _ = open_pair(b"pb")
    server._last_request = n - 1
    server.send_update(n, b"")
    head = server.data_to_send()
    assert head == plaincodec.dumps_head([b"cachemessage", n, n], 4, VOCAB_CODES)
    if n < 2 ** 21:  # encode_int's loop-free ids are the general base-128 form
        assert banana.encode_int(n) == banana.encode_b128(n) + b"\x81"
    assert banana.decode(banana.encode_int(n)) == n and banana.decode(banana.encode_int(-n - 1)) == -n - 1
