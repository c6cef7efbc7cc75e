"""Banana: the byte codec under PB.

How it works. Banana knows four kinds of value: lists, integers, floats and
byte strings. Every element is a little-endian base-128 *prefix* (bytes below
0x80) followed by one *type byte* (0x80 and up) and, for strings and floats,
a body. ``encode`` turns a nested list into bytes in one pass. ``Decoder``
keeps one ``bytearray`` and an offset: ``feed`` appends, then walks complete
elements, keeping a stack of the lists still being filled, so an expression
may arrive in any number of pieces and the result is the same as if it came
whole. An element that is not complete yet is left in the buffer and read
again on the next feed.

Every declared length is checked against its limit as soon as its prefix and
type byte are in, before anything is allocated for the body. A decoder that
raised stays failed: the connection it served is finished.

Dialects: after negotiation with dialect ``pb`` both directions replace each
byte string equal to one of 31 vocabulary words by a two-byte symbol.
"""

from __future__ import annotations

import struct
from typing import Any

from .errors import BananaError

__all__ = ["SIZE_LIMIT", "PREFIX_LIMIT", "VOCAB", "DIALECTS", "VOCAB_DIALECTS", "EncodeError",
           "encode",
           "encode_b128", "encode_int", "encode_string", "list_header", "INT_BYTES", "LIST_HEAD",
           "STRING_HEAD", "VOCAB_CODES", "NO_VOCAB",
           "decode", "Decoder", "choose_dialect"]

SIZE_LIMIT = 640 * 1024
PREFIX_LIMIT = 64
MAX_INT = 2 ** (7 * PREFIX_LIMIT) - 1

#: Defaults for the limits banana itself does not have, beyond Twisted's.
MAX_DEPTH = 256
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
MAX_ITEMS = 2_000_000

LIST, INT, STRING, NEG, FLOAT, LONGINT, LONGNEG, VOCAB_TYPE = range(0x80, 0x88)
_INT_SPLIT = 2 ** 31

VOCAB: dict[int, bytes] = dict(enumerate((
    b"None", b"class", b"dereference", b"reference", b"dictionary", b"function",
    b"instance", b"list", b"module", b"persistent", b"tuple", b"unpersistable",
    b"copy", b"cache", b"cached", b"remote", b"local", b"lcache", b"version",
    b"login", b"password", b"challenge", b"logged_in", b"not_logged_in",
    b"cachemessage", b"message", b"answer", b"error", b"decref", b"decache",
    b"uncache"), start=1))

#: Dialects we offer as acceptor, in order of preference. ``pbgreen`` is
#: ``pb`` (same vocabulary) plus a few commands only pbgreen peers know:
#: a deadline on ``message``, ``cancel``, ``ping``/``pong``. A Twisted
#: connector walks the offer in order and skips the names it does not know.
DIALECTS = (b"pbgreen", b"pb", b"none")
#: Dialects that use the ``pb`` vocabulary.
VOCAB_DIALECTS = (b"pbgreen", b"pb")


class EncodeError(ValueError):
    """A value banana cannot send: wrong type, too long, or too large."""


def encode_b128(n: int) -> bytes:
    """A banana prefix: ``n`` (>= 0) in little-endian base-128 digits, no type byte."""
    out = bytearray()
    while True:
        out.append(n & 0x7F)
        n >>= 7
        if not n:
            return bytes(out)


# Pre-encoded prefix+type for the small numbers almost every message is made of
# (public: plaincodec and the broker build messages from them).
_CACHED = 2048
_PREFIX = [encode_b128(i) for i in range(_CACHED)]
INT_BYTES = [p + b"\x81" for p in _PREFIX]
LIST_HEAD = [p + b"\x80" for p in _PREFIX]
STRING_HEAD = [p + b"\x82" for p in _PREFIX]
VOCAB_CODES = {word: encode_b128(num) + b"\x87" for num, word in VOCAB.items()}
NO_VOCAB: dict[bytes, bytes] = {}
_pack_double = struct.Struct("!d").pack
_unpack_double = struct.Struct("!d").unpack_from


def list_header(count: int) -> bytes:
    """The prefix and type byte that open a list of ``count`` elements."""
    return LIST_HEAD[count] if count < _CACHED else encode_b128(count) + b"\x80"


def encode_int(value: int) -> bytes:
    """One banana integer element; ``EncodeError`` past PB's ±(2**448-1)."""
    if 0 <= value < _CACHED:
        return INT_BYTES[value]
    if 0 <= value < 1 << 14:  # request and cache ids of long-lived connections: no loop
        return (value & 0x7F | (value & 0x3F80) << 1 | 0x810000).to_bytes(3, "little")
    if 0 <= value < 1 << 21:  # the digits, low first, and the type byte, as one int
        return (value & 0x7F | (value & 0x3F80) << 1 | (value & 0x1FC000) << 2
                | 0x81000000).to_bytes(4, "little")
    if value >= 0:
        if value > MAX_INT:
            raise EncodeError(f"int is too large to send (PB limit is ±(2**448-1)): {value}")
        return encode_b128(value) + (b"\x81" if value < _INT_SPLIT else b"\x85")
    mag = -value
    if mag > MAX_INT:
        raise EncodeError(f"int is too small to send (PB limit is ±(2**448-1)): {value}")
    return encode_b128(mag) + (b"\x83" if mag <= _INT_SPLIT else b"\x86")


def encode_string(value: bytes, vocab: dict[bytes, bytes]) -> bytes:
    """One banana string element (a vocabulary code if ``vocab`` has the word)."""
    code = vocab.get(value)
    if code is not None:
        return code
    n = len(value)
    if n > SIZE_LIMIT:
        raise EncodeError(f"byte string is too long to send ({n} > {SIZE_LIMIT} bytes): "
                          "split it into smaller pieces")
    return (STRING_HEAD[n] if n < _CACHED else encode_b128(n) + b"\x82") + value


def _encode(obj: Any, out: bytearray, vocab: dict[bytes, bytes], depth: int = 1) -> None:
    t = type(obj)
    if t is list or t is tuple:
        if depth > MAX_DEPTH:
            raise EncodeError(f"lists nested deeper than {MAX_DEPTH}: a PB peer would refuse it")
        n = len(obj)
        if n < _CACHED:
            out += LIST_HEAD[n]
        elif n > SIZE_LIMIT:
            raise EncodeError(f"list is too long to send ({n} > {SIZE_LIMIT} elements): "
                              "split it into smaller pieces")
        else:
            out += encode_b128(n) + b"\x80"
        for item in obj:
            ti = type(item)
            if ti is bytes:
                code = vocab.get(item)
                if code is not None:
                    out += code
                else:
                    m = len(item)
                    if m < _CACHED:
                        out += STRING_HEAD[m]
                        out += item
                    else:
                        out += encode_string(item, vocab)
            elif ti is int and 0 <= item < _CACHED:
                out += INT_BYTES[item]
            else:
                _encode(item, out, vocab, depth + 1)
    elif t is bytes:
        out += encode_string(obj, vocab)
    elif t is int or t is bool:
        out += encode_int(int(obj))
    elif t is float:
        out.append(FLOAT)
        out += _pack_double(obj)
    elif isinstance(obj, (list, tuple)):
        _encode(list(obj), out, vocab, depth)
    elif isinstance(obj, bool):
        out += encode_int(int(obj))
    else:
        raise EncodeError(f"Banana cannot send {t.__module__}.{t.__qualname__} objects: {obj!r:.80}")


def encode(sexp: Any, *, vocab: bool = True) -> bytes:
    """Encode one s-expression (nested lists of int, float, bytes) to bytes.

    With ``vocab`` (dialect ``pb``) vocabulary words become two-byte symbols.
    Raises ``EncodeError`` for any other type or a value past PB's limits;
    nothing partial is ever returned.
    """
    out = bytearray()
    _encode(sexp, out, VOCAB_CODES if vocab else NO_VOCAB)
    return bytes(out)


class Decoder:
    """Streaming banana decoder: ``feed(bytes)`` returns complete expressions.

    Limits are per decoder and checked before allocating: ``size_limit``
    (elements per list, bytes per string), ``prefix_limit`` (bytes of one
    prefix) and ``max_depth`` (list nesting) as each element header arrives;
    ``max_message_size`` (bytes of one top-level expression) and
    ``max_items`` (elements in one expression) as each piece of data is fed.
    Any violation or malformed input raises ``BananaError``; the decoder then
    stays failed.
    """

    def __init__(self, *, vocab: bool = False, size_limit: int = SIZE_LIMIT,
                 prefix_limit: int = PREFIX_LIMIT, max_depth: int = MAX_DEPTH,
                 max_message_size: int = MAX_MESSAGE_SIZE, max_items: int = MAX_ITEMS,
                 fast: Any = None) -> None:
        self.vocab = vocab
        #: Optional ``fast(buf, pos, n, vocab, size_limit, max_items)`` tried at the
        #: start of each expression: ``(expression, end)``, or ``None`` to decline.
        self.fast = fast
        self.size_limit = size_limit
        self.prefix_limit = prefix_limit
        self.max_depth = max_depth
        self.max_message_size = max_message_size
        self.max_items = max_items
        self._rest = b""                   # bytes of an element not complete yet
        self._rest_at = 0                  # where in _rest they start (after a limit)
        self._chunks: list[Any] = []       # pieces of a long string element still arriving
        self._have = 0                     # bytes in _chunks
        self._need = 0                     # bytes needed before reading on
        self._body_at = 0                  # where the string's body starts in _chunks[0]
        self._cur: list[Any] | None = None  # innermost list being filled
        self._remaining = 0                # elements _cur still expects
        self._stack: list[tuple[list[Any], int]] = []  # enclosing lists
        self._items = 0                    # elements in the current expression
        self._size = 0                     # bytes of the current expression already read
        self._failed: BananaError | None = None

    def _fail(self, message: str) -> BananaError:
        self._failed = BananaError(message)
        self._rest = b""
        self._chunks = []
        self._cur = None
        self._stack = []
        return self._failed

    def _gathered_string(self) -> tuple[bytes, bytes]:
        """The long string the gathered pieces complete, and the bytes after it.

        The body is joined straight from the pieces: one copy, not a join of
        everything and then a slice of it.
        """
        chunks, self._chunks = self._chunks, []
        past = self._have - self._need  # bytes of the last piece after the string
        self._have = 0
        last = chunks[-1]
        cut = len(last) - past
        chunks[-1] = memoryview(last)[:cut]
        chunks[0] = memoryview(chunks[0])[self._body_at:]
        self._size += self._need  # the whole string element belongs to this expression
        return b"".join(chunks), last[cut:]

    @property
    def buffered(self) -> int:
        """Bytes held for an element that is not complete yet."""
        return len(self._rest) - self._rest_at + self._have

    @property
    def in_expression(self) -> bool:
        """Whether part of an expression has been read but not finished."""
        return self._cur is not None or bool(self._rest) or bool(self._have)

    def feed(self, data: bytes, limit: int | None = None) -> list[Any]:
        """Add ``data``; return every top-level expression now complete.

        With ``limit``, stop after that many expressions and keep the rest
        buffered for the next call (``feed(b"")`` continues).
        """
        if self._failed is not None:
            raise BananaError(f"decoder already failed: {self._failed}")
        start = 0
        ready = False  # whether ``item`` holds a long string the pieces just completed
        item: Any = None
        if self._chunks:
            self._chunks.append(bytes(data))
            self._have += len(data)
            if self._have < self._need:
                if self._size + self._have > self.max_message_size:
                    raise self._fail(f"message is over the {self.max_message_size}-byte limit")
                return []
            item, buf = self._gathered_string()
            ready = True
        elif self._rest:
            # After a limit, what is left is read from where it stopped, not copied.
            if data:
                buf = self._rest[self._rest_at:] + data
            else:
                buf, start = self._rest, self._rest_at
        else:
            buf = bytes(data)
        self._rest = b""
        self._rest_at = 0
        self._need = 0  # set again below if a string body is still arriving
        n = len(buf)
        pos = start
        mark = start  # where the current expression started in buf
        out: list[Any] = []
        cur = self._cur
        remaining = self._remaining
        stack = self._stack
        items = self._items
        size_limit = self.size_limit
        vocab = VOCAB if self.vocab else None
        fast = self.fast
        while pos < n or ready:
            if ready:  # deliver the string first, then read what came after it
                ready = False
            else:
                if fast is not None and cur is None:
                    found = fast(buf, pos, n, vocab, size_limit, self.max_items)
                    if found is not None and found[1] - pos <= self.max_message_size:
                        out.append(found[0])
                        pos = mark = found[1]
                        items = 0
                        if limit is not None and len(out) >= limit:
                            break
                        continue
                b0 = buf[pos]
                if b0 >= 0x80:
                    value, typ, start = 0, b0, pos + 1
                elif pos + 1 < n and buf[pos + 1] >= 0x80:
                    value, typ, start = b0, buf[pos + 1], pos + 2
                else:
                    end = pos + 1
                    stop = min(n, pos + self.prefix_limit + 1)
                    while end < stop and buf[end] < 0x80:
                        end += 1
                    if end - pos > self.prefix_limit:
                        raise self._fail(f"prefix longer than {self.prefix_limit} bytes: "
                                         "the peer is not speaking banana")
                    if end >= n:
                        break  # prefix not complete yet
                    value = 0
                    for i in range(end - 1, pos - 1, -1):
                        value = (value << 7) | buf[i]
                    typ = buf[end]
                    start = end + 1
                if typ == STRING:
                    if value > size_limit:
                        raise self._fail(f"string of {value} bytes is over the {size_limit}-byte "
                                         "limit (Security precaution: string too long)")
                    stop = start + value
                    if stop > n:
                        self._need = stop - pos
                        self._body_at = start - pos
                        break  # body still arriving
                    item = buf[start:stop]
                elif typ == LIST:
                    if value > size_limit:
                        raise self._fail(f"list of {value} elements is over the {size_limit}-element "
                                         "limit (Security precaution: list too long)")
                    pos = start
                    if value:
                        if cur is not None:
                            if len(stack) + 1 >= self.max_depth:
                                raise self._fail(f"lists nested deeper than {self.max_depth}")
                            stack.append((cur, remaining))
                        cur = []
                        remaining = value
                        items += 1
                        continue
                    item = []
                    stop = start
                elif typ == INT or typ == LONGINT:
                    item = value
                    stop = start
                elif typ == VOCAB_TYPE:
                    if vocab is None:
                        raise self._fail("vocabulary symbol received before dialect 'pb' was chosen")
                    item = vocab.get(value)
                    if item is None:
                        raise self._fail(f"unknown vocabulary symbol {value}")
                    stop = start
                elif typ == NEG or typ == LONGNEG:
                    item = -value
                    stop = start
                elif typ == FLOAT:
                    stop = start + 8
                    if stop > n:
                        break
                    item = _unpack_double(buf, start)[0]
                else:
                    raise self._fail(f"unknown banana type byte 0x{typ:02x}: "
                                     "the peer is not speaking banana")
                pos = stop
            items += 1
            # Hand the item to its list; every list it completes goes to its parent.
            while cur is not None:
                cur.append(item)
                remaining -= 1
                if remaining:
                    break
                item = cur
                if stack:
                    cur, remaining = stack.pop()
                else:
                    cur = None
            else:
                out.append(item)
                if items > self.max_items:
                    raise self._fail(f"message has more than {self.max_items} elements")
                if self._size + pos - mark > self.max_message_size:
                    raise self._fail(f"message is over the {self.max_message_size}-byte limit")
                items = 0
                self._size = 0
                mark = pos
                if limit is not None and len(out) >= limit:
                    break
        self._cur = cur
        self._remaining = remaining
        self._items = items
        if items > self.max_items:
            raise self._fail(f"message has more than {self.max_items} elements")
        if limit is not None and len(out) >= limit and pos < n:
            self._rest, self._rest_at = buf, pos  # more expressions may be waiting in it
            return out
        self._size += n - mark
        if self._size > self.max_message_size:
            raise self._fail(f"message is over the {self.max_message_size}-byte limit")
        self._size -= n - pos  # the unread tail is counted again when it is read
        if pos < n and self._need > n - pos:
            # a string body is still arriving: gather pieces until _need bytes are in
            self._chunks = [memoryview(buf)[pos:]]
            self._have = n - pos
        elif pos < n:
            self._rest = buf[pos:]
        return out


def decode(data: bytes, *, vocab: bool = True) -> Any:
    """Decode exactly one complete expression; ``BananaError`` otherwise."""
    decoder = Decoder(vocab=vocab)
    found = decoder.feed(data)
    if len(found) != 1 or decoder.in_expression:
        raise BananaError(f"expected exactly one complete banana expression in {len(data)} bytes")
    return found[0]


def choose_dialect(offered: Any, known: tuple[bytes, ...] = DIALECTS) -> bytes | None:
    """As connector: the first dialect in the acceptor's list we also know."""
    if type(offered) is not list:
        return None
    for dialect in offered:
        if dialect in known:
            return dialect
    return None
