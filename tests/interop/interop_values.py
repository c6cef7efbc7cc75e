"""Values both directions echo, and a strict comparison for them.

Plain Python, no Twisted and no pbgreen: the Twisted client script imports it
directly, the pytest side loads it through conftest.
"""

import datetime
import decimal
import math


def basic_values():
    """(name, value) pairs covering every basic type PB can carry."""
    return [
        ("str", "hello"),
        ("str_non_ascii", "t\u00e9xt \u2603 \U0001f600"),
        ("str_empty", ""),
        ("str_vocab_word", "remote"),
        ("bytes", b"\x00\xffbytes\x80"),
        ("bytes_empty", b""),
        ("bytes_vocab_word", b"remote"),
        ("bytes_vocab_word_2", b"version"),
        ("int_0", 0),
        ("int_127", 127),
        ("int_128", 128),
        ("int_minus_1", -1),
        ("int_2**31-1", 2**31 - 1),
        ("int_2**31", 2**31),
        ("int_-2**31", -(2**31)),
        ("int_-2**31-1", -(2**31) - 1),
        ("int_2**70", 2**70),
        ("int_-2**70", -(2**70)),
        ("int_2**448-1", 2**448 - 1),
        ("int_-(2**448-1)", -(2**448 - 1)),
        ("float", 1.5),
        ("float_negative", -0.25),
        ("float_zero", 0.0),
        ("float_negative_zero", -0.0),
        ("float_tiny", 5e-324),
        ("float_inf", float("inf")),
        ("float_minus_inf", float("-inf")),
        ("float_nan", float("nan")),
        ("none", None),
        ("true", True),
        ("false", False),
        ("list", [1, "a", b"b", None, 2.5]),
        ("list_empty", []),
        ("tuple", (1, (2, 3), "x")),
        ("tuple_empty", ()),
        ("dict", {"k": b"v", 3: None, b"bk": [1], (1, 2): "tuple key"}),
        ("dict_empty", {}),
        ("set", {1, "a", b"b"}),
        ("set_empty", set()),
        ("frozenset", frozenset([8, "z", (1, 2)])),
        ("frozenset_empty", frozenset()),
        ("datetime", datetime.datetime(2024, 2, 29, 13, 5, 7, 120)),
        ("date", datetime.date(2024, 2, 29)),
        ("time", datetime.time(1, 2, 3, 4)),
        ("timedelta", datetime.timedelta(1, 2, 3)),
        ("timedelta_negative", datetime.timedelta(days=-1, seconds=5)),
        ("decimal", decimal.Decimal("-12.345")),
        ("decimal_exponent", decimal.Decimal("1E+3")),
        ("decimal_integer", decimal.Decimal("42")),
        (
            "nested",
            {"a": [1, {"b": (2, {3}, frozenset([4]))}], "c": [[], {}, ()]},
        ),
    ]


def same(a, b):
    """Equal *and* of the same types all the way down (nan equals nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, decimal.Decimal):
        return a.as_tuple() == b.as_tuple()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        if len(a) != len(b) or set(a) != set(b):
            return False
        keys_b = {k: k for k in b}
        return all(
            same(k, keys_b[k]) and same(v, b[k]) for k, v in a.items()
        )
    if isinstance(a, (set, frozenset)):
        typed = lambda s: {(type(x).__name__, x) for x in s}  # noqa: E731
        return typed(a) == typed(b)
    return a == b


def mismatches(pairs):
    """[(name, sent, got)] -> list of readable mismatch descriptions."""
    return [
        "%s: sent %r, got %r" % (name, sent, got)
        for name, sent, got in pairs
        if not same(sent, got)
    ]
