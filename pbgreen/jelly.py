"""Jelly: Python object graphs to and from s-expressions.

How it works. ``jelly`` walks a value once and appends the s-expression of
every part into its parent's list (``Jellier.into``). Containers are
remembered by ``id`` together with the place their s-expression was put; when
one is met a second time its first place is wrapped, after the fact, as
``[b'reference', n, ...]`` and the later places get ``[b'dereference', n]``.
So numbers are given in the order objects are first met *again*, as Twisted
does, and cycles are only dereferences inside their own reference.

``unjelly`` (in ``_unjelly``, re-exported here) rebuilds values; which
classes may pass is ``_security``'s business.

Security: nothing is ever imported. An instance is sent only if its class is
a flavor (``Jellyable``) or registered, and accepted only if its tag is
registered with ``setUnjellyableForClass``; anything else is
``InsecureJelly``. References to live objects (``remote``, ``local``, caches)
go through the *context* handed in per call; jelly never sees a broker.
"""


from __future__ import annotations

import datetime
import decimal
import types
from typing import Any, Callable

from ._security import (SecurityOptions, globalSecurity, setUnjellyableFactoryForClass,
                        setUnjellyableForClass, setUnjellyableForClassTree)
from ._unjelly import Unjellier, Unpersistable, find_references, set_state, unjelly
from .errors import InsecureJelly, qual

__all__ = ["jelly", "unjelly", "Jellyable", "Jellier", "Unjellier", "SecurityOptions",
           "globalSecurity", "setUnjellyableForClass", "setUnjellyableForClassTree",
           "setUnjellyableFactoryForClass", "Unpersistable", "InsecureJelly", "find_references",
           "set_state"]

_NONE = [b"None"]
_TRUE = [b"boolean", b"true"]
_FALSE = [b"boolean", b"false"]
_UNICODE = b"unicode"


class Jellyable:
    """Base for objects that serialize themselves (the PB flavors).

    ``jellyFor(jellier)`` returns the object's s-expression; it may call
    ``jellier.into(value, out)`` to serialize parts with identity tracking.
    Set ``_pb_tracked = True`` when the same object twice in one message must
    arrive as one object (copies and caches).
    """

    __slots__ = ()
    _pb_tracked = False

    def jellyFor(self, jellier: "Jellier") -> list[Any]:  # pragma: no cover - abstract
        raise NotImplementedError



# --------------------------------------------------------------------------------------
# Jelly


class Jellier:
    """One serialization: identity is kept within it, and only within it."""

    __slots__ = ("context", "perspective", "security", "_memo", "_keep", "_next_ref")

    def __init__(self, context: Any = None, perspective: Any = None,
                 security: SecurityOptions | None = None) -> None:
        self.context = context
        self.perspective = perspective
        self.security = security or (context.security if context is not None else globalSecurity)
        self._memo: dict[int, list[Any]] = {}
        self._keep: list[Any] = []
        self._next_ref = 1

    def jelly(self, obj: Any) -> Any:
        """The s-expression of ``obj``."""
        holder: list[Any] = []
        try:
            self.into(obj, holder)
        except RecursionError:
            raise InsecureJelly("value is nested too deeply to send") from None
        return holder[0]

    def _seen(self, entry: list[Any], out: list[Any]) -> None:
        refid = entry[2]
        if refid is None:
            refid = entry[2] = self._next_ref
            self._next_ref += 1
            parent, index = entry[0], entry[1]
            parent[index] = [b"reference", refid, parent[index]]
        out.append([b"dereference", refid])

    def into(self, obj: Any, out: list[Any]) -> None:
        """Append the s-expression of ``obj`` to ``out``."""
        t = type(obj)
        if t is bytes or t is int or t is float:
            out.append(obj)
            return
        if t is str:
            out.append([_UNICODE, obj.encode("utf-8")])
            return
        if obj is None:
            out.append(_NONE)
            return
        if t is bool:
            out.append(_TRUE if obj else _FALSE)
            return
        memo = self._memo
        if t is list or t is dict or t is tuple or t is set or t is frozenset:
            entry = memo.get(id(obj))
            if entry is not None:
                self._seen(entry, out)
                return
            memo[id(obj)] = [out, len(out), None]
            into = self.into
            if t is dict:
                node = [b"dictionary"]
                out.append(node)
                for k, v in obj.items():
                    tk = type(k)
                    tv = type(v)
                    if tk is str:
                        key: Any = [_UNICODE, k.encode("utf-8")]
                    elif tk is int or tk is bytes:
                        key = k
                    else:
                        pair: list[Any] = []
                        into(k, pair)
                        into(v, pair)
                        node.append(pair)
                        continue
                    if tv is int or tv is bytes or tv is float:
                        node.append([key, v])
                    elif tv is str:
                        node.append([key, [_UNICODE, v.encode("utf-8")]])
                    else:
                        pair = [key]
                        into(v, pair)
                        node.append(pair)
                return
            node = [b"list" if t is list else b"tuple" if t is tuple
                    else b"set" if t is set else b"frozenset"]
            out.append(node)
            append = node.append
            for item in obj:
                ti = type(item)
                if ti is int or ti is bytes or ti is float:
                    append(item)
                elif ti is str:
                    append([_UNICODE, item.encode("utf-8")])
                else:
                    into(item, node)
            return
        if isinstance(obj, Jellyable):
            if obj._pb_tracked:
                self._tracked(obj, out, obj.jellyFor)  # jellyFor(self)
            else:
                out.append(obj.jellyFor(self))
            return
        simple = _SIMPLE_JELLY.get(t)
        if simple is not None:
            out.append(simple(obj))
            return
        if self.security.isSendable(t):
            self._tracked(obj, out, lambda jellier: jellier._plain_instance(obj))
            return
        raise InsecureJelly(_refusal_to_send(obj))

    def _tracked(self, obj: Any, out: list[Any], build: Callable[["Jellier"], Any]) -> None:
        """Serialize an instance whose identity must survive (met twice: one object)."""
        entry = self._memo.get(id(obj))
        if entry is not None:
            self._seen(entry, out)
            return
        self._keep.append(obj)
        index = len(out)
        self._memo[id(obj)] = [out, index, None]
        out.append(None)  # its place, in case it is met again while being built
        node = build(self)
        current = out[index]
        if current is None:
            out[index] = node
        else:  # met again while being built: already wrapped as a reference
            current[2] = node

    def _plain_instance(self, obj: Any) -> list[Any]:
        getstate = getattr(obj, "__getstate__", None)
        state = getstate() if getstate is not None else obj.__dict__
        self._keep.append(state)
        node = [qual(type(obj)).encode()]
        self.into(state, node)
        return node


def _refusal_to_send(obj: Any) -> str:
    t = type(obj)
    name = qual(t)
    if isinstance(obj, types.GeneratorType):
        return (f"cannot send {name} {obj!r:.60}: generators never cross the wire; to send "
                "what one yields page by page, decorate the remote method with "
                "@pbgreen.util.paged and read it with util.page_iter or util.getAllPages")
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                        types.ModuleType, type)):
        return (f"cannot send {name} {obj!r:.60}: functions, methods, classes and modules "
                "never cross the wire; send data, or a pb.Referenceable")
    if isinstance(obj, BaseException):
        return (f"cannot send the exception {name} {obj!r:.60} as a value: wrap it as "
                "pb.CopyableFailure(exc) (the peer receives a pb.CopiedFailure)")
    return (f"cannot send an instance of {name}: make it a pb.Copyable or pb.Referenceable, "
            f"or allow it with pb.setUnjellyableForClass({name!r}, ...)")


def _jelly_datetime(value: datetime.datetime) -> list[Any]:
    if value.tzinfo is not None:
        raise InsecureJelly("cannot send a timezone-aware datetime: PB has no timezone field; "
                            "convert it to UTC and send it naive")
    return [b"datetime", b"%d %d %d %d %d %d %d" % (value.year, value.month, value.day,
                                                    value.hour, value.minute, value.second,
                                                    value.microsecond)]


def _jelly_time(value: datetime.time) -> list[Any]:
    if value.tzinfo is not None:
        raise InsecureJelly("cannot send a timezone-aware time: PB has no timezone field")
    return [b"time", b"%d %d %d %d" % (value.hour, value.minute, value.second, value.microsecond)]


def _jelly_decimal(value: decimal.Decimal) -> list[Any]:
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise InsecureJelly(f"cannot send Decimal {value}: PB has no form for NaN or Infinity")
    number = int("".join(map(str, digits)) or "0")
    return [b"decimal", -number if sign else number, exponent]


_SIMPLE_JELLY: dict[type, Callable[[Any], list[Any]]] = {
    datetime.datetime: _jelly_datetime,
    datetime.date: lambda v: [b"date", b"%d %d %d" % (v.year, v.month, v.day)],
    datetime.time: _jelly_time,
    datetime.timedelta: lambda v: [b"timedelta", b"%d %d %d" % (v.days, v.seconds, v.microseconds)],
    decimal.Decimal: _jelly_decimal,
}


def jelly(obj: Any, context: Any = None, perspective: Any = None,
          security: SecurityOptions | None = None) -> Any:
    """Serialize ``obj`` to an s-expression; ``InsecureJelly`` if it cannot be sent."""
    return Jellier(context, perspective, security).jelly(obj)
