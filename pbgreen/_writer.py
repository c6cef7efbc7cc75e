"""The write side of one connection: one writer, and a high-water mark.

How it works. Bytes are queued in the broker in the order they are produced.
``flush`` takes them (``take_output``: a large body is its own piece, never
copied into one buffer) and tries non-blocking ``send``s (timeout 0): it
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

import socket
from typing import Any, Callable

import gevent
from gevent.event import Event
from gevent.socket import socket as _gevent_socket

from .errors import ClosedLocally

__all__ = ["Writer", "HIGH_WATER"]

_MORE = getattr(socket, "MSG_MORE", 0)  # Linux: hold a small piece for the next one
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
        #: Pieces taken from the broker and not written yet (the first may be a view of its tail).
        self._unsent: list[Any] = []
        #: The writer greenlet while bytes wait for the socket, else ``None``
        #: (only then can ``wait_writable`` block: callers test it first).
        self.greenlet: gevent.Greenlet | None = None
        self._drained = Event()

    @property
    def buffered(self) -> int:
        """Bytes queued for the peer and not yet written."""
        return self.protocol.buffered + sum(map(len, self._unsent))

    def flush(self) -> None:
        """Write what is queued: at once if the socket takes it, else by the writer greenlet."""
        if self.greenlet is not None or self.closed:
            return  # the writer takes whatever is queued when it gets to it
        pieces = self.protocol.take_output()
        if not pieces:
            return
        if self._try_inline:
            send = self.sock.send
            last = len(pieces) - 1
            for index, data in enumerate(pieces):
                try:
                    # timeout 0: never waits, never yields; MSG_MORE: one packet with what follows
                    sent = send(data, _MORE if index < last else 0, 0.0)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self._on_error(exc)
                    return
                if sent < len(data):
                    pieces = pieces[index:]
                    pieces[0] = memoryview(data)[sent:]
                    break
            else:
                if self.protocol.tables.close_reason:
                    self._check_close()
                return
        self._unsent = pieces
        self._drained.clear()
        self.greenlet = gevent.spawn(self._write_rest)

    def _write_rest(self) -> None:
        send = self.sock.send
        protocol = self.protocol
        try:
            while not self.closed:
                pieces = self._unsent or protocol.take_output()
                if not pieces:
                    break
                self._unsent = pieces
                while pieces:
                    view = memoryview(pieces[0])
                    while view:
                        view = view[send(view):]
                        pieces[0] = view  # a view: no copy of the tail
                    del pieces[0]
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
        self._unsent = []
