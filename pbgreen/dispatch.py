"""Where user code runs: jellying values, rebuilding them, running one incoming call.

The protocol core (``protocol.Broker``) never calls into user objects. Every
step that may — ``getStateToCopyFor``, ``getStateToCacheAndObserveFor``,
``setCopyableState``, a ``remote_`` method, ``stoppedObserving``, a logout —
is here, called by the driver from the greenlet that owns the work (the
caller, or a worker for an incoming call). None of it does I/O: it queues
bytes in the broker and the driver writes them.

Sending is prepare-then-queue: ``prepare`` jellies values into an
``Outgoing`` without touching the broker's tables, and the broker commits
and queues it in one step. If the peer let go of a cache meanwhile, the
broker says ``Stale`` and the value is prepared again.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any, Callable

from . import plaincodec
from ._failure import CopyableFailure, failure_from
from ._refs import NotOpen, NotYet, SendContext, Stale
from .banana import VOCAB_CODES, EncodeError, encode
from .errors import CopiedFailure, Error, InsecureJelly, LoginFailed, RefLimitError
from .events import IncomingCall, Released, Reply, StoppedObserving
from .jelly import Jellier, Unjellier
from .plaincodec import Built
from .protocol import Broker, Outgoing

__all__ = ["prepare", "send_call", "read_reply", "unjelly", "run_call", "report", "settle",
           "run_callbacks", "time_left"]

log = logging.getLogger("pbgreen")

_ATTEMPTS = 3  # a value prepared again because a cache it named went stale meanwhile
_NOT_YET_PATIENCE = 30.0  # seconds to wait for another send's first copy of a cache


def prepare(broker: Broker, values: tuple[Any, ...], perspective: Any) -> Outgoing:
    """Jelly ``values`` for ``broker``; ``InsecureJelly`` if one cannot be sent."""
    try:  # plain data: objects to bytes in one pass, nothing to register
        return Outgoing(len(values), plaincodec.dumps_values(values, broker.vocab))
    except plaincodec.Fallback:
        pass
    context = SendContext(broker.tables)
    vocab = broker.vocab is VOCAB_CODES
    prepared = False
    try:
        body = b"".join(encode(Jellier(context, perspective, broker.security).jelly(value),
                               vocab=vocab) for value in values)
        prepared = True
    except EncodeError as exc:
        raise InsecureJelly(f"cannot send this value: {exc}") from None
    finally:
        if not prepared:
            _give_up(context, broker)
    return Outgoing(len(values), body, context)


def _give_up(context: SendContext | None, broker: Broker) -> None:
    """A prepared value will not be sent: caches it started stop being observed."""
    if context is None:
        return
    for cacheable, perspective, observer in context.abandoned():
        try:
            cacheable.stoppedObserving(perspective, observer)
        except Exception:
            log.exception("stoppedObserving failed (connection to %s)", broker.peer)


def _queue(broker: Broker, values: tuple[Any, ...], perspective: Any,
           send: Callable[[Outgoing], Any]) -> Any:
    try:  # plain data: nothing to register, so nothing can go stale
        body = plaincodec.dumps_values(values, broker.vocab)
    except plaincodec.Fallback:
        pass
    else:
        return send(Outgoing(len(values), body))
    for _ in range(_ATTEMPTS):
        outgoing = prepare(broker, values, perspective)
        sent = False
        try:
            result = _send_when_ready(broker, send, outgoing)
            sent = True
            return result
        except Stale:
            pass
        finally:
            if not sent:
                _give_up(outgoing.context, broker)
    raise InsecureJelly("the value names caches the peer keeps letting go of; send it again")


def _send_when_ready(broker: Broker, send: Callable[[Outgoing], Any], outgoing: Outgoing) -> Any:
    """``send(outgoing)``, waiting while a first copy it refers to is still being made."""
    waited = 0.0
    while True:
        try:
            return send(outgoing)
        except NotYet:
            if waited > _NOT_YET_PATIENCE:
                raise Stale("a first copy it refers to was never sent") from None
            broker.invoker.sleep(0.001)  # the driver's clock: the other send finishes meanwhile
            waited += 0.001


def send_call(broker: Broker, object_id: Any, method: str, args: tuple[Any, ...],
              kwargs: dict[str, Any], perspective: Any, answer: bool, cache: bool = False,
              deadline: float | None = None) -> int:
    """Jelly and queue a call; its request id. ``InsecureJelly``: nothing was queued."""
    try:  # the common case, without a closure
        body = plaincodec.dumps_values((args, kwargs), broker.vocab)
    except plaincodec.Fallback:
        pass
    else:
        return broker.send_call(object_id, method, Outgoing(2, body), answer, cache, deadline)
    return _queue(broker, (args, kwargs), perspective,
                  lambda values: broker.send_call(object_id, method, values, answer, cache,
                                                  deadline))


def unjelly(broker: Broker, sexp: Any, perspective: Any) -> Any:
    """Rebuild a value from the peer; ``InsecureJelly`` if anything in it is refused."""
    if type(sexp) is plaincodec.Built:  # plain data the decoder already rebuilt
        return sexp.value
    unjellier = Unjellier(broker.tables, perspective, broker.security)
    built = False
    try:
        value = unjellier.unjellyFull(sexp)
        built = True
        return value
    except (InsecureJelly, RefLimitError):
        raise
    except Exception as exc:
        raise InsecureJelly(f"could not rebuild a value from the peer: "
                            f"{type(exc).__name__}: {exc}") from exc
    finally:
        if not built:  # refused, or interrupted (a timeout in setCopyableState)
            broker.tables.release_unread(sexp, unjellier.claimed)


def read_reply(broker: Broker, reply: Reply, perspective: Any) -> Any:
    """The answer's value, or the exception an ``error`` stands for (returned)."""
    try:
        if reply.ok:
            return unjelly(broker, reply.sexp, perspective)
        return failure_from(reply.sexp)
    finally:
        settle(broker, broker.done_with(reply))


_deadline: ContextVar[float | None] = ContextVar("pbgreen_deadline", default=None)


def time_left() -> float | None:
    """Seconds until the caller of the running ``remote_`` method stops waiting.

    Known when the caller is a pbgreen client with a ``call_timeout`` (the
    deadline travels with the call); ``None`` otherwise. At the deadline the
    method is stopped (``gevent.Timeout`` is raised in it).
    """
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def run_call(broker: Broker, call: IncomingCall, deadline: float | None = None) -> None:
    """Run an incoming call (user code) and queue its answer or error.

    ``deadline`` (``time.monotonic()`` seconds) is what ``time_left`` reports.
    """
    perspective = None
    target = call.target
    if target is None:  # an update for a copy that came in a reply read since
        target = broker.tables.held.get(call.object_id)
        if target is None:
            if call.answer:
                broker.send_error(call.request_id, Error("Invalid Object ID"))
            return
    reset = _deadline.set(deadline) if deadline is not None else None
    try:
        method, perspective = target.remoteMethod(call.method)
        args, kwargs = call.args, call.kwargs
        try:  # plain data was already rebuilt by the decoder: no call for it
            args = args.value if type(args) is Built else unjelly(broker, args, perspective)
            kwargs = (kwargs.value if type(kwargs) is Built
                      else unjelly(broker, kwargs, perspective))
        except InsecureJelly as exc:  # the caller sent something refused: its problem
            log.info("refused the arguments %s sent for %s: %s", broker.peer, call.method, exc)
            if call.answer:
                broker.send_error(call.request_id, exc)
            return
        if type(args) is not tuple:
            args = tuple(args) if type(args) is list else (args,)
        if type(kwargs) is not dict:
            raise InsecureJelly("keyword arguments from the peer are not a dictionary")
        if kwargs and any(type(k) is not str for k in kwargs):
            kwargs = {k.decode("utf-8") if type(k) is bytes else k: v for k, v in kwargs.items()}
        result = method(*args, **kwargs)
        del args, kwargs  # their references are released after the answer is queued
        if isinstance(result, (CopyableFailure, CopiedFailure)):
            # A failure returned (made here, or received as a value and passed
            # back) is an error answer of its own type, as in Twisted.
            log.debug("call %s from %s returned %r", call.method, broker.peer, result)
            if call.answer:
                broker.send_error(call.request_id, result.value
                                  if isinstance(result, CopyableFailure) else result)
        elif call.answer:
            try:  # plain data, the common case: no closure, nothing to register
                body = plaincodec.dumps_values((result,), broker.vocab)
            except plaincodec.Fallback:
                _queue(broker, (result,), perspective,
                       lambda values: broker.send_answer(call.request_id, values))
            else:
                broker.send_answer(call.request_id, Outgoing(1, body))
    except NotOpen:
        log.debug("no answer for %s: the connection to %s is gone", call.method, broker.peer)
    except Exception as exc:
        report(broker, call, exc)
    finally:
        if reset is not None:
            _deadline.reset(reset)


def report(broker: Broker, call: IncomingCall, exc: BaseException) -> None:
    """Log a failed incoming call as PB does, and answer it with the error."""
    if isinstance(exc, LoginFailed):
        log.info("login refused for %s (%s)", broker.peer, type(exc).__name__)
    elif isinstance(exc, Error):  # expected: the caller gets it, nothing to log
        log.debug("call %s from %s failed: %r", call.method, broker.peer, exc)
    else:
        log.error("Peer Will Receive PB Traceback (%s calling %s)", broker.peer, call.method,
                  exc_info=exc)
    if call.answer:
        broker.send_error(call.request_id, exc)


def settle(broker: Broker, events: list[Released | StoppedObserving]) -> None:
    """Run what releases owe: logout and other release callbacks, ``stoppedObserving``.

    After ``stoppedObserving`` (updates it sends still go out first) the
    broker tells the peer ``uncache``.
    """
    for event in events:
        if type(event) is Released:
            run_callbacks(list(event.callbacks), broker.peer)
        else:
            try:
                run_callbacks([lambda: event.cacheable.stoppedObserving(
                    event.perspective, event.observer)], broker.peer)
            finally:
                broker.send_uncache(event.cache_id)


def run_callbacks(callbacks: list[Callable[[], Any]], peer: Any) -> None:
    """Run release, disconnect or logout callbacks; log (never raise) their errors."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("error in a disconnect, logout or stoppedObserving callback "
                          "(connection to %s)", peer)
