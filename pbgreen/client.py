"""PBClient: one blocking-style connection to a PB server."""

from __future__ import annotations

import errno
import ssl
import time
from typing import Any

from gevent import socket

from . import portno
from .connection import Connection, set_nodelay, wrap_tls
from .cred import Anonymous, respond
from .errors import ProtocolError
from .jelly import SecurityOptions
from .reference import RemoteReference

__all__ = ["PBClient", "connect"]

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
        security: ``SecurityOptions`` for what may arrive.

    Raises:
        OSError / TimeoutError: the server cannot be reached (the message
            names the address).
        ProtocolError: the server does not speak PB.
    """

    def __init__(self, host: str, port: int = portno, timeout: float | None = 30,
                 ssl_context: ssl.SSLContext | None = None, *,
                 call_timeout: float | None = None, keepalive: float | None = 30,
                 security: SecurityOptions | None = None, **options: Any) -> None:
        self.address = (host, port)
        unknown = set(options) - _OPTIONS
        if unknown:
            raise TypeError(f"PBClient got unexpected option(s) {sorted(unknown)}; it takes "
                            "timeout, ssl_context, call_timeout, keepalive, security and "
                            f"{sorted(_OPTIONS)}")
        for name, value in (("timeout", timeout), ("call_timeout", call_timeout),
                            ("keepalive", keepalive)):
            if value is not None and not value > 0:
                raise ValueError(f"PBClient {name} must be a positive number of seconds or "
                                 f"None, not {value!r}")
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:  # the timeout bounds connect, TLS and handshake together
            return None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except socket.timeout:
            raise TimeoutError(f"connecting to {host}:{port} timed out after {timeout} s") from None
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot connect to {host}:{port}: {exc.strerror or exc}") \
                from None
        set_nodelay(sock)
        if ssl_context is not None:
            sock = self._tls_handshake(sock, ssl_context, host, port, left())
        sock.settimeout(None)
        self.connection = Connection(sock, is_client=True, security=security,
                                     peer=(host, port), call_timeout=call_timeout,
                                     keepalive=keepalive, **options)
        self.connection.start()
        if not self.connection.wait_ready(left()):
            reason = self.connection.close_reason
            self.connection.close("handshake did not finish")
            if reason is None:
                raise TimeoutError(f"PB handshake with {host}:{port} did not finish within "
                                   f"{timeout} s: is it a PB server?")
            if "server at capacity" in str(reason):
                raise ConnectionRefusedError(errno.ECONNREFUSED, f"cannot connect to {host}:"
                                             f"{port}: {reason}") from reason
            raise ProtocolError(f"PB handshake with {host}:{port} failed: {reason}")
        self._root = RemoteReference(self.connection, b"root")

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

    def getRootObject(self) -> RemoteReference:
        """The server's root object (no network traffic)."""
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
        """
        root = self.getRootObject()
        if isinstance(credentials, Anonymous):
            return root.callRemote("loginAnonymous", client)
        challenge, challenger = root.callRemote("login", credentials.username)
        try:
            return challenger.callRemote("respond", respond(challenge, credentials.password),
                                         client)
        except Exception as exc:
            # The traceback's frames hold the challenger; without them it dies
            # here, so the server forgets it (decref) even while the caller
            # keeps the exception.
            refused = exc.with_traceback(None)
        del challenger
        raise refused

    def close(self) -> None:
        """Close the connection; waiting calls get ``PBConnectionLost``."""
        self.connection.close()

    def __enter__(self) -> "PBClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def connect(host: str, port: int = portno, **kwargs: Any) -> RemoteReference:
    """``PBClient(host, port, **kwargs).getRootObject()``; close with ``ref.broker.close()``."""
    return PBClient(host, port, **kwargs).getRootObject()
