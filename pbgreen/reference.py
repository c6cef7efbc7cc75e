"""RemoteReference: what a peer's ``Referenceable`` becomes on this side.

A reference is a thin handle over an *invoker* (the connection driver, which
knows how to wait). It holds no I/O of its own: ``callRemote`` asks the
invoker to send and wait. When the last handle for a peer object is garbage,
a weakref callback queues the decrefs it owes; the driver writes them on its
next flush, never from inside the garbage collector.
"""

from __future__ import annotations

import functools

from typing import Any, Callable

from .errors import InsecureJelly
from .jelly import Jellier, Jellyable

__all__ = ["RemoteReference", "RemoteCacheObserver"]


class RemoteReference(Jellyable):
    """A peer's object, reached by ``callRemote``.

    ``broker`` is the connection it belongs to. Two references are equal when
    they name the same object over the same connection.
    """

    __slots__ = ("broker", "luid", "perspective", "__weakref__")

    def __init__(self, broker: Any, luid: Any, perspective: Any = None) -> None:
        self.broker = broker
        self.luid = luid
        self.perspective = perspective

    def callRemote(self, _name: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``remote_<_name>`` on the peer's object and return its answer.

        Blocks only the calling greenlet. Raises the copied remote error (a
        ``pb.CopiedFailure``), ``pb.InsecureJelly`` if a value is refused,
        ``pb.DeadReferenceError`` at once if the connection is gone, and
        ``pb.PBConnectionLost`` if it dies while waiting. ``pbanswer=False``
        sends the call without waiting for (or getting) an answer.
        """
        return self.broker.call(self, _name, args, kwargs)

    def callRemoteAsync(self, _name: str, *args: Any, **kwargs: Any) -> Any:
        """Start the call and return at once an ``AsyncResult``-like object.

        Its ``.get(timeout=None)`` returns the answer or raises as
        ``callRemote`` would.
        """
        return self.broker.call_async(self, _name, args, kwargs)

    def remoteMethod(self, key: str) -> Callable[..., Any]:
        """Twisted's ``remoteMethod``: a callable that does ``callRemote(key, ...)``."""
        return functools.partial(self.callRemote, key)

    def notifyOnDisconnect(self, callback: Callable[["RemoteReference"], Any]) -> None:
        """Run ``callback(self)`` once when the connection goes."""
        self.broker.notify_on_disconnect(self, callback)

    def dontNotifyOnDisconnect(self, callback: Callable[["RemoteReference"], Any]) -> None:
        """Forget a callback given to ``notifyOnDisconnect``."""
        self.broker.dont_notify_on_disconnect(self, callback)

    def jellyFor(self, jellier: Jellier) -> list[Any]:
        if jellier.context is None:
            raise InsecureJelly("a RemoteReference can only be sent over its own connection")
        return jellier.context.send_back(self)

    def __eq__(self, other: object) -> bool:
        if type(other) is not RemoteReference:
            return NotImplemented
        return self.broker is other.broker and self.luid == other.luid

    def __hash__(self) -> int:
        return hash((id(self.broker), self.luid))

    def __repr__(self) -> str:
        return f"<RemoteReference {self.luid!r} at 0x{id(self):x}>"


class RemoteCacheObserver:
    """Handed to ``Cacheable.getStateToCacheAndObserveFor``: one holder of one cache.

    ``callRemote(name, *args)`` runs ``observe_<name>`` on that holder's
    ``RemoteCache``. It returns ``None`` at once and never raises: the update
    is queued on the connection, in order with everything else sent on it,
    and a holder that is gone is simply skipped.
    """

    __slots__ = ("broker", "cacheable", "perspective", "cache_id", "active")

    def __init__(self, broker: Any, cacheable: Any, perspective: Any, cache_id: Any) -> None:
        self.broker = broker
        self.cacheable = cacheable
        self.perspective = perspective
        self.cache_id = cache_id
        self.active = True

    def callRemote(self, _name: str, *args: Any, **kwargs: Any) -> None:
        """Push ``observe_<_name>(*args, **kwargs)`` to the holder; returns at once."""
        if self.active:
            self.broker.observe(self, _name, args, kwargs)

    def __eq__(self, other: object) -> bool:
        if type(other) is not RemoteCacheObserver:
            return NotImplemented
        return (self.broker is other.broker and self.cacheable is other.cacheable
                and self.perspective is other.perspective)

    def __hash__(self) -> int:
        return hash((id(self.broker), id(self.cacheable), id(self.perspective)))

    def __repr__(self) -> str:
        return f"<RemoteCacheObserver cache {self.cache_id!r} on {self.broker!r}>"
