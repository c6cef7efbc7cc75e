"""PBClient: one blocking-style connection to a PB server."""

from __future__ import annotations

import errno
import logging
import random
import ssl
import time
from typing import Any, Callable

import gevent
from gevent import socket
from gevent.event import Event

from . import portno
from .connection import Connection, set_nodelay, wrap_tls
from .cred import Anonymous, respond
from .errors import ProtocolError
from .jelly import SecurityOptions
from .reference import RemoteReference

__all__ = ["PBClient", "connect"]

log = logging.getLogger("pbgreen.client")

_FIRST_BACKOFF = 0.25  # seconds before the first reconnection attempt (at most)
_MAX_BACKOFF = 30.0

# Limits a client may set (see banana.Decoder and Connection).
_OPTIONS = frozenset({"max_calls", "high_water", "size_limit", "prefix_limit", "max_depth",
                      "max_message_size", "max_items"})


class PBClient:
    """Connect to a PB server (pbgreen or Twisted) and hand out its root.

    Plain scripts need no gevent knowledge: blocking calls run the hub.

    Args:
        host: the server's name or address.
        port: the server's port (PB's default is 8787).
        timeout: seconds allowed for the TCP connect, TLS and the PB
            handshake together (30 by default; ``None`` waits forever).
        ssl_context: a client-side ``ssl.SSLContext`` to speak TLS.
        call_timeout: seconds every ``callRemote`` through this client waits
            for its answer before raising ``pb.CallTimeout`` (for
            ``callRemoteAsync``, counted from the call). A pbgreen server is
            told the deadline and stops the method when it passes.
        keepalive: seconds of silence before the server is probed; a server
            silent through the probe is declared dead and waiting calls get
            ``pb.PBConnectionLost`` (``None``: off).
        reconnect: connect again by itself whenever the connection is lost
            (exponential backoff with jitter, first retry within 1 s, at most
            30 s apart), logging in again with the same credentials and mind;
            see ``getRootObject``, ``login`` and ``on_connect``. References
            from a lost connection stay dead.
        security: ``SecurityOptions`` for what may arrive.

    Raises:
        OSError / TimeoutError: the server cannot be reached (the message
            names the address); with ``reconnect``, only once ``timeout``
            has passed.
        ProtocolError: the server does not speak PB.
    """

    def __init__(self, host: str, port: int = portno, timeout: float | None = 30,
                 ssl_context: ssl.SSLContext | None = None, *,
                 call_timeout: float | None = None, keepalive: float | None = 30,
                 reconnect: bool = False, security: SecurityOptions | None = None,
                 **options: Any) -> None:
        self.address = (host, port)
        unknown = set(options) - _OPTIONS
        if unknown:
            raise TypeError(f"PBClient got unexpected option(s) {sorted(unknown)}; it takes "
                            "timeout, ssl_context, call_timeout, keepalive, reconnect, "
                            f"security and {sorted(_OPTIONS)}")
        for name, value in (("timeout", timeout), ("call_timeout", call_timeout),
                            ("keepalive", keepalive)):
            if value is not None and not value > 0:
                raise ValueError(f"PBClient {name} must be a positive number of seconds or "
                                 f"None, not {value!r}")
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.reconnect = reconnect
        self._options = dict(options, security=security, call_timeout=call_timeout,
                             keepalive=keepalive)
        self._closed = False
        self._login: tuple[Any, Any] | None = None  # (credentials, mind) to log in again
        self._avatar: RemoteReference | None = None
        self._callbacks: list[Callable[[RemoteReference], Any]] = []
        self._connected = Event()
        self._retrier: gevent.Greenlet | None = None
        if reconnect:
            connection = self._retry_until(_deadline(timeout), first=True)
        else:
            connection = self._open(timeout)
        self._use(connection)

    # ------------------------------------------------------------------ connecting

    def _open(self, timeout: float | None) -> Connection:
        """One attempt: TCP connect, TLS, PB handshake, all within ``timeout``."""
        host, port = self.address
        deadline = _deadline(timeout)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except socket.timeout:
            raise TimeoutError(f"connecting to {host}:{port} timed out after {timeout} s") from None
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot connect to {host}:{port}: {exc.strerror or exc}") \
                from None
        set_nodelay(sock)
        if self.ssl_context is not None:
            sock = self._tls_handshake(sock, self.ssl_context, host, port, _left(deadline))
        sock.settimeout(None)
        peer = sock.getpeername()[:2]  # as the socket gives it, not as the user spelled it
        connection = Connection(sock, is_client=True, peer=peer, **self._options)
        connection.start()
        if not connection.wait_ready(_left(deadline)):
            reason = connection.close_reason
            connection.close("handshake did not finish")
            if reason is None:
                raise TimeoutError(f"PB handshake with {host}:{port} did not finish within "
                                   f"{timeout} s: is it a PB server?")
            if "server at capacity" in str(reason):
                raise ConnectionRefusedError(errno.ECONNREFUSED, f"cannot connect to {host}:"
                                             f"{port}: {reason}") from reason
            raise ProtocolError(f"PB handshake with {host}:{port} failed: {reason}")
        return connection

    def _use(self, connection: Connection) -> None:
        self.connection = connection
        self._root = RemoteReference(connection, b"root")
        if self.reconnect:
            connection.lost_hooks.append(self._lost)
        self._connected.set()

    def _retry_until(self, deadline: float | None, first: bool = False) -> Connection:
        """Attempts with backoff until one works; the last error once ``deadline`` passed."""
        attempt = 0
        while True:
            try:
                return self._open(self.timeout if deadline is None
                                  else max(0.001, min(self.timeout or 30, deadline -
                                                      time.monotonic())))
            except OSError as exc:  # refused, reset, timed out, at capacity (all OSErrors)
                delay = min(_MAX_BACKOFF, _FIRST_BACKOFF * 2 ** attempt) * random.uniform(0.5, 1)
                attempt += 1
                if self._closed:
                    raise
                if deadline is not None and time.monotonic() + delay > deadline:
                    delay = deadline - time.monotonic()  # one last attempt at the deadline
                    if delay <= 0.01:
                        raise
                log.info("%s %s:%s failed (%s); trying again in %.2f s",
                         "connecting to" if first else "reconnecting to", *self.address, exc,
                         delay)
                gevent.sleep(delay)

    def _lost(self) -> None:
        if self._closed or self._retrier is not None:
            return
        self._connected.clear()
        log.warning("connection to %s:%s lost; reconnecting", *self.address)
        self._retrier = gevent.spawn(self._reconnect)

    def _reconnect(self) -> None:
        try:
            while not self._closed:
                connection = self._retry_until(None)
                if self._closed:
                    connection.close()
                    return
                try:
                    if self._login is not None:
                        credentials, mind = self._login
                        self._avatar = self._log_in(connection, credentials, mind)
                except Exception:
                    log.exception("logging in again to %s:%s failed; trying again",
                                  *self.address)
                    connection.close()
                    gevent.sleep(_FIRST_BACKOFF)
                    continue
                self._retrier = None
                self._use(connection)
                log.info("reconnected to %s:%s", *self.address)
                self._run_on_connect()
                return
        finally:
            if self._retrier is gevent.getcurrent():
                self._retrier = None

    def _wait_connected(self) -> None:
        if not self._connected.is_set() and not self._closed:
            if not self._connected.wait(self.timeout):
                raise TimeoutError(f"not connected to {self.address[0]}:{self.address[1]} "
                                   f"again within {self.timeout} s")

    def on_connect(self, callback: Callable[[RemoteReference], Any]) -> None:
        """Run ``callback(root_or_avatar)`` after every (re)connection and login.

        Runs at once if already connected. The argument is the avatar once
        this client has logged in, else the root object: re-register
        observers or fetch caches again there.
        """
        self._callbacks.append(callback)
        if self._connected.is_set() and not self._closed:
            self._call(callback)

    def _run_on_connect(self) -> None:
        for callback in list(self._callbacks):
            self._call(callback)

    def _call(self, callback: Callable[[RemoteReference], Any]) -> None:
        try:
            callback(self._avatar if self._avatar is not None else self._root)
        except Exception:
            log.exception("an on_connect callback failed (%s:%s)", *self.address)

    @staticmethod
    def _tls_handshake(sock: Any, context: ssl.SSLContext, host: str, port: int,
                       timeout: float | None) -> Any:
        tls = wrap_tls(sock, context, server_side=False,
                       server_hostname=host if context.check_hostname else None)
        try:
            tls.settimeout(timeout)
            tls.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            tls.close()
            exc.add_note(f"TLS to {host}:{port}: the server's certificate is not trusted; give "
                         "PBClient an ssl_context that trusts it (load_verify_locations)")
            raise
        except socket.timeout:
            tls.close()
            raise TimeoutError(f"TLS handshake with {host}:{port} timed out after {timeout} s") \
                from None
        except OSError as exc:
            tls.close()
            exc.add_note(f"TLS handshake with {host}:{port} failed: is it a TLS PB server?")
            raise
        return tls

    # ------------------------------------------------------------------ what users call

    def getRootObject(self) -> RemoteReference:
        """The server's root object on the current connection (no network traffic).

        With ``reconnect``, waits up to ``timeout`` while a reconnection is
        under way.
        """
        self._wait_connected()
        return self._root

    def login(self, credentials: Any, client: Any = None) -> RemoteReference:
        """Log in through the server's portal; return your avatar's reference.

        ``credentials`` is ``pb.UsernamePassword(b"user", b"password")`` or
        ``pb.Anonymous()``; ``client`` (the *mind*, usually a
        ``pb.Referenceable``) is handed to the server's realm so it can call
        you back. The password never crosses the wire: the server sends a
        challenge and we answer with its hash. Raises ``pb.UnauthorizedLogin``
        for a wrong password or unknown user, ``pb.UnhandledCredentials`` if
        the server takes no credentials of that kind.

        With ``reconnect``, the client logs in again by itself after every
        reconnection; calling ``login`` again with the same credentials and
        mind returns the current avatar (waiting up to ``timeout`` while a
        reconnection is under way) without logging in twice.
        """
        self._wait_connected()
        if self._login is not None and self._avatar is not None \
                and _same_login(self._login, (credentials, client)):
            return self._avatar
        avatar = self._log_in(self.connection, credentials, client)
        if self.reconnect:  # kept to log in again; otherwise dropping the avatar logs out
            self._login = (credentials, client)
            self._avatar = avatar
            if self._callbacks:
                self._run_on_connect()
        return avatar

    @staticmethod
    def _log_in(connection: Connection, credentials: Any, mind: Any) -> RemoteReference:
        root = RemoteReference(connection, b"root")
        if isinstance(credentials, Anonymous):
            return root.callRemote("loginAnonymous", mind)
        challenge, challenger = root.callRemote("login", credentials.username)
        try:
            return challenger.callRemote("respond", respond(challenge, credentials.password),
                                         mind)
        except Exception as exc:
            # The traceback's frames hold the challenger; without them it dies
            # here, so the server forgets it (decref) even while the caller
            # keeps the exception.
            refused = exc.with_traceback(None)
        del challenger
        raise refused

    def close(self) -> None:
        """Close the connection (and stop reconnecting); waiting calls get ``PBConnectionLost``."""
        self._closed = True
        self._connected.set()  # nobody waits for a connection that will not come
        retrier, self._retrier = self._retrier, None
        if retrier is not None and retrier is not gevent.getcurrent():
            retrier.kill()
        self.connection.close()

    def __enter__(self) -> "PBClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _same_login(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
    (cred_a, mind_a), (cred_b, mind_b) = a, b
    if mind_a is not mind_b or type(cred_a) is not type(cred_b):
        return False
    if isinstance(cred_a, Anonymous):
        return True
    return (cred_a.username, cred_a.password) == (cred_b.username, cred_b.password)

def connect(host: str, port: int = portno, **kwargs: Any) -> RemoteReference:
    """``PBClient(host, port, **kwargs).getRootObject()``; close with ``ref.broker.close()``."""
    return PBClient(host, port, **kwargs).getRootObject()
