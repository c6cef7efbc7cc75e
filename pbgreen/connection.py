"""The gevent driver: one socket, one ``Broker``, greenlets around them.

How it works.

* **Reading.** One reader greenlet (``run``) receives bytes and feeds the
  broker. It never runs user code. An incoming call goes to a worker
  greenlet: an idle one from an earlier call if there is one (up to
  ``IDLE_WORKERS`` wait per connection, because spawning records a stack
  and costs more than a small call), else a new one, at most ``max_calls``
  running; past that calls wait their turn in a bounded backlog. Cache
  updates go to one greenlet per connection that applies them in order.
  When nothing is queued ahead, the reader switches straight to the worker
  or to the caller waiting for an answer, and the hub resumes the reader
  afterwards; otherwise the hand-over is queued, so events always start in
  arrival order.
* **Writing.** Whoever queued bytes calls ``flush``; if another greenlet is
  already writing, it will take the new bytes too, so writes are coalesced
  and leave in the order they were queued. ``socket.send`` can only be
  interrupted (by ``gevent.Timeout``) while waiting, before it sent anything,
  so an interrupted writer puts the unsent rest back and a fresh greenlet
  finishes the job: a frame is never cut.
* **Waiting.** A blocking call waits on a ``gevent.hub.Waiter``
  (``callRemoteAsync`` on a ``CallResult``, an ``AsyncResult``), then
  unjellies the answer in its own greenlet. A caller that stops waiting (timeout, kill)
  abandons its request: the late answer is dropped and the references in it
  are given back.
* **Decrefs.** Garbage collection of a ``RemoteReference`` only queues a
  decref and pokes an async watcher; the hub then starts a flush.
"""

from __future__ import annotations

import logging
import socket as _stdlib_socket
import weakref
from collections import deque
from typing import Any, Callable

import gevent
from gevent.event import AsyncResult, Event
from gevent.hub import Waiter

from .errors import DeadReferenceError, Error, PBConnectionLost, ProtocolError
from .jelly import SecurityOptions
from .protocol import Broker, IncomingCall, Ready, Reply, RunCallbacks
from .reference import RemoteReference

__all__ = ["Connection", "CallResult", "live_connections"]

log = logging.getLogger("pbgreen.connection")

RECV_SIZE = 256 * 1024
IDLE_WORKERS = 8  # call workers kept waiting per connection
BACKLOG_FACTOR = 10  # calls queued per connection, as a multiple of max_calls

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


def _hand_over(waiter: Waiter, value: Any, run_callback: Callable[..., Any],
               direct: bool) -> bool:
    """Give ``value`` to the greenlet waiting on ``waiter``; True if it ran at once.

    With ``direct``, the reader asks the hub to resume it afterwards and
    switches straight to the waiting greenlet, so the call (or answer) is
    handled before the reader goes back to ``recv`` rather than after a trip
    through the event loop. Otherwise the hand-over is queued behind
    whatever the hub already has queued, which keeps arrival order.
    """
    target = waiter.greenlet
    if not direct or target is None:
        run_callback(waiter.switch, value)
        return False
    run_callback(gevent.getcurrent().switch)
    target.switch(value)
    return True


class _Wait:
    """The token of a blocking call: the reader hands the reply to the waiting greenlet.

    A ``Waiter`` resumed from the hub is an order of magnitude cheaper than an
    ``AsyncResult``; it also keeps a reply that arrives before anyone waits.
    """

    __slots__ = ("waiter", "run_callback")

    def __init__(self, run_callback: Callable[..., Any]) -> None:
        self.waiter = Waiter()
        self.run_callback = run_callback

    def set(self, reply: Reply, direct: bool = False) -> bool:
        return _hand_over(self.waiter, reply, self.run_callback, direct)

    def set_exception(self, exc: BaseException) -> None:
        self.run_callback(self.waiter.throw, exc)


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

    def __del__(self) -> None:
        # Only queues decrefs (no I/O): the driver writes them on its next flush.
        if not self._read and self.ready() and super().exception is None:
            reply = super().value
            if reply is not None:
                self._connection.protocol.discard(reply)


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
    """

    def __init__(self, sock: Any, *, is_client: bool, root: Any = None,
                 security: SecurityOptions | None = None, unsafe_tracebacks: bool = False,
                 max_calls: int = 1000, peer: Any = None, **decoder_options: Any) -> None:
        self.sock = sock
        self.peer = peer
        self.max_calls = max_calls
        self.protocol = Broker(is_client=is_client, root=root, security=security,
                               unsafe_tracebacks=unsafe_tracebacks, invoker=self,
                               **decoder_options)
        self.protocol.peer = peer
        self.ready = Event()
        self.closed = False
        self.close_reason: Any = None
        self._writing = False
        self._calls: set[gevent.Greenlet] = set()
        self._idle: list[Waiter] = []
        self._updates: deque[IncomingCall] = deque()  # cache updates, applied in order
        self._backlog: deque[IncomingCall] = deque()  # calls waiting for a free worker
        self._updater: gevent.Greenlet | None = None
        self._notify: list[tuple[RemoteReference, Callable[[RemoteReference], Any]]] = []
        self._reader: gevent.Greenlet | None = None
        self._hub = gevent.get_hub()
        self._wake = self._hub.loop.async_()
        self._wake.start(self._on_wake)
        self._wake.ref = False
        self.protocol.on_decref_queued = self._wake.send
        _live.add(self)
        self.protocol.on_callbacks = lambda callbacks: gevent.spawn(self._run_callbacks, callbacks)
        self._observed = _ObserverReplies(self.protocol)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<pbgreen.Connection {self.peer!r} {state}>"

    @property
    def connected(self) -> bool:
        """Whether calls can still be made."""
        return not self.closed

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Read in a new greenlet (clients); servers call ``run`` directly."""
        self._reader = gevent.spawn(self.run)

    def run(self, handshake_timeout: float | None = None) -> None:
        """Read until the connection ends; the reader greenlet's body.

        With ``handshake_timeout``, a peer that has not finished the PB
        handshake by then is disconnected.
        """
        reason: Any = "closed by the peer"
        protocol = self.protocol
        recv = self.sock.recv
        watchdog = None
        if handshake_timeout is not None:
            watchdog = gevent.spawn_later(handshake_timeout, self._handshake_expired,
                                          handshake_timeout)
        try:
            self.flush()  # an acceptor offers its dialects first
            direct = True
            while not self.closed:
                data = recv(RECV_SIZE)
                if not data:
                    break
                # Events start in arrival order: once one had to be queued on
                # the hub, the ones after it are queued too, and before the
                # next batch goes direct the hub runs what is queued.
                if not direct:
                    gevent.sleep(0)
                    direct = True
                for event in protocol.receive_data(data):
                    kind = type(event)
                    if kind is Reply:
                        token, event.token = event.token, None  # no cycle via the token
                        if type(token) is _Wait:
                            direct = token.set(event, direct)
                        else:
                            token.set(event)
                            direct = False
                    elif kind is IncomingCall:
                        direct = self._start_call(event, direct)
                    elif kind is Ready:
                        self.ready.set()
                    elif kind is RunCallbacks:
                        gevent.spawn(self._run_callbacks, event.callbacks)
                        direct = False
                if protocol._out or protocol._decrefs:
                    self.flush()
                if protocol.close_reason:
                    reason = protocol.close_reason
                    log.warning("closing connection to %s: %s", self.peer, reason)
                    break
        except ProtocolError as exc:
            reason = exc
            log.warning("closing connection to %s: protocol error: %s", self.peer, exc)
        except OSError as exc:
            reason = exc
        finally:
            if watchdog is not None:
                watchdog.kill(block=False)
            self._lost(reason)

    def _handshake_expired(self, seconds: float) -> None:
        if not self.ready.is_set():
            log.warning("closing connection to %s: no PB handshake within %s s", self.peer,
                        seconds)
            self._lost(f"no PB handshake within {seconds} s")

    def close(self, reason: str = "closed locally") -> None:
        """Close the connection; calls waiting for answers get ``PBConnectionLost``."""
        self._lost(reason)
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent():
            reader.join(timeout=5)

    def kill_calls(self, timeout: float | None = None) -> None:
        """Stop incoming calls still running (used when a server stops)."""
        running = list(self._calls)
        if self._updater is not None:
            running.append(self._updater)
        current = gevent.getcurrent()
        gevent.killall([g for g in running if g is not current], timeout=timeout)

    def _lost(self, reason: Any) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        _live.discard(self)
        self.ready.set()
        self.protocol.on_decref_queued = None  # no more pokes at a watcher about to close
        self._wake.stop()
        self._wake.close()
        try:
            self.sock.close()
        except OSError:
            pass
        self._backlog.clear()
        idle, self._idle = self._idle, []
        for waiter in idle:  # idle workers end
            self._hub.loop.run_callback(waiter.switch, None)
        tokens, callbacks = self.protocol.connection_lost()
        for token in tokens:
            token.set_exception(PBConnectionLost(
                f"connection to {self.peer} lost while waiting for an answer: {reason}"))
        notify, self._notify = self._notify, []
        callbacks = [lambda ref=ref, cb=cb: cb(ref) for ref, cb in notify] + callbacks
        if callbacks:
            gevent.spawn(self._run_callbacks, callbacks)

    # ------------------------------------------------------------------ writing

    def flush(self) -> None:
        """Write everything queued; returns at once if another greenlet is writing."""
        if self._writing or self.closed:
            return
        self._writing = True
        protocol = self.protocol
        data = b""
        sent = 0
        finished = False
        try:
            send = self.sock.send
            while True:
                data = protocol.data_to_send()
                if not data:
                    break
                sent = send(data)
                while sent < len(data):
                    sent += send(memoryview(data)[sent:])
                data = b""
            finished = True
        except OSError as exc:
            finished = True
            self._writing = False
            self._lost(exc)
            return
        finally:
            if not finished:  # interrupted (gevent.Timeout, kill) while waiting to send
                if data and sent < len(data):
                    protocol.unsend(data[sent:])
                self._writing = False
                gevent.spawn(self.flush)  # whoever was interrupted, the bytes still go
        self._writing = False
        if protocol.close_reason:
            self._lost(protocol.close_reason)

    def _on_wake(self) -> None:
        if not self.closed and not self._writing:
            gevent.spawn(self.flush)

    # ------------------------------------------------------------------ calls out

    def _send(self, ref: RemoteReference, name: str, args: tuple[Any, ...],
              kwargs: dict[str, Any], token: Any) -> int | None:
        if self.closed:
            raise DeadReferenceError(f"Calling Stale Broker: the connection to {self.peer} is "
                                     f"gone ({self.close_reason}); reconnect to call {name!r}")
        if "pbanswer" in kwargs and not kwargs.pop("pbanswer"):
            token = None
        request_id = self.protocol.send_call(ref.luid, name, args, kwargs, ref.perspective,
                                             token)
        flushed = False
        try:
            self.flush()
            flushed = True
        finally:
            if not flushed:  # interrupted while the bytes waited to go: nobody will wait
                self.protocol.abandon(request_id)
        return request_id if token is not None else None

    def call(self, ref: RemoteReference, name: str, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
        """Send a call and block this greenlet until its answer (see ``callRemote``)."""
        token = _Wait(self._hub.loop.run_callback)
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
                    self.protocol.discard(waiter.value)
                else:
                    self.protocol.abandon(request_id)
        return self._outcome(reply, ref.perspective)

    def call_async(self, ref: RemoteReference, name: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> CallResult:
        """Send a call; return a ``CallResult`` to collect the answer later."""
        result = CallResult(self, ref.perspective)
        if self._send(ref, name, args, kwargs, result) is None:
            result.set(None)  # pbanswer=False: there is no answer to wait for
        return result

    def _outcome(self, reply: Reply, perspective: Any) -> Any:
        value = self.protocol.read_reply(reply, perspective)
        if not reply.ok:
            raise value
        return value

    # ------------------------------------------------------------------ calls in

    def _start_call(self, call: IncomingCall, direct: bool) -> bool:
        """Hand the call to a worker; True if it already ran (see ``_hand_over``)."""
        if call.update:
            # Cache updates are never refused and never reordered: one greenlet
            # applies them in arrival order and writes their answers together.
            self._updates.append(call)
            if self._updater is None:
                self._updater = gevent.spawn(self._apply_updates)
            return False
        if self._idle:  # a worker from an earlier call is waiting: no spawn needed
            return _hand_over(self._idle.pop(), call, self._hub.loop.run_callback, direct)
        if len(self._calls) >= self.max_calls:
            # Every worker is busy: the call waits its turn, up to a bound.
            if len(self._backlog) < self.max_calls * BACKLOG_FACTOR:
                self._backlog.append(call)
            elif call.answer:
                self.protocol.send_error(call.request_id, Error(
                    f"too many calls waiting on this connection ({self.max_calls} running, "
                    f"{len(self._backlog)} queued); wait for answers before sending more"))
            return False
        self._calls.add(gevent.spawn(self._worker, [call]))
        return False

    def _apply_updates(self) -> None:
        updates = self._updates
        try:
            while updates and not self.closed:
                self._run(updates.popleft())
                if not updates:
                    self.flush()
        finally:
            self._updater = None

    def _run(self, call: IncomingCall) -> None:
        try:
            self.protocol.run_call(call)
        except gevent.Timeout as exc:  # the method's own timeout escaped: answer, go on
            self.protocol.report(call, exc)

    def _worker(self, first: list[IncomingCall]) -> None:
        # Runs incoming calls one after another. Spawning a gevent Greenlet
        # records its spawning stack, which costs more than the call itself,
        # so a few workers stay and wait for the next call. The first call
        # comes in a list emptied here: the Greenlet keeps its arguments, and
        # must not keep the call's target and arguments alive.
        call: IncomingCall | None = first.pop()
        try:
            while call is not None:
                self._run(call)
                call = self._backlog.popleft() if self._backlog and not self.closed else None
                if call is not None:
                    continue
                self.flush()
                if self.closed or len(self._idle) >= IDLE_WORKERS:
                    return
                waiter = Waiter()
                self._idle.append(waiter)
                call = waiter.get()
        finally:
            self._calls.discard(gevent.getcurrent())

    def observe(self, observer: Any, name: str, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> None:
        """Queue a cache update (``RemoteCacheObserver.callRemote``); never blocks or raises."""
        if self.closed or not observer.active:
            return
        try:
            self.protocol.send_call(observer.cache_id, name, args, kwargs, observer.perspective,
                                    self._observed, cache=True)
        except Exception:
            log.warning("could not send cache update %r to %s", name, self.peer, exc_info=True)
            return
        self._wake.send()  # a writer greenlet picks it up; the setter goes on at once

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


    def _run_callbacks(self, callbacks: list[Callable[[], Any]]) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("error in a disconnect, logout or stoppedObserving callback "
                              "(connection to %s)", self.peer)
        self.flush()


class _ObserverReplies:
    """The token for cache updates: nobody waits, errors are logged."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol

    def set(self, reply: Reply) -> None:
        if not reply.ok:
            failure = self.protocol.failure_from(reply.sexp)
            log.warning("a cache holder's observe_ method failed (%s): %r", self.protocol.peer,
                        failure)
        self.protocol.discard(reply)

    def set_exception(self, exc: BaseException) -> None:
        pass
