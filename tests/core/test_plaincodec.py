"""The plain-data codec must agree with jelly+banana on everything it accepts.

Every test runs against each implementation that imports here (pure Python,
and the compiled one when it was built); ``test_codec_agreement`` checks
that the two agree with each other byte for byte.
"""

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
from support import plain_values

HEAD = [b"answer", 12345]

CODECS = plaincodec.implementations()
codecs = pytest.mark.parametrize("codec", list(CODECS.values()), ids=list(CODECS))

scalars = (st.none() | st.booleans() | st.integers(-(2 ** 448) + 1, 2 ** 448 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=3000) | st.binary(max_size=3000)
           | st.sampled_from([b"list", b"remote", b"unicode", "None", 2 ** 31, -(2 ** 31)]))
hashables = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(
    max_size=20)
values = plain_values(scalars, hashables)


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


@codecs
@settings(max_examples=300, deadline=None)
@given(values, st.booleans())
def test_dumps_gives_the_same_bytes_as_jelly_and_banana(codec, value, vocab):
    table = VOCAB_CODES if vocab else NO_VOCAB
    expected = banana.encode(HEAD + [jelly(value)], vocab=vocab)
    try:
        assert codec.dumps(HEAD, (value,), table) == expected
    except plaincodec.Fallback:
        # only for what needs reference/dereference: shared objects such as ()
        assert b"dereference" in banana.encode(jelly(value), vocab=False)


@codecs
@settings(max_examples=300, deadline=None)
@given(values, st.integers(1, 50))
def test_loads_rebuilds_what_unjelly_rebuilds(codec, value, chunk):
    data = banana.encode(HEAD + [jelly(value)])
    expected = unjelly(Decoder(vocab=True).feed(data)[0][2])
    decoder = Decoder(vocab=True, fast=codec.loads)
    whole = decoder.feed(data)[0][2]
    if type(whole) is plaincodec.Built:
        assert same(whole.value, expected)
    else:  # declined: only for reference/dereference, and then unchanged
        assert whole == Decoder(vocab=True).feed(data)[0][2]
        assert b"dereference" in banana.encode(whole, vocab=False)
    pieces = Decoder(vocab=True, fast=codec.loads)
    found = []
    for i in range(0, len(data), chunk):
        found += pieces.feed(data[i:i + chunk])
    payload = found[0][2]
    assert same(payload.value if type(payload) is plaincodec.Built else unjelly(payload), expected)


@codecs
def test_shared_or_cyclic_containers_take_the_general_path(codec):
    shared = [1]
    with pytest.raises(plaincodec.Fallback):
        codec.dumps(HEAD, ([shared, shared],), VOCAB_CODES)
    cycle = []
    cycle.append(cycle)
    with pytest.raises(plaincodec.Fallback):
        codec.dumps(HEAD, (cycle,), VOCAB_CODES)
    # but the same object in *separate* values is fine (each is jellied alone)
    assert codec.dumps([b"message"], (shared, shared), VOCAB_CODES)


@codecs
def test_flavors_and_references_take_the_general_path(codec):
    with pytest.raises(plaincodec.Fallback):
        codec.dumps(HEAD, ((flavors.Referenceable(),),), VOCAB_CODES)
    data = banana.encode([b"answer", 1, [b"list", [b"remote", 3]]])
    assert Decoder(vocab=True, fast=codec.loads).feed(data) == [
        [b"answer", 1, [b"list", [b"remote", 3]]]]
    shared = banana.encode([b"answer", 1, [b"tuple", [b"reference", 1, [b"list"]],
                                           [b"dereference", 1]]])
    assert type(Decoder(vocab=True, fast=codec.loads).feed(shared)[0][2]) is list


@codecs
def test_a_declined_value_is_not_kept_alive(codec):
    class Thing(flavors.Referenceable):
        pass
    thing = Thing()
    alive = weakref.ref(thing)
    with pytest.raises(plaincodec.Fallback):
        codec.dumps(HEAD, ((1, thing),), VOCAB_CODES)
    del thing
    gc.collect()
    assert alive() is None


@codecs
def test_limits_are_left_to_the_general_path(codec):
    too_long = banana.encode_b128(banana.SIZE_LIMIT + 1) + b"\x82"
    decoder = Decoder(vocab=True, fast=codec.loads)
    with pytest.raises(BananaError):
        decoder.feed(b"\x03\x80\x1b\x87\x01\x81" + too_long)
    with pytest.raises(plaincodec.Fallback):
        codec.dumps(HEAD, (b"x" * (banana.SIZE_LIMIT + 1),), VOCAB_CODES)


def _nested(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _message(payload):
    return banana.encode([b"answer", 1, payload])


def _raw_message(payload: bytes) -> bytes:
    """An answer whose payload is given as bytes (banana.encode refuses what is over a limit)."""
    return banana.list_header(3) + banana.encode(b"answer") + banana.encode(1) + payload


def _fast(codec, data):
    """What ``codec.loads`` rebuilds from one whole message, or ``None`` if it declines."""
    found = codec.loads(data, 0, len(data), banana.VOCAB, banana.SIZE_LIMIT, banana.MAX_ITEMS)
    if found is None:
        return None
    assert found[1] == len(data)
    return found[0][2].value


def _at_or_past(codec, value, data, fits):
    """At a limit both codecs take ``value``; one past it both decline it."""
    if fits:
        assert codec.dumps([b"answer", 1], (value,), VOCAB_CODES) == data
        assert _fast(codec, data) == value
    else:
        with pytest.raises(plaincodec.Fallback):
            codec.dumps([b"answer", 1], (value,), VOCAB_CODES)
        assert _fast(codec, data) is None


@codecs
@pytest.mark.parametrize("size", [banana.SIZE_LIMIT, banana.SIZE_LIMIT + 1])
def test_string_length_at_the_limit_and_one_past(codec, size):
    fits = size <= banana.SIZE_LIMIT
    text = "\u00e9" * (size // 2) + "x" * (size % 2)  # size bytes in utf-8
    blob = b"x" * size
    blob_data = _raw_message(banana.encode_b128(size) + b"\x82" + blob)
    _at_or_past(codec, blob, blob_data, fits)
    text_data = _raw_message(banana.list_header(2) + b"\x07\x82unicode"
                             + banana.encode_b128(size) + b"\x82" + text.encode())
    _at_or_past(codec, text, text_data, fits)
    if not fits:  # the general decoder refuses it
        with pytest.raises(BananaError, match="over the 655360-byte limit"):
            Decoder(vocab=True, fast=codec.loads).feed(blob_data)


@codecs
@pytest.mark.parametrize("count", [banana.SIZE_LIMIT, banana.SIZE_LIMIT + 1])
def test_list_length_at_the_limit_and_one_past(codec, count):
    value = [7] * (count - 1)  # jellied, the list has one more element: its tag
    data = _raw_message(banana.encode_b128(count) + b"\x80" + banana.encode(b"list")
                        + b"\x07\x81" * (count - 1))
    _at_or_past(codec, value, data, count <= banana.SIZE_LIMIT)
    if count > banana.SIZE_LIMIT:
        with pytest.raises(BananaError, match="over the 655360-element limit"):
            Decoder(vocab=True, fast=codec.loads).feed(data)


@codecs
@pytest.mark.parametrize("depth", [64, 65])
def test_depth_at_the_fast_limit_and_one_past(codec, depth):
    """Values nested up to 64 deep take the fast path; deeper ones the general one."""
    value = _nested(depth)
    data = _message(jelly(value))
    _at_or_past(codec, value, data, depth <= 64)
    if depth > 64:
        assert unjelly(Decoder(vocab=True, fast=codec.loads).feed(data)[0][2]) == value


@codecs
@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), values)
def test_fuzz_fast_and_general_decoders_agree(codec, noise, value):
    data = banana.encode(HEAD + [jelly(value)])
    for stream in (noise, data[: len(data) // 2] + noise, data + noise):
        outcomes = []
        for hook in (None, codec.loads):
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
