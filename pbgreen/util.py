"""Paging large data, as Twisted's ``twisted.spread.util`` does, in blocking style.

How it works.

* **The wire.** The receiver calls a remote method with a *collector* (a
  ``Referenceable``) as its first argument. The sender's *pager* calls
  ``gotPage(page)`` on the collector once per page, then
  ``endedPaging()``. Those are Twisted's messages, so a Twisted
  ``getAllPages`` can read our pagers and our ``getAllPages`` can read
  Twisted's pagers.
* **Sending.** A ``Pager`` sends from a greenlet of its own, started when
  it is made; so the remote method returns (and its answer leaves) before
  the first page, as with Twisted. Pages are sent as calls that want an
  answer (a Twisted collector answers them too), and at most
  ``PAGES_IN_FLIGHT`` wait for their answer at once: the next page is made
  (the next chunk read, the next item pulled from an iterator) only when
  an earlier one was answered. That is the flow control; Twisted gets it
  from its transport's producer instead, and sends pages without answers.
* **Receiving.** ``page_iter`` (and ``getAllPages``, which lists it) passes
  a collector that queues what arrives; the iterator takes from the queue.
  With a pbgreen sender, the answer to a page is held while more than
  ``PAGES_BUFFERED`` pages wait to be read, so both ends hold only a few
  pages whatever the data's size. (A Twisted sender does not wait for
  answers, so holding them would only pile up waiting calls: its pages are
  queued as they come.) The remote method's own error, an error the
  sender's source raised (``PagingFailed``) and a lost connection arrive in
  the same queue, after the pages that came before them.
* **Stopping early.** Closing the iterator (``break`` out of a ``for`` loop
  over it, or ``close()``) drops what is queued; every held answer and
  every later page is answered with ``PagingStopped``, on which a pbgreen
  pager stops and closes its iterator.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import deque
from typing import Any, Callable, Iterable, Iterator, TypeVar

import gevent
from gevent.event import AsyncResult, Event

from .errors import CopiedFailure, DeadReferenceError, Error, PBConnectionLost
from .flavors import Referenceable

__all__ = ["Pager", "StringPager", "FilePager", "IteratorPager", "CallbackPageCollector",
           "getAllPages", "page_iter", "paged", "PageIterator", "PagingStopped",
           "PagingFailed", "LocalAsRemote", "LocalMethod", "LocalAsyncForwarder",
           "PAGES_IN_FLIGHT", "PAGES_BUFFERED", "FILE_CHUNK_SIZE"]

log = logging.getLogger("pbgreen")

#: Pages a pager sends before it waits for the answer to the oldest.
PAGES_IN_FLIGHT = 4
#: Pages a ``page_iter`` queues before it holds back the answers to more.
PAGES_BUFFERED = 4
#: Bytes per ``FilePager`` page (Twisted's ``FileSender.CHUNK_SIZE``).
FILE_CHUNK_SIZE = 2 ** 14

_Method = TypeVar("_Method", bound=Callable[..., Any])


class PagingStopped(Error):
    """The receiver stopped reading these pages; the pager stops sending."""


class PagingFailed(Error):
    """The sender's source of pages raised before the last page.

    ``remoteType`` is the qualified name of what it raised; the message says
    what happened. Only a pbgreen sender can tell (a Twisted pager that fails
    just stops, and its receiver waits).
    """

    def __init__(self, message: str, remoteType: str = "") -> None:
        super().__init__(message)
        self.remoteType = remoteType


def _pbgreen_peer(ref: Any) -> bool:
    """Whether ``ref``'s peer is pbgreen (it waits for answers to its pages)."""
    protocol = getattr(getattr(ref, "broker", None), "protocol", None)
    return bool(getattr(protocol, "extended", False))


# ============================================================================ sending


class Pager:
    """Sends pages to a remote collector; subclasses say what the pages are.

    Made inside a remote method with the collector it was given; paging
    starts once the method has returned. Override ``nextPage`` (and call
    ``stopPaging`` from it with the last page), or ``sendNextPage`` for
    sources that may have nothing left to send.

    Args:
        collector: the peer's collector (a ``RemoteReference``), the remote
            method's first argument.
        callback: if callable, ``callback(*args, **kw)`` runs once when the
            pager stops: after the last page, or when paging was cut short
            (the receiver stopped reading, the source failed, the connection
            went). Twisted runs it only after a complete send.
    """

    def __init__(self, collector: Any, callback: Callable[..., Any] | None = None,
                 *args: Any, **kw: Any) -> None:
        if callable(callback):
            self.callback: Callable[..., Any] | None = callback
            self.callbackArgs = args
            self.callbackKeyword = kw
        else:
            self.callback = None
        self.collector = collector
        self._stillPaging = True
        self._unanswered: deque[Any] = deque()
        self._greenlet = gevent.spawn(self._page)

    def nextPage(self) -> Any:
        """Return the next page to send (any value pbgreen can send)."""
        raise NotImplementedError("a Pager subclass says what its pages are in nextPage")

    def stopPaging(self) -> None:
        """No page after the current one: ``endedPaging`` follows it."""
        self._stillPaging = False

    def stillPaging(self) -> bool:
        """Whether more pages are to come."""
        return self._stillPaging

    def sendNextPage(self) -> None:
        """Send ``nextPage()`` to the collector (called by the paging greenlet)."""
        self._send(self.nextPage())

    def _send(self, page: Any) -> None:
        self._unanswered.append(self.collector.callRemoteAsync("gotPage", page))

    def _page(self) -> None:
        """The paging greenlet: pages, window by window, then ``endedPaging``."""
        try:
            try:
                while True:
                    self.sendNextPage()
                    unanswered = self._unanswered
                    while len(unanswered) >= PAGES_IN_FLIGHT or (
                            unanswered and not self._stillPaging):
                        unanswered.popleft().get()
                    if not self._stillPaging:
                        break
                self.collector.callRemote("endedPaging", pbanswer=False)
            except (DeadReferenceError, PBConnectionLost) as exc:
                log.info("stopped paging to %s: %s", self._peer(), exc)
            except PagingStopped:
                log.debug("stopped paging to %s: the receiver stopped reading", self._peer())
            except CopiedFailure as exc:  # a collector that refused a page
                log.warning("stopped paging to %s: the collector raised %s: %s",
                            self._peer(), exc.type, exc.getErrorMessage())
            except Exception as exc:
                # The source of pages failed, or a page cannot be sent, or the
                # collector held an answer past this connection's call_timeout
                # (pb.CallTimeout): the receiver would wait for the rest forever.
                self._source_failed(exc)
        finally:
            self._unanswered.clear()
            self._stillPaging = False
            try:
                self._release()
            except Exception:
                log.exception("closing the source of pages to %s failed", self._peer())
            self._run_callback()

    def _source_failed(self, exc: Exception) -> None:
        log.error("paging to %s failed", self._peer(), exc_info=exc)
        if not _pbgreen_peer(self.collector):
            return  # Twisted's pager has no way to say so either: its receiver waits
        kind = type(exc)
        try:
            self.collector.callRemote("pagingFailed", f"{kind.__module__}.{kind.__qualname__}",
                                      str(exc), pbanswer=False)
        except Exception:
            log.debug("could not tell %s that paging failed", self._peer(), exc_info=True)

    def _release(self) -> None:
        """Let go of the source of pages (the pager has stopped)."""

    def _run_callback(self) -> None:
        if self.callback is None:
            return
        try:
            self.callback(*self.callbackArgs, **self.callbackKeyword)
        except Exception:
            log.exception("the callback of a pager to %s failed", self._peer())

    def _peer(self) -> Any:
        return getattr(getattr(self.collector, "broker", None), "peer", None)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the pager has stopped; ``False`` if ``timeout`` passed first."""
        self._greenlet.join(timeout)
        return self._greenlet.dead


class StringPager(Pager):
    """Sends ``data`` (``bytes`` or ``str``) in slices of ``chunkSize``.

    At least one page is sent, an empty one for an empty string, as Twisted
    does. (Twisted names the second parameter ``st``; it is ``data`` here.)
    """

    def __init__(self, collector: Any, data: bytes | str, chunkSize: int = 8192,
                 callback: Callable[..., Any] | None = None, *args: Any, **kw: Any) -> None:
        if chunkSize < 1:
            raise ValueError(f"chunkSize must be at least 1, not {chunkSize}")
        self.string = data
        self.pointer = 0
        self.chunkSize = chunkSize
        Pager.__init__(self, collector, callback, *args, **kw)

    def nextPage(self) -> bytes | str:
        start = self.pointer
        self.pointer = start + self.chunkSize
        if self.pointer >= len(self.string):
            self.stopPaging()
        return self.string[start:self.pointer]


class FilePager(Pager):
    """Sends what ``fd.read`` gives, ``FILE_CHUNK_SIZE`` bytes per page.

    Reading stops at the first empty read (an empty file sends no page, only
    ``endedPaging``, as Twisted's ``FilePager`` does). The file is read in
    the paging greenlet, a page at a time, and is not closed here: close it
    in ``callback``.
    """

    def __init__(self, collector: Any, fd: Any, callback: Callable[..., Any] | None = None,
                 *args: Any, **kw: Any) -> None:
        self.fd = fd
        Pager.__init__(self, collector, callback, *args, **kw)

    def sendNextPage(self) -> None:
        chunk = self.fd.read(FILE_CHUNK_SIZE)
        if not chunk:
            self.stopPaging()
            return
        self._send(chunk)


class IteratorPager(Pager):
    """Sends each item of ``iterable`` as one page (pbgreen only).

    An item is taken only when fewer than ``PAGES_IN_FLIGHT`` pages wait for
    their answer, so a generator runs just ahead of the receiver. When the
    pager stops for any reason the iterator's ``close()`` is called (a
    generator's ``finally`` blocks run). If the iterator raises, a pbgreen
    receiver gets ``PagingFailed``.
    """

    def __init__(self, collector: Any, iterable: Iterable[Any],
                 callback: Callable[..., Any] | None = None, *args: Any, **kw: Any) -> None:
        self.iterator: Iterator[Any] = iter(iterable)
        Pager.__init__(self, collector, callback, *args, **kw)

    def sendNextPage(self) -> None:
        try:
            page = next(self.iterator)
        except StopIteration:
            self.stopPaging()
            return
        self._send(page)

    def _release(self) -> None:
        close = getattr(self.iterator, "close", None)
        if close is not None:
            close()


def paged(method: _Method) -> _Method:
    """Decorate a ``remote_`` method that returns an iterable of pages (pbgreen only).

    The decorated method takes the collector as its first argument (after
    ``self``) and pages what the original method returns with an
    ``IteratorPager``, so both ``util.page_iter`` / ``util.getAllPages``
    from pbgreen and Twisted's ``getAllPages`` read it. Without the
    decorator, returning a generator from a remote method still raises
    ``InsecureJelly`` in the caller: generators never cross the wire.

    Example:
        ```python
        class Library(pb.Root):
            @util.paged
            def remote_lines(self, path):
                with open(path, "rb") as f:
                    yield from f
        ```
    """

    @functools.wraps(method)
    def start_paging(self: Any, collector: Any, *args: Any, **kw: Any) -> None:
        IteratorPager(collector, method(self, *args, **kw))

    return start_paging  # type: ignore[return-value]


# ============================================================================ receiving


class CallbackPageCollector(Referenceable):
    """Collects every page; ``callback(pages)`` runs at ``endedPaging`` (Twisted's collector).

    Args:
        callback: called with the list of pages once they have all arrived.
    """

    def __init__(self, callback: Callable[[list[Any]], Any]) -> None:
        self.pages: list[Any] = []
        self.callback = callback

    def remote_gotPage(self, page: Any) -> None:
        """Keep one page."""
        self.pages.append(page)

    def remote_endedPaging(self) -> None:
        """The last page is in: hand them all to the callback."""
        self.callback(self.pages)


_PAGE, _END, _ERROR = "page", "end", "error"


class _PageQueue(Referenceable):
    """The collector behind ``page_iter``: what arrives, in order, for one reader."""

    def __init__(self, hold_answers: bool) -> None:
        self._items: deque[tuple[str, Any]] = deque()
        self._changed = Event()
        self._hold_answers = hold_answers
        self.stopped = False  # the reader stopped: refuse pages
        self._gone = False  # the connection went: no answer to hold any more

    def _notify(self, *_: Any) -> None:
        changed, self._changed = self._changed, Event()
        changed.set()

    def _push(self, kind: str, value: Any) -> None:
        if not self.stopped:
            self._items.append((kind, value))
            self._notify()

    def remote_gotPage(self, page: Any) -> None:
        if self.stopped:
            raise PagingStopped("the receiver stopped reading these pages")
        self._push(_PAGE, page)
        while (self._hold_answers and len(self._items) > PAGES_BUFFERED
               and not self.stopped and not self._gone):
            self._changed.wait()  # the answer is the sender's go-ahead: hold it
        if self.stopped:
            raise PagingStopped("the receiver stopped reading these pages")

    def remote_endedPaging(self) -> None:
        self._push(_END, None)

    def remote_pagingFailed(self, kind: str, message: str) -> None:
        self._push(_ERROR, PagingFailed(f"the sender's pages failed: {kind}: {message}", kind))

    def lost(self, ref: Any) -> None:
        """notifyOnDisconnect callback: nothing more will come."""
        self._gone = True
        self._push(_ERROR, PBConnectionLost(
            f"connection to {ref.broker.peer} lost while paging: {ref.broker.close_reason}"))

    def take(self, call: Any) -> tuple[str, Any]:
        """The next item; waits for one. ``call`` is the remote method's result."""
        answered = False
        while True:
            changed = self._changed
            if self._items:
                item = self._items.popleft()
                self._notify()  # a held answer may go now
                return item
            if not answered and call.ready():
                answered = True
                call.get()  # the remote method's own error is raised here
                continue
            changed.wait()

    def stop(self) -> None:
        self.stopped = True
        self._items.clear()
        self._notify()


class PageIterator:
    """Iterates over the pages of one remote method (what ``page_iter`` returns).

    ``close()`` (also at the end of a ``with`` block, on ``break`` out of a
    ``for`` loop over a ``page_iter(...)`` call, or when garbage) stops the
    sender and drops queued pages.
    """

    def __init__(self, ref: Any, methodName: str, args: tuple[Any, ...],
                 kw: dict[str, Any]) -> None:
        self._ref = ref
        self._queue = _PageQueue(hold_answers=_pbgreen_peer(ref))
        self._done = False
        ref.notifyOnDisconnect(self._queue.lost)
        with contextlib.ExitStack() as on_failure:  # the collector goes with the call
            on_failure.callback(self.close)
            self._call = ref.callRemoteAsync(methodName, self._queue, *args, **kw)
            on_failure.pop_all()
        self._call.rawlink(self._queue._notify)

    def __iter__(self) -> "PageIterator":
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        with contextlib.ExitStack() as on_failure:  # a timeout or kill ends the paging too
            on_failure.callback(self.close)
            kind, value = self._queue.take(self._call)
            on_failure.pop_all()
        if kind is _PAGE:
            return value
        self.close()
        if kind is _END:
            raise StopIteration
        raise value

    def close(self) -> None:
        """Stop reading: the sender is told to stop, queued pages are dropped."""
        if self._done:
            return
        self._done = True
        self._queue.stop()
        self._ref.dontNotifyOnDisconnect(self._queue.lost)

    def __enter__(self) -> "PageIterator":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def page_iter(ref: Any, methodName: str, *args: Any, **kw: Any) -> PageIterator:
    """Call ``methodName`` with a collector first and iterate over the pages it sends.

    pbgreen only. The sender may be any pager (pbgreen's, Twisted's, a
    ``@util.paged`` method). The call is sent at once; each ``next()``
    blocks the calling greenlet until a page arrives. Raises the remote
    method's error, ``PagingFailed`` if a pbgreen sender's source failed,
    ``PBConnectionLost`` if the connection went before the last page.
    Anything raised out of ``next()`` (also a ``gevent.Timeout`` around it)
    closes the iterator, which stops the sender.

    Example:
        ```python
        for chunk in util.page_iter(root, "lines", "big.log"):
            out.write(chunk)
        ```
    """
    return PageIterator(ref, methodName, args, kw)


def getAllPages(referenceable: Any, methodName: str, *args: Any, **kw: Any) -> list[Any]:
    """Call ``methodName`` with a collector first; block, then return every page.

    As Twisted's ``getAllPages``, but where Twisted's Deferred would never
    fire because the remote method raised, this raises that error (and
    ``PBConnectionLost`` if the connection goes before ``endedPaging``).
    """
    with page_iter(referenceable, methodName, *args, **kw) as pages:
        return list(pages)


# ============================================================================ local stand-ins


class LocalAsRemote:
    """A local object that answers ``callRemote`` as a remote one would (for tests).

    ``callRemote("x", ...)`` runs ``sync_x(...)`` if it exists, else
    ``async_x(...)``; either way it returns the result or raises the error,
    as pbgreen's ``callRemote`` does (Twisted's returns Deferreds). With
    ``reportAllTracebacks`` set, errors of ``async_`` methods are logged too.
    """

    reportAllTracebacks = True

    def callRemote(self, name: str, *args: Any, **kw: Any) -> Any:
        """Run ``sync_<name>`` or else ``async_<name>``; return its result or raise."""
        sync = getattr(self, "sync_" + name, None)
        if sync is not None:
            return sync(*args, **kw)
        try:
            return getattr(self, "async_" + name)(*args, **kw)
        except Exception:
            if self.reportAllTracebacks:
                log.exception("local call %s failed", name)
            raise

    def callRemoteAsync(self, name: str, *args: Any, **kw: Any) -> AsyncResult:
        """``callRemote`` with its outcome in an ``AsyncResult`` (already set)."""
        result = AsyncResult()
        try:
            result.set(self.callRemote(name, *args, **kw))
        except Exception as exc:
            result.set_exception(exc)
        return result

    def remoteMethod(self, name: str) -> "LocalMethod":
        """A callable that does ``callRemote(name, ...)``."""
        return LocalMethod(self, name)


class LocalMethod:
    """``local.callRemote(name, ...)`` as a plain callable."""

    def __init__(self, local: Any, name: str) -> None:
        self.local = local
        self.name = name

    def __call__(self, *args: Any, **kw: Any) -> Any:
        return self.local.callRemote(self.name, *args, **kw)


class LocalAsyncForwarder:
    """Forwards ``callRemote`` to a local object, for the methods of an interface only.

    Args:
        forwarded: the object calls go to; it must provide ``interfaceClass``.
        interfaceClass: a ``zope.interface`` interface (as in Twisted) or a
            plain class whose public methods make the interface.
        failWhenNotImplemented: for a method outside the interface, raise
            ``NotImplementedError`` instead of returning ``None``.
    """

    def __init__(self, forwarded: Any, interfaceClass: Any,
                 failWhenNotImplemented: bool = False) -> None:
        provided_by = getattr(interfaceClass, "providedBy", None)
        provides = (provided_by(forwarded) if provided_by is not None
                    else isinstance(forwarded, interfaceClass))
        if not provides:
            raise TypeError(f"{forwarded!r} does not provide {interfaceClass!r}")
        self.forwarded = forwarded
        self.interfaceClass = interfaceClass
        self.failWhenNotImplemented = failWhenNotImplemented

    def _in_interface(self, method: str) -> bool:
        query = getattr(self.interfaceClass, "queryDescriptionFor", None)
        if query is not None:
            return query(method) is not None
        return not method.startswith("_") and callable(getattr(self.interfaceClass, method, None))

    def callRemote(self, method: str, *args: Any, **kw: Any) -> Any:
        """Call ``method`` on the forwarded object if the interface has it."""
        if self._in_interface(method):
            return getattr(self.forwarded, method)(*args, **kw)
        if self.failWhenNotImplemented:
            raise NotImplementedError(f"No Such Method in Interface: {method}")
        return None
