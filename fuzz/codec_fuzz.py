#!/usr/bin/env python
"""Fuzz the compiled plain-data decoder against the pure-Python one.

How it works. Each execution takes one input (format below), runs
``loads`` of ``pbgreen._ccodec`` and of ``pbgreen._pycodec`` on it and
checks that both give the same outcome: the same message with the same
values of the same types, or both ``None`` (declined), or the same exception
class. When they rebuilt values, both ``dumps_values`` must write the same
bytes for them. The payload is also fed to two ``banana.Decoder``s, one with
each ``loads`` as its fast hook, whole and cut in two: they must give the same
expressions or both raise ``BananaError``. Any difference raises
``Mismatch``; anything else escaping (a crash, a ``SystemError``) is a bug too.

Input format::

    byte 0      flags: bit 0 vocabulary (banana.VOCAB, else None)
                       bits 1-2 size_limit: SIZE_LIMIT, 2**14, 2**14 - 1, 2**70
                       bits 3-4 max_items: MAX_ITEMS, 0, 3, 2**70
    byte 1      start position, mod len(payload) + 1
    byte 2      where the Decoder comparison cuts the payload, mod len(payload) + 1
    the rest    the payload

Modes:

* ``python fuzz/codec_fuzz.py --iterations N --seed S``: pure Python (no
  atheris): mutations (bytes changed, inserted, removed, truncated, spliced)
  of messages the codec wrote for generated plain values. Exit status 1 on a
  mismatch, printing the input in hex.
* ``python fuzz/codec_fuzz.py --atheris [libFuzzer options] [corpus dirs]``:
  coverage-guided with atheris.
* ``python fuzz/codec_fuzz.py --write-corpus DIR``: seed inputs for atheris.
* ``python fuzz/codec_fuzz.py --replay FILE...``: run saved inputs.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import struct
import sys
import time
from typing import Any

try:
    import pbgreen  # noqa: F401
except ImportError:  # run from a checkout without installing: pbgreen is next door
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pbgreen import banana, plaincodec  # noqa: E402
from pbgreen.errors import BananaError  # noqa: E402

CODECS = plaincodec.implementations()
PY = CODECS["python"]
C = CODECS.get("compiled")
SIZE_LIMITS = (banana.SIZE_LIMIT, 2 ** 14, 2 ** 14 - 1, 2 ** 70)
MAX_ITEMS = (banana.MAX_ITEMS, 0, 3, 2 ** 70)


class Mismatch(AssertionError):
    """The compiled and the pure-Python codec disagreed."""


def canon(x: Any) -> Any:
    """A comparable picture of a value with every type in it (floats by their bits)."""
    t = type(x)
    if t is float:
        return ("float", struct.pack("!d", x))
    if t in (list, tuple):
        return (t.__name__, tuple(canon(i) for i in x))
    if t is dict:
        return ("dict", tuple((canon(k), canon(v)) for k, v in x.items()))
    if t in (set, frozenset):
        return (t.__name__, frozenset(canon(i) for i in x))
    if t is plaincodec.Built:
        return ("Built", canon(x.value))
    return (t.__name__, x)


def outcome(func: Any, *args: Any) -> Any:
    """``("ok", canon(result))`` or ``("raised", exception class)``."""
    try:
        return ("ok", canon(func(*args)))
    except Exception as exc:  # noqa: BLE001 - the class is what is compared
        return ("raised", type(exc))


def _feed(hook: Any, payload: bytes, cut: int) -> Any:
    decoder = banana.Decoder(vocab=True, fast=hook)
    try:
        return ("ok", canon(decoder.feed(payload[:cut]) + decoder.feed(payload[cut:])))
    except BananaError:
        return ("raised", BananaError)


def check(data: bytes) -> None:
    """Run one input through both codecs; ``Mismatch`` if they disagree."""
    if C is None:
        raise RuntimeError("the compiled codec is not built here")
    if len(data) < 3:
        return
    flags, payload = data[0], data[3:]
    vocab = banana.VOCAB if flags & 1 else None
    size_limit = SIZE_LIMITS[(flags >> 1) & 3]
    max_items = MAX_ITEMS[(flags >> 3) & 3]
    pos = data[1] % (len(payload) + 1)
    args = (payload, pos, len(payload), vocab, size_limit, max_items)
    got, want = outcome(C.loads, *args), outcome(PY.loads, *args)
    if got != want:
        raise Mismatch(f"loads: compiled {got!r:.300} != python {want!r:.300}")
    if got[0] == "ok" and got[1] != ("NoneType", None):
        message = C.loads(*args)[0]
        values = tuple(x.value for x in message if type(x) is plaincodec.Built)
        table = banana.VOCAB_CODES if vocab is not None else banana.NO_VOCAB
        encoded = outcome(C.dumps_values, values, table), outcome(PY.dumps_values, values, table)
        if encoded[0] != encoded[1]:
            raise Mismatch(f"dumps_values of the rebuilt values: {encoded[0]!r:.300} != "
                           f"{encoded[1]!r:.300}")
    cut = data[2] % (len(payload) + 1)
    fed = _feed(C.loads, payload, cut), _feed(PY.loads, payload, cut)
    if fed[0] != fed[1]:
        raise Mismatch(f"Decoder: compiled hook {fed[0]!r:.300} != python hook {fed[1]!r:.300}")


# ----------------------------------------------------------------------------- inputs


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(14 if depth < 4 else 8)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, 1, 2047, 2048, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2 ** 63,
                           2 ** 448 - 1, -(2 ** 448) + 1, rng.randrange(-10 ** 6, 10 ** 6)])
    if kind == 2:
        return rng.choice([0.0, -0.0, 1.5, math.inf, math.nan, rng.random()])
    if kind == 3:
        return "".join(rng.choice("ab\u00e9\u20ac\U0001f600 ") for _ in range(rng.randrange(12)))
    if kind == 4:
        return rng.choice([b"", b"list", b"None", b"answer", rng.randbytes(rng.randrange(20))])
    if kind == 5:
        return rng.choice(["None", "unicode", "x" * 130, "list"])
    if kind in (6, 7):
        return rng.randrange(100)
    items = [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind in (8, 9):
        return items
    if kind == 10:
        return tuple(items)
    keys = [rng.choice([None, True, 1, 2.5, "k", "id", b"b", rng.randrange(50)]) for _ in items]
    if kind == 11:
        return dict(zip(keys, items))
    return set(keys) if kind == 12 else frozenset(keys)


def _message(rng: random.Random) -> bytes:
    vocab = banana.VOCAB_CODES if rng.random() < 0.7 else banana.NO_VOCAB
    if rng.random() < 0.5:
        head, count = [b"answer", rng.randrange(5000)], 1
    else:
        head, count = [rng.choice([b"message", b"cachemessage"]), 3, b"root", b"echo", 1], 2
    values = tuple(_value(rng) for _ in range(count))
    try:
        return PY.dumps(head, values, vocab)
    except (plaincodec.Fallback, UnicodeEncodeError):
        return banana.encode(head + [[b"list", 1]] * count, vocab=vocab is banana.VOCAB_CODES)


def _mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    for _ in range(rng.randrange(4)):
        if not data:
            break
        i = rng.randrange(len(data))
        kind = rng.randrange(6)
        if kind == 0:
            data = data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
        elif kind == 1:
            data = data[:i] + rng.randbytes(rng.randrange(1, 8)) + data[i:]
        elif kind == 2:
            data = data[:i] + data[i + rng.randrange(1, 8):]
        elif kind == 3:
            data = data[:i]
        elif kind == 4:
            other = rng.choice(corpus)
            j = rng.randrange(len(other) + 1)
            data = data[:i] + other[j:j + rng.randrange(1, 40)] + data[i:]
        else:
            data = data[:i] + rng.choice([b"\x7f" * 10, b"\x00\x00\x28", b"\x07\x82unicode",
                                          b"\x04\x82None", b"\x02\x80", b"\x84"]) + data[i:]
    return data


def generate(rng: random.Random, corpus: list[bytes]) -> bytes:
    """One input: flags, position, cut, then a (mutated) message."""
    payload = _message(rng) if rng.random() < 0.3 else _mutate(rng, rng.choice(corpus), corpus)
    flags = rng.randrange(32) if rng.random() < 0.3 else 1
    return bytes([flags, 0 if rng.random() < 0.8 else rng.randrange(256),
                  rng.randrange(256)]) + payload


def run(iterations: int, seed: int, progress: float = 0.0) -> list[bytes]:
    """Check ``iterations`` generated inputs; the inputs that mismatched."""
    rng = random.Random(seed)
    corpus = [_message(rng) for _ in range(64)]
    failures: list[bytes] = []
    started = last = time.monotonic()
    for done in range(1, iterations + 1):
        data = generate(rng, corpus)
        try:
            check(data)
        except Mismatch as exc:
            print(f"mismatch: {exc}\n  input: {data.hex()}", file=sys.stderr)
            failures.append(data)
        if progress and time.monotonic() - last > progress:
            last = time.monotonic()
            print(f"{done} inputs, {done / (last - started):.0f}/s", file=sys.stderr)
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--progress", type=float, default=5.0)
    parser.add_argument("--write-corpus", metavar="DIR")
    parser.add_argument("--replay", nargs="+", metavar="FILE")
    parser.add_argument("--atheris", action="store_true")
    args, rest = parser.parse_known_args()
    if args.write_corpus:
        os.makedirs(args.write_corpus, exist_ok=True)
        rng = random.Random(args.seed)
        for i in range(200):
            with open(os.path.join(args.write_corpus, f"seed-{i:03d}"), "wb") as f:
                f.write(bytes([1 if i % 4 else rng.randrange(32), 0, rng.randrange(256)])
                        + _message(rng))
        return 0
    if args.replay:
        bad = 0
        for name in args.replay:
            with open(name, "rb") as f:
                try:
                    check(f.read())
                    print(f"{name}: ok")
                except Mismatch as exc:
                    bad += 1
                    print(f"{name}: {exc}")
        return 1 if bad else 0
    if args.atheris:
        import atheris  # noqa: PLC0415 - only this mode needs it
        atheris.instrument_all()
        atheris.Setup([sys.argv[0], *rest], check)
        atheris.Fuzz()
        return 0
    failures = run(args.iterations, args.seed, args.progress)
    print(f"{args.iterations} inputs, {len(failures)} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
