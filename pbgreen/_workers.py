"""Running a connection's incoming calls: worker greenlets and their queues.

How it works. An incoming call goes to an idle worker if one waits (a few
are kept per connection, because spawning a gevent ``Greenlet`` records its
stack and costs more than a small call), else to a new worker while fewer
than ``max_calls`` run; past that it waits in a backlog of ten times
``max_calls``, and past that it is answered with an error at once. A worker
flushes each answer as soon as it is queued, then takes the next call from
the backlog. Before starting a call it waits while the connection's output
is over its high-water mark (back-pressure).

Cache updates (``cachemessage``) are never refused or reordered: one greenlet
per connection applies them in arrival order. While more than
``MAX_QUEUED_UPDATES`` wait, or while calls wait in the backlog and the
output is over the high-water mark, the reader stops reading.

Hand-over: when nothing is queued ahead, the reader switches straight to the
idle worker (or waiting caller) and the hub resumes the reader afterwards,
which saves a trip through the event loop per call; otherwise the hand-over
is queued on the hub, so events always start in arrival order.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable

import gevent
from gevent.event import Event
from gevent.hub import Waiter

from . import dispatch
from .errors import CallTimeout, Error
from .events import IncomingCall

__all__ = ["Workers", "hand_over", "IDLE_WORKERS", "BACKLOG_FACTOR", "MAX_QUEUED_UPDATES"]

IDLE_WORKERS = 8  # call workers kept waiting per connection
BACKLOG_FACTOR = 10  # calls queued per connection, as a multiple of max_calls
MAX_QUEUED_UPDATES = 128  # cache updates waiting to be applied before the reader pauses

log = logging.getLogger("pbgreen")


def hand_over(waiter: Waiter, value: Any, run_callback: Callable[..., Any], direct: bool) -> bool:
    """Give ``value`` to the greenlet waiting on ``waiter``; True if it ran at once."""
    target = waiter.greenlet
    if not direct or target is None:
        run_callback(waiter.switch, value)
        return False
    run_callback(gevent.getcurrent().switch)
    target.switch(value)
    return True


class Workers:
    """The incoming calls of one connection (see the module docstring)."""

    def __init__(self, connection: Any, max_calls: int) -> None:
        self.connection = connection
        self.max_calls = max_calls
        self._calls: dict[gevent.Greenlet, None] = {}  # a dict: smaller than a set
        self._idle: list[Waiter] = []
        #: Calls waiting for a free worker, and cache updates waiting to be applied:
        #: an empty tuple until the first one (an empty deque costs 600 bytes, and
        #: most connections never queue anything).
        self.backlog: deque[IncomingCall] | tuple[()] = ()
        self.updates: deque[IncomingCall] | tuple[()] = ()
        #: The worker running each incoming request, by request id (to cancel it).
        self.running: dict[int, gevent.Greenlet] = {}
        #: When each pbgreen caller stops waiting (time.monotonic()), by request id.
        self.deadlines: dict[int, float] = {}
        #: Set by a server stopping gracefully: new calls get this as an error.
        self.refusing: str | None = None
        self._updater: gevent.Greenlet | None = None
        self._resume = Event()

    def start(self, call: IncomingCall, direct: bool) -> bool:
        """Hand ``call`` to a worker; True if it already ran (see ``hand_over``)."""
        connection = self.connection
        if call.deadline is not None:  # counts from now, however long the call waits here
            self.deadlines[call.request_id] = time.monotonic() + call.deadline
        if call.update:
            if type(self.updates) is tuple:  # the first one (the updater keeps this deque)
                self.updates = deque()
            self.updates.append(call)
            if self._updater is None:
                self._updater = gevent.spawn(self._apply_updates)
            return False
        if self.refusing is not None:
            if call.answer:
                connection.protocol.send_error(call.request_id, Error(self.refusing))
            return False
        if self._idle:
            return hand_over(self._idle.pop(), call, connection.run_callback, direct)
        if len(self._calls) >= self.max_calls:
            if len(self.backlog) < self.max_calls * BACKLOG_FACTOR:
                if type(self.backlog) is tuple:  # the first one
                    self.backlog = deque()
                self.backlog.append(call)
            elif call.answer:
                connection.protocol.send_error(call.request_id, Error(
                    f"too many calls waiting on this connection ({self.max_calls} running, "
                    f"{len(self.backlog)} queued); wait for answers before sending more"))
            return False
        self._calls[gevent.spawn(self._worker, [call])] = None
        return False

    def refuse(self, reason: str) -> None:
        """Answer every new call with ``pb.Error(reason)`` (a server stopping gracefully)."""
        self.refusing = reason

    def busy(self, besides: Any = None) -> bool:
        """Whether calls run or wait here (not counting the greenlet ``besides``)."""
        return bool(self.backlog or self.updates) or any(
            worker is not besides for worker in self.running.values())

    def must_pause(self, connection: Any) -> bool:
        """Whether the reader should stop reading for now (back-pressure)."""
        return (len(self.updates) >= MAX_QUEUED_UPDATES
                or (bool(self.backlog) and connection.buffered > connection.high_water))

    def wait_resume(self, connection: Any) -> None:
        """Wait until a worker, the updater or the writer made progress (or 50 ms)."""
        self._resume.clear()
        if self.must_pause(connection) and not connection.closed:
            self._resume.wait(0.05)

    def wake(self) -> None:
        """Progress was made (output drained): a paused reader looks again."""
        self._resume.set()

    def _run(self, call: IncomingCall, current: gevent.Greenlet) -> None:
        """Run one call in ``current`` (this worker or the updater)."""
        protocol = self.connection.protocol
        request_id = call.request_id
        deadline = None
        at = self.deadlines.pop(request_id, None) if self.deadlines else None
        if at is not None:  # a pbgreen caller waits until then, no longer
            deadline = gevent.Timeout(max(0.0, at - time.monotonic()))
            deadline.start()
        running = self.running
        running[request_id] = current
        try:
            dispatch.run_call(protocol, call, at)
        except gevent.Timeout as exc:
            if exc is deadline:
                log.info("stopped %s from %s: the caller's deadline passed", call.method,
                         protocol.peer)
                if call.answer:
                    protocol.send_error(call.request_id, CallTimeout(
                        f"{call.method} did not finish within the caller's deadline"))
            else:  # the method's own timeout escaped: answer, go on
                dispatch.report(protocol, call, exc)
        finally:
            if deadline is not None:
                deadline.close()
            idle_timer = self.connection.idle_timer
            if idle_timer is not None:  # idle counts from the end of the last call
                idle_timer.last_active = self.connection._hub.loop.now()
            if running.get(request_id) is current:
                del running[request_id]

    def cancel(self, request_id: int) -> None:
        """The caller gave up on ``request_id``: stop the method if it still runs."""
        self.deadlines.pop(request_id, None)
        for call in self.backlog:
            if call.request_id == request_id:  # still waiting for a worker: never run it
                self.backlog.remove(call)
                return
        worker = self.running.pop(request_id, None)
        if worker is not None and worker is not gevent.getcurrent():
            log.info("stopped call %s from %s: the caller gave up", request_id,
                     self.connection.peer)
            worker.kill(block=False)

    def _worker(self, first: list[IncomingCall]) -> None:
        # The first call comes in a list emptied here: the Greenlet keeps its
        # arguments, and must not keep the call's target and arguments alive.
        connection = self.connection
        writer = connection.writer
        current = gevent.getcurrent()
        call: IncomingCall | None = first.pop()
        try:
            while call is not None:
                if writer.greenlet is not None:  # bytes wait for the socket
                    connection.wait_writable()
                self._run(call, current)
                call = None  # nothing of the call stays alive while this worker waits
                connection.flush()  # each answer leaves as soon as it is made
                if self.backlog and not connection.closed:
                    call = self.backlog.popleft()
                    self._resume.set()
                    continue
                if connection.closed or len(self._idle) >= IDLE_WORKERS:
                    return
                waiter = Waiter()
                self._idle.append(waiter)
                call = waiter.get()
                del waiter
        finally:
            self._calls.pop(current, None)

    def _apply_updates(self) -> None:
        updates = self.updates
        connection = self.connection
        current = gevent.getcurrent()
        try:
            while updates and not connection.closed:
                connection.wait_writable()  # their answers count against the mark too
                call = updates.popleft()
                self._resume.set()
                self._run(call, current)
                del call
                if not updates:
                    connection.flush()
        finally:
            self._updater = None

    def stop(self) -> None:
        """The connection is gone: forget queued calls, let idle workers end."""
        if self.backlog:
            self.backlog.clear()
        if self.updates:
            self.updates.clear()
        self._resume.set()
        self.release_idle()

    def release_idle(self) -> None:
        """Let the workers waiting for a call end (an idle connection keeps none)."""
        idle, self._idle = self._idle, []
        run_callback = self.connection.run_callback
        for waiter in idle:
            run_callback(waiter.switch, None)

    def kill(self, timeout: float | None = None) -> None:
        """Stop incoming calls still running (used when a server stops)."""
        running = list(self._calls)
        if self._updater is not None:
            running.append(self._updater)
        current = gevent.getcurrent()
        gevent.killall([g for g in running if g is not current], timeout=timeout)
