"""Plain data straight to and from banana bytes, in pure Python (``plaincodec`` picks this or C).

How it works. Most values crossing a PB connection are trees of basic types
(str, bytes, int, float, None, bool, list, tuple, dict, set, frozenset).
For those, ``dumps`` writes banana bytes straight from the objects and
``loads`` builds the objects straight from the bytes, skipping the
intermediate s-expression that ``jelly`` + ``banana`` go through.

Both give up by raising ``Fallback`` as soon as they meet anything else: a
flavor or registered instance, a container seen twice (identity and cycles
need ``reference``/``dereference``), a tag other than the plain ones, a
prefix longer than two bytes, a value near a limit, or bytes that are not
complete. The caller then uses the general path on the same input, which
gives the same result or raises the proper error. So the fast path never
decides anything the general path would decide differently; the tests check
that both agree.

``_ccodec.c`` is the same codec compiled; ``plaincodec`` uses it when it is
built. It hands anything it does not take natively (an unusual argument
type, a dialect other than ``pb`` or ``none``, an error to report) to the
function here, so the two give the same bytes, values and exceptions.
"""

from __future__ import annotations

import struct
from typing import Any

from .banana import (INT_BYTES, LIST_HEAD, NO_VOCAB, STRING_HEAD, VOCAB_CODES, PREFIX_LIMIT,
                     SIZE_LIMIT, EncodeError, encode_b128, encode_int, encode_string, list_header)

__all__ = ["Fallback", "Built", "dumps", "dumps_values", "loads"]

_CACHED = len(INT_BYTES)
_FLOAT = b"\x84"
_pack_double = struct.Struct("!d").pack
_unpack_double = struct.Struct("!d").unpack_from
_DEPTH = 64  # deeper values take the general path (it checks the real limits)


class Fallback(Exception):
    """The fast path does not handle this value; use the general one."""



# -------------------------------------------------------------------------- encoding


def _word(word: bytes, vocab: dict[bytes, bytes]) -> bytes:
    code = vocab.get(word)
    if code is not None:
        return code
    try:
        return encode_string(word, vocab)
    except EncodeError:
        raise Fallback from None


def _number(value: int) -> bytes:
    try:
        return encode_int(value)
    except EncodeError:
        raise Fallback from None


def _head(count: int) -> bytes:
    if count < _CACHED:
        return LIST_HEAD[count]
    if count > SIZE_LIMIT:
        raise Fallback
    return encode_b128(count) + b"\x80"


class _Tags:
    """The encoded tags of one dialect, built once."""

    def __init__(self, vocab: dict[bytes, bytes]) -> None:
        self.vocab = vocab
        self.UNICODE = LIST_HEAD[2] + _word(b"unicode", vocab)
        self.LIST = _word(b"list", vocab)
        self.TUPLE = _word(b"tuple", vocab)
        self.DICT = _word(b"dictionary", vocab)
        self.SET = _word(b"set", vocab)
        self.FROZENSET = _word(b"frozenset", vocab)
        self.NONE = LIST_HEAD[1] + _word(b"None", vocab)
        boolean = LIST_HEAD[2] + _word(b"boolean", vocab)
        self.TRUE = boolean + _word(b"true", vocab)
        self.FALSE = boolean + _word(b"false", vocab)


_TAGS = {id(VOCAB_CODES): _Tags(VOCAB_CODES), id(NO_VOCAB): _Tags(NO_VOCAB)}


class _Dumper:
    __slots__ = ("out", "seen", "vocab", "tags")

    def __init__(self, vocab: dict[bytes, bytes]) -> None:
        self.out: list[bytes] = []
        self.seen: set[int] = set()
        self.vocab = vocab
        self.tags = _TAGS.get(id(vocab)) or _Tags(vocab)

    def value(self, obj: Any, depth: int) -> None:
        out = self.out
        t = type(obj)
        if t is str:
            data = obj.encode("utf-8")
            out.append(self.tags.UNICODE)
            out.append(self.vocab.get(data) or (STRING_HEAD[len(data)] + data
                                                if len(data) < _CACHED else _word(data, self.vocab)))
        elif t is int:
            out.append(INT_BYTES[obj] if 0 <= obj < _CACHED else _number(obj))
        elif t is bytes:
            out.append(self.vocab.get(obj) or (STRING_HEAD[len(obj)] + obj if len(obj) < _CACHED
                                               else _word(obj, self.vocab)))
        elif t is float:
            out.append(_FLOAT + _pack_double(obj))
        elif obj is None:
            out.append(self.tags.NONE)
        elif t is bool:
            out.append(self.tags.TRUE if obj else self.tags.FALSE)
        elif t is list or t is tuple or t is set or t is frozenset or t is dict:
            if id(obj) in self.seen or depth > _DEPTH:
                raise Fallback
            self.seen.add(id(obj))
            out.append(_head(len(obj) + 1))
            tags = self.tags
            if t is dict:
                out.append(tags.DICT)
                pair = LIST_HEAD[2]
                for key, item in obj.items():
                    out.append(pair)
                    self.value(key, depth + 2)
                    self.value(item, depth + 2)
                return
            out.append(tags.LIST if t is list else tags.TUPLE if t is tuple
                       else tags.SET if t is set else tags.FROZENSET)
            value = self.value
            for item in obj:
                value(item, depth + 1)
        else:
            raise Fallback


def dumps(head: list[Any], values: tuple[Any, ...], vocab: dict[bytes, bytes]) -> bytes:
    """Banana bytes of ``head + [jelly(v) for v in values]``, or ``Fallback``.

    ``head`` holds the message's plain fields (bytes and ints).
    """
    out = [LIST_HEAD[len(head) + len(values)]]
    for field in head:
        if type(field) is bytes:
            out.append(_word(field, vocab))
        elif type(field) is int:
            out.append(INT_BYTES[field] if 0 <= field < _CACHED else _number(field))
        else:
            raise Fallback
    out.append(dumps_values(values, vocab))
    return b"".join(out)


def dumps_head(head: list[Any], more: int, vocab: dict[bytes, bytes]) -> bytes:
    """Banana bytes that open a list of ``len(head) + more`` and hold ``head``'s fields.

    ``head`` holds plain fields (bytes and ints); the ``more`` values follow
    (``dumps_values``). Raises ``EncodeError`` for a field banana cannot send.
    """
    out = [list_header(len(head) + more)]
    for field in head:
        if type(field) is bytes:
            out.append(vocab.get(field) or encode_string(field, vocab))
        else:
            out.append(INT_BYTES[field] if type(field) is int and 0 <= field < _CACHED
                       else encode_int(field))
    return b"".join(out)


def dumps_values(values: tuple[Any, ...], vocab: dict[bytes, bytes]) -> bytes:
    """Banana bytes of ``jelly(v)`` for each value, one after another, or ``Fallback``."""
    dumper = _Dumper(vocab)
    for value in values:
        dumper.seen.clear()  # each value is jellied on its own, as Twisted does
        dumper.value(value, 1)
    return b"".join(dumper.out)


# -------------------------------------------------------------------------- decoding


_UNICODE_HEAD = b"\x07\x82unicode"  # the tag of ['unicode', ...] ('unicode' is no vocabulary word)
_CONTAINERS = {b"list": list, b"tuple": tuple, b"set": set, b"frozenset": frozenset}


class _Loader:
    """Recursive descent over one buffer; any surprise raises Fallback.

    Running off the end of the buffer raises ``IndexError`` (or Fallback for a
    string body): the expression is not complete yet.
    """

    __slots__ = ("buf", "n", "vocab", "size_limit")

    def __init__(self, buf: bytes, n: int, vocab: dict[int, bytes] | None,
                 size_limit: int) -> None:
        self.buf = buf
        self.n = n
        self.vocab = vocab
        self.size_limit = size_limit

    def header(self, pos: int) -> tuple[int, int, int]:
        """(value, type byte, position after) of the element at ``pos``."""
        buf = self.buf
        b0 = buf[pos]
        if b0 >= 0x80:
            return 0, b0, pos + 1
        b1 = buf[pos + 1]
        if b1 >= 0x80:
            return b0, b1, pos + 2
        end = pos + 2
        while buf[end] < 0x80:  # IndexError past the end: not complete yet
            end += 1
            if end - pos > PREFIX_LIMIT:
                raise Fallback
        value = 0
        for i in range(end - 1, pos - 1, -1):
            value = (value << 7) | buf[i]
        if value > self.size_limit and buf[end] in (0x80, 0x82):
            raise Fallback  # the general path refuses it properly
        return value, buf[end], end + 1

    def word(self, pos: int) -> tuple[bytes, int]:
        """A byte string (STRING or VOCAB) at ``pos``."""
        value, typ, pos = self.header(pos)
        if typ == 0x82:
            end = pos + value
            if end > self.n:
                raise Fallback
            return self.buf[pos:end], end
        if typ == 0x87 and self.vocab is not None:
            word = self.vocab.get(value)
            if word is not None:
                return word, pos
        raise Fallback

    def value(self, pos: int, depth: int) -> tuple[Any, int]:
        """The jelly value encoded at ``pos``, and the position after it."""
        buf = self.buf
        b0 = buf[pos]
        if b0 >= 0x80:
            value, typ, pos = 0, b0, pos + 1
        else:
            typ = buf[pos + 1]
            if typ >= 0x80:
                value, pos = b0, pos + 2
            else:
                value, typ, pos = self.header(pos)
        if typ == 0x82:
            end = pos + value
            if end > self.n:
                raise Fallback
            return buf[pos:end], end
        if typ == 0x80:
            if value == 2 and buf.startswith(_UNICODE_HEAD, pos):
                length = buf[pos + 9]
                if length < 0x80 and buf[pos + 10] == 0x82:
                    end = pos + 11 + length
                    if end > self.n:
                        raise Fallback
                    try:
                        return buf[pos + 11:end].decode("utf-8"), end
                    except UnicodeDecodeError:
                        raise Fallback from None
            return self.tagged(value, pos, depth)
        if typ == 0x81 or typ == 0x85:
            return value, pos
        if typ == 0x87:
            if self.vocab is not None:
                word = self.vocab.get(value)
                if word is not None:
                    return word, pos
            raise Fallback
        if typ == 0x83 or typ == 0x86:
            return -value, pos
        if typ == 0x84:
            if pos + 8 > self.n:
                raise Fallback
            return _unpack_double(buf, pos)[0], pos + 8
        raise Fallback

    def tagged(self, count: int, pos: int, depth: int) -> tuple[Any, int]:
        if count == 0 or depth > _DEPTH:
            raise Fallback
        tag, pos = self.word(pos)
        value = self.value
        depth += 1
        kind = _CONTAINERS.get(tag)
        if kind is not None:
            items = []
            append = items.append
            for _ in range(count - 1):
                item, pos = value(pos, depth)
                append(item)
            if kind is list:
                return items, pos
            try:
                return kind(items), pos
            except TypeError:
                raise Fallback from None
        if tag == b"dictionary":
            result = {}
            buf = self.buf
            for _ in range(count - 1):
                if buf[pos] != 2 or buf[pos + 1] != 0x80:  # each entry is a 2-list
                    raise Fallback
                key, pos = value(pos + 2, depth)
                item, pos = value(pos, depth)
                try:
                    result[key] = item
                except TypeError:
                    raise Fallback from None
            return result, pos
        if tag == b"unicode" and count == 2:
            text, pos = self.word(pos)
            try:
                return text.decode("utf-8"), pos
            except UnicodeDecodeError:
                raise Fallback from None
        if tag == b"None" and count == 1:
            return None, pos
        if tag == b"boolean" and count == 2:
            word, pos = self.word(pos)
            if word == b"true":
                return True, pos
            if word == b"false":
                return False, pos
        raise Fallback


class Built:
    """A payload the fast path already rebuilt (no references inside)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


# Messages whose payloads the fast path rebuilds: command -> (plain fields, payloads).
_MESSAGES = {b"message": (4, 2), b"cachemessage": (4, 2), b"answer": (1, 1)}


def loads(buf: bytes, pos: int, n: int, vocab: dict[int, bytes] | None,
          size_limit: int, max_items: int) -> tuple[list[Any], int] | None:
    """One PB message at ``buf[pos:n]``: ``(message, end)``, or ``None`` to decline.

    Only ``message``, ``cachemessage`` and ``answer`` are taken; their
    payloads come back as ``Built`` values. ``banana.Decoder`` calls this as
    its ``fast`` hook at the start of each top-level expression and decodes
    the usual way whenever it declines.
    """
    if size_limit < 2 ** 14:  # the one- and two-byte shortcuts below assume it
        return None
    loader = _Loader(buf, n, vocab, size_limit)
    start = pos
    try:
        count, typ, pos = loader.header(pos)
        if typ != 0x80:
            return None
        command, pos = loader.word(pos)
        shape = _MESSAGES.get(command)
        if shape is None or count != 1 + shape[0] + shape[1]:
            return None
        message: list[Any] = [command]
        for _ in range(shape[0]):
            value, typ, after = loader.header(pos)
            if typ == 0x81:
                message.append(value)
                pos = after
            else:
                word, pos = loader.word(pos)
                message.append(word)
        for _ in range(shape[1]):
            value, pos = loader.value(pos, 1)
            message.append(Built(value))
    except (Fallback, IndexError):  # IndexError: ran off the end, not complete yet
        return None
    if pos - start > max_items:  # every element takes at least one byte
        return None
    return message, pos
