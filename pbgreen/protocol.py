"""The PB broker as a sans-I/O state machine.

How it works. A ``Broker`` is one end of one connection. Bytes from the peer
go in through ``receive_data``, which returns events (``events.py``); bytes
for the peer collect in one outgoing buffer that the driver drains with
``data_to_send``. The broker never waits, never touches a socket and never
runs user code: jellying values (which calls ``getStateToCopy*``) and
running methods belong to ``dispatch``, which hands the broker finished
``Outgoing`` values to queue.

* **State.** ``HANDSHAKE`` until the dialect is chosen (WIRE §2.5: the
  acceptor offers its dialects, the connector answers with its choice, each
  side sends ``['version', 6]`` the moment it switches), then ``OPEN``, and
  ``CLOSED`` after ``connection_lost`` or any protocol error. During the
  handshake the decoder is fed one expression at a time, so bytes after the
  switch are read in the new dialect.
* **One boundary for bad input.** Each message goes to a reader from the
  ``_READERS`` table; any exception a reader raises becomes ``ProtocolError``
  and the state becomes ``CLOSED`` (h11's pattern). Nothing else escapes.
* **Request ids.** ``send_call`` numbers requests; ids that want an answer
  stay in ``pending`` until it comes. An abandoned id is simply dropped from
  ``pending``: a later reply to any id we issued but no longer wait for is
  a late answer, and the references in it are given back.
* **Tables.** Reference counting lives in ``_refs.RefTables``; the broker
  commits a prepared value's registrations and queues its bytes in one step.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from typing import Any, Callable

from . import _fanout, plaincodec
from ._failure import failure_sexp
from ._refs import MAX_BROKER_REFS, NotOpen, RefTables, SendContext
from .banana import (DIALECTS, INT_BYTES as _INT_BYTES, NO_VOCAB, VOCAB_CODES, VOCAB_DIALECTS,
                     Decoder, choose_dialect, encode, encode_int)
from .errors import Error, ProtocolError
from .events import Cancelled, IncomingCall, Ready, Released, Reply, StoppedObserving
from .jelly import SecurityOptions, globalSecurity

__all__ = ["Broker", "State", "Outgoing", "PROTOCOL_VERSION", "MAX_BROKER_REFS", "AT_CAPACITY"]

log = logging.getLogger("pbgreen")

PROTOCOL_VERSION = 6

#: What a server at capacity offers instead of its dialects: a Twisted client
#: knows no dialect in it and closes (a refused connection, to it); a pbgreen
#: client reports "server at capacity".
AT_CAPACITY = [b"server at capacity"]


class State(enum.Enum):
    """Where a connection is in its life."""

    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


# Module constants: an Enum class attribute goes through EnumType.__getattr__,
# and the state is checked several times per message.
_HANDSHAKE, _OPEN, _CLOSED = State.HANDSHAKE, State.OPEN, State.CLOSED
_UPDATE_HEADS = _fanout.UPDATE_HEADS
_SMALL_INTS = len(_INT_BYTES)


#: Bodies at least this long are queued as their own piece (``Broker.take_output``),
#: not copied into the output buffer: for them the copies cost more than a write.
OWN_PIECE = 64 * 1024


class Outgoing:
    """Values ready to queue: their banana bytes, and what they register (if anything)."""

    __slots__ = ("count", "body", "context")

    def __init__(self, count: int, body: bytes, context: SendContext | None = None) -> None:
        self.count = count
        self.body = body
        self.context = context


class Broker:
    """One end of a PB connection, without I/O.

    Args:
        is_client: ``True`` for the connector, ``False`` for the acceptor.
        root: the acceptor's root object (the peer reaches it as ``b'root'``).
        security: which classes may arrive (default: the global registry).
        unsafe_tracebacks: send full tracebacks with errors.
        invoker: the driver object ``RemoteReference.broker`` points at.
        dialects: the dialects we speak, in order of preference.
        decoder_options: limits passed to the banana ``Decoder``.
    """

    def __init__(self, *, is_client: bool, root: Any = None,
                 security: SecurityOptions | None = None, unsafe_tracebacks: bool = False,
                 invoker: Any = None, dialects: tuple[bytes, ...] = DIALECTS,
                 **decoder_options: Any) -> None:
        self.is_client = is_client
        self.security = security or globalSecurity
        self.unsafe_tracebacks = unsafe_tracebacks
        self.invoker = invoker
        #: Who the peer is, for log records (the driver sets its address).
        self.peer: Any = None
        self.dialects = dialects
        self.dialect: bytes | None = None
        self.state = _HANDSHAKE
        decoder_options.setdefault("fast", plaincodec.loads)
        self.decoder = Decoder(**decoder_options)
        #: The last ``receive_data`` stopped at its limit: more may be buffered.
        self.more_input = False
        self.vocab: dict[bytes, bytes] = NO_VOCAB
        self._update_head = _UPDATE_HEADS[0]  # a cache update's first bytes, in this vocabulary
        #: Whether the peer speaks the ``pbgreen`` dialect (deadlines, cancel, ping).
        self.extended = False
        #: Bytes queued past which a peer that makes the reader write is dropped.
        self.reader_write_limit: int | None = None
        self.tables = RefTables(invoker, self.security)
        #: Request ids we sent and still wait for an answer to.
        self.pending: dict[int, None] = {}  # a dict: smaller than a set when empty
        self._last_request = 0
        self._out = bytearray()
        #: The bytes queued for the peer after ``pieces`` (read its length;
        #: ``take_output``/``data_to_send`` take them).
        self.output = self._out
        #: Bytes queued before ``output``: large bodies are kept as their own
        #: piece instead of being copied into it (``_queue``).
        self._pieces: list[bytes] = []
        self._pieces_size = 0
        self._on_lost: list[Callable[[], Any]] = []
        self._finished = False
        if root is not None:
            self.tables.set_root(root)
        if not is_client:
            self._out += encode(list(dialects), vocab=False)

    def set_root(self, root: Any) -> None:
        """Make ``root`` the object the peer reaches as ``b'root'``."""
        self.tables.set_root(root)

    @property
    def close_reason(self) -> str | None:
        """Set when the peer earned a disconnect; close after flushing."""
        return self.tables.close_reason

    @property
    def buffered(self) -> int:
        """Bytes queued for the peer and not yet taken by ``take_output``/``data_to_send``."""
        return len(self._out) + self._pieces_size

    # ------------------------------------------------------------------ bytes in

    def receive_data(self, data: bytes, limit: int | None = None) -> list[Any]:
        """Feed bytes from the peer; return the events they complete.

        With ``limit``, read at most that many messages; the rest stays
        buffered and ``more_input`` is true until ``receive_data(b"", limit)``
        has read it (so a driver can bound the events alive at once).
        Raises ``ProtocolError`` (incl. ``BananaError``) if the peer broke
        the protocol; the state is then ``CLOSED``.
        """
        self.more_input = False
        if self.state is _CLOSED:
            return []  # bytes that were already in flight when we gave up
        events: list[Any] = []
        try:
            if self.state is _HANDSHAKE:
                found = self.decoder.feed(data, limit=1)
                while found and self.state is _HANDSHAKE:
                    self._negotiate(found[0], events)
                    if self.state is _HANDSHAKE:
                        found = self.decoder.feed(b"", limit=1)
                if self.state is _HANDSHAKE:
                    return events
                data = b""
            readers = _EXTENDED_READERS if self.extended else _READERS
            exprs = self.decoder.feed(data, limit)
            if limit is not None and len(exprs) >= limit:
                self.more_input = True
            for expr in exprs:
                if type(expr) is not list or not expr:
                    raise ProtocolError(f"expected a PB message (a list), got {expr!r:.80}")
                reader = readers.get(expr[0]) if type(expr[0]) is bytes else None
                if reader is None:
                    raise ProtocolError(f"unknown PB command {expr[0]!r:.60}")
                reader(self, expr, events)
        except ProtocolError:
            self.state = _CLOSED
            raise
        except Exception as exc:
            self.state = _CLOSED
            raise ProtocolError(f"malformed message from the peer ({type(exc).__name__}: "
                                f"{exc})") from exc
        return events

    def receive_eof(self) -> None:
        """The peer closed its side: nothing more will arrive."""
        self.state = _CLOSED

    def _negotiate(self, expr: Any, events: list[Any]) -> None:
        if self.is_client:
            if expr == AT_CAPACITY:
                raise ProtocolError("server at capacity: it serves as many connections as "
                                    "it allows (max_connections); try again later")
            choice = choose_dialect(expr, self.dialects)
            if choice is None:
                raise ProtocolError(f"no dialect in common: the peer offers {expr!r:.80}, "
                                    f"we speak {list(self.dialects)}")
            self._out += encode(choice, vocab=False)
        else:
            if type(expr) is not bytes or expr not in self.dialects:
                raise ProtocolError(f"the peer chose dialect {expr!r:.60}, which we did not offer")
            choice = expr
        self.dialect = choice
        self.state = _OPEN
        self.decoder.vocab = choice in VOCAB_DIALECTS
        self.vocab = VOCAB_CODES if choice in VOCAB_DIALECTS else NO_VOCAB
        self._update_head = _UPDATE_HEADS[self.vocab is VOCAB_CODES]
        self.extended = choice == b"pbgreen"
        self._write([b"version", PROTOCOL_VERSION])
        events.append(Ready(choice))

    # ------------------------------------------------------------------ bytes out

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call (may be empty)."""
        pieces = self.take_output()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def take_output(self) -> list[bytes]:
        """Everything queued for the peer since the last call, as pieces to write in order.

        A large body is its own piece, so it reaches the socket without
        being copied into one buffer with the rest (the list may be empty).
        """
        if self.tables.releases:
            self._queue_releases()
        pieces = self._pieces
        if pieces:
            self._pieces = []
            self._pieces_size = 0
        else:
            pieces = []
        if self._out:
            pieces.append(bytes(self._out))
            self._out.clear()
        return pieces

    def _write(self, message: list[Any]) -> None:
        self._out += encode(message, vocab=self.vocab is VOCAB_CODES)

    def _queue_releases(self) -> None:
        releases = self.tables.take_releases()
        if self.state is _OPEN:
            for command, key in releases:
                self._write([command, key])

    def _queue(self, head: list[Any], values: Outgoing) -> None:
        """Commit ``values``' registrations and queue the message, in one step."""
        if self.state is not _OPEN:
            raise NotOpen(f"the connection is {self.state.value}")
        if values.context is not None:
            self.tables.commit(values.context)  # raises Stale, nothing applied
        if self.tables.releases:  # releases issued before this message go out before it
            self._queue_releases()
        out = self._out
        out += plaincodec.dumps_head(head, values.count, self.vocab)
        body = values.body
        if len(body) < OWN_PIECE:
            out += body
        else:  # no copy: the body is written to the socket as it is
            first = bytes(out)
            out.clear()
            self._pieces += (first, body)
            self._pieces_size += len(first) + len(body)

    def send_call(self, object_id: Any, method: str, values: Outgoing, answer: bool,
                  cache: bool = False, deadline: float | None = None) -> int:
        """Queue a call of ``method`` on the peer's ``object_id``; its request id.

        ``values`` holds the jellied ``(args, kwargs)``. With ``answer`` the id
        waits in ``pending`` until the reply comes. ``cache`` sends a
        ``cachemessage`` (an update to a cache the peer holds). Raises
        ``_refs.NotOpen`` (nothing queued) once the connection is closed. ``deadline``
        (seconds the caller will wait) travels with the call when the peer
        speaks ``pbgreen``, so it can stop the method when the caller gave up.
        Raises
        ``_refs.Stale`` (nothing queued) if ``values`` must be prepared again.
        """
        self._last_request += 1
        request_id = self._last_request
        head = [b"cachemessage" if cache else b"message", request_id, object_id,
                method.encode("utf-8"), 1 if answer else 0]
        if deadline is not None and self.extended:
            # The deadline goes last, after the values: [..., args, kwargs, ms]
            self._queue(head, Outgoing(values.count + 1, values.body
                                       + encode_int(max(0, int(deadline * 1000))),
                                       values.context))
        else:
            self._queue(head, values)
        if answer:
            self.pending[request_id] = None
        return request_id

    def send_update(self, cache_id: int, tail: bytes) -> None:
        """Queue an answer-less ``cachemessage`` whose end is already encoded.

        ``tail`` is ``_fanout.shared_tail``'s bytes (method name, 0, args,
        kwargs) in this broker's vocabulary; only the request id and
        ``cache_id`` are added here. ``_refs.NotOpen`` once closed.
        """
        if self.state is not _OPEN:
            raise NotOpen(f"the connection is {self.state.value}")
        if self.tables.releases:  # releases issued before this update go out before it
            self._queue_releases()
        request_id = self._last_request = self._last_request + 1
        out = self._out
        # Run once per observer of every update: small ids straight from the table.
        out += self._update_head
        out += _INT_BYTES[request_id] if request_id < _SMALL_INTS else encode_int(request_id)
        out += _INT_BYTES[cache_id] if 0 <= cache_id < _SMALL_INTS else encode_int(cache_id)
        out += tail

    def send_answer(self, request_id: int, values: Outgoing) -> None:
        """Queue the answer to the peer's request ``request_id`` (``NotOpen`` once closed)."""
        self._queue([b"answer", request_id], values)

    def send_error(self, request_id: int, exc: BaseException) -> None:
        """Queue an ``error`` for ``request_id``, as a Twisted ``CopyableFailure``."""
        if self.state is _OPEN:
            self._write([b"error", request_id, failure_sexp(exc, self.unsafe_tracebacks)])

    def _check_reader_output(self) -> None:
        """Before the reader itself queues an error answer: refuse a peer that does not read.

        A peer can make us write error answers (calls to objects that do not
        exist) as fast as it sends; past ``reader_write_limit`` bytes queued it
        is disconnected rather than buffered without bound.
        """
        limit = self.reader_write_limit
        if limit is not None and self.buffered > limit:
            raise ProtocolError(f"the peer makes us queue more than {limit} bytes of answers "
                                "to calls that cannot run, and does not read them")

    def send_cancel(self, request_id: int) -> None:
        """Tell a ``pbgreen`` peer we stopped waiting for ``request_id`` (it stops the method)."""
        if self.state is _OPEN and self.extended:
            self._write([b"cancel", request_id])

    def send_ping(self) -> None:
        """A keepalive probe the peer answers: ``ping`` in ``pbgreen``, else a call to no object.

        Twisted answers a ``message`` to an object id it does not have with
        an ``error`` and logs nothing (WIRE §4.11); the reply is dropped.
        """
        if self.state is not _OPEN:
            return
        if self.extended:
            self._write([b"ping"])
        else:
            self._last_request += 1
            self._write([b"message", self._last_request, -1, b"ping", 1, [b"tuple"],
                         [b"dictionary"]])

    def send_uncache(self, cache_id: Any) -> None:
        """Tell the peer we send no more updates to ``cache_id`` (after ``StoppedObserving``)."""
        if self.state is _OPEN:
            self._write([b"uncache", cache_id])

    # ------------------------------------------------------------------ replies

    def abandon(self, request_id: int) -> None:
        """The caller stopped waiting: the late answer's references will be given back."""
        self.pending.pop(request_id, None)

    def done_with(self, reply: Reply) -> list[Released | StoppedObserving]:
        """``reply`` was read (or never will be): unpin what it named; the events now owed."""
        if reply.announced:
            self.tables.announced.subtract(reply.announced)
            self.tables.announced += Counter()  # drop the zeros
        if not reply.pins:
            return []
        callbacks, stopped = self.tables.unpin(reply.pins)
        events: list[Released | StoppedObserving] = [
            StoppedObserving(cache_id, e.object, e.perspective, e.observer)
            for cache_id, e in stopped]
        if callbacks:
            events.append(Released(tuple(callbacks)))
        return events

    def discard(self, reply: Reply) -> list[Released | StoppedObserving]:
        """A reply nobody will read: give back what it holds; the events now owed."""
        if type(reply.sexp) is not plaincodec.Built:
            self.tables.release_unread(reply.sexp)
        return self.done_with(reply)

    # ------------------------------------------------------------------ the end

    def on_lost(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` when the connection goes (with the other disconnect callbacks)."""
        self._on_lost.append(callback)

    def forget_lost(self, callback: Callable[[], Any]) -> None:
        """Undo ``on_lost(callback)``."""
        if callback in self._on_lost:
            self._on_lost.remove(callback)

    def on_release(self, obj: Any, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once the peer has released every reference to ``obj``."""
        self.tables.on_release(obj, callback)

    def connection_lost(self) -> tuple[set[int], list[Callable[[], Any]], list[StoppedObserving]]:
        """Mark the connection dead; return (pending ids, callbacks owed, caches to stop)."""
        if self._finished:
            return set(), [], []
        self._finished = True
        self.state = _CLOSED
        pending, self.pending = set(self.pending), {}
        callbacks, owned = self.tables.clear()
        callbacks += self._on_lost
        self._on_lost = []
        self._out.clear()
        self._pieces = []
        self._pieces_size = 0
        stopped = [StoppedObserving(0, e.object, e.perspective, e.observer) for e in owned]
        return pending, callbacks, stopped


# ---------------------------------------------------------------------- message readers
#
# One function per PB command: (broker, message, events) -> None. They check
# the message's shape and may raise anything; receive_data turns that into
# ProtocolError.


def _fields(expr: list[Any], count: int) -> None:
    if len(expr) != count:
        raise ProtocolError(f"{expr[0].decode('ascii', 'replace')} needs {count - 1} fields, "
                            f"got {len(expr) - 1}")


def _read_version(broker: Broker, expr: list[Any], events: list[Any]) -> None:
    _fields(expr, 2)
    if expr[1] != PROTOCOL_VERSION:
        raise ProtocolError(f"Version Incompatibility: {PROTOCOL_VERSION} {expr[1]!r:.20}")


def _read_message(broker: Broker, expr: list[Any], events: list[Any]) -> None:
    deadline = None
    if len(expr) == 8 and broker.extended:  # pbgreen: the caller's deadline, in ms
        deadline = expr.pop()
        if type(deadline) is not int:
            raise ProtocolError(f"deadline that is not a number: {deadline!r:.20}")
        deadline /= 1000
    if len(expr) != 7:
        _fields(expr, 7)
    command, request_id, object_id, name, answer, args, kwargs = expr
    if type(request_id) is not int or type(name) is not bytes or type(answer) is not int:
        raise ProtocolError(f"malformed {command.decode()}: {expr!r:.120}")
    update = command == b"cachemessage"
    tables = broker.tables
    late = None
    if update:
        kind = type(object_id)
        target = tables.held.get(object_id) if kind is int or kind is bytes else None
        if target is None and type(object_id) is int and object_id in tables.announced:
            late = object_id  # its first copy is in a reply the caller has not read yet
    else:
        target = tables.local(object_id)
    if target is None and late is None:
        broker._check_reader_output()
        if answer:
            broker.send_error(request_id, Error("Invalid Object ID"))
        return
    method = _METHOD_NAMES.get(name)
    if method is None:
        try:
            method = name.decode("utf-8")
        except UnicodeDecodeError:
            if answer:
                broker.send_error(request_id, Error("method name is not UTF-8"))
            return
        if len(name) <= 64 and len(_METHOD_NAMES) < _MAX_METHOD_NAMES:
            _METHOD_NAMES[name] = method  # bounded: at most 4096 names of 64 bytes
    if type(kwargs) is plaincodec.Built and type(kwargs.value) is dict and not kwargs.value:
        kwargs = _NO_KWARGS  # a queued update keeps one shared object, not its own empty dict
    events.append(IncomingCall(request_id, target, method, bool(answer), args, kwargs, update,
                               deadline, late))


# A received call keeps its method name (a str) and keyword arguments while it
# waits to run; a holder of many caches may have thousands of updates queued.
# The names are few, so each is decoded once; "no keywords" is one object.
_METHOD_NAMES: dict[bytes, str] = {}
_MAX_METHOD_NAMES = 4096
_NO_KWARGS = plaincodec.Built({})


def _read_reply(broker: Broker, expr: list[Any], events: list[Any]) -> None:
    _fields(expr, 3)
    request_id = expr[1]
    if type(request_id) is not int:
        raise ProtocolError(f"{expr[0].decode()} with a request id that is not a number")
    sexp = expr[2]
    if request_id not in broker.pending:
        if 0 < request_id <= broker._last_request:  # late: the caller gave up waiting
            if type(sexp) is not plaincodec.Built:
                broker.tables.release_unread(sexp)
            return
        raise ProtocolError(f"{expr[0].decode()} for request {request_id}, which was never sent")
    del broker.pending[request_id]
    ok = expr[0] == b"answer"
    pins: tuple[Any, ...] = ()
    announced: tuple[Any, ...] = ()
    if ok and type(sexp) is not plaincodec.Built:
        found, copies = _pins_named(sexp)
        pins, announced = tuple(found), tuple(copies)
        broker.tables.pin(pins)
        broker.tables.announced.update(announced)
    events.append(Reply(request_id, ok, sexp, pins, announced))


def _read_decref(broker: Broker, expr: list[Any], events: list[Any]) -> None:
    _fields(expr, 2)
    luid = expr[1]
    if type(luid) is bytes:
        return  # named objects (the root) are never counted
    if type(luid) is not int or luid not in broker.tables.locals:
        raise ProtocolError(f"decref of unknown object id {luid!r:.20}")
    callbacks = broker.tables.release(luid)
    if callbacks:
        events.append(Released(tuple(callbacks)))


def _read_decache(broker: Broker, expr: list[Any], events: list[Any]) -> None:
    _fields(expr, 2)
    cache_id = expr[1]
    if type(cache_id) is not int or cache_id not in broker.tables.owned:
        raise ProtocolError(f"decache of unknown cache id {cache_id!r:.20}")
    entry = broker.tables.decache(cache_id)
    if entry is not None:
        events.append(StoppedObserving(cache_id, entry.object, entry.perspective, entry.observer))


def _read_uncache(broker: Broker, expr: list[Any], events: list[Any]) -> None:
    _fields(expr, 2)
    if not broker.tables.uncache(expr[1]):
        raise ProtocolError(f"uncache of unknown cache id {expr[1]!r:.20}")


def _read_cancel(broker: Broker, expr: list[Any], events: list[Any]) -> None:
    _fields(expr, 2)
    if type(expr[1]) is not int:
        raise ProtocolError(f"cancel of a request id that is not a number: {expr[1]!r:.20}")
    events.append(Cancelled(expr[1]))


def _read_ping(broker: Broker, expr: list[Any], events: list[Any]) -> None:
    _fields(expr, 1)
    broker._check_reader_output()
    broker._write([b"pong"])


def _read_pong(broker: Broker, expr: list[Any], events: list[Any]) -> None:
    _fields(expr, 1)  # its arrival is all that counts (the driver saw bytes)


def _read_did_not_understand(broker: Broker, expr: list[Any], events: list[Any]) -> None:
    log.info("peer %s did not understand %r", broker.peer, expr[1:2])


_READERS: dict[bytes, Callable[[Broker, list[Any], list[Any]], None]] = {
    b"version": _read_version,
    b"message": _read_message,
    b"cachemessage": _read_message,
    b"answer": _read_reply,
    b"error": _read_reply,
    b"decref": _read_decref,
    b"decache": _read_decache,
    b"uncache": _read_uncache,
    b"didNotUnderstand": _read_did_not_understand,
}

#: Commands only a ``pbgreen`` peer may send.
_EXTENDED_READERS: dict[bytes, Callable[[Broker, list[Any], list[Any]], None]] = {
    **_READERS,
    b"cancel": _read_cancel,
    b"ping": _read_ping,
    b"pong": _read_pong,
}


def _pins_named(sexp: Any) -> tuple[list[tuple[bytes, Any]], list[Any]]:
    """Our objects and caches a value sends back (``['local', id]``, ``['lcache', id]``),
    and the ids of the first copies of the peer's caches in it (``[tag, id, state]``)."""
    found = []
    copies = []
    stack = [sexp]
    while stack:
        node = stack.pop()
        if type(node) is list and node:
            tag = node[0]
            if (tag == b"local" or tag == b"lcache") and len(node) == 2 \
                    and type(node[1]) in (int, bytes):
                found.append((tag, node[1]))
            elif type(tag) is bytes and b"." in tag and len(node) == 3 and type(node[1]) is int:
                copies.append(node[1])
                stack.append(node[2])
            else:
                stack.extend(node)
    return found, copies
