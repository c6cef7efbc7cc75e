"""Two sans-I/O protocol objects wired back to back, with no sockets and no hub.

How it works. A ``Pump`` holds a connector and an acceptor (normally two
``pbgreen.protocol.Broker`` objects, but anything with ``data_to_send()`` and
``receive_data(bytes) -> events`` will do). ``pump()`` runs rounds: in each
round it takes everything the client has queued and feeds it to the server,
then everything the server has queued and feeds it to the client. It stops
after the first round in which neither side had a byte to send. Nothing
depends on time, threads or greenlets, so a test gives the same bytes and the
same events on every run (Twisted's ``IOPump`` in ``test_pb.py``, and the
h11 / websockets way of testing a protocol by feeding it bytes).

Bytes travel whole (one ``receive_data`` per write) or, with
``bytewise=True``, one byte at a time, the way a slow network could deliver
them. Every event a side produces is appended to that side's list and, if
an ``on_event`` callback is given, passed to it at once; the callback may
queue more bytes (run an incoming call, answer it) and the pump carries
them too. The pump itself never looks inside an event.

An exception from ``receive_data`` (``ProtocolError`` for bytes that are
not PB) propagates out of ``pump()`` unchanged; ``wire`` then shows what
was on its way.

Example::

    from pbgreen import dispatch
    from pbgreen.testing.pump import drive, pair

    p = pair(root=MyRoot(), on_event=drive)   # handshake done; calls run as they come
    request = dispatch.send_call(p.client, b"root", "add", (1, 2), {}, None, True)
    (reply,) = p.pump().client                # the Reply event
    assert dispatch.read_reply(p.client, reply, None) == 3

This module imports neither gevent nor pytest.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

from .. import dispatch
from ..events import IncomingCall, Released, StoppedObserving
from ..protocol import Broker

__all__ = ["SansIO", "Pumped", "Pump", "pair", "drive", "CLIENT_TO_SERVER", "SERVER_TO_CLIENT"]

#: Direction tags used in ``Pump.wire``.
CLIENT_TO_SERVER = "C>S"
SERVER_TO_CLIENT = "S>C"


class SansIO(Protocol):
    """What the pump needs from a protocol object."""

    def receive_data(self, data: bytes) -> list[Any]:
        """Feed bytes from the peer; return the events they complete."""
        ...  # pragma: no cover - protocol

    def data_to_send(self) -> bytes:
        """Bytes queued for the peer since the last call (may be empty)."""
        ...  # pragma: no cover - protocol


class Pumped(NamedTuple):
    """The events each side produced during one ``Pump.pump()`` call."""

    client: list[Any]
    server: list[Any]


class Pump:
    """Move bytes between ``client`` and ``server`` until both are quiet.

    Args:
        client: the connector's protocol object.
        server: the acceptor's protocol object.
        bytewise: default delivery for ``pump()``: one byte per
            ``receive_data`` call instead of whole writes.
        on_event: called as ``on_event(receiver, event)`` for every event, in
            order, right after the ``receive_data`` that produced it. It may
            queue bytes on either side; they are carried in the same pump.
        max_rounds: a pump that is still moving bytes after this many rounds
            raises ``RuntimeError`` (two sides answering each other forever).

    Attributes:
        client_events / server_events: every event each side produced, over
            the pump's whole life, in order.
        wire: every write carried, as ``(direction, bytes)`` in order, with
            direction ``"C>S"`` or ``"S>C"`` (never split, even bytewise).
    """

    def __init__(self, client: SansIO, server: SansIO, *, bytewise: bool = False,
                 on_event: Callable[[SansIO, Any], Any] | None = None,
                 max_rounds: int = 10_000) -> None:
        self.client = client
        self.server = server
        self.bytewise = bytewise
        self.on_event = on_event
        self.max_rounds = max_rounds
        self.client_events: list[Any] = []
        self.server_events: list[Any] = []
        self.wire: list[tuple[str, bytes]] = []

    def pump(self, *, bytewise: bool | None = None) -> Pumped:
        """Carry bytes both ways until neither side has any to send.

        ``bytewise`` overrides the pump's default for this call. Returns the
        events each side produced during this call (they are also appended
        to ``client_events`` / ``server_events``). Exceptions from
        ``receive_data`` or ``on_event`` propagate unchanged.
        """
        if bytewise is None:
            bytewise = self.bytewise
        got = Pumped([], [])
        legs = ((self.client, self.server, CLIENT_TO_SERVER, got.server, self.server_events),
                (self.server, self.client, SERVER_TO_CLIENT, got.client, self.client_events))
        for _ in range(self.max_rounds):
            moved = False
            for source, target, direction, fresh, history in legs:
                data = source.data_to_send()
                if not data:
                    continue
                moved = True
                self.wire.append((direction, data))
                self._deliver(target, data, bytewise, fresh, history)
            if not moved:
                return got
        raise RuntimeError(f"the two sides were still talking after {self.max_rounds} rounds")

    def _deliver(self, target: SansIO, data: bytes, bytewise: bool,
                 fresh: list[Any], history: list[Any]) -> None:
        pieces = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
        for piece in pieces:
            for event in target.receive_data(piece):
                fresh.append(event)
                history.append(event)
                if self.on_event is not None:
                    self.on_event(target, event)

    def deliver(self, direction: str, data: bytes, *, bytewise: bool | None = None) -> list[Any]:
        """Inject ``data`` as if the other side had sent it; return the receiver's events.

        ``direction`` is ``"C>S"`` (the server receives) or ``"S>C"``. Handy
        for feeding hand-made or broken bytes into an established connection.
        The bytes are recorded in ``wire``; nothing is pumped afterwards.
        """
        if direction == CLIENT_TO_SERVER:
            target, history = self.server, self.server_events
        elif direction == SERVER_TO_CLIENT:
            target, history = self.client, self.client_events
        else:
            raise ValueError(f"direction must be {CLIENT_TO_SERVER!r} or {SERVER_TO_CLIENT!r}, "
                             f"not {direction!r}")
        self.wire.append((direction, data))
        fresh: list[Any] = []
        self._deliver(target, data, self.bytewise if bytewise is None else bytewise,
                      fresh, history)
        return fresh


def drive(receiver: Any, event: Any) -> None:
    """An ``on_event`` that does what the gevent driver does, at once and in order.

    Incoming calls run (``dispatch.run_call``), releases are settled (logout
    callbacks, ``stoppedObserving``); replies are left for the test to read
    with ``dispatch.read_reply``.
    """
    if type(event) is IncomingCall:
        dispatch.run_call(receiver, event)
    elif type(event) is Released or type(event) is StoppedObserving:
        dispatch.settle(receiver, [event])


def pair(root: Any = None, *, bytewise: bool = False, handshake: bool = True,
         on_event: Callable[[SansIO, Any], Any] | None = None,
         client_options: dict[str, Any] | None = None,
         server_options: dict[str, Any] | None = None, **options: Any) -> Pump:
    """A connector ``Broker`` and an acceptor ``Broker`` (serving ``root``) in a ``Pump``.

    Args:
        root: the server's root object (the one the client reaches as ``b"root"``).
        bytewise: the pump's default delivery (also used for the handshake).
        handshake: pump once before returning, so both sides have chosen a
            dialect and calls may be sent; the handshake's events are in
            ``client_events`` / ``server_events``.
        on_event: see ``Pump``.
        client_options / server_options: extra ``Broker`` arguments for one side.
        **options: extra ``Broker`` arguments for both sides (``security``,
            decoder limits, ...).
    """
    client = Broker(is_client=True, **{**options, **(client_options or {})})
    server = Broker(is_client=False, root=root, **{**options, **(server_options or {})})
    pump = Pump(client, server, bytewise=bytewise, on_event=on_event)
    if handshake:
        pump.pump()
    return pump
