"""One encoding for a cache update that goes to many observers.

How it works. A ``Cacheable``'s setter usually runs
``observer.callRemote("set", value)`` for each of its N observers with the
same ``value``. Each of those messages is ``['cachemessage', request id,
cache id, name, 0, args, kwargs]``: only the request id and the cache id
belong to one connection. Everything from the method name on is the same
bytes for every observer that speaks the same dialect (the ``pb`` and
``pbgreen`` dialects use the vocabulary, ``none`` does not).

``shared_tail`` keeps one entry: the last update's name, its argument
objects, and its encoded tail per vocabulary. The next update whose name is
equal and whose arguments are *the same objects* (``is``) gets the bytes
already made; the setter's loop then costs a lookup per observer instead of
an encoding.

Sharing is only safe when the bytes cannot differ between connections or
between two moments:

* only *immutable plain data* is shared: ``None``, ``bool``, ``int``,
  ``float``, ``str``, ``bytes`` and tuples of these. A list or dict could be
  changed between two observers' calls (each must get what it held at its
  own call), and a reference, ``Copyable`` or ``Cacheable`` is jellied with
  the connection's own ids and perspective. Anything else returns ``None``
  and the caller encodes it for that connection, as before.
* the entry holds strong references to the argument objects, so an ``id``
  is never reused while it is remembered; the entry is a tuple replaced in
  one step, so threads with their own hubs never see half of one.

A second entry, ``_single``, is the same update when it has one argument
and no keywords (what setters usually send): checking it is a few steps.
Each entry is right for its own key whatever the other holds, so the two
need not be replaced together.
"""

from __future__ import annotations

from operator import is_
from typing import Any

from . import plaincodec
from .banana import INT_BYTES, VOCAB_CODES, EncodeError, encode_string

__all__ = ["shared_tail", "UPDATE_HEADS"]

_ATOMS = frozenset({type(None), bool, int, float, str, bytes})
_TUPLE_DEPTH = 8  # nested tuples deeper than this are encoded per connection
_MISSING = object()

#: (name, args, kwargs, [tail without the vocabulary, tail with it]) of the last
#: shareable update; a tail is ``None`` until a connection of that dialect asked.
_last: tuple[str, tuple[Any, ...], dict[str, Any], list[bytes | None]] | None = None
#: The same entry as (name, argument, tails) when it has one argument and no
#: keywords (most updates): the check for it is the shortest.
_single: tuple[str, Any, list[bytes | None]] | None = None


def _immutable(value: Any, depth: int = 0) -> bool:
    kind = type(value)
    if kind in _ATOMS:
        return True
    if kind is tuple and depth < _TUPLE_DEPTH:
        return all(_immutable(item, depth + 1) for item in value)
    return False


def shared_tail(name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                vocab: dict[bytes, bytes]) -> bytes | None:
    """The bytes of ``name, 0, args, kwargs`` in an update, shared by every observer.

    ``None`` when the arguments are not immutable plain data: the caller
    then encodes the update for its own connection.
    """
    global _last, _single
    if len(args) == 1 and not kwargs:  # the usual update: decided in a few steps
        single = _single
        if single is not None and args[0] is single[1] and name == single[0]:
            tail = single[2][vocab is VOCAB_CODES]  # as UPDATE_HEADS
            if tail is not None:
                return tail
    last = _last
    if last is not None:
        last_name, last_args, last_kwargs, tails = last
        if len(args) == len(last_args) and len(kwargs) == len(last_kwargs) \
                and (not args or args[0] is last_args[0]) and name == last_name:
            same = len(args) < 2 or all(map(is_, args, last_args))
            if same and kwargs:
                same = all(last_kwargs.get(k, _MISSING) is v for k, v in kwargs.items())
            if same:
                tail = tails[vocab is VOCAB_CODES]  # as UPDATE_HEADS
                if tail is not None:
                    return tail
                tails = list(tails)
            else:
                last = None
        else:
            last = None
    slot = 1 if vocab is VOCAB_CODES else 0  # as UPDATE_HEADS
    if last is None:
        if not (_immutable(args) and all(_immutable(v) for v in kwargs.values())):
            return None
        tails = [None, None]
    try:
        word = name.encode("utf-8")
        tail = (encode_string(word, vocab) + INT_BYTES[0]
                + plaincodec.dumps_values((args, kwargs), vocab))
    except (plaincodec.Fallback, EncodeError, UnicodeEncodeError):
        return None  # the per-connection path encodes it, or explains why it cannot
    tails[slot] = tail
    _last = (name, args, dict(kwargs), tails)
    _single = (name, args[0], tails) if len(args) == 1 and not kwargs else None
    return tail


#: The start of an update's message, without and with the vocabulary.
UPDATE_HEADS = (plaincodec.dumps_head([b"cachemessage"], 6, plaincodec.NO_VOCAB),
                plaincodec.dumps_head([b"cachemessage"], 6, VOCAB_CODES))

