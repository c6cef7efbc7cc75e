"""The plain-data codec must agree with jelly+banana on everything it accepts."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbgreen import banana, flavors, plaincodec
from pbgreen.banana import NO_VOCAB, VOCAB_CODES, BananaError, Decoder
from pbgreen.jelly import jelly, unjelly

HEAD = [b"answer", 12345]

scalars = (st.none() | st.booleans() | st.integers(-(2 ** 448) + 1, 2 ** 448 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=3000) | st.binary(max_size=3000)
           | st.sampled_from([b"list", b"remote", b"unicode", "None", 2 ** 31, -(2 ** 31)]))
hashables = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(
    max_size=20)
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=8) | st.lists(inner, max_size=8).map(tuple)
                   | st.dictionaries(hashables, inner, max_size=8)
                   | st.frozensets(hashables, max_size=5) | st.sets(hashables, max_size=5)),
    max_leaves=40)


def same(a, b):
    """Equal, with types, all the way down (nan == nan)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(values, st.booleans())
def test_dumps_gives_the_same_bytes_as_jelly_and_banana(value, vocab):
    table = VOCAB_CODES if vocab else NO_VOCAB
    expected = banana.encode(HEAD + [jelly(value)], vocab=vocab)
    try:
        assert plaincodec.dumps(HEAD, (value,), table) == expected
    except plaincodec.Fallback:
        # only for what needs reference/dereference: shared objects such as ()
        assert b"dereference" in banana.encode(jelly(value), vocab=False)


@settings(max_examples=300, deadline=None)
@given(values, st.integers(1, 50))
def test_loads_rebuilds_what_unjelly_rebuilds(value, chunk):
    data = banana.encode(HEAD + [jelly(value)])
    expected = unjelly(Decoder(vocab=True).feed(data)[0][2])
    decoder = Decoder(vocab=True, fast=plaincodec.loads)
    whole = decoder.feed(data)[0][2]
    if type(whole) is plaincodec.Built:
        assert same(whole.value, expected)
    else:  # declined: only for reference/dereference, and then unchanged
        assert whole == Decoder(vocab=True).feed(data)[0][2]
        assert b"dereference" in banana.encode(whole, vocab=False)
    pieces = Decoder(vocab=True, fast=plaincodec.loads)
    found = []
    for i in range(0, len(data), chunk):
        found += pieces.feed(data[i:i + chunk])
    payload = found[0][2]
    assert same(payload.value if type(payload) is plaincodec.Built else unjelly(payload), expected)


def test_shared_or_cyclic_containers_take_the_general_path():
    shared = [1]
    with pytest.raises(plaincodec.Fallback):
        plaincodec.dumps(HEAD, ([shared, shared],), VOCAB_CODES)
    cycle = []
    cycle.append(cycle)
    with pytest.raises(plaincodec.Fallback):
        plaincodec.dumps(HEAD, (cycle,), VOCAB_CODES)
    # but the same object in *separate* values is fine (each is jellied alone)
    assert plaincodec.dumps([b"message"], (shared, shared), VOCAB_CODES)


def test_flavors_and_references_take_the_general_path():
    with pytest.raises(plaincodec.Fallback):
        plaincodec.dumps(HEAD, ((flavors.Referenceable(),),), VOCAB_CODES)
    data = banana.encode([b"answer", 1, [b"list", [b"remote", 3]]])
    assert Decoder(vocab=True, fast=plaincodec.loads).feed(data) == [
        [b"answer", 1, [b"list", [b"remote", 3]]]]
    shared = banana.encode([b"answer", 1, [b"tuple", [b"reference", 1, [b"list"]],
                                           [b"dereference", 1]]])
    assert type(Decoder(vocab=True, fast=plaincodec.loads).feed(shared)[0][2]) is list


def test_a_declined_value_is_not_kept_alive():
    class Thing(flavors.Referenceable):
        pass
    thing = Thing()
    alive = weakref.ref(thing)
    with pytest.raises(plaincodec.Fallback):
        plaincodec.dumps(HEAD, ((1, thing),), VOCAB_CODES)
    del thing
    gc.collect()
    assert alive() is None


def test_limits_are_left_to_the_general_path():
    too_long = banana.encode_b128(banana.SIZE_LIMIT + 1) + b"\x82"
    decoder = Decoder(vocab=True, fast=plaincodec.loads)
    with pytest.raises(BananaError):
        decoder.feed(b"\x03\x80\x1b\x87\x01\x81" + too_long)
    with pytest.raises(plaincodec.Fallback):
        plaincodec.dumps(HEAD, (b"x" * (banana.SIZE_LIMIT + 1),), VOCAB_CODES)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), values)
def test_fuzz_fast_and_general_decoders_agree(noise, value):
    data = banana.encode(HEAD + [jelly(value)])
    for stream in (noise, data[: len(data) // 2] + noise, data + noise):
        outcomes = []
        for hook in (None, plaincodec.loads):
            decoder = Decoder(vocab=True, fast=hook)
            try:
                found = decoder.feed(stream)
            except BananaError:
                outcomes.append("error")
                continue
            outcomes.append([_plain(expr) for expr in found])
        assert outcomes[0] == outcomes[1] or _equivalent(*outcomes)


def _plain(expr):
    if type(expr) is list:
        return [_plain(x) for x in expr]
    if type(expr) is plaincodec.Built:
        return ("built", repr(expr.value))
    return expr


def _equivalent(general, fast_result):
    """The general decoder gives s-expressions where the fast one gives Built values."""
    if general == "error" or fast_result == "error" or len(general) != len(fast_result):
        return False
    for g, f in zip(general, fast_result):
        if g == f:
            continue
        if type(f) is not list or len(f) != len(g):
            return False
        for gx, fx in zip(g, f):
            if type(fx) is tuple and fx and fx[0] == "built":
                try:
                    rebuilt = unjelly(gx)
                except Exception:
                    return False
                if repr(rebuilt) != fx[1]:
                    return False
            elif gx != fx:
                return False
    return True
