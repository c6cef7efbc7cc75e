"""Unjelly: s-expressions back to Python objects.

How it works. ``Unjellier`` rebuilds depth first. A mutable container is
registered under its reference number as soon as it exists, so a cycle back
to it finds it. A dereference to something not built yet (an enclosing
tuple, say) yields an ``_Unresolved`` placeholder that remembers where it was
put and is patched when the object is finished; an immutable container
holding placeholders is built late for the same reason. Instances are built
only for registered tags (``_security``), with one exception: Twisted's
``CopyableFailure``, which always becomes a ``CopiedFailure`` (an exception
object holding only text), as Twisted registers it at import. ``remote``,
``local`` and cache tags go through the *context* handed in per call.
"""

from __future__ import annotations

import datetime
import decimal
from typing import Any, Callable

from ._security import Factory, SecurityOptions, globalSecurity
from .errors import InsecureJelly, copied_failure_from_state, qual

__all__ = ["Unjellier", "unjelly", "set_state", "find_references", "Unpersistable",
           "FAILURE_TAG"]

_UNICODE = b"unicode"
#: The tag of Twisted's ``CopyableFailure``, accepted without registration.
FAILURE_TAG = b"twisted.spread.pb.CopyableFailure"


class Unpersistable:
    """Stands in for a value the sender could not serialize (from a Twisted peer)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unpersistable({self.reason!r})"



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

    __slots__ = ("context", "perspective", "security", "claimed", "_refs", "_waiting", "_late")

    def __init__(self, context: Any = None, perspective: Any = None,
                 security: SecurityOptions | None = None) -> None:
        self.context = context
        self.perspective = perspective
        self.security = security or (context.security if context is not None else globalSecurity)
        #: What the context turned into live handles (it releases those itself).
        self.claimed: list[Any] = []
        self._refs: dict[Any, Any] = {}
        self._waiting: dict[Any, _Unresolved] = {}
        #: Immutable containers built late; each must be finished by the end.
        self._late: list[_Unresolved] = []

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
        for late in self._late:  # a tuple holding itself, at any depth
            if not late.done:
                raise InsecureJelly("value never finished building (circular immutable structure)")
        if type(result) is _Unresolved:
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
        self._late.append(late)
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

    def _failure(self, sexp: list[Any], refid: Any) -> Any:
        """Twisted's ``CopyableFailure`` as a ``CopiedFailure`` (its state is text only)."""
        if len(sexp) != 2:
            raise _malformed("failure", sexp)
        state = self.unjelly(sexp[1])
        if type(state) is not _Unresolved:
            value: Any = copied_failure_from_state(state)
        elif state.done:
            value = copied_failure_from_state(state.value)
        else:  # its state refers to something not finished yet
            value = _Unresolved()
            state.then(lambda s: value.resolve(copied_failure_from_state(s)))
        if refid is not None:
            self._define(refid, value)
        return value

    def _instance(self, tag: bytes, sexp: list[Any], refid: Any) -> Any:
        local = self.security.unjellyableFor(tag)
        if local is None:
            if tag == FAILURE_TAG:
                return self._failure(sexp, refid)
            name = tag.decode("utf-8", "replace")
            if b"." not in tag:
                raise InsecureJelly(f"unknown type {name!r} from the peer")
            raise InsecureJelly(f"refused instance of {name!r}: register it with "
                                f"pb.setUnjellyableForClass({name!r}, YourRemoteCopy)")
        if type(local) is Factory:
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
