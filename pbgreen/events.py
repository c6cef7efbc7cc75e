"""What the protocol core tells its driver: plain, immutable facts.

``Broker.receive_data`` returns a list of these. They are nouns, hold only
data (and the user's own objects they are about), and carry no callable over
the core's state: the driver decides what to run and where.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Ready", "IncomingCall", "Cancelled", "Reply", "Released", "StoppedObserving"]


@dataclass(frozen=True, slots=True)
class Ready:
    """The handshake chose ``dialect``: calls may be sent now."""

    dialect: bytes


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """The peer called ``method`` on our ``target``.

    ``args``/``kwargs`` are still s-expressions (or ``plaincodec.Built``
    values); ``dispatch.run_call`` rebuilds them and runs the method.
    ``update`` marks a ``cachemessage``: an ``observe_`` update for a
    ``RemoteCache`` we hold, which must be applied in arrival order.
    """

    request_id: int
    target: Any
    method: str
    answer: bool
    args: Any
    kwargs: Any
    update: bool = False
    #: Seconds the caller will wait for the answer (``pbgreen`` peers only).
    deadline: float | None = None
    #: For an update to a cache whose first copy is in a reply not read yet:
    #: ``target`` is ``None`` and this id is looked up when the update runs.
    object_id: Any = None


@dataclass(frozen=True, slots=True)
class Cancelled:
    """A ``pbgreen`` peer stopped waiting for its request ``request_id``."""

    request_id: int


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Reply:
    """The answer (``ok``) or error to our request ``request_id``.

    ``pins`` lists our objects and caches the reply sends back (``local``,
    ``lcache``) as ``(tag, id)``: they stay in the tables until the reply is
    read or discarded (``Broker.done_with``), even if the peer's release
    arrives first.
    """

    request_id: int
    ok: bool
    sexp: Any
    pins: tuple[tuple[bytes, Any], ...] = ()
    #: First copies of the peer's caches in this reply (their updates may follow it).
    announced: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Released:
    """The peer let go of an object; run these user callbacks (logout, ...)."""

    callbacks: tuple[Callable[[], Any], ...]


@dataclass(frozen=True, slots=True)
class StoppedObserving:
    """The peer dropped its last copy of our ``cacheable``.

    The driver runs ``cacheable.stoppedObserving(perspective, observer)``
    (user code), then ``Broker.send_uncache(cache_id)``.
    """

    cache_id: int
    cacheable: Any
    perspective: Any
    observer: Any
