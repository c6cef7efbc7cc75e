"""What the protocol core tells its driver: plain, immutable facts.

``Broker.receive_data`` returns a list of these. They are nouns, hold only
data (and the user's own objects they are about), and carry no callable over
the core's state: the driver decides what to run and where.

They are small classes with ``__slots__`` rather than frozen dataclasses:
two are made per call on the hot path, and a frozen dataclass costs four
times as much to make (each field goes through ``object.__setattr__``).
Nothing changes an event once it is made; treat every field as read-only.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["Ready", "IncomingCall", "Cancelled", "Reply", "Released", "StoppedObserving"]


class _Event:
    """Equality and ``repr`` by field, for tests and logs."""

    __slots__ = ()

    def _fields(self) -> list[str]:
        return [name for name in self.__slots__ if not name.startswith("__")]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._fields())

    __hash__ = None  # type: ignore[assignment]  # fields may hold unhashable values

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields())
        return f"{type(self).__name__}({fields})"


class Ready(_Event):
    """The handshake chose ``dialect``: calls may be sent now."""

    __slots__ = ("dialect",)

    def __init__(self, dialect: bytes) -> None:
        self.dialect = dialect


class IncomingCall(_Event):
    """The peer called ``method`` on our ``target``.

    ``args``/``kwargs`` are still s-expressions (or ``plaincodec.Built``
    values); ``dispatch.run_call`` rebuilds them and runs the method.
    ``update`` marks a ``cachemessage``: an ``observe_`` update for a
    ``RemoteCache`` we hold, which must be applied in arrival order.
    ``deadline``: seconds the caller will wait for the answer (``pbgreen``
    peers only). ``object_id``: for an update to a cache whose first copy is
    in a reply not read yet, ``target`` is ``None`` and this id is looked up
    when the update runs.
    """

    __slots__ = ("request_id", "target", "method", "answer", "args", "kwargs", "update",
                 "deadline", "object_id")

    def __init__(self, request_id: int, target: Any, method: str, answer: bool, args: Any,
                 kwargs: Any, update: bool = False, deadline: float | None = None,
                 object_id: Any = None) -> None:
        self.request_id = request_id
        self.target = target
        self.method = method
        self.answer = answer
        self.args = args
        self.kwargs = kwargs
        self.update = update
        self.deadline = deadline
        self.object_id = object_id


class Cancelled(_Event):
    """A ``pbgreen`` peer stopped waiting for its request ``request_id``."""

    __slots__ = ("request_id",)

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id


class Reply(_Event):
    """The answer (``ok``) or error to our request ``request_id``.

    ``pins`` lists our objects and caches the reply sends back (``local``,
    ``lcache``) as ``(tag, id)``: they stay in the tables until the reply is
    read or discarded (``Broker.done_with``), even if the peer's release
    arrives first. ``announced``: first copies of the peer's caches in this
    reply (their updates may follow it).
    """

    __slots__ = ("request_id", "ok", "sexp", "pins", "announced", "__weakref__")

    def __init__(self, request_id: int, ok: bool, sexp: Any,
                 pins: tuple[tuple[bytes, Any], ...] = (),
                 announced: tuple[Any, ...] = ()) -> None:
        self.request_id = request_id
        self.ok = ok
        self.sexp = sexp
        self.pins = pins
        self.announced = announced


class Released(_Event):
    """The peer let go of an object; run these user callbacks (logout, ...)."""

    __slots__ = ("callbacks",)

    def __init__(self, callbacks: tuple[Callable[[], Any], ...]) -> None:
        self.callbacks = callbacks


class StoppedObserving(_Event):
    """The peer dropped its last copy of our ``cacheable``.

    The driver runs ``cacheable.stoppedObserving(perspective, observer)``
    (user code), then ``Broker.send_uncache(cache_id)``.
    """

    __slots__ = ("cache_id", "cacheable", "perspective", "observer")

    def __init__(self, cache_id: int, cacheable: Any, perspective: Any, observer: Any) -> None:
        self.cache_id = cache_id
        self.cacheable = cacheable
        self.perspective = perspective
        self.observer = observer
