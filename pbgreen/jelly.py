"""Jelly: Python object graphs to and from s-expressions.

How it works. ``jelly`` walks a value once and appends the s-expression of
every part into its parent's list (``Jellier.into``). Containers are
remembered by ``id`` together with the place their s-expression was put; when
one is met a second time its first place is wrapped, after the fact, as
``[b'reference', n, ...]`` and the later places get ``[b'dereference', n]``.
So numbers are given in the order objects are first met *again*, as Twisted
does, and cycles are only dereferences inside their own reference.

``unjelly`` rebuilds depth first. A mutable container is registered under its
reference number as soon as it exists, so a cycle back to it finds it. A
dereference to something not built yet (an enclosing tuple, say) yields an
``_Unresolved`` placeholder that remembers where it was put and is patched
when the object is finished; an immutable container holding placeholders is
built late for the same reason.

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

from .errors import InsecureJelly, qual

__all__ = ["jelly", "unjelly", "Jellyable", "Jellier", "Unjellier", "SecurityOptions",
           "globalSecurity", "setUnjellyableForClass", "setUnjellyableForClassTree",
           "setUnjellyableFactoryForClass", "Unpersistable", "InsecureJelly", "find_references"]

_NONE = [b"None"]
_TRUE = [b"boolean", b"true"]
_FALSE = [b"boolean", b"false"]
_UNICODE = b"unicode"


class Unpersistable:
    """Stands in for a value the sender could not serialize (from a Twisted peer)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unpersistable({self.reason!r})"


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
# Security registry


class SecurityOptions:
    """Which classes may arrive, and as what local class.

    Deny by default: a tag is accepted only when registered here with
    ``setUnjellyableForClass`` (or ``allowInstancesOf``). Brokers without
    options of their own use ``globalSecurity``.
    """

    def __init__(self) -> None:
        self._unjellyables: dict[bytes, Any] = {}
        self._sendable: set[type] = set()

    def setUnjellyableForClass(self, remote: type | str, local: Any) -> None:
        """Accept instances tagged with ``remote``'s name, built as ``local``."""
        name = remote if isinstance(remote, str) else qual(remote)
        self._unjellyables[name.encode()] = local
        if isinstance(local, type):
            self._sendable.add(local)
        if isinstance(remote, type):
            self._sendable.add(remote)

    def setUnjellyableFactoryForClass(self, remote: type | str, factory: Callable[[Any], Any]) -> None:
        """Accept instances tagged with ``remote``'s name, built by ``factory(state)``."""
        name = remote if isinstance(remote, str) else qual(remote)
        self._unjellyables[name.encode()] = _Factory(factory)

    def allowInstancesOf(self, *classes: type) -> None:
        """Accept and send instances of ``classes`` as themselves."""
        for cls in classes:
            self.setUnjellyableForClass(cls, cls)

    def unjellyableFor(self, tag: bytes) -> Any:
        """The local class (or factory) registered for ``tag``, or ``None``."""
        return self._unjellyables.get(tag)

    def isSendable(self, cls: type) -> bool:
        """Whether instances of ``cls`` (not a flavor) may be sent as plain state."""
        return cls in self._sendable


class _Factory:
    __slots__ = ("factory",)

    def __init__(self, factory: Callable[[Any], Any]) -> None:
        self.factory = factory


globalSecurity = SecurityOptions()


def setUnjellyableForClass(remote: type | str, local: Any) -> None:
    """Allow instances of ``remote`` (a class or ``"module.Class"``) in, built as ``local``.

    Registers globally, for every connection that has no security options of
    its own. ``local`` is normally a ``pb.RemoteCopy`` or ``pb.RemoteCache``
    subclass; it is instantiated without calling ``__init__``.
    """
    globalSecurity.setUnjellyableForClass(remote, local)


def setUnjellyableFactoryForClass(remote: type | str, factory: Callable[[Any], Any]) -> None:
    """Allow instances of ``remote`` in, built by ``factory(state)``."""
    globalSecurity.setUnjellyableFactoryForClass(remote, factory)


def setUnjellyableForClassTree(module: types.ModuleType, baseClass: type,
                               prefix: str | None = None) -> None:
    """Register every class in ``module`` that is ``baseClass`` or a subclass of it.

    As in Twisted: each module attribute ``name`` holding such a class is
    accepted under ``prefix + "." + name`` (``prefix`` defaults to the
    module's name) and built as that class.
    """
    if prefix is None:
        prefix = module.__name__
    if prefix:
        prefix = prefix + "."
    for name in dir(module):
        obj = getattr(module, name)
        if isinstance(obj, type) and issubclass(obj, baseClass):
            setUnjellyableForClass(prefix + name, obj)


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
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                        types.ModuleType, type, types.GeneratorType)):
        return (f"cannot send {name} {obj!r:.60}: functions, methods, classes, modules and "
                "generators never cross the wire; send data, or a pb.Referenceable")
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


# --------------------------------------------------------------------------------------
# Unjelly


class _Unresolved:
    """A dereference met before its object was finished; patched later."""

    __slots__ = ("callbacks", "value", "done")

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any], None]] = []
        self.done = False
        self.value: Any = None

    def then(self, callback: Callable[[Any], None]) -> None:
        if self.done:
            callback(self.value)
        else:
            self.callbacks.append(callback)

    def resolve(self, value: Any) -> None:
        self.done = True
        self.value = value
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback(value)


def _setitem(container: Any, key: Any) -> Callable[[Any], None]:
    def set_it(value: Any) -> None:
        container[key] = value
    return set_it


def _malformed(what: str, sexp: Any) -> InsecureJelly:
    return InsecureJelly(f"malformed {what} from the peer: {sexp!r:.120}")


class Unjellier:
    """One deserialization; references are resolved within it."""

    __slots__ = ("context", "perspective", "security", "claimed", "_refs", "_waiting")

    def __init__(self, context: Any = None, perspective: Any = None,
                 security: SecurityOptions | None = None) -> None:
        self.context = context
        self.perspective = perspective
        self.security = security or (context.security if context is not None else globalSecurity)
        #: What the context turned into live handles (it releases those itself).
        self.claimed: list[Any] = []
        self._refs: dict[Any, Any] = {}
        self._waiting: dict[Any, _Unresolved] = {}

    def unjellyFull(self, sexp: Any) -> Any:
        """Rebuild a whole value; every dereference must resolve."""
        try:
            result = self.unjelly(sexp)
        except TypeError as exc:  # a late-resolved member turned out unhashable
            raise InsecureJelly(f"malformed value from the peer: {exc}") from None
        except RecursionError:
            raise InsecureJelly("value from the peer is nested too deeply") from None
        if self._waiting:
            raise InsecureJelly(f"dereference to unknown reference ids {sorted(map(repr, self._waiting))}")
        if type(result) is _Unresolved:
            if not result.done:
                raise InsecureJelly("value never finished building (circular immutable structure)")
            result = result.value
        return result

    def unjelly(self, sexp: Any, refid: Any = None) -> Any:
        """Rebuild one part; may return an ``_Unresolved`` inside a cycle."""
        t = type(sexp)
        if t is not list:
            if t is bytes or t is int or t is float:
                if refid is not None:
                    self._define(refid, sexp)
                return sexp
            raise _malformed("value", sexp)
        if not sexp:
            raise _malformed("empty expression", sexp)
        tag = sexp[0]
        if tag == _UNICODE:
            if len(sexp) != 2 or type(sexp[1]) is not bytes:
                raise _malformed("unicode", sexp)
            try:
                value: Any = sexp[1].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InsecureJelly(f"text that is not UTF-8 from the peer: {exc}") from None
        else:
            handler = _HANDLERS.get(tag) if type(tag) is bytes else None
            if handler is not None:
                return handler(self, sexp, refid)
            if type(tag) is not bytes:
                raise _malformed("tag", sexp)
            value = self._instance(tag, sexp, refid)
            return value
        if refid is not None:
            self._define(refid, value)
        return value

    # -- references

    def _define(self, refid: Any, value: Any) -> None:
        if refid in self._refs and self._refs[refid] is not value:
            raise InsecureJelly(f"reference id {refid!r} defined twice")
        self._refs[refid] = value
        waiting = self._waiting.pop(refid, None)
        if waiting is not None:
            if type(value) is _Unresolved:
                value.then(waiting.resolve)
            else:
                waiting.resolve(value)

    def _reference(self, sexp: list[Any], refid: Any) -> Any:
        if len(sexp) != 3 or type(sexp[1]) not in (int, bytes):
            raise _malformed("reference", sexp)
        inner = sexp[1]
        value = self.unjelly(sexp[2], inner)
        if inner not in self._refs:
            self._define(inner, value)
        if refid is not None:
            self._define(refid, value)
        return value

    def _dereference(self, sexp: list[Any], refid: Any) -> Any:
        if len(sexp) != 2:
            raise _malformed("dereference", sexp)
        key = sexp[1]
        try:
            value = self._refs[key]
        except (KeyError, TypeError):
            pass
        else:
            if type(value) is _Unresolved and value.done:
                return value.value
            return value
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = _Unresolved()
        return waiting

    # -- containers

    def _list(self, sexp: list[Any], refid: Any) -> Any:
        result: list[Any] = []
        if refid is not None:
            self._define(refid, result)
        unjelly = self.unjelly
        for item in sexp[1:]:
            ti = type(item)
            if ti is bytes or ti is int or ti is float:
                result.append(item)
                continue
            value = unjelly(item)
            result.append(value)
            if type(value) is _Unresolved:
                value.then(_setitem(result, len(result) - 1))
        return result

    def _dictionary(self, sexp: list[Any], refid: Any) -> Any:
        result: dict[Any, Any] = {}
        if refid is not None:
            self._define(refid, result)
        unjelly = self.unjelly
        for pair in sexp[1:]:
            if type(pair) is not list or len(pair) != 2:
                raise _malformed("dictionary entry", pair)
            key, value = pair
            if type(key) is list:
                key = unjelly(key)
            tv = type(value)
            if tv is list:
                value = unjelly(value)
            elif not (tv is bytes or tv is int or tv is float):
                raise _malformed("dictionary value", value)
            if type(key) is _Unresolved:
                key.then(self._late_key(result, value))
                continue
            try:
                result[key] = value
            except TypeError:
                raise InsecureJelly(f"unhashable dictionary key from the peer: {key!r:.60}") from None
            if type(value) is _Unresolved:
                value.then(_setitem(result, key))
        return result

    def _late_key(self, result: dict[Any, Any], value: Any) -> Callable[[Any], None]:
        def set_key(key: Any) -> None:
            if type(value) is _Unresolved:
                value.then(lambda v: result.__setitem__(key, v))
            else:
                result[key] = value
        return set_key

    def _immutable(self, sexp: list[Any], refid: Any) -> Any:
        # One Python frame per level (no helper, no comprehension): deep values
        # must not reach the recursion limit before banana's depth limit does.
        build = _IMMUTABLE[sexp[0]]
        items = []
        for item in sexp[1:]:
            if type(item) is list:
                item = self.unjelly(item)
                if type(item) is _Unresolved and item.done:
                    item = item.value
            items.append(item)
        pending = [i for i, item in enumerate(items) if type(item) is _Unresolved]
        if not pending:
            try:
                value = build(items)
            except TypeError:
                raise InsecureJelly(f"unhashable member from the peer in {sexp[0]!r}") from None
            if refid is not None:
                self._define(refid, value)
            return value
        late = _Unresolved()
        count = [len(pending)]

        def fill(index: int) -> Callable[[Any], None]:
            def done(value: Any) -> None:
                items[index] = value
                count[0] -= 1
                if not count[0]:
                    late.resolve(build(items))
            return done

        if refid is not None:
            self._define(refid, late)
        for index in pending:
            items[index].then(fill(index))
        return late

    def _set(self, sexp: list[Any], refid: Any) -> Any:
        result: set[Any] = set()
        if refid is not None:
            self._define(refid, result)
        for item in sexp[1:]:
            value = self.unjelly(item) if type(item) is list else item
            if type(value) is _Unresolved:
                value.then(result.add)
                continue
            try:
                result.add(value)
            except TypeError:
                raise InsecureJelly(f"unhashable set member from the peer: {value!r:.60}") from None
        return result

    # -- scalars with tags

    def _scalar(self, sexp: list[Any], refid: Any) -> Any:
        try:
            value = _SCALARS[sexp[0]](sexp)
        except InsecureJelly:
            raise
        except (ValueError, TypeError, IndexError, KeyError, OverflowError,
                decimal.InvalidOperation) as exc:
            raise _malformed(sexp[0].decode("ascii", "replace"), sexp) from exc
        if refid is not None:
            self._define(refid, value)
        return value

    def _unpersistable(self, sexp: list[Any], refid: Any) -> Any:
        reason = sexp[1] if len(sexp) > 1 else b""
        if type(reason) is list:
            reason = self.unjelly(reason)
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        value = Unpersistable(str(reason))
        if refid is not None:
            self._define(refid, value)
        return value

    def _refused(self, sexp: list[Any], refid: Any) -> Any:
        tag = sexp[0].decode("ascii", "replace")
        what = sexp[1] if len(sexp) > 1 else b""
        if isinstance(what, bytes):
            what = what.decode("utf-8", "replace")
        raise InsecureJelly(f"refused {tag} {what!r:.80}: pbgreen never creates classes, modules "
                            "or functions from the wire; send a pb.Copyable instead")

    def _persistent(self, sexp: list[Any], refid: Any) -> Any:
        return Unpersistable("Persistent callback not found")

    # -- PB references and instances: through the context

    def _context_call(self, name: str, sexp: list[Any], refid: Any) -> Any:
        if self.context is None:
            raise InsecureJelly(f"{sexp[0]!r} needs a PB connection to unjelly")
        if len(sexp) != 2 or type(sexp[1]) not in (int, bytes):
            raise _malformed(sexp[0].decode(), sexp)
        value = getattr(self.context, name)(sexp[1], self)
        if refid is not None:
            self._define(refid, value)
        return value

    def _remote(self, sexp: list[Any], refid: Any) -> Any:
        return self._context_call("unjelly_remote", sexp, refid)

    def _local(self, sexp: list[Any], refid: Any) -> Any:
        return self._context_call("unjelly_local", sexp, refid)

    def _cached(self, sexp: list[Any], refid: Any) -> Any:
        return self._context_call("unjelly_cached", sexp, refid)

    def _lcache(self, sexp: list[Any], refid: Any) -> Any:
        return self._context_call("unjelly_lcache", sexp, refid)

    def _instance(self, tag: bytes, sexp: list[Any], refid: Any) -> Any:
        local = self.security.unjellyableFor(tag)
        if local is None:
            name = tag.decode("utf-8", "replace")
            if b"." not in tag:
                raise InsecureJelly(f"unknown type {name!r} from the peer")
            raise InsecureJelly(f"refused instance of {name!r}: register it with "
                                f"pb.setUnjellyableForClass({name!r}, YourRemoteCopy)")
        if type(local) is _Factory:
            if len(sexp) != 2:
                raise _malformed("instance", sexp)
            value = local.factory(self.unjelly(sexp[1]))
            if refid is not None:
                self._define(refid, value)
            return value
        if len(sexp) == 3 and type(sexp[1]) is int:
            # [tag, cacheID, state]: the first copy of a Cacheable
            if self.context is None:
                raise InsecureJelly("a cache needs a PB connection to unjelly")
            value = self.context.unjelly_cache(local, sexp[1], sexp[2], self)
            if refid is not None:
                self._define(refid, value)
            return value
        if len(sexp) != 2:
            raise _malformed("instance", sexp)
        instance = local.__new__(local)
        if refid is not None:
            self._define(refid, instance)
        state = self.unjelly(sexp[1])
        if type(state) is _Unresolved:
            state.then(lambda s: set_state(instance, s))
        else:
            set_state(instance, state)
        return instance


def set_state(instance: Any, state: Any) -> None:
    """Apply received state: ``setCopyableState``, else ``__setstate__``, else ``__dict__``."""
    if state is None and not hasattr(instance, "setCopyableState"):
        return  # Python 3.11+ sends None for an instance without attributes
    setter = getattr(instance, "setCopyableState", None)
    if setter is not None:
        setter(state)
        return
    setstate = getattr(type(instance), "__setstate__", None)
    if setstate is not None and setstate is not getattr(object, "__setstate__", None):
        instance.__setstate__(state)
    elif isinstance(state, dict):
        instance.__dict__.update(_text_keys(state))
    else:
        raise InsecureJelly(f"cannot apply state {state!r:.60} to {qual(type(instance))}")


def _text_keys(state: dict[Any, Any]) -> dict[Any, Any]:
    """Attribute names arrive as str from Python 3 peers, bytes from old ones."""
    if any(type(k) is bytes for k in state):
        return {k.decode("utf-8") if type(k) is bytes else k: v for k, v in state.items()}
    return state


def _fields(sexp: list[Any], count: int) -> list[int]:
    if len(sexp) != 2 or type(sexp[1]) is not bytes:
        raise ValueError("bad field")
    fields = [int(x) for x in sexp[1].split(b" ")]
    if len(fields) != count:
        raise ValueError("wrong field count")
    return fields


def _boolean(sexp: list[Any]) -> bool:
    if len(sexp) != 2:
        raise ValueError("bad boolean")
    if sexp[1] == b"true":
        return True
    if sexp[1] == b"false":
        return False
    raise ValueError("bad boolean")


def _decimal(sexp: list[Any]) -> decimal.Decimal:
    if len(sexp) != 3 or type(sexp[1]) is not int or type(sexp[2]) is not int:
        raise ValueError("bad decimal")
    if abs(sexp[1]) > 10 ** 4300:
        raise ValueError("decimal with more than 4300 digits")
    digits = tuple(int(c) for c in str(abs(sexp[1])))
    return decimal.Decimal((1 if sexp[1] < 0 else 0, digits, sexp[2]))


def _none(sexp: list[Any]) -> None:
    if len(sexp) != 1:
        raise ValueError("bad None")
    return None


_IMMUTABLE: dict[bytes, Callable[[list[Any]], Any]] = {b"tuple": tuple, b"frozenset": frozenset}

_SCALARS: dict[bytes, Callable[[list[Any]], Any]] = {
    b"None": _none,
    b"boolean": _boolean,
    b"datetime": lambda s: datetime.datetime(*_fields(s, 7)),
    b"date": lambda s: datetime.date(*_fields(s, 3)),
    b"time": lambda s: datetime.time(*_fields(s, 4)),
    b"timedelta": lambda s: datetime.timedelta(*_fields(s, 3)),
    b"decimal": _decimal,
}

_HANDLERS: dict[bytes, Callable[[Unjellier, list[Any], Any], Any]] = {
    b"list": Unjellier._list,
    b"tuple": Unjellier._immutable,
    b"dictionary": Unjellier._dictionary,
    b"set": Unjellier._set,
    b"frozenset": Unjellier._immutable,
    b"reference": Unjellier._reference,
    b"dereference": Unjellier._dereference,
    b"unpersistable": Unjellier._unpersistable,
    b"persistent": Unjellier._persistent,
    b"remote": Unjellier._remote,
    b"local": Unjellier._local,
    b"cached": Unjellier._cached,
    b"lcache": Unjellier._lcache,
    **{tag: Unjellier._scalar for tag in _SCALARS},
    **{tag: Unjellier._refused for tag in (b"class", b"module", b"function", b"method",
                                           b"instance")},
}


def unjelly(sexp: Any, context: Any = None, perspective: Any = None,
            security: SecurityOptions | None = None) -> Any:
    """Rebuild a value from an s-expression; ``InsecureJelly`` if anything is refused."""
    return Unjellier(context, perspective, security).unjellyFull(sexp)


def find_references(sexp: Any) -> tuple[list[Any], list[Any]]:
    """The ``remote`` luids and new cache ids inside a value, without building it.

    Used to give back what an answer nobody waits for anymore would have
    handed us, so the peer's tables do not keep it forever.
    """
    remotes: list[Any] = []
    caches: list[Any] = []
    stack = [sexp]
    while stack:
        node = stack.pop()
        if type(node) is not list or not node:
            continue
        tag = node[0]
        if tag == b"remote" and len(node) == 2:
            remotes.append(node[1])
        elif tag == b"cached" and len(node) == 2:
            caches.append(node[1])
        elif tag == b"dictionary":
            for pair in node[1:]:
                if type(pair) is list:
                    stack.extend(pair)
        elif tag in (b"list", b"tuple", b"set", b"frozenset"):
            stack.extend(node[1:])
        elif tag == b"reference" and len(node) == 3:
            stack.append(node[2])
        elif type(tag) is bytes and b"." in tag:
            if len(node) == 3 and type(node[1]) is int:
                caches.append(node[1])
                stack.append(node[2])
            elif len(node) == 2:
                stack.append(node[1])
    return remotes, caches
