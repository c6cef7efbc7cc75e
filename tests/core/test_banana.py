"""Banana codec: exact bytes, limits, vocabulary and the streaming decoder.

Every decoder test goes through ``decode_stream`` / ``assert_refused``, which
feed the same bytes twice -- once whole and once one byte at a time -- and
insist both ways agree.  Expected bytes come from WIRE.md sections 2 and 7.
"""

import math
import struct
import sys

import pytest

from pbgreen import banana
from pbgreen.banana import (
    DIALECTS,
    PREFIX_LIMIT,
    SIZE_LIMIT,
    VOCAB,
    Decoder,
    EncodeError,
    decode,
    encode,
)
from pbgreen.errors import BananaError, ProtocolError

H = bytes.fromhex

MAX_INT = 2**448 - 1


# -- helpers -------------------------------------------------------------------


def same(a, b):
    """Structural equality where floats compare by their bits (nan == nan)."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("!d", a) == struct.pack("!d", b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def as_decoded(value):
    """What the decoder gives back for an encodable value."""
    if isinstance(value, (list, tuple)):
        return [as_decoded(v) for v in value]
    if isinstance(value, bool):
        return int(value)
    return value


def check_types(value):
    """Decoded values are only list, int, float and bytes, exactly."""
    if type(value) is list:
        for item in value:
            check_types(item)
    else:
        assert type(value) in (int, float, bytes), type(value)


def feed_whole(data, **kw):
    return Decoder(**kw).feed(data)


def feed_bytewise(data, **kw):
    decoder = Decoder(**kw)
    out = []
    for i in range(len(data)):
        out.extend(decoder.feed(data[i : i + 1]))
    return out


def decode_stream(data, **kw):
    """Decode ``data`` whole and one byte at a time; both must agree."""
    whole = feed_whole(data, **kw)
    bytewise = feed_bytewise(data, **kw)
    assert same(whole, bytewise), (whole, bytewise)
    for value in whole:
        check_types(value)
    return whole


def assert_refused(data, **kw):
    """Both feeding styles raise BananaError; return the index of the byte
    that made the byte-at-a-time decoder raise.  Afterwards the decoder stays
    failed."""
    with pytest.raises(BananaError):
        Decoder(**kw).feed(data)
    decoder = Decoder(**kw)
    for i in range(len(data)):
        try:
            decoder.feed(data[i : i + 1])
        except BananaError:
            break
    else:
        pytest.fail("feeding one byte at a time never raised BananaError")
    # A failed decoder stays failed, even for perfectly good input.
    with pytest.raises(BananaError):
        decoder.feed(b"\x00\x81")
    return i


def assert_waiting(data, **kw):
    """The bytes are a valid but incomplete start: nothing comes out yet."""
    assert decode_stream(data, **kw) == []


def b128(n):
    """Base-128 prefix, least significant group first (at least one byte)."""
    out = bytearray()
    while True:
        out.append(n & 0x7F)
        n >>= 7
        if not n:
            return bytes(out)


def nested(depth):
    """``depth`` lists nested inside each other, the innermost empty."""
    return b"\x01\x80" * (depth - 1) + b"\x00\x80"


# -- module constants -------------------------------------------------------------


def test_constants():
    assert SIZE_LIMIT == 655360 == 640 * 1024
    assert PREFIX_LIMIT == 64
    assert DIALECTS == (b"pbgreen", b"pb", b"none")


def test_vocabulary_table():
    words = (
        "None class dereference reference dictionary function instance list "
        "module persistent tuple unpersistable copy cache cached remote local "
        "lcache version login password challenge logged_in not_logged_in "
        "cachemessage message answer error decref decache uncache"
    ).split()
    assert VOCAB == {i: w.encode() for i, w in enumerate(words, 1)}
    for word in VOCAB.values():
        assert type(word) is bytes


def test_error_hierarchy():
    assert issubclass(BananaError, ProtocolError)
    assert issubclass(EncodeError, ValueError)


# -- integers ---------------------------------------------------------------------

INT_BYTES = [
    (0, "00 81"),
    (1, "01 81"),
    (127, "7f 81"),
    (128, "00 01 81"),
    (300, "2c 02 81"),
    (-1, "01 83"),
    (-128, "00 01 83"),
    (2**31 - 1, "7f 7f 7f 7f 07 81"),
    (2**31, "00 00 00 00 08 85"),
    (-(2**31), "00 00 00 00 08 83"),
    (-(2**31) - 1, "01 00 00 00 08 86"),
    (2**70, "00" * 10 + "01 85"),
    (-(2**70), "00" * 10 + "01 86"),
    (MAX_INT, "7f" * 64 + "85"),
    (-MAX_INT, "7f" * 64 + "86"),
]


@pytest.mark.parametrize("value, hexbytes", INT_BYTES)
def test_int_exact_bytes(value, hexbytes):
    data = H(hexbytes)
    assert encode(value) == data
    assert encode(value, vocab=False) == data
    assert decode_stream(data) == [value]
    assert decode(data) == value


def test_bool_encodes_as_int():
    assert encode(True) == H("01 81")
    assert encode(False) == H("00 81")
    assert encode([True, False]) == H("02 80 01 81 00 81")


@pytest.mark.parametrize(
    "values",
    [
        list(range(100)),
        list(range(1000, 1100)),
        [10**k for k in range(6, 60)],
        [1024**k for k in range(1, 11)],
        [-(10**k) for k in range(0, 60)],
        [k * sys.maxsize for k in (-3, -2, -1, 1, 2, 3)],
        [2**k + d for k in range(0, 448) for d in (-1, 0) if 2**k + d <= MAX_INT],
    ],
    ids=["0-99", "1000-1099", "10^k", "1024^k", "-10^k", "maxsize*k", "2^k"],
)
def test_int_round_trip(values):
    data = encode(values)
    assert decode_stream(data) == [values]


@pytest.mark.parametrize("value", [MAX_INT + 1, -(MAX_INT + 1), 2**1000, -(2**1000)])
def test_encode_int_too_large(value):
    with pytest.raises(EncodeError):
        encode(value)
    with pytest.raises(EncodeError):
        encode([1, [2, value]])


@pytest.mark.parametrize("typebyte", ["81", "83", "85", "86"])
def test_decode_int_too_large(typebyte):
    # 2**448 needs a 65-digit prefix: one past the limit.
    assert b128(2**448) == b"\x00" * 64 + b"\x01"
    assert_refused(b128(2**448) + H(typebyte))


@pytest.mark.parametrize("typebyte, sign", [("81", 1), ("85", 1), ("83", -1), ("86", -1)])
def test_decode_int_at_limit(typebyte, sign):
    # 64 prefix digits is allowed, whatever the integer type byte.
    assert decode_stream(b"\x7f" * 64 + H(typebyte)) == [sign * MAX_INT]


def test_decoder_does_not_enforce_int_longint_split():
    assert decode_stream(b128(2**70) + H("81")) == [2**70]
    assert decode_stream(H("05 85")) == [5]
    assert decode_stream(b128(2**31 + 1) + H("83")) == [-(2**31) - 1]
    assert decode_stream(H("05 86")) == [-5]


def test_decoder_accepts_non_canonical_prefixes():
    # An empty prefix means 0; trailing zero groups are allowed.
    assert decode_stream(H("81")) == [0]
    assert decode_stream(H("83")) == [0]
    assert decode_stream(H("05 00 00 00 81")) == [5]
    assert decode_stream(H("80")) == [[]]
    assert decode_stream(H("82")) == [b""]
    assert decode_stream(H("02 00 82 68 69")) == [b"hi"]


def test_crash_negative_long():
    assert decode_stream(encode(-(2**31))) == [-(2**31)]
    assert decode_stream(encode([-(2**31), -(2**31) - 1, 2**31])) == [
        [-(2**31), -(2**31) - 1, 2**31]
    ]


# -- prefix limit -----------------------------------------------------------------


def test_prefix_at_limit_is_accepted():
    assert decode_stream(b"\x00" * PREFIX_LIMIT + H("81")) == [0]
    # A one-byte string whose length prefix carries 63 zero groups.
    assert decode_stream(b"\x01" + b"\x00" * 63 + H("82") + b"a") == [b"a"]
    # 64 digits of pending prefix with no type byte yet: still waiting.
    assert_waiting(b"\x00" * PREFIX_LIMIT)


def test_prefix_one_past_limit_is_refused():
    assert_refused(b"\x00" * (PREFIX_LIMIT + 1) + H("81"))


def test_pending_prefix_over_limit_is_refused_before_type_byte():
    # 65 prefix digits without any type byte: refused without waiting.
    index = assert_refused(b"\x00" * (PREFIX_LIMIT + 1))
    assert index == PREFIX_LIMIT
    decoder = Decoder()
    assert decoder.feed(b"\x01" * PREFIX_LIMIT) == []
    with pytest.raises(BananaError):
        decoder.feed(b"\x01")


def test_prefix_limit_is_configurable():
    assert decode_stream(H("7f 7f 81"), prefix_limit=2) == [128 * 128 - 1]
    assert_refused(H("00 00 01 81"), prefix_limit=2)
    assert assert_refused(H("00 00 00"), prefix_limit=2) == 2


def test_prefix_limit_inside_a_list():
    assert decode_stream(H("01 80") + b"\x7f" * 64 + H("85")) == [[MAX_INT]]
    assert_refused(H("01 80") + b"\x00" * 65 + H("81"))


# -- floats -----------------------------------------------------------------------

FLOAT_BYTES = [
    (1.5, "84 3f f8 00 00 00 00 00 00"),
    (0.0, "84 00 00 00 00 00 00 00 00"),
    (-0.0, "84 80 00 00 00 00 00 00 00"),
    (-2.5, "84 c0 04 00 00 00 00 00 00"),
    (math.inf, "84 7f f0 00 00 00 00 00 00"),
    (-math.inf, "84 ff f0 00 00 00 00 00 00"),
    (math.nan, "84 7f f8 00 00 00 00 00 00"),
]


@pytest.mark.parametrize("value, hexbytes", FLOAT_BYTES, ids=lambda v: repr(v) if isinstance(v, float) else None)
def test_float_exact_bytes(value, hexbytes):
    data = H(hexbytes)
    assert encode(value) == data
    out = decode_stream(data)
    assert len(out) == 1 and same(out[0], value)


def test_float_list_from_capture():
    # WIRE 7.3: ['list', inf, -inf, nan]
    data = H(
        "04 80 08 87 84 7f f0 00 00 00 00 00 00 84 ff f0 00 00 00 00 00 00"
        " 84 7f f8 00 00 00 00 00 00"
    )
    value = [b"list", math.inf, -math.inf, math.nan]
    assert encode(value) == data
    out = decode_stream(data, vocab=True)
    assert same(out, [value])


def test_float_prefix_is_ignored():
    assert decode_stream(H("05 84 3f f8 00 00 00 00 00 00")) == [1.5]


def test_float_round_trip_extremes():
    values = [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1e-300, 0.1]
    assert decode_stream(encode(values)) == [values]


def test_float_waits_for_its_body():
    data = encode(1.5)
    for cut in range(len(data)):
        decoder = Decoder()
        assert decoder.feed(data[:cut]) == []
        assert decoder.feed(data[cut:]) == [1.5]


# -- strings ----------------------------------------------------------------------


def test_string_exact_bytes():
    assert encode(b"pb", vocab=False) == H("02 82 70 62")
    assert encode(b"pb") == H("02 82 70 62")
    assert encode(b"") == H("00 82")
    assert decode_stream(H("02 82 70 62")) == [b"pb"]
    assert decode_stream(H("00 82")) == [b""]


def test_string_body_may_hold_any_byte():
    body = bytes(range(256))
    data = encode(body)
    assert data == H("00 02 82") + body
    assert decode_stream(data) == [body]
    # Bytes >= 0x80 in a body are data, not type bytes.
    assert decode_stream(H("03 82 80 81 87")) == [b"\x80\x81\x87"]


def test_string_waits_for_its_body():
    data = encode(b"hello world")
    for cut in range(len(data)):
        decoder = Decoder()
        assert decoder.feed(data[:cut]) == []
        assert decoder.feed(data[cut:]) == [b"hello world"]


def test_decoded_strings_are_bytes():
    (out,) = decode_stream(encode([b"abc", [b"d"]]))
    assert type(out[0]) is bytes and type(out[1][0]) is bytes


# -- lists ------------------------------------------------------------------------


def test_list_exact_bytes():
    assert encode([]) == H("00 80")
    assert encode([1, 2]) == H("02 80 01 81 02 81")
    assert encode([[], [b"x"]]) == H("02 80 00 80 01 80 01 82 78")
    assert decode_stream(H("00 80")) == [[]]
    assert decode_stream(H("02 80 00 80 01 80 01 82 78")) == [[[], [b"x"]]]


def test_tuple_encodes_like_list():
    assert encode((1, (2, b"x"), ())) == encode([1, [2, b"x"], []])
    assert decode_stream(encode((1, (2,)))) == [[1, [2]]]


def test_list_of_everything():
    value = [1, -1, 2**40, -(2**40), 1.5, b"bytes", [], [[[]]], b"list"]
    (out,) = decode_stream(encode(value), vocab=True)
    assert out == value
    assert type(out) is list and type(out[7]) is list


# -- every type byte ----------------------------------------------------------------


@pytest.mark.parametrize(
    "hexbytes, value",
    [
        ("02 80 01 81 02 81", [1, 2]),  # 0x80 LIST
        ("05 81", 5),  # 0x81 INT
        ("01 82 61", b"a"),  # 0x82 STRING
        ("05 83", -5),  # 0x83 NEG
        ("84 3f f8 00 00 00 00 00 00", 1.5),  # 0x84 FLOAT
        ("05 85", 5),  # 0x85 LONGINT
        ("05 86", -5),  # 0x86 LONGNEG
        ("10 87", b"remote"),  # 0x87 VOCAB (dialect pb)
    ],
)
def test_each_known_type_byte(hexbytes, value):
    assert decode_stream(H(hexbytes), vocab=True) == [value]


def test_unknown_type_bytes_are_refused():
    for typebyte in range(0x88, 0x100):
        assert_refused(bytes([typebyte]), vocab=True)
        assert_refused(bytes([0x05, typebyte]), vocab=True)
        assert_refused(bytes([0x02, 0x80, 0x01, 0x81, typebyte]), vocab=True)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xfe\xfd",
        b"\x01\x80\x01\x80\x99",
        # All bytes < 0x80: a prefix that never ends (longer than 64 bytes).
        b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.0\r\n\r\n",
        b"\x00\x81\x00\x81\xc0",  # good values, then garbage
    ],
)
def test_garbage_is_refused(garbage):
    assert_refused(garbage, vocab=True)


def test_good_values_before_garbage_are_delivered_bytewise():
    decoder = Decoder()
    assert decoder.feed(H("05 81")) == [5]
    with pytest.raises(BananaError):
        decoder.feed(H("01 88"))
    with pytest.raises(BananaError):
        decoder.feed(H("05 81"))


# -- vocabulary -------------------------------------------------------------------


def test_vocab_substitution_on_encode():
    assert encode(b"remote") == H("10 87")
    assert encode(b"list") == H("08 87")
    assert encode(b"list", vocab=False) == H("04 82 6c 69 73 74")
    assert encode(b"remote", vocab=False) == H("06 82") + b"remote"
    # WIRE 7.1: the version message.
    assert encode([b"version", 6]) == H("02 80 13 87 06 81")


def test_every_vocab_word():
    for number, word in sorted(VOCAB.items()):
        data = bytes([number, 0x87])
        assert encode(word) == data, word
        assert encode([word, [word]]) == H("02 80") + data + H("01 80") + data
        assert encode(word, vocab=False) == b128(len(word)) + H("82") + word
        assert decode_stream(data, vocab=True) == [word]
        assert decode_stream(encode(word, vocab=False), vocab=True) == [word]
        assert decode(data) == word


def test_non_vocab_words_stay_strings():
    for word in [b"unicode", b"boolean", b"set", b"decimal", b"root", b"pb", b"List", b"list "]:
        assert encode(word) == b128(len(word)) + H("82") + word


def test_vocab_refused_when_dialect_not_pb():
    assert_refused(H("10 87"))
    assert_refused(H("10 87"), vocab=False)
    assert_refused(H("02 80 01 81 08 87"))


@pytest.mark.parametrize("number", [0, 32, 122, 127, 1000, 2**40])
def test_unknown_vocab_number_refused(number):
    assert_refused(b128(number) + H("87"), vocab=True)


def test_vocab_switch_mid_stream():
    """Dialect negotiation: the reply arrives plain, then VOCAB is allowed."""
    decoder = Decoder()
    assert decoder.vocab is False
    assert decoder.feed(H("02 82 70 62")) == [b"pb"]
    decoder.vocab = True
    assert decoder.vocab is True
    out = []
    for byte in H("02 80 13 87 06 81"):
        out += decoder.feed(bytes([byte]))
    assert out == [[b"version", 6]]


def test_handshake_bytes():
    offer = H("02 80 02 82 70 62 04 82 6e 6f 6e 65")  # Twisted's own offer (WIRE 7.1)
    assert encode([b"pb", b"none"], vocab=False) == offer
    assert decode_stream(offer) == [[b"pb", b"none"]]
    ours = encode(list(DIALECTS), vocab=False)  # pbgreen's first, then Twisted's two
    assert ours == H("03 80 07 82") + b"pbgreen" + H("02 82 70 62 04 82 6e 6f 6e 65")


def test_message_bytes_from_capture():
    # WIRE 7.2: root.callRemote("add", 1, 2, c=3) and its answer.
    call = [
        b"message", 1, b"root", b"add", 1,
        [b"tuple", 1, 2],
        [b"dictionary", [[b"unicode", b"c"], 3]],
    ]
    call_bytes = H(
        "07 80 1a 87 01 81 04 82 72 6f 6f 74 03 82 61 64 64 01 81"
        " 03 80 0b 87 01 81 02 81"
        " 02 80 05 87 02 80 02 80 07 82 75 6e 69 63 6f 64 65 01 82 63 03 81"
    )
    assert encode(call) == call_bytes
    assert decode_stream(call_bytes, vocab=True) == [call]
    answer_bytes = H("03 80 1b 87 01 81 06 81")
    assert encode([b"answer", 1, 6]) == answer_bytes
    assert decode_stream(answer_bytes, vocab=True) == [[b"answer", 1, 6]]


# -- SIZE_LIMIT -------------------------------------------------------------------


def test_string_at_size_limit():
    body = b"\xab" * SIZE_LIMIT
    data = encode(body)
    assert data == b128(SIZE_LIMIT) + H("82") + body
    assert decode_stream(data) == [body]


def test_list_at_size_limit():
    value = [0] * SIZE_LIMIT
    data = encode(value)
    assert data == b128(SIZE_LIMIT) + H("80") + H("00 81") * SIZE_LIMIT
    assert decode_stream(data) == [value]


def test_encode_string_over_size_limit():
    with pytest.raises(EncodeError):
        encode(b"x" * (SIZE_LIMIT + 1))
    with pytest.raises(EncodeError):
        encode([b"ok", b"x" * (SIZE_LIMIT + 1)])


def test_encode_list_over_size_limit():
    with pytest.raises(EncodeError):
        encode([0] * (SIZE_LIMIT + 1))
    with pytest.raises(EncodeError):
        encode((0,) * (SIZE_LIMIT + 1))
    with pytest.raises(EncodeError):
        encode([[0] * (SIZE_LIMIT + 1)])


@pytest.mark.parametrize("typebyte", ["80", "82"])
def test_declared_size_at_limit_waits(typebyte):
    # Only the header: nothing decoded yet, nothing refused either.
    assert_waiting(b128(SIZE_LIMIT) + H(typebyte))


@pytest.mark.parametrize("typebyte", ["80", "82"])
def test_declared_size_over_limit_refused_before_body(typebyte):
    header = b128(SIZE_LIMIT + 1) + H(typebyte)
    # Refused on the type byte itself, with no body at all.
    assert assert_refused(header) == len(header) - 1


@pytest.mark.parametrize("typebyte", ["80", "82"])
def test_oversized_declared_lengths(typebyte):
    # Twisted's test_oversizedList / test_oversizedString.
    header = H("02 01 01 01 01") + H(typebyte)
    assert assert_refused(header) == len(header) - 1
    # A 10 GB string or a 2**448-1 element list.
    assert_refused(b128(10 * 2**30) + H(typebyte))
    assert_refused(b"\x7f" * 64 + H(typebyte))


def test_oversized_list_nested():
    assert_refused(H("01 80") + b128(SIZE_LIMIT + 1) + H("80"))


def test_size_limit_is_configurable():
    assert decode_stream(encode(b"x" * 10), size_limit=10) == [b"x" * 10]
    assert decode_stream(encode([1] * 10), size_limit=10) == [[1] * 10]
    assert assert_refused(H("0b 82"), size_limit=10) == 1
    assert assert_refused(H("0b 80"), size_limit=10) == 1


# -- nesting depth, message size and item count --------------------------------------


def test_deep_nesting_refused_without_recursion_error():
    data = nested(100_000)
    # assert_refused insists on BananaError, so a RecursionError fails here.
    index = assert_refused(data)
    assert index < len(data) - 1


def test_moderate_nesting_allowed_by_default():
    out = decode_stream(nested(50))
    depth = 0
    value = out[0]
    while value:
        value = value[0]
        depth += 1
    assert depth == 49 and value == []


def nested_one(depth):
    """``depth`` lists nested inside each other, the innermost holding 1."""
    return b"\x01\x80" * depth + b"\x01\x81"


def test_max_depth_at_limit_and_one_past():
    assert len(decode_stream(nested_one(5), max_depth=5)) == 1
    # Refused on the list header that opens level 6, before its contents.
    assert assert_refused(nested_one(6), max_depth=5) == 2 * 6 - 1
    # Depth is per path, not a total: many siblings at depth 2 are fine.
    siblings = H("03 80") + nested(4) * 3
    assert len(decode_stream(siblings, max_depth=5)) == 1


@pytest.mark.parametrize("depth", [600, 5000])
def test_encode_refuses_what_the_decoder_would_refuse(depth):
    """Whatever encode() accepts, a default Decoder must accept: otherwise a
    pbgreen peer drops the connection.  Too deep is an EncodeError, never a
    RecursionError."""
    value = []
    for _ in range(depth):
        value = [value]
    try:
        data = encode(value)
    except EncodeError:
        return
    assert len(Decoder().feed(data)) == 1


def test_max_message_size_at_limit_and_one_past():
    at_limit = encode(b"x" * 8)
    assert len(at_limit) == 10
    assert decode_stream(at_limit, max_message_size=10) == [b"x" * 8]
    assert_refused(encode(b"x" * 9), max_message_size=10)
    assert_refused(encode([1, 2, 3, 4, 5]), max_message_size=10)  # 12 bytes


def test_max_message_size_is_per_message():
    data = encode(b"x" * 8) * 5
    assert decode_stream(data, max_message_size=10) == [b"x" * 8] * 5


def test_max_message_size_refused_by_the_first_byte_over():
    # A 1000-byte string declared under max_message_size=100: refused at the
    # latest by the byte that takes the message past 100 bytes (refusing on
    # the declared length alone is fine too), never after the whole body.
    data = b128(1000) + H("82") + b"x" * 1000
    assert assert_refused(data, max_message_size=100) <= 100
    nested_data = H("02 80") + data + H("01 81")
    assert assert_refused(nested_data, max_message_size=100) <= 100


def test_max_items_at_limit_and_one_past():
    assert decode_stream(encode([7] * 5), max_items=10) == [[7] * 5]
    assert_refused(encode([7] * 20), max_items=10)
    # Items are counted over the whole message, not per list.
    assert decode_stream(encode([[1] * 3, [1] * 3]), max_items=10) == [[[1] * 3, [1] * 3]]
    assert_refused(encode([[1] * 6, [1] * 6]), max_items=10)


def test_max_items_is_per_message():
    data = encode([7] * 5) * 10
    assert decode_stream(data, max_items=10) == [[7] * 5] * 10


def test_max_items_refused_before_the_whole_list_arrives():
    data = encode([7] * 20)
    assert assert_refused(data, max_items=10) < len(data) - 1


# -- streaming --------------------------------------------------------------------

SAMPLES = [
    0,
    -(2**31),
    2**70,
    1.5,
    b"",
    b"hello",
    b"remote",
    [],
    [b"version", 6],
    [1, [2, [3, [b"four", 5.0]]], [], b"x" * 200],
]


@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_truncated_frames_wait_then_complete(value):
    data = encode(value)
    expected = as_decoded(value)
    for cut in range(len(data)):
        decoder = Decoder(vocab=True)
        assert decoder.feed(data[:cut]) == []
        assert decoder.feed(data[cut:]) == [expected]


def test_several_expressions_in_one_feed():
    values = [as_decoded(v) for v in SAMPLES]
    data = b"".join(encode(v) for v in SAMPLES)
    assert decode_stream(data, vocab=True) == values


def test_many_expressions_in_one_feed():
    # Small and multi-byte prefixes mixed: every complete expression comes
    # out of the one feed() call, none is left behind in the buffer.
    values = [1, 128, 1] + [1] * 100 + [2**40, b"x" * 300] + list(range(200))
    data = b"".join(encode(v) for v in values)
    decoder = Decoder()
    assert decoder.feed(data) == values
    assert decoder.feed(b"") == []
    assert decode_stream(data) == values


def test_expression_split_across_feeds_with_more_following():
    data = encode([b"a", 1]) + encode(b"b") + encode(2)
    decoder = Decoder()
    assert decoder.feed(data[:3]) == []
    assert decoder.feed(data[3:10]) == [[b"a", 1], b"b"]
    assert decoder.feed(data[10:]) == [2]


def test_empty_feed():
    decoder = Decoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(H("01 81")) == [1]
    assert decoder.feed(b"") == []


def test_partial_feed_of_many_integers():
    # Twisted's test_partial: ints around +-sys.maxsize * k, one byte at a time.
    values = [k * sys.maxsize + d for k in (-4, -2, -1, 1, 2, 4) for d in (-1, 0, 1)]
    data = b"".join(encode(v) for v in values)
    assert decode_stream(data) == values


# -- encoder refusals ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["text", None, object(), {1: 2}, {1}, frozenset(), 1j, [1, "nested"], [[None]]],
    ids=repr,
)
def test_encode_unsupported_types(value):
    with pytest.raises(EncodeError):
        encode(value)


def test_encode_str_error_names_the_type():
    with pytest.raises(EncodeError) as info:
        encode("hello")
    assert "str" in str(info.value)


def test_encode_user_type_refused():
    class Thing:
        pass

    with pytest.raises(EncodeError) as info:
        encode([Thing()])
    assert "Thing" in str(info.value)


# -- module-level decode() ------------------------------------------------------------


def test_decode_one_expression():
    assert decode(H("02 80 01 81 02 81")) == [1, 2]
    assert decode(H("10 87")) == b"remote"
    assert decode(H("10 87"), vocab=True) == b"remote"


@pytest.mark.parametrize(
    "data",
    [b"", H("02 80 01 81"), H("05"), H("05 82 61"), H("84 00"), H("01 81 01 81"), H("00 80 00")],
    ids=["empty", "short-list", "prefix-only", "short-string", "short-float", "two-values", "trailing-prefix"],
)
def test_decode_incomplete_or_trailing(data):
    with pytest.raises(BananaError):
        decode(data)


def test_decode_refuses_vocab_when_asked():
    with pytest.raises(BananaError):
        decode(H("10 87"), vocab=False)
    assert decode(H("02 82 70 62"), vocab=False) == b"pb"


def test_decode_is_stateless():
    # Twisted's test_statelessDecode: an error does not poison later calls.
    with pytest.raises(BananaError):
        decode(H("01 88"))
    assert decode(H("05 81")) == 5
    with pytest.raises(BananaError):
        decode(b"\x00" * 65 + H("81"))
    assert decode(encode([b"list", 2])) == [b"list", 2]


def test_decode_error_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        decode(H("ff"))
    assert banana.Decoder is Decoder


@pytest.mark.parametrize("piece", [1, 7, 4096, 65536, 300_000])
def test_long_string_in_pieces_then_more_in_the_same_feed(piece):
    # A long string inside a list, split across feeds of every size: it is
    # built from the gathered pieces, and what follows it in the last piece
    # (the rest of the list, the next message) is read on from there.
    body = bytes(range(256)) * 2000
    data = encode([b"answer", 7, [body, 1.5], b"tail"]) + encode([b"next", 2])
    decoder = Decoder(vocab=True)
    found = []
    for at in range(0, len(data), piece):
        found += decoder.feed(data[at:at + piece])
    assert found == [[b"answer", 7, [body, 1.5], b"tail"], [b"next", 2]]
    assert type(found[0][2][0]) is bytes
    assert not decoder.in_expression and decoder.buffered == 0


def test_long_string_counts_toward_the_message_size_limit():
    body = b"x" * 100_000
    data = encode([b"a", body, b"bc"])
    decoder = Decoder(max_message_size=len(data))
    assert decoder.feed(data[:50_000]) == []
    assert decoder.feed(data[50_000:]) == [[b"a", body, b"bc"]]
    decoder = Decoder(max_message_size=len(data) - 1)
    assert decoder.feed(data[:50_000]) == []
    with pytest.raises(BananaError, match="byte limit"):
        decoder.feed(data[50_000:])
