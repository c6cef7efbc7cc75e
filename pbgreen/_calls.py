"""Calls out over one connection: sending, waiting, abandoning, cache updates.

How it works. ``CallsOut`` is the half of ``Connection`` that callers use.
A call is jellied and queued in the broker in one step (``dispatch``), and
the caller's token waits under its request id in ``_waiting``: a ``_Wait``
(a ``gevent.hub.Waiter``) for ``callRemote``, a ``CallResult`` (a gevent
``AsyncResult``) for ``callRemoteAsync``. The reader hands each reply to its
token; a caller that stops waiting (a timeout, a kill, ``call_timeout``)
abandons its id, so the late answer is dropped, its references are given
back, and a pbgreen peer is told to stop the method.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.hub import Waiter

from . import dispatch
from ._fanout import shared_tail
from ._refs import NotOpen
from ._workers import hand_over
from .errors import ClosedLocally, CopiedFailure, DeadReferenceError
from .plaincodec import Built
from .events import Reply
from .reference import RemoteReference

__all__ = ["CallsOut", "CallResult"]

log = logging.getLogger("pbgreen.connection")

DROP_FACTOR = 4  # a cache holder this many high-water marks behind is dropped


class CallResult(AsyncResult):
    """What ``callRemoteAsync`` returns: a gevent ``AsyncResult`` for the answer.

    ``get(timeout=None)`` returns the answer or raises exactly as
    ``callRemote`` would (``gevent.Timeout`` if ``timeout`` passes first);
    ``ready()``, ``successful()``, ``value``, ``exception``, ``wait()`` and
    ``rawlink()`` work as on any ``AsyncResult``, so ``gevent.wait`` and
    ``gevent.joinall`` accept it. The answer is rebuilt in the greenlet that
    first asks for it. An answer nobody reads gives its references back when
    this object is garbage.
    """

    def __init__(self, connection: "Any", perspective: Any) -> None:
        super().__init__()
        self._connection = connection
        self._perspective = perspective
        self._read = False
        self._answer: Any = None
        self._error: BaseException | None = None

    def read(self) -> None:
        """Rebuild the answer now (in this greenlet) instead of at the first ``get()``."""
        self._outcome()

    def _outcome(self) -> None:
        if self._read:
            return
        self._read = True
        reply = super().value
        if reply is None:  # pbanswer=False
            return
        try:
            self._answer = self._connection._outcome(reply, self._perspective)
        except Exception as exc:
            self._error = exc

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The answer, or the remote error raised (see ``callRemote``)."""
        super().get(block, timeout)  # raises PBConnectionLost, gevent.Timeout
        self._outcome()
        if self._error is not None:
            raise self._error
        return self._answer

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(block=False)

    @property
    def value(self) -> Any:
        """The answer once it arrived without error, else ``None``."""
        if not self.ready() or super().exception is not None:
            return None
        self._outcome()
        return self._answer

    @property
    def exception(self) -> BaseException | None:
        """The error the call raised (remote, refused, connection lost), else ``None``."""
        if not self.ready():
            return None
        lost = super().exception
        if lost is not None:
            return lost
        self._outcome()
        return self._error

    def successful(self) -> bool:
        """Whether the answer arrived and is not an error."""
        return self.ready() and self.exception is None

    def deliver(self, reply: Reply, direct: bool) -> bool:
        self.set(reply)
        return False

    def __del__(self) -> None:
        # Only queues decrefs (no I/O): the driver writes them on its next flush.
        if not self._read and self.ready() and super().exception is None:
            reply = super().value
            if reply is not None:
                self._connection._discard(reply)


class _Wait:
    """The token of a blocking call: the reader hands the reply to the waiting greenlet."""

    __slots__ = ("waiter", "run_callback", "connection")

    def __init__(self, connection: "Any") -> None:
        self.waiter = Waiter()
        self.connection = connection
        self.run_callback = connection.run_callback

    def deliver(self, reply: Reply, direct: bool) -> bool:
        if direct and self.waiter.greenlet is not None:
            return hand_over(self.waiter, reply, self.run_callback, direct)
        self.run_callback(self._switch_or_discard, reply)
        return False

    def _switch_or_discard(self, reply: Reply) -> None:
        # Queued on the hub: the caller may have been killed meanwhile, and
        # then nobody would read the reply: give back what it holds.
        if self.waiter.greenlet is None:
            self.connection._discard(reply)
        else:
            self.waiter.switch(reply)

    def set_exception(self, exc: BaseException) -> None:
        self.run_callback(self.waiter.throw, exc)


class FlushSoon:
    """Flushes, once per turn of one hub's loop, every connection that queued cache updates.

    A setter notifies its observers one after another without yielding; each
    connection is added here at its first update (``add``) and written once,
    with all its updates together, from one hub callback after the setter
    gives up the CPU. One per hub (``for_hub``): each thread has its own.
    """

    __slots__ = ("_run_callback", "_due", "__weakref__")

    def __init__(self, loop: Any) -> None:
        self._run_callback = loop.run_callback
        self._due: list[Any] = []

    @classmethod
    def for_hub(cls, hub: Any) -> "FlushSoon":
        """The one ``FlushSoon`` of ``hub``."""
        batch = _flush_soon.get(hub)
        if batch is None:
            batch = _flush_soon[hub] = cls(hub.loop)
        return batch

    def add(self, connection: Any) -> None:
        """Flush ``connection`` in this turn's callback (it set ``_flush_due``)."""
        if not self._due:
            self._run_callback(self._flush)
        self._due.append(connection)

    def _flush(self) -> None:
        due, self._due = self._due, []
        for connection in due:
            connection._flush_due = False  # its next update schedules the next flush
            if not connection.closed:
                try:
                    connection.flush()
                except Exception:  # one connection's failure must not hold back the others
                    log.exception("could not flush cache updates to %s", connection.peer)


_flush_soon: "weakref.WeakKeyDictionary[Any, FlushSoon]" = weakref.WeakKeyDictionary()


class CallsOut:
    """Calls from this side (mixed into ``Connection``; see the module docstring)."""

    def _dead(self, name: str) -> DeadReferenceError:
        error = DeadReferenceError(f"Calling Stale Broker: the connection to {self.peer} is "
                                   f"gone ({self.close_reason}); reconnect to call {name!r}")
        error.__cause__ = self._cause
        return error

    def _send(self, ref: RemoteReference, name: str, args: tuple[Any, ...],
              kwargs: dict[str, Any], token: Any) -> int | None:
        if self.closed:
            raise self._dead(name)
        if "pbanswer" in kwargs and not kwargs.pop("pbanswer"):
            token = None
        if self.writer.greenlet is not None:  # bytes wait for the socket
            self.wait_writable()
        if self.closed:
            raise self._dead(name)
        timers = self.call_timers if token is not None else None
        try:
            request_id = dispatch.send_call(self.protocol, ref.luid, name, args, kwargs,
                                            ref.perspective, token is not None,
                                            deadline=None if timers is None else timers.seconds)
        except NotOpen:  # it closed while the arguments were prepared (user code yielded)
            raise self._dead(name)  # its __cause__ says why the connection went
        if token is not None:
            self._waiting[request_id] = token
            if timers is not None:
                timers.start(request_id, name)
        self.flush()  # never waits: nothing can interrupt the call half-sent
        return request_id if token is not None else None

    def _abandon(self, request_id: int) -> None:
        """Nobody waits for ``request_id`` any more (a timeout, a kill, ``call_timeout``)."""
        self._waiting.pop(request_id, None)
        if self.call_timers is not None:
            self.call_timers.stop(request_id)
        if request_id in self.protocol.pending:
            self.protocol.abandon(request_id)
            self.protocol.send_cancel(request_id)  # a pbgreen peer stops the method
            self._wake.send()

    def _call_expired(self, request_id: int, name: str) -> None:
        token = self._waiting.get(request_id)
        if token is None:
            return
        self._abandon(request_id)
        token.set_exception(self.call_timers.error(name, self.peer))

    def call(self, ref: RemoteReference, name: str, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
        """Send a call and block this greenlet until its answer (see ``callRemote``)."""
        token = _Wait(self)
        request_id = self._send(ref, name, args, kwargs, token)
        if request_id is None:
            return None
        waiter = token.waiter
        reply = None
        try:
            reply = waiter.get()
        finally:
            if reply is None:  # stopped waiting: timeout, kill, or the connection died
                if waiter.ready() and waiter.successful():  # it came, but too late
                    self._discard(waiter.value)
                else:
                    self._abandon(request_id)
        return self._outcome(reply, ref.perspective)

    def call_async(self, ref: RemoteReference, name: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> CallResult:
        """Send a call; return a ``CallResult`` to collect the answer later."""
        result = CallResult(self, ref.perspective)
        if self._send(ref, name, args, kwargs, result) is None:
            result.set(None)  # pbanswer=False: there is no answer to wait for
        return result

    def _outcome_of(self, reply: Reply, perspective: Any) -> Any:
        value = dispatch.read_reply(self.protocol, reply, perspective)
        if self.protocol.tables.releases:  # what reading it gave back goes out now
            self.flush()
        return value

    def _outcome(self, reply: Reply, perspective: Any) -> Any:
        sexp = reply.sexp
        if type(sexp) is Built and reply.ok:  # plain data: nothing pinned, nothing to release
            return sexp.value
        value = self._outcome_of(reply, perspective)
        # An answer that *is* a failure (a Twisted method returned a
        # CopyableFailure) fails the call, as it fails a Twisted caller's Deferred.
        if not reply.ok or isinstance(value, CopiedFailure):
            raise value
        return value

    def _discard(self, reply: Reply) -> None:
        owed = self.protocol.discard(reply)
        if owed:
            gevent.spawn(self._settle, owed)
        if not self.closed:
            self._wake.send()

    def observe(self, observer: Any, name: str, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> None:
        """Queue a cache update (``RemoteCacheObserver.callRemote``); never blocks or raises."""
        if self.closed:
            return
        protocol = self.protocol
        try:
            # No answer asked for: nothing to keep per update, whatever the holder does.
            tail = shared_tail(name, args, kwargs, protocol.vocab)
            if tail is not None:  # plain immutable data: encoded once for all observers
                protocol.send_update(observer.cache_id, tail)
            else:
                dispatch.send_call(protocol, observer.cache_id, name, args, kwargs,
                                   observer.perspective, False, cache=True)
        except NotOpen:
            return
        except Exception:
            log.warning("could not send cache update %r to %s", name, self.peer, exc_info=True)
            return
        # Bytes wait in the writer only while its greenlet runs: otherwise the
        # broker's queue alone is what is buffered (no property calls per update).
        limit = self._drop_at
        if (len(protocol.output) > limit or self.writer.greenlet is not None) \
                and self.writer.buffered > limit:
            log.warning("dropping cache holder %s: more than %d bytes of updates wait for it",
                        self.peer, limit)
            self._lost(ClosedLocally("the cache holder fell too far behind"))
            return
        if not self._flush_due:  # the hub flushes soon; the setter goes on at once
            self._flush_due = True
            self._flush_soon.add(self)

