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
* **Parking** (server connections): the reader ends after the handshake,
  and whenever ``park`` (the server's sweep) finds it waiting in ``recv``;
  an io watcher on the socket spawns a new one when bytes arrive, so an
  idle connection holds no greenlet.
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
from gevent.event import Event
from gevent.socket import socket as _gevent_socket

from . import _heap, dispatch
from ._calls import DROP_FACTOR, CallResult, CallsOut, FlushSoon
from ._liveness import CallTimers, IdleTimer, Keepalive
from ._workers import Workers
from ._writer import HIGH_WATER, Writer
from .errors import (ClosedByPeer, ClosedLocally, PBConnectionLost,
                     ProtocolError)
from .events import Cancelled, IncomingCall, Ready, Released, Reply, StoppedObserving
from .jelly import SecurityOptions
from .protocol import Broker
from .reference import RemoteReference

__all__ = ["Connection", "CallResult", "live_connections", "HIGH_WATER"]

log = logging.getLogger("pbgreen.connection")

RECV_SIZE = 256 * 1024
_heap.settle()  # large messages reuse heap memory instead of faulting in fresh pages
#: Messages turned into events per pass of the reader: one read of small
#: messages (thousands of cache updates) is decoded a pass at a time, so the
#: events alive at once stay few and the reader can pause between passes.
MESSAGES_PER_PASS = 64


class _Parked(BaseException):
    """Thrown into a reader waiting in ``recv`` to end it (``Connection.park``)."""


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


class Connection(CallsOut):
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
        park_when_idle: end the reader greenlet once the handshake is done
            and whenever ``park`` finds it waiting for bytes; a watcher starts
            a new one when bytes arrive (``PBServer`` sets it: an idle
            connection then holds no greenlet). Plain TCP sockets only.
    """

    def __init__(self, sock: Any, *, is_client: bool, root: Any = None,
                 security: SecurityOptions | None = None, unsafe_tracebacks: bool = False,
                 max_calls: int = 1000, peer: Any = None, high_water: int = HIGH_WATER,
                 call_timeout: float | None = None, keepalive: float | None = None,
                 idle_timeout: float | None = None, park_when_idle: bool = False,
                 **decoder_options: Any) -> None:
        self.sock = sock
        self.peer = peer
        self.high_water = high_water
        self.protocol = Broker(is_client=is_client, root=root, security=security,
                               unsafe_tracebacks=unsafe_tracebacks, invoker=self,
                               **decoder_options)
        self.protocol.peer = peer
        self.protocol.reader_write_limit = DROP_FACTOR * high_water
        #: Bytes queued for a cache holder past which it is dropped.
        self._drop_at = DROP_FACTOR * high_water
        #: Whether cache updates wait in ``_flush_soon`` for this turn's flush.
        self._flush_due = False
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
        #: The greenlet in ``run`` now (None while parked), whether it waits in
        #: ``recv``, and the watchers of a handshake deadline and of a parked socket.
        self._reading: Any = None
        self._in_recv = False
        self._watchdog: Any = None
        self._park_watcher: Any = None
        #: Whether ``park`` may end the reader (plain TCP only: TLS may hold
        #: bytes already taken from the socket); it also parks after the handshake.
        self.park_when_idle = park_when_idle and type(sock) is _gevent_socket
        self._park_soon = False
        self._hub = gevent.get_hub()
        #: The hub's ``loop.run_callback`` (looked up once: used on every call).
        self.run_callback = self._hub.loop.run_callback
        self.workers = Workers(self, max_calls)
        self.writer = Writer(sock, self.protocol, high_water, self._lost, self.workers.wake)
        # Called on every call and answer: straight to the writer, no extra frame.
        self.flush = self.writer.flush  # type: ignore[method-assign]
        self.wait_writable = self.writer.wait_writable  # type: ignore[method-assign]
        self._flush_soon = FlushSoon.for_hub(self._hub)
        self._wake = self._hub.loop.async_()
        self._wake.start(self.flush)
        self._wake.ref = False
        self.protocol.tables.on_release_queued = self._wake.send
        loop = self._hub.loop
        self.call_timers = (None if call_timeout is None
                            else CallTimers(loop, call_timeout, self._call_expired))
        self._keepalive_seconds = keepalive
        self.keepalive: Keepalive | None = None  # started once the handshake is done
        #: Set by the reader on every batch of bytes; the keepalive timer clears it.
        self.heard = False
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

    def run(self, handshake_timeout: float | None = None) -> bool:
        """Read until the connection ends; the reader greenlet's body.

        With ``handshake_timeout``, a peer that has not finished the PB
        handshake by then is disconnected. Returns ``True`` if it stopped
        because the connection was parked (see ``park``): the connection
        lives on, and a new reader starts when the peer sends something.
        """
        cause: BaseException | None = None
        parked = False
        protocol = self.protocol
        recv = self.sock.recv
        loop = self._hub.loop
        workers = self.workers
        tables = protocol.tables
        timers = self.call_timers
        output = protocol.output
        idle_timer = self.idle_timer
        self._reading = gevent.getcurrent()
        if handshake_timeout is not None:  # a timer, not a greenlet: it stops at Ready
            self._watchdog = loop.timer(handshake_timeout)
            self._watchdog.start(self._handshake_expired, handshake_timeout)
        try:
            self.flush()  # an acceptor offers its dialects first
            while not self.closed:
                if (workers.backlog or workers.updates) and workers.must_pause(self):
                    self.workers.wait_resume(self)
                    continue
                iteration = loop.iteration
                if protocol.more_input:  # messages of the last read still buffered
                    data = b""
                else:
                    self._in_recv = True
                    try:
                        data = recv(RECV_SIZE)
                    except _Parked:
                        parked = True
                        break
                    finally:
                        self._in_recv = False
                    if not data:
                        protocol.receive_eof()
                        cause = ClosedByPeer(f"{self.peer} closed the connection")
                        break
                    self.heard = True  # for the keepalive timer
                direct = True
                queued_before = len(output)
                events = protocol.receive_data(data, MESSAGES_PER_PASS)
                # Bytes the broker wrote itself (errors, pongs, releases), before
                # any event ran: a peer can make us write these without reading.
                wrote = len(output) > queued_before
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
                    elif type(event) is IncomingCall:
                        direct = workers.start(event, direct)
                    else:
                        direct = self._route(event, direct)
                event = events = token = None  # nothing of the last event stays alive
                if output or tables.releases:
                    self.flush()
                if wrote and self.buffered > self.high_water:
                    # A peer that makes us write and does not read: stop reading it.
                    self.writer.wait_writable()
                if tables.close_reason:
                    self.writer.drain(2.0)  # the goodbye still reaches the peer
                    cause = ClosedLocally(tables.close_reason)
                    log.warning("closing connection to %s: %s", self.peer, tables.close_reason)
                    break
                if self._park_soon and not protocol.more_input:
                    # the handshake is done: wait for the first call parked
                    self._park_soon = False
                    parked = True
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
            self._reading = None
            if parked:
                self._wait_for_data()
            else:
                self._lost(cause if cause is not None
                           else ClosedLocally("the reader stopped on an internal error"))
        return parked

    def park(self) -> None:
        """End the reader greenlet of an idle connection; a watcher brings one back.

        An idle connection then costs no greenlet (no stack, no frames), only
        its objects: what lets a server hold many idle connections. Workers
        waiting for a call end too (new ones start with the next calls). Called
        from the hub (``PBServer``'s sweep timer); does nothing unless
        ``park_when_idle`` and the reader waits in ``recv``. Nothing is lost:
        the reader holds no state between two reads.
        """
        if self.closed or not self.park_when_idle:
            return
        reader = self._reading
        if reader is None or self._in_recv:  # parked already (a call may have ended since)
            self.workers.release_idle()
        if reader is not None and self._in_recv:
            reader.throw(_Parked)  # run() returns; its greenlet ends

    def _wait_for_data(self) -> None:
        if self.closed:
            return
        self._park_watcher = self._hub.loop.io(self.sock.fileno(), 1)  # 1: readable
        self._park_watcher.start(self._unpark)

    def _unpark(self) -> None:
        self._stop_park_watcher()
        if not self.closed:
            self._reader = gevent.spawn(self.run)

    def _stop_park_watcher(self) -> None:
        watcher, self._park_watcher = self._park_watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()

    def _route(self, event: Any, direct: bool) -> bool:
        """Deliver one event other than a reply or a call; whether the next may go direct."""
        kind = type(event)
        if kind is Ready:
            self.ready.set()
            self._stop_watchdog()
            self._park_soon = self.park_when_idle
            if self._keepalive_seconds is not None and not self.closed:
                self.keepalive = Keepalive(self._hub.loop, self._keepalive_seconds, self._probe,
                                           self._lost, self._heard_since)
        elif kind is Cancelled:
            self.workers.cancel(event.request_id)
        elif kind is Released or kind is StoppedObserving:
            gevent.spawn(self._settle, [event])
        return False

    def _settle(self, events: list[Released | StoppedObserving]) -> None:
        dispatch.settle(self.protocol, events)
        self.flush()

    def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.stop()
            watchdog.close()

    def _handshake_expired(self, seconds: float) -> None:  # in the hub (a timer)
        self._stop_watchdog()
        if not self.ready.is_set() and not self.closed:
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
        self._stop_watchdog()
        self._stop_park_watcher()
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

    def _idle(self) -> bool:
        return not self._waiting and not self.workers.busy()

    def _heard_since(self) -> bool:
        heard, self.heard = self.heard, False
        return heard

    def _probe(self) -> None:
        self.protocol.send_ping()
        self.flush()

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
