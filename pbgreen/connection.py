"""The gevent driver: one socket, one ``Broker``, greenlets around them.

How it works.

* **Reading.** One reader greenlet (``run``) receives bytes, feeds the
  broker and routes the events; it never runs user code. After each batch
  it flushes, and if the hub has not run since the last read (``recv``
  does not yield while data is waiting; ``gevent.sleep(0)`` runs callbacks
  but polls no sockets) it yields until the hub is idle (``gevent.idle()``),
  so one busy peer cannot starve every other connection. It stops reading
  (back-pressure) while the incoming-call backlog is non-empty and the
  output is over the high-water mark, or while too many cache updates wait
  to be applied.
* **Writing: one writer** (``_writer.Writer``): a non-blocking ``send``
  that cannot be interrupted, and a writer greenlet for the rest, the only
  code that ever waits on the socket's write side.
* **High-water mark.** Callers and workers wait before queuing a call or
  starting one while more than ``high_water`` bytes are queued. Cache
  updates never wait; a holder that falls more than ``4 × high_water``
  behind is dropped (its caches get ``stoppedObserving``).
* **Incoming calls** (``_workers.Workers``) run in worker greenlets, at most
  ``max_calls`` at once; each answer is flushed as soon as it is queued.
* **Waiting.** A blocking call waits on a ``gevent.hub.Waiter`` under its
  request id; a caller that stops waiting (timeout, kill) abandons the id:
  the late answer is dropped and the references in it given back.
* **Decrefs.** Garbage collection of a ``RemoteReference`` only queues a
  release and pokes an async watcher; the hub then flushes.
"""

from __future__ import annotations

import logging
import socket as _stdlib_socket
import weakref
from typing import Any, Callable

import gevent
from gevent.event import AsyncResult, Event
from gevent.hub import Waiter

from . import dispatch
from ._workers import Workers, hand_over
from ._writer import HIGH_WATER, Writer
from ._refs import NotOpen
from .errors import (ClosedByPeer, ClosedLocally, DeadReferenceError, PBConnectionLost,
                     ProtocolError)
from ._liveness import CallTimers, IdleTimer, Keepalive
from .events import Cancelled, IncomingCall, Ready, Released, Reply, StoppedObserving
from .jelly import SecurityOptions
from .protocol import Broker
from .reference import RemoteReference

__all__ = ["Connection", "CallResult", "live_connections", "HIGH_WATER"]

log = logging.getLogger("pbgreen.connection")

RECV_SIZE = 256 * 1024
DROP_FACTOR = 4  # a cache holder this many high-water marks behind is dropped

_live: "weakref.WeakSet[Connection]" = weakref.WeakSet()


def live_connections() -> list["Connection"]:
    """Every connection of this process that is not closed yet."""
    return [c for c in list(_live) if not c.closed]


def wrap_tls(sock: Any, context: Any, *, server_side: bool,
             server_hostname: str | None = None) -> Any:
    """Wrap a gevent socket for TLS with a standard ``ssl.SSLContext``.

    gevent's own ``SSLSocket`` is used so the handshake and every read and
    write wait cooperatively; the handshake is left to the caller, who bounds
    it with a deadline.
    """
    from gevent import ssl as gevent_ssl

    return gevent_ssl.SSLSocket(sock=sock, server_side=server_side,
                                server_hostname=server_hostname,
                                do_handshake_on_connect=False, _context=context)


def set_nodelay(sock: Any) -> None:
    """Turn off Nagle: PB sends small messages and waits for answers."""
    try:
        sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not TCP (a UNIX socket in tests), nothing to tune


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

    def __init__(self, connection: "Connection", perspective: Any) -> None:
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

    def __init__(self, connection: "Connection") -> None:
        self.waiter = Waiter()
        self.connection = connection
        self.run_callback = connection._hub.loop.run_callback

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


class Connection:
    """One PB connection driven by gevent; ``RemoteReference.broker`` is this.

    Args:
        sock: a connected gevent socket (or SSL socket).
        is_client: ``True`` if we connected (we pick the dialect).
        root: the object the peer reaches as ``root`` (acceptor only).
        security: ``jelly.SecurityOptions`` for what may arrive.
        unsafe_tracebacks: send full tracebacks with errors.
        max_calls: incoming calls allowed to run at once on this connection;
            more wait their turn (up to ten times as many), past that they are
            answered with an error.
        high_water: bytes queued for the peer past which callers and
            workers wait (see ``docs/limits.md``).
        call_timeout: seconds each call waits for its answer before it
            raises ``pb.CallTimeout`` (``None``: no deadline).
        keepalive: seconds of silence from the peer before it is probed; a
            peer silent through the probe is declared dead (``None``: off).
        idle_timeout: close the connection once no call went either way and
            none ran for this many seconds (``None``: never).
    """

    def __init__(self, sock: Any, *, is_client: bool, root: Any = None,
                 security: SecurityOptions | None = None, unsafe_tracebacks: bool = False,
                 max_calls: int = 1000, peer: Any = None, high_water: int = HIGH_WATER,
                 call_timeout: float | None = None, keepalive: float | None = None,
                 idle_timeout: float | None = None, **decoder_options: Any) -> None:
        self.sock = sock
        self.peer = peer
        self.high_water = high_water
        self.protocol = Broker(is_client=is_client, root=root, security=security,
                               unsafe_tracebacks=unsafe_tracebacks, invoker=self,
                               **decoder_options)
        self.protocol.peer = peer
        self.protocol.reader_write_limit = DROP_FACTOR * high_water
        self.ready = Event()
        self.closed = False
        self.close_reason: Any = None
        self._cause: BaseException | None = None
        self._waiting: dict[int, Any] = {}  # request id -> token of whoever waits
        #: Called at once, in the greenlet that notices the loss, before any
        #: waiting call wakes (library code only: it must not block or raise).
        self.lost_hooks: list[Callable[[], Any]] = []
        self._notify: list[tuple[RemoteReference, Callable[[RemoteReference], Any]]] = []
        self._reader: gevent.Greenlet | None = None
        self._hub = gevent.get_hub()
        self.workers = Workers(self, max_calls)
        self.writer = Writer(sock, self.protocol, high_water, self._lost, self.workers.wake)
        self._wake = self._hub.loop.async_()
        self._wake.start(self.flush)
        self._wake.ref = False
        self.protocol.tables.on_release_queued = self._wake.send
        loop = self._hub.loop
        self.call_timers = (None if call_timeout is None
                            else CallTimers(loop, call_timeout, self._call_expired))
        self._keepalive_seconds = keepalive
        self.keepalive: Keepalive | None = None  # started once the handshake is done
        self.idle_timer = (None if idle_timeout is None
                           else IdleTimer(loop, idle_timeout, self._idle, self._lost))
        _live.add(self)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<pbgreen.Connection {self.peer!r} {state}>"

    @property
    def connected(self) -> bool:
        """Whether calls can still be made."""
        return not self.closed

    @property
    def max_calls(self) -> int:
        """Incoming calls allowed to run at once."""
        return self.workers.max_calls

    @property
    def buffered(self) -> int:
        """Bytes queued for the peer and not yet written."""
        return self.writer.buffered

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Read in a new greenlet (clients); servers call ``run`` directly."""
        self._reader = gevent.spawn(self.run)

    def run(self, handshake_timeout: float | None = None) -> None:
        """Read until the connection ends; the reader greenlet's body.

        With ``handshake_timeout``, a peer that has not finished the PB
        handshake by then is disconnected.
        """
        cause: BaseException | None = None
        protocol = self.protocol
        recv = self.sock.recv
        loop = self._hub.loop
        workers = self.workers
        tables = protocol.tables
        timers = self.call_timers
        idle_timer = self.idle_timer
        watchdog = None
        if handshake_timeout is not None:
            watchdog = gevent.spawn_later(handshake_timeout, self._handshake_expired,
                                          handshake_timeout)
        try:
            self.flush()  # an acceptor offers its dialects first
            while not self.closed:
                if (workers.backlog or workers.updates) and workers.must_pause(self):
                    self.workers.wait_resume(self)
                    continue
                iteration = loop.iteration
                data = recv(RECV_SIZE)
                if not data:
                    protocol.receive_eof()
                    cause = ClosedByPeer(f"{self.peer} closed the connection")
                    break
                if self.keepalive is not None:
                    self.keepalive.last_heard = loop.now()
                direct = True
                queued_before = protocol.buffered
                events = protocol.receive_data(data)
                # Bytes the broker wrote itself (errors, pongs, releases), before
                # any event ran: a peer can make us write these without reading.
                wrote = protocol.buffered > queued_before
                if idle_timer is not None and events:
                    idle_timer.last_active = loop.now()
                for event in events:
                    if type(event) is Reply:  # the common case, inline
                        token = self._waiting.pop(event.request_id, None)
                        if timers is not None:
                            timers.stop(event.request_id)
                        if token is None:  # its caller gave up in the meantime
                            self._discard(event)
                        else:
                            direct = token.deliver(event, direct) and direct
                            if event.announced and type(token) is CallResult:
                                # Build its cache copies now, in arrival order, not
                                # at get(): updates and re-sends of them may follow.
                                gevent.spawn(token.read)
                                direct = False
                    else:
                        direct = self._route(event, direct)
                event = events = token = None  # nothing of the last event stays alive
                self.flush()
                if wrote and self.buffered > self.high_water:
                    # A peer that makes us write and does not read: stop reading it.
                    self.writer.wait_writable()
                if tables.close_reason:
                    self.writer.drain(2.0)  # the goodbye still reaches the peer
                    cause = ClosedLocally(tables.close_reason)
                    log.warning("closing connection to %s: %s", self.peer, tables.close_reason)
                    break
                if loop.iteration == iteration:
                    # recv returned without waiting and the hub has not run
                    # since: let every other ready connection have its turn.
                    gevent.idle()
        except ProtocolError as exc:
            cause = exc
            (log.info if "server at capacity" in str(exc) else log.warning)(
                "closing connection to %s: protocol error: %s", self.peer, exc)
        except OSError as exc:
            cause = exc
        finally:
            if watchdog is not None:
                watchdog.kill(block=False)
            self._lost(cause if cause is not None
                       else ClosedLocally("the reader stopped on an internal error"))

    def _route(self, event: Any, direct: bool) -> bool:
        """Deliver one event other than a reply; whether the next may go direct."""
        kind = type(event)
        if kind is IncomingCall:
            return self.workers.start(event, direct)
        if kind is Ready:
            self.ready.set()
            if self._keepalive_seconds is not None and not self.closed:
                self.keepalive = Keepalive(self._hub.loop, self._keepalive_seconds, self._probe,
                                           self._lost)
        elif kind is Cancelled:
            self.workers.cancel(event.request_id)
        elif kind is Released or kind is StoppedObserving:
            gevent.spawn(self._settle, [event])
        return False

    def _settle(self, events: list[Released | StoppedObserving]) -> None:
        dispatch.settle(self.protocol, events)
        self.flush()

    def _handshake_expired(self, seconds: float) -> None:
        if not self.ready.is_set():
            log.warning("closing connection to %s: no PB handshake within %s s", self.peer,
                        seconds)
            self._lost(ClosedLocally(f"no PB handshake within {seconds} s"))

    def close(self, reason: str = "closed locally") -> None:
        """Close the connection; calls waiting for answers get ``PBConnectionLost``.

        What is already queued for the peer is written first (for up to 2 s),
        as Twisted's ``loseConnection`` does.
        """
        if not self.closed:
            self.writer.drain(2.0)
        self._lost(ClosedLocally(reason))
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent():
            reader.join(timeout=5)

    def kill_calls(self, timeout: float | None = None) -> None:
        """Stop incoming calls still running (used when a server stops)."""
        self.workers.kill(timeout)

    def _lost(self, cause: BaseException) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = cause
        self._cause = cause
        _live.discard(self)
        for hook in self.lost_hooks:  # before any waiter wakes (the client's reconnection)
            hook()
        self.ready.set()
        self.protocol.tables.on_release_queued = None  # no more pokes at a closing watcher
        if self.keepalive is not None:
            self.keepalive.stop()
        if self.call_timers is not None:
            self.call_timers.stop_all()
        if self.idle_timer is not None:
            self.idle_timer.stop()
        self._wake.stop()
        self._wake.close()
        self.writer.close()
        try:
            self.sock.close()
        except OSError:
            pass
        self.workers.stop()
        pending, callbacks, stopped = self.protocol.connection_lost()
        waiting, self._waiting = self._waiting, {}
        for token in waiting.values():
            lost = PBConnectionLost(f"connection to {self.peer} lost while waiting for an "
                                    f"answer: {cause}")
            lost.__cause__ = cause
            token.set_exception(lost)
        notify, self._notify = self._notify, []
        callbacks = [lambda ref=ref, cb=cb: cb(ref) for ref, cb in notify] + callbacks
        callbacks += [lambda e=e: e.cacheable.stoppedObserving(e.perspective, e.observer)
                      for e in stopped]
        if callbacks:
            gevent.spawn(dispatch.run_callbacks, callbacks, self.peer)

    # ------------------------------------------------------------------ writing

    def flush(self) -> None:
        """Write what is queued (see ``_writer.Writer.flush``)."""
        self.writer.flush()

    def wait_writable(self) -> None:
        """Wait while more than ``high_water`` bytes are queued (back-pressure)."""
        self.writer.wait_writable()

    # ------------------------------------------------------------------ calls out

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

    def _idle(self) -> bool:
        return not self._waiting and not self.workers.busy()

    def _probe(self) -> None:
        self.protocol.send_ping()
        self.flush()

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
        value = self._outcome_of(reply, perspective)
        if not reply.ok:
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
        if self.closed or not observer.active:
            return
        try:
            # No answer asked for: nothing to keep per update, whatever the holder does.
            dispatch.send_call(self.protocol, observer.cache_id, name, args, kwargs,
                               observer.perspective, False, cache=True)
        except NotOpen:
            return
        except Exception:
            log.warning("could not send cache update %r to %s", name, self.peer, exc_info=True)
            return
        if self.buffered > self.high_water * DROP_FACTOR:
            log.warning("dropping cache holder %s: more than %d bytes of updates wait for it",
                        self.peer, self.high_water * DROP_FACTOR)
            self._lost(ClosedLocally("the cache holder fell too far behind"))
            return
        self._wake.send()  # the hub flushes soon; the setter goes on at once

    # ------------------------------------------------------------------ notifications

    def notify_on_disconnect(self, ref: RemoteReference,
                             callback: Callable[[RemoteReference], Any]) -> None:
        """Run ``callback(ref)`` once when this connection goes (at once if gone)."""
        if self.closed:
            callback(ref)
        else:
            self._notify.append((ref, callback))

    def dont_notify_on_disconnect(self, ref: RemoteReference,
                                  callback: Callable[[RemoteReference], Any]) -> None:
        """Forget a ``notify_on_disconnect`` callback."""
        self._notify = [(r, cb) for r, cb in self._notify if not (r is ref and cb == callback)]

    def sleep(self, seconds: float) -> None:
        """Pause the calling greenlet (for the core, which has no clock of its own)."""
        gevent.sleep(seconds)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait for the handshake; ``True`` once calls may be sent."""
        self.ready.wait(timeout)
        return self.protocol.dialect is not None and not self.closed
