"""CPU per encode+decode of one PB message: compiled codec vs pure Python vs pickle.

How it works. For each payload the script times, in this one process, the
work one side of a call does to send a value and the other to read it:

* ``compiled`` / ``python``: ``plaincodec.dumps_head`` + ``dumps_values``
  for an ``answer`` message carrying the payload (what the broker writes),
  then ``loads`` on those bytes (what the decoder's fast hook reads), with
  each of the two implementations;
* ``pickle``: ``pickle.dumps`` + ``pickle.loads`` of the payload;
* ``pickle+frame``: the same with a 4-byte length joined on before sending
  (as ``run.py``'s raw gevent echo frames what it sends), what a raw echo
  whose both sides pickle would pay. The codec's message is joined from its
  head and its values the same way, so for 600 KB the join's copy counts.

Time is ``time.process_time`` (CPU, not wall clock) over N iterations, N
chosen so one repeat takes about ``--target`` seconds; the best of
``--repeats`` runs is reported as microseconds per encode+decode, with the
ratios against the compiled codec. Payloads: (a) a small str, (b) 100
small dicts, (c) 600 KB of bytes (under banana's 640 KiB string limit).

    python benchmarks/codec.py               # about 20 seconds
    python benchmarks/codec.py --quick       # about 4 seconds
"""

from __future__ import annotations

import argparse
import os
import pickle
import struct
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pbgreen import banana, plaincodec  # noqa: E402

PAYLOADS: dict[str, Any] = {
    "a small str": "hello, world",
    "100 small dicts": [{"id": i, "name": "item%d" % i, "price": 1.5 * i, "tags": ["a", "b"]}
                        for i in range(100)],
    "600 KB bytes": os.urandom(600 * 1024),
}
HEAD = [b"answer", 12345]


def codec_round(codec: Any, value: Any) -> Callable[[], Any]:
    dumps_head, dumps_values, loads = codec.dumps_head, codec.dumps_values, codec.loads
    vocab, table, limit, items = banana.VOCAB_CODES, banana.VOCAB, banana.SIZE_LIMIT, banana.MAX_ITEMS
    values = (value,)

    def once() -> Any:
        data = dumps_head(HEAD, 1, vocab) + dumps_values(values, vocab)
        return loads(data, 0, len(data), table, limit, items)[0][2].value
    return once


def pickle_round(value: Any, framed: bool) -> Callable[[], Any]:
    dumps, loads, frame = pickle.dumps, pickle.loads, struct.Struct(">I").pack

    def once() -> Any:
        return loads(dumps(value))

    def once_framed() -> Any:
        data = dumps(value)
        sent = frame(len(data)) + data  # noqa: F841 - the sender's framing, as the raw echo's
        return loads(data)  # the receiver reads the body on its own
    return once_framed if framed else once


def measure(once: Callable[[], Any], target: float, repeats: int) -> float:
    """Best CPU seconds per call over ``repeats`` runs of about ``target`` seconds."""
    n, spent = 1, 0.0
    while spent < target / 10:
        n *= 2
        start = time.process_time()
        for _ in range(n):
            once()
        spent = time.process_time() - start
    n = max(1, int(n * target / max(spent, 1e-9)))
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(n):
            once()
        best = min(best, (time.process_time() - start) / n)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--target", type=float, default=None, help="seconds per repeat")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    target = args.target or (0.1 if args.quick else 0.5)
    repeats = args.repeats or (3 if args.quick else 5)
    codecs = plaincodec.implementations()
    if "compiled" not in codecs:
        print("the compiled codec is not built here (pip install -e . with a C compiler)")
    print(f"{'payload':<18}{'compiled µs':>13}{'python µs':>12}{'pickle µs':>12}"
          f"{'pickle+frame µs':>17}{'python/compiled':>17}{'pickle/compiled':>17}"
          f"{'pickle+frame/compiled':>23}")
    for name, value in PAYLOADS.items():
        rounds = {label: codec_round(module, value) for label, module in codecs.items()}
        rounds["pickle"] = pickle_round(value, framed=False)
        rounds["pickle+frame"] = pickle_round(value, framed=True)
        for label, once in rounds.items():
            assert once() == value, f"{label} did not give the value back for {name}"
        took = {label: measure(once, target, repeats) for label, once in rounds.items()}
        compiled = took.get("compiled", float("nan"))
        print(f"{name:<18}{compiled * 1e6:>13.2f}{took['python'] * 1e6:>12.2f}"
              f"{took['pickle'] * 1e6:>12.2f}{took['pickle+frame'] * 1e6:>17.2f}"
              f"{took['python'] / compiled:>16.2f}×{took['pickle'] / compiled:>16.2f}×"
              f"{took['pickle+frame'] / compiled:>22.2f}×")


if __name__ == "__main__":
    main()
