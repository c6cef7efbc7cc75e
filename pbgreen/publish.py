"""Published objects: caches whose state a client keeps across sessions.

Twisted's ``twisted.spread.publish``, on the same wire and with the same
semantics, blocking instead of Deferreds.

How it works. A ``Publishable`` is a ``Cacheable`` whose cached state is only
metadata: a ``remote`` reference (a view of the object for the receiving
perspective), ``publishedID``, ``perspective`` and ``service`` names, and a
``timestamp`` that ``republish()`` sets to the current time. The state that
matters is fetched separately, by calling ``getStateToPublish`` on that
``remote`` (``view_getStateToPublish`` on the publisher).

On the receiver, ``RemotePublished.setCopyableState`` looks for a copy kept
from an earlier session under the same key (``getFileName()``: service,
perspective and publishedID). If that copy has the same ``timestamp``, it is
used at once and nothing is fetched; otherwise a greenlet fetches the state.
Either way the copy becomes *activated*: ``isActivated`` turns true,
``callWhenActivated`` callbacks and ``activated()`` run, and the state is
kept for the next session. ``whenReady(copy)`` blocks the calling greenlet
until then. So the state travels again only after the publisher's
``republish()``.

Where the copies are kept: Twisted writes each one to a ``.pub`` file in the
current directory and reads it back with an unrestricted unjelly; pbgreen
keeps them in this process's memory (``MAX_KEPT`` of them, least recently
used dropped first), and never reads a file.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Callable

import gevent
from gevent.event import Event

from ._calls import CallResult
from .flavors import Cacheable, RemoteCache, ViewPoint

__all__ = ["Publishable", "RemotePublished", "whenReady", "MAX_KEPT"]

log = logging.getLogger("pbgreen")

#: How many published copies this process keeps for later sessions.
MAX_KEPT = 1000

# getFileName() -> (timestamp, published state), most recently used last.
_kept: "OrderedDict[str, tuple[Any, dict[str, Any]]]" = OrderedDict()


class Publishable(Cacheable):
    """An object whose cached state persists across the receivers' sessions.

    Subclasses implement ``getStateToPublish()`` (or
    ``getStateToPublishFor(perspective)``) and call ``republish()`` when that
    state changes, so receivers fetch it again in their next session.
    """

    publishedID: Any
    timestamp: float

    def __init__(self, publishedID: Any) -> None:
        self.republish()
        self.publishedID = publishedID

    def republish(self) -> None:
        """Mark the published state as changed: receivers fetch it again next session.

        Copies already handed out are not updated (as in Twisted).
        """
        self.timestamp = time.time()

    def view_getStateToPublish(self, perspective: Any) -> Any:
        """What a receiver's copy calls to fetch the state (through its view)."""
        return self.getStateToPublishFor(perspective)

    def getStateToPublishFor(self, perspective: Any) -> Any:
        """The state to publish to ``perspective`` (default: ``getStateToPublish()``)."""
        return self.getStateToPublish()

    def getStateToPublish(self) -> dict[str, Any]:
        """The state to publish, a dictionary: implement this."""
        raise NotImplementedError(f"{type(self).__qualname__}.getStateToPublish")

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> dict[str, Any]:
        """The metadata a receiver's copy is built from (Twisted's five keys)."""
        name = getattr(perspective, "perspectiveName", None) if perspective else None
        service = getattr(perspective, "getService", None) if perspective else None
        service_name = getattr(service(), "serviceName", None) if callable(service) else None
        return {
            "remote": ViewPoint(perspective, self),
            "publishedID": self.publishedID,
            "perspective": "None" if name is None else name,
            "service": "None" if service_name is None else service_name,
            "timestamp": self.timestamp,
        }


class RemotePublished(RemoteCache):
    """The receiver's copy of a ``Publishable``; register it for the publisher's class.

    ``pb.setUnjellyableForClass("module.MyPublishable", MyRemotePublished)``,
    as for any cache. Once activated, the published state's keys are
    attributes of the copy.
    """

    isActivated = False
    _wasCleanWhenLoaded = False

    remote: Any
    publishedID: Any
    perspective: Any
    service: Any
    timestamp: Any

    def getFileName(self, ext: str = "pub") -> str:
        """The key this copy is kept under between sessions (Twisted's file name)."""
        return f"{self.service}-{self.perspective}-{self.publishedID}.{ext}"

    def setCopyableState(self, state: Any) -> None:
        """Install the metadata, then use the kept copy or start fetching the state."""
        super().setCopyableState(state)
        self._activationListeners: list[Callable[[Any], Any]] = []
        self._activation = Event()
        self._activationError: BaseException | None = None
        key = self.getFileName()
        kept = _kept.get(key)
        if kept is not None and kept[0] == self.timestamp:
            _kept.move_to_end(key)
            self._wasCleanWhenLoaded = True
            self._cbGotUpdate(dict(kept[1]))
        else:
            gevent.spawn(self._fetch)

    def _fetch(self) -> None:
        try:
            state = self.remote.callRemote("getStateToPublish")
            if not isinstance(state, dict):
                raise TypeError(f"getStateToPublish answered {type(state).__name__}, "
                                "not a dictionary")
        except Exception as exc:
            log.warning("could not fetch published state %s: %s", self.getFileName(), exc)
            self._activationError = exc
            self._activation.set()
            return
        self._cbGotUpdate(state)

    def _cbGotUpdate(self, newState: dict[str, Any]) -> None:
        """The published state arrived (or was kept): activate this copy."""
        self.__dict__.update({k.decode() if type(k) is bytes else k: v
                              for k, v in newState.items()})
        self.isActivated = True
        listeners, self._activationListeners = self._activationListeners, []
        self._activation.set()
        for listener in listeners:
            listener(self)
        self.activated()
        key = self.getFileName()
        _kept[key] = (self.timestamp, dict(newState))
        _kept.move_to_end(key)
        while len(_kept) > MAX_KEPT:
            _kept.popitem(last=False)

    def activated(self) -> None:
        """Override to be told when the published state is in."""

    def callWhenActivated(self, callback: Callable[[Any], Any]) -> None:
        """Call ``callback(self)`` once the published state is in (at once if it is)."""
        if self.isActivated:
            callback(self)
        else:
            self._activationListeners.append(callback)


def whenReady(remote_published: "RemotePublished | CallResult", timeout: float | None = None) -> RemotePublished:
    """Block this greenlet until ``remote_published`` is activated; return it.

    Twisted's ``whenReady`` takes the Deferred of the call that returns the
    copy; here pass the copy, or the ``callRemoteAsync`` result of that call
    (its answer is waited for first). Raises the error if fetching the state
    failed, ``TimeoutError`` if ``timeout`` seconds pass first.
    """
    if isinstance(remote_published, CallResult):
        remote_published = remote_published.get(timeout=timeout)
    if not isinstance(remote_published, RemotePublished):
        raise TypeError(f"whenReady takes a publish.RemotePublished, not "
                        f"{type(remote_published).__name__}: register your RemotePublished "
                        "subclass for the publisher's class")
    if not remote_published._activation.wait(timeout):
        raise TimeoutError(f"published state {remote_published.getFileName()} did not arrive "
                           f"within {timeout} s")
    error = remote_published._activationError
    if error is not None:
        raise error
    return remote_published
