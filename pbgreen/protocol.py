"""The PB broker as a sans-I/O state machine.

How it works. A ``Broker`` is one end of one connection. Bytes from the peer
go in through ``receive_data``, which returns *events* for the driver;
bytes for the peer collect in an outgoing buffer that the driver drains with
``data_to_send``. The broker never waits and never touches a socket.

1. Handshake (WIRE §2.5): the acceptor offers its dialects, the connector
   answers with its choice, and each side sends ``['version', 6]`` the moment
   it switches. Until then the decoder is fed one expression at a time, so
   bytes after the switch are read in the new dialect.
2. Calls out: ``send_call`` jellies the arguments, registering every
   ``Referenceable`` met in ``local_objects`` (each occurrence adds one to its
   refcount) and remembers the caller's token under a new request id. If
   anything cannot be sent, every registration it made is rolled back and
   nothing is written.
3. Calls in: a ``message`` becomes an ``IncomingCall`` event; the driver runs
   ``run_call`` in a worker greenlet (user code never runs in the reader).
   The arguments stay alive until the answer is queued, so decrefs for
   references that came in with them are written *after* that answer.
4. Answers: ``answer``/``error`` become ``Reply`` events carrying the raw
   s-expression; the waiting caller unjellies it in its own greenlet.
5. References in: each ``['remote', n]`` adds one receipt to the one live
   ``RemoteReference`` for ``n``. When it dies a weakref callback queues that
   many decrefs; ``data_to_send`` writes them.
6. ``connection_lost`` returns every pending token and the callbacks owed
   (disconnect notifications, logouts) for the driver to deliver.
"""

from __future__ import annotations

import itertools
import logging
import traceback
import weakref
from collections import deque
from typing import Any, Callable

from . import fast
from .banana import _NO_VOCAB, _VOCAB_ENCODED, DIALECTS, Decoder, EncodeError, choose_dialect, encode
from .errors import (CopiedFailure, Error, InsecureJelly, ProtocolError, RefLimitError,
                     LoginFailed, make_copied_failure, parents_of, qual)
from .flavors import AsReferenceable, RemoteCache, ViewPoint
from .jelly import Jellier, SecurityOptions, Unjellier, find_references, globalSecurity, set_state
from .reference import RemoteCacheObserver, RemoteReference

__all__ = ["Broker", "IncomingCall", "Reply", "Ready", "PROTOCOL_VERSION", "MAX_BROKER_REFS"]

log = logging.getLogger("pbgreen")

PROTOCOL_VERSION = 6
MAX_BROKER_REFS = 1024
_VIOLATIONS_BEFORE_GOODBYE = 4
_MAX_ERROR_TEXT = 64 * 1024
_U = b"unicode"
_FAILURE_TAG = b"twisted.spread.pb.CopyableFailure"
_failure_count = itertools.count(1)


class IncomingCall:
    """The peer called one of our objects; run it with ``Broker.run_call``."""

    __slots__ = ("request_id", "target", "method", "answer", "args", "kwargs", "update")

    def __init__(self, request_id: int, target: Any, method: str, answer: bool,
                 args: Any, kwargs: Any, update: bool = False) -> None:
        self.update = update  # a cachemessage: an observe_ update for a RemoteCache
        self.request_id = request_id
        self.target = target
        self.method = method
        self.answer = answer
        self.args = args
        self.kwargs = kwargs


class Reply:
    """An answer (``ok``) or error for the call that registered ``token``.

    Pass it back to ``Broker.read_reply`` to get the value or exception.
    """

    __slots__ = ("token", "ok", "sexp", "pins", "__weakref__")

    def __init__(self, token: Any, ok: bool, sexp: Any) -> None:
        self.token = token
        self.ok = ok
        self.sexp = sexp
        self.pins: list[Any] = []


class Ready:
    """The handshake chose a dialect: calls may be sent now."""

    __slots__ = ("dialect",)

    def __init__(self, dialect: bytes) -> None:
        self.dialect = dialect


class RunCallbacks:
    """User callbacks (logout, ...) the driver must run outside the reader."""

    __slots__ = ("callbacks",)

    def __init__(self, callbacks: list[Callable[[], Any]]) -> None:
        self.callbacks = callbacks


class _Local:
    __slots__ = ("object", "refcount", "puid")

    def __init__(self, obj: Any, refcount: int, puid: Any) -> None:
        self.object = obj
        self.refcount = refcount
        self.puid = puid


class _Cached:
    """One of our Cacheables as cached by the peer."""

    __slots__ = ("object", "refcount", "puid", "perspective", "observer")

    def __init__(self, obj: Any, puid: Any, perspective: Any, observer: RemoteCacheObserver) -> None:
        self.object = obj
        self.refcount = 1
        self.puid = puid
        self.perspective = perspective
        self.observer = observer


class _Sending:
    """Jelly context for one outgoing value: registrations it made, for rollback."""

    __slots__ = ("broker", "added", "added_caches", "security")

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.added: list[Any] = []
        self.added_caches: list[Any] = []
        self.security = broker.security

    def reference(self, obj: Any) -> list[Any]:
        luid = self.broker._register(obj)
        self.added.append(luid)
        return [b"remote", luid]

    def send_back(self, ref: RemoteReference) -> list[Any]:
        if ref.broker is not self.broker.invoker:
            raise InsecureJelly("a RemoteReference can only be sent back over its own "
                                "connection; pass the object itself, or a Copyable")
        return [b"local", ref.luid]

    def cache(self, obj: Any, jellier: Jellier) -> list[Any]:
        broker = self.broker
        puid = obj.processUniqueID()
        cache_id = broker.cache_ids.get(puid)
        if cache_id is not None:
            broker.remotely_cached[cache_id].refcount += 1
            self.added_caches.append(cache_id)
            return [b"cached", cache_id]
        if len(broker.remotely_cached) > MAX_BROKER_REFS:
            broker._violation("Maximum PB cache count exceeded.")
        cache_id = next(broker._ids)
        perspective = jellier.perspective
        observer = RemoteCacheObserver(broker.invoker, obj, perspective, cache_id)
        broker.remotely_cached[cache_id] = _Cached(obj, puid, perspective, observer)
        broker.cache_ids[puid] = cache_id
        self.added_caches.append(cache_id)
        state = obj.getStateToCacheAndObserveFor(perspective, observer)
        jellier._keep.append(state)
        node = [obj.getTypeToCopyFor(perspective).encode("utf-8"), cache_id]
        jellier.into(state, node)
        return node

    def send_back_cache(self, cache: Any) -> list[Any]:
        cache_id = self.broker._cache_id_of(cache)
        if cache_id is None:
            raise InsecureJelly("a RemoteCache can only be sent back over the connection it "
                                "came from")
        return [b"lcache", cache_id]

    def rollback(self) -> None:
        broker = self.broker
        for luid in self.added:
            broker._release(luid, run_cleanup=False)
        self.added.clear()
        for cache_id in self.added_caches:
            entry = broker._decache(cache_id)
            if entry is not None:  # the peer never saw it: stop observing at once
                entry.observer.active = False
                entry.object.stoppedObserving(entry.perspective, entry.observer)
        self.added_caches.clear()


class Broker:
    """One end of a PB connection, without I/O.

    Args:
        is_client: ``True`` for the connector, ``False`` for the acceptor.
        root: the acceptor's root object (registered as ``b'root'``).
        security: which classes may arrive (default: the global registry).
        unsafe_tracebacks: send full tracebacks with errors.
        invoker: the driver object ``RemoteReference.broker`` points at.
        decoder_options: limits passed to the banana ``Decoder``.
    """

    def __init__(self, *, is_client: bool, root: Any = None,
                 security: SecurityOptions | None = None, unsafe_tracebacks: bool = False,
                 invoker: Any = None, dialects: tuple[bytes, ...] = DIALECTS,
                 **decoder_options: Any) -> None:
        self.is_client = is_client
        self.security = security or globalSecurity
        self.unsafe_tracebacks = unsafe_tracebacks
        self.invoker = invoker
        #: Who the peer is, for log records (the driver sets its address).
        self.peer: Any = None
        self.dialects = dialects
        self.dialect: bytes | None = None
        self.connected = True
        decoder_options.setdefault("fast", fast.loads)
        self.decoder = Decoder(**decoder_options)
        self._vocab = False
        self._out = bytearray()
        self.local_objects: dict[Any, _Local] = {}
        self.luids: dict[Any, Any] = {}
        self._ids = itertools.count(1)
        self._requests = itertools.count(1)
        self.pending: dict[int, Any] = {}
        self._abandoned: set[int] = set()
        self._remote_refs: dict[Any, tuple[weakref.ref[RemoteReference], list[int]]] = {}
        self._decrefs: deque[tuple[bytes, Any, list[int]]] = deque()
        # Caches we own, as the peer holds them (ids share the luid counter).
        self.remotely_cached: dict[Any, _Cached] = {}
        self.cache_ids: dict[Any, Any] = {}
        # Caches the peer owns: the root copy that observe_ calls update, the
        # one live handle we gave out (with its receipt count), and id -> cache id.
        self.locally_cached: dict[Any, Any] = {}
        self._cache_handles: dict[Any, tuple[weakref.ref[Any], list[int]]] = {}
        self._cache_of: dict[int, tuple[Any, Any]] = {}
        self._cleanups: dict[Any, list[Callable[[], Any]]] = {}
        self._unread: "weakref.WeakSet[Reply]" = weakref.WeakSet()
        self._on_lost: list[Callable[[], Any]] = []
        #: Called with a list of user callbacks to run outside the reader.
        self.on_callbacks: Callable[[list[Callable[[], Any]]], Any] | None = None
        self._violations = 0
        #: Set when the peer earned a disconnect; the driver closes after flushing.
        self.close_reason: str | None = None
        #: Called (no arguments) when a decref is queued by garbage collection.
        self.on_decref_queued: Callable[[], Any] | None = None
        if root is not None:
            self.local_objects[b"root"] = _Local(root, 1, None)
        if not is_client:
            self._out += encode(list(dialects), vocab=False)

    def set_root(self, root: Any) -> None:
        """Make ``root`` the object the peer reaches as ``b'root'``."""
        self.local_objects[b"root"] = _Local(root, 1, None)

    # ------------------------------------------------------------------ bytes in/out

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call (may be empty)."""
        if self._decrefs:
            self._flush_decrefs()
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    def unsend(self, data: bytes) -> None:
        """Put back bytes the driver could not write, ahead of newer ones."""
        self._out[:0] = data

    def receive_data(self, data: bytes) -> list[Any]:
        """Feed bytes from the peer; return the events they complete.

        Raises ``ProtocolError`` (incl. ``BananaError``) if the peer broke
        the protocol; the connection must then be closed.
        """
        events: list[Any] = []
        if not self.connected:
            return events  # bytes that were already in flight when we gave up
        if self.dialect is None:
            found = self.decoder.feed(data, limit=1)
            while found and self.dialect is None:
                self._negotiate(found[0], events)
                if self.dialect is None:
                    found = self.decoder.feed(b"", limit=1)
            if self.dialect is None:
                return events
            data = b""
        handlers = self._handlers
        for expr in self.decoder.feed(data):
            if type(expr) is not list or not expr:
                raise ProtocolError(f"expected a PB message (a list), got {expr!r:.80}")
            handler = handlers.get(expr[0]) if type(expr[0]) is bytes else None
            if handler is None:
                raise ProtocolError(f"unknown PB command {expr[0]!r:.60}")
            handler(self, expr, events)
        return events

    def _negotiate(self, expr: Any, events: list[Any]) -> None:
        if self.is_client:
            choice = choose_dialect(expr, self.dialects)
            if choice is None:
                raise ProtocolError(f"no dialect in common: the peer offers {expr!r:.80}, "
                                    f"we speak {list(self.dialects)}")
            self._out += encode(choice, vocab=False)
        else:
            if expr not in self.dialects:
                raise ProtocolError(f"the peer chose dialect {expr!r:.60}, which we did not offer")
            choice = expr
        self.dialect = choice
        self._vocab = self.decoder.vocab = choice == b"pb"
        self._write([b"version", PROTOCOL_VERSION])
        events.append(Ready(choice))

    def _write(self, message: list[Any]) -> None:
        self._out += encode(message, vocab=self._vocab)

    # ------------------------------------------------------------------ incoming commands

    def _fields(self, expr: list[Any], count: int) -> None:
        if len(expr) != count:
            raise ProtocolError(f"{expr[0].decode('ascii', 'replace')} needs {count - 1} fields, "
                                f"got {len(expr) - 1}")

    def _on_version(self, expr: list[Any], events: list[Any]) -> None:
        self._fields(expr, 2)
        if expr[1] != PROTOCOL_VERSION:
            raise ProtocolError(f"Version Incompatibility: {PROTOCOL_VERSION} {expr[1]!r}")

    def _on_message(self, expr: list[Any], events: list[Any]) -> None:
        self._fields(expr, 7)
        _, request_id, object_id, name, answer, args, kwargs = expr
        if type(request_id) is not int or type(name) is not bytes:
            raise ProtocolError(f"malformed {expr[0].decode()}: {expr!r:.120}")
        if expr[0] == b"message":
            entry = self.local_objects.get(object_id) if type(object_id) in (int, bytes) else None
            target = entry.object if entry is not None else None
        else:
            target = self._cache_target(object_id)
        if target is None:
            if answer:
                self.send_error(request_id, Error("Invalid Object ID"))
            return
        try:
            method = name.decode("utf-8")
        except UnicodeDecodeError:
            if answer:
                self.send_error(request_id, Error("method name is not UTF-8"))
            return
        events.append(IncomingCall(request_id, target, method, bool(answer), args, kwargs,
                                   expr[0] == b"cachemessage"))

    def _cache_target(self, cache_id: Any) -> Any:
        return self.locally_cached.get(cache_id) if type(cache_id) in (int, bytes) else None

    def _on_reply(self, expr: list[Any], events: list[Any]) -> None:
        self._fields(expr, 3)
        request_id = expr[1]
        token = self.pending.pop(request_id, None) if type(request_id) is int else None
        if token is None:
            if request_id in self._abandoned:
                self._abandoned.discard(request_id)
                self.release_value(expr[2])
                return
            raise ProtocolError(f"{expr[0].decode()} for request {request_id!r:.20}, "
                                "which was never sent or was already answered")
        reply = Reply(token, expr[0] == b"answer", expr[2])
        self._unread.add(reply)
        events.append(reply)

    def _on_decref(self, expr: list[Any], events: list[Any]) -> None:
        self._fields(expr, 2)
        luid = expr[1]
        if type(luid) is bytes:
            return  # named objects (the root) are never counted
        if type(luid) is not int or luid not in self.local_objects:
            raise ProtocolError(f"decref of unknown object id {luid!r:.20}")
        callbacks = self._release(luid, run_cleanup=True)
        if callbacks:
            events.append(RunCallbacks(callbacks))

    def _on_ignored(self, expr: list[Any], events: list[Any]) -> None:
        log.info("peer %s did not understand %r", self.peer, expr[1:2])

    def _on_decache(self, expr: list[Any], events: list[Any]) -> None:
        self._fields(expr, 2)
        cache_id = expr[1]
        if type(cache_id) is not int or cache_id not in self.remotely_cached:
            raise ProtocolError(f"decache of unknown cache id {cache_id!r:.20}")
        entry = self._decache(cache_id)
        if entry is not None:
            events.append(RunCallbacks([lambda: self._stop_observing(cache_id, entry)]))

    def _decache(self, cache_id: Any) -> "_Cached | None":
        """One handle fewer; the entry, removed, when it was the last."""
        entry = self.remotely_cached[cache_id]
        entry.refcount -= 1
        if entry.refcount > 0:
            return None
        del self.remotely_cached[cache_id]
        self.cache_ids.pop(entry.puid, None)
        return entry

    def _stop_observing(self, cache_id: Any, entry: "_Cached") -> None:
        # Updates the owner sends from stoppedObserving still go out, then uncache.
        try:
            entry.object.stoppedObserving(entry.perspective, entry.observer)
        finally:
            entry.observer.active = False
            if self.connected:
                self._write([b"uncache", cache_id])

    def _on_uncache(self, expr: list[Any], events: list[Any]) -> None:
        self._fields(expr, 2)
        cache_id = expr[1]
        root = self.locally_cached.pop(cache_id, None) if type(cache_id) in (int, bytes) else None
        if root is None:
            raise ProtocolError(f"uncache of unknown cache id {cache_id!r:.20}")
        self._cache_of.pop(id(root), None)
        slot = self._cache_handles.pop(cache_id, None)
        if slot is not None and slot[0]() is not None:
            self._cache_of.pop(id(slot[0]()), None)

    _handlers: dict[bytes, Callable[["Broker", list[Any], list[Any]], None]] = {
        b"version": _on_version,
        b"message": _on_message,
        b"cachemessage": _on_message,
        b"answer": _on_reply,
        b"error": _on_reply,
        b"decref": _on_decref,
        b"decache": _on_decache,
        b"uncache": _on_uncache,
        b"didNotUnderstand": _on_ignored,
    }

    # ------------------------------------------------------------------ object tables

    def _register(self, obj: Any) -> Any:
        puid = obj.processUniqueID()
        luid = self.luids.get(puid)
        if luid is not None:
            self.local_objects[luid].refcount += 1
            return luid
        if len(self.local_objects) > MAX_BROKER_REFS:
            self._violation("Maximum PB reference count exceeded.")
        luid = next(self._ids)
        self.local_objects[luid] = _Local(obj, 1, puid)
        self.luids[puid] = luid
        return luid

    def _violation(self, message: str) -> None:
        """Refuse one more reference or cache; the fourth time, say goodbye."""
        self._violations += 1
        if self._violations >= _VIOLATIONS_BEFORE_GOODBYE:
            self.close_reason = f"the peer kept more than {MAX_BROKER_REFS} references after warnings"
            raise RefLimitError(message + "  Goodbye.")
        raise RefLimitError(message)

    def _release(self, luid: Any, run_cleanup: bool) -> list[Callable[[], Any]]:
        entry = self.local_objects[luid]
        entry.refcount -= 1
        if entry.refcount > 0:
            return []
        if run_cleanup and self._pin(luid):
            return []
        del self.local_objects[luid]
        self.luids.pop(entry.puid, None)
        callbacks = self._cleanups.pop(entry.puid, [])
        return callbacks if run_cleanup else []

    def _pin(self, luid: Any) -> bool:
        """Keep ``luid`` while an answer that names it as ``local`` is unread.

        The peer rightly sends its decref after such an answer, but the
        reader may see the decref before the caller's greenlet reads the
        answer.
        """
        pinned = False
        for reply in list(self._unread):
            if _mentions_local(reply.sexp, luid):
                reply.pins.append(weakref.finalize(reply, self._unpin, luid))
                pinned = True
        return pinned

    def _unpin(self, luid: Any) -> None:
        entry = self.local_objects.get(luid)
        if entry is None or entry.refcount > 0 or any(
                _mentions_local(r.sexp, luid) for r in self._unread if r.pins):
            return
        del self.local_objects[luid]
        self.luids.pop(entry.puid, None)
        callbacks = self._cleanups.pop(entry.puid, [])
        if callbacks and self.on_callbacks is not None:
            self.on_callbacks(callbacks)

    def read_reply(self, reply: Reply, perspective: Any = None) -> Any:
        """The answer's value, or the exception an ``error`` stands for (returned)."""
        try:
            if reply.ok:
                return self._unjelly(reply.sexp, perspective)
            return self.failure_from(reply.sexp)
        finally:
            self.done_with(reply)

    def discard(self, reply: Reply) -> None:
        """A reply nobody will read: give back what it holds; the driver writes the decrefs."""
        self.release_value(reply.sexp)
        self.done_with(reply)
        if self._decrefs and self.on_decref_queued is not None:
            self.on_decref_queued()

    def done_with(self, reply: Reply) -> None:
        """The reply was read (or will never be): release what it pinned."""
        self._unread.discard(reply)
        pins, reply.pins = reply.pins, []
        for pin in pins:
            pin()

    def on_lost(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` when the connection goes (with the other disconnect callbacks)."""
        self._on_lost.append(callback)

    def forget_lost(self, callback: Callable[[], Any]) -> None:
        """Undo ``on_lost(callback)``."""
        if callback in self._on_lost:
            self._on_lost.remove(callback)

    def on_release(self, obj: Any, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once the peer has released every reference to ``obj``."""
        self._cleanups.setdefault(obj.processUniqueID(), []).append(callback)

    def _live_handle(self, handles: dict[Any, Any], command: bytes, key: Any,
                     make: Callable[[], Any]) -> Any:
        """The one live handle for ``key``, counting this receipt.

        When it dies, as many ``command`` messages (decref or decache) as it
        counted receipts are queued for the peer.
        """
        slot = handles.get(key)
        if slot is not None:
            handle = slot[0]()
            if handle is not None:
                slot[1][0] += 1
                return handle
        handle = make()
        cell = [1]
        handles[key] = (weakref.ref(handle, self._died_callback(command, key, cell)), cell)
        return handle

    def _proxy(self, luid: Any, perspective: Any) -> RemoteReference:
        return self._live_handle(self._remote_refs, b"decref", luid,
                                 lambda: RemoteReference(self.invoker, luid, perspective))

    def _died_callback(self, command: bytes, key: Any, cell: list[int]) -> Callable[[Any], None]:
        # Runs inside garbage collection: only append to a deque and poke the driver.
        decrefs = self._decrefs
        this = weakref.ref(self)

        def died(_: Any) -> None:
            decrefs.append((command, key, cell))
            broker = this()
            if broker is not None and broker.on_decref_queued is not None:
                broker.on_decref_queued()
        return died

    def _flush_decrefs(self) -> None:
        decrefs = self._decrefs
        while decrefs:
            command, key, cell = decrefs.popleft()
            handles = self._remote_refs if command == b"decref" else self._cache_handles
            slot = handles.get(key)
            if slot is not None and slot[1] is cell:
                del handles[key]
            if command == b"decache" and key not in self.locally_cached:
                continue  # uncached already: the owner expects nothing more
            if self.connected and self.dialect is not None:
                self._out += encode([command, key], vocab=self._vocab) * cell[0]

    def release_value(self, sexp: Any, claimed: list[tuple[bytes, Any]] | None = None) -> None:
        """Give back the references inside a value that will never be used.

        ``claimed`` lists what an unjellier already turned into live handles
        (those are given back when the handles die, not here).
        """
        remotes, caches = find_references(sexp)
        owed = [(b"decref", luid) for luid in remotes] + [(b"decache", cid) for cid in caches]
        for item in claimed or ():
            if item in owed:
                owed.remove(item)
        for command, key in owed:
            if type(key) is int:
                self._decrefs.append((command, key, [1]))

    # ------------------------------------------------------------------ jelly context (in)

    def unjelly_remote(self, luid: Any, unjellier: Unjellier) -> RemoteReference:
        ref = self._proxy(luid, unjellier.perspective)
        unjellier.claimed.append((b"decref", luid))
        return ref

    def unjelly_local(self, luid: Any, unjellier: Unjellier) -> Any:
        entry = self.local_objects.get(luid)
        if entry is None:
            return None  # as Twisted: the peer may have released it first
        obj = entry.object
        if type(obj) is ViewPoint or type(obj) is AsReferenceable:
            return obj.object
        return obj

    def unjelly_cache(self, local: Any, cache_id: Any, state: Any, unjellier: Unjellier) -> Any:
        """The first copy of a peer's Cacheable: a root we keep, and a handle for the user."""
        if not (isinstance(local, type) and issubclass(local, RemoteCache)):
            raise InsecureJelly(f"a Cacheable arrived for {qual(local) if isinstance(local, type) else local!r}, "
                                "which is not a pb.RemoteCache subclass")
        root = local.__new__(local)
        self.locally_cached[cache_id] = root
        self._cache_of[id(root)] = (root, cache_id)
        handle = self._cache_handle(cache_id)
        unjellier.claimed.append((b"decache", cache_id))
        handle.__init__()
        set_state(handle, unjellier.unjelly(state))
        return handle

    def unjelly_cached(self, cache_id: Any, unjellier: Unjellier) -> Any:
        if cache_id not in self.locally_cached:
            raise InsecureJelly(f"the peer re-sent cache {cache_id!r}, which it never sent")
        unjellier.claimed.append((b"decache", cache_id))
        return self._cache_handle(cache_id)

    def unjelly_lcache(self, cache_id: Any, unjellier: Unjellier) -> Any:
        entry = self.remotely_cached.get(cache_id)
        if entry is None:
            raise InsecureJelly(f"the peer sent back cache {cache_id!r}, which it does not hold")
        return entry.object

    def _cache_handle(self, cache_id: Any) -> Any:
        def make() -> Any:
            root = self.locally_cached[cache_id]
            cls = type(root)
            handle = cls.__new__(cls)
            handle.__dict__ = root.__dict__  # observe_ calls update the root; the handle sees it
            self._cache_of[id(handle)] = (weakref.ref(handle), cache_id)
            return handle
        return self._live_handle(self._cache_handles, b"decache", cache_id, make)

    def _cache_id_of(self, cache: Any) -> Any:
        entry = self._cache_of.get(id(cache))
        if entry is None:
            return None
        holder, cache_id = entry
        if holder is not cache and (type(holder) is not weakref.ref or holder() is not cache):
            return None
        if cache_id not in self.locally_cached:
            return None
        return cache_id

    # ------------------------------------------------------------------ calls out

    def _jelly_message(self, head: list[Any], values: tuple[Any, ...], perspective: Any) -> bytes:
        try:  # plain data: objects to bytes in one pass
            return fast.dumps(head, values, _VOCAB_ENCODED if self._vocab else _NO_VOCAB)
        except fast.Fallback:
            pass
        context = _Sending(self)
        sent = False
        try:
            message = head + [Jellier(context, perspective, self.security).jelly(v) for v in values]
            data = encode(message, vocab=self._vocab)
            sent = True
            return data
        except EncodeError as exc:
            raise InsecureJelly(f"cannot send this value: {exc}") from None
        finally:
            if not sent:  # whatever stopped it, nothing goes out: undo the registrations
                context.rollback()

    def send_call(self, object_id: Any, method: str, args: tuple[Any, ...],
                  kwargs: dict[str, Any], perspective: Any = None, token: Any = None,
                  cache: bool = False) -> int:
        """Queue a call; ``token`` (if not ``None``) comes back in its ``Reply``.

        With ``token=None`` no answer is asked for. Raises ``InsecureJelly``
        (nothing queued) if an argument cannot be sent, ``RefLimitError`` if
        the connection's reference table is full.
        """
        request_id = next(self._requests)
        head = [b"cachemessage" if cache else b"message", request_id, object_id,
                method.encode("utf-8"), 0 if token is None else 1]
        data = self._jelly_message(head, (args, kwargs), perspective)
        if token is not None:
            self.pending[request_id] = token
        if self._decrefs:  # releases issued before this call go out before it
            self._flush_decrefs()
        self._out += data
        return request_id

    def abandon(self, request_id: int) -> None:
        """The caller stopped waiting: drop the answer when it comes, release its references."""
        if self.pending.pop(request_id, None) is not None and self.connected:
            self._abandoned.add(request_id)

    def _unjelly(self, sexp: Any, perspective: Any) -> Any:
        if type(sexp) is fast.Built:  # plain data the decoder already rebuilt
            return sexp.value
        unjellier = Unjellier(self, perspective, self.security)
        try:
            return unjellier.unjellyFull(sexp)
        except (InsecureJelly, RefLimitError):
            self.release_value(sexp, unjellier.claimed)
            raise
        except Exception as exc:
            self.release_value(sexp, unjellier.claimed)
            raise InsecureJelly(f"could not rebuild a value from the peer: "
                                f"{type(exc).__name__}: {exc}") from exc

    def failure_from(self, sexp: Any) -> Exception:
        """The exception to raise in the caller for an ``error`` payload."""
        if type(sexp) is list and len(sexp) == 2 and sexp[0] == _FAILURE_TAG:
            try:
                state = Unjellier(None, None, self.security).unjellyFull(sexp[1])
            except Exception as exc:
                return InsecureJelly(f"unreadable error from the peer: {exc}")
            if not isinstance(state, dict):
                return InsecureJelly("unreadable error from the peer: state is not a dict")
            type_name = _text(state.get("type", "builtins.Exception"))
            parents = [_text(p) for p in state.get("parents") or [type_name]]
            return make_copied_failure(type_name, _text(state.get("value", "")),
                                       _text(state.get("traceback", "Traceback unavailable\n")),
                                       parents)
        if type(sexp) is list and sexp and type(sexp[0]) is bytes and b"." in sexp[0]:
            name = sexp[0].decode("utf-8", "replace")
            return make_copied_failure(name, "", "Traceback unavailable\n", [name])
        try:
            value = Unjellier(None, None, self.security).unjellyFull(sexp)
        except Exception:
            value = sexp
        return make_copied_failure("builtins.Exception", str(value), "Traceback unavailable\n",
                                   None)

    # ------------------------------------------------------------------ calls in

    def run_call(self, call: IncomingCall) -> None:
        """Run an incoming call (user code!) and queue its answer or error.

        Call from a worker greenlet; may block inside the user's method.
        """
        args: Any = None
        kwargs: Any = None
        perspective = None
        try:
            method, perspective = call.target.remoteMethod(call.method)
            try:
                args = self._unjelly(call.args, perspective)
                kwargs = self._unjelly(call.kwargs, perspective)
            except InsecureJelly as exc:  # the caller sent something refused: its problem
                log.info("refused the arguments %s sent for %s: %s", self.peer,
                            call.method, exc)
                if call.answer and self.connected:
                    self.send_error(call.request_id, exc)
                return
            if type(args) is not tuple:
                args = tuple(args) if type(args) is list else (args,)
            if type(kwargs) is not dict:
                raise InsecureJelly("keyword arguments from the peer are not a dictionary")
            if any(type(k) is not str for k in kwargs):
                kwargs = {k.decode("utf-8") if type(k) is bytes else k: v
                          for k, v in kwargs.items()}
            result = method(*args, **kwargs)
        except Exception as exc:
            self.report(call, exc)
            return
        if call.answer and self.connected:
            try:
                self._out += self._jelly_message([b"answer", call.request_id], (result,),
                                                 perspective)
            except Exception as exc:
                self.report(call, exc)
        del args, kwargs  # their references are released after the answer is queued

    def report(self, call: IncomingCall, exc: BaseException) -> None:
        """Log a failed incoming call as PB does, and answer it with the error."""
        if isinstance(exc, LoginFailed):
            log.info("login refused for %s (%s)", self.peer, type(exc).__name__)
        elif isinstance(exc, Error):  # expected: the caller gets it, nothing to log
            log.debug("call %s from %s failed: %r", call.method, self.peer, exc)
        else:
            log.error("Peer Will Receive PB Traceback (%s calling %s)", self.peer, call.method,
                      exc_info=exc)
        if call.answer and self.connected:
            self.send_error(call.request_id, exc)

    def send_error(self, request_id: int, exc: BaseException) -> None:
        """Queue an ``error`` for ``request_id``, as a Twisted ``CopyableFailure``."""
        if isinstance(exc, CopiedFailure):
            type_name, value, parents = exc.type, exc.value, exc.parents
        else:
            type_name, value, parents = qual(type(exc)), _safe_str(exc), parents_of(type(exc))
        if self.unsafe_tracebacks:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        else:
            text = "Traceback unavailable\n"
        state = [b"dictionary",
                 [[_U, b"count"], next(_failure_count) % (2 ** 31)],
                 [[_U, b"type"], type_name.encode("utf-8")],
                 [[_U, b"value"], [_U, _clip(value)]],
                 [[_U, b"captureVars"], [b"boolean", b"false"]],
                 [[_U, b"tb"], [b"None"]],
                 [[_U, b"unsafeTracebacks"],
                  [b"boolean", b"true" if self.unsafe_tracebacks else b"false"]],
                 [[_U, b"parents"], [b"list"] + [[_U, p.encode("utf-8")] for p in parents]],
                 [[_U, b"frames"], [b"list"]],
                 [[_U, b"stack"], [b"list"]],
                 [[_U, b"traceback"], [_U, _clip(text)]]]
        self._write([b"error", request_id, [_FAILURE_TAG, state]])

    # ------------------------------------------------------------------ the end

    def connection_lost(self) -> tuple[list[Any], list[Callable[[], Any]]]:
        """Mark the connection dead; return (pending tokens, callbacks owed)."""
        if not self.connected:
            return [], []
        self.connected = False
        tokens = list(self.pending.values())
        self.pending.clear()
        self._abandoned.clear()
        callbacks = [cb for cbs in self._cleanups.values() for cb in cbs] + self._on_lost
        self._cleanups.clear()
        self._on_lost = []
        for entry in self.remotely_cached.values():
            entry.observer.active = False
            callbacks.append(lambda e=entry: e.object.stoppedObserving(e.perspective, e.observer))
        self.remotely_cached.clear()
        self.cache_ids.clear()
        self.locally_cached.clear()
        self._cache_handles.clear()
        self._cache_of.clear()
        self.local_objects.clear()
        self.luids.clear()
        self._decrefs.clear()
        self._out.clear()
        return tokens, callbacks


def _mentions_local(sexp: Any, luid: Any) -> bool:
    stack = [sexp]
    while stack:
        node = stack.pop()
        if type(node) is list and node:
            if node[0] == b"local" and len(node) == 2 and node[1] == luid:
                return True
            stack.extend(node)
    return False


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def _clip(text: str) -> bytes:
    data = text.encode("utf-8", "replace")
    if len(data) > _MAX_ERROR_TEXT:
        data = data[:_MAX_ERROR_TEXT] + b"... (truncated)"
    return data
