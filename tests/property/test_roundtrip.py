"""Hypothesis round trips for banana and jelly, and decoder fuzzing.

* banana: any nested list/int/float/bytes value within the limits decodes to
  itself, whether the bytes arrive whole, one at a time or in random chunks;
* jelly: basic-type object graphs -- including shared objects and cycles --
  survive jelly -> banana -> unjelly with the same shape *and* the same
  identity pattern;
* fuzz: arbitrary or mutated bytes either decode or raise BananaError, never
  anything else, and the answer does not depend on how the bytes are split.
"""

import datetime
import decimal
import math
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbgreen.banana import VOCAB, Decoder, decode, encode
from pbgreen.errors import BananaError
from pbgreen.jelly import jelly, unjelly

MAX_INT = 2**448 - 1

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- helpers --------------------------------------------------------------------


def same(a, b):
    """Equality for decoded banana values: floats by their bits."""
    if type(a) is float and type(b) is float:
        return struct.pack("!d", a) == struct.pack("!d", b)
    if type(a) is list and type(b) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def as_decoded(value):
    if isinstance(value, (list, tuple)):
        return [as_decoded(v) for v in value]
    if isinstance(value, bool):
        return int(value)
    return value


def is_banana_value(value):
    if type(value) is list:
        return all(is_banana_value(v) for v in value)
    return type(value) in (int, float, bytes)


def feed_chunks(data, cuts, **kw):
    """Feed ``data`` split at the sorted positions ``cuts``."""
    decoder = Decoder(**kw)
    out = []
    start = 0
    for cut in list(cuts) + [len(data)]:
        out.extend(decoder.feed(data[start:cut]))
        start = cut
    return out


def outcome(data, cuts, **kw):
    """("ok", values) or ("error", None); any other exception propagates."""
    try:
        return "ok", feed_chunks(data, cuts, **kw)
    except BananaError:
        return "error", None


def chunkings(data, draw):
    """Whole, one byte at a time, and one random chunking."""
    n = len(data)
    random_cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=12))))
    return [[], list(range(1, n)), random_cuts]


# -- banana round trip ------------------------------------------------------------

boundary_ints = st.sampled_from(
    [0, 1, 127, 128, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, -(2**63), MAX_INT, -MAX_INT]
)
banana_leaves = st.one_of(
    st.integers(min_value=-MAX_INT, max_value=MAX_INT),
    boundary_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=40),
    st.sampled_from(sorted(VOCAB.values()) + [b"pb", b"none", b"unicode"]),
    st.booleans(),
)
banana_values = st.recursive(
    banana_leaves,
    lambda children: st.lists(children, max_size=6) | st.tuples(children, children),
    max_leaves=30,
)


@SETTINGS
@given(value=banana_values, vocab=st.booleans())
def test_banana_round_trip(value, vocab):
    data = encode(value, vocab=vocab)
    # Whatever the encoder's dialect, a pb decoder reads it back.
    assert same(decode(data, vocab=True), as_decoded(value))
    if not vocab:
        assert same(decode(data, vocab=False), as_decoded(value))


@SETTINGS
@given(values=st.lists(banana_values, min_size=1, max_size=5), data=st.data())
def test_banana_stream_any_chunking(values, data):
    stream = b"".join(encode(v) for v in values)
    expected = [as_decoded(v) for v in values]
    for cuts in chunkings(stream, data.draw):
        assert same(feed_chunks(stream, cuts, vocab=True), expected)


@SETTINGS
@given(value=banana_values)
def test_encoding_is_canonical(value):
    # Re-encoding what was decoded gives the same bytes.
    data = encode(value)
    assert encode(decode(data)) == data


# -- decoder fuzzing ----------------------------------------------------------------

limits = st.fixed_dictionaries(
    {},
    optional={
        "size_limit": st.integers(1, 64),
        "prefix_limit": st.integers(1, 10),
        "max_depth": st.integers(1, 12),
        "max_message_size": st.integers(1, 300),
        "max_items": st.integers(1, 60),
    },
)


def check_fuzz(stream, kw, draw):
    results = [outcome(stream, cuts, **kw) for cuts in chunkings(stream, draw)]
    status = {r[0] for r in results}
    assert len(status) == 1, results
    if results[0][0] == "ok":
        for _, values in results:
            assert same(values, results[0][1])
            assert all(is_banana_value(v) for v in values)


@FUZZ_SETTINGS
@given(stream=st.binary(max_size=300), vocab=st.booleans(), kw=limits, data=st.data())
def test_fuzz_random_bytes(stream, vocab, kw, data):
    check_fuzz(stream, dict(kw, vocab=vocab), data.draw)


@st.composite
def mutated_streams(draw):
    values = draw(st.lists(banana_values, min_size=1, max_size=3))
    stream = bytearray(b"".join(encode(v) for v in values))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(stream) - 1, 0)))
        if op == "flip" and stream:
            stream[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            stream[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and stream:
            del stream[pos]
        elif op == "truncate":
            del stream[pos:]
    return bytes(stream)


@FUZZ_SETTINGS
@given(stream=mutated_streams(), vocab=st.booleans(), kw=limits, data=st.data())
def test_fuzz_mutated_encodings(stream, vocab, kw, data):
    check_fuzz(stream, dict(kw, vocab=vocab), data.draw)


@FUZZ_SETTINGS
@given(stream=st.binary(max_size=200), vocab=st.booleans())
def test_fuzz_module_decode(stream, vocab):
    try:
        value = decode(stream, vocab=vocab)
    except BananaError:
        return
    assert is_banana_value(value)


# -- jelly round trip with shared objects and cycles ----------------------------------

ints = st.integers(min_value=-MAX_INT, max_value=MAX_INT)
decimals = st.decimals(allow_nan=False, allow_infinity=False).filter(
    lambda d: len(d.as_tuple().digits) <= 100 and abs(d.as_tuple().exponent) <= 10**6
)
hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.timedeltas(),
    decimals,
)
hashables = st.recursive(
    hashable_leaves,
    lambda c: st.tuples(c, c) | st.lists(c, max_size=3).map(tuple) | st.frozensets(c, max_size=3),
    max_leaves=6,
)
jelly_values = st.recursive(
    st.one_of(hashable_leaves, st.floats(allow_nan=True)),
    lambda c: (
        st.lists(c, max_size=4)
        | st.lists(c, max_size=4).map(tuple)
        | st.dictionaries(hashables, c, max_size=3)
        | st.sets(hashables, max_size=3)
        | st.frozensets(hashables, max_size=3)
    ),
    max_leaves=20,
)

TRACKED = (list, tuple, dict, set, frozenset)
MUTABLE = (list, dict, set)


def containers(root):
    """Every container reachable from root, each once."""
    seen = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if type(obj) not in TRACKED or id(obj) in seen:
            continue
        seen[id(obj)] = obj
        if type(obj) is dict:
            for k, v in obj.items():
                stack.extend((k, v))
        else:
            stack.extend(obj)
    return list(seen.values())


@st.composite
def graphs(draw):
    """A value tree, then extra edges that make objects shared or cyclic."""
    root = [draw(jelly_values)]
    for i in range(draw(st.integers(0, 6))):
        pool = containers(root)
        targets = [c for c in pool if type(c) in (list, dict)]
        target = draw(st.sampled_from(targets))
        source = draw(st.sampled_from(pool))
        if type(target) is list:
            target.insert(draw(st.integers(0, len(target))), source)
        else:
            target[f"edge{i}"] = source
    return root


def same_decimal(a, b):
    if a.is_zero():
        return b.is_zero() and a.as_tuple().exponent == b.as_tuple().exponent
    return a.as_tuple() == b.as_tuple()


def assert_same_graph(orig, copy):
    """Same values, same types, and the same sharing: two places hold one
    object in the copy exactly when they hold one object in the original."""
    orig_to_copy = {}
    copy_to_orig = {}

    def walk(o, c, path):
        assert type(o) is type(c), (path, o, c)
        t = type(o)
        if t is float:
            assert struct.pack("!d", o) == struct.pack("!d", c) or (math.isnan(o) and math.isnan(c)), path
            return
        if t is decimal.Decimal:
            assert same_decimal(o, c), (path, o, c)
            return
        if t not in TRACKED:
            assert o == c, (path, o, c)
            return
        if id(o) in orig_to_copy:
            assert orig_to_copy[id(o)] is c, f"sharing lost at {path}"
            return
        if t in MUTABLE:
            assert id(c) not in copy_to_orig, f"spurious sharing at {path}"
        orig_to_copy[id(o)] = c
        copy_to_orig[id(c)] = o
        if t in (list, tuple):
            assert len(o) == len(c), path
            for i, (x, y) in enumerate(zip(o, c)):
                walk(x, y, f"{path}[{i}]")
        elif t is dict:
            assert len(o) == len(c), path
            for i, ((ko, vo), (kc, vc)) in enumerate(zip(o.items(), c.items())):
                walk(ko, kc, f"{path}.key{i}")
                walk(vo, vc, f"{path}[{ko!r}]")
        else:  # set / frozenset: pair elements by equality
            assert o == c, (path, o, c)
            for x in o:
                (y,) = [y for y in c if type(y) is type(x) and y == x]
                walk(x, y, f"{path}{{{x!r}}}")

    walk(orig, copy, "root")


def over_the_wire(sexp, draw):
    data = encode(sexp)
    cuts = chunkings(data, draw)[2]
    (out,) = feed_chunks(data, cuts, vocab=True)
    return out


@SETTINGS
@given(value=jelly_values)
def test_jelly_round_trip_tree(value):
    assert_same_graph(value, unjelly(jelly(value)))


@SETTINGS
@given(root=graphs(), data=st.data())
def test_jelly_round_trip_shared_and_cyclic(root, data):
    sexp = jelly(root)
    assert_same_graph(root, unjelly(sexp))
    assert_same_graph(root, unjelly(over_the_wire(sexp, data.draw)))


@SETTINGS
@given(root=graphs())
def test_jelly_is_deterministic(root):
    # Same graph, same s-expression; refids restart with each call.
    assert encode(jelly(root)) == encode(jelly(root))


@SETTINGS
@given(value=st.one_of(st.datetimes(), st.dates(), st.times(), st.timedeltas(), decimals))
def test_jelly_scalar_forms_over_the_wire(value):
    out = unjelly(decode(encode(jelly(value))))
    assert type(out) is type(value)
    if isinstance(value, decimal.Decimal):
        assert same_decimal(value, out)
    else:
        assert out == value
    if isinstance(value, datetime.datetime):
        assert out.tzinfo is None
