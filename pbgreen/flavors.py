"""The PB flavors: how each kind of object crosses the wire.

By reference: ``Referenceable`` (``remote_*``), ``Root``, ``Viewable``
(``view_*``, with the caller's avatar) and ``Avatar`` (``perspective_*``).
By value: ``Copyable`` -> ``RemoteCopy``. By value, kept in sync:
``Cacheable`` -> ``RemoteCache`` (``observe_*``).

These are plain classes. Serializing one asks the per-call jelly *context*
(the connection's tables) for an id; dispatching a call asks the object for
the method a wire name may reach. Only names with the flavor's prefix are
ever reachable.
"""

from __future__ import annotations

from typing import Any, Callable

from .errors import InsecureJelly, NoSuchMethod, qual
from .jelly import Jellier, Jellyable

__all__ = ["Referenceable", "Root", "Viewable", "ViewPoint", "Avatar", "AsReferenceable",
           "Copyable", "RemoteCopy", "Cacheable", "RemoteCache", "Serializable"]


class Serializable(Jellyable):
    """Base of every flavor."""

    def processUniqueID(self) -> Any:
        """The key identifying this object in a connection's tables."""
        return id(self)


def _method(obj: Any, prefix: str, name: str, missing: type[Exception]) -> Callable[..., Any]:
    method = getattr(obj, prefix + name, None) if name.isidentifier() else None
    if method is None or not callable(method):
        raise missing(f"No such method: {prefix}{name}")
    return method


class Referenceable(Serializable):
    """Passed by reference; the peer calls its ``remote_*`` methods.

    ``perspective`` is the perspective used to serialize the arguments and
    answers of calls on this object (``None`` unless set).
    """

    perspective: Any = None

    def jellyFor(self, jellier: Jellier) -> list[Any]:
        return _context(jellier, self).reference(self)

    def remoteMethod(self, name: str) -> tuple[Callable[..., Any], Any]:
        """The callable that a call to ``name`` runs, and its perspective."""
        return _method(self, "remote_", name, NoSuchMethod), self.perspective


class Root(Referenceable):
    """A ``Referenceable`` a server hands out as its root object.

    Override ``rootObject(broker)`` to give each connection its own root.
    """

    def rootObject(self, broker: Any) -> "Referenceable":
        """The root for one new connection (this object, by default)."""
        return self


class ViewPoint(Referenceable):
    """A ``Viewable`` as seen by one perspective (one per pair)."""

    def __init__(self, perspective: Any, obj: "Viewable") -> None:
        self.perspective = perspective
        self.object = obj

    def processUniqueID(self) -> Any:
        return (id(self.perspective), id(self.object))

    def remoteMethod(self, name: str) -> tuple[Callable[..., Any], Any]:
        method = _method(self.object, "view_", name, AttributeError)
        perspective = self.perspective

        def call(*args: Any, **kwargs: Any) -> Any:
            return method(perspective, *args, **kwargs)
        return call, perspective


class Viewable(Serializable):
    """Passed by reference; ``view_*`` methods get the caller's avatar first."""

    def jellyFor(self, jellier: Jellier) -> list[Any]:
        return _context(jellier, self).reference(ViewPoint(jellier.perspective, self))


class Avatar(Referenceable):
    """A logged-in user's perspective; the peer calls ``perspective_*`` methods."""

    def remoteMethod(self, name: str) -> tuple[Callable[..., Any], Any]:
        return _method(self, "perspective_", name, AttributeError), self


class AsReferenceable(Referenceable):
    """Exposes ``prefix_*`` methods of any object (an avatar that is not a flavor)."""

    def __init__(self, obj: Any, prefix: str = "perspective") -> None:
        self.object = obj
        self.prefix = prefix + "_"

    def processUniqueID(self) -> Any:
        return id(self.object)

    def remoteMethod(self, name: str) -> tuple[Callable[..., Any], Any]:
        return _method(self.object, self.prefix, name, AttributeError), self.object


class Copyable(Serializable):
    """Passed by value: the receiver gets a ``RemoteCopy`` built from its state."""

    _pb_tracked = True

    def getStateToCopy(self) -> Any:
        """The state to send (default: ``__dict__``)."""
        return self.__dict__

    def getStateToCopyFor(self, perspective: Any) -> Any:
        """The state to send to ``perspective`` (default: ``getStateToCopy()``)."""
        return self.getStateToCopy()

    def getTypeToCopy(self) -> str:
        """The class name the receiver looks up (default: this class's qualified name)."""
        return qual(type(self))

    def getTypeToCopyFor(self, perspective: Any) -> str:
        """The class name sent to ``perspective`` (default: ``getTypeToCopy()``)."""
        return self.getTypeToCopy()

    def jellyFor(self, jellier: Jellier) -> list[Any]:
        perspective = jellier.perspective
        node: list[Any] = [self.getTypeToCopyFor(perspective).encode("utf-8")]
        state = self.getStateToCopyFor(perspective)
        jellier._keep.append(state)
        jellier.into(state, node)
        return node


class RemoteCopy:
    """The receiving side of a ``Copyable``; built without calling ``__init__``."""

    def setCopyableState(self, state: Any) -> None:
        """Install the sender's state (default: it becomes ``__dict__``)."""
        if isinstance(state, dict):
            if any(type(k) is bytes for k in state):
                state = {k.decode() if type(k) is bytes else k: v for k, v in state.items()}
            self.__dict__ = state
        else:
            raise TypeError(f"{qual(type(self))} received state {state!r:.60}; "
                            "override setCopyableState to accept it")


class Cacheable(Copyable):
    """Copied once per connection, then kept in sync through an observer."""

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        """The state to send; keep ``observer`` to push updates (default: ``getStateToCopyFor``)."""
        return self.getStateToCopyFor(perspective)

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:
        """The peer dropped its last copy, or disconnected; forget ``observer``."""

    def jellyFor(self, jellier: Jellier) -> list[Any]:
        return _context(jellier, self).cache(self, jellier)


class RemoteCache(RemoteCopy, Jellyable):
    """The receiving side of a ``Cacheable``; ``observe_*`` methods get updates.

    Built without arguments: ``__init__()`` is called with none, then
    ``setCopyableState(state)``. Every copy handed out for one cache shares
    one ``__dict__``, which ``observe_*`` methods update. When the last copy
    is garbage the owner is told and its ``stoppedObserving`` runs. Sending
    it back to its owner delivers the original ``Cacheable``.
    """

    def __init__(self) -> None:
        pass

    def setCopyableState(self, state: Any) -> None:
        """Install the owner's state (default: update ``__dict__`` from a dict)."""
        if isinstance(state, dict):
            self.__dict__.update({k.decode() if type(k) is bytes else k: v
                                  for k, v in state.items()})
        else:
            raise TypeError(f"{qual(type(self))} received state {state!r:.60}; "
                            "override setCopyableState to accept it")

    def jellyFor(self, jellier: Jellier) -> list[Any]:
        return _context(jellier, self).send_back_cache(self)

    def remoteMethod(self, name: str) -> tuple[Callable[..., Any], Any]:
        return _method(self, "observe_", name, AttributeError), None


def _context(jellier: Jellier, obj: Any) -> Any:
    context = jellier.context
    if context is None:
        raise InsecureJelly(f"{qual(type(obj))} can only be sent over a PB connection")
    return context
