#!/usr/bin/env python
"""Fuzz the sans-I/O PB broker with what a peer sends after the handshake.

How it works. Each execution builds a fresh ``Broker`` (connector or
acceptor) whose handshake is done, optionally with a lived-in state (objects
handed out, a cache held, calls waiting for answers), then feeds it a payload
split into chunks, the way a socket could deliver it. The contract under
test: ``receive_data`` returns events or raises ``ProtocolError`` (which
includes ``BananaError``) or ``InsecureJelly``; anything else escaping is a
bug. With the *drive* flag the events are also handled the way the gevent
driver handles them (incoming calls run, replies read, callbacks run), and
the same contract holds there: a refused value is ``InsecureJelly``, never a
stray ``TypeError``.

One input format serves every mode, so a crash file from either runner
replays in the other::

    byte 0      flags: bit 0 side (0 connector, 1 acceptor)
                       bit 1 dialect (0 'pb' with its vocabulary, 1 'none')
                       bit 2 drive the events
                       bit 3 lived-in state (references, a cache, waiting calls)
                       bit 4 fresh: no handshake yet, the payload starts with it
                       bit 5 compare (without bit 2): the payload whole and one byte
                             at a time must be both refused, or give the same events
    byte 1      k, the number of cuts (taken mod 9)
    2k bytes    cut positions, big-endian uint16, each mod len(payload) + 1
    the rest    the payload: the bytes the peer sends after its handshake

Modes:

* ``python fuzz/broker_fuzz.py --iterations N --seed S`` -- pure Python, no
  atheris needed: inputs are generated s-expressions biased toward PB
  commands, structural mutations of a corpus of real messages, and byte-level
  mutations of both. Prints executions per second, stops after N, shrinks
  every distinct crash and prints it. Exit status 1 if anything crashed.
* ``python fuzz/broker_fuzz.py --atheris [libFuzzer options] [corpus dirs]``
  -- coverage-guided with atheris (``pip install atheris``).
* ``python fuzz/broker_fuzz.py --write-corpus DIR`` -- seed inputs for atheris.
* ``python fuzz/broker_fuzz.py --replay FILE...`` -- run saved inputs, print
  what escaped.

The targets need the broker's core surface (``Broker(...)``, ``receive_data``,
``data_to_send``, sending a call); driving events and the lived-in setup also
run calls and read replies. All of that goes through ``send_call``,
``read_reply`` and ``drive_events`` below: the one place to update if the
API moves.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import struct
import sys
import time
import traceback
from typing import Any, Callable, Iterator

try:
    import pbgreen  # noqa: F401
except ImportError:  # run from a checkout without installing: pbgreen is next door
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pbgreen import banana, flavors  # noqa: E402
from pbgreen.errors import Error, InsecureJelly, ProtocolError, RefLimitError  # noqa: E402
from pbgreen.jelly import SecurityOptions  # noqa: E402
from pbgreen.protocol import Broker  # noqa: E402
from pbgreen.testing.pump import Pump  # noqa: E402

#: What may escape ``receive_data``.
ACCEPTABLE: tuple[type[BaseException], ...] = (ProtocolError, InsecureJelly)
#: What may escape reading a reply (the value was refused; the reference table is full).
ACCEPTABLE_READ: tuple[type[BaseException], ...] = (InsecureJelly, RefLimitError)

SIDE_SERVER, DIALECT_NONE, DRIVE, LIVED_IN, FRESH, COMPARE = 1, 2, 4, 8, 16, 32


class SplitMismatch(AssertionError):
    """The same bytes gave different results whole and one byte at a time."""
MAX_CUTS = 8

# ------------------------------------------------------------------------------ input format


def make_input(flags: int, cuts: list[int], payload: bytes) -> bytes:
    """Pack flags, cut positions and payload into one fuzz input."""
    cuts = cuts[:MAX_CUTS]
    return (bytes([flags & 0xFF, len(cuts)]) + b"".join(struct.pack(">H", c & 0xFFFF) for c in cuts)
            + payload)


def parse_input(data: bytes) -> tuple[int, list[int], bytes]:
    """(flags, sorted cut positions within the payload, payload)."""
    if len(data) < 2:
        return (data[0] if data else 0), [], b""
    flags, k = data[0], data[1] % (MAX_CUTS + 1)
    raw = data[2:2 + 2 * k]
    payload = data[2 + 2 * k:]
    n = len(payload) + 1
    cuts = sorted({struct.unpack_from(">H", raw, i)[0] % n for i in range(0, len(raw) - 1, 2)})
    return flags, cuts, payload


def chunks(payload: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in cuts + [len(payload)]:
        if cut > start:
            yield payload[start:cut]
            start = cut


# ------------------------------------------------------------------------------ the objects


class FuzzCopy(flavors.RemoteCopy):
    pass


class FuzzRemoteCache(flavors.RemoteCache):
    def observe_set(self, key: Any, value: Any) -> None:
        self.__dict__[str(key)] = value


class FuzzCacheable(flavors.Cacheable):
    def getTypeToCopy(self) -> str:
        return "fuzz.Cache"

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        return {"n": 1, "s": "state"}


class FuzzCopyable(flavors.Copyable):
    def getTypeToCopy(self) -> str:
        return "fuzz.Copy"

    def getStateToCopy(self) -> Any:
        return {"a": [1, 2], "b": b"x"}


class FuzzChild(flavors.Referenceable):
    def remote_ping(self, *args: Any, **kwargs: Any) -> Any:
        return "pong"


class FuzzRoot(flavors.Root):
    """What a fuzzed call can reach: methods that echo, hand out objects, fail."""

    def __init__(self) -> None:
        self.child = FuzzChild()
        self.cache = FuzzCacheable()
        self.kept: list[Any] = []

    def remote_keep(self, *args: Any) -> None:
        self.kept.append(args)

    def remote_echo(self, *args: Any, **kwargs: Any) -> Any:
        return [list(args), kwargs]

    def remote_child(self) -> Any:
        return self.child

    def remote_cache(self) -> Any:
        return self.cache

    def remote_copy(self) -> Any:
        return FuzzCopyable()

    def remote_fail(self, *args: Any) -> Any:
        raise ValueError("fuzz failure")

    def remote_expected(self, *args: Any) -> Any:
        raise Error("expected failure")


SECURITY = SecurityOptions()
SECURITY.setUnjellyableForClass("fuzz.Copy", FuzzCopy)
SECURITY.setUnjellyableForClass("fuzz.Cache", FuzzRemoteCache)
SECURITY.setUnjellyableFactoryForClass("fuzz.Factory", lambda state: ("made", state))

# ------------------------------------------------------------------------------ driver API
#
# What the driver does with events, through pbgreen.dispatch (the one place
# to update when that API moves).

from pbgreen import dispatch as _dispatch  # noqa: E402
from pbgreen.events import IncomingCall, Released, Reply, StoppedObserving  # noqa: E402


def send_call(broker: Any, object_id: Any, method: str, args: tuple[Any, ...],
              kwargs: dict[str, Any], answer: bool = True) -> int:
    """Jelly and queue a call (as a ``RemoteReference`` would); its request id."""
    return _dispatch.send_call(broker, object_id, method, args, kwargs, None, answer)


def read_reply(broker: Any, reply: Any) -> Any:
    """The reply's value, or the exception it stands for (returned); may raise ``InsecureJelly``."""
    return _dispatch.read_reply(broker, reply, None)


def drive_events(broker: Any, events: list[Any]) -> None:
    """Handle events as the driver does: run calls, read replies, settle releases."""
    for event in events:
        kind = type(event)
        if kind is IncomingCall:
            _dispatch.run_call(broker, event)
        elif kind is Reply:
            try:
                read_reply(broker, event)
            except ACCEPTABLE_READ:
                pass
        elif kind is Released or kind is StoppedObserving:
            _dispatch.settle(broker, [event])


# ------------------------------------------------------------------------------ targets


class Target:
    """A broker after its handshake, and what must stay alive beside it."""

    __slots__ = ("broker", "drive", "keep")

    def __init__(self, broker: Any, drive: bool, keep: list[Any]) -> None:
        self.broker = broker
        self.drive = drive
        self.keep = keep


def build_target(flags: int) -> Target:
    """A handshaken broker on the side ``flags`` names, lived-in if asked (or a fresh one)."""
    dialects = (b"none",) if flags & DIALECT_NONE else (b"pb", b"none")
    if flags & FRESH:
        side = Broker(is_client=not flags & SIDE_SERVER, root=FuzzRoot(), security=SECURITY,
                      dialects=dialects)
        side.data_to_send()
        return Target(side, bool(flags & DRIVE), [])
    client = Broker(is_client=True, root=FuzzRoot(), security=SECURITY, dialects=dialects)
    server = Broker(is_client=False, root=FuzzRoot(), security=SECURITY)
    keep: list[Any] = [client, server]
    lived_in = bool(flags & LIVED_IN)

    def on_event(broker: Any, event: Any) -> None:
        if type(event).__name__ == "Reply":
            try:
                keep.append(read_reply(broker, event))  # keep references and caches alive
            except ACCEPTABLE_READ:
                pass
        elif lived_in:
            drive_events(broker, [event])

    pump = Pump(client, server, on_event=on_event)
    pump.pump()
    target = server if flags & SIDE_SERVER else client
    if lived_in:
        # Objects both ways: references, a cache, a copy; a call from the server back.
        for method in ("child", "cache", "copy", "echo"):
            send_call(client, b"root", method, (FuzzChild(),) if method == "echo" else (), {})
        send_call(server, b"root", "keep", (FuzzChild(), FuzzCacheable()), {})
        pump.pump()
    # Calls of the target's own that the (silent) peer never answers: ids the fuzzer can hit.
    kept = FuzzChild()
    keep.append(kept)
    send_call(target, b"root", "echo", (kept,), {})
    send_call(target, b"root", "echo", (), {})
    target.data_to_send()
    return Target(target, bool(flags & DRIVE), keep)


def feed(target: Target, payload: bytes, cuts: list[int]) -> None:
    """Feed the payload in pieces; stop quietly at an acceptable error."""
    broker = target.broker
    for piece in chunks(payload, cuts):
        try:
            events = broker.receive_data(piece)
        except ACCEPTABLE:
            return
        if target.drive:
            drive_events(broker, events)
        broker.data_to_send()


def canon(value: Any, _seen: set[int] | None = None) -> Any:
    """A comparable form of an unjellied value (floats by their bits, cycles cut)."""
    seen = set() if _seen is None else _seen
    t = type(value)
    if t is float:
        return ("float", struct.pack("!d", value))
    if value is None or t in (bool, int, str, bytes):
        return (t.__name__, value)
    if id(value) in seen:
        return ("cycle",)
    seen.add(id(value))
    try:
        if t is dict:
            return ("dict", [(canon(k, seen), canon(v, seen)) for k, v in value.items()])
        if t in (list, tuple):
            return (t.__name__, [canon(v, seen) for v in value])
        if t in (set, frozenset):  # members hashed by id come out in any order
            return (t.__name__, sorted((canon(v, seen) for v in value), key=repr))
        return ("object", type(value).__qualname__)
    finally:
        seen.discard(id(value))


def payload_form(payload: Any) -> Any:
    """A call's args or kwargs, prebuilt by the fast path or not, in one comparable form."""
    if type(payload) in (list, bytes, int, float):
        from pbgreen.jelly import unjelly
        try:
            return canon(unjelly(payload, security=SECURITY))
        except InsecureJelly:
            return ("sexp", repr(payload))
    return canon(getattr(payload, "value", payload))


def summary(events: list[Any]) -> list[Any]:
    """What must not depend on how the bytes were split."""
    out = []
    for event in events:
        kind = type(event).__name__
        if kind == "IncomingCall":
            out.append((kind, event.method, bool(event.answer), payload_form(event.args),
                        payload_form(event.kwargs)))
        elif kind == "Reply":
            out.append((kind, getattr(event, "request_id", None), event.ok))
        else:
            out.append((kind,))
    return out


def observe(flags: int, payload: bytes, bytewise: bool) -> tuple[bool, list[Any]]:
    """(refused, events summary) for the payload fed whole or one byte at a time."""
    target = build_target(flags)
    broker = target.broker
    events: list[Any] = []  # kept alive to the end: replies held unread, as a driver would
    pieces = [payload[i:i + 1] for i in range(len(payload))] if bytewise else [payload]
    try:
        for piece in pieces:
            events += broker.receive_data(piece)
            broker.data_to_send()
    except ACCEPTABLE:
        return True, []
    return False, summary(events)


def execute(data: bytes) -> None:
    """One fuzz execution; raises whatever the broker should not have raised."""
    flags, cuts, payload = parse_input(data)
    if flags & COMPARE and not flags & DRIVE:
        whole = observe(flags, payload, bytewise=False)
        split = observe(flags, payload, bytewise=True)
        if whole != split:
            raise SplitMismatch(f"whole: {whole!r:.300}; one byte at a time: {split!r:.300}")
        return
    feed(build_target(flags), payload, cuts)


#: Escape signatures (``signature(exc)``) to let pass, to hunt on past known bugs.
IGNORED: set[str] = set()


def TestOneInput(data: bytes) -> None:  # noqa: N802 - atheris' name
    """The atheris entry point."""
    try:
        execute(data)
    except Exception as exc:
        if not IGNORED or signature(exc) not in IGNORED:
            raise


# ------------------------------------------------------------------------------ generation

VOCAB_WORDS = list(banana.VOCAB.values())
#: PB commands and their field counts.
COMMANDS: dict[bytes, int] = {
    b"message": 6, b"cachemessage": 6, b"answer": 2, b"error": 2, b"decref": 1,
    b"decache": 1, b"uncache": 1, b"version": 1, b"didNotUnderstand": 1,
}
JELLY_TAGS = [
    b"unicode", b"list", b"tuple", b"dictionary", b"set", b"frozenset", b"None", b"boolean",
    b"remote", b"local", b"cached", b"lcache", b"reference", b"dereference", b"unpersistable",
    b"persistent", b"datetime", b"date", b"time", b"timedelta", b"decimal", b"class", b"module",
    b"function", b"instance", b"fuzz.Copy", b"fuzz.Cache", b"fuzz.Factory", b"nope.Nope",
    b"twisted.spread.pb.CopyableFailure",
]
METHODS = [b"echo", b"child", b"cache", b"copy", b"fail", b"expected", b"ping", b"set",
           b"nosuch", b"__init__", b"", b"\xff\xfe"]
OBJECT_IDS: list[Any] = [b"root", 0, 1, 2, 3, 4, 5, 6, -1, b"", b"nope"]
INTS = [0, 1, 2, 3, 4, 5, 6, 7, -1, 127, 128, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1,
        2**53, 2**448 - 1, -(2**448 - 1), 10**100]
FLOATS = [0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), 1e308, 5e-324]
BYTES = [b"", b"x", b"root", b"true", b"false", b"unicode", b"utf8 \xc3\xa9", b"\xff\xfe",
         b"1 2 3", b"2020 1 2 3 4 5 6", b"a.b", b"twisted.spread.pb.Error", b"builtins.ValueError"]


class Generator:
    """Random s-expressions of banana's types, biased toward PB's commands."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def atom(self) -> Any:
        r = self.rng
        pick = r.random()
        if pick < 0.35:
            return r.choice(INTS) if r.random() < 0.5 else r.randint(-1000, 1000)
        if pick < 0.45:
            return r.choice(FLOATS)
        if pick < 0.7:
            return r.choice(BYTES)
        if pick < 0.85:
            return r.choice(VOCAB_WORDS)
        return r.randbytes(r.randint(0, 12))

    def text(self) -> list[Any]:
        """A ``str``, as jelly sends it."""
        r = self.rng
        return [b"unicode", r.choice(["", "é", "ok", "\U0001f600", "\x00"]).encode("utf-8")
                if r.random() < 0.8 else r.randbytes(r.randint(0, 4))]

    def jelly(self, depth: int = 0) -> Any:
        """A value that looks like jelly, right or subtly wrong."""
        r = self.rng
        if depth > 4 or r.random() < 0.3:
            return self.text() if r.random() < 0.2 else self.atom()
        tag = r.choice(JELLY_TAGS)
        if tag in (b"remote", b"local", b"cached", b"lcache", b"dereference"):
            return [tag, r.choice(OBJECT_IDS)] + ([self.atom()] if r.random() < 0.1 else [])
        if tag == b"dictionary":
            return [tag] + [[self.jelly(depth + 1), self.jelly(depth + 1)]
                            if r.random() < 0.9 else self.atom() for _ in range(r.randint(0, 3))]
        if tag == b"reference":
            return [tag, r.choice(OBJECT_IDS), self.jelly(depth + 1)]
        if tag == b"fuzz.Cache" and r.random() < 0.6:
            return [tag, r.choice(OBJECT_IDS), self.jelly(depth + 1)]
        if tag == b"twisted.spread.pb.CopyableFailure":
            return [tag, self.failure_state(depth + 1)]
        return [tag] + [self.jelly(depth + 1) for _ in range(r.randint(0, 3))]

    def failure_state(self, depth: int) -> Any:
        r = self.rng
        keys = [b"type", b"value", b"parents", b"traceback", b"count", b"frames"]
        names = [b"builtins.ValueError", b"builtins.KeyError", b"builtins.SystemExit",
                 b"twisted.spread.pb.Error", b"twisted.cred.error.UnauthorizedLogin", b"x.Y",
                 b"builtins.ExceptionGroup", b"builtins.OSError", b""]
        entries = []
        for _ in range(r.randint(0, 4)):
            key = r.choice(keys)
            pick = r.random()
            if pick < 0.3:
                value: Any = r.choice(names) if r.random() < 0.5 else [b"unicode", r.choice(names)]
            elif pick < 0.5:
                value = [b"list"] + [r.choice(names) for _ in range(r.randint(0, 3))]
            else:
                value = self.jelly(depth + 1)
            entries.append([[b"unicode", key] if r.random() < 0.9 else key, value])
        return [b"dictionary"] + entries

    def sexp(self, depth: int = 0) -> Any:
        """Any nested list of atoms."""
        r = self.rng
        if depth > 5 or r.random() < 0.4:
            return self.atom()
        return [self.sexp(depth + 1) for _ in range(r.randint(0, 4))]

    def field(self) -> Any:
        r = self.rng
        pick = r.random()
        if pick < 0.4:
            return r.choice(OBJECT_IDS)
        if pick < 0.7:
            return self.jelly()
        if pick < 0.85:
            return self.atom()
        return self.sexp()

    def command(self) -> list[Any]:
        """A PB message: the right command, usually the right number of fields."""
        r = self.rng
        name = r.choice(list(COMMANDS))
        count = COMMANDS[name] if r.random() < 0.8 else r.randint(0, 8)
        if name in (b"message", b"cachemessage") and count == 6:
            return [name, self.request_id(),
                    r.choice(OBJECT_IDS) if r.random() < 0.9 else self.field(),
                    r.choice(METHODS) if r.random() < 0.9 else self.field(),
                    r.choice([0, 1]) if r.random() < 0.9 else self.field(),
                    self.args(), self.kwargs()]
        if name in (b"answer", b"error") and count == 2:
            payload = self.failure() if name == b"error" and r.random() < 0.5 else self.jelly()
            return [name, self.request_id(), payload]
        if name == b"version" and count == 1 and r.random() < 0.5:
            return [name, r.choice([6, 5, 7])]
        return [name] + [self.field() for _ in range(count)]

    def request_id(self) -> Any:
        """Mostly an id the target is waiting for (1, 2 fresh; 2, 3, 5, 6 lived-in)."""
        r = self.rng
        pick = r.random()
        if pick < 0.6:
            return r.choice((1, 2))
        if pick < 0.9:
            return r.choice((0, 3, 4, 5, 6, 7, -1, 2**31, 2**40))
        return self.field()

    def failure(self) -> list[Any]:
        """An ``error`` payload: a CopyableFailure, its fields right or wrong."""
        return [b"twisted.spread.pb.CopyableFailure", self.failure_state(1)]

    def args(self) -> Any:
        r = self.rng
        if r.random() < 0.8:
            return [r.choice([b"tuple", b"list"])] + [self.jelly(1) for _ in range(r.randint(0, 3))]
        return self.jelly()

    def kwargs(self) -> Any:
        r = self.rng
        if r.random() < 0.8:
            return [b"dictionary"] + [[self.text() if r.random() < 0.8 else self.jelly(1),
                                       self.jelly(1)] for _ in range(r.randint(0, 2))]
        return self.jelly()

    def opening(self, client_side: bool) -> Any:
        """What a peer says first: an offer of dialects (to a connector) or a choice."""
        r = self.rng
        words = [b"pb", b"none", b"xml", b"", b"PB"]
        if r.random() < 0.1:
            return self.sexp()
        if client_side:
            return [r.choice(words) for _ in range(r.randint(0, 3))]
        return r.choice(words) if r.random() < 0.9 else [r.choice(words)]

    def message(self) -> Any:
        """What the peer sends next: mostly a command, sometimes anything."""
        pick = self.rng.random()
        if pick < 0.8:
            return self.command()
        if pick < 0.9:
            return [self.rng.choice(VOCAB_WORDS + list(COMMANDS))] + [self.field()
                                                                      for _ in range(2)]
        return self.sexp()


def raw_encode(sexp: Any, vocab: bool) -> bytes:
    """Banana bytes for ``sexp`` with no limits checked (to send past them)."""
    try:
        return banana.encode(sexp, vocab=vocab)
    except banana.EncodeError:
        pass
    codes = {w: n for n, w in banana.VOCAB.items()} if vocab else {}
    out = bytearray()

    b128 = banana.encode_b128  # the prefix alone: no limit is checked here

    stack = [sexp]
    while stack:
        item = stack.pop()
        if type(item) is list:
            out += b128(len(item)) + b"\x80"
            stack.extend(reversed(item))
        elif type(item) is bytes:
            out += b128(codes[item]) + b"\x87" if item in codes else b128(len(item)) + b"\x82" + item
        elif type(item) is float:
            out += b"\x84" + struct.pack("!d", item)
        elif item >= 0:
            out += b128(item) + (b"\x81" if item < 2**31 else b"\x85")
        else:
            out += b128(-item) + (b"\x83" if -item <= 2**31 else b"\x86")
    return bytes(out)


def encode_all(messages: list[Any], vocab: bool, fresh: bool = False) -> bytes:
    """The messages' bytes; with ``fresh`` the first one (the dialect) without vocabulary."""
    return b"".join(raw_encode(m, vocab and not (fresh and i == 0)) for i, m in enumerate(messages))


# ------------------------------------------------------------------------------ mutation


def seed_messages() -> list[Any]:
    """Real PB messages, as both sides of a lived-in conversation wrote them."""
    out: list[Any] = []
    target = build_target(LIVED_IN)
    client, server = target.keep[0], target.keep[1]
    del target
    # Record a fresh conversation with every kind of message in it.
    pump = Pump(client, server, on_event=lambda b, e: drive_events(b, [e]))
    send_call(client, b"root", "echo", (1, "two", b"three", 4.0, None, True, [5], (6,), {7: 8},
                                        {9}, frozenset([10])), {"k": "v"})
    for method in ("fail", "child", "cache", "copy"):
        send_call(client, b"root", method, (), {})
    send_call(client, b"root", "echo", (FuzzChild(), FuzzChild()), {})
    pump.pump()
    decoders = {"C>S": banana.Decoder(vocab=True), "S>C": banana.Decoder(vocab=True)}
    for direction, data in pump.wire:
        out.extend(decoders[direction].feed(data))
    out += [[b"decref", 1], [b"decache", 2], [b"uncache", 2], [b"version", 6],
            [b"didNotUnderstand", b"x"], [b"cachemessage", 9, 2, b"set", 0,
                                           [b"tuple", [b"unicode", b"k"], 1], [b"dictionary"]]]
    return out


def _paths(sexp: Any, path: tuple[int, ...] = ()) -> Iterator[tuple[int, ...]]:
    yield path
    if type(sexp) is list:
        for i, child in enumerate(sexp):
            yield from _paths(child, path + (i,))


def _get(sexp: Any, path: tuple[int, ...]) -> Any:
    for i in path:
        sexp = sexp[i]
    return sexp


def _replace(sexp: Any, path: tuple[int, ...], value: Any) -> Any:
    if not path:
        return value
    copy = list(sexp)
    copy[path[0]] = _replace(sexp[path[0]], path[1:], value)
    return copy


def _delete(sexp: Any, path: tuple[int, ...]) -> Any:
    parent = _get(sexp, path[:-1])
    return _replace(sexp, path[:-1], parent[:path[-1]] + parent[path[-1] + 1:])


def mutate_sexp(gen: Generator, sexp: Any) -> Any:
    """One structural change: a node replaced, dropped, duplicated or nudged."""
    r = gen.rng
    paths = list(_paths(sexp))
    path = r.choice(paths[1:] or paths)
    node = _get(sexp, path)
    op = r.random()
    if op < 0.35:
        return _replace(sexp, path, r.choice([gen.atom, gen.jelly, gen.field, gen.sexp])())
    if op < 0.5 and path:
        return _delete(sexp, path)
    if op < 0.6 and path:
        parent = _get(sexp, path[:-1])
        return _replace(sexp, path[:-1], parent[:path[-1]] + [node] + parent[path[-1]:])
    if op < 0.8 and type(node) is int:
        return _replace(sexp, path, r.choice([node + 1, node - 1, -node, 0, r.choice(INTS)]))
    if type(node) is list:
        return _replace(sexp, path, node + [gen.jelly()])
    return _replace(sexp, path, gen.atom())


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """One byte-level change: flip, insert, delete, truncate, splice."""
    buf = bytearray(data)
    op = rng.random()
    pos = rng.randint(0, len(buf))
    if op < 0.3 and buf:
        pos = min(pos, len(buf) - 1)
        buf[pos] ^= 1 << rng.randint(0, 7)
    elif op < 0.5:
        buf[pos:pos] = rng.choice([bytes([rng.randint(0, 255)]), b"\x80", b"\x87", b"\x7f" * 70,
                                   b"\xff\xff\xff\x7f\x82", rng.randbytes(rng.randint(1, 8))])
    elif op < 0.7 and buf:
        del buf[pos:pos + rng.randint(1, 4)]
    elif op < 0.85:
        del buf[pos:]
    else:
        start = rng.randint(0, len(buf))
        buf[pos:pos] = buf[start:start + rng.randint(1, 16)]
    return bytes(buf)


class Case:
    """One generated input, with its messages when it was built from s-expressions."""

    __slots__ = ("flags", "cuts", "messages", "payload")

    def __init__(self, flags: int, cuts: list[int], messages: list[Any] | None,
                 payload: bytes) -> None:
        self.flags = flags
        self.cuts = cuts
        self.messages = messages
        self.payload = payload

    @classmethod
    def of(cls, flags: int, cuts: list[int], messages: list[Any]) -> "Case":
        """A case whose payload is ``messages``, encoded as ``flags`` say."""
        return cls(flags, cuts, messages, encode_all(messages, not flags & DIALECT_NONE,
                                                     bool(flags & FRESH)))

    def data(self) -> bytes:
        return make_input(self.flags, self.cuts, self.payload)


def generate(gen: Generator, corpus: list[Any]) -> Case:
    r = gen.rng
    flags = r.choice((0, SIDE_SERVER)) | (DIALECT_NONE if r.random() < 0.15 else 0)
    flags |= DRIVE if r.random() < 0.6 else COMPARE if r.random() < 0.3 else 0
    pick = r.random()
    flags |= LIVED_IN if pick < 0.15 else FRESH if pick < 0.25 else 0
    messages = []
    if flags & FRESH:
        messages.append(gen.opening(client_side=not flags & SIDE_SERVER))
        if r.random() < 0.1:
            messages.append(gen.opening(client_side=not flags & SIDE_SERVER))
        if r.random() < 0.7:
            messages.append([b"version", 6] if r.random() < 0.8 else gen.command())
    for _ in range(r.choice((1, 1, 1, 2, 3))):
        if r.random() < 0.5:
            message = gen.message()
        else:
            message = r.choice(corpus)
            if message[0] in (b"message", b"cachemessage", b"answer", b"error") and \
                    r.random() < 0.7:
                message = [message[0], gen.request_id()] + message[2:]
            for _ in range(r.choice((1, 1, 2, 3))):
                message = mutate_sexp(gen, message)
        messages.append(message)
    payload = Case.of(flags, [], messages).payload
    if r.random() < 0.15:
        for _ in range(r.choice((1, 1, 2))):
            payload = mutate_bytes(r, payload)
        messages = None
    cuts = sorted(r.randint(0, len(payload)) for _ in range(r.choice((0, 0, 1, 2, 5))))
    if r.random() < 0.03:
        cuts = list(range(1, len(payload)))[:MAX_CUTS]
    return Case(flags, cuts, messages, payload)


# ------------------------------------------------------------------------------ the runner


def signature(exc: BaseException) -> str:
    """Where an escape came from: its type and the innermost pbgreen frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    inner = [f for f in frames if os.sep + "pbgreen" + os.sep in f.filename] or frames
    where = f"{os.path.basename(inner[-1].filename)}:{inner[-1].lineno}" if inner else "?"
    return f"{type(exc).__name__} at {where}"


def escape(data: bytes) -> BaseException | None:
    """The exception ``data`` lets escape (unless ``IGNORED``), or ``None``."""
    try:
        execute(data)
    except Exception as exc:
        if IGNORED and signature(exc) in IGNORED:
            return None
        return exc
    return None


def _same(sig: str) -> Callable[[bytes], bool]:
    def check(data: bytes) -> bool:
        exc = escape(data)
        return exc is not None and signature(exc) == sig
    return check


def shrink(case: Case, sig: str, budget: int = 3000) -> Case:
    """A smaller case that still escapes the same way (greedy, bounded)."""
    still = _same(sig)
    tries = [0]

    def ok(candidate: Case) -> bool:
        tries[0] += 1
        return tries[0] <= budget and still(candidate.data())

    best = case
    for simpler in (best.flags & ~(DRIVE | LIVED_IN | DIALECT_NONE), best.flags & ~(DRIVE | LIVED_IN),
                    best.flags & ~LIVED_IN, best.flags & ~DRIVE, best.flags & ~DIALECT_NONE):
        trial = (Case.of(simpler, best.cuts, best.messages) if best.messages is not None
                 else Case(simpler, best.cuts, None, best.payload))
        if trial.flags != best.flags and ok(trial):
            best = trial
            break
    if best.cuts and ok(Case(best.flags, [], best.messages, best.payload)):
        best = Case(best.flags, [], best.messages, best.payload)
    if best.messages is not None:
        messages = best.messages
        progress = True
        while progress and tries[0] < budget:
            progress = False
            for i in range(len(messages)):  # drop whole messages
                fewer = messages[:i] + messages[i + 1:]
                if fewer and ok(Case.of(best.flags, [], fewer)):
                    messages, progress = fewer, True
                    break
            if progress:
                continue
            for path in list(_paths(messages))[1:]:  # then simplify nodes
                node = _get(messages, path)
                options: list[Any] = []
                if len(path) > 1:
                    options.append(None)  # delete it
                if type(node) is list:
                    options += [x for x in node if type(x) is not list or len(x) < len(node)][:3]
                    options.append([])
                if node not in (0, b"", []):
                    options += [0, 1, b""]
                for option in options:
                    if option is not None and type(option) is type(node) and option == node:
                        continue
                    candidate = _delete(messages, path) if option is None else \
                        _replace(messages, path, option)
                    if candidate and ok(Case.of(best.flags, [], candidate)):
                        messages, progress = candidate, True
                        break
                if progress:
                    break
        best = Case.of(best.flags, [], messages)
    else:
        payload = best.payload
        size = max(1, len(payload) // 2)
        while size >= 1 and tries[0] < budget:
            start, shrunk = 0, False
            while start < len(payload):
                candidate = payload[:start] + payload[start + size:]
                if ok(Case(best.flags, best.cuts, None, candidate)):
                    payload, shrunk = candidate, True
                else:
                    start += size
            if not shrunk:
                size //= 2
        best = Case(best.flags, best.cuts, None, payload)
    return best


def describe(case: Case) -> str:
    side = "acceptor (server)" if case.flags & SIDE_SERVER else "connector (client)"
    extras = [name for bit, name in ((DIALECT_NONE, "dialect none"), (DRIVE, "drive events"),
                                     (LIVED_IN, "lived-in state"), (FRESH, "before the handshake"),
                                     (COMPARE, "compare whole with bytewise"))
              if case.flags & bit]
    lines = [f"  side: {side}" + (f"; {', '.join(extras)}" if extras else ""),
             f"  input (hex): {case.data().hex()}"]
    if case.messages is not None:
        lines.append(f"  messages: {case.messages!r}")
    else:
        lines.append(f"  payload: {case.payload!r}")
    if case.cuts:
        lines.append(f"  cuts: {case.cuts}")
    return "\n".join(lines)


def run(iterations: int, seed: int = 0, *, progress: float | None = None,
        crash_dir: str | None = None, shrink_budget: int = 3000,
        out: Any = None) -> dict[str, tuple[Case, str]]:
    """Run the pure-Python fuzzer; return {signature: (shrunk case, traceback)}.

    ``progress``: print a status line every that many seconds (``None``: never).
    """
    out = out or sys.stdout
    logger = logging.getLogger("pbgreen")
    was_disabled = logger.disabled
    logger.disabled = True  # failing fuzzed calls would log a traceback each
    rng = random.Random(seed)
    gen = Generator(rng)
    corpus = seed_messages()
    crashes: dict[str, tuple[Case, str]] = {}
    start = last = time.perf_counter()
    try:
        for done in range(1, iterations + 1):
            case = generate(gen, corpus)
            data = case.data()
            exc = escape(data)
            if exc is not None:
                sig = signature(exc)
                if sig not in crashes:
                    small = shrink(case, sig, shrink_budget)
                    again = escape(small.data())
                    if again is None:  # it did not happen twice: report what was seen
                        small, again = case, exc
                        sig += " (flaky: did not happen again)"
                    text = "".join(traceback.format_exception(again)).rstrip()
                    crashes[sig] = (small, text)
                    print(f"[{done}] new escape: {sig}\n{describe(small)}", file=out, flush=True)
                    if crash_dir:
                        os.makedirs(crash_dir, exist_ok=True)
                        name = sig.replace(" ", "_").replace(":", "_").replace(os.sep, "_")
                        with open(os.path.join(crash_dir, f"crash-{name}"), "wb") as f:
                            f.write(small.data())
            now = time.perf_counter()
            if progress is not None and now - last >= progress:
                last = now
                print(f"  {done} execs, {done / (now - start):,.0f} execs/s, "
                      f"{len(crashes)} distinct escapes", file=out, flush=True)
    finally:
        logger.disabled = was_disabled
    elapsed = time.perf_counter() - start
    print(f"done: {iterations} execs in {elapsed:.1f} s ({iterations / elapsed:,.0f} execs/s), "
          f"{len(crashes)} distinct escapes", file=out, flush=True)
    return crashes


def write_corpus(directory: str, seed: int = 0, count: int = 200) -> None:
    """Seed inputs for atheris: real messages for every side and dialect."""
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(seed)
    gen = Generator(rng)
    messages = seed_messages()
    n = 0
    for flags in range(16):
        for message in messages:
            data = make_input(flags, [], raw_encode(message, not flags & DIALECT_NONE))
            with open(os.path.join(directory, f"seed-{n:05d}"), "wb") as f:
                f.write(data)
            n += 1
    for _ in range(count):
        with open(os.path.join(directory, f"seed-{n:05d}"), "wb") as f:
            f.write(generate(gen, messages).data())
        n += 1


def _take_ignored(argv: list[str]) -> list[str]:
    """Remove every ``--ignore SIGNATURE`` from ``argv`` into ``IGNORED``."""
    rest = []
    items = iter(argv)
    for arg in items:
        if arg == "--ignore":
            IGNORED.add(next(items, ""))
        elif arg.startswith("--ignore="):
            IGNORED.add(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return rest


def main(argv: list[str] | None = None) -> int:
    argv = _take_ignored(list(sys.argv[1:] if argv is None else argv))
    logging.getLogger("pbgreen").disabled = True  # fuzzed calls that fail would log each
    if "--atheris" in argv:
        argv.remove("--atheris")
        import atheris  # type: ignore[import-not-found]

        atheris.instrument_all()
        atheris.Setup([sys.argv[0]] + argv, TestOneInput)
        atheris.Fuzz()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=100_000, help="executions to run")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--progress", type=float, default=5.0,
                        help="seconds between status lines (0: none)")
    parser.add_argument("--crash-dir", default=None, help="save shrunk crash inputs here")
    parser.add_argument("--write-corpus", metavar="DIR", help="write atheris seed inputs and exit")
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run saved inputs and exit")
    parser.add_argument("--ignore", metavar="SIGNATURE",
                        help="let an escape with this signature pass, e.g. "
                             "'TypeError at protocol.py:365' (repeatable; also with --atheris)")
    args = parser.parse_args(argv)
    if args.write_corpus:
        write_corpus(args.write_corpus, args.seed)
        return 0
    if args.replay:
        bad = 0
        for name in args.replay:
            with open(name, "rb") as f:
                exc = escape(f.read())
            if exc is None:
                print(f"{name}: ok")
            else:
                bad += 1
                print(f"{name}: {signature(exc)}")
                traceback.print_exception(exc)
        return 1 if bad else 0
    crashes = run(args.iterations, args.seed, progress=args.progress or None,
                  crash_dir=args.crash_dir)
    for sig, (case, text) in crashes.items():
        print(f"\n=== {sig}\n{describe(case)}\n{text}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
