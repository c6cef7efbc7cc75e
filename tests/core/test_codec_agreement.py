"""The compiled codec and the pure-Python one give the same bytes, values and exceptions.

Also: when the extension was built, a normal run really uses it (a build
that silently stopped importing must fail here, not just run slower).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbgreen import banana, plaincodec
from pbgreen.banana import NO_VOCAB, VOCAB, VOCAB_CODES
from support import load_harness, plain_values

PACKAGE = Path(plaincodec.__file__).parent
#: The extension files this interpreter would load (one built for another Python does not count).
BUILT = [PACKAGE / f"_ccodec{suffix}" for suffix in EXTENSION_SUFFIXES
         if (PACKAGE / f"_ccodec{suffix}").exists()]
CODECS = plaincodec.implementations()
PY = CODECS["python"]
C = CODECS.get("compiled")

needs_compiled = pytest.mark.skipif(C is None, reason="the C extension is not built here")


def test_the_compiled_codec_is_active_when_it_was_built():
    if plaincodec.pure_python_requested():
        assert not plaincodec.COMPILED and plaincodec.loads is PY.loads
        return
    if not BUILT:
        assert not plaincodec.COMPILED, "COMPILED without an extension file"
        return
    # the .so is in the package: it must import, and be the one in use
    assert C is not None, f"{BUILT[0].name} is there but does not import"
    assert plaincodec.COMPILED
    for name in ("dumps", "dumps_head", "dumps_values", "loads"):
        assert getattr(plaincodec, name) is getattr(C, name)


def test_pure_python_is_chosen_by_the_environment():
    """PBGREEN_PUREPYTHON=1 in a fresh interpreter selects the pure codec; empty or 0 does not."""
    code = "from pbgreen import plaincodec; print(plaincodec.COMPILED)"
    for value, compiled in (("1", False), ("", C is not None), ("0", C is not None)):
        env = dict(os.environ, PBGREEN_PUREPYTHON=value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout
        assert out.strip() == str(compiled), (value, out)


# ----------------------------------------------------------------------- helpers


fz = load_harness("codec_fuzz")
canon, outcome = fz.canon, fz.outcome


# ----------------------------------------------------------------------- strategies

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2 ** 460), 2 ** 460)
           | st.sampled_from([2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2047, 2048,
                              2 ** 63, -(2 ** 63), 2 ** 64, 2 ** 448 - 1, 2 ** 448, -(2 ** 448)])
           | st.floats(allow_nan=True) | st.text(max_size=300) | st.binary(max_size=300)
           | st.sampled_from([b"list", b"None", b"answer", "None", "dictionary", b"unicode",
                              "\ud800", b"x" * 2047, b"x" * 2048, "\u00e9" * 1500])
           | st.builds(object))
hashables = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) \
    | st.binary(max_size=20)
values = plain_values(scalars, hashables)
vocabs = st.sampled_from([VOCAB_CODES, NO_VOCAB, {}, {b"list": b"\x07\x87"}])
fields = st.integers() | st.binary(max_size=40) | st.sampled_from(
    [True, None, "text", 1.5, b"message", b"x" * (banana.SIZE_LIMIT + 1), 2 ** 448])
heads = st.lists(fields, max_size=5)

#: Examples per property; raise it for a longer hunt (PBGREEN_FUZZ_EXAMPLES=20000 pytest ...).
SETTINGS = settings(max_examples=int(os.environ.get("PBGREEN_FUZZ_EXAMPLES", "400")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------- encoding


@needs_compiled
@SETTINGS
@given(st.lists(values, max_size=3), heads, vocabs, st.booleans())
def test_dumps_agree_byte_for_byte(items, head, vocab, as_tuple):
    items = tuple(items) if as_tuple else items
    assert outcome(C.dumps_values, items, vocab) == outcome(PY.dumps_values, items, vocab)
    assert outcome(C.dumps, head, items, vocab) == outcome(PY.dumps, head, items, vocab)
    for more in (0, 2, 3000, -1):
        assert outcome(C.dumps_head, head, more, vocab) == outcome(PY.dumps_head, head, more, vocab)


@needs_compiled
def test_shared_containers_fall_back_in_both():
    shared = [1]
    for value in ([shared, shared], {1: shared, 2: shared}, ((), ())):
        assert outcome(C.dumps_values, (value,), VOCAB_CODES) == \
            outcome(PY.dumps_values, (value,), VOCAB_CODES)
    assert C.dumps_values((shared, shared), VOCAB_CODES) == \
        PY.dumps_values((shared, shared), VOCAB_CODES)


@needs_compiled
def test_an_unsendable_head_field_raises_the_same_encode_error():
    for head in ([b"x" * (banana.SIZE_LIMIT + 1)], [2 ** 448], [-(2 ** 448)], ["text"]):
        with pytest.raises(Exception) as pure:
            PY.dumps_head(head, 1, VOCAB_CODES)
        with pytest.raises(type(pure.value)) as compiled:
            C.dumps_head(head, 1, VOCAB_CODES)
        assert str(compiled.value) == str(pure.value)


# ----------------------------------------------------------------------- decoding


def loads_outcome(codec, buf, pos, n, vocab, size_limit=banana.SIZE_LIMIT,
                  max_items=banana.MAX_ITEMS):
    return outcome(codec.loads, buf, pos, n, vocab, size_limit, max_items)


@needs_compiled
@SETTINGS
@given(values, st.booleans(), st.sampled_from([b"answer", b"message", b"cachemessage"]))
def test_loads_of_dumps_agree_in_values_and_types(value, vocab, command):
    table = VOCAB_CODES if vocab else NO_VOCAB
    head = [command, 1] if command == b"answer" else [command, 3, b"root", b"method", 0]
    try:
        data = PY.dumps(head, (value,) * (len(head) // 2 if command == b"answer" else 2), table)
    except (plaincodec.Fallback, UnicodeEncodeError):
        return
    vocab_table = VOCAB if vocab else None
    got = loads_outcome(C, data, 0, len(data), vocab_table)
    assert got == loads_outcome(PY, data, 0, len(data), vocab_table)
    if got[0] == "ok" and got[1] != ("NoneType", None):
        assert C.loads(data, 0, len(data), vocab_table, banana.SIZE_LIMIT, 10 ** 9)[1] == len(data)


def mutations(data: bytes, draw) -> bytes:
    kind = draw(st.integers(0, 4))
    if not data or kind == 0:
        return data
    i = draw(st.integers(0, len(data) - 1))
    if kind == 1:  # truncated
        return data[:i]
    if kind == 2:  # one byte changed
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    if kind == 3:  # bytes inserted
        return data[:i] + draw(st.binary(max_size=12)) + data[i:]
    return data[:i] + data[i + draw(st.integers(1, 8)):]  # bytes removed


@needs_compiled
@SETTINGS
@given(values, st.data(), st.booleans(), st.integers(0, 3))
def test_mutated_and_truncated_messages_give_the_same_outcome(value, data, vocab, rounds):
    table = VOCAB_CODES if vocab else NO_VOCAB
    try:
        buf = PY.dumps([b"answer", 7], (value,), table)
    except (plaincodec.Fallback, UnicodeEncodeError):
        buf = banana.encode([b"answer", 7, [b"list", 1]])
    for _ in range(rounds):
        buf = mutations(buf, data.draw)
    pos = data.draw(st.integers(0, len(buf)))
    n = data.draw(st.integers(pos, len(buf)))
    size_limit = data.draw(st.sampled_from([banana.SIZE_LIMIT, 2 ** 14, 2 ** 14 - 1, 2 ** 70]))
    max_items = data.draw(st.sampled_from([banana.MAX_ITEMS, 3, 0, 2 ** 70]))
    for vocab_table in (VOCAB, None):
        assert loads_outcome(C, buf, pos, n, vocab_table, size_limit, max_items) == \
            loads_outcome(PY, buf, pos, n, vocab_table, size_limit, max_items)


prefixes = st.lists(st.integers(0, 0x7F), min_size=0, max_size=70).map(bytes)
elements = st.builds(lambda p, t, body: p + bytes([t]) + body, prefixes,
                     st.integers(0x80, 0x8A), st.binary(max_size=10))


@needs_compiled
@SETTINGS
@given(st.lists(elements | st.sampled_from([b"\x07\x82unicode", b"\x04\x82None",
                                           b"\x0a\x82dictionary", b"\x02\x80", b"\x03\x80",
                                           b"\x03\x82set", b"\x07\x82boolean",
                                           b"\x04\x82true", b"\x1b\x87", b"\x1a\x87"]),
                max_size=12))
def test_generated_elements_give_the_same_outcome(parts):
    buf = b"\x03\x80\x1b\x87\x01\x81" + b"".join(parts)
    for vocab_table in (VOCAB, None):
        assert loads_outcome(C, buf, 0, len(buf), vocab_table) == \
            loads_outcome(PY, buf, 0, len(buf), vocab_table)


@needs_compiled
def test_over_limit_and_long_prefixes_decline_in_both():
    over = banana.encode_b128(banana.SIZE_LIMIT + 1)
    cases = [
        b"\x03\x80\x1b\x87\x01\x81" + over + b"\x82" + b"x" * 10,   # string over the limit
        b"\x03\x80\x1b\x87\x01\x81" + over + b"\x80\x08\x87",        # list over the limit
        b"\x03\x80\x1b\x87\x01\x81" + b"\x01" * 64 + b"\x81",         # longest prefix: a big int
        b"\x03\x80\x1b\x87\x01\x81" + b"\x01" * 65 + b"\x81",         # one past PREFIX_LIMIT
        b"\x03\x80\x1b\x87\x01\x81" + b"\x7f" * 10 + b"\x86",         # a big negative
        b"\x03\x80\x1b\x87" + b"\x7f" * 12 + b"\x81" + b"\x84" + b"\x00" * 8,  # big field
    ]
    for buf in cases:
        for vocab_table in (VOCAB, None):
            got = loads_outcome(C, buf, 0, len(buf), vocab_table)
            assert got == loads_outcome(PY, buf, 0, len(buf), vocab_table), buf.hex()


@needs_compiled
def test_odd_arguments_are_handled_as_the_pure_function_does():
    data = PY.dumps([b"answer", 1], ({"a": 1.5},), VOCAB_CODES)
    for args in ((bytearray(data), 0, len(data)), (memoryview(data), 0, len(data)),
                 (data, -1, len(data)), (data, 0, len(data) + 5), (data, 3, 2)):
        assert outcome(C.loads, *args, VOCAB, banana.SIZE_LIMIT, 100) == \
            outcome(PY.loads, *args, VOCAB, banana.SIZE_LIMIT, 100)
    for vocab in ({}, {26: b"answer"}, dict(VOCAB)):
        assert outcome(C.loads, data, 0, len(data), vocab, banana.SIZE_LIMIT, 100) == \
            outcome(PY.loads, data, 0, len(data), vocab, banana.SIZE_LIMIT, 100)
    assert outcome(C.dumps_values, iter([1]), VOCAB_CODES) == \
        outcome(PY.dumps_values, iter([1]), VOCAB_CODES)
    by_name = dict(buf=data, pos=0, n=len(data), vocab=VOCAB, size_limit=banana.SIZE_LIMIT,
                   max_items=100)
    assert canon(C.loads(**by_name)) == canon(PY.loads(**by_name))
    assert C.dumps_values(values=(1,), vocab=VOCAB_CODES) == PY.dumps_values((1,), VOCAB_CODES)
    with pytest.raises(TypeError):
        C.loads(data, 0)


def test_nan_and_signed_zero_survive_both():
    for codec in CODECS.values():
        data = codec.dumps([b"answer", 1], ((math.nan, -0.0, math.inf),), VOCAB_CODES)
        value = codec.loads(data, 0, len(data), VOCAB, banana.SIZE_LIMIT, 100)[0][2].value
        assert math.isnan(value[0]) and math.copysign(1, value[1]) == -1 and value[2] == math.inf
