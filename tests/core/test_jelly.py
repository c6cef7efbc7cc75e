"""Jelly: the tag table, identity and cycles, and the security policy.

Expected s-expressions are those Twisted 26.10 produces (WIRE.md 3.1, 3.2,
7.3, 7.4), with every tag as bytes.
"""

import builtins
import datetime
import decimal
import importlib
import math
import sys
import threading

import pytest

from pbgreen import errors
from pbgreen import jelly as jelly_module
from pbgreen.banana import Decoder, EncodeError, encode
from pbgreen.errors import ProtocolError
from pbgreen.jelly import (
    InsecureJelly,
    SecurityOptions,
    Unpersistable,
    jelly,
    setUnjellyableForClass,
    unjelly,
)

H = bytes.fromhex
D = decimal.Decimal


def norm(sexp):
    """Tuples and lists are the same thing on the wire."""
    if isinstance(sexp, (list, tuple)):
        return [norm(x) for x in sexp]
    return sexp


def over_the_wire(sexp):
    """Encode with dialect pb and decode again, one byte at a time."""
    data = encode(sexp)
    decoder = Decoder(vocab=True)
    out = []
    for i in range(len(data)):
        out.extend(decoder.feed(data[i : i + 1]))
    assert len(out) == 1
    return out[0]


def round_trip(value):
    """jelly -> banana -> unjelly."""
    return unjelly(over_the_wire(jelly(value)))


# -- the tag table, both ways -----------------------------------------------------

TABLE = [
    (b"bytes", b"bytes"),
    (b"", b""),
    (0, 0),
    (-(2**31) - 1, -(2**31) - 1),
    (2**70, 2**70),
    (1.5, 1.5),
    ("t\xe9xt", [b"unicode", b"t\xc3\xa9xt"]),
    ("", [b"unicode", b""]),
    (None, [b"None"]),
    (True, [b"boolean", b"true"]),
    (False, [b"boolean", b"false"]),
    ([], [b"list"]),
    ([1, "a", None], [b"list", 1, [b"unicode", b"a"], [b"None"]]),
    ((), [b"tuple"]),
    ((1, 2), [b"tuple", 1, 2]),
    ({}, [b"dictionary"]),
    ({"c": 3}, [b"dictionary", [[b"unicode", b"c"], 3]]),
    ({None: b"v", (1,): []}, [b"dictionary", [[b"None"], b"v"], [[b"tuple", 1], [b"list"]]]),
    (set(), [b"set"]),
    ({7}, [b"set", 7]),
    (frozenset(), [b"frozenset"]),
    (frozenset([8]), [b"frozenset", 8]),
    (datetime.datetime(2024, 2, 29, 13, 5, 7, 120), [b"datetime", b"2024 2 29 13 5 7 120"]),
    (datetime.datetime(2000, 1, 1), [b"datetime", b"2000 1 1 0 0 0 0"]),
    (datetime.date(2024, 2, 29), [b"date", b"2024 2 29"]),
    (datetime.time(1, 2, 3, 4), [b"time", b"1 2 3 4"]),
    (datetime.time(), [b"time", b"0 0 0 0"]),
    (datetime.timedelta(1, 2, 3), [b"timedelta", b"1 2 3"]),
    (datetime.timedelta(-1), [b"timedelta", b"-1 0 0"]),
    (datetime.timedelta(microseconds=-1), [b"timedelta", b"-1 86399 999999"]),
    (D("-12.345"), [b"decimal", -12345, -3]),
    (D("1E+3"), [b"decimal", 1, 3]),
    (D("0"), [b"decimal", 0, 0]),
    (D("9.95"), [b"decimal", 995, -2]),
    (D("1.0"), [b"decimal", 10, -1]),
]


@pytest.mark.parametrize("value, sexp", TABLE, ids=repr)
def test_jelly_table(value, sexp):
    assert norm(jelly(value)) == sexp


@pytest.mark.parametrize("value, sexp", TABLE, ids=repr)
def test_unjelly_table(value, sexp):
    out = unjelly(sexp)
    assert type(out) is type(value)
    assert out == value
    if isinstance(value, D):
        assert out.as_tuple() == value.as_tuple()


@pytest.mark.parametrize("value, sexp", TABLE, ids=repr)
def test_table_over_the_wire(value, sexp):
    out = round_trip(value)
    assert type(out) is type(value) and out == value


def test_exact_types_only():
    assert jelly(1) == 1 and type(jelly(1)) is int
    assert norm(jelly(True)) == [b"boolean", b"true"]
    assert unjelly([b"boolean", b"true"]) is True
    assert unjelly([b"boolean", b"false"]) is False
    assert unjelly([b"None"]) is None


def test_float_specials():
    out = unjelly(jelly([math.inf, -math.inf, math.nan, -0.0]))
    assert out[0] == math.inf and out[1] == -math.inf
    assert math.isnan(out[2])
    assert math.copysign(1.0, out[3]) == -1.0


def test_negative_zero_decimal_loses_its_sign():
    assert norm(jelly(D("-0"))) == [b"decimal", 0, 0]
    assert unjelly([b"decimal", 0, 0]) == 0


@pytest.mark.parametrize(
    "sexp, value",
    [
        ([b"decimal", 995, -2], D("9.95")),
        ([b"decimal", 0, 0], D("0")),
        ([b"decimal", 123456, 0], D("123456")),
        ([b"decimal", -78901, -3], D("-78.901")),
        ([b"decimal", 1, 3], D("1E+3")),
    ],
)
def test_decimal_unjelly(sexp, value):
    out = unjelly(sexp)
    assert type(out) is D
    assert out.as_tuple() == value.as_tuple()


@pytest.mark.parametrize("text", ["1E+200000", "1E-200000", "-7E+999999", "1E-999999"])
def test_decimal_extreme_exponents_round_trip(text):
    # Valid in the default decimal context, and Twisted decodes them: what
    # pbgreen agrees to send it must also accept.
    value = D(text)
    out = round_trip(value)
    assert out == value and out.as_tuple() == value.as_tuple()


@pytest.mark.parametrize("value", [D("NaN"), D("Infinity"), D("-Infinity"), D("sNaN")])
def test_decimal_specials_cannot_be_sent(value):
    with pytest.raises((InsecureJelly, ValueError, TypeError)):
        encode(jelly(value))


def test_date_time_family_round_trip():
    values = [
        datetime.datetime(1, 1, 1),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
        datetime.date(1, 1, 1),
        datetime.time(23, 59, 59, 999999),
        datetime.timedelta.max,
        datetime.timedelta.min,
        datetime.timedelta(0),
    ]
    assert round_trip(values) == values


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
        datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        datetime.time(1, 2, tzinfo=datetime.timezone.utc),
        [datetime.datetime.now(datetime.timezone.utc)],
    ],
    ids=["utc", "+2", "time-utc", "nested"],
)
def test_tz_aware_refused(value):
    with pytest.raises((InsecureJelly, NotImplementedError, ValueError, TypeError)):
        jelly(value)


# -- captured forms (WIRE 7.2, 7.3) ----------------------------------------------------


def test_containers_from_capture():
    value = ((1, 2), {"k": b"v", 3: None}, {7}, frozenset([8]), [])
    expected = [
        b"tuple",
        [b"tuple", 1, 2],
        [b"dictionary", [[b"unicode", b"k"], b"v"], [3, [b"None"]]],
        [b"set", 7],
        [b"frozenset", 8],
        [b"list"],
    ]
    assert norm(jelly(value)) == expected
    out = unjelly(expected)
    assert out == value
    assert [type(x) for x in out] == [tuple, dict, set, frozenset, list]


def test_dates_from_capture():
    value = [
        datetime.datetime(2024, 2, 29, 13, 5, 7, 120),
        datetime.date(2024, 2, 29),
        datetime.time(1, 2, 3, 4),
        datetime.timedelta(1, 2, 3),
        D("-12.345"),
        D("1E+3"),
    ]
    expected = [
        b"list",
        [b"datetime", b"2024 2 29 13 5 7 120"],
        [b"date", b"2024 2 29"],
        [b"time", b"1 2 3 4"],
        [b"timedelta", b"1 2 3"],
        [b"decimal", -12345, -3],
        [b"decimal", 1, 3],
    ]
    assert norm(jelly(value)) == expected
    assert unjelly(expected) == value


def test_call_arguments_from_capture():
    # WIRE 7.2: args and kwargs of callRemote("add", 1, 2, c=3).
    assert encode(jelly((1, 2))) == H("03 80 0b 87 01 81 02 81")
    assert encode(jelly({"c": 3})) == H(
        "02 80 05 87 02 80 02 80 07 82 75 6e 69 63 6f 64 65 01 82 63 03 81"
    )


def test_echo_message_from_capture():
    # WIRE 7.3: the whole 'echo' message, byte for byte.
    args = [
        b"bytes", "t\xe9xt", 0, 127, 128, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1,
        2**70, -(2**70), 1.5, None, True, False,
    ]
    message = [b"message", 2, b"root", b"echo", 1, jelly((args,)), jelly({})]
    expected = H(
        "07 80 1a 87 02 81 04 82 72 6f 6f 74 04 82 65 63 68 6f 01 81 02 80 0b 87 11 80 08 87"
        " 05 82 62 79 74 65 73"
        " 02 80 07 82 75 6e 69 63 6f 64 65 05 82 74 c3 a9 78 74"
        " 00 81 7f 81 00 01 81 01 83"
        " 7f 7f 7f 7f 07 81 00 00 00 00 08 85"
        " 00 00 00 00 08 83 01 00 00 00 08 86"
        " 00 00 00 00 00 00 00 00 00 00 01 85 00 00 00 00 00 00 00 00 00 00 01 86"
        " 84 3f f8 00 00 00 00 00 00"
        " 01 80 01 87"
        " 02 80 07 82 62 6f 6f 6c 65 61 6e 04 82 74 72 75 65"
        " 02 80 07 82 62 6f 6f 6c 65 61 6e 05 82 66 61 6c 73 65"
        " 01 80 05 87"
    )
    assert encode(message) == expected
    decoded = over_the_wire(message)
    assert unjelly(decoded[5]) == (args,)
    assert unjelly(decoded[6]) == {}


# -- identity, shared references and cycles -------------------------------------------


def test_shared_and_cyclic_from_capture():
    # WIRE 7.4: s=[1]; x=[s, s]; x.append(x); sent as the args tuple (x,).
    s = [1]
    x = [s, s]
    x.append(x)
    expected = [
        b"tuple",
        [
            b"reference", 2,
            [b"list", [b"reference", 1, [b"list", 1]], [b"dereference", 1], [b"dereference", 2]],
        ],
    ]
    sexp = jelly((x,))
    assert norm(sexp) == expected
    assert encode(sexp) == H(
        "02 80 0b 87 03 80 04 87 02 81 04 80 08 87 03 80 04 87 01 81 02 80 08 87 01 81"
        " 02 80 03 87 01 81 02 80 03 87 02 81"
    )
    (r,) = unjelly(over_the_wire(sexp))
    assert r[0] is r[1]
    assert r[2] is r
    assert r[0] == [1]


def test_refids_in_order_of_first_re_encounter():
    a = [1]
    b = [2]
    assert norm(jelly([a, b, b, a])) == [
        b"list",
        [b"reference", 2, [b"list", 1]],
        [b"reference", 1, [b"list", 2]],
        [b"dereference", 1],
        [b"dereference", 2],
    ]
    r = unjelly(jelly([a, b, b, a]))
    assert r == [[1], [2], [2], [1]]
    assert r[0] is r[3] and r[1] is r[2] and r[0] is not r[1]


def test_refids_restart_with_each_jelly_call():
    s = [1]
    first = norm(jelly([s, s]))
    assert first == [b"list", [b"reference", 1, [b"list", 1]], [b"dereference", 1]]
    assert norm(jelly([s, s])) == first


def test_unshared_equal_objects_are_not_references():
    assert norm(jelly([[1], [1], (), ()])) in (
        [b"list", [b"list", 1], [b"list", 1], [b"tuple"], [b"tuple"]],
        # () is a singleton in CPython, so it may legitimately be shared.
        [b"list", [b"list", 1], [b"list", 1], [b"reference", 1, [b"tuple"]], [b"dereference", 1]],
    )


def test_self_containing_list():
    a = []
    a.append(a)
    assert norm(jelly(a)) == [b"reference", 1, [b"list", [b"dereference", 1]]]
    r = round_trip(a)
    assert r[0] is r


def test_two_list_circle():
    a = []
    b = [a]
    a.append(b)
    r = round_trip(a)
    assert r[0][0] is r
    assert type(r[0]) is list


def test_cycle_through_dict():
    d = {}
    d["self"] = d
    assert norm(jelly(d)) == [
        b"reference", 1, [b"dictionary", [[b"unicode", b"self"], [b"dereference", 1]]]
    ]
    r = round_trip(d)
    assert r["self"] is r


def test_tuple_inside_list_cycle():
    lst = []
    tup = (lst,)
    lst.append(tup)
    assert norm(jelly(lst)) == [b"reference", 1, [b"list", [b"tuple", [b"dereference", 1]]]]
    assert norm(jelly(tup)) == [b"reference", 1, [b"tuple", [b"list", [b"dereference", 1]]]]
    r = round_trip(lst)
    assert type(r[0]) is tuple and r[0][0] is r
    t = round_trip(tup)
    assert type(t) is tuple and type(t[0]) is list and t[0][0] is t


def test_more_references():
    # Twisted's test_moreReferences.
    a = []
    t = (a,)
    a.append((t,))
    o = round_trip(t)
    assert o[0][0][0] is o


def test_stress_references():
    # Twisted's test_stressReferences: a tuple reachable from inside itself
    # through both a dict value and a list.
    reref = []
    top = ({"list": reref}, reref)
    reref.append(top)
    assert norm(jelly(top)) == [
        b"reference", 1,
        [
            b"tuple",
            [b"dictionary", [[b"unicode", b"list"], [b"reference", 2, [b"list", [b"dereference", 1]]]]],
            [b"dereference", 2],
        ],
    ]
    z = round_trip(top)
    assert type(z) is tuple
    assert z[0]["list"] is z[1]
    assert z[0]["list"][0] is z


def test_shared_tuple_key_and_cyclic_dict():
    d = {}
    t = (1, 2)
    d[t] = [t, d]
    assert norm(jelly(d)) == [
        b"reference", 2,
        [b"dictionary", [[b"reference", 1, [b"tuple", 1, 2]], [b"list", [b"dereference", 1], [b"dereference", 2]]]],
    ]
    r = round_trip(d)
    (key,) = r
    assert key == (1, 2)
    assert r[key][0] is key
    assert r[key][1] is r


def test_shared_tuple_inside_set():
    t = (1, 2)
    s = {t}
    x = [s, t, s]
    assert norm(jelly(x)) == [
        b"list",
        [b"reference", 2, [b"set", [b"reference", 1, [b"tuple", 1, 2]]]],
        [b"dereference", 1],
        [b"dereference", 2],
    ]
    r = round_trip(x)
    assert r[0] is r[2]
    assert type(r[0]) is set
    (elem,) = r[0]
    assert elem is r[1]


def test_shared_frozenset_and_dict_values():
    fs = frozenset([1, 2])
    inner = {"a": [fs]}
    x = {"one": inner, "two": inner, "three": fs}
    r = round_trip(x)
    assert r["one"] is r["two"]
    assert r["three"] is r["one"]["a"][0]
    assert type(r["three"]) is frozenset


def test_cycle_in_dict_key_and_value_of_list():
    t = (1,)
    lst = [t]
    d = {t: lst}
    lst.append(d)
    r = round_trip(d)
    (key,) = r
    assert r[key][0] is key
    assert r[key][1] is r


def test_late_tuple_dereferenced_after_completion():
    # U is a tuple inside a cycle through the tuple T, so it can only be built
    # after T is finished; it is then referenced once more from outside.
    lst = []
    T = (lst,)
    U = (T,)
    lst.append(U)
    x = [T, U]
    assert norm(jelly(x)) == [
        b"list",
        [b"reference", 1, [b"tuple", [b"list", [b"reference", 2, [b"tuple", [b"dereference", 1]]]]]],
        [b"dereference", 2],
    ]
    r = round_trip(x)
    assert type(r[0]) is tuple and type(r[1]) is tuple
    assert r[0][0][0] is r[1]
    assert r[1][0] is r[0]
    d = round_trip({"t": T, "u": U})
    assert d["u"] is d["t"][0][0] and d["u"][0] is d["t"]


def test_long_shared_chain():
    # Many shared objects, each used several times.
    shared = [[i] for i in range(50)]
    x = [shared[i % 50] for i in range(200)]
    r = round_trip(x)
    for i in range(200):
        assert r[i] is r[i % 50]
    assert len({id(v) for v in r}) == 50


# -- unpersistable and persistent -------------------------------------------------------


def test_unpersistable_placeholder():
    reason = b"instance of class X deemed insecure"
    out = unjelly([b"unpersistable", reason])
    assert isinstance(out, Unpersistable)
    assert "deemed insecure" in str(out.reason)


def test_unpersistable_inside_containers():
    sexp = [
        b"list",
        1,
        [b"unpersistable", b"why"],
        [b"dictionary", [[b"unicode", b"k"], [b"unpersistable", b"because"]]],
    ]
    out = unjelly(over_the_wire(sexp))
    assert out[0] == 1
    assert isinstance(out[1], Unpersistable)
    assert isinstance(out[2]["k"], Unpersistable)
    assert "because" in str(out[2]["k"].reason)


def test_persistent_without_callback_is_unpersistable():
    out = unjelly([b"persistent", 1])
    assert isinstance(out, Unpersistable)


# -- security: sending ----------------------------------------------------------------------


class Unregistered:
    def __init__(self):
        self.a = 1


class MyInt(int):
    pass


class MyStr(str):
    pass


def a_function():
    pass


def a_generator():
    yield 1


NOT_SENDABLE = [
    Unregistered(),
    lambda: None,
    threading.Lock(),
    object(),
    a_generator(),
    sys,
    a_function,
    Unregistered,
    int,
    len,
    Unregistered().__init__,
    MyInt(3),
    MyStr("x"),
    [1, object()],
    {"k": Unregistered()},
    (1, (2, [a_function])),
    {frozenset([1]), (lambda: None,)},
]


@pytest.mark.parametrize("value", NOT_SENDABLE, ids=lambda v: type(v).__name__)
def test_jelly_refuses_what_cannot_be_sent(value):
    with pytest.raises(InsecureJelly):
        jelly(value)


NESTERS = {"list": lambda x: [x], "tuple": lambda x: (x,), "dict": lambda x: {"k": x}}


@pytest.mark.parametrize("kind", sorted(NESTERS))
@pytest.mark.parametrize("depth", [300, 5000])
def test_too_deep_to_send_is_refused_cleanly(depth, kind):
    """Sending a deeply nested value either works end to end (jelly, encode,
    default Decoder, unjelly) or is refused at the sender with InsecureJelly /
    EncodeError -- never a RecursionError, and never bytes a pbgreen peer
    cannot take back."""
    value = []
    for _ in range(depth):
        value = NESTERS[kind](value)
    try:
        data = encode(jelly(value))
    except (InsecureJelly, EncodeError):
        return
    (sexp,) = Decoder(vocab=True).feed(data)
    unjelly(sexp)


def test_jelly_refusal_names_the_class():
    with pytest.raises(InsecureJelly) as info:
        jelly([1, Unregistered()])
    assert "Unregistered" in str(info.value)


def test_insecure_jelly_is_the_errors_class():
    assert InsecureJelly is errors.InsecureJelly
    assert jelly_module.InsecureJelly is errors.InsecureJelly


# -- security: receiving ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sexp",
    [
        [b"class", b"os.system"],
        [b"class", b"builtins.object"],
        [b"module", b"os"],
        [b"function", b"os.system"],
        [b"method", b"system", [b"None"], [b"class", b"os.Foo"]],
        [b"instance", [b"class", b"os.Foo"], [b"dictionary"]],
        [b"shared.Unregistered", [b"dictionary"]],
        [b"collections.OrderedDict", [b"dictionary"]],
        [b"subprocess.Popen", [b"dictionary", [[b"unicode", b"args"], [b"unicode", b"sh"]]]],
        [b"builtins.object", [b"None"]],
        [b"bogus", 1],
        [b"list", 1, [b"shared.Unregistered", [b"dictionary"]]],
        [b"dictionary", [[b"unicode", b"k"], [b"class", b"os.system"]]],
    ],
    ids=lambda s: s[0].decode(),
)
def test_unjelly_refuses(sexp):
    with pytest.raises(InsecureJelly):
        unjelly(sexp)
    with pytest.raises(InsecureJelly):
        unjelly(over_the_wire(sexp))


def test_unregistered_class_message_says_what_to_do():
    with pytest.raises(InsecureJelly) as info:
        unjelly([b"shared.Unregistered", [b"dictionary"]])
    message = str(info.value)
    assert "shared.Unregistered" in message
    assert "setUnjellyableForClass" in message


def test_sent_instance_of_unregistered_class_refused_on_receipt():
    # What a Twisted peer would send for an allowed-there class.
    tag = f"{Unregistered.__module__}.{Unregistered.__qualname__}".encode()
    with pytest.raises(InsecureJelly):
        unjelly([tag, [b"dictionary", [[b"unicode", b"a"], 1]]])


@pytest.mark.parametrize(
    "module, sexp",
    [
        ("antigravity", [b"antigravity.Thing", [b"dictionary"]]),
        ("antigravity", [b"module", b"antigravity"]),
        ("antigravity", [b"function", b"antigravity.geohash"]),
        ("this", [b"class", b"this.Zen"]),
        ("this", [b"this.Zen", [b"None"]]),
        ("ftplib", [b"ftplib.FTP", [b"dictionary"]]),
        ("poplib", [b"class", b"poplib.POP3"]),
        ("pbgreen_never_such_module", [b"pbgreen_never_such_module.X", [b"dictionary"]]),
    ],
    ids=lambda v: v if isinstance(v, str) else v[0].decode(),
)
def test_no_name_from_the_wire_is_imported(module, sexp, monkeypatch):
    if module in sys.modules:
        pytest.skip(f"{module} already imported by something else")
    requested = []
    real_import = builtins.__import__
    real_import_module = importlib.import_module

    def spy_import(name, *args, **kwargs):
        requested.append(name)
        return real_import(name, *args, **kwargs)

    def spy_import_module(name, *args, **kwargs):
        requested.append(name)
        return real_import_module(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", spy_import)
    monkeypatch.setattr(importlib, "import_module", spy_import_module)
    with pytest.raises(InsecureJelly):
        unjelly(sexp)
    monkeypatch.undo()
    assert module not in sys.modules
    assert not [n for n in requested if n.split(".")[0] == module]


def test_security_options_deny_instances_by_default():
    assert unjelly(jelly(5), security=SecurityOptions()) == 5
    with pytest.raises(InsecureJelly):
        unjelly([b"shared.Unregistered", [b"dictionary"]], security=SecurityOptions())


# -- registered classes ------------------------------------------------------------------------


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y


POINT_TAG = f"{Point.__module__}.{Point.__qualname__}".encode()


class NoInit:
    def __init__(self):
        raise AssertionError("__init__ must not run on unjelly")


class WithState:
    def __init__(self, value):
        self.value = value

    def __getstate__(self):
        return {"v": self.value}

    def __setstate__(self, state):
        self.value = state["v"]
        self.restored = True


@pytest.fixture(scope="module", autouse=True)
def registrations():
    setUnjellyableForClass(Point, Point)
    setUnjellyableForClass(WithState, WithState)
    setUnjellyableForClass("remote.side.Thing", NoInit)
    yield


def test_registered_instance_jelly_form():
    sexp = norm(jelly(Point(1, 2)))
    assert sexp == [
        POINT_TAG,
        [b"dictionary", [[b"unicode", b"x"], 1], [[b"unicode", b"y"], 2]],
    ]


def test_registered_instance_round_trip():
    p = round_trip(Point(1, "two"))
    assert type(p) is Point
    assert (p.x, p.y) == (1, "two")


def test_registered_by_name_builds_local_class_without_init():
    out = unjelly(over_the_wire([b"remote.side.Thing", [b"dictionary", [[b"unicode", b"a"], 1]]]))
    assert type(out) is NoInit
    assert out.a == 1


def test_registered_class_with_setstate():
    sexp = norm(jelly(WithState(7)))
    tag = f"{WithState.__module__}.{WithState.__qualname__}".encode()
    assert sexp == [tag, [b"dictionary", [[b"unicode", b"v"], 7]]]
    out = round_trip(WithState(7))
    assert type(out) is WithState
    assert out.value == 7 and out.restored


def test_shared_registered_instance_keeps_identity():
    p = Point(1, 2)
    r = round_trip([p, p, (p,)])
    assert r[0] is r[1] is r[2][0]


def test_registered_instance_cycle():
    p = Point(1, 2)
    p.x = p
    p.y = [p]
    r = round_trip(p)
    assert r.x is r
    assert r.y[0] is r


class Empty:
    pass


def test_registered_instance_without_attributes():
    # Python >= 3.11: __getstate__() of an instance with an empty __dict__ is
    # None, so the state travels as ['None']; it must still come back.
    setUnjellyableForClass(Empty, Empty)
    out = round_trip(Empty())
    assert type(out) is Empty
    assert vars(out) == {}
    pair = round_trip([Empty(), Empty()])
    assert type(pair[0]) is Empty and pair[0] is not pair[1]


def test_registered_instance_with_unregistered_attribute_refused():
    with pytest.raises(InsecureJelly):
        jelly(Point(1, Unregistered()))


# -- malformed input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sexp",
    [
        [],
        [1, 2],
        [b"unicode", b"\xff\xfe"],
        [b"unicode"],
        [b"boolean", b"maybe"],
        [b"datetime", b"garbage"],
        [b"date", b"2024 13 45"],
        [b"decimal", b"x", 1],
        [b"dictionary", [1]],
        [b"dictionary", [[b"list"], 1]],
        [b"set", [b"list"]],
        [b"frozenset", [b"dictionary"]],
        # A forward dereference that turns out to be unhashable.
        [b"list", [b"set", [b"dereference", 5]], [b"reference", 5, [b"list"]]],
        [b"list", [b"frozenset", [b"dereference", 5]], [b"reference", 5, [b"list"]]],
        [b"list", [b"dictionary", [[b"dereference", 5], 1]], [b"reference", 5, [b"list"]]],
        # Dangling and duplicate reference ids.
        [b"list", [b"dereference", 9]],
        [b"list", [b"reference", 1, [b"list"]], [b"reference", 1, [b"list"]]],
        # A tuple that contains itself directly cannot exist.
        [b"reference", 1, [b"tuple", [b"dereference", 1]]],
    ],
    ids=repr,
)
def test_malformed_sexp_raises_a_pbgreen_error(sexp):
    with pytest.raises((InsecureJelly, ProtocolError)):
        unjelly(sexp)


def test_banana_cannot_send_str_payload_from_jelly():
    # Jelly output is always banana-encodable for sendable values.
    value = {"k": ["v", ("t", 1.5, None, True)], 2: {3}}
    encode(jelly(value))
    with pytest.raises(EncodeError):
        encode([b"module", "os"])


@pytest.mark.parametrize("sexp", [
    [b"list", [b"reference", 1, [b"tuple", [b"dereference", 1]]]],
    [b"dictionary", [b"k", [b"reference", 1, [b"tuple", [b"dereference", 1]]]]],
    [b"list", [b"reference", 1, [b"frozenset", [b"dereference", 1]]]],
])
def test_a_tuple_containing_itself_anywhere_is_refused(sexp):
    """Only an immutable value can hold itself through no mutable link: it can
    never be built, and no placeholder may leak into what the caller gets."""
    with pytest.raises(InsecureJelly, match="circular immutable"):
        unjelly(sexp)
