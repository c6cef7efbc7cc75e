"""The reference tables of one connection, and the jelly contexts over them.

How it works. Four tables, one per direction and kind (WIRE §4.2–4.3, §4.7):

* **locals**: our objects the peer holds, by luid, with a refcount that
  counts every ``['remote', luid]`` we sent. A ``decref`` takes one off; at
  zero the entry goes and its release callbacks (logout) are owed. An entry
  named as ``['local', luid]`` in a reply not read yet is *pinned* and stays
  until that reply is read (the peer rightly sends its decref after such an
  answer, but our reader may see the decref before the caller reads it).
* **proxies**: the one live ``RemoteReference`` per peer luid, counting the
  receipts it stands for. When it dies a weakref callback queues that many
  ``decref`` messages; the broker writes them with its next bytes.
* **owned caches**: our ``Cacheable``\\ s the peer holds, by cache id, with
  the observer each was given.
* **held caches**: the peer's caches we hold: a root copy that ``observe_``
  updates change, and one live handle given out (decached when it dies).

Sending is two-step. A ``SendContext`` records what a value will register
(new luids, new caches, receipts of existing ones) but changes no table;
``RefTables.commit`` applies it in one step just before the bytes are queued.
So the peer never sees an id before its entry exists, user code that yields
in the middle of jellying (``getStateToCacheAndObserveFor``) never finds a
half-made entry, and a value that cannot be sent leaves nothing behind.
"""

from __future__ import annotations

import itertools
import weakref
from collections import Counter
from typing import Any, Callable

from .errors import InsecureJelly, RefLimitError, qual
from .flavors import AsReferenceable, RemoteCache, ViewPoint
from .jelly import Jellier, SecurityOptions, Unjellier, find_references, set_state
from .reference import RemoteCacheObserver, RemoteReference

__all__ = ["RefTables", "SendContext", "Stale", "NotYet", "NotOpen", "MAX_BROKER_REFS"]

MAX_BROKER_REFS = 1024
_VIOLATIONS_BEFORE_GOODBYE = 4


class Stale(Exception):
    """A prepared value names a cache the peer let go of meanwhile: jelly it again."""


class NotYet(Exception):
    """A prepared value refers to a first copy another send has not queued yet: commit later."""


class NotOpen(Exception):
    """The connection closed while a value was prepared: nothing was queued."""


class _Local:
    __slots__ = ("object", "refcount", "puid", "pins")

    def __init__(self, obj: Any, puid: Any) -> None:
        self.object = obj
        self.refcount = 0
        self.puid = puid
        self.pins = 0


class _Owned:
    """One of our Cacheables as the peer holds it."""

    __slots__ = ("object", "refcount", "puid", "perspective", "observer", "pins")

    def __init__(self, obj: Any, puid: Any, perspective: Any, observer: RemoteCacheObserver) -> None:
        self.object = obj
        self.refcount = 0
        self.puid = puid
        self.perspective = perspective
        self.observer = observer
        self.pins = 0


class SendContext:
    """The jelly context of one outgoing value: records, never changes tables."""

    __slots__ = ("tables", "security", "refs", "new_refs", "caches", "new_caches")

    def __init__(self, tables: "RefTables") -> None:
        self.tables = tables
        self.security = tables.security
        self.refs: list[tuple[Any, Any, Any]] = []        # (luid, object, puid), one per receipt
        self.new_refs: dict[Any, Any] = {}                # puid -> luid allocated here
        self.caches: list[Any] = []                       # cache ids of 'cached' receipts
        self.new_caches: dict[Any, _Owned] = {}           # cache id -> first copy sent here

    def reference(self, obj: Any) -> list[Any]:
        tables = self.tables
        puid = obj.processUniqueID()
        luid = tables.luids.get(puid)
        if luid is None:
            luid = self.new_refs.get(puid)
            if luid is None:
                if len(tables.locals) + len(self.new_refs) > MAX_BROKER_REFS:
                    tables.violation("Maximum PB reference count exceeded.")
                luid = self.new_refs[puid] = next(tables.ids)
        self.refs.append((luid, obj, puid))
        return [b"remote", luid]

    def send_back(self, ref: RemoteReference) -> list[Any]:
        if ref.broker is not self.tables.invoker:
            raise InsecureJelly("a RemoteReference can only be sent back over its own "
                                "connection; pass the object itself, or a Copyable")
        return [b"local", ref.luid]

    def cache(self, obj: Any, jellier: Jellier) -> list[Any]:
        tables = self.tables
        puid = obj.processUniqueID()
        cache_id = tables.cache_ids.get(puid)
        if cache_id is None:
            for new_id, entry in self.new_caches.items():  # met twice in this value
                if entry.puid == puid:
                    cache_id = new_id
        if cache_id is None:
            # Another send is making its first copy right now: refer to that
            # one; our commit waits until it is queued (NotYet).
            cache_id = tables.preparing.get(puid)
        if cache_id is not None:
            self.caches.append(cache_id)
            return [b"cached", cache_id]
        if len(tables.owned) + len(self.new_caches) > MAX_BROKER_REFS:
            tables.violation("Maximum PB cache count exceeded.")
        cache_id = next(tables.ids)
        perspective = jellier.perspective
        observer = RemoteCacheObserver(tables.invoker, obj, perspective, cache_id)
        self.new_caches[cache_id] = _Owned(obj, puid, perspective, observer)
        tables.preparing[puid] = cache_id  # others refer to this copy, not make a second
        state = obj.getStateToCacheAndObserveFor(perspective, observer)  # user code: may yield
        jellier._keep.append(state)
        node = [obj.getTypeToCopyFor(perspective).encode("utf-8"), cache_id]
        jellier.into(state, node)
        return node

    def send_back_cache(self, cache: Any) -> list[Any]:
        cache_id = self.tables.held_cache_id(cache)
        if cache_id is None:
            raise InsecureJelly("a RemoteCache can only be sent back over the connection it "
                                "came from")
        return [b"lcache", cache_id]

    def abandoned(self) -> list[tuple[Any, Any, Any]]:
        """The value will not be sent: ``(cacheable, perspective, observer)`` to stop observing."""
        stopped = []
        for cache_id, entry in self.new_caches.items():
            entry.observer.active = False
            stopped.append((entry.object, entry.perspective, entry.observer))
            if self.tables.preparing.get(entry.puid) == cache_id:
                del self.tables.preparing[entry.puid]
        self.new_caches.clear()
        return stopped


class RefTables:
    """Every reference table of one connection (see the module docstring)."""

    def __init__(self, invoker: Any, security: SecurityOptions) -> None:
        self.invoker = invoker
        self.security = security
        self.ids = itertools.count(1)  # luids and cache ids share one counter, as in Twisted
        self.locals: dict[Any, _Local] = {}
        self.luids: dict[Any, Any] = {}
        self.proxies: dict[Any, tuple[weakref.ref[Any], list[int]]] = {}
        self.owned: dict[Any, _Owned] = {}
        self.cache_ids: dict[Any, Any] = {}
        self.held: dict[Any, Any] = {}
        self.held_handles: dict[Any, tuple[weakref.ref[Any], list[int]]] = {}
        self._held_ids: dict[int, tuple[Any, Any]] = {}
        self._given_back: dict[Any, None] = {}
        #: Ids of the peer's first copies in replies not read yet (updates may target them).
        self.announced: Counter[Any] = Counter()
        #: First copies being prepared right now (puid -> cache id), not yet visible to the peer.
        self.preparing: dict[Any, Any] = {}  # first copies released unread (see uncache)
        self._cleanups: dict[Any, list[Callable[[], Any]]] = {}
        #: ``(command, id, receipts, from_a_handle)`` owed to the peer (appended by
        #: garbage collection when a handle dies, or for a value never used).
        #: A list, not a deque: an empty deque costs 600 bytes per connection.
        self.releases: list[tuple[bytes, Any, list[int], bool]] = []
        #: Called (no arguments) when garbage collection queued a release.
        self.on_release_queued: Callable[[], Any] | None = None
        self.violations = 0
        self.close_reason: str | None = None

    def set_root(self, root: Any) -> None:
        entry = _Local(root, None)
        entry.refcount = 1
        self.locals[b"root"] = entry

    def violation(self, message: str) -> None:
        """Refuse one more reference or cache; the fourth time, say goodbye."""
        self.violations += 1
        if self.violations >= _VIOLATIONS_BEFORE_GOODBYE:
            self.close_reason = f"the peer kept more than {MAX_BROKER_REFS} references after warnings"
            raise RefLimitError(message + "  Goodbye.")
        raise RefLimitError(message)

    # ------------------------------------------------------------------ sending

    def commit(self, context: SendContext) -> None:
        """Apply what ``context`` recorded; ``Stale`` (nothing applied) if it is out of date."""
        owned = self.owned
        for cache_id in context.caches:
            if cache_id not in owned and cache_id not in context.new_caches:
                if cache_id in self.preparing.values():
                    raise NotYet(f"cache {cache_id} is still being prepared by another send")
                raise Stale(f"cache {cache_id} was released while the value was prepared")
        # Another send gave the same object an id while this one was prepared
        # (user code yielded): prepare again, so the peer gets one id per object.
        for entry in context.new_caches.values():
            if entry.puid in self.cache_ids:
                raise Stale("the Cacheable was sent meanwhile")
        for luid, _, puid in context.refs:
            if self.luids.get(puid, luid) != luid:
                raise Stale("the Referenceable was sent meanwhile")
        for cache_id, entry in context.new_caches.items():
            entry.refcount = 1
            owned[cache_id] = entry
            self.cache_ids.setdefault(entry.puid, cache_id)
            if self.preparing.get(entry.puid) == cache_id:
                del self.preparing[entry.puid]
        for cache_id in context.caches:
            owned[cache_id].refcount += 1
        locals_ = self.locals
        for luid, obj, puid in context.refs:
            entry = locals_.get(luid)
            if entry is None or entry.object is not obj:
                entry = locals_[luid] = _Local(obj, puid)
                self.luids.setdefault(puid, luid)
            entry.refcount += 1
        context.refs = []
        context.caches = []
        context.new_caches = {}

    # ------------------------------------------------------------------ our objects

    def local(self, luid: Any) -> Any:
        """Our object the peer knows as ``luid`` (``None`` if there is none)."""
        entry = self.locals.get(luid) if type(luid) in (int, bytes) else None
        return None if entry is None else entry.object

    def release(self, luid: Any) -> list[Callable[[], Any]]:
        """The peer gave back one receipt of ``luid``; the callbacks now owed."""
        entry = self.locals[luid]
        entry.refcount -= 1
        return self._drop_if_free(luid, entry)

    def _pinned_entry(self, tag: bytes, key: Any) -> Any:
        return (self.locals if tag == b"local" else self.owned).get(key)

    def pin(self, pins: tuple[tuple[bytes, Any], ...]) -> None:
        """Keep the objects an unread reply names (``local``/``lcache``) until it is read."""
        for tag, key in pins:
            entry = self._pinned_entry(tag, key)
            if entry is not None:
                entry.pins += 1

    def unpin(self, pins: tuple[tuple[bytes, Any], ...]
              ) -> tuple[list[Callable[[], Any]], list[tuple[Any, _Owned]]]:
        """The reply was read: (release callbacks owed, ``(cache id, entry)`` to stop observing)."""
        callbacks: list[Callable[[], Any]] = []
        stopped: list[tuple[Any, _Owned]] = []
        for tag, key in pins:
            entry = self._pinned_entry(tag, key)
            if entry is None or entry.pins <= 0:
                continue
            entry.pins -= 1
            if tag == b"local":
                callbacks += self._drop_if_free(key, entry)
            elif entry.refcount <= 0 and entry.pins == 0:
                stopped.append((key, self._drop_cache(key, entry)))
        return callbacks, stopped

    def _drop_if_free(self, luid: Any, entry: _Local) -> list[Callable[[], Any]]:
        if entry.refcount > 0 or entry.pins > 0:
            return []
        del self.locals[luid]
        if self.luids.get(entry.puid) == luid:
            del self.luids[entry.puid]
        return self._cleanups.pop(entry.puid, [])

    def on_release(self, obj: Any, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once the peer has released every reference to ``obj``."""
        self._cleanups.setdefault(obj.processUniqueID(), []).append(callback)

    # ------------------------------------------------------------------ owned caches

    def decache(self, cache_id: Any) -> _Owned | None:
        """One receipt of our cache fewer; the entry, removed, when it was the last."""
        entry = self.owned[cache_id]
        entry.refcount -= 1
        if entry.refcount > 0 or entry.pins > 0:
            return None
        return self._drop_cache(cache_id, entry)

    def _drop_cache(self, cache_id: Any, entry: _Owned) -> _Owned:
        del self.owned[cache_id]
        if self.cache_ids.get(entry.puid) == cache_id:
            del self.cache_ids[entry.puid]
        entry.observer.active = False
        return entry

    # ------------------------------------------------------------------ the peer's objects

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
        releases = self.releases
        this = weakref.ref(self)

        def died(_: Any) -> None:  # inside garbage collection: queue and poke, nothing more
            releases.append((command, key, cell, True))
            tables = this()
            if tables is not None and tables.on_release_queued is not None:
                tables.on_release_queued()
        handles[key] = (weakref.ref(handle, died), cell)
        return handle

    def take_releases(self) -> list[tuple[bytes, Any]]:
        """The ``decref``/``decache`` messages owed now, one per receipt."""
        out: list[tuple[bytes, Any]] = []
        releases = self.releases
        while releases:  # garbage collection may append more meanwhile: they go last
            taken = releases[:]
            del releases[:len(taken)]
            for command, key, cell, from_a_handle in taken:
                if from_a_handle:
                    handles = self.proxies if command == b"decref" else self.held_handles
                    slot = handles.get(key)
                    if slot is not None and slot[1] is cell:
                        del handles[key]
                    if command == b"decache" and key not in self.held:
                        continue  # uncached already: the owner expects nothing more
                out.extend([(command, key)] * cell[0])
        return out

    def release_unread(self, sexp: Any, claimed: list[tuple[bytes, Any]] = ()) -> None:
        """Give back the references in a value that will never be used.

        ``claimed`` lists what an unjellier already turned into live handles
        (those are given back when the handles die, not here).
        """
        remotes, caches = find_references(sexp)
        owed = Counter((b"decref", luid) for luid in remotes if type(luid) is int)
        owed.update((b"decache", cid) for cid in caches if type(cid) is int)
        owed.subtract(item for item in claimed if type(item[1]) is int)
        queued = False
        for (command, key), count in owed.items():
            if count > 0:
                if command == b"decache" and key not in self.held:
                    self._given_back[key] = None
                    while len(self._given_back) > MAX_BROKER_REFS:  # oldest first: bounded
                        del self._given_back[next(iter(self._given_back))]
                self.releases.append((command, key, [count], False))
                queued = True
        if queued and self.on_release_queued is not None:
            self.on_release_queued()

    def held_cache_id(self, cache: Any) -> Any:
        entry = self._held_ids.get(id(cache))
        if entry is None:
            return None
        holder, cache_id = entry
        if holder is not cache and (type(holder) is not weakref.ref or holder() is not cache):
            return None
        return cache_id if cache_id in self.held else None

    def uncache(self, cache_id: Any) -> bool:
        """The owner stopped sending updates for ``cache_id``; False if we never held it."""
        root = self.held.pop(cache_id, None) if type(cache_id) in (int, bytes) else None
        if root is None:
            # A first copy we gave back unread (refused, or its caller gone):
            # the owner answers our decache with uncache, once.
            if cache_id in self._given_back:
                del self._given_back[cache_id]
                return True
            return False
        self._held_ids.pop(id(root), None)
        slot = self.held_handles.pop(cache_id, None)
        handle = None if slot is None else slot[0]()
        if handle is not None:
            self._held_ids.pop(id(handle), None)
        return True

    # ------------------------------------------------------------------ unjelly context

    def unjelly_remote(self, luid: Any, unjellier: Unjellier) -> RemoteReference:
        perspective = unjellier.perspective
        ref = self._live_handle(self.proxies, b"decref", luid,
                                lambda: RemoteReference(self.invoker, luid, perspective))
        unjellier.claimed.append((b"decref", luid))
        return ref

    def unjelly_local(self, luid: Any, unjellier: Unjellier) -> Any:
        obj = self.local(luid)
        if type(obj) is ViewPoint or type(obj) is AsReferenceable:
            return obj.object
        return obj  # None if unknown, as Twisted: the peer may have released it first

    def unjelly_cache(self, local: Any, cache_id: Any, state: Any, unjellier: Unjellier) -> Any:
        """The first copy of a peer's Cacheable: a root we keep, and a handle for the user."""
        if not (isinstance(local, type) and issubclass(local, RemoteCache)):
            shown = qual(local) if isinstance(local, type) else repr(local)
            raise InsecureJelly(f"a Cacheable arrived for {shown}, which is not a "
                                "pb.RemoteCache subclass")
        if cache_id not in self.held and len(self.held) > MAX_BROKER_REFS:
            # As many as a Twisted owner may send (its check is the same '>').
            raise InsecureJelly(f"the peer sent more than {MAX_BROKER_REFS + 1} caches to hold "
                                "on one connection")
        root = local.__new__(local)
        self.held[cache_id] = root
        self._held_ids[id(root)] = (root, cache_id)
        handle = self._cache_handle(cache_id)
        unjellier.claimed.append((b"decache", cache_id))
        handle.__init__()
        set_state(handle, unjellier.unjelly(state))  # user code: setCopyableState
        return handle

    def unjelly_cached(self, cache_id: Any, unjellier: Unjellier) -> Any:
        if cache_id not in self.held:
            raise InsecureJelly(f"the peer re-sent cache {cache_id!r}, which it never sent")
        unjellier.claimed.append((b"decache", cache_id))
        return self._cache_handle(cache_id)

    def unjelly_lcache(self, cache_id: Any, unjellier: Unjellier) -> Any:
        entry = self.owned.get(cache_id)
        if entry is None:
            raise InsecureJelly(f"the peer sent back cache {cache_id!r}, which it does not hold")
        return entry.object

    def _cache_handle(self, cache_id: Any) -> Any:
        def make() -> Any:
            root = self.held[cache_id]
            cls = type(root)
            handle = cls.__new__(cls)
            handle.__dict__ = root.__dict__  # observe_ calls update the root; the handle sees it
            key = id(handle)
            held_ids = self._held_ids
            # Forget the handle when it dies (inside GC: a dict pop, nothing more).
            self._held_ids[key] = (weakref.ref(handle, lambda _: held_ids.pop(key, None)),
                                   cache_id)
            return handle
        return self._live_handle(self.held_handles, b"decache", cache_id, make)

    # ------------------------------------------------------------------ the end

    def clear(self) -> tuple[list[Callable[[], Any]], list[_Owned]]:
        """Forget everything; return (release callbacks owed, owned caches to stop observing)."""
        callbacks = [cb for cbs in self._cleanups.values() for cb in cbs]
        owned = list(self.owned.values())
        for entry in owned:
            entry.observer.active = False
        for table in (self._cleanups, self.owned, self.cache_ids, self.held, self.held_handles,
                      self._held_ids, self.locals, self.luids, self.proxies, self.releases,
                      self._given_back):
            table.clear()
        return callbacks, owned
