"""Deadlines on calls and keepalive probes for one connection.

How it works. Both use libev timers on the hub (no greenlet per connection
or per call, so an idle connection costs no stack).

* ``CallTimers``: with ``call_timeout``, each call that waits for an answer
  gets a timer; the reply stops it. When it fires first, the call is
  abandoned (its late answer will be dropped and its references given back,
  a ``pbgreen`` peer is told to stop the method) and the caller gets
  ``pb.CallTimeout``.
* ``IdleTimer`` (servers, ``idle_timeout``): closes a connection with no
  call in either direction and none running for that long.
* ``Keepalive``: twice per ``keepalive`` period the timer looks at how long
  ago the peer last sent a byte (the reader only raises a flag per batch it
  reads; the timer turns the flag into a time, within half a period). Silent for ``keepalive``: a probe the peer
  must answer goes out (``ping`` to a ``pbgreen`` peer, a call to no object
  for a Twisted one, which answers it quietly). Nothing back within another
  ``keepalive``: the path is dead (a pulled cable, a stalled proxy: no FIN,
  no RST ever comes) and the connection is closed, failing every waiting
  call. A peer is only declared dead after a probe it did not answer, so a
  busy process whose timer fired late never drops a healthy connection; a
  dead peer is found within about 3 × ``keepalive`` of its last byte.
"""

from __future__ import annotations

from typing import Any, Callable

from .errors import CallTimeout, ClosedLocally

__all__ = ["CallTimers", "Keepalive", "IdleTimer"]


class CallTimers:
    """One timer per call waiting under a deadline (see the module docstring)."""

    def __init__(self, loop: Any, seconds: float, expired: Callable[[int, str], Any]) -> None:
        self.seconds = seconds
        self._loop = loop
        self._expired = expired
        self._timers: dict[int, Any] = {}

    def start(self, request_id: int, name: str) -> None:
        timer = self._loop.timer(self.seconds)
        self._timers[request_id] = timer
        timer.start(self._fire, request_id, name)

    def _fire(self, request_id: int, name: str) -> None:
        timer = self._timers.pop(request_id, None)
        if timer is not None:
            timer.close()
            self._expired(request_id, name)

    def stop(self, request_id: int) -> None:
        timer = self._timers.pop(request_id, None)
        if timer is not None:
            timer.stop()
            timer.close()

    def stop_all(self) -> None:
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            timer.stop()
            timer.close()

    def error(self, name: str, peer: Any) -> CallTimeout:
        return CallTimeout(f"no answer to {name!r} from {peer} within {self.seconds:g} s "
                           "(call_timeout); the call was abandoned")


class Keepalive:
    """Probes a silent peer and declares it dead (see the module docstring)."""

    def __init__(self, loop: Any, seconds: float, probe: Callable[[], Any],
                 dead: Callable[[BaseException], Any], heard: Callable[[], bool]) -> None:
        self.seconds = seconds
        self._loop = loop
        self._probe = probe
        self._dead = dead
        #: Whether the peer sent anything since the last look (and forget it).
        self._heard = heard
        #: The hub's clock when we last saw the peer had sent us something.
        self.last_heard = loop.now()
        self._probed_at: float | None = None
        # Looked at twice per period, so a probe leaves within 1.5 periods of
        # silence and an unanswered one is noticed within 1.5 periods more.
        self._timer = loop.timer(seconds / 2, seconds / 2)
        self._timer.start(self._check)
        self._timer.ref = False  # an idle connection alone does not keep a script running

    def _check(self) -> None:
        now = self._loop.now()
        if self._heard():
            self.last_heard = now
        probed_at = self._probed_at
        if probed_at is not None and self.last_heard < probed_at:  # a probe is out
            if now - probed_at >= self.seconds:
                self._dead(ClosedLocally(
                    f"the peer sent nothing for {now - self.last_heard:.1f} s and did not "
                    f"answer a keepalive probe within {self.seconds:g} s (keepalive): the "
                    "path to it is dead"))
            return
        # last_heard is when a check saw the flag: up to half a period after
        # the bytes came; the margin keeps a late timer from costing a period.
        if now - self.last_heard >= self.seconds * 0.9:
            self._probed_at = now
            self._probe()

    def stop(self) -> None:
        self._timer.stop()
        self._timer.close()


class IdleTimer:
    """Closes a connection that made no call and ran none for ``seconds``."""

    def __init__(self, loop: Any, seconds: float, idle: Callable[[], bool],
                 close: Callable[[BaseException], Any]) -> None:
        self.seconds = seconds
        self._loop = loop
        self._idle = idle
        self._close = close
        #: The hub's clock at the last call in or answer out (the reader sets it).
        self.last_active = loop.now()
        self._timer = loop.timer(seconds / 2, seconds / 2)
        self._timer.start(self._check)
        self._timer.ref = False

    def _check(self) -> None:
        if self._loop.now() - self.last_active >= self.seconds and self._idle():
            self._close(ClosedLocally(f"idle for {self.seconds:g} s (idle_timeout)"))

    def stop(self) -> None:
        self._timer.stop()
        self._timer.close()
