"""The write side of one connection: one writer, and a high-water mark.

How it works. Bytes are queued in the broker in the order they are produced.
``flush`` takes them and tries one non-blocking ``send`` (timeout 0): it
cannot yield, so nothing can interrupt it half-way. Whatever the kernel does
not take goes to a writer greenlet, the only code that ever waits on the
socket's write side; it runs until the queue is empty, then ends. A caller's
``gevent.Timeout`` therefore never cuts a frame. TLS (and any socket that is
not a plain gevent socket) always goes through the writer, because an SSL
write that had to wait must be retried with the same bytes.

``wait_writable`` is the back-pressure: it blocks while more than
``high_water`` bytes are queued. Only a writer that could not finish leaves
bytes queued past a flush, so the check costs nothing otherwise.
"""

from __future__ import annotations

from typing import Any, Callable

import gevent
from gevent.event import Event
from gevent.socket import socket as _gevent_socket

from .errors import ClosedLocally

__all__ = ["Writer", "HIGH_WATER"]

HIGH_WATER = 1024 * 1024  # bytes queued for the peer before callers and workers wait


class Writer:
    """Writes one broker's bytes to one socket (see the module docstring).

    Args:
        sock: the connected socket.
        protocol: the broker whose ``data_to_send`` is written.
        high_water: bytes queued past which ``wait_writable`` waits.
        on_error: called with the exception when the socket fails, or with
            ``ClosedLocally`` when the broker asked to close after its last bytes.
        on_drained: called when the queue drops to the high-water mark.
    """

    def __init__(self, sock: Any, protocol: Any, high_water: int,
                 on_error: Callable[[BaseException], Any], on_drained: Callable[[], Any]) -> None:
        self.sock = sock
        self.protocol = protocol
        self.high_water = high_water
        self.closed = False
        self._on_error = on_error
        self._on_drained = on_drained
        self._try_inline = type(sock) is _gevent_socket
        self._unsent: Any = b""
        #: The writer greenlet while bytes wait for the socket, else ``None``
        #: (only then can ``wait_writable`` block: callers test it first).
        self.greenlet: gevent.Greenlet | None = None
        self._drained = Event()

    @property
    def buffered(self) -> int:
        """Bytes queued for the peer and not yet written."""
        return self.protocol.buffered + len(self._unsent)

    def flush(self) -> None:
        """Write what is queued: at once if the socket takes it, else by the writer greenlet."""
        if self.greenlet is not None or self.closed:
            return  # the writer takes whatever is queued when it gets to it
        data = self.protocol.data_to_send()
        if not data:
            return
        if self._try_inline:
            try:
                sent = self.sock.send(data, 0, 0.0)  # timeout 0: never waits, never yields
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._on_error(exc)
                return
            if sent == len(data):
                if self.protocol.tables.close_reason:
                    self._check_close()
                return
            data = memoryview(data)[sent:]
        self._unsent = data
        self._drained.clear()
        self.greenlet = gevent.spawn(self._write_rest)

    def _write_rest(self) -> None:
        send = self.sock.send
        protocol = self.protocol
        try:
            while not self.closed:
                data = self._unsent or protocol.data_to_send()
                if not data:
                    break
                self._unsent = data
                view = memoryview(data)
                while view:
                    view = view[send(view):]
                    self._unsent = view  # a view: no copy of the tail
                self._unsent = b""
                if self.buffered <= self.high_water:
                    self._drained.set()
                    self._on_drained()
        except OSError as exc:
            self._on_error(exc)
        finally:
            if self.greenlet is gevent.getcurrent():
                self.greenlet = None
            self._drained.set()
        self._check_close()

    def _check_close(self) -> None:
        reason = self.protocol.tables.close_reason
        if reason and not self.closed:
            self._on_error(ClosedLocally(reason))

    def wait_writable(self) -> None:
        """Wait while more than ``high_water`` bytes are queued (back-pressure)."""
        while self.greenlet is not None and self.buffered > self.high_water \
                and not self.closed:
            self._drained.clear()
            self._drained.wait()

    def drain(self, timeout: float) -> None:
        """Write what is queued, waiting up to ``timeout`` s for the writer to finish."""
        self.flush()
        greenlet = self.greenlet
        if greenlet is not None and greenlet is not gevent.getcurrent():
            greenlet.join(timeout)

    def close(self) -> None:
        """Stop writing: the connection is gone."""
        self.closed = True
        self._drained.set()
        greenlet, self.greenlet = self.greenlet, None
        if greenlet is not None and greenlet is not gevent.getcurrent():
            greenlet.kill(block=False)
        self._unsent = b""
