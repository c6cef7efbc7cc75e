"""PBServer: a gevent TCP (or TLS) server handing each connection a broker."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import ssl
import threading
import time
from functools import partial
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer
from gevent.socket import socket as _gevent_socket

from . import portno
from .connection import HIGH_WATER, Connection, set_nodelay, wrap_tls
from .banana import encode
from . import proxyproto
from .cred import Portal, PortalRoot
from .protocol import AT_CAPACITY
from .jelly import SecurityOptions

__all__ = ["PBServer", "portno"]

log = logging.getLogger("pbgreen.server")

#: Seconds between two sweeps that park idle connections (see ``Connection.park``).
PARK_INTERVAL = 2.0


class PBServer:
    """Serve a root object, or a portal for login, over PB.

    Args:
        root_or_portal: the object every connection reaches as its root. If it has a
            ``rootObject(connection)`` method (``pb.Root`` does), that is
            called per connection to get the root for it. A ``Portal``
            serves PB login, wire-compatible with Twisted's
            ``PBServerFactory(portal)``.
        port: TCP port; 0 picks a free one (see ``address``).
        host: interface to listen on.
        ssl_context: a server-side ``ssl.SSLContext`` to serve TLS.
        unsafeTracebacks: send full remote tracebacks with errors.
        security: ``SecurityOptions`` for what may arrive (default: the
            global registry of ``setUnjellyableForClass``).
        max_connections: connections served at once; one more is accepted,
            told "server at capacity" and closed at once (logged at WARNING).
        max_calls: incoming calls running at once per connection.
        handshake_timeout: seconds a new connection has to finish the PB
            handshake before it is closed.
        keepalive: seconds of silence before a client is probed; a client
            silent through the probe is disconnected (``None``: off).
        backlog: the listen queue: connections the kernel holds until they
            are accepted (a burst of connects waits there, not refused).
        idle_timeout: close a connection that made no call and had no call
            running for this many seconds (``None``: never).
        high_water: bytes queued for one peer past which that connection's
            workers wait and its reader pauses; a cache holder four times
            this far behind is dropped (see docs/limits.md).
        proxy_protocol: require HAProxy's PROXY protocol header (v1 or v2) at
            the start of every connection and report the client it names as
            the connection's ``peer``; a connection without a valid header
            within ``handshake_timeout`` is closed (logged at WARNING). Only
            for a server that nothing but the proxy can reach.
        listener: an already bound and listening socket to accept on instead
            of binding ``host``/``port`` (how ``--workers`` shares one port).
    """

    def __init__(self, root_or_portal: Any, port: int = portno, host: str = "0.0.0.0",
                 ssl_context: ssl.SSLContext | None = None, unsafeTracebacks: bool = False,
                 security: SecurityOptions | None = None, max_connections: int = 10_000,
                 max_calls: int = 1000, handshake_timeout: float = 30.0,
                 high_water: int = HIGH_WATER, keepalive: float | None = 30,
                 backlog: int = 1024, idle_timeout: float | None = None,
                 proxy_protocol: bool = False, listener: Any = None) -> None:
        root = root_or_portal
        if isinstance(root, Portal):
            root = PortalRoot(root)
        elif not hasattr(root, "remoteMethod"):
            raise TypeError(f"cannot serve {root!r}: give PBServer a pb.Root (or another "
                            "pb.Referenceable) or a pb.Portal")
        self.root = root
        self._stopping = False
        self._draining = False
        self._hurry = False
        self._stopper: Any = None
        self._active = 0  # connections being served, TLS handshakes included
        self._sweep: Any = None  # the timer that parks idle connections
        self.unsafeTracebacks = unsafeTracebacks
        self.security = security
        self.max_calls = max_calls
        self.high_water = high_water
        self.keepalive = keepalive
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.connections: set[Connection] = set()
        self._stopped = Event()
        self.ssl_context = ssl_context
        self.proxy_protocol = proxy_protocol
        # The pool is unbounded so the listener never stops accepting: past
        # max_connections a connection is told so and closed, not left hanging.
        if listener is None:
            self._server = StreamServer((host, port), self._handle, spawn=Pool(), backlog=backlog)
        else:  # its backlog was set by whoever made it listen
            self._server = StreamServer(listener, self._handle, spawn=Pool())

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` actually bound."""
        return self._server.address[:2]

    def start(self) -> None:
        """Start listening and return at once."""
        if self._stopping:
            raise RuntimeError("this PBServer was stopped; create a new one to serve again")
        if not self._server.started:
            self._server.start()
            # One timer for all connections: every PARK_INTERVAL s, the ones
            # waiting for bytes give up their reader greenlet (Connection.park).
            self._sweep = gevent.get_hub().loop.timer(PARK_INTERVAL, PARK_INTERVAL)
            self._sweep.start(self._park_idle)
            self._sweep.ref = False

    def serve_forever(self, graceful_timeout: float | None = 10.0) -> None:
        """Start if needed, then block until ``stop()`` (at once if it already ran).

        Called from the main thread, SIGINT (Ctrl-C) and SIGTERM stop the
        server gracefully (``stop(timeout=graceful_timeout)``) and this
        returns normally: no ``KeyboardInterrupt`` traceback.
        """
        if self._stopping:
            return
        self.start()
        handlers = self._install_signal_handlers(graceful_timeout)
        try:
            self._stopped.wait()
        finally:
            for handler in handlers:
                handler.cancel()

    def _install_signal_handlers(self, graceful_timeout: float | None) -> list[Any]:
        if threading.current_thread() is not threading.main_thread():
            return []

        def on_signal(signum: int) -> None:
            log.info("stopping on %s: letting running calls finish for up to %s s",
                        signal.Signals(signum).name, graceful_timeout)
            gevent.spawn(self.stop, graceful_timeout)
        return [gevent.signal_handler(signum, on_signal, signum)
                for signum in (signal.SIGINT, signal.SIGTERM)]

    def stop(self, timeout: float | None = None) -> None:
        """Stop serving; with ``timeout``, gracefully.

        ``stop()``: stop listening and close every connection at once.
        ``stop(timeout=T)``: stop accepting at once; calls already running
        may finish for up to ``T`` seconds and their answers are delivered,
        while new calls are answered with an error saying the server is
        shutting down; then every connection is closed and calls still
        running are killed. Returns when all of that is done. May be called
        from anywhere, including a remote method of this server (that call
        is not killed), and ``serve_forever`` returns.
        """
        if self._stopping:
            if timeout is None and self._draining:
                self._hurry = True  # an immediate stop cuts a graceful one short
                if gevent.getcurrent() is not self._stopper:
                    self._stopped.wait()
            return
        self._stopping = True
        self._stopper = gevent.getcurrent()
        self._server.close()  # no new connections from here on
        if self._sweep is not None:
            self._sweep.stop()
            self._sweep.close()
        if timeout is not None:
            self._drain(timeout)
        connections = list(self.connections)  # each leaves the set as it closes
        for connection in connections:
            connection.close("server stopping")
        for connection in connections:
            connection.kill_calls(timeout=timeout)
        self._server.stop(timeout=timeout)
        self._stopped.set()

    def _drain(self, timeout: float) -> None:
        """Refuse new calls, then wait up to ``timeout`` for running ones and their answers."""
        deadline = time.monotonic() + timeout
        connections = list(self.connections)
        for connection in connections:
            connection.workers.refuse("the server is shutting down; try another or later")
        current = gevent.getcurrent()
        self._draining = True
        while not self._hurry and time.monotonic() < deadline and any(
                connection.workers.busy(besides=current) or connection.buffered
                for connection in connections if connection.connected):
            gevent.sleep(0.02)

    def __enter__(self) -> "PBServer":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _handle(self, sock: Any, address: Any) -> None:
        at_capacity = self._active >= self.max_connections
        self._active += 1
        counted = True  # until the connection's lost hook takes over counting it out
        try:
            set_nodelay(sock)
            if self.proxy_protocol:  # the header comes first, before TLS and PB
                address = self._proxied_peer(sock, address)
                if address is None:
                    return
            if self.ssl_context is not None:  # a TLS client must hear it over TLS
                sock = self._tls_handshake(sock, address)
                if sock is None:
                    return
            if at_capacity:
                self._refuse(sock, address)
                return
            connection = self._connection(sock, address)
            counted = False
            # Returns early if the connection is parked: it lives on without this greenlet.
            connection.run(self.handshake_timeout)
        finally:
            if counted:
                self._active -= 1

    def _park_idle(self) -> None:
        """The sweep (a hub timer): idle connections give up their reader greenlet."""
        for connection in list(self.connections):
            connection.park()

    def _forget(self, connection: Connection) -> None:
        # A lost hook: wherever the connection ends (it may outlive its first greenlet).
        self.connections.discard(connection)
        self._active -= 1

    def _refuse(self, sock: Any, address: Any) -> None:
        log.warning("refusing connection from %s: server at capacity (%d connections, "
                    "max_connections)", address, self._active - 1)
        try:
            sock.sendall(encode(AT_CAPACITY, vocab=False))
        except OSError:
            pass
        sock.close()

    def _connection(self, sock: Any, address: Any) -> Connection:
        if type(sock) is _gevent_socket:
            # The StreamServer closes the handler's socket when the handler
            # returns, and a parked connection outlives it: take the descriptor.
            sock = _gevent_socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        with contextlib.ExitStack() as on_failure:  # a root that fails closes the socket
            on_failure.callback(sock.close)
            connection = Connection(sock, is_client=False, security=self.security,
                                    unsafe_tracebacks=self.unsafeTracebacks,
                                    max_calls=self.max_calls, peer=address,
                                    high_water=self.high_water, keepalive=self.keepalive,
                                    idle_timeout=self.idle_timeout, park_when_idle=True)
            root = self.root
            per_connection = getattr(root, "rootObject", None)
            if per_connection is not None:
                root = per_connection(connection)
            connection.protocol.set_root(root)
            on_failure.pop_all()
        # Calls still running when it ends finish on their own (as in
        # Twisted); their answers are dropped, since the connection is gone.
        self.connections.add(connection)
        connection.lost_hooks.append(partial(self._forget, connection))
        return connection

    def _proxied_peer(self, sock: Any, address: Any) -> Any:
        """The client the PROXY header names (the socket's peer if it names none), or None."""
        try:
            with gevent.Timeout(self.handshake_timeout, TimeoutError(
                    f"no complete PROXY protocol header within {self.handshake_timeout} s")):
                header = read_proxy_header(sock)
        except (OSError, TimeoutError) as exc:  # ProxyHeaderError is an OSError
            log.warning("closing connection from %s: %s", address, exc)
            sock.close()
            return None
        return header.source or address

    def _tls_handshake(self, sock: Any, address: Any) -> Any:
        tls = wrap_tls(sock, self.ssl_context, server_side=True)
        try:
            with gevent.Timeout(self.handshake_timeout, TimeoutError("TLS handshake timed out")):
                tls.do_handshake()
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.warning("closing connection from %s: TLS handshake failed: %s", address, exc)
            tls.close()
            return None
        return tls


def read_proxy_header(sock: Any) -> proxyproto.ProxyHeader:
    """Read exactly the PROXY protocol header from ``sock``, not one byte more.

    The bytes are peeked at, and only the header's own are consumed, so
    what follows (a TLS ClientHello, PB) stays in the socket for the next
    reader. Raises ``proxyproto.ProxyHeaderError`` (or ``OSError``).
    """
    header = b""
    while True:
        seen = sock.recv(proxyproto.V2_FIXED_LENGTH + proxyproto.V2_MAX_LENGTH - len(header),
                         socket.MSG_PEEK)
        if not seen:
            raise proxyproto.ProxyHeaderError(
                f"the connection closed after {len(header)} bytes of a PROXY protocol header"
                if header else "the connection closed before a PROXY protocol header")
        parsed = proxyproto.parse(header + seen)
        # Incomplete: every byte seen is the header's, take them and wait for more.
        take = len(seen) if parsed is None else parsed[0].length - len(header)
        header += _recv_exactly(sock, take)
        if parsed is not None:
            return parsed[0]


def _recv_exactly(sock: Any, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise proxyproto.ProxyHeaderError("the connection closed inside a PROXY header")
        data += chunk
    return data
